//! The raw WebSocket path end to end: real redis-server, the real vnc-relay binary
//! and the RFB fixture, all on free loopback ports.
#![forbid(unsafe_code)]

use std::time::Duration;

use futures_util::SinkExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use vnc_shared::token::{Scope, Signer};
use vnc_tests::keys::TestKeys;
use vnc_tests::process::eventually;
use vnc_tests::relay::RelayProcess;
use vnc_tests::rfb::RfbClient;
use vnc_tests::stack::Stack;
use vnc_tests::ws::{
    client_frame, close_code, connect, expect_close, http_get, raw_http, raw_upgrade, refused,
    refused_with, server_frames, split_response,
};

const W: u16 = 64;
const H: u16 = 48;

#[tokio::test]
async fn full_rfb_session_through_the_relay_both_ways() {
    let stack = Stack::start(&[], &[]).await.unwrap();
    let mut rfb = RfbClient::connect(&stack.url()).await.unwrap();
    let init = rfb.handshake().await.unwrap();
    assert_eq!(
        (init.width, init.height, init.name.as_str()),
        (W, H, "rfb-fixture")
    );

    // Server → browser: the top half is the fixture's base colour (red).
    let rects = rfb.round_trip(W, H).await.unwrap();
    assert_eq!(rects.len(), 1);
    assert_eq!(
        (rects[0].x, rects[0].y, rects[0].width, rects[0].height),
        (0, 0, W, H)
    );
    assert_eq!(rects[0].rgb(5, 5), (255, 0, 0));

    // Browser → server: the fixture logs the key it received through the relay.
    rfb.key(true, 0x61).await.unwrap();
    stack
        .fixture
        .wait_event("KeyEvent", |e| {
            e["msg"] == "KeyEvent" && e["keysym"] == 0x61 && e["down"] == true
        })
        .await;
    stack
        .fixture
        .wait_event("client_init", |e| e["event"] == "client_init")
        .await;

    let m = stack.relay.metrics().await;
    assert!(
        m.contains("vnc_relay_sessions_active{transport=\"websocket\"} 1"),
        "{m}"
    );
    let to_client = stack
        .relay
        .metric("vnc_relay_bytes_total{direction=\"upstream_to_client\"}")
        .await
        .unwrap_or(0.0);
    assert!(
        to_client >= f64::from(W) * f64::from(H) * 4.0,
        "bytes counted: {to_client}"
    );
    assert!(
        m.contains("vnc_relay_upstream_connect_duration_seconds_count 1"),
        "{m}"
    );
}

/// Every hostile or broken request gets its documented status, while a session that
/// was open before keeps relaying throughout.
#[tokio::test]
async fn bad_requests_get_documented_statuses_and_harm_no_other_session() {
    let stack = Stack::start(&[], &["--handshake-timeout", "1s"])
        .await
        .unwrap();
    let mut canary = RfbClient::connect(&stack.url()).await.unwrap();
    canary.handshake().await.unwrap();
    canary.round_trip(W, H).await.unwrap();

    let keys = &stack.keys;
    let relay = &stack.relay;
    stack
        .redis
        .put_container("stopped", "t1", "stopped", 1)
        .await;
    let refused_port = vnc_tests::redis::free_port();
    stack
        .redis
        .put_container("dead", "t1", "running", refused_port)
        .await;
    stack
        .redis
        .put_container("other-tenant", "t2", "running", stack.fixture.port())
        .await;

    stack
        .redis
        .put_container("no-tenant", "", "running", stack.fixture.port())
        .await;

    let claims = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut c = TestKeys::claims("c1");
        f(&mut c);
        keys.sign(&c)
    };
    let public_pem = std::fs::read(&keys.public).unwrap();
    let confused = Signer::hs256("k1".into(), &public_pem)
        .sign(&TestKeys::claims("c1"))
        .unwrap();
    let stranger = TestKeys::with_kid("k1").sign(&TestKeys::claims("c1"));
    let unknown_kid = TestKeys::with_kid("k9").sign(&TestKeys::claims("c1"));
    let b64 = |s: &str| {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
    };
    let alg_none = format!(
        "{}.{}.",
        b64(r#"{"alg":"none","typ":"JWT","kid":"k1"}"#),
        b64(&TestKeys::claims("c1").to_string())
    );
    let now = vnc_shared::token::unix_now();
    let revoked_claims = TestKeys::claims("c1");
    stack
        .redis
        .revoke(revoked_claims["jti"].as_str().unwrap())
        .await;

    let cases: Vec<(&str, String, u16)> = vec![
        ("no token", format!("ws://{}/websockify", relay.public), 401),
        ("malformed token", relay.ws_url("not.a.jwt"), 401),
        ("wrong signature", relay.ws_url(&stranger), 401),
        ("alg none", relay.ws_url(&alg_none), 401),
        (
            "HS256 signed with the public key",
            relay.ws_url(&confused),
            401,
        ),
        (
            "expired",
            relay.ws_url(&claims(&|c| c["exp"] = (now - 60).into())),
            401,
        ),
        (
            "not yet valid",
            relay.ws_url(&claims(&|c| c["nbf"] = (now + 600).into())),
            401,
        ),
        (
            "wrong aud",
            relay.ws_url(&claims(&|c| c["aud"] = "someone-else".into())),
            401,
        ),
        (
            "wrong iss",
            relay.ws_url(&claims(&|c| c["iss"] = "mallory".into())),
            401,
        ),
        (
            "missing cid",
            relay.ws_url(&claims(&|c| {
                c.as_object_mut().unwrap().remove("cid");
            })),
            401,
        ),
        (
            "missing tenant",
            relay.ws_url(&claims(&|c| {
                c.as_object_mut().unwrap().remove("tenant");
            })),
            401,
        ),
        (
            "empty tenant, for a record without one",
            relay.ws_url(&claims(&|c| {
                c["tenant"] = "".into();
                c["cid"] = "no-tenant".into();
            })),
            401,
        ),
        ("unknown kid", relay.ws_url(&unknown_kid), 401),
        ("revoked", relay.ws_url(&keys.sign(&revoked_claims)), 403),
        (
            "other tenant's container",
            relay.ws_url(&keys.token("other-tenant", Scope::Control)),
            403,
        ),
        (
            "unknown container",
            relay.ws_url(&keys.token("nope", Scope::Control)),
            404,
        ),
        (
            "stopped container",
            relay.ws_url(&keys.token("stopped", Scope::Control)),
            404,
        ),
        (
            "upstream refusing",
            relay.ws_url(&keys.token("dead", Scope::Control)),
            502,
        ),
    ];
    for (what, url, want) in cases {
        let (status, body) = refused(&url).await;
        assert_eq!(status, want, "{what}: {body}");
        // What failed, never where: no internal address in any body.
        assert!(!body.contains("127.0.0.1"), "{what}: {body}");
        let json: serde_json::Value =
            serde_json::from_str(&body).unwrap_or_else(|_| panic!("{what}: {body}"));
        assert_eq!(json["status"], want, "{what}");
        assert!(
            json["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}"
        );
        canary
            .round_trip(W, H)
            .await
            .unwrap_or_else(|e| panic!("canary after {what}: {e}"));
    }

    // Not a WebSocket upgrade, and a subprotocol the relay doesn't speak: 400.
    let token = keys.token("c1", Scope::Control);
    let plain =
        format!("GET /websockify?token={token} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(
        raw_http(relay.public, plain.as_bytes()).await.unwrap().0,
        400
    );
    let path = format!("/websockify?token={token}");
    let mut base64_only = raw_upgrade(relay.public, &path, "Sec-WebSocket-Protocol: base64\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(vnc_tests::WAIT, base64_only.read_to_end(&mut got)).await;
    let (head, _) = split_response(&got);
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    assert_eq!(
        http_get(relay.public, "/nothing-here").await.unwrap().0,
        404
    );

    // A slowloris client that never finishes its request is cut off at the handshake
    // timeout; the canary does not notice.
    let mut slow = TcpStream::connect(relay.public).await.unwrap();
    slow.write_all(b"GET /websockify HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    canary.round_trip(W, H).await.unwrap();
    let mut sink = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), slow.read(&mut sink))
        .await
        .expect("slowloris connection must be closed by the relay");
    assert!(matches!(n, Ok(0) | Err(_)), "slowloris got {n:?}");
    canary.round_trip(W, H).await.unwrap();

    let refusals = relay
        .metric("vnc_relay_auth_failures_total{reason=\"expired\"}")
        .await;
    assert_eq!(refusals, Some(1.0));
}

/// After the upgrade, protocol violations end only the offending session, with the
/// documented close code.
#[tokio::test]
async fn bad_frames_get_documented_close_codes() {
    let stack = Stack::start(&[], &["--max-message-size", "4096"])
        .await
        .unwrap();
    let mut canary = RfbClient::connect(&stack.url()).await.unwrap();
    canary.handshake().await.unwrap();

    // A text frame: 1008.
    let mut ws = connect(&stack.url()).await.unwrap();
    ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(
        expect_close(&mut ws, Duration::from_secs(5))
            .await
            .unwrap()
            .0,
        1008
    );

    // A message over the limit: 1009.
    let mut ws = connect(&stack.url()).await.unwrap();
    ws.send(Message::binary(vec![0u8; 5000])).await.unwrap();
    assert_eq!(
        expect_close(&mut ws, Duration::from_secs(5))
            .await
            .unwrap()
            .0,
        1009
    );

    // Garbage bytes after the upgrade (not WebSocket frames at all): 1008.
    let path = format!(
        "/websockify?token={}",
        stack.keys.token("c1", Scope::Control)
    );
    let mut raw = raw_upgrade(stack.relay.public, &path, "").await.unwrap();
    raw.write_all(b"\x01\x02garbage garbage garbage")
        .await
        .unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), raw.read_to_end(&mut got)).await;
    let (head, frames) = split_response(&got);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert_eq!(close_code(frames), Some(1008), "{frames:?}");

    canary.round_trip(W, H).await.unwrap();
    let ended = "vnc_relay_sessions_total{transport=\"websocket\",outcome=";
    stack
        .relay
        .wait_metric(&format!("{ended}\"protocol_error\"}}"), 2.0)
        .await;
    stack
        .relay
        .wait_metric(&format!("{ended}\"message_too_big\"}}"), 1.0)
        .await;
}

#[tokio::test]
async fn upstream_closing_mid_session_closes_the_browser_with_1000() {
    let stack = Stack::start(&[], &[]).await.unwrap();
    // A VNC server that completes the handshake (3.8, None) and then hangs up.
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    stack
        .redis
        .put_container(
            "flaky",
            "t1",
            "running",
            upstream.local_addr().unwrap().port(),
        )
        .await;
    tokio::spawn(async move {
        let (mut s, _) = upstream.accept().await.unwrap();
        let mut buf = [0u8; 12];
        s.write_all(b"RFB 003.008\n").await.unwrap();
        s.read_exact(&mut buf).await.unwrap();
        s.write_all(&[1, 1]).await.unwrap();
        s.read_exact(&mut buf[..1]).await.unwrap();
        s.write_all(&[0, 0, 0, 0]).await.unwrap();
        s.read_exact(&mut buf[..1]).await.unwrap();
        let mut init = vec![0, 64, 0, 48, 32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0];
        init.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        s.write_all(&init[..24]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    });
    let mut rfb = RfbClient::connect(
        &stack
            .relay
            .ws_url(&stack.keys.token("flaky", Scope::Control)),
    )
    .await
    .unwrap();
    rfb.handshake().await.unwrap();
    let (code, reason) = expect_close(rfb.ws(), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(code, 1000, "{reason}");
}

#[tokio::test]
async fn browser_vanishing_mid_session_closes_the_upstream() {
    let stack = Stack::start(&[], &[]).await.unwrap();
    let mut other = RfbClient::connect(&stack.url()).await.unwrap();
    other.handshake().await.unwrap();
    let mut rfb = RfbClient::connect(&stack.url()).await.unwrap();
    rfb.handshake().await.unwrap();
    drop(rfb); // TCP closed without a WebSocket Close
    stack
        .fixture
        .wait_event("the vanished browser's upstream closed", |e| {
            e["event"] == "closed" && e["conn"] == 2
        })
        .await;
    other.round_trip(W, H).await.unwrap();
    let relay = &stack.relay;
    eventually("session gauge back to 1", vnc_tests::WAIT, || async {
        (relay.active_sessions("websocket").await == Some(1.0)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn idle_sessions_end_with_4001_and_long_ones_with_4002() {
    let stack = Stack::start(&[], &["--idle-timeout", "1s"]).await.unwrap();
    let mut rfb = RfbClient::connect(&stack.url()).await.unwrap();
    rfb.handshake().await.unwrap();
    let (code, _) = expect_close(rfb.ws(), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(code, 4001);

    let relay = RelayProcess::start(
        &stack.redis.url(),
        &stack.keys.public,
        &["--max-session-duration", "1s"],
    )
    .await
    .unwrap();
    let mut rfb = RfbClient::connect(&relay.ws_url(&stack.keys.token("c1", Scope::Control)))
        .await
        .unwrap();
    rfb.handshake().await.unwrap();
    let started = std::time::Instant::now();
    // Keep it busy so it is not idle; it still ends at the maximum duration.
    let code = loop {
        match rfb.round_trip(W, H).await {
            Ok(_) => assert!(
                started.elapsed() < Duration::from_secs(5),
                "session outlived its maximum"
            ),
            Err(e) => break e.to_string(),
        }
    };
    assert!(code.contains("4002"), "{code}");
}

#[tokio::test]
async fn the_session_limit_answers_503() {
    let stack = Stack::start(&[], &["--max-sessions", "1"]).await.unwrap();
    let mut first = RfbClient::connect(&stack.url()).await.unwrap();
    first.handshake().await.unwrap();
    let (status, body) = refused(&stack.url()).await;
    assert_eq!(status, 503, "{body}");
    first.round_trip(W, H).await.unwrap();
}

#[tokio::test]
async fn sigterm_drains_refuses_new_sessions_and_closes_live_ones_with_1001() {
    let mut stack = Stack::start(&[], &["--drain-timeout", "2s"]).await.unwrap();
    let mut rfb = RfbClient::connect(&stack.url()).await.unwrap();
    rfb.handshake().await.unwrap();
    assert_eq!(http_get(stack.relay.admin, "/readyz").await.unwrap().0, 200);
    stack.relay.proc.signal("TERM");
    let admin = stack.relay.admin;
    eventually("readyz reports draining", vnc_tests::WAIT, || async {
        (http_get(admin, "/readyz").await.ok()?.0 == 503).then_some(())
    })
    .await;
    // New connections are refused (the listener is closed) while the live session
    // keeps relaying until the deadline.
    assert!(TcpStream::connect(stack.relay.public).await.is_err());
    rfb.round_trip(W, H).await.unwrap();
    let (code, _) = expect_close(rfb.ws(), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(code, 1001);
    let exit = stack
        .relay
        .proc
        .wait_exit(Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(exit, Some(0));
}

#[tokio::test]
async fn a_slow_browser_throttles_the_vnc_server_and_relay_memory_stays_bounded() {
    let stack = Stack::start(&["--flood", "--width", "512", "--height", "512"], &[])
        .await
        .unwrap();
    let mut other = RfbClient::connect(&stack.url()).await.unwrap();
    let rss_before = stack.relay.proc.rss_kib();
    // A browser that completes the handshake, then never reads again.
    let mut slow = connect(&stack.url()).await.unwrap();
    slow.send(Message::binary(b"RFB 003.008\n".to_vec()))
        .await
        .unwrap();
    slow.send(Message::binary(vec![1])).await.unwrap();
    slow.send(Message::binary(vec![1])).await.unwrap();
    // The fixture's flood stalls: its byte count stops growing (socket buffers full).
    let stalled_at = stack.fixture.wait_flood_stalled().await;
    // What is in flight lives in kernel socket buffers, not in the relay: its RSS grew
    // by far less than what the fixture pushed.
    let grown = stack.relay.proc.rss_kib().saturating_sub(rss_before);
    assert!(
        grown < 4 * 1024,
        "relay RSS grew {grown} KiB while {stalled_at} bytes were pushed"
    );
    // The other session is unaffected.
    other.handshake().await.unwrap();
    drop(slow);
}

#[tokio::test]
async fn tokens_come_from_query_bearer_or_cookie_and_origins_are_checked() {
    let stack = Stack::start(&[], &["--allowed-origin", "https://app.example"])
        .await
        .unwrap();
    let token = stack.keys.token("c1", Scope::Control);
    let bare = format!("ws://{}/websockify", stack.relay.public);
    let good_origin = ("Origin", "https://app.example");

    // Origin allowlist: missing or foreign origins are refused with 403.
    assert_eq!(refused(&stack.url()).await.0, 403);
    assert_eq!(
        refused_with(&stack.url(), &[("Origin", "https://evil.example")])
            .await
            .0,
        403
    );

    let bearer = format!("Bearer {token}");
    let mut by_bearer = RfbClient::connect_with(&bare, &[good_origin, ("Authorization", &bearer)])
        .await
        .unwrap();
    by_bearer.handshake().await.unwrap();
    // (Each session takes a fresh token: a token holds one live session.)
    let token = stack.keys.token("c1", Scope::Control);
    let cookie = format!("theme=dark; vnc_token={token}");
    let mut by_cookie = RfbClient::connect_with(
        &format!("ws://{}/vnc/ws", stack.relay.public),
        &[good_origin, ("Cookie", &cookie)],
    )
    .await
    .unwrap();
    by_cookie.handshake().await.unwrap();
    let mut by_query = RfbClient::connect_with(&stack.url(), &[good_origin])
        .await
        .unwrap();
    by_query.handshake().await.unwrap();
    // A containerId that isn't the token's container: 403.
    let wrong = format!("{}&containerId=other", stack.url());
    assert_eq!(refused_with(&wrong, &[good_origin]).await.0, 403);
}

/// Cross-site WebSocket hijacking: another site's page can make the browser attach the
/// `vnc_token` cookie. Without an Origin allowlist, a cookie token is taken only from
/// the relay's own origin; query and bearer tokens from any.
#[tokio::test]
async fn a_cookie_token_from_another_site_is_refused() {
    let stack = Stack::start(&[], &[]).await.unwrap();
    let bare = format!("ws://{}/websockify", stack.relay.public);
    let cookie = format!("vnc_token={}", stack.keys.token("c1", Scope::Control));
    let evil = ("Origin", "https://evil.example");
    let (status, body) = refused_with(&bare, &[evil, ("Cookie", &cookie)]).await;
    assert_eq!(status, 403);
    assert!(body.contains("vnc_token cookie"), "{body}");
    // No Origin at all: not a browser on the relay's page either.
    assert_eq!(refused_with(&bare, &[("Cookie", &cookie)]).await.0, 403);

    let own = format!("http://{}", stack.relay.public);
    let mut by_cookie = RfbClient::connect_with(&bare, &[("Origin", &own), ("Cookie", &cookie)])
        .await
        .unwrap();
    by_cookie.handshake().await.unwrap();
    let mut by_query = RfbClient::connect_with(&stack.url(), &[evil])
        .await
        .unwrap();
    by_query.handshake().await.unwrap();
}

/// A browser that stops answering pings is closed (1011); one that answers stays.
#[tokio::test]
async fn browsers_that_miss_pongs_are_closed_and_live_ones_kept() {
    let stack = Stack::start(
        &[],
        &["--ping-interval", "200ms", "--max-missed-pongs", "2"],
    )
    .await
    .unwrap();
    // tungstenite answers pings whenever it reads.
    let mut live = RfbClient::connect(&stack.url()).await.unwrap();
    live.handshake().await.unwrap();

    // A raw client that upgrades, sends its side of the RFB handshake (3.8, None,
    // shared) without reading, and then never reads or answers again.
    let path = format!(
        "/websockify?token={}",
        stack.keys.token("c1", Scope::Control)
    );
    let mut mute = raw_upgrade(stack.relay.public, &path, "").await.unwrap();
    for part in [&b"RFB 003.008\n"[..], &[1], &[1]] {
        mute.write_all(&client_frame(part)).await.unwrap();
    }

    // The mute one is closed while the live one keeps relaying (and answering pings).
    let mute_read = tokio::spawn(async move {
        let mut got = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), mute.read_to_end(&mut got)).await;
        got
    });
    while !mute_read.is_finished() {
        live.round_trip(W, H).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got = mute_read.await.unwrap();
    let (head, frames) = split_response(&got);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    // The handshake's binary frames, the unanswered pings, then Close.
    let opcodes: Vec<u8> = server_frames(frames).iter().map(|(op, _)| *op).collect();
    let data = opcodes.iter().take_while(|&&op| op == 0x2).count();
    assert!(data > 0, "{opcodes:?}");
    assert_eq!(opcodes[data..], [0x9, 0x9, 0x8], "{opcodes:?}");
    assert_eq!(close_code(frames), Some(1011));
    live.round_trip(W, H).await.unwrap();
    stack
        .relay
        .wait_metric(
            "vnc_relay_sessions_total{transport=\"websocket\",outcome=\"ping_timeout\"}",
            1.0,
        )
        .await;
}

/// Out of file descriptors, the relay backs off instead of spinning or dying, and
/// serves again once descriptors are free.
#[tokio::test]
async fn accept_backs_off_on_emfile_and_recovers() {
    let stack = Stack::start(&[], &[]).await.unwrap();
    let relay = RelayProcess::start_under(
        &["prlimit", "--nofile=48", "--"],
        &stack.redis.url(),
        &stack.keys.public,
        &["--handshake-timeout", "30s"],
    )
    .await
    .unwrap();
    // The admin listener shares the limit: its connection is opened now and kept.
    let mut admin = vnc_tests::ws::MetricsConn::open(relay.admin).await.unwrap();
    assert_eq!(
        admin.metric("vnc_relay_accept_errors_total").await.unwrap(),
        Some(0.0)
    );
    // Connections that never send a request each hold one descriptor in the relay.
    let mut idle = Vec::new();
    for _ in 0..60 {
        idle.push(TcpStream::connect(relay.public).await.unwrap());
    }
    // The relay runs out of descriptors and counts the failed accepts.
    let deadline = tokio::time::Instant::now() + vnc_tests::WAIT;
    while admin.metric("vnc_relay_accept_errors_total").await.unwrap() == Some(0.0) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no accept error counted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(idle);
    let url = relay.ws_url(&stack.keys.token("c1", Scope::Control));
    let mut rfb = eventually(
        "a session after descriptors are freed",
        vnc_tests::WAIT,
        || async { RfbClient::connect(&url).await.ok() },
    )
    .await;
    rfb.handshake().await.unwrap();
    rfb.round_trip(W, H).await.unwrap();
}
