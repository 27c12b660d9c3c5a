//! The socket.io path end to end, with the official npm `socket.io-client` run by
//! node against the real vnc-relay binary, redis-server and the RFB fixture; room
//! events across two relay nodes sharing one Redis.
#![forbid(unsafe_code)]

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use vnc_shared::token::Scope;
use vnc_tests::fixture::Fixture;
use vnc_tests::process::eventually;
use vnc_tests::redis::RedisServer;
use vnc_tests::relay::RelayProcess;
use vnc_tests::rfb::{EXTENDED_DESKTOP_SIZE, RfbClient};
use vnc_tests::sio::{SioClient, SioEvent, socketio_client_available};
use vnc_tests::stack::Stack;
use vnc_tests::ws::{expect_close, http_get};

const W: u16 = 64;
const H: u16 = 48;

/// The usual stack, ready for socket.io (its Redis adapter started).
async fn stack(relay_args: &[&str]) -> Stack {
    let stack = Stack::start(&[], relay_args).await.unwrap();
    stack.relay.wait_ready().await;
    stack
}

async fn viewer(relay: &RelayProcess, token: &str, cid: &str) -> RfbClient {
    let sio = SioClient::connect(relay.public, token, cid).await.unwrap();
    RfbClient::over_socketio(sio)
}

#[tokio::test]
async fn a_socketio_viewer_completes_the_rfb_handshake_and_relays_both_ways() {
    if !socketio_client_available() {
        return;
    }
    let stack = stack(&[]).await;
    let token = stack.keys.token("c1", Scope::Control);
    let mut rfb = viewer(&stack.relay, &token, "c1").await;
    let init = rfb.handshake().await.unwrap();
    assert_eq!((init.width, init.height), (W, H));
    let rects = rfb.round_trip(W, H).await.unwrap();
    assert_eq!(rects[0].rgb(5, 5), (255, 0, 0));

    // Browser → server through vnc:data: the fixture logs the key.
    rfb.key(true, 0x62).await.unwrap();
    stack
        .fixture
        .wait_event("KeyEvent", |e| {
            e["msg"] == "KeyEvent" && e["keysym"] == 0x62
        })
        .await;
    assert_eq!(stack.relay.active_sessions("socketio").await, Some(1.0));

    // A token holds one live session: the same one again is refused.
    let mut again = SioClient::start(
        stack.relay.public,
        json!({ "token": token, "containerId": "c1" }),
    )
    .await
    .unwrap();
    match again.next().await.unwrap() {
        SioEvent::ConnectError(m) => assert!(m.contains("single-use"), "{m}"),
        other => panic!("a second session with one token: {other:?}"),
    }

    // The token may also come from the query.
    let fresh = stack.keys.token("c1", Scope::Control);
    let mut by_query = SioClient::start(
        stack.relay.public,
        json!({ "token": fresh, "tokenIn": "query", "containerId": "c1" }),
    )
    .await
    .unwrap();
    assert_eq!(by_query.next().await.unwrap(), SioEvent::Connect);

    // Closing the socket ends the session.
    rfb.sio().command(json!({ "cmd": "close" })).await.unwrap();
    by_query.command(json!({ "cmd": "close" })).await.unwrap();
    stack
        .relay
        .wait_metric(
            "vnc_relay_sessions_total{transport=\"socketio\",outcome=\"client_gone\"}",
            2.0,
        )
        .await;
}

#[tokio::test]
async fn each_refusal_reaches_the_client_as_connect_error() {
    if !socketio_client_available() {
        return;
    }
    let stack = stack(&[]).await;
    stack
        .redis
        .put_container("c2", "t1", "running", stack.fixture.port())
        .await;
    let mut canary = viewer(&stack.relay, &stack.keys.token("c1", Scope::Control), "c1").await;
    canary.handshake().await.unwrap();

    let keys = &stack.keys;
    let mut expired = vnc_tests::keys::TestKeys::claims("c1");
    expired["exp"] = json!(expired["iat"].as_u64().unwrap() - 120);
    let revoked_claims = vnc_tests::keys::TestKeys::claims("c1");
    stack
        .redis
        .revoke(revoked_claims["jti"].as_str().unwrap())
        .await;
    let cases = [
        (json!({ "containerId": "c1" }), "no token"),
        (
            json!({ "token": "not.a.jwt", "containerId": "c1" }),
            "token",
        ),
        (
            json!({ "token": keys.sign(&expired), "containerId": "c1" }),
            "expired",
        ),
        (
            json!({ "token": keys.token("c1", Scope::Control), "containerId": "c2" }),
            "not valid for this container",
        ),
        (
            json!({ "token": keys.token("c1", Scope::Control) }),
            "containerid",
        ),
        (
            json!({ "token": keys.sign(&revoked_claims), "containerId": "c1" }),
            "revoked",
        ),
        (
            json!({ "token": keys.token("nope", Scope::Control), "containerId": "nope" }),
            "unknown container",
        ),
    ];
    for (options, expected) in cases {
        let mut client = SioClient::start(stack.relay.public, options.clone())
            .await
            .unwrap();
        match client.next().await.unwrap() {
            SioEvent::ConnectError(message) => assert!(
                message.to_lowercase().contains(expected),
                "{options}: {message:?} should mention {expected:?}"
            ),
            other => panic!("{options}: expected connect_error, got {other:?}"),
        }
    }
    // None of that harmed the live session.
    canary.round_trip(W, H).await.unwrap();
    assert_eq!(
        stack
            .relay
            .metric("vnc_relay_auth_failures_total{reason=\"revoked\"}")
            .await,
        Some(1.0)
    );
}

#[tokio::test]
async fn the_polling_transport_is_refused_with_a_clear_error() {
    if !socketio_client_available() {
        return;
    }
    let stack = stack(&[]).await;
    let token = stack.keys.token("c1", Scope::Control);
    let mut client = SioClient::start(
        stack.relay.public,
        json!({ "token": token, "containerId": "c1", "transports": ["polling"] }),
    )
    .await
    .unwrap();
    assert!(
        matches!(client.next().await.unwrap(), SioEvent::ConnectError(_)),
        "polling must not connect"
    );
    // What the polling request itself is told.
    let (status, body) = http_get(stack.relay.public, "/socket.io/?EIO=4&transport=polling")
        .await
        .unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("websocket"), "{body}");
}

/// A socket.io WebSocket must open its connection (browsers and socket.io clients
/// always do): one that comes after another request on a kept-alive connection is
/// refused at connect with a message that says so, and the connection served the
/// earlier request as usual.
#[tokio::test]
async fn a_socketio_websocket_after_another_request_on_its_connection_is_refused() {
    let stack = stack(&[]).await;
    let addr = stack.relay.public;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(
        format!("GET /static/vnc-socketio.js HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(tcp.read_u8().await.unwrap());
    }
    let head = String::from_utf8(head).unwrap().to_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("a content-length");
    let mut body = vec![0; length];
    tcp.read_exact(&mut body).await.unwrap();

    let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket&containerId=c1");
    let (mut ws, _) = tokio_tungstenite::client_async(url, tcp).await.unwrap();
    let token = stack.keys.token("c1", Scope::Control);
    ws.send(Message::text(format!(
        "40/vnc,{}",
        json!({ "token": token })
    )))
    .await
    .unwrap();
    let refusal = loop {
        let msg = tokio::time::timeout(vnc_tests::WAIT, ws.next())
            .await
            .expect("an answer to the connect")
            .expect("the connection stays open")
            .unwrap();
        if let Message::Text(text) = msg
            && let Some(payload) = text.strip_prefix("44/vnc,")
        {
            break serde_json::from_str::<serde_json::Value>(payload).unwrap();
        }
    };
    let message = refusal["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("first request on its connection"),
        "{refusal}"
    );
}

#[tokio::test]
async fn vnc_data_must_be_binary_and_idle_sessions_end_with_4001() {
    if !socketio_client_available() {
        return;
    }
    let stack = stack(&["--idle-timeout", "2s"]).await;
    let token = stack.keys.token("c1", Scope::Control);
    let mut numbers = SioClient::connect(stack.relay.public, &token, "c1")
        .await
        .unwrap();
    numbers
        .command(json!({ "cmd": "send_array", "b64": "UkZCIDAwMy4wMDgK" }))
        .await
        .unwrap();
    let (code, reason) = numbers.expect_end().await.unwrap();
    assert_eq!(code, 1008, "{reason}");
    assert!(reason.contains("binary"), "{reason}");

    let mut idle = viewer(&stack.relay, &token, "c1").await;
    idle.handshake().await.unwrap();
    let idle = idle.sio();
    assert_eq!(idle.expect_end().await.unwrap().0, 4001);
    let reason = idle
        .expect("disconnect", |e| match e {
            SioEvent::Disconnect(reason) => Some(reason.clone()),
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(reason, "io server disconnect");
}

#[tokio::test]
async fn sigterm_drains_socketio_sessions_with_1001() {
    if !socketio_client_available() {
        return;
    }
    let stack = stack(&["--drain-timeout", "1s"]).await;
    let mut rfb = viewer(&stack.relay, &stack.keys.token("c1", Scope::Control), "c1").await;
    rfb.handshake().await.unwrap();
    stack.relay.proc.signal("TERM");
    assert_eq!(rfb.sio().expect_end().await.unwrap().0, 1001);
}

/// A relay (with `relay_args`) in front of a fixture that floods 512×512 updates
/// without waiting for requests, the relay's RSS before any session, and a socket.io
/// viewer that has sent its side of the RFB handshake.
async fn flooded_viewer(relay_args: &[&str]) -> (Stack, u64, SioClient) {
    let stack = Stack::start(
        &["--flood", "--width", "512", "--height", "512"],
        relay_args,
    )
    .await
    .unwrap();
    stack.relay.wait_ready().await;
    let rss_before = stack.relay.proc.rss_kib();
    let token = stack.keys.token("c1", Scope::Control);
    let mut viewer = SioClient::connect(stack.relay.public, &token, "c1")
        .await
        .unwrap();
    viewer.send_handshake().await.unwrap();
    (stack, rss_before, viewer)
}

#[tokio::test]
async fn a_slow_socketio_viewer_throttles_the_vnc_server_without_losing_bytes() {
    if !socketio_client_available() {
        return;
    }
    let (stack, rss_before, mut slow) = flooded_viewer(&[]).await;
    // Stop reading the TCP socket.
    slow.command(json!({ "cmd": "pause" })).await.unwrap();
    let stalled_at = stack.fixture.wait_flood_stalled().await;
    let grown = stack.relay.proc.rss_kib().saturating_sub(rss_before);
    assert!(
        grown < 8 * 1024,
        "relay RSS grew {grown} KiB while {stalled_at} bytes were pushed"
    );
    // Nothing was dropped: once the viewer reads again, every byte the relay took
    // from the fixture arrives (the session is still live and flowing).
    slow.command(json!({ "cmd": "resume" })).await.unwrap();
    let mut got = 0u64;
    while got < stalled_at / 2 {
        if let SioEvent::Data(d) = slow.next().await.unwrap() {
            got += d.len() as u64;
        }
    }
    assert_eq!(stack.relay.active_sessions("socketio").await, Some(1.0));
}

/// Engine.IO's heartbeat puts its ping into the socket's queue and closes the socket
/// if the queue is full; the relay keeps the queue from filling with `vnc:data`, so a
/// viewer slower than a flooding VNC server keeps getting pings, and answers them.
#[tokio::test]
async fn a_viewer_behind_a_flood_keeps_getting_pings() {
    if !socketio_client_available() {
        return;
    }
    let (stack, _, mut viewer) =
        flooded_viewer(&["--ping-interval", "250ms", "--max-missed-pongs", "16"]).await;
    // A viewer that stops reading for longer than the ping interval (though not for
    // as long as the pong timeout): meanwhile the relay queues as many vnc:data events
    // as it may, and pings come due.
    let mut got = 0u64;
    for round in 0..2 {
        viewer.command(json!({ "cmd": "pause" })).await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        viewer.command(json!({ "cmd": "resume" })).await.unwrap();
        let before = got;
        let until = tokio::time::Instant::now() + Duration::from_millis(1500);
        while let Ok(event) = tokio::time::timeout_at(until, viewer.next()).await {
            match event.unwrap() {
                SioEvent::Data(d) => got += d.len() as u64,
                SioEvent::Room(_) | SioEvent::Named(..) => {}
                other => panic!("the session ended after {got} bytes: {other:?}"),
            }
        }
        assert!(got > before, "nothing arrived after pause {round}");
    }
    assert_eq!(stack.relay.active_sessions("socketio").await, Some(1.0));
}

/// Two relay nodes on one Redis: room events reach the room's viewers on both, on
/// both transports; stopping the container ends every one of its sessions.
async fn room_events_reach_viewers_on_every_node_and_a_stop_ends_all_sessions(redis: RedisServer) {
    if !socketio_client_available() {
        return;
    }
    let stack = Stack::start_on(redis, &[], &[]).await.unwrap();
    stack.relay.wait_ready().await;
    let other = Fixture::start(&[]).await.unwrap();
    stack
        .redis
        .put_container("c2", "t1", "running", other.port())
        .await;
    let node_b = RelayProcess::start(&stack.redis.url(), &stack.keys.public, &[])
        .await
        .unwrap();
    node_b.wait_ready().await;
    let token = |cid: &str| stack.keys.token(cid, Scope::Control);

    let mut sio_a = viewer(&stack.relay, &token("c1"), "c1").await;
    sio_a.handshake().await.unwrap();
    let mut sio_b = viewer(&node_b, &token("c1"), "c1").await;
    sio_b.handshake().await.unwrap();
    // A viewer joining on B is announced to the room on A too (the Redis adapter).
    let joined = sio_a
        .sio()
        .expect_room_event("viewer.joined")
        .await
        .unwrap();
    assert_eq!(joined["transport"], "socketio");
    let mut raw_a = RfbClient::connect(&stack.relay.ws_url(&token("c1")))
        .await
        .unwrap();
    raw_a.handshake().await.unwrap();
    let mut raw_b = RfbClient::connect(&node_b.ws_url(&token("c1")))
        .await
        .unwrap();
    raw_b.handshake().await.unwrap();
    let mut bystander = viewer(&node_b, &token("c2"), "c2").await;
    bystander.handshake().await.unwrap();
    // Both nodes hold c1 sessions, so both subscribe to its room channel.
    eventually("both nodes on the c1 room", vnc_tests::WAIT, || async {
        let n: Vec<String> = stack.redis.shard_channels("vnc:room:{c1}").await;
        (!n.is_empty()).then_some(())
    })
    .await;

    // Published once, received by the c1 viewers of both nodes, not by c2's.
    stack.redis.publish_room("c1", "container.stopping").await;
    for v in [&mut sio_a, &mut sio_b] {
        let e = v
            .sio()
            .expect_room_event("container.stopping")
            .await
            .unwrap();
        assert_eq!(e["cid"], "c1");
    }
    stack.redis.publish_room("c2", "container.stopping").await;
    let first = bystander
        .sio()
        .expect("a room event", |e| match e {
            SioEvent::Room(p)
                if p["type"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("container.")) =>
            {
                Some(p.clone())
            }
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(
        first["cid"], "c2",
        "a c1 event reached a c2 viewer: {first}"
    );
    // "stopping" ends nothing.
    raw_a.round_trip(W, H).await.unwrap();
    raw_b.round_trip(W, H).await.unwrap();

    // "stopped" ends every c1 session on both nodes, on both transports, with 4004.
    stack.redis.publish_room("c1", "container.stopped").await;
    for v in [&mut sio_a, &mut sio_b] {
        v.sio()
            .expect_room_event("container.stopped")
            .await
            .unwrap();
        assert_eq!(v.sio().expect_end().await.unwrap().0, 4004);
    }
    for raw in [&mut raw_a, &mut raw_b] {
        let (code, _) = expect_close(raw.ws(), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(code, 4004);
    }
    bystander.round_trip(W, H).await.unwrap();
    // Node A holds no c1 session any more and leaves the room channel; B keeps c2's.
    eventually("c1 room channel unsubscribed", vnc_tests::WAIT, || async {
        stack
            .redis
            .shard_channels("vnc:room:{c1}")
            .await
            .is_empty()
            .then_some(())
    })
    .await;
    assert_eq!(
        stack.redis.shard_channels("vnc:room:*").await,
        ["vnc:room:{c2}"]
    );
}

/// The channel module the relay serves, driven as noVNC drives a channel: it connects,
/// completes the RFB handshake with the fixture, and reports `vnc:end` as onclose.
#[tokio::test]
async fn the_served_channel_module_carries_an_rfb_session_and_reports_the_close() {
    if !socketio_client_available() {
        return;
    }
    let stack = stack(&["--idle-timeout", "2s"]).await;
    let (status, module) = http_get(stack.relay.public, "/static/vnc-socketio.js")
        .await
        .unwrap();
    assert_eq!(status, 200);
    let dir = tempfile::tempdir().unwrap();
    let module_file = dir.path().join("vnc-socketio.mjs");
    std::fs::write(&module_file, module).unwrap();
    let run = |token: String| {
        let options = json!({
            "module": module_file,
            "url": format!("http://{}", stack.relay.public),
            "token": token,
            "containerId": "c1",
            "waitClose": true,
        });
        async move {
            let out = tokio::process::Command::new("node")
                .arg("--experimental-websocket")
                .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/socketio/channel.mjs"))
                .arg(options.to_string())
                .output();
            let out = tokio::time::timeout(Duration::from_secs(30), out)
                .await
                .expect("channel.mjs finished")
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            serde_json::from_str::<serde_json::Value>(stdout.trim()).unwrap_or_else(|e| {
                panic!("{e}: {stdout} {}", String::from_utf8_lossy(&out.stderr))
            })
        }
    };

    let got = run(stack.keys.token("c1", Scope::Control)).await;
    assert_eq!(got["missing"], json!([]), "{got}");
    assert_eq!(got["version"], "RFB 003.008\n", "{got}");
    assert_eq!(
        (got["width"].as_u64(), got["height"].as_u64()),
        (Some(64), Some(48))
    );
    assert_eq!(got["pixel"], json!([255, 0, 0]), "{got}");
    // The relay's named events and acknowledgements reach the page through the channel:
    // vnc:self, which came before the page attached, and the answer to a release (the
    // owner took the free lease when its session started).
    assert_eq!(got["self"]["scope"], "control", "{got}");
    assert_eq!(got["self"]["input"], "lease", "{got}");
    assert!(got["self"]["session_id"].is_string(), "{got}");
    assert_eq!(got["release"], json!({"ok": true, "asked": false}), "{got}");
    assert_eq!(got["close"]["code"], 4001, "{got}");
    assert_eq!(got["close"]["reason"], "idle timeout", "{got}");
    // The fixture saw the client's bytes intact although the send buffer was reused.
    stack
        .fixture
        .wait_event("FramebufferUpdateRequest", |e| {
            e["msg"] == "FramebufferUpdateRequest" && e["width"] == 64
        })
        .await;

    let refused = run("not.a.token".into()).await;
    assert!(
        refused["refused"]
            .as_str()
            .is_some_and(|m| m.contains("token")),
        "{refused}"
    );
}

/// `vnc:resize` gets `vnc:resized` with the server's answer: the fixture's ok and the
/// new size, then its refusal of a size over its bound (4096; the relay allows up to
/// 16384). The browser still gets the answer in `vnc:data`, and the session keeps
/// relaying at the new size.
#[tokio::test]
async fn vnc_resize_reports_the_server_answer_as_vnc_resized() {
    if !socketio_client_available() {
        return;
    }
    let stack = stack(&[]).await;
    let mut rfb = viewer(&stack.relay, &stack.keys.token("c1", Scope::Control), "c1").await;
    rfb.handshake().await.unwrap();
    // As noVNC does: servers answer SetDesktopSize once ExtendedDesktopSize is listed.
    rfb.set_encodings(&[0, EXTENDED_DESKTOP_SIZE])
        .await
        .unwrap();
    // A round trip, so the SetEncodings is in before the resize.
    rfb.round_trip(W, H).await.unwrap();

    let ack = rfb
        .sio()
        .emit("vnc:resize", json!({"width": 96, "height": 72}))
        .await
        .unwrap();
    assert_eq!(ack, json!({"ok": true}));
    let answer = rfb.read_update().await.unwrap();
    let r = &answer[0];
    assert_eq!(
        (r.encoding, r.x, r.y, r.width, r.height),
        (EXTENDED_DESKTOP_SIZE, 1, 0, 96, 72)
    );
    assert_eq!(
        rfb.resized().await.unwrap(),
        json!({"status": "ok", "code": 0, "width": 96, "height": 72})
    );
    let rects = rfb.round_trip(96, 72).await.unwrap();
    assert_eq!((rects[0].width, rects[0].height), (96, 72));
    assert_eq!(rects[0].rgb(5, 5), (255, 0, 0));

    rfb.sio()
        .emit("vnc:resize", json!({"width": 5000, "height": 72}))
        .await
        .unwrap();
    let answer = rfb.read_update().await.unwrap();
    assert_eq!((answer[0].x, answer[0].y), (1, 3));
    assert_eq!(
        rfb.resized().await.unwrap(),
        json!({"status": "invalid layout", "code": 3, "width": 96, "height": 72})
    );
    // Framebuffer data still flows, at the size the server kept.
    let rects = rfb.round_trip(96, 72).await.unwrap();
    assert_eq!((rects[0].width, rects[0].height), (96, 72));
    stack
        .fixture
        .wait_event("SetDesktopSize 5000", |e| {
            e["msg"] == "SetDesktopSize" && e["width"] == 5000
        })
        .await;
    for status in ["ok", "invalid layout"] {
        let metric = format!("vnc_relay_resize_answers_total{{status=\"{status}\"}}");
        assert_eq!(stack.relay.metric(&metric).await, Some(1.0), "{metric}");
    }
}

/// A server that does not answer (here because the browser never listed
/// ExtendedDesktopSize, so the fixture ignores SetDesktopSize as real servers do): the
/// request gets `{status: "no answer"}` after the relay's 5 s, and nothing else changes.
#[tokio::test]
async fn a_vnc_resize_the_server_ignores_gets_no_answer() {
    if !socketio_client_available() {
        return;
    }
    let stack = stack(&[]).await;
    let mut rfb = viewer(&stack.relay, &stack.keys.token("c1", Scope::Control), "c1").await;
    rfb.handshake().await.unwrap();
    let asked = std::time::Instant::now();
    rfb.sio()
        .emit("vnc:resize", json!({"width": 96, "height": 72}))
        .await
        .unwrap();
    // Meanwhile the session relays as usual.
    let rects = rfb.round_trip(W, H).await.unwrap();
    assert_eq!((rects[0].width, rects[0].height), (W, H));
    assert_eq!(
        rfb.resized().await.unwrap(),
        json!({"status": "no answer", "requested": {"width": 96, "height": 72}})
    );
    assert!(
        asked.elapsed() >= Duration::from_secs(4),
        "{:?}",
        asked.elapsed()
    );
    rfb.round_trip(W, H).await.unwrap();
    assert_eq!(
        stack
            .relay
            .metric("vnc_relay_resize_answers_total{status=\"no answer\"}")
            .await,
        Some(1.0)
    );
}

/// A browser that starts a KeyEvent (one byte of it) and never finishes it, then
/// streams large clipboard events: the relay holds structured input only up to its
/// bound, then ends the session with 1008, without growing; another viewer of the same
/// desktop keeps relaying throughout.
#[tokio::test]
async fn structured_input_behind_an_unfinished_message_is_bounded() {
    if !socketio_client_available() {
        return;
    }
    let stack = stack(&[]).await;
    // A view-only bystander: the socket.io viewer is the one that may send input.
    let watching = stack.relay.ws_url(&stack.keys.token("c1", Scope::View));
    let mut bystander = RfbClient::connect(&watching).await.unwrap();
    bystander.handshake().await.unwrap();
    bystander.round_trip(W, H).await.unwrap();
    let rss_before = stack.relay.proc.rss_kib();

    let token = stack.keys.token("c1", Scope::Control);
    let mut rfb = viewer(&stack.relay, &token, "c1").await;
    rfb.handshake().await.unwrap();
    // One byte of a KeyEvent: the relay's framer waits for the other seven.
    rfb.sio().send(&[4]).await.unwrap();
    let text = "x".repeat(60 * 1024);
    let flood = json!({
        "cmd": "flood",
        "event": "vnc:input",
        "payload": { "type": "clipboard", "text": text },
        "count": 3000,
    });
    rfb.sio().command(flood).await.unwrap();
    bystander.round_trip(W, H).await.unwrap();
    assert_eq!(
        rfb.sio().expect_end().await.unwrap(),
        (
            1008,
            "input arrives faster than the VNC server reads it".to_owned()
        )
    );
    stack
        .relay
        .wait_metric(
            "vnc_relay_sessions_total{transport=\"socketio\",outcome=\"input_overflow\"}",
            1.0,
        )
        .await;
    let grown = stack.relay.proc.rss_kib().saturating_sub(rss_before);
    assert!(grown < 20 * 1024, "relay RSS grew {grown} KiB");
    bystander.round_trip(W, H).await.unwrap();
    assert_eq!(stack.relay.active_sessions("websocket").await, Some(1.0));
}

/// Cross-site WebSocket hijacking: another site's page can make the browser attach the
/// `vnc_token` cookie, never a token in its auth or query. Without an Origin
/// allowlist, a cookie token is taken only from the relay's own origin.
#[tokio::test]
async fn a_cookie_token_from_another_site_is_refused() {
    if !socketio_client_available() {
        return;
    }
    let stack = stack(&[]).await;
    let cookie = |token: &str| format!("vnc_token={token}");
    let token = stack.keys.token("c1", Scope::Control);
    let mut hijack = SioClient::start(
        stack.relay.public,
        json!({
            "containerId": "c1",
            "headers": { "Cookie": cookie(&token), "Origin": "https://evil.example" },
        }),
    )
    .await
    .unwrap();
    match hijack.next().await.unwrap() {
        SioEvent::ConnectError(m) => assert!(m.contains("vnc_token cookie"), "{m}"),
        other => panic!("a cross-site cookie: {other:?}"),
    }
    // The same cookie from the relay's own origin opens the session.
    let own = format!("http://{}", stack.relay.public);
    let mut client = SioClient::start(
        stack.relay.public,
        json!({
            "containerId": "c1",
            "headers": { "Cookie": cookie(&token), "Origin": own },
        }),
    )
    .await
    .unwrap();
    assert_eq!(client.next().await.unwrap(), SioEvent::Connect);
}

vnc_tests::on_every_redis!(room_events_reach_viewers_on_every_node_and_a_stop_ends_all_sessions);
