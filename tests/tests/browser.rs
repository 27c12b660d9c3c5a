//! The viewer page (`web/`) in a real browser against the real stack: redis-server, the
//! vnc-relay binary serving the page (`--web-root web`), an X desktop (Xvfb + x11vnc)
//! registered as container `desk`, and Debian's chromium driven through playwright-core
//! (`tests/browser/driver.mjs`); the kick test adds the vnc-control binary (static
//! runtime). Every test asserts on the remote screen's pixels as the page shows them or
//! on what reached the X display.
//!
//! Needs `xvfb x11vnc xterm x11-xserver-utils x11-utils fonts-dejavu-core chromium`
//! (Debian) and `npm ci` in `web/` and `tests/browser/`; skips loudly without them, and
//! fails under `CI=true`.
#![forbid(unsafe_code)]

use std::time::Duration;

use serde_json::json;
use tokio::process::Command;
use vnc_shared::token::Scope;
use vnc_tests::browser::{
    BACKGROUND_SPOT, Browser, BrowserStack, ORANGE, PURPLE, TEAL, browser_required, repo_root,
    start_relay, wait_typed,
};
use vnc_tests::control::{ControlProcess, Identity};
use vnc_tests::desktop::{find_program, required};
use vnc_tests::keys::TestKeys;
use vnc_tests::process::eventually;
use vnc_tests::redis::RedisServer;

#[tokio::test]
async fn the_viewer_shows_the_desktop_over_websocket() {
    if !browser_required() {
        return;
    }
    let stack = BrowserStack::start(&[]).await;
    stack.desktop.set_background(TEAL).await;
    let mut browser = Browser::start().await;
    browser
        .open(&stack.page_url(&stack.relay, Scope::Control, ""))
        .await;

    let state = browser.wait_state("connected", 1).await;
    assert_eq!(state["transport"], "ws", "{state}");
    assert_eq!(state["viewOnly"], false, "{state}");
    browser.wait_pixel(BACKGROUND_SPOT, TEAL).await;
    stack
        .relay
        .wait_metric("vnc_relay_sessions_active{transport=\"websocket\"}", 1.0)
        .await;

    // The picture is live: a change on the X display reaches the page.
    stack.desktop.set_background(ORANGE).await;
    browser.wait_pixel(BACKGROUND_SPOT, ORANGE).await;
    browser.close().await;
}

/// Needs the relay's socket.io endpoint and `/static/vnc-socketio.js`.
#[tokio::test]
async fn the_viewer_shows_the_desktop_over_socketio() {
    if !browser_required() {
        return;
    }
    let stack = BrowserStack::start(&[]).await;
    stack.desktop.set_background(PURPLE).await;
    let mut browser = Browser::start().await;
    browser
        .open(&stack.page_url(&stack.relay, Scope::Control, "&transport=socketio"))
        .await;

    let state = browser.wait_state("connected", 1).await;
    assert_eq!(state["transport"], "socketio", "{state}");
    browser.wait_pixel(BACKGROUND_SPOT, PURPLE).await;
    // No raw WebSocket session was involved.
    assert_eq!(
        stack
            .relay
            .active_sessions("websocket")
            .await
            .unwrap_or(0.0),
        0.0
    );
    stack.desktop.set_background(TEAL).await;
    browser.wait_pixel(BACKGROUND_SPOT, TEAL).await;
    // The relay followed x11vnc's real stream (whatever encodings it chose for noVNC)
    // for resize answers without losing track of it.
    assert_eq!(
        stack
            .relay
            .metric("vnc_relay_server_stream_unfollowed_total")
            .await
            .unwrap_or(0.0),
        0.0
    );
    browser.close().await;
}

/// noVNC through `/static/vnc-socketio.js` shows the RFB fixture's framebuffer: the
/// canvas carries the fixture's colour.
#[tokio::test]
async fn the_viewer_shows_the_fixture_framebuffer_over_socketio() {
    if !browser_required() {
        return;
    }
    let stack = BrowserStack::start(&[]).await;
    let fixture = vnc_tests::fixture::Fixture::start(&[
        "--width", "320", "--height", "240", "--color", "00a0c0",
    ])
    .await
    .expect("fixture");
    stack
        .redis
        .put_container("fix", "t1", "running", fixture.port())
        .await;
    let token = stack.keys.token("fix", Scope::Control);
    let url = format!(
        "http://{}/#token={token}&containerId=fix&transport=socketio",
        stack.relay.public
    );
    let mut browser = Browser::start().await;
    browser.open(&url).await;
    let state = browser.wait_state("connected", 1).await;
    assert_eq!(state["transport"], "socketio", "{state}");
    browser.wait_pixel((10, 10), (0x00, 0xa0, 0xc0)).await;
    assert_eq!(stack.relay.active_sessions("socketio").await, Some(1.0));
    browser.close().await;
}

#[tokio::test]
async fn typing_in_the_viewer_reaches_the_x_display() {
    if !browser_required() {
        return;
    }
    let mut stack = BrowserStack::start(&[]).await;
    let typed = stack.desktop.xterm_recording("typed", "80x20+40+40").await;
    let mut browser = Browser::start().await;
    browser
        .open(&stack.page_url(&stack.relay, Scope::Control, ""))
        .await;
    browser.wait_state("connected", 1).await;

    // X gives keys to the window under the pointer (no window manager): the click
    // through the page moves the pointer onto the xterm and focuses the page's canvas.
    browser.click((200, 120)).await;
    browser.type_text("Hello, relay 42!\n").await;
    wait_typed(&typed, "Hello, relay 42!\n").await;
}

/// Input of a `view` token must not reach the desktop even when the page sends it (a
/// modified page, or a bug): the relay drops it. Needs the relay's view-only filter.
#[tokio::test]
async fn a_view_token_cannot_type_even_when_the_page_sends_input() {
    if !browser_required() {
        return;
    }
    let mut stack = BrowserStack::start(&[]).await;
    let typed = stack.desktop.xterm_recording("typed", "80x20+40+40").await;

    let mut viewer = Browser::start().await;
    viewer
        .open(&stack.page_url(&stack.relay, Scope::View, ""))
        .await;
    let state = viewer.wait_state("connected", 1).await;
    assert_eq!(
        state["viewOnly"], true,
        "the page shows a view token: {state}"
    );
    // What a modified page would do: send input regardless of the token's scope.
    viewer.call(json!({"cmd": "ignoreViewOnly"})).await;
    viewer.click((200, 120)).await;
    viewer.type_text("viewer-was-here\n").await;

    // A control session types a marker afterwards; once it arrived, anything the view
    // session's keys could have done has happened too (x11vnc applies input in order).
    let mut controller = Browser::start().await;
    controller
        .open(&stack.page_url(&stack.relay, Scope::Control, ""))
        .await;
    controller.wait_state("connected", 1).await;
    controller.click((200, 120)).await;
    controller.type_text("controller-marker\n").await;
    wait_typed(&typed, "controller-marker\n").await;

    let got = std::fs::read_to_string(&typed).expect("read the typed file");
    assert!(
        !got.contains("viewer"),
        "keys of a view token reached the desktop: {got:?}"
    );
    viewer.close().await;
    controller.close().await;
}

/// SIGTERM drains relay A: its session is closed with 1001 and the page reconnects
/// through relay B, the next endpoint of its `relays` list.
#[tokio::test]
async fn a_draining_relay_hands_the_page_to_another_node() {
    if !browser_required() {
        return;
    }
    // Relay A drains for 1 s before it closes its sessions with 1001.
    let mut stack = BrowserStack::start(&["--drain-timeout", "1s"]).await;
    let relay_b = start_relay(&stack.redis, &stack.keys, "relay-b", &[]).await;
    stack.desktop.set_background(TEAL).await;

    let relays = format!(
        "&relays=ws://{},ws://{}",
        stack.relay.public, relay_b.public
    );
    let mut browser = Browser::start().await;
    browser
        .open(&stack.page_url(&stack.relay, Scope::Control, &relays))
        .await;
    let state = browser.wait_state("connected", 1).await;
    assert_eq!(state["endpoint"], format!("ws://{}", stack.relay.public));
    browser.wait_pixel(BACKGROUND_SPOT, TEAL).await;
    stack
        .relay
        .wait_metric("vnc_relay_sessions_active{transport=\"websocket\"}", 1.0)
        .await;

    stack.relay.proc.signal("TERM");
    let state = browser.wait_state("connected", 2).await;
    assert_eq!(
        state["endpoint"],
        format!("ws://{}", relay_b.public),
        "{state}"
    );
    assert_eq!(state["lastClose"]["code"], 1001, "{state}");
    relay_b
        .wait_metric("vnc_relay_sessions_active{transport=\"websocket\"}", 1.0)
        .await;
    assert_eq!(
        stack
            .relay
            .proc
            .wait_exit(Duration::from_secs(10))
            .await
            .ok(),
        Some(Some(0)),
        "relay A exits after draining"
    );

    // The desktop is live again, through B.
    stack.desktop.set_background(ORANGE).await;
    browser.wait_pixel(BACKGROUND_SPOT, ORANGE).await;
    browser.close().await;
}

/// A session the relay ends for good shows why in words and is not retried: here the
/// container stopped (room event `container.stopped` → close 4004).
#[tokio::test]
async fn a_stopped_container_is_shown_in_words_and_not_retried() {
    if !browser_required() {
        return;
    }
    let stack = BrowserStack::start(&[]).await;
    let mut browser = Browser::start().await;
    browser
        .open(&stack.page_url(&stack.relay, Scope::Control, ""))
        .await;
    browser.wait_state("connected", 1).await;
    // The relay listens to the container's room while it holds one of its sessions.
    eventually(
        "the relay subscribed to room desk",
        vnc_tests::WAIT,
        || async {
            let channels = stack.redis.shard_channels("vnc:room:{desk}").await;
            (!channels.is_empty()).then_some(())
        },
    )
    .await;

    stack.redis.publish_room("desk", "container.stopped").await;
    let state = browser.wait_state("disconnected", 1).await;
    assert_eq!(state["code"], 4004, "{state}");
    let text = state["statusText"].as_str().unwrap_or_default();
    assert!(text.contains("the container stopped"), "{state}");
    assert_eq!(
        state["attempts"], 0,
        "a stopped container is not retried: {state}"
    );
    browser.close().await;
}

/// An operator ends a session through control (`DELETE /v1/sessions/{sid}`, which
/// publishes the kick on `vnc:control`): the relay holding it closes it with 4003, the
/// page says so in words and does not reconnect (4003 is final). Control runs with the
/// static runtime, declaring the test desktop as `desk` of user `alice`.
#[tokio::test]
async fn a_kicked_session_shows_the_reason_and_is_not_retried() {
    if !browser_required() {
        return;
    }
    let stack = BrowserStack::start_unregistered(&[]).await;
    let identity = Identity::new();
    let control = ControlProcess::start_static_at(
        &stack.redis.url(),
        &stack.keys,
        &identity,
        &[("desk", "alice", "t1", stack.desktop.vnc_port)],
    )
    .await
    .expect("start vnc-control");
    let alice = identity.token("alice", "t1", false);
    stack.desktop.set_background(TEAL).await;

    // The link as a user gets it: a token from control's API.
    let (status, minted) = eventually("a VNC token from control", vnc_tests::WAIT, || async {
        let answer = control
            .call(
                "POST",
                "/v1/containers/desk/vnc-tokens",
                Some(&alice),
                Some(&json!({"scope": "control", "ttl_seconds": 60})),
            )
            .await
            .ok()?;
        (answer.0 == 200).then_some(answer)
    })
    .await;
    assert_eq!(status, 200, "{minted}");
    let token = minted["token"].as_str().expect("token");
    let mut browser = Browser::start().await;
    browser
        .open(&format!(
            "http://{}/#token={token}&containerId=desk",
            stack.relay.public
        ))
        .await;
    browser.wait_state("connected", 1).await;
    browser.wait_pixel(BACKGROUND_SPOT, TEAL).await;

    // The operator's view: the page's session, on this relay node.
    let sessions = eventually(
        "the session in control's listing",
        vnc_tests::WAIT,
        || async {
            let (status, body) = control
                .call("GET", "/v1/containers/desk/sessions", Some(&alice), None)
                .await
                .ok()?;
            let sessions = body["sessions"].as_array().cloned().unwrap_or_default();
            (status == 200 && sessions.len() == 1).then_some(sessions)
        },
    )
    .await;
    assert_eq!(
        sessions[0]["node"],
        stack.relay.node_id.as_str(),
        "{sessions:?}"
    );
    let sid = sessions[0]["session_id"].as_str().expect("session_id");

    let (status, body) = control
        .call("DELETE", &format!("/v1/sessions/{sid}"), Some(&alice), None)
        .await
        .expect("DELETE /v1/sessions/{sid}");
    assert_eq!(status, 202, "{body}");

    let state = browser.wait_state("disconnected", 1).await;
    assert_eq!(state["code"], 4003, "{state}");
    assert_eq!(state["reason"], "session ended by an operator", "{state}");
    let text = state["statusText"].as_str().unwrap_or_default();
    assert!(text.contains("an operator ended the session"), "{state}");
    assert_eq!(state["attempts"], 0, "a kick is not retried: {state}");
    stack
        .relay
        .wait_metric(
            "vnc_relay_sessions_total{transport=\"websocket\",outcome=\"kicked\"}",
            1.0,
        )
        .await;

    // Nothing happens after that: a retry would have started within the first back-off
    // step (0.25 s); watch for four times as long.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let state = browser.call(json!({"cmd": "state"})).await["state"].clone();
    assert_eq!(state["status"], "disconnected", "{state}");
    assert_eq!(state["sessions"], 1, "{state}");
    assert_eq!(state["attempts"], 0, "{state}");
    assert_eq!(
        stack
            .relay
            .active_sessions("websocket")
            .await
            .unwrap_or(0.0),
        0.0,
        "no new session on the relay"
    );
    browser.close().await;
}

/// A session noVNC watched through a recording relay plays back to noVNC from its
/// recording: `vnc-relay replay` serves the file, the page connects to it instead of a
/// relay, and shows the recorded framebuffer.
#[tokio::test]
async fn the_viewer_shows_a_recorded_session_replayed() {
    if !browser_required() {
        return;
    }
    let redis = RedisServer::start().await.expect("redis");
    let keys = TestKeys::new();
    let dir = tempfile::tempdir().expect("recording dir");
    let record_dir = ["--record-dir", dir.path().to_str().expect("utf-8 path")];
    let relay = start_relay(&redis, &keys, "relay-a", &record_dir).await;
    let fixture = vnc_tests::fixture::Fixture::start(&[
        "--width", "320", "--height", "240", "--color", "c03080",
    ])
    .await
    .expect("fixture");
    redis
        .put_container("fix", "t1", "running", fixture.port())
        .await;
    redis.set_field("fix", "record", "true").await;
    let page = |relays: &str| {
        let token = keys.token("fix", Scope::Control);
        format!(
            "http://{}/#token={token}&containerId=fix{relays}",
            relay.public
        )
    };
    let mut browser = Browser::start().await;
    browser.open(&page("")).await;
    browser.wait_state("connected", 1).await;
    browser.wait_pixel((10, 10), (0xc0, 0x30, 0x80)).await;
    browser.close().await;
    let recording = eventually("the recording", Duration::from_secs(10), || async {
        let (done, writing) = vnc_tests::recording::finished(dir.path());
        (done.len() == 1 && !writing).then(|| done[0].clone())
    })
    .await;
    // The fixture is gone: what the page shows now comes from the file.
    drop(fixture);
    let replay = vnc_tests::recording::ReplayProcess::start(&recording, &[])
        .await
        .expect("vnc-relay replay");
    let mut browser = Browser::start().await;
    browser
        .open(&page(&format!("&relays=ws://{}", replay.addr)))
        .await;
    browser.wait_state("connected", 1).await;
    browser.wait_pixel((10, 10), (0xc0, 0x30, 0x80)).await;
    browser.close().await;
}

/// The page's pure parts (URL parameters, close-code words, retry policy) under node's
/// own test runner (`tests/browser/viewer-logic.test.mjs`).
#[tokio::test]
async fn the_viewer_logic_passes_its_node_tests() {
    if find_program("node").is_none() && !required("node", &["node (Debian package nodejs)".into()])
    {
        return;
    }
    let out = Command::new("node")
        .arg("--test")
        .arg(repo_root().join("tests/browser/viewer-logic.test.mjs"))
        .output()
        .await
        .expect("run node --test");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "node --test failed:\n{report}");
    assert!(report.contains("# fail 0"), "{report}");
}
