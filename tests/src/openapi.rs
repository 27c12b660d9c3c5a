//! Checks control's answers against the OpenAPI 3.1 description it serves
//! (`GET /v1/openapi.json`): the operation (method and path template) exists and
//! declares the status, the headers it says are required are there, and the body is
//! JSON that matches the response's schema. OpenAPI 3.1 schemas are JSON Schema
//! 2020-12, validated with their `$ref`s resolved into the document's `components`.
//! A path no operation has must be answered 404 (405 for another method of a
//! described path) with the document's `ErrorBody`.

use anyhow::{Context, bail};
use serde_json::{Value, json};

/// The methods an OpenAPI path item can hold operations for.
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// A fetched description, ready to check answers against.
pub struct ApiDescription {
    doc: Value,
}

/// One operation of the description.
pub struct Operation<'a> {
    pub method: String,
    /// The path template (`/v1/containers/{id}`).
    pub path: &'a str,
    pub op: &'a Value,
}

impl ApiDescription {
    /// Takes the description as served; refuses anything but OpenAPI 3.1 with paths.
    pub fn new(doc: Value) -> anyhow::Result<ApiDescription> {
        let version = doc["openapi"].as_str().context("no `openapi` version")?;
        if !version.starts_with("3.1.") {
            bail!("OpenAPI {version}, not 3.1");
        }
        doc["paths"].as_object().context("no `paths`")?;
        Ok(ApiDescription { doc })
    }

    pub fn document(&self) -> &Value {
        &self.doc
    }

    /// Every operation, as `(method, path template)` with the method upper-case.
    pub fn operations(&self) -> Vec<Operation<'_>> {
        let mut out = Vec::new();
        for (path, item) in self.doc["paths"].as_object().into_iter().flatten() {
            for method in METHODS {
                if let Some(op) = item.get(method) {
                    out.push(Operation {
                        method: method.to_uppercase(),
                        path,
                        op,
                    });
                }
            }
        }
        out
    }

    /// The operation serving `method` on `path` (a query string is ignored); of
    /// several matching templates the one with the most literal segments wins.
    pub fn operation(&self, method: &str, path: &str) -> Option<Operation<'_>> {
        self.matching_paths(path)
            .into_iter()
            .find_map(|(template, item)| {
                item.get(method.to_lowercase()).map(|op| Operation {
                    method: method.to_uppercase(),
                    path: template,
                    op,
                })
            })
    }

    /// The path templates `path` matches, most literal segments first.
    fn matching_paths(&self, path: &str) -> Vec<(&str, &Value)> {
        let path = path.split('?').next().unwrap_or_default();
        let segments: Vec<&str> = path.split('/').collect();
        let mut found: Vec<(usize, &str, &Value)> = Vec::new();
        for (template, item) in self.doc["paths"].as_object().into_iter().flatten() {
            let parts: Vec<&str> = template.split('/').collect();
            if parts.len() != segments.len() {
                continue;
            }
            let mut literals = 0;
            let matches = parts.iter().zip(&segments).all(|(t, s)| {
                if t.starts_with('{') && t.ends_with('}') {
                    !s.is_empty()
                } else {
                    literals += 1;
                    t == s
                }
            });
            if matches {
                found.push((literals, template, item));
            }
        }
        found.sort_by_key(|(literals, ..)| std::cmp::Reverse(*literals));
        found.into_iter().map(|(_, t, i)| (t, i)).collect()
    }

    /// Checks control's answer (`status`, response `head`, `body` text) to `method`
    /// `path` against the description; the error says what doesn't match.
    pub fn check(
        &self,
        method: &str,
        path: &str,
        status: u16,
        head: &str,
        body: &str,
    ) -> Result<(), String> {
        let Some(op) = self.operation(method, path) else {
            // Served by the fallback (404) or the method router (405): an error body.
            let expected = if self.matching_paths(path).is_empty() {
                404
            } else {
                405
            };
            if status != expected {
                return Err(format!(
                    "no operation {method} {path} in the description, yet {status} (expected {expected})"
                ));
            }
            let schema = json!({"$ref": "#/components/schemas/ErrorBody"});
            return self.check_json(&schema, body);
        };
        let responses = &op.op["responses"];
        let Some(response) = responses
            .get(status.to_string())
            .or_else(|| responses.get("default"))
        else {
            return Err(format!(
                "{} {} does not declare status {status} (it declares {:?}); body {body}",
                op.method,
                op.path,
                responses
                    .as_object()
                    .map(|r| r.keys().collect::<Vec<_>>())
                    .unwrap_or_default()
            ));
        };
        let response = self.resolve(response);
        for (name, header) in response["headers"].as_object().into_iter().flatten() {
            if self.resolve(header)["required"] == true && header_value(head, name).is_none() {
                return Err(format!(
                    "{} {} {status}: no {name} header in {head:?}",
                    op.method, op.path
                ));
            }
        }
        match response["content"].as_object() {
            None => {
                if body.is_empty() {
                    Ok(())
                } else {
                    Err(format!(
                        "{} {} {status}: declares no body, got {body}",
                        op.method, op.path
                    ))
                }
            }
            Some(content) => {
                let content_type = header_value(head, "content-type").unwrap_or_default();
                // Raw bytes (a file): the type is checked, the bytes are the test's.
                if content.contains_key("application/octet-stream")
                    && content_type.starts_with("application/octet-stream")
                {
                    return Ok(());
                }
                let Some(media) = content.get("application/json") else {
                    return Err(format!(
                        "{} {} {status}: declares no application/json content",
                        op.method, op.path
                    ));
                };
                let content_type = header_value(head, "content-type").unwrap_or_default();
                if !content_type.starts_with("application/json") {
                    return Err(format!(
                        "{} {} {status}: Content-Type {content_type:?}, not application/json",
                        op.method, op.path
                    ));
                }
                self.check_json(&media["schema"], body)
                    .map_err(|e| format!("{} {} {status}: {e}", op.method, op.path))
            }
        }
    }

    /// Checks that `body` is JSON matching `schema` (whose `$ref`s point into the
    /// description).
    pub fn check_json(&self, schema: &Value, body: &str) -> Result<(), String> {
        let instance: Value =
            serde_json::from_str(body).map_err(|e| format!("body is not JSON ({e}): {body:?}"))?;
        self.validate(schema, &instance)
    }

    /// Validates `instance` against `schema` as JSON Schema 2020-12, `$ref`s into the
    /// description's components resolved, formats (`date-time`) checked.
    pub fn validate(&self, schema: &Value, instance: &Value) -> Result<(), String> {
        // The schema becomes the root of a document that also holds the components,
        // so `#/components/...` resolves; `components` is no keyword, so it changes
        // nothing else.
        let mut root = match schema {
            Value::Object(o) => o.clone(),
            Value::Bool(true) => Default::default(),
            other => return Err(format!("schema is not an object: {other}")),
        };
        root.insert(
            "$schema".into(),
            json!("https://json-schema.org/draft/2020-12/schema"),
        );
        root.insert("components".into(), self.doc["components"].clone());
        let validator = jsonschema::options()
            .should_validate_formats(true)
            .build(&Value::Object(root))
            .map_err(|e| format!("schema does not compile: {e}"))?;
        let errors: Vec<String> = validator
            .iter_errors(instance)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "body does not match its schema {schema}: {}; body {instance}",
                errors.join("; ")
            ))
        }
    }

    /// `value`, or what its `$ref` (`#/...`) points to.
    fn resolve<'a>(&'a self, value: &'a Value) -> &'a Value {
        match value["$ref"].as_str().and_then(|r| r.strip_prefix('#')) {
            Some(pointer) => self.doc.pointer(pointer).unwrap_or(&Value::Null),
            None => value,
        }
    }
}

/// The value of header `name` (any case) in a response head.
pub fn header_value<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn description() -> ApiDescription {
        ApiDescription::new(json!({
            "openapi": "3.1.0",
            "paths": {
                "/v1/things/{id}": {"get": {"responses": {"200": {
                    "description": "a thing",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Thing"}}},
                }}}},
                "/v1/things/mine": {"get": {"responses": {"204": {"description": "none"}}}},
            },
            "components": {"schemas": {
                "Thing": {"type": "object", "required": ["at"], "properties": {"at": {"type": "string", "format": "date-time"}}},
                "ErrorBody": {"type": "object", "required": ["message"]},
            }},
        }))
        .unwrap()
    }

    const JSON_HEAD: &str = "HTTP/1.1 200 OK\r\ncontent-type: application/json";

    #[test]
    fn literal_segments_win_and_refs_and_formats_are_checked() {
        let d = description();
        assert_eq!(
            d.operation("GET", "/v1/things/mine?x=1").unwrap().path,
            "/v1/things/mine"
        );
        assert_eq!(
            d.operation("GET", "/v1/things/7").unwrap().path,
            "/v1/things/{id}"
        );
        let ok = r#"{"at": "2026-01-02T03:04:05.678Z"}"#;
        assert_eq!(d.check("GET", "/v1/things/7", 200, JSON_HEAD, ok), Ok(()));
        for bad in [r#"{"at": "yesterday"}"#, r#"{}"#, "not json"] {
            assert!(
                d.check("GET", "/v1/things/7", 200, JSON_HEAD, bad).is_err(),
                "{bad}"
            );
        }
        assert!(d.check("GET", "/v1/things/7", 201, JSON_HEAD, ok).is_err());
        assert!(
            d.check("GET", "/v1/things/7", 200, "HTTP/1.1 200 OK", ok)
                .is_err()
        );
    }

    #[test]
    fn unknown_paths_and_methods_must_be_error_bodies() {
        let d = description();
        let err = r#"{"message": "route not found"}"#;
        assert_eq!(d.check("GET", "/v1/nothing", 404, "", err), Ok(()));
        assert_eq!(d.check("PUT", "/v1/things/7", 405, "", err), Ok(()));
        assert!(d.check("PUT", "/v1/things/7", 404, "", err).is_err());
        assert!(d.check("GET", "/v1/nothing", 404, "", "{}").is_err());
        assert!(ApiDescription::new(json!({"openapi": "3.0.3", "paths": {}})).is_err());
    }
}
