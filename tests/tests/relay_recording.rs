//! Session recording end to end, with the real relay, Redis and the RFB fixture: the
//! relay records exactly what the browser received (raw WebSocket and socket.io) when
//! the container or the token's scope asks for it and nothing otherwise, stops a
//! recording at its maximum without touching the session, and `vnc-relay replay`
//! plays a recording back over a WebSocket at its recorded pace.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use vnc_shared::token::Scope;
use vnc_tests::WAIT;
use vnc_tests::process::eventually;
use vnc_tests::recording::{RecordingFile, ReplayProcess, finished, replay_refusal};
use vnc_tests::rfb::RfbClient;
use vnc_tests::sio::{SioClient, socketio_client_available};
use vnc_tests::stack::Stack;

const W: u16 = 64;
const H: u16 = 48;
const PASSWORD: &str = "s3cret";
/// A pause the test leaves between two updates, which the recording and the replay
/// must keep.
const PAUSE: Duration = Duration::from_millis(300);

/// A stack whose relay records to a fresh directory, with extra relay flags; the
/// fixture demands VNC Authentication and the relay injects the password.
async fn recording_stack(extra: &[&str]) -> (Stack, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec!["--record-dir", dir.path().to_str().unwrap()];
    args.extend_from_slice(extra);
    let fixture = ["--auth", "vnc", "--password", PASSWORD];
    let stack = Stack::start(&fixture, &args).await.unwrap();
    stack.redis.set_field("c1", "vnc_password", PASSWORD).await;
    (stack, dir)
}

/// Waits until `dir` holds `count` finished recordings and none being written.
async fn wait_recordings(dir: &Path, count: usize) -> Vec<PathBuf> {
    eventually(&format!("{count} finished recording(s)"), WAIT, || async {
        let (done, writing) = finished(dir);
        (done.len() == count && !writing).then_some(done)
    })
    .await
}

/// A session over the raw WebSocket: handshake, an update, [`PAUSE`], another update,
/// close. Returns every byte it received and where the second update starts.
async fn session(url: &str) -> (Vec<u8>, usize) {
    let mut rfb = RfbClient::connect(url).await.unwrap();
    rfb.capture();
    rfb.handshake().await.unwrap();
    rfb.round_trip(W, H).await.unwrap();
    let second = rfb.received().len();
    tokio::time::sleep(PAUSE).await;
    rfb.round_trip(W, H).await.unwrap();
    rfb.ws().close(None).await.unwrap();
    (rfb.received().to_vec(), second)
}

#[tokio::test]
async fn recorded_sessions_hold_what_the_browser_received_and_replay_at_their_pace() {
    let (stack, dir) = recording_stack(&["--record-scope", "view"]).await;
    let relay = &stack.relay;

    // A control token on a container that doesn't ask: not recorded.
    session(&stack.url()).await;
    let closed = "vnc_relay_sessions_total{transport=\"websocket\",outcome=\"client_closed\"}";
    relay.wait_metric(closed, 1.0).await;

    // A view token: recorded, because the relay records every view session.
    let view_token = stack.keys.token("c1", Scope::View);
    let (got, second) = session(&relay.ws_url(&view_token)).await;
    let files = wait_recordings(dir.path(), 1).await;
    let rec = RecordingFile::read(&files[0]).unwrap();
    assert_eq!(
        rec.data(),
        got,
        "the recording is the browser's byte stream"
    );
    // What the browser saw: the relay's handshake, security None offered.
    assert!(
        got.starts_with(b"RFB 003.008\n\x01\x01"),
        "{:?}",
        &got[..14]
    );
    assert_eq!(rec.end, Some(json!({"end": "complete"})));
    let meta = &rec.meta;
    assert_eq!(
        (&meta["container_id"], &meta["user_id"], &meta["scope"]),
        (&json!("c1"), &json!("u1"), &json!("view"))
    );
    assert_eq!(meta["transport"], "websocket");
    let pause = rec.pause_before(second).unwrap();
    assert!(pause >= 290, "the recorded pause is {pause} ms");
    let text = String::from_utf8_lossy(&rec.raw);
    assert!(!text.contains(&view_token) && !text.contains(PASSWORD));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&rec.path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    // The container asks: a control session is recorded too.
    stack.redis.set_field("c1", "record", "true").await;
    let (got_control, _) = session(&stack.url()).await;
    let files = wait_recordings(dir.path(), 2).await;
    let rec_control = RecordingFile::read(&files[1]).unwrap();
    assert_eq!(rec_control.data(), got_control);
    assert_eq!(rec_control.meta["scope"], "control");
    relay
        .wait_metric("vnc_relay_recordings_total{result=\"complete\"}", 2.0)
        .await;

    // Replay the view session: same bytes, same order, the pause kept.
    let replay = ReplayProcess::start(&rec.path, &[]).await.unwrap();
    let mut ws = vnc_tests::ws::connect(&replay.url()).await.unwrap();
    let mut played = Vec::new();
    let mut arrivals: Vec<(usize, Instant)> = Vec::new();
    while played.len() < got.len() {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("replayed bytes in time")
            .expect("connection open")
            .unwrap();
        if let Message::Binary(b) = msg {
            arrivals.push((played.len(), Instant::now()));
            played.extend_from_slice(&b);
            // What a viewer sends is read and dropped.
            ws.send(Message::binary(vec![3, 0, 0, 0, 0, 0, 0, 64, 0, 48]))
                .await
                .unwrap();
        }
    }
    assert_eq!(played, got);
    let at = arrivals.iter().position(|(off, _)| *off == second).unwrap();
    let gap = arrivals[at].1 - arrivals[at - 1].1;
    assert!(
        gap >= Duration::from_millis(150),
        "the pause replayed as {gap:?}"
    );
    // Then the connection stays open: the last picture stays on screen.
    assert!(
        tokio::time::timeout(Duration::from_millis(200), ws.next())
            .await
            .is_err()
    );

    // A file cut inside a record is refused, saying so.
    let cut = dir.path().join("cut.vncrec");
    std::fs::write(&cut, &rec.raw[..rec.raw.len() - 30]).unwrap();
    let err = replay_refusal(&cut).unwrap();
    assert!(err.contains("cut short"), "{err}");
}

#[tokio::test]
async fn a_recording_stops_at_its_maximum_and_the_session_goes_on() {
    let (stack, dir) = recording_stack(&["--record-max-bytes", "16384"]).await;
    stack.redis.set_field("c1", "record", "true").await;
    let mut rfb = RfbClient::connect(&stack.url()).await.unwrap();
    rfb.capture();
    rfb.handshake().await.unwrap();
    // Each full update is 12 KiB: the second one no longer fits.
    for _ in 0..4 {
        rfb.round_trip(W, H).await.unwrap();
    }
    rfb.ws().close(None).await.unwrap();
    let files = wait_recordings(dir.path(), 1).await;
    let rec = RecordingFile::read(&files[0]).unwrap();
    assert_eq!(
        rec.end,
        Some(json!({"end": "truncated", "reason": "max_bytes"}))
    );
    let (data, got) = (rec.data(), rfb.received());
    assert!(
        data.len() > 12_000 && data.len() < got.len() / 2,
        "{}",
        data.len()
    );
    assert!(
        got.starts_with(&data),
        "the recording is a prefix of the stream"
    );
    assert!(rec.raw.len() <= 16384, "{}", rec.raw.len());
    stack
        .relay
        .wait_metric(
            "vnc_relay_recordings_total{result=\"truncated_max_bytes\"}",
            1.0,
        )
        .await;
}

#[tokio::test]
async fn socketio_sessions_are_recorded_too() {
    if !socketio_client_available() {
        return;
    }
    let (stack, dir) = recording_stack(&[]).await;
    stack.redis.set_field("c1", "record", "true").await;
    stack.relay.wait_ready().await;
    let token = stack.keys.token("c1", Scope::Control);
    let sio = SioClient::connect(stack.relay.public, &token, "c1")
        .await
        .unwrap();
    let mut rfb = RfbClient::over_socketio(sio);
    rfb.capture();
    rfb.handshake().await.unwrap();
    rfb.round_trip(W, H).await.unwrap();
    rfb.sio().command(json!({"cmd": "close"})).await.unwrap();
    let files = wait_recordings(dir.path(), 1).await;
    let rec = RecordingFile::read(&files[0]).unwrap();
    assert_eq!(rec.data(), rfb.received());
    assert_eq!(rec.meta["transport"], "socketio");
    assert_eq!(rec.end, Some(json!({"end": "complete"})));
}
