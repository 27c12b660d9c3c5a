//! Sessions across relay nodes through control, all real: one Redis, one control (static
//! runtime, the RFB fixture as the desktop), two relay nodes. Control lists the
//! container's sessions on both nodes, kicks one on node B, revokes a token whose
//! session lives on node A, single-use tokens hold across nodes, and the relays keep
//! serving when control is gone.
#![forbid(unsafe_code)]

use std::collections::BTreeSet;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use vnc_tests::control::{ControlProcess, Identity};
use vnc_tests::fixture::Fixture;
use vnc_tests::keys::TestKeys;
use vnc_tests::process::eventually;
use vnc_tests::redis::RedisServer;
use vnc_tests::relay::RelayProcess;
use vnc_tests::rfb::RfbClient;
use vnc_tests::ws::{expect_close, refused};

const W: u16 = 64;
const H: u16 = 48;

struct Nodes {
    control: ControlProcess,
    a: RelayProcess,
    b: RelayProcess,
    alice: String,
    _redis: RedisServer,
    fixture: Fixture,
    _keys: TestKeys,
    _identity: Identity,
}

async fn nodes(redis: RedisServer) -> Nodes {
    let keys = TestKeys::new();
    let identity = Identity::new();
    let fixture = Fixture::start(&[]).await.unwrap();
    let control = ControlProcess::start_static_at(
        &redis.url(),
        &keys,
        &identity,
        &[("desk", "alice", "t1", fixture.port())],
    )
    .await
    .unwrap();
    let ttl = ["--session-ttl", "3s"];
    let a = RelayProcess::start(&redis.url(), &keys.public, &ttl)
        .await
        .unwrap();
    let b = RelayProcess::start(&redis.url(), &keys.public, &ttl)
        .await
        .unwrap();
    redis.wait_key("vnc:container:desk").await;
    Nodes {
        alice: identity.token("alice", "t1", false),
        control,
        a,
        b,
        _redis: redis,
        fixture,
        _keys: keys,
        _identity: identity,
    }
}

impl Nodes {
    /// A VNC token for `desk` from control's API.
    async fn token(&self) -> String {
        self.control.vnc_token(&self.alice, "desk").await
    }

    async fn sessions(&self) -> Vec<serde_json::Value> {
        let (status, body) = self
            .control
            .call(
                "GET",
                "/v1/containers/desk/sessions",
                Some(&self.alice),
                None,
            )
            .await
            .unwrap();
        assert_eq!(status, 200, "{body}");
        body["sessions"].as_array().cloned().unwrap_or_default()
    }
}

async fn viewer(relay: &RelayProcess, token: &str) -> RfbClient {
    let mut rfb = RfbClient::connect(&relay.ws_url(token)).await.unwrap();
    rfb.handshake().await.unwrap();
    rfb
}

fn jti_of(token: &str) -> String {
    let payload = token.split('.').nth(1).unwrap();
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    claims["jti"].as_str().unwrap().to_owned()
}

async fn control_sees_kicks_and_revokes_sessions_on_every_node(redis: RedisServer) {
    let n = nodes(redis).await;
    let mut on_a = viewer(&n.a, &n.token().await).await;
    let mut on_b = viewer(&n.b, &n.token().await).await;

    // Both sessions, one per node, in control's listing.
    let listed = eventually("both sessions listed", vnc_tests::WAIT, || async {
        let s = n.sessions().await;
        (s.len() == 2).then_some(s)
    })
    .await;
    let on_nodes: BTreeSet<&str> = listed.iter().filter_map(|s| s["node"].as_str()).collect();
    assert_eq!(
        on_nodes,
        BTreeSet::from([n.a.node_id.as_str(), n.b.node_id.as_str()])
    );

    // Kick B's session through control: 4003 there, A's session untouched.
    let sid_b = listed
        .iter()
        .find(|s| s["node"] == n.b.node_id.as_str())
        .and_then(|s| s["session_id"].as_str())
        .unwrap();
    let (status, body) = n
        .control
        .call(
            "DELETE",
            &format!("/v1/sessions/{sid_b}"),
            Some(&n.alice),
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, 202, "{body}");
    let (code, _) = expect_close(on_b.ws(), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(code, 4003);
    on_a.round_trip(W, H).await.unwrap();

    // Revoke a token whose session lives on A: it ends, and B refuses the token.
    let token = n.token().await;
    let mut revoked = viewer(&n.a, &token).await;
    let (status, body) = n
        .control
        .call(
            "POST",
            &format!("/v1/tokens/{}/revoke", jti_of(&token)),
            Some(&n.alice),
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let (code, reason) = expect_close(revoked.ws(), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!((code, reason.as_str()), (4003, "token revoked"));
    assert_eq!(refused(&n.b.ws_url(&token)).await.0, 403);
    on_a.round_trip(W, H).await.unwrap();

    // A single-use token can't open a second session on the other node.
    let once = n.token().await;
    let _first = viewer(&n.b, &once).await;
    assert_eq!(refused(&n.a.ws_url(&once)).await.0, 403);

    // Control goes away: live sessions don't notice, and tokens it minted before
    // keep opening sessions until they expire.
    let minted = n.token().await;
    n.control.proc.signal("KILL");
    on_a.round_trip(W, H).await.unwrap();
    let mut after = viewer(&n.b, &minted).await;
    after.round_trip(W, H).await.unwrap();
}

/// Control's share links and driver endpoint act on the relays' live sessions: a link
/// opens a guest session on the other node, control's presence lists both, the driver
/// control names types and the owner's session no longer does, and revoking the link
/// ends the guest's session with 4003 while the owner's goes on.
async fn control_shares_a_desktop_and_moves_its_driver(redis: RedisServer) {
    let n = nodes(redis).await;
    let typed = |keysym: u32| {
        n.fixture
            .events()
            .iter()
            .any(|e| e["msg"] == "KeyEvent" && e["keysym"] == keysym)
    };
    let mut owner = viewer(&n.a, &n.token().await).await;
    let body = serde_json::json!({ "scope": "control", "ttl_seconds": 600, "max_sessions": 2 });
    let (status, share) = n
        .control
        .call(
            "POST",
            "/v1/containers/desk/shares",
            Some(&n.alice),
            Some(&body),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{share}");
    let token = share["token"].as_str().unwrap();
    let mut guest = viewer(&n.b, token).await;

    let presence = eventually("both in control's presence", vnc_tests::WAIT, || async {
        let (status, p) = n
            .control
            .call("GET", "/v1/containers/desk/presence", Some(&n.alice), None)
            .await
            .ok()?;
        (status == 200 && p["viewers"].as_array()?.len() == 2 && !p["driver"].is_null())
            .then_some(p)
    })
    .await;
    let viewers = presence["viewers"].as_array().unwrap();
    let of = |guest: bool| {
        viewers
            .iter()
            .find(|v| v["guest"] == guest)
            .and_then(|v| v["session_id"].as_str())
            .unwrap()
            .to_owned()
    };
    let (owner_sid, guest_sid) = (of(false), of(true));
    assert_eq!(presence["driver"], owner_sid.as_str());

    owner.key(true, 0x401).await.unwrap();
    n.fixture
        .wait_event("the owner's key", |e| e["keysym"] == 0x401)
        .await;
    let body = serde_json::json!({ "session_id": guest_sid });
    let (status, moved) = n
        .control
        .call(
            "POST",
            "/v1/containers/desk/driver",
            Some(&n.alice),
            Some(&body),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{moved}");
    // The relays apply it as the room channel tells them.
    let deadline = tokio::time::Instant::now() + vnc_tests::WAIT;
    while !typed(0x402) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the guest never typed"
        );
        guest.key(true, 0x402).await.unwrap();
        guest.round_trip(W, H).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    owner.key(true, 0x403).await.unwrap();
    owner.round_trip(W, H).await.unwrap();
    guest.key(true, 0x404).await.unwrap();
    n.fixture
        .wait_event("the guest's second key", |e| e["keysym"] == 0x404)
        .await;
    assert!(!typed(0x403), "the owner typed without the lease");

    let share_id = share["share_id"].as_str().unwrap();
    let (status, body) = n
        .control
        .call(
            "DELETE",
            &format!("/v1/shares/{share_id}"),
            Some(&n.alice),
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let (code, reason) = expect_close(guest.ws(), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!((code, reason.as_str()), (4003, "share revoked"));
    owner.round_trip(W, H).await.unwrap();
    assert_eq!(refused(&n.a.ws_url(token)).await.0, 403);
}

vnc_tests::on_every_redis!(
    control_sees_kicks_and_revokes_sessions_on_every_node,
    control_shares_a_desktop_and_moves_its_driver,
);
