//! vnc-control's OpenAPI description, end to end: the real binary serves an OpenAPI
//! 3.1 document at `GET /v1/openapi.json` without a token; it describes exactly the
//! routes the API serves and the design of record lists; and the check every control
//! test runs on every answer (`vnc_tests::openapi`) refuses answers that don't match.
#![forbid(unsafe_code)]

use std::collections::BTreeSet;

use serde_json::{Value, json};
use vnc_tests::control::{ControlProcess, Identity};
use vnc_tests::keys::TestKeys;
use vnc_tests::redis::RedisServer;

struct Stack {
    _redis: RedisServer,
    control: ControlProcess,
    identity: Identity,
    _keys: TestKeys,
}

/// Control with the static runtime: container `desk` of alice, tenant t1.
async fn stack() -> Stack {
    let redis = RedisServer::start().await.unwrap();
    let keys = TestKeys::new();
    let identity = Identity::new();
    let control =
        ControlProcess::start_static(&redis.url(), &keys, &identity, &[("desk", "alice", "t1")])
            .await
            .unwrap();
    Stack {
        _redis: redis,
        control,
        identity,
        _keys: keys,
    }
}

/// The endpoints of the control API table in docs/architecture.md, as
/// `(METHOD, /path/{param})`, queries left out.
fn endpoints_of_record() -> BTreeSet<(String, String)> {
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/architecture.md");
    let text = std::fs::read_to_string(&file).unwrap();
    let table = text
        .split("\n## Control\n")
        .nth(1)
        .and_then(|control| control.split("| endpoint | what |").nth(1))
        .expect("the control API's endpoint table");
    let mut out = BTreeSet::new();
    for row in table.lines().skip(2).take_while(|l| l.starts_with('|')) {
        let first_cell = row.split(" | ").next().unwrap_or_default();
        for quoted in first_cell.split('`').skip(1).step_by(2) {
            let mut words = quoted.split_whitespace();
            if let (Some(method), Some(path)) = (words.next(), words.next())
                && method.chars().all(|c| c.is_ascii_uppercase())
                && path.starts_with('/')
            {
                let path = path.split('?').next().unwrap_or_default();
                out.insert((method.to_owned(), path.to_owned()));
            }
        }
    }
    assert!(
        out.len() > 5,
        "endpoint table not found in {}",
        file.display()
    );
    out
}

#[tokio::test]
async fn the_description_is_openapi_3_1_and_covers_every_route_served() {
    let s = stack().await;
    let c = &s.control;

    // Served without a token; OpenAPI 3.1 with the bearer scheme and the error body.
    let (status, doc) = c.call("GET", "/v1/openapi.json", None, None).await.unwrap();
    assert_eq!(status, 200, "{doc}");
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1."),
        "{}",
        doc["openapi"]
    );
    let bearer = &doc["components"]["securitySchemes"]["bearer"];
    assert_eq!(
        (&bearer["type"], &bearer["scheme"]),
        (&json!("http"), &json!("bearer"))
    );
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());

    // Exactly the endpoints of the design of record.
    let description = c.description(None).await.unwrap();
    let described: BTreeSet<(String, String)> = description
        .operations()
        .iter()
        .map(|o| (o.method.clone(), o.path.to_owned()))
        .collect();
    let of_record = endpoints_of_record();
    assert_eq!(
        described.difference(&of_record).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "described but not in docs/architecture.md"
    );
    assert_eq!(
        of_record.difference(&described).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "in docs/architecture.md but not described"
    );

    // Each method on each path: served (not 404 or 405) exactly when described.
    // Without a token nothing is looked up, so a served route can't answer 404.
    // Every answer is checked against the description on the way (404 and 405 must
    // be error bodies).
    for (_, template) in &of_record {
        let path: String = template
            .split('/')
            .map(|seg| if seg.starts_with('{') { "x" } else { seg })
            .collect::<Vec<_>>()
            .join("/");
        for method in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
            let (status, body) = c.call(method, &path, None, None).await.unwrap();
            let served = !matches!(status, 404 | 405);
            let is_described = described.contains(&(method.to_owned(), template.clone()));
            assert_eq!(served, is_described, "{method} {path}: {status} {body}");
        }
    }
    let (status, body) = c.call("GET", "/v1/nothing", None, None).await.unwrap();
    assert_eq!((status, &body["message"]), (404, &json!("route not found")));

    // A path parameter that is not UTF-8: the 400 the operations declare for it.
    let alice = s.identity.token("alice", "t1", false);
    let (status, body) = c
        .call("GET", "/v1/containers/%FF", Some(&alice), None)
        .await
        .unwrap();
    assert_eq!(status, 400, "{body}");
}

#[tokio::test]
async fn answers_that_do_not_match_the_description_are_refused() {
    let s = stack().await;
    let c = &s.control;
    let alice = s.identity.token("alice", "t1", false);
    let description = c.description(None).await.unwrap();

    // A real answer passes.
    let (status, head, container) = c
        .call_with_head("GET", "/v1/containers/desk", Some(&alice), None)
        .await
        .unwrap();
    assert_eq!(status, 200, "{container}");
    let check = |status: u16, head: &str, body: &Value| {
        description.check(
            "GET",
            "/v1/containers/desk",
            status,
            head,
            &body.to_string(),
        )
    };
    assert_eq!(check(200, &head, &container), Ok(()));

    // The same answer, broken one way at a time.
    let mut broken = Vec::new();
    for (what, field, value) in [
        ("a field missing", "state", None),
        ("a state no container has", "state", Some(json!("exploded"))),
        (
            "a time that is no date-time",
            "created_at",
            Some(json!("yesterday")),
        ),
        ("a wrong type", "record", Some(json!("yes"))),
    ] {
        let mut body = container.clone();
        match value {
            None => {
                body.as_object_mut().unwrap().remove(field);
            }
            Some(v) => body[field] = v,
        }
        broken.push((what, 200, head.clone(), body));
    }
    broken.push((
        "a status the operation does not declare",
        418,
        head.clone(),
        container.clone(),
    ));
    broken.push((
        "no x-request-id header",
        200,
        head.lines()
            .filter(|l| !l.to_ascii_lowercase().starts_with("x-request-id"))
            .collect::<Vec<_>>()
            .join("\r\n"),
        container.clone(),
    ));
    let (_, _, page) = c
        .call_with_head("GET", "/v1/containers", Some(&alice), None)
        .await
        .unwrap();
    broken.push(("another operation's body", 200, head.clone(), page));
    let (_, error_head, mut error) = c
        .call_with_head("GET", "/v1/containers/nope", Some(&alice), None)
        .await
        .unwrap();
    error.as_object_mut().unwrap().remove("requestId");
    broken.push(("an error body without requestId", 404, error_head, error));
    for (what, status, head, body) in &broken {
        let refused = check(*status, head, body);
        assert!(refused.is_err(), "{what}: {body} passed");
    }

    // A body that is no JSON at all, and a path no operation has with a 200.
    assert!(
        description
            .check("GET", "/v1/containers/desk", 200, &head, "<html>")
            .is_err()
    );
    assert!(
        description
            .check("GET", "/v1/nothing", 200, &head, "{}")
            .is_err()
    );
}
