//! One driver per desktop and share links, on the relays, all real: one Redis, two
//! relay nodes, the RFB fixture as the desktop (it logs every input message it gets),
//! raw WebSocket sessions and the official socket.io client. The container record and
//! share links are written into Redis the way control writes them.
#![forbid(unsafe_code)]

use std::time::Duration;

use serde_json::{Value, json};
use vnc_shared::token::Scope;
use vnc_tests::fixture::Fixture;
use vnc_tests::keys::TestKeys;
use vnc_tests::process::eventually;
use vnc_tests::redis::RedisServer;
use vnc_tests::relay::RelayProcess;
use vnc_tests::rfb::RfbClient;
use vnc_tests::sio::{SioClient, socketio_client_available};
use vnc_tests::ws::refused;

const W: u16 = 64;
const H: u16 = 48;

struct Desk {
    redis: RedisServer,
    fixture: Fixture,
    keys: TestKeys,
    a: RelayProcess,
    b: RelayProcess,
}

/// Container `c1` of user `u1` (tenant `t1`) and two relay nodes with a 3 s session TTL.
async fn desk() -> Desk {
    desk_with(&[]).await
}

/// [`desk`] with extra flags for both relays.
async fn desk_with(extra: &[&str]) -> Desk {
    let redis = RedisServer::start().await.unwrap();
    let fixture = Fixture::start(&[]).await.unwrap();
    let keys = TestKeys::new();
    redis
        .put_container("c1", "t1", "running", fixture.port())
        .await;
    let mut args = vec!["--session-ttl", "3s"];
    args.extend_from_slice(extra);
    let a = RelayProcess::start(&redis.url(), &keys.public, &args)
        .await
        .unwrap();
    let b = RelayProcess::start(&redis.url(), &keys.public, &args)
        .await
        .unwrap();
    a.wait_ready().await;
    b.wait_ready().await;
    Desk {
        redis,
        fixture,
        keys,
        a,
        b,
    }
}

impl Desk {
    /// A raw WebSocket session through `relay`, past the RFB handshake.
    async fn raw(&self, relay: &RelayProcess, token: &str) -> RfbClient {
        let mut rfb = RfbClient::connect(&relay.ws_url(token)).await.unwrap();
        rfb.handshake().await.unwrap();
        rfb
    }

    /// A socket.io session through `relay` (with a display name), past the RFB
    /// handshake; returns it with its `vnc:self`.
    async fn sio(
        &self,
        relay: &RelayProcess,
        token: &str,
        name: Option<&str>,
    ) -> (RfbClient, Value) {
        let mut options = json!({ "token": token, "containerId": "c1" });
        if let Some(name) = name {
            options["name"] = json!(name);
        }
        let mut sio = SioClient::start(relay.public, options).await.unwrap();
        let me = sio.expect_named("vnc:self", |_| true).await.unwrap();
        let mut rfb = RfbClient::over_socketio(sio);
        rfb.handshake().await.unwrap();
        (rfb, me)
    }

    /// The owner's session on node A, which drives, its id, and the owner's session on
    /// node B.
    async fn owner_on_both(&self) -> (RfbClient, String, RfbClient) {
        let first = self
            .raw(&self.a, &self.keys.token("c1", Scope::Control))
            .await;
        let first_sid = eventually("the first session to drive", vnc_tests::WAIT, || async {
            self.driver().await
        })
        .await;
        let second = self
            .raw(&self.b, &self.keys.token("c1", Scope::Control))
            .await;
        (first, first_sid, second)
    }

    /// Whether the desktop got a KeyEvent with `keysym`.
    fn typed(&self, keysym: u32) -> bool {
        self.fixture
            .events()
            .iter()
            .any(|e| e["msg"] == "KeyEvent" && e["keysym"] == keysym)
    }

    async fn wait_typed(&self, keysym: u32) {
        self.fixture
            .wait_event(&format!("KeyEvent {keysym:#x}"), |e| {
                e["msg"] == "KeyEvent" && e["keysym"] == keysym
            })
            .await;
    }

    async fn driver(&self) -> Option<String> {
        self.redis.get("vnc:driver:{c1}").await
    }

    /// The session id of the one registry record `pick` accepts.
    async fn sid(
        &self,
        pick: impl Fn(&std::collections::HashMap<String, String>) -> bool,
    ) -> String {
        let sessions = self.redis.sessions("c1").await;
        let found: Vec<&String> = sessions
            .iter()
            .filter(|(_, r)| pick(r))
            .map(|(s, _)| s)
            .collect();
        assert_eq!(found.len(), 1, "{sessions:?}");
        found[0].clone()
    }
}

/// Types `keysym` (down) on a session.
async fn press(rfb: &mut RfbClient, keysym: u32) {
    rfb.key(true, keysym).await.unwrap();
}

/// Types `keysym` until the desktop gets it (the lease reaches the session's node
/// a moment after it moves).
async fn types_eventually(desk: &Desk, rfb: &mut RfbClient, keysym: u32) {
    let deadline = tokio::time::Instant::now() + vnc_tests::WAIT;
    while !desk.typed(keysym) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{keysym:#x} never arrived"
        );
        press(rfb, keysym).await;
        rfb.round_trip(W, H).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Emits a `vnc:control:*` event and returns its acknowledgement.
async fn ask(rfb: &mut RfbClient, event: &str, payload: Value) -> Value {
    rfb.sio().emit(event, payload).await.unwrap()
}

fn refused_with(ack: &Value, error: &str) {
    assert_eq!(ack, &json!({ "ok": false, "error": error }));
}

/// The owner's first session drives; a second control session of the owner on the
/// other node can't type (its input dropped and counted there) until the first one
/// ends, when the lease goes to it.
#[tokio::test]
async fn one_session_drives_across_nodes_and_the_lease_passes_on_when_it_ends() {
    let desk = desk().await;
    let (mut first, first_sid, mut second) = desk.owner_on_both().await;
    press(&mut second, 0x102).await;
    second.round_trip(W, H).await.unwrap();
    press(&mut first, 0x101).await;
    desk.wait_typed(0x101).await;
    first.round_trip(W, H).await.unwrap();
    assert!(!desk.typed(0x102), "a second control session typed");
    desk.b
        .wait_metric(
            "vnc_relay_input_dropped_total{kind=\"key_event\",reason=\"not_driver\"}",
            1.0,
        )
        .await;
    assert_eq!(desk.driver().await, Some(first_sid.clone()));

    // The driver leaves: the owner's other session (on the other node) drives.
    drop(first);
    let second_sid = eventually("the lease to pass on", vnc_tests::WAIT, || async {
        desk.driver().await.filter(|d| *d != first_sid)
    })
    .await;
    assert_eq!(second_sid, desk.sid(|_| true).await);
    types_eventually(&desk, &mut second, 0x103).await;
}

/// On one node with the default session TTL (15 s): when the driver's session ends,
/// the owner's other session there drives at once, not after the lease expires (the
/// ending session must not inherit its own lease).
#[tokio::test]
async fn the_lease_passes_at_once_to_the_owners_next_session_on_the_same_node() {
    let stack = vnc_tests::stack::Stack::start(&[], &[]).await.unwrap();
    let url = || stack.relay.ws_url(&stack.keys.token("c1", Scope::Control));
    let mut first = RfbClient::connect(&url()).await.unwrap();
    first.handshake().await.unwrap();
    let mut second = RfbClient::connect(&url()).await.unwrap();
    second.handshake().await.unwrap();
    let lease = || async { stack.redis.get("vnc:driver:{c1}").await };
    let first_sid = eventually("a driver", vnc_tests::WAIT, || async { lease().await }).await;
    drop(first);
    // Well inside the 15 s the lease would take to expire.
    eventually(
        "the next session to drive",
        Duration::from_secs(5),
        || async { lease().await.filter(|d| *d != first_sid) },
    )
    .await;
    second.key(true, 0x111).await.unwrap();
    stack
        .fixture
        .wait_event("its key", |e| e["keysym"] == 0x111)
        .await;
}

/// The hand-over on socket.io, across two nodes: presence everywhere, requests,
/// grants and takes with their refusals, input following the lease, and a revoked
/// share ending its sessions only.
#[tokio::test]
async fn control_is_requested_granted_and_taken_back_over_socketio() {
    if !socketio_client_available() {
        return;
    }
    let desk = desk().await;
    desk.redis.put_share("h-control", "c1", "control", 5).await;
    desk.redis.put_share("h-view", "c1", "view", 5).await;
    let owner_token = desk.keys.token("c1", Scope::Control);
    let (mut owner, owner_me) = desk.sio(&desk.a, &owner_token, None).await;
    assert_eq!(owner_me["privileged"], true);
    assert_eq!(owner_me["name"], "u1");
    let owner_sid = owner_me["session_id"].as_str().unwrap().to_owned();
    eventually("the owner to drive", vnc_tests::WAIT, || async {
        (desk.driver().await.as_deref() == Some(owner_sid.as_str())).then_some(())
    })
    .await;
    let guest_token = desk.keys.share_token("c1", Scope::Control, "h-control");
    let (mut guest, guest_me) = desk.sio(&desk.b, &guest_token, Some(" Ann\u{7} ")).await;
    assert_eq!(guest_me["privileged"], false);
    assert_eq!(guest_me["name"], "Ann");
    assert_eq!(guest_me["scope"], "control");
    let guest_sid = guest_me["session_id"].as_str().unwrap().to_owned();
    let view_token = desk.keys.share_token("c1", Scope::View, "h-view");
    let (mut watcher, watcher_me) = desk.sio(&desk.a, &view_token, None).await;
    assert!(
        watcher_me["name"].as_str().unwrap().starts_with("Guest "),
        "{watcher_me}"
    );

    // Everyone, on both nodes, sees the three of them and who drives.
    for client in [&mut owner, &mut guest, &mut watcher] {
        let presence = client
            .sio()
            .expect_named("vnc:presence", |p| {
                p["viewers"].as_array().map(Vec::len) == Some(3)
            })
            .await
            .unwrap();
        assert_eq!(presence["driver"], json!(owner_sid));
        let viewers = presence["viewers"].as_array().unwrap();
        let drivers: Vec<&Value> = viewers.iter().filter(|v| v["driver"] == true).collect();
        assert_eq!(drivers.len(), 1);
        assert_eq!(drivers[0]["session_id"], json!(owner_sid));
        let ann = viewers.iter().find(|v| v["name"] == "Ann").unwrap();
        assert_eq!(
            (&ann["guest"], &ann["node"]),
            (&json!(true), &json!(desk.b.node_id))
        );
    }

    // Refusals, with their reasons.
    refused_with(
        &ask(&mut watcher, "vnc:control:request", json!({})).await,
        "view-only sessions can't take control",
    );
    refused_with(
        &ask(&mut guest, "vnc:control:take", json!({})).await,
        "only the owner or an admin can take control",
    );
    refused_with(
        &ask(
            &mut guest,
            "vnc:control:grant",
            json!({ "session_id": guest_sid }),
        )
        .await,
        "only the driver or the owner can grant",
    );
    let not_yet = ask(
        &mut guest,
        "vnc:input",
        json!({ "type": "key", "down": true, "keysym": 0x201 }),
    )
    .await;
    refused_with(&not_yet, "not in control: ask for control first");

    // The guest asks; the owner hears it and grants.
    let asked = ask(&mut guest, "vnc:control:request", json!({})).await;
    assert_eq!(asked, json!({ "ok": true, "asked": true }));
    let request = owner
        .sio()
        .expect_named("vnc:control:requested", |_| true)
        .await
        .unwrap();
    assert_eq!(request, json!({ "session_id": guest_sid, "name": "Ann" }));
    let watcher_sid = watcher_me["session_id"].as_str().unwrap();
    refused_with(
        &ask(
            &mut owner,
            "vnc:control:grant",
            json!({ "session_id": watcher_sid }),
        )
        .await,
        "that session is view-only",
    );
    refused_with(
        &ask(
            &mut owner,
            "vnc:control:grant",
            json!({ "session_id": "nobody" }),
        )
        .await,
        "no such session in this desktop",
    );
    let granted = ask(
        &mut owner,
        "vnc:control:grant",
        json!({ "session_id": guest_sid }),
    )
    .await;
    assert_eq!(granted["ok"], true, "{granted}");
    for client in [&mut guest, &mut watcher] {
        let moved = client
            .sio()
            .expect_named("vnc:control", |c| c["driver"] == json!(guest_sid))
            .await
            .unwrap();
        assert_eq!(moved["by"], json!(owner_sid));
    }
    assert_eq!(desk.driver().await, Some(guest_sid.clone()));

    // The guest types; the owner can't.
    let key = |keysym: u32| json!({ "type": "key", "down": true, "keysym": keysym });
    let typed = ask(&mut guest, "vnc:input", key(0x202)).await;
    assert_eq!(typed["ok"], true, "{typed}");
    desk.wait_typed(0x202).await;
    refused_with(
        &ask(&mut owner, "vnc:input", key(0x203)).await,
        "not in control: ask for control first",
    );
    press(&mut owner, 0x204).await;
    owner.round_trip(W, H).await.unwrap();
    refused_with(
        &ask(
            &mut guest,
            "vnc:control:grant",
            json!({ "session_id": "nobody" }),
        )
        .await,
        "no such session in this desktop",
    );

    // The owner takes control back.
    let taken = ask(&mut owner, "vnc:control:take", json!({})).await;
    assert_eq!(taken["ok"], true, "{taken}");
    guest
        .sio()
        .expect_named("vnc:control", |c| c["driver"] == json!(owner_sid))
        .await
        .unwrap();
    let typed = ask(&mut owner, "vnc:input", key(0x205)).await;
    assert_eq!(typed["ok"], true, "{typed}");
    desk.wait_typed(0x205).await;
    assert!(
        !desk.typed(0x203) && !desk.typed(0x204),
        "the owner typed without control"
    );

    // The control share is revoked: its session ends, the others go on.
    desk.redis.del("vnc:share:h-control").await;
    desk.redis
        .publish(
            "vnc:control",
            &json!({ "type": "kick", "share": "h-control", "reason": "share revoked" }),
        )
        .await;
    assert_eq!(
        guest.sio().expect_end().await.unwrap(),
        (4003, "share revoked".to_owned())
    );
    owner.round_trip(W, H).await.unwrap();
    watcher.round_trip(W, H).await.unwrap();
    let left = owner
        .sio()
        .expect_named("vnc:presence", |p| {
            p["viewers"].as_array().map(Vec::len) == Some(2)
        })
        .await
        .unwrap();
    assert!(!left.to_string().contains(&guest_sid));

    // A socket's control requests are bounded (8 a second): a burst is refused past it.
    let mut answers = Vec::new();
    for _ in 0..20 {
        answers.push(ask(&mut watcher, "vnc:control:take", json!({})).await);
    }
    let limited = answers
        .iter()
        .filter(|a| a["error"] == "too many requests")
        .count();
    // Twenty within at most two windows of 8: at least 4 refused.
    assert!(limited >= 4, "{answers:?}");
    watcher.round_trip(W, H).await.unwrap();
}

/// A share token opens sessions only while its share exists, up to its
/// `max_sessions` across nodes, and is not single-use; a share that disappears from
/// Redis without a kick (a lost message, lost data) ends its sessions at the next beat.
#[tokio::test]
async fn share_links_are_checked_at_admission_and_on_every_beat() {
    let desk = desk().await;
    let token = desk.keys.share_token("c1", Scope::View, "h1");
    let (status, body) = refused(&desk.a.ws_url(&token)).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("share link revoked or expired"), "{body}");

    desk.redis.put_share("h1", "c1", "view", 2).await;
    let mut one = desk.raw(&desk.a, &token).await;
    let mut two = desk.raw(&desk.b, &token).await;
    let (status, body) = refused(&desk.a.ws_url(&token)).await;
    assert_eq!(status, 429, "{body}");
    assert!(body.contains("share link"), "{body}");
    let guests = desk.redis.sessions("c1").await;
    assert!(
        guests
            .values()
            .all(|r| r["sub"].starts_with("guest:") && r["share"] == "h1"),
        "{guests:?}"
    );
    // A share for another container doesn't open this one.
    desk.redis.put_share("h2", "other", "view", 2).await;
    let elsewhere = desk.keys.share_token("c1", Scope::View, "h2");
    assert_eq!(refused(&desk.a.ws_url(&elsewhere)).await.0, 403);

    // Gone without a kick: both sessions end within a beat (1 s here).
    desk.redis.del("vnc:share:h1").await;
    for rfb in [&mut one, &mut two] {
        let (code, reason) = vnc_tests::ws::expect_close(rfb.ws(), Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!((code, reason.as_str()), (4003, "share revoked"));
    }
}

/// The lease of a relay that dies is free again within the session TTL, and the
/// owner's session on another node takes it; after Redis loses its data, the
/// holding node writes the lease back.
#[tokio::test]
async fn the_lease_survives_a_dead_node_and_a_redis_that_lost_its_data() {
    let mut desk = desk().await;
    let (mut first, first_sid, mut second) = desk.owner_on_both().await;
    press(&mut first, 0x301).await;
    desk.wait_typed(0x301).await;

    // Redis loses everything: node A writes the lease back with its registry.
    desk.redis.wipe().await;
    eventually("the lease to be written back", vnc_tests::WAIT, || async {
        (desk.driver().await.as_deref() == Some(first_sid.as_str())).then_some(())
    })
    .await;
    press(&mut second, 0x302).await;
    second.round_trip(W, H).await.unwrap();
    assert!(!desk.typed(0x302));

    // Node A dies with the lease: within the TTL it is free, and B's session takes it.
    desk.a.proc.signal("KILL");
    let _ = desk.a.proc.wait_exit(vnc_tests::WAIT).await;
    drop(first);
    let heir = eventually(
        "the lease to pass to node B",
        Duration::from_secs(10),
        || async { desk.driver().await.filter(|d| *d != first_sid) },
    )
    .await;
    assert_eq!(
        desk.redis.sessions("c1").await[&heir]["node"],
        desk.b.node_id
    );
    types_eventually(&desk, &mut second, 0x303).await;
}

/// `input = "shared"`: every control session types on either node, no lease is taken,
/// control requests are refused, and `vnc:self` says so (the viewer page then shows no
/// control buttons and doesn't hold back the keyboard).
#[tokio::test]
async fn shared_input_lets_every_control_session_type() {
    if !socketio_client_available() {
        return;
    }
    let desk = desk_with(&["--input", "shared"]).await;
    desk.redis.put_share("h-control", "c1", "control", 5).await;
    let owner_token = desk.keys.token("c1", Scope::Control);
    let (mut owner, owner_me) = desk.sio(&desk.a, &owner_token, None).await;
    assert_eq!(owner_me["input"], "shared", "{owner_me}");
    let guest_token = desk.keys.share_token("c1", Scope::Control, "h-control");
    let (mut guest, guest_me) = desk.sio(&desk.b, &guest_token, Some("Ann")).await;
    assert_eq!(guest_me["input"], "shared", "{guest_me}");

    press(&mut owner, 0x61).await;
    press(&mut guest, 0x62).await;
    desk.wait_typed(0x61).await;
    desk.wait_typed(0x62).await;
    assert_eq!(desk.driver().await, None, "no lease in shared mode");
    for event in ["vnc:control:request", "vnc:control:take"] {
        refused_with(&ask(&mut owner, event, json!({})).await, "input is shared");
    }
}
