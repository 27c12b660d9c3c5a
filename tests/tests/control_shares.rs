//! vnc-control's share links, presence list and driver lease, end to end: the real
//! binary against a real redis-server. Session hashes are written the way a relay node
//! writes them; kicks and driver changes are read off `vnc:control` and
//! `vnc:room:{cid}` by a subscriber, as a relay reads them. Every answer is checked
//! against control's OpenAPI description on the way.
#![forbid(unsafe_code)]

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use fred::clients::SubscriberClient;
use fred::prelude::*;
use fred::types::Message;
use serde_json::{Value, json};
use tokio::sync::broadcast::Receiver;
use vnc_shared::token::{KeySet, Scope, VerifyPolicy, unix_now};
use vnc_tests::WAIT;
use vnc_tests::control::{ControlProcess, Identity};
use vnc_tests::keys::TestKeys;
use vnc_tests::redis::{RedisServer, far_future};

/// Container `desk` belongs to alice of tenant t1, `lab` to tina of tenant t2. Bob is
/// alice's colleague, root t1's admin, boss t2's admin.
struct Stack {
    redis: RedisServer,
    control: ControlProcess,
    keys: TestKeys,
    identity: Identity,
    alice: String,
    bob: String,
    root: String,
    tina: String,
    boss: String,
}

async fn stack() -> Stack {
    let redis = RedisServer::start().await.unwrap();
    let keys = TestKeys::new();
    let identity = Identity::new();
    let control = ControlProcess::start_static_with(
        &redis.url(),
        &keys,
        &identity,
        &[("desk", "alice", "t1", 5900), ("lab", "tina", "t2", 5900)],
        // Where browsers reach this API: share links carry it for the page's files.
        &["--public-url", "https://api.example.com/"],
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
        keys,
        identity,
    }
}

/// A session as a relay node registers it.
struct RelaySession<'a> {
    sid: &'a str,
    cid: &'a str,
    sub: &'a str,
    tenant: &'a str,
    scope: &'a str,
    started_at: u64,
    /// `None`: as a relay from before the field was recorded.
    name: Option<&'a str>,
    share: Option<&'a str>,
}

impl RelaySession<'_> {
    async fn register(&self, redis: &RedisServer) {
        let mut fields: Vec<(&str, String)> = vec![
            ("cid", self.cid.to_owned()),
            ("sub", self.sub.to_owned()),
            ("tenant", self.tenant.to_owned()),
            ("scope", self.scope.to_owned()),
            ("node", "relay-a".to_owned()),
            ("jti", format!("jti-{}", self.sid)),
            ("started_at", self.started_at.to_string()),
            ("transport", "socketio".to_owned()),
            ("client_addr", "192.0.2.10".to_owned()),
        ];
        fields.extend(self.name.map(|n| ("name", n.to_owned())));
        fields.extend(self.share.map(|h| ("share", h.to_owned())));
        let ttl = std::time::Duration::from_secs(60);
        redis
            .register_session(self.sid, self.cid, self.share, fields, ttl)
            .await;
    }
}

fn session<'a>(sid: &'a str, cid: &'a str, sub: &'a str, scope: &'a str) -> RelaySession<'a> {
    RelaySession {
        sid,
        cid,
        sub,
        tenant: if cid == "lab" { "t2" } else { "t1" },
        scope,
        started_at: 1_700_000_000_000,
        name: Some(sub),
        share: None,
    }
}

/// A subscriber on `channel`, as a relay node has one.
async fn subscribe(redis: &RedisServer, channel: &str) -> (SubscriberClient, Receiver<Message>) {
    let sub = Builder::from_config(Config::from_url(&redis.url()).unwrap())
        .build_subscriber_client()
        .unwrap();
    sub.init().await.unwrap();
    let rx = sub.message_rx();
    // Rooms are sharded channels.
    if channel.starts_with("vnc:room:") {
        sub.ssubscribe(channel).await.unwrap();
    } else {
        sub.subscribe(channel).await.unwrap();
    }
    (sub, rx)
}

/// The next message on the subscribed channel, as JSON.
async fn next_message(rx: &mut Receiver<Message>, channel: &str) -> Value {
    let msg = tokio::time::timeout(WAIT, rx.recv())
        .await
        .unwrap_or_else(|_| panic!("a message on {channel}"))
        .unwrap();
    assert_eq!(&*msg.channel, channel);
    serde_json::from_str(&msg.value.as_string().unwrap()).unwrap()
}

/// The claims of a JWT (signature unchecked).
fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

async fn create(s: &Stack, bearer: &str, cid: &str, body: Value) -> (u16, Value) {
    s.control
        .call(
            "POST",
            &format!("/v1/containers/{cid}/shares"),
            Some(bearer),
            Some(&body),
        )
        .await
        .unwrap()
}

async fn list(s: &Stack, bearer: &str, cid: &str) -> (u16, Value) {
    s.control
        .call(
            "GET",
            &format!("/v1/containers/{cid}/shares"),
            Some(bearer),
            None,
        )
        .await
        .unwrap()
}

fn view(ttl: u64) -> Value {
    json!({"scope": "view", "ttl_seconds": ttl})
}

#[tokio::test]
async fn a_share_link_is_minted_recorded_and_listed() {
    let s = stack().await;
    let (status, body) = create(
        &s,
        &s.alice,
        "desk",
        json!({"scope": "view", "ttl_seconds": 3600, "max_sessions": 5, "name": "Demo"}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let id = body["share_id"].as_str().unwrap().to_owned();
    let token = body["token"].as_str().unwrap();
    assert_eq!(
        (&body["scope"], &body["max_sessions"], &body["name"]),
        (&json!("view"), &json!(5), &json!("Demo"))
    );
    assert_eq!(
        body["url"],
        format!(
            "http://localhost:6080/#token={token}&containerId=desk&share=1\
             &control=https%3A%2F%2Fapi.example.com"
        )
    );

    // The relays' key verifies it; it names the share, not a user.
    let relay_keys = KeySet::ed25519_from_pem_files(
        [("k1".to_owned(), s.keys.public.as_path())],
        &VerifyPolicy::default(),
    )
    .unwrap();
    let claims = relay_keys.verify(token).unwrap();
    assert_eq!(claims.share.as_deref(), Some(id.as_str()));
    assert_eq!(claims.sub, format!("share:{id}"));
    assert_eq!(
        (claims.cid.as_str(), claims.tenant.as_str(), claims.scope),
        ("desk", "t1", Scope::View)
    );
    assert!(!claims.admin);
    let now = unix_now();
    assert!(
        claims.exp > now + 3500 && claims.exp <= now + 3600,
        "{}",
        claims.exp
    );
    // The token's exp, a whole second.
    assert!(
        body["expires_at"].as_str().unwrap().ends_with(".000Z"),
        "{body}"
    );

    // The share's hash, expiring with the token; the container's set; the token's
    // record (revocable by jti like every token control issues).
    let share: HashMap<String, String> = s
        .redis
        .client
        .hgetall(format!("vnc:share:{id}"))
        .await
        .unwrap();
    assert_eq!(share["cid"], "desk");
    assert_eq!(share["tenant"], "t1");
    assert_eq!(share["scope"], "view");
    assert_eq!(share["name"], "Demo");
    assert_eq!(share["max_sessions"], "5");
    assert_eq!(share["created_by"], "alice");
    assert_eq!(share["expires_at"], claims.exp.to_string());
    let expires: i64 = s
        .redis
        .client
        .custom(
            fred::types::CustomCommand::new_static("EXPIRETIME", None, false),
            vec![format!("vnc:share:{id}")],
        )
        .await
        .unwrap();
    assert_eq!(expires, claims.exp as i64);
    let members: Vec<(String, f64)> = s
        .redis
        .client
        .zrange("vnc:shares:{desk}", 0, -1, None, false, None, true)
        .await
        .unwrap();
    assert_eq!(members, [(id.clone(), claims.exp as f64)]);
    let recorded: bool = s
        .redis
        .client
        .exists(format!("vnc:token:{}", claims.jti))
        .await
        .unwrap();
    assert!(recorded);

    // Defaults: 10 sessions, no name. An admin of the tenant shares too.
    let (status, second) = create(
        &s,
        &s.root,
        "desk",
        json!({"scope": "control", "ttl_seconds": 60}),
    )
    .await;
    assert_eq!(status, 201, "{second}");
    assert_eq!(
        (&second["max_sessions"], &second["name"], &second["scope"]),
        (&json!(10), &Value::Null, &json!("control"))
    );
    let second_id = second["share_id"].as_str().unwrap().to_owned();

    // Sessions: one live of the first share, one of a node that died (its hash gone).
    RelaySession {
        share: Some(&id),
        name: Some("Ann"),
        ..session("g1", "desk", "guest:0a1b2c3d", "view")
    }
    .register(&s.redis)
    .await;
    let _: () = s
        .redis
        .client
        .zadd(
            format!("vnc:share_sessions:{{{id}}}"),
            None,
            None,
            false,
            false,
            (far_future(), "g-dead"),
        )
        .await
        .unwrap();
    // A share that expired: its hash is gone, its id is still in the set.
    let _: () = s
        .redis
        .client
        .zadd(
            "vnc:shares:{desk}",
            None,
            None,
            false,
            false,
            (far_future(), "gone"),
        )
        .await
        .unwrap();

    let (status, listing) = list(&s, &s.alice, "desk").await;
    assert_eq!(status, 200, "{listing}");
    let shares = listing["shares"].as_array().unwrap();
    assert_eq!(shares.len(), 2, "{listing}");
    let first = shares
        .iter()
        .find(|x| x["share_id"] == id.as_str())
        .unwrap();
    assert_eq!(
        (&first["sessions"], &first["name"], &first["created_by"]),
        (&json!(1), &json!("Demo"), &json!("alice"))
    );
    assert_eq!(first["expires_at"], body["expires_at"]);
    let other = shares
        .iter()
        .find(|x| x["share_id"] == second_id.as_str())
        .unwrap();
    assert_eq!(
        (&other["sessions"], &other["created_by"], &other["name"]),
        (&json!(0), &json!("root"), &Value::Null)
    );
    let mut members: Vec<String> = s
        .redis
        .client
        .zrange("vnc:shares:{desk}", 0, -1, None, false, None, false)
        .await
        .unwrap();
    members.sort();
    let mut expected = vec![id.clone(), second_id.clone()];
    expected.sort();
    assert_eq!(members, expected, "the expired id is dropped");

    // An admin lists; a colleague is refused; another tenant sees nothing.
    assert_eq!(list(&s, &s.root, "desk").await.0, 200);
    assert_eq!(list(&s, &s.bob, "desk").await.0, 403);
    assert_eq!(list(&s, &s.boss, "desk").await.0, 404);
    let (status, lab) = list(&s, &s.tina, "lab").await;
    assert_eq!((status, lab), (200, json!({"shares": []})));
}

#[tokio::test]
async fn share_requests_are_bounded_and_checked() {
    let s = stack().await;
    let long_name = "x".repeat(65);
    for bad in [
        view(0),
        view(86_401),
        json!({"scope": "view", "ttl_seconds": 60, "max_sessions": 0}),
        json!({"scope": "view", "ttl_seconds": 60, "max_sessions": 101}),
        json!({"scope": "view", "ttl_seconds": 60, "name": long_name}),
        json!({"scope": "view", "ttl_seconds": 60, "name": "two\nlines"}),
        json!({"scope": "view", "ttl_seconds": 60, "sub": "alice"}),
        json!({"scope": "admin", "ttl_seconds": 60}),
    ] {
        let (status, body) = create(&s, &s.alice, "desk", bad.clone()).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    // The edges pass: a day, 100 sessions, 64 characters.
    let edge = json!({"scope": "view", "ttl_seconds": 86_400, "max_sessions": 100,
                      "name": "é".repeat(64)});
    let (status, body) = create(&s, &s.alice, "desk", edge).await;
    assert_eq!(status, 201, "{body}");

    // A colleague may view the desktop but not hand it out; another tenant can't see it.
    let (status, body) = create(&s, &s.bob, "desk", view(60)).await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = create(&s, &s.boss, "desk", view(60)).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(create(&s, &s.alice, "nope", view(60)).await.0, 404);

    // A stopped container is not shared.
    let fields = vec![
        ("owner", "alice"),
        ("tenant", "t1"),
        ("state", "stopped"),
        ("image", "desk-image"),
    ];
    let _: () = s
        .redis
        .client
        .hset("vnc:container:old", fields)
        .await
        .unwrap();
    let (status, body) = create(&s, &s.alice, "old", view(60)).await;
    assert_eq!(status, 409, "{body}");

    // 32 live shares a container: the 33rd waits until one is revoked.
    for _ in 1..32 {
        let (status, body) = create(&s, &s.alice, "desk", view(60)).await;
        assert_eq!(status, 201, "{body}");
    }
    let (status, body) = create(&s, &s.root, "desk", view(60)).await;
    assert_eq!(status, 429, "{body}");
    assert!(body["message"].as_str().unwrap().contains("32"), "{body}");
    let n: i64 = s.redis.client.zcard("vnc:shares:{desk}").await.unwrap();
    assert_eq!(n, 32);
    let (_, listing) = list(&s, &s.alice, "desk").await;
    let some = listing["shares"][0]["share_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, _) = s
        .control
        .call(
            "DELETE",
            &format!("/v1/shares/{some}"),
            Some(&s.alice),
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    let (status, body) = create(&s, &s.alice, "desk", view(60)).await;
    assert_eq!(status, 201, "{body}");
    // Another container's limit is its own.
    assert_eq!(create(&s, &s.tina, "lab", view(60)).await.0, 201);
}

#[tokio::test]
async fn revoking_a_share_deletes_it_and_kicks_its_sessions_once() {
    let s = stack().await;
    let (_sub, mut rx) = subscribe(&s.redis, "vnc:control").await;
    let (_, alices) = create(&s, &s.alice, "desk", view(600)).await;
    let alices = alices["share_id"].as_str().unwrap().to_owned();
    let (_, roots) = create(&s, &s.root, "desk", view(600)).await;
    let roots = roots["share_id"].as_str().unwrap().to_owned();
    let path = |id: &str| format!("/v1/shares/{id}");
    let delete = |bearer: String, id: String| {
        let s = &s;
        async move {
            s.control
                .call("DELETE", &path(&id), Some(&bearer), None)
                .await
                .unwrap()
        }
    };

    // A colleague is refused; another tenant's admin and an unknown id find nothing.
    assert_eq!(delete(s.bob.clone(), alices.clone()).await.0, 403);
    assert_eq!(delete(s.boss.clone(), alices.clone()).await.0, 404);
    let (status, body) = delete(s.alice.clone(), "nope".into()).await;
    assert_eq!((status, &body["message"]), (404, &json!("share not found")));

    // The owner revokes: the share is gone and the kick names it.
    let (status, body) = delete(s.alice.clone(), alices.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"share_id": alices, "revoked": true}));
    assert_eq!(
        next_message(&mut rx, "vnc:control").await,
        json!({"type": "kick", "share": alices, "reason": "share revoked"})
    );
    let exists: bool = s
        .redis
        .client
        .exists(format!("vnc:share:{alices}"))
        .await
        .unwrap();
    assert!(!exists);
    let (_, listing) = list(&s, &s.alice, "desk").await;
    let listed: Vec<&str> = listing["shares"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["share_id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [roots.as_str()]);
    // Twice is not found, and publishes nothing.
    assert_eq!(delete(s.alice.clone(), alices.clone()).await.0, 404);

    // The creator revokes his own share without the admin role.
    let root_as_user = s.identity.token("root", "t1", false);
    let (status, body) = delete(root_as_user, roots.clone()).await;
    assert_eq!(status, 200, "{body}");
    // The next message is this kick: the repeated DELETE above published none.
    assert_eq!(
        next_message(&mut rx, "vnc:control").await,
        json!({"type": "kick", "share": roots, "reason": "share revoked"})
    );
    assert_eq!(
        s.control
            .metric("vnc_control_kicks_total{kind=\"share\"}")
            .await,
        Some(2.0)
    );
}

#[tokio::test]
async fn an_admins_vnc_token_says_so_and_a_users_does_not() {
    let s = stack().await;
    let mint = |bearer: String| {
        let s = &s;
        async move {
            let (status, body) = s
                .control
                .call(
                    "POST",
                    "/v1/containers/desk/vnc-tokens",
                    Some(&bearer),
                    Some(&json!({"scope": "control", "ttl_seconds": 60})),
                )
                .await
                .unwrap();
            assert_eq!(status, 200, "{body}");
            claims(body["token"].as_str().unwrap())
        }
    };
    let admin = mint(s.root.clone()).await;
    assert_eq!(
        (&admin["admin"], &admin["sub"]),
        (&json!(true), &json!("root"))
    );
    let owner = mint(s.alice.clone()).await;
    assert!(owner.get("admin").is_none(), "{owner}");
    assert!(owner.get("share").is_none(), "{owner}");
}

/// Alice's control tab, a guest of a share link with control, and bob viewing from a
/// relay that records no name; tina's session on another tenant's desktop.
async fn register_room(s: &Stack) {
    RelaySession {
        started_at: 1_700_000_001_000,
        ..session("s-alice", "desk", "alice", "control")
    }
    .register(&s.redis)
    .await;
    RelaySession {
        started_at: 1_700_000_002_000,
        name: Some("Ann"),
        share: Some("h1"),
        ..session("s-guest", "desk", "guest:0a1b2c3d", "control")
    }
    .register(&s.redis)
    .await;
    RelaySession {
        started_at: 1_700_000_003_000,
        name: None,
        ..session("s-bob", "desk", "bob", "view")
    }
    .register(&s.redis)
    .await;
    session("s-tina", "lab", "tina", "control")
        .register(&s.redis)
        .await;
}

#[tokio::test]
async fn presence_lists_the_registry_and_the_driver() {
    let s = stack().await;
    register_room(&s).await;
    let presence = |bearer: String| {
        let s = &s;
        async move {
            s.control
                .call("GET", "/v1/containers/desk/presence", Some(&bearer), None)
                .await
                .unwrap()
        }
    };
    let viewers = |driver: &str| {
        json!([
            {"session_id": "s-alice", "name": "alice", "scope": "control",
             "driver": driver == "s-alice", "node": "relay-a", "guest": false},
            {"session_id": "s-guest", "name": "Ann", "scope": "control",
             "driver": driver == "s-guest", "node": "relay-a", "guest": true},
            {"session_id": "s-bob", "name": "bob", "scope": "view",
             "driver": false, "node": "relay-a", "guest": false},
        ])
    };
    let (status, body) = presence(s.alice.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"driver": null, "viewers": viewers(""), "more": 0})
    );

    let _: () = s
        .redis
        .client
        .set("vnc:driver:{desk}", "s-guest", None, None, false)
        .await
        .unwrap();
    let (status, body) = presence(s.root.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"driver": "s-guest", "viewers": viewers("s-guest"), "more": 0})
    );

    assert_eq!(presence(s.bob.clone()).await.0, 403);
    assert_eq!(presence(s.boss.clone()).await.0, 404);
}

#[tokio::test]
async fn control_gives_the_driver_lease_and_tells_the_room() {
    let s = stack().await;
    register_room(&s).await;
    let (_sub, mut rx) = subscribe(&s.redis, "vnc:room:{desk}").await;
    let give = |bearer: String, body: Value| {
        let s = &s;
        async move {
            s.control
                .call(
                    "POST",
                    "/v1/containers/desk/driver",
                    Some(&bearer),
                    Some(&body),
                )
                .await
                .unwrap()
        }
    };

    let (status, body) = give(s.alice.clone(), json!({"session_id": "s-guest"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"driver": "s-guest"}));
    let lease: Option<String> = s.redis.client.get("vnc:driver:{desk}").await.unwrap();
    assert_eq!(lease.as_deref(), Some("s-guest"));
    let pttl: i64 = s.redis.client.pttl("vnc:driver:{desk}").await.unwrap();
    assert!(pttl > 0 && pttl <= 60_000, "{pttl}");
    let msg = next_message(&mut rx, "vnc:room:{desk}").await;
    assert!(
        msg["at"].as_u64().unwrap() >= unix_now() * 1000 - 60_000,
        "{msg}"
    );
    assert_eq!(
        msg,
        json!({"type": "driver", "cid": "desk", "driver": "s-guest", "by": "control",
               "at": msg["at"], "seq": 0})
    );

    // Refused, and nothing published: another container's session, an unknown one, a
    // view session, a colleague, another tenant, a body without the field.
    for (bearer, body, want) in [
        (&s.root, json!({"session_id": "s-tina"}), 404),
        (&s.root, json!({"session_id": "nope"}), 404),
        (&s.alice, json!({"session_id": "s-bob"}), 409),
        (&s.bob, json!({"session_id": "s-alice"}), 403),
        (&s.boss, json!({"session_id": "s-alice"}), 404),
        (&s.alice, json!({}), 400),
        (&s.alice, json!({"session_id": "s-alice", "by": "x"}), 400),
    ] {
        let (status, answer) = give(bearer.clone(), body.clone()).await;
        assert_eq!(status, want, "{body}: {answer}");
    }
    let lease: Option<String> = s.redis.client.get("vnc:driver:{desk}").await.unwrap();
    assert_eq!(lease.as_deref(), Some("s-guest"));

    // An admin frees it; the next message on the room is that.
    let (status, body) = give(s.root.clone(), json!({"session_id": null})).await;
    assert_eq!((status, body), (200, json!({"driver": null})));
    let lease: Option<String> = s.redis.client.get("vnc:driver:{desk}").await.unwrap();
    assert_eq!(lease, None);
    let msg = next_message(&mut rx, "vnc:room:{desk}").await;
    assert_eq!(
        (&msg["type"], &msg["driver"], &msg["by"]),
        (&json!("driver"), &Value::Null, &json!("control"))
    );
    let (_, presence) = s
        .control
        .call("GET", "/v1/containers/desk/presence", Some(&s.alice), None)
        .await
        .unwrap();
    assert_eq!(presence["driver"], Value::Null, "{presence}");
}
