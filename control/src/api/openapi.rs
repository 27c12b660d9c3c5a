//! The API's OpenAPI 3.1 description, generated from the code: each handler's
//! `#[utoipa::path]` and the types it takes and answers with. The router is built from
//! the same [`OpenApiRouter`] (see [`super::api_routes`]), so a route can't be served
//! without being described, nor described without being served.
//!
//! Served at `GET /v1/openapi.json` without a bearer token, as gateways publish the
//! description of a public API: it holds no data of anyone, and the rate limit of
//! unauthenticated callers (per client address) still applies.

use std::sync::{Arc, LazyLock};

use axum::response::{IntoResponse, Response};
use http::header::CONTENT_TYPE;
use serde_json::{Value, json};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoResponses, Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::ErrorBody;
use super::rate::UNLIMITED;
use super::responses::RateLimited;

/// Where the description is served.
pub const PATH: &str = "/v1/openapi.json";

/// The name of the bearer security scheme that operations refer to.
pub const BEARER: &str = "bearer";

/// The description's fixed parts; the paths come from the routers.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "vnc-control",
        description = "The control plane of vnc-relay: desktop containers, their jobs, \
            short-lived VNC tokens, share links, live relay sessions, who drives a \
            desktop, relay nodes, and the Docker engines desktops run on.\n\n\
            Callers send a bearer JWT from the operator's identity provider (`sub`, \
            `tenant`, optional `roles: [\"admin\"]`). Every error body is an `ErrorBody`, \
            including a path that doesn't exist (404) and a method a path doesn't serve \
            (405). Every response carries `x-request-id` (the request's own, when sane).",
    ),
    components(schemas(ErrorBody)),
    modifiers(&BearerScheme),
    tags(
        (name = "containers", description = "Desktop containers, their jobs and VNC tokens"),
        (name = "sessions", description = "What the relays run: live sessions, kicks, revocations, nodes"),
        (name = "shares", description = "Share links of a desktop, who is in it, and who drives it"),
        (name = "files", description = "Files in and out of a desktop's upload and download folders; callers may also send the session's VNC token as the bearer"),
        (name = "engines", description = "The Docker engines desktops are placed on, their state and load; admins only"),
        (name = "probes", description = "Liveness and readiness; public, never rate limited"),
        (name = "meta", description = "This description"),
    ),
)]
pub(super) struct ApiDoc;

/// The bearer JWT scheme of authenticated operations.
struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .bearer_format("JWT")
            .description(Some(
                "A JWT of the operator's identity provider, signed with the key control \
                 is configured with, its issuer and audience checked; claims `sub`, \
                 `tenant` and optional `roles: [\"admin\"]`.",
            ))
            .build();
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme(BEARER, SecurityScheme::Http(scheme));
    }
}

pub(super) fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new().routes(routes!(openapi_json))
}

/// The description as served, made once.
static DOCUMENT: LazyLock<String> = LazyLock::new(|| document().to_string());

/// This description of the API (OpenAPI 3.1).
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    operation_id = "getOpenApi",
    tag = "meta",
    responses(
        (status = 200, description = "The OpenAPI 3.1 description of this API", content_type = "application/json", body = Object),
    ),
)]
async fn openapi_json() -> Response {
    ([(CONTENT_TYPE, "application/json")], DOCUMENT.as_str()).into_response()
}

/// The whole description: the routers' operations, plus what the layers around every
/// handler add to each (the rate limit's 429, the `x-request-id` header).
pub fn document() -> Value {
    let api = super::api_routes().into_openapi();
    let mut doc = serde_json::to_value(&api).unwrap_or_default();
    doc["components"]["headers"] = json!({
        "RequestId": {
            "description": "The request's id: the request's own `x-request-id` when it is 1 to 128 visible ASCII characters, else a new UUID",
            "required": true,
            "schema": {"type": "string"},
        },
        "RetryAfter": {
            "description": "Whole seconds until the caller's next request is let through (with a rate limit's 429; a quota's has none)",
            "schema": {"type": "integer", "minimum": 1},
        },
    });
    let rate_limited = serde_json::to_value(RateLimited::responses()).unwrap_or_default();
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        for (path, item) in paths {
            let Some(item) = item.as_object_mut() else {
                continue;
            };
            for op in item.values_mut().filter_map(|op| op.get_mut("responses")) {
                let Some(responses) = op.as_object_mut() else {
                    continue;
                };
                if !UNLIMITED.contains(&path.as_str()) {
                    let limited = responses
                        .entry("429")
                        .or_insert_with(|| rate_limited["429"].clone());
                    limited["headers"]["Retry-After"] =
                        json!({"$ref": "#/components/headers/RetryAfter"});
                }
                for response in responses.values_mut() {
                    response["headers"]["x-request-id"] =
                        json!({"$ref": "#/components/headers/RequestId"});
                }
            }
        }
    }
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_description_is_openapi_3_1_with_the_bearer_scheme_and_error_body() {
        let doc = document();
        assert_eq!(doc["openapi"], "3.1.0");
        assert_eq!(
            doc["components"]["securitySchemes"][BEARER]["scheme"],
            "bearer"
        );
        assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
        assert!(doc["paths"][PATH]["get"].is_object());
    }

    #[test]
    fn operation_ids_are_unique() {
        let doc = document();
        let mut ids = std::collections::BTreeSet::new();
        for item in doc["paths"].as_object().unwrap().values() {
            for op in item.as_object().unwrap().values() {
                let id = op["operationId"].as_str().unwrap().to_owned();
                assert!(ids.insert(id.clone()), "operationId {id} twice");
            }
        }
    }

    #[test]
    fn every_operation_but_the_probes_declares_429_and_authenticated_ones_401() {
        let doc = document();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let responses = &op["responses"];
                assert_eq!(
                    responses["429"].is_object(),
                    !UNLIMITED.contains(&path.as_str()),
                    "{method} {path}"
                );
                if op["security"].is_array() {
                    assert!(responses["401"].is_object(), "{method} {path}");
                }
                for (status, r) in responses.as_object().unwrap() {
                    assert!(
                        r["headers"]["x-request-id"].is_object(),
                        "{method} {path} {status}"
                    );
                }
            }
        }
    }
}
