//! vnc-control's view of what the relays run, end to end: the real binary against a
//! real redis-server. Session and node hashes are written the way a relay node writes
//! them; kicks are read off `vnc:control` by a subscriber, as a relay reads them.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use fred::clients::SubscriberClient;
use fred::prelude::*;
use fred::types::Message;
use serde_json::{Value, json};
use tokio::sync::broadcast::Receiver;
use vnc_shared::token::unix_now;
use vnc_tests::WAIT;
use vnc_tests::control::{ControlProcess, Identity};
use vnc_tests::keys::TestKeys;
use vnc_tests::process::eventually;
use vnc_tests::redis::{RedisServer, far_future};

/// Container `desk` belongs to alice of tenant t1, `lab` to tina of tenant t2. Bob is
/// alice's colleague, root t1's admin, boss t2's admin.
struct Stack {
    redis: RedisServer,
    control: ControlProcess,
    alice: String,
    bob: String,
    root: String,
    tina: String,
    boss: String,
    // Control loads both keys just after it reports its listeners.
    _keys: TestKeys,
    _identity: Identity,
}

async fn stack() -> Stack {
    let redis = RedisServer::start().await.unwrap();
    let keys = TestKeys::new();
    let identity = Identity::new();
    let control = ControlProcess::start_static(
        &redis.url(),
        &keys,
        &identity,
        &[("desk", "alice", "t1"), ("lab", "tina", "t2")],
    )
    .await
    .unwrap();
    Stack {
        alice: identity.token("alice", "t1", false),
        bob: identity.token("bob", "t1", false),
        root: identity.token("root", "t1", true),
        tina: identity.token("tina", "t2", false),
        boss: identity.token("boss", "t2", true),
        redis,
        control,
        _keys: keys,
        _identity: identity,
    }
}

/// A session as a relay node registers it.
struct RelaySession<'a> {
    sid: &'a str,
    cid: &'a str,
    sub: &'a str,
    tenant: &'a str,
    scope: &'a str,
    node: &'a str,
    jti: &'a str,
    started_at: u64,
    transport: &'a str,
    /// `None`: as a relay from before the field was recorded.
    client_addr: Option<&'a str>,
}

impl RelaySession<'_> {
    async fn register(&self, redis: &RedisServer, ttl: Duration) {
        let fields: Vec<(&str, String)> = vec![
            ("cid", self.cid.to_owned()),
            ("sub", self.sub.to_owned()),
            ("tenant", self.tenant.to_owned()),
            ("scope", self.scope.to_owned()),
            ("node", self.node.to_owned()),
            ("jti", self.jti.to_owned()),
            ("started_at", self.started_at.to_string()),
            ("transport", self.transport.to_owned()),
        ];
        let fields: Vec<(&str, String)> = fields
            .into_iter()
            .chain(self.client_addr.map(|a| ("client_addr", a.to_owned())))
            .collect();
        redis
            .register_session(self.sid, self.cid, None, fields, ttl)
            .await;
    }
}

fn session<'a>(sid: &'a str, cid: &'a str, sub: &'a str, tenant: &'a str) -> RelaySession<'a> {
    RelaySession {
        sid,
        cid,
        sub,
        tenant,
        scope: "view",
        node: "relay-a",
        jti: "jti-x",
        started_at: 1_700_000_000_000,
        transport: "websocket",
        client_addr: Some("192.0.2.10"),
    }
}

/// A relay node's heartbeat hash, with its TTL.
async fn heartbeat(redis: &RedisServer, node: &str, addr: &str, sessions: u64, ttl: Duration) {
    let key = format!("vnc:node:{node}");
    let fields: Vec<(&str, String)> = vec![
        ("addr", addr.to_owned()),
        ("sessions", sessions.to_string()),
        ("started_at", "1700000000000".to_owned()),
        ("version", "0.1.0".to_owned()),
    ];
    let _: () = redis.client.hset(&key, fields).await.unwrap();
    let _: () = redis
        .client
        .pexpire(&key, ttl.as_millis() as i64, None)
        .await
        .unwrap();
}

/// A subscriber on `vnc:control`, as every relay node has one.
async fn control_channel(redis: &RedisServer) -> (SubscriberClient, Receiver<Message>) {
    let sub = Builder::from_config(Config::from_url(&redis.url()).unwrap())
        .build_subscriber_client()
        .unwrap();
    sub.init().await.unwrap();
    let rx = sub.message_rx();
    sub.subscribe("vnc:control").await.unwrap();
    (sub, rx)
}

/// The next message on `vnc:control`, as JSON.
async fn next_kick(rx: &mut Receiver<Message>) -> Value {
    let msg = tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("a message on vnc:control")
        .unwrap();
    assert_eq!(&*msg.channel, "vnc:control");
    serde_json::from_str(&msg.value.as_string().unwrap()).unwrap()
}

/// The claims of a JWT (signature unchecked: control minted it in front of us).
fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

async fn mint(s: &Stack, bearer: &str, cid: &str, scope: &str) -> (Value, Value) {
    let (status, body) = s
        .control
        .call(
            "POST",
            &format!("/v1/containers/{cid}/vnc-tokens"),
            Some(bearer),
            Some(&json!({"scope": scope, "ttl_seconds": 60})),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    (claims(body["token"].as_str().unwrap()), body)
}

async fn status_of(s: &Stack, method: &str, path: &str, bearer: &str) -> u16 {
    s.control
        .call(method, path, Some(bearer), None)
        .await
        .unwrap()
        .0
}

#[tokio::test]
async fn a_containers_live_sessions_are_listed_to_its_owner_and_admins() {
    let s = stack().await;
    RelaySession {
        scope: "control",
        node: "relay-b",
        jti: "jti-2",
        started_at: 1_700_000_002_000,
        transport: "socketio",
        client_addr: None,
        ..session("s-new", "desk", "alice", "t1")
    }
    .register(&s.redis, Duration::from_secs(60))
    .await;
    session("s-old", "desk", "bob", "t1")
        .register(&s.redis, Duration::from_secs(60))
        .await;
    session("s-lab", "lab", "tina", "t2")
        .register(&s.redis, Duration::from_secs(60))
        .await;
    // A dead node's session: its hash expired, its id is still in the set (until its
    // score passes).
    let _: () = s
        .redis
        .client
        .zadd(
            "vnc:sessions:{desk}",
            None,
            None,
            false,
            false,
            (far_future(), "s-dead"),
        )
        .await
        .unwrap();

    let (status, body) = s
        .control
        .call("GET", "/v1/containers/desk/sessions", Some(&s.alice), None)
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"sessions": [
            {"session_id": "s-old", "container_id": "desk", "user": "bob", "scope": "view",
             "node": "relay-a", "transport": "websocket", "started_at": "2023-11-14T22:13:20.000Z",
             "client_addr": "192.0.2.10"},
            {"session_id": "s-new", "container_id": "desk", "user": "alice", "scope": "control",
             "node": "relay-b", "transport": "socketio", "started_at": "2023-11-14T22:13:22.000Z",
             "client_addr": null},
        ]})
    );

    let (status, body) = s
        .control
        .call("GET", "/v1/containers/desk/sessions", Some(&s.root), None)
        .await
        .unwrap();
    assert_eq!(
        (status, body["sessions"].as_array().unwrap().len()),
        (200, 2)
    );
    // A colleague sees the container but not who is on it; other tenants see nothing,
    // not even their admins.
    assert_eq!(
        status_of(&s, "GET", "/v1/containers/desk/sessions", &s.bob).await,
        403
    );
    let (status, body) = s
        .control
        .call("GET", "/v1/containers/desk/sessions", Some(&s.boss), None)
        .await
        .unwrap();
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["path"], "/v1/containers/desk/sessions", "{body}");
    let (status, body) = s
        .control
        .call("GET", "/v1/containers/lab/sessions", Some(&s.tina), None)
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["sessions"][0]["session_id"], "s-lab", "{body}");
    assert_eq!(
        status_of(&s, "GET", "/v1/containers/nope/sessions", &s.root).await,
        404
    );

    // A session whose node stops refreshing it leaves the listing.
    session("s-brief", "desk", "bob", "t1")
        .register(&s.redis, Duration::from_secs(2))
        .await;
    let (_, body) = s
        .control
        .call("GET", "/v1/containers/desk/sessions", Some(&s.alice), None)
        .await
        .unwrap();
    assert_eq!(body["sessions"].as_array().unwrap().len(), 3, "{body}");
    eventually("the expired session to leave the listing", WAIT, || async {
        let (_, body) = s
            .control
            .call("GET", "/v1/containers/desk/sessions", Some(&s.alice), None)
            .await
            .ok()?;
        (body["sessions"].as_array()?.len() == 2).then_some(())
    })
    .await;
}

#[tokio::test]
async fn kicks_go_to_the_relays_only_from_the_owner_or_an_admin() {
    let s = stack().await;
    let (_sub, mut rx) = control_channel(&s.redis).await;
    session("s1", "desk", "bob", "t1")
        .register(&s.redis, Duration::from_secs(60))
        .await;
    session("s2", "lab", "tina", "t2")
        .register(&s.redis, Duration::from_secs(60))
        .await;
    session("s-brief", "desk", "bob", "t1")
        .register(&s.redis, Duration::from_millis(300))
        .await;

    // The viewer is not the container's owner; another tenant's admin, an unknown
    // session: refused, and nothing published.
    assert_eq!(
        status_of(&s, "DELETE", "/v1/sessions/s1", &s.bob).await,
        403
    );
    assert_eq!(
        status_of(&s, "DELETE", "/v1/sessions/s1", &s.boss).await,
        404
    );
    assert_eq!(
        status_of(&s, "DELETE", "/v1/sessions/s2", &s.root).await,
        404
    );
    let (status, body) = s
        .control
        .call("DELETE", "/v1/sessions/nope", Some(&s.alice), None)
        .await
        .unwrap();
    assert_eq!(status, 404);
    assert_eq!(body["message"], "session not found", "{body}");

    let (status, body) = s
        .control
        .call("DELETE", "/v1/sessions/s1", Some(&s.alice), None)
        .await
        .unwrap();
    assert_eq!(
        (status, body),
        (202, json!({"session_id": "s1", "kicked": true}))
    );
    assert_eq!(
        next_kick(&mut rx).await,
        json!({"type": "kick", "sid": "s1", "reason": "kicked"}),
        "the first message is the allowed kick"
    );
    let (status, body) = s
        .control
        .call("DELETE", "/v1/sessions/s2", Some(&s.boss), None)
        .await
        .unwrap();
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        next_kick(&mut rx).await,
        json!({"type": "kick", "sid": "s2", "reason": "kicked"})
    );

    // An expired session is unknown.
    eventually("the brief session to expire", WAIT, || async {
        let n: i64 = s.redis.client.exists("vnc:session:s-brief").await.ok()?;
        (n == 0).then_some(())
    })
    .await;
    assert_eq!(
        status_of(&s, "DELETE", "/v1/sessions/s-brief", &s.root).await,
        404
    );

    assert_eq!(
        s.control
            .metric(r#"vnc_control_kicks_total{kind="kick"}"#)
            .await,
        Some(2.0)
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(200), rx.recv())
            .await
            .is_err(),
        "refused kicks publish nothing"
    );
}

#[tokio::test]
async fn revoking_a_token_outlasts_it_and_kicks_its_sessions() {
    let s = stack().await;
    let (_sub, mut rx) = control_channel(&s.redis).await;

    // Minting records the token until the relays stop accepting it (exp + 5 s leeway).
    let (alices, minted) = mint(&s, &s.alice, "desk", "control").await;
    let jti = alices["jti"].as_str().unwrap().to_owned();
    let exp = alices["exp"].as_u64().unwrap();
    let record: HashMap<String, String> = s
        .redis
        .client
        .hgetall(format!("vnc:token:{jti}"))
        .await
        .unwrap();
    let expected: HashMap<String, String> = [
        ("cid", "desk".to_owned()),
        ("owner", "alice".to_owned()),
        ("tenant", "t1".to_owned()),
        ("scope", "control".to_owned()),
        ("exp", exp.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(record, expected);
    let expires: i64 = s
        .redis
        .client
        .expire_time(format!("vnc:token:{jti}"))
        .await
        .unwrap();
    assert_eq!(expires, exp as i64 + 5);
    let (bobs, _) = mint(&s, &s.bob, "desk", "view").await;
    let bob_jti = bobs["jti"].as_str().unwrap();
    let (tinas, _) = mint(&s, &s.tina, "lab", "view").await;
    let tina_jti = tinas["jti"].as_str().unwrap();

    let revoke = |jti: &str| format!("/v1/tokens/{jti}/revoke");
    // Someone else's token, another tenant's, one control never minted, one expired:
    // refused, nothing revoked, nothing published.
    assert_eq!(status_of(&s, "POST", &revoke(&jti), &s.bob).await, 403);
    assert_eq!(status_of(&s, "POST", &revoke(&jti), &s.boss).await, 404);
    assert_eq!(status_of(&s, "POST", &revoke(tina_jti), &s.root).await, 404);
    assert_eq!(
        status_of(&s, "POST", &revoke("jti-offline"), &s.root).await,
        404
    );
    let old = vec![
        ("cid", "desk".to_owned()),
        ("owner", "alice".to_owned()),
        ("tenant", "t1".to_owned()),
        ("scope", "view".to_owned()),
        ("exp", (unix_now() - 30).to_string()),
    ];
    let _: () = s.redis.client.hset("vnc:token:jti-old", old).await.unwrap();
    assert_eq!(
        status_of(&s, "POST", &revoke("jti-old"), &s.alice).await,
        404
    );
    let revoked: i64 = s
        .redis
        .client
        .exists(vec![
            format!("vnc:revoked:{jti}"),
            format!("vnc:revoked:{tina_jti}"),
            "vnc:revoked:jti-old".to_owned(),
        ])
        .await
        .unwrap();
    assert_eq!(revoked, 0);

    let want = json!({"jti": jti, "revoked": true, "expires_at": minted["expires_at"]});
    for _ in 0..2 {
        let (status, body) = s
            .control
            .call("POST", &revoke(&jti), Some(&s.alice), None)
            .await
            .unwrap();
        assert_eq!((status, &body), (200, &want), "idempotent");
        assert_eq!(
            next_kick(&mut rx).await,
            json!({"type": "kick", "jti": jti, "exp": exp, "reason": "revoked"})
        );
        let value: Option<String> = s
            .redis
            .client
            .get(format!("vnc:revoked:{jti}"))
            .await
            .unwrap();
        assert_eq!(value.as_deref(), Some("1"));
        let expires: i64 = s
            .redis
            .client
            .expire_time(format!("vnc:revoked:{jti}"))
            .await
            .unwrap();
        assert_eq!(
            expires,
            exp as i64 + 5,
            "revoked as long as the relays accept it"
        );
    }

    // An admin revokes a colleague's token.
    let (status, body) = s
        .control
        .call("POST", &revoke(bob_jti), Some(&s.root), None)
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        next_kick(&mut rx).await,
        json!({"type": "kick", "jti": bob_jti, "exp": bobs["exp"], "reason": "revoked"})
    );
    assert_eq!(
        s.control
            .metric(r#"vnc_control_kicks_total{kind="revoke"}"#)
            .await,
        Some(3.0)
    );
    assert_eq!(
        s.control
            .metric(r#"vnc_control_kicks_total{kind="kick"}"#)
            .await,
        Some(0.0)
    );
}

#[tokio::test]
async fn relay_nodes_are_listed_to_admins_of_any_tenant() {
    let s = stack().await;
    heartbeat(
        &s.redis,
        "relay-a",
        "10.0.0.1:6080",
        2,
        Duration::from_secs(60),
    )
    .await;
    heartbeat(
        &s.redis,
        "relay-b",
        "10.0.0.2:6080",
        0,
        Duration::from_secs(60),
    )
    .await;
    // Enough nodes that SCAN takes several pages, and a key under the prefix that is
    // not a heartbeat.
    let pipe = s.redis.client.pipeline();
    for i in 0..1200 {
        let _: () = pipe
            .hset(format!("vnc:node:many-{i:04}"), ("addr", "10.1.0.1:6080"))
            .await
            .unwrap();
    }
    let _: Vec<fred::types::Value> = pipe.all().await.unwrap();
    let _: () = s
        .redis
        .client
        .set("vnc:node:junk", "x", None, None, false)
        .await
        .unwrap();

    assert_eq!(status_of(&s, "GET", "/v1/nodes", &s.alice).await, 403);
    let (status, body) = s
        .control
        .call("GET", "/v1/nodes", Some(&s.root), None)
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let nodes = body["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 1202);
    assert_eq!(
        nodes[1200],
        json!({"node_id": "relay-a", "addr": "10.0.0.1:6080", "sessions": 2,
               "started_at": "2023-11-14T22:13:20.000Z", "version": "0.1.0"})
    );
    assert_eq!(nodes[1201]["node_id"], "relay-b");
    assert_eq!(nodes[0]["node_id"], "many-0000");

    // Nodes serve every tenant: another tenant's admin sees the same; a node whose
    // heartbeat stops leaves the listing.
    heartbeat(
        &s.redis,
        "relay-c",
        "10.0.0.3:6080",
        1,
        Duration::from_secs(2),
    )
    .await;
    let (_, body) = s
        .control
        .call("GET", "/v1/nodes", Some(&s.boss), None)
        .await
        .unwrap();
    assert_eq!(body["nodes"].as_array().unwrap().len(), 1203);
    eventually("the silent node to leave the listing", WAIT, || async {
        let (status, body) = s
            .control
            .call("GET", "/v1/nodes", Some(&s.boss), None)
            .await
            .ok()?;
        let ids: Vec<&str> = body["nodes"]
            .as_array()?
            .iter()
            .filter_map(|n| n["node_id"].as_str())
            .filter(|id| id.starts_with("relay-"))
            .collect();
        (status == 200 && ids == ["relay-a", "relay-b"]).then_some(())
    })
    .await;
    let metrics = s.control.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("vnc_control_http_requests_total")
                && l.contains(r#"route="/v1/nodes""#)
                && l.contains(r#"status="403""#)),
        "{metrics}"
    );
}
