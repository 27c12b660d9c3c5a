//! Both daemons behind Redis Sentinel, all real: a primary, a replica and three
//! sentinels (`vnc_tests::sentinel`), one control (static runtime, the RFB fixture as
//! the desktop) and one relay, both given the `redis-sentinel://` URL. The primary is
//! killed mid-session and the sentinels promote the replica.
#![forbid(unsafe_code)]

use std::cell::Cell;
use std::time::Duration;

use serde_json::{Value, json};
use tokio_tungstenite::tungstenite;
use vnc_tests::control::{ControlProcess, Identity};
use vnc_tests::fixture::Fixture;
use vnc_tests::keys::TestKeys;
use vnc_tests::process::eventually;
use vnc_tests::relay::RelayProcess;
use vnc_tests::rfb::RfbClient;
use vnc_tests::sentinel::{FAILOVER_WITHIN, Sentinel};
use vnc_tests::sio::{SioClient, socketio_client_available};
use vnc_tests::ws::expect_close;

const W: u16 = 64;
const H: u16 = 48;

/// The image control allows; the static runtime starts nothing, so it is never pulled.
const IMAGE: &str = "vnc-test/static-desktop";

/// Bound on the daemons taking up with the new primary once the sentinels name it:
/// their reconnect back-off is at most 5 s, plus the relay's next heartbeat. A failure
/// bound, not a speed the test asserts.
const RESUME_WITHIN: Duration = Duration::from_secs(20);

/// A desktop created through control's API, as `bearer`: polls the create until it is
/// accepted (202), allowing only 503 (Redis unreachable) before; the job's id.
async fn create_desktop(control: &ControlProcess, bearer: &str, within: Duration) -> String {
    eventually("a desktop create to be accepted", within, || async {
        let (status, body) = control.create_desktop(bearer, IMAGE).await;
        match status {
            202 => Some(body["job_id"].as_str().expect("job_id").to_owned()),
            503 => None,
            other => panic!("create answered {other}, expected 202 or 503: {body}"),
        }
    })
    .await
}

/// The job as `bearer` sees it once it ended: the static runtime refuses every start,
/// so a start job ends `failed` on its first attempt, with that reason.
async fn ended_once(control: &ControlProcess, bearer: &str, job: &str) -> Value {
    let record = control.wait_job(bearer, job, RESUME_WITHIN).await;
    assert_eq!(record["state"], "failed", "{record}");
    assert!(
        record["error"]
            .as_str()
            .unwrap_or_default()
            .contains("does not manage"),
        "{record}"
    );
    assert_eq!(record["attempts"], 1, "run once: {record}");
    record
}

/// The Sentinel deployment, control (static runtime: the fixture is desktop `desk` of
/// alice, tenant t1) and `n` relays, all given the Sentinel URL.
struct Deployment {
    sentinel: Sentinel,
    control: ControlProcess,
    relays: Vec<RelayProcess>,
    /// alice's bearer token for control's API.
    alice: String,
    _fixture: Fixture,
    _keys: TestKeys,
    _identity: Identity,
}

impl Deployment {
    async fn start(n: usize) -> Deployment {
        let sentinel = Sentinel::start().await.unwrap();
        let url = sentinel.url();
        let keys = TestKeys::new();
        let identity = Identity::new();
        let fixture = Fixture::start(&[]).await.unwrap();
        let control = ControlProcess::start_static_with(
            &url,
            &keys,
            &identity,
            &[("desk", "alice", "t1", fixture.port())],
            &["--image", IMAGE],
        )
        .await
        .unwrap();
        let mut relays = Vec::new();
        for _ in 0..n {
            let relay = RelayProcess::start(&url, &keys.public, &["--session-ttl", "3s"])
                .await
                .unwrap();
            relay.wait_ready().await;
            relays.push(relay);
        }
        let alice = identity.token("alice", "t1", false);
        eventually(
            "control to register the desktop",
            vnc_tests::WAIT,
            || async {
                let (status, _) = control
                    .call("GET", "/v1/containers/desk", Some(&alice), None)
                    .await
                    .ok()?;
                (status == 200).then_some(())
            },
        )
        .await;
        Deployment {
            sentinel,
            control,
            relays,
            alice,
            _fixture: fixture,
            _keys: keys,
            _identity: identity,
        }
    }
}

/// The primary dies mid-session. The live session keeps relaying, before and after
/// the sentinels promote the replica (RFB bytes go over TCP, Redis is not in the data
/// path); a new session is refused with 503 and nothing else until the daemons found
/// the new primary, then accepted; every pub/sub subscription is back on the new
/// primary (the relay's control and room channels, the socket.io adapter's shard
/// channels), so a kick through control after the failover ends the live session;
/// control's job consumers run a job enqueued after the failover exactly once, and do
/// not run again a job that ended before it.
#[tokio::test]
async fn both_daemons_follow_a_sentinel_failover() {
    let Deployment {
        mut sentinel,
        control,
        relays,
        alice,
        _fixture,
        _keys,
        _identity,
    } = Deployment::start(1).await;
    let relay = &relays[0];

    let mut live = RfbClient::connect(&relay.ws_url(&control.vnc_token(&alice, "desk").await))
        .await
        .unwrap();
    live.handshake().await.unwrap();
    live.round_trip(W, H).await.unwrap();
    // Minted now, used once the primary is gone (control can't mint without Redis).
    let later = relay.ws_url(&control.vnc_token(&alice, "desk").await);
    let before_job = create_desktop(&control, &alice, vnc_tests::WAIT).await;
    ended_once(&control, &alice, &before_job).await;

    let subscribed = eventually("the relay's subscriptions", vnc_tests::WAIT, || async {
        let (channels, shards) = sentinel.subscriptions().await.ok()?;
        // The room is a sharded channel, as are socket.io adapter's.
        let rooms = shards.iter().any(|c| c == "vnc:room:{desk}");
        let adapter = shards.iter().any(|c| c.starts_with("vnc:socket.io"));
        let control = channels.iter().any(|c| c == "vnc:control");
        (rooms && adapter && control).then_some((channels, shards))
    })
    .await;
    // Everything so far is on the replica: the failover loses nothing of it.
    sentinel.sync_replica().await.unwrap();

    let old = sentinel.kill_primary().await.unwrap();
    // No primary: the live session goes on.
    for _ in 0..3 {
        live.round_trip(W, H).await.unwrap();
    }

    // A new session and a new desktop, from the moment of the kill: refused with 503
    // (and nothing else) until the daemons have the new primary, then accepted. The
    // session's token was not spent by the refusals; the desktop's start job is
    // enqueued on the new primary (the old one is dead), so it must not be lost.
    let refusals = Cell::new(0u32);
    let session = eventually(
        "a new session to be accepted",
        FAILOVER_WITHIN + RESUME_WITHIN,
        || async {
            match vnc_tests::ws::connect(&later).await {
                Ok(ws) => Some(RfbClient::over_ws(ws)),
                Err(tungstenite::Error::Http(resp)) => {
                    let status = resp.status().as_u16();
                    assert_eq!(status, 503, "a refusal during the failover");
                    refusals.set(refusals.get() + 1);
                    None
                }
                Err(e) => panic!("a new session during the failover: {e}"),
            }
        },
    );
    let (mut fresh, after_job) = tokio::join!(
        session,
        create_desktop(&control, &alice, FAILOVER_WITHIN + RESUME_WITHIN)
    );
    fresh.handshake().await.unwrap();
    fresh.round_trip(W, H).await.unwrap();
    let new = sentinel.wait_failover(old).await;
    assert_ne!(new, old);
    assert!(
        refusals.get() > 0,
        "the relay accepted a session before the sentinels promoted a new primary"
    );
    live.round_trip(W, H).await.unwrap();

    // Pub/sub is not replicated: every subscriber took its channels again.
    eventually(
        "the subscriptions back on the new primary",
        RESUME_WITHIN,
        || async {
            let (channels, shards) = sentinel.subscriptions().await.ok()?;
            let back = subscribed.0.iter().all(|c| channels.contains(c))
                && subscribed.1.iter().all(|c| shards.contains(c));
            back.then_some(())
        },
    )
    .await;

    // A kick through control ends each session, the one from before the failover too.
    let sessions = eventually("both sessions listed", RESUME_WITHIN, || async {
        let (status, body) = control
            .call("GET", "/v1/containers/desk/sessions", Some(&alice), None)
            .await
            .ok()?;
        let sessions = body["sessions"].as_array().cloned().unwrap_or_default();
        (status == 200 && sessions.len() == 2).then_some(sessions)
    })
    .await;
    for s in &sessions {
        let sid = s["session_id"].as_str().unwrap();
        let (status, body) = control
            .call("DELETE", &format!("/v1/sessions/{sid}"), Some(&alice), None)
            .await
            .unwrap();
        assert_eq!(status, 202, "{body}");
    }
    for rfb in [&mut live, &mut fresh] {
        let (code, _) = expect_close(rfb.ws(), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(code, 4003);
    }

    // Jobs: the one enqueued once the new primary took over runs exactly once; the
    // one that ended before the failover is not run again.
    ended_once(&control, &alice, &after_job).await;
    let (status, again) = control
        .call("GET", &format!("/v1/jobs/{before_job}"), Some(&alice), None)
        .await
        .unwrap();
    assert_eq!(status, 200, "{again}");
    assert_eq!(
        (&again["state"], &again["attempts"]),
        (&json!("failed"), &json!(1))
    );
}

/// A `view` token for `desk` from control's API, as `bearer`.
async fn view_token(control: &ControlProcess, bearer: &str) -> String {
    let body = json!({"scope": "view", "ttl_seconds": 60});
    let (status, minted) = control
        .call(
            "POST",
            "/v1/containers/desk/vnc-tokens",
            Some(bearer),
            Some(&body),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{minted}");
    minted["token"].as_str().unwrap().to_owned()
}

/// A socket.io viewer of `desk` on `relay`, past the RFB handshake.
async fn sio_viewer(relay: &RelayProcess, token: &str) -> RfbClient {
    let sio = SioClient::connect(relay.public, token, "desk")
        .await
        .unwrap();
    let mut rfb = RfbClient::over_socketio(sio);
    rfb.handshake().await.unwrap();
    rfb
}

/// The next `viewer.joined` of a `view` session that `rfb` hears, skipping those of
/// `control` sessions (its own among them: a node announces to its own viewers too).
async fn view_joined(rfb: &mut RfbClient) -> Value {
    loop {
        let joined = rfb.sio().expect_room_event("viewer.joined").await.unwrap();
        if joined["scope"] == "view" {
            return joined;
        }
    }
}

/// socket.io viewers of one desktop on two relay nodes hear each other through the
/// socket.io adapter (`viewer.joined` is broadcast through Redis), after a failover
/// too: each node's adapter subscribed again on the new primary. Node A's viewer has
/// a `control` token; those joining on B have `view` tokens, so A can tell their
/// announcements from its own.
#[tokio::test]
async fn socketio_viewers_on_two_nodes_hear_each_other_after_a_failover() {
    if !socketio_client_available() {
        return;
    }
    let Deployment {
        mut sentinel,
        control,
        relays,
        alice,
        _fixture,
        _keys,
        _identity,
    } = Deployment::start(2).await;
    let (a, b) = (&relays[0], &relays[1]);
    let mut on_a = sio_viewer(a, &control.vnc_token(&alice, "desk").await).await;
    let _on_b = sio_viewer(b, &view_token(&control, &alice).await).await;
    assert_eq!(view_joined(&mut on_a).await["transport"], "socketio");
    // Minted now: control can't mint while no primary answers.
    let later = view_token(&control, &alice).await;
    let (_, shards) = sentinel.subscriptions().await.unwrap();
    sentinel.sync_replica().await.unwrap();

    let old = sentinel.kill_primary().await.unwrap();
    sentinel.wait_failover(old).await;
    // Both nodes' adapters have subscribed again before the next viewer joins (else
    // its announcement could go out before node A listens).
    eventually("the adapters' channels back", RESUME_WITHIN, || async {
        let (_, now) = sentinel.subscriptions().await.ok()?;
        shards.iter().all(|c| now.contains(c)).then_some(())
    })
    .await;
    b.wait_ready().await;
    let _also_on_b = sio_viewer(b, &later).await;
    assert_eq!(view_joined(&mut on_a).await["transport"], "socketio");
    on_a.round_trip(W, H).await.unwrap();
}
