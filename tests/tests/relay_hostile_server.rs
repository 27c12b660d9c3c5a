//! A hostile or broken VNC server behind the real vnc-relay: each one ends its session
//! with the documented close code and a reason, and the relay keeps serving the
//! well-behaved desktop beside it. The hostile servers are scripted TCP peers in this
//! test process: they send exactly the bytes a broken server would.
#![forbid(unsafe_code)]

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use vnc_shared::token::Scope;
use vnc_tests::WAIT;
use vnc_tests::rfb::RfbClient;
use vnc_tests::sio::{SioClient, SioEvent, socketio_client_available};
use vnc_tests::stack::Stack;
use vnc_tests::ws::{Ws, connect_with};

/// Security type list of a 3.8 server offering None, then SecurityResult OK.
const NONE_OK: &[u8] = &[1, 1, 0, 0, 0, 0];

/// A ServerInit for 64×48, 32 bpp, with `name_len` as its name's length and `name` as
/// what follows it.
fn server_init(name_len: u32, name: &[u8]) -> Vec<u8> {
    let mut m = vec![0, 64, 0, 48];
    m.extend([32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0]);
    m.extend(name_len.to_be_bytes());
    m.extend(name);
    m
}

/// A VNC server that sends `script` to every connection, then hangs up (shuts its
/// sending side) when `close` is set, and reads whatever comes until the relay closes.
/// (Reading on keeps the kernel from answering the relay's bytes with a reset, which
/// would discard the script before the relay read it.)
async fn scripted_server(script: Vec<u8>, close: bool) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let script = script.clone();
            tokio::spawn(async move {
                if conn.write_all(&script).await.is_err()
                    || (close && conn.shutdown().await.is_err())
                {
                    return;
                }
                let mut sink = [0u8; 4096];
                while matches!(conn.read(&mut sink).await, Ok(n) if n > 0) {}
            });
        }
    });
    port
}

/// Registers a scripted server as running container `cid` of the stack's tenant.
async fn hostile(stack: &Stack, cid: &str, script: Vec<u8>, close: bool) {
    let port = scripted_server(script, close).await;
    stack.redis.put_container(cid, "t1", "running", port).await;
}

/// A browser that sends its side of a 3.8 handshake at once (version, security type
/// `choice`, shared ClientInit) and reads to the close: the bytes the relay sent, and
/// the close code and reason.
async fn browse(stack: &Stack, cid: &str, choice: u8) -> (Vec<u8>, u16, String) {
    let url = stack.relay.ws_url(&stack.keys.token(cid, Scope::Control));
    let mut ws: Ws = connect_with(&url, &[]).await.unwrap();
    for part in [&b"RFB 003.008\n"[..], &[choice], &[1]] {
        ws.send(Message::Binary(part.to_vec().into()))
            .await
            .unwrap();
    }
    let mut received = Vec::new();
    let closed = tokio::time::timeout(WAIT, async {
        while let Some(msg) = ws.next().await {
            match msg {
                Ok(Message::Binary(b)) => received.extend_from_slice(&b),
                Ok(Message::Close(Some(f))) => return (u16::from(f.code), f.reason.to_string()),
                Ok(_) => {}
                Err(e) => panic!("{cid}: {e}"),
            }
        }
        panic!("{cid}: the connection ended without a close frame")
    })
    .await
    .unwrap_or_else(|_| panic!("{cid}: no close in time"));
    (received, closed.0, closed.1)
}

/// The well-behaved desktop still relays.
async fn still_serving(stack: &Stack) {
    let mut rfb = RfbClient::connect(&stack.url()).await.unwrap();
    rfb.handshake().await.unwrap();
    rfb.round_trip(64, 48).await.unwrap();
}

#[tokio::test]
async fn hostile_vnc_servers_end_their_sessions_with_the_documented_codes() {
    let stack = Stack::start(&[], &["--handshake-timeout", "2s"])
        .await
        .unwrap();
    let greeting = b"RFB 003.008\n".to_vec();

    // A desktop name of 4 GiB: refused from its length, before any of it is read.
    let huge_name = [&greeting[..], NONE_OK, &server_init(u32::MAX, b"x")].concat();
    hostile(&stack, "huge-name", huge_name, false).await;
    // Only TLS-based security types (18 TLS, 19 VeNCrypt).
    let tls_only = [&greeting[..], &[2, 18, 19]].concat();
    hostile(&stack, "tls-only", tls_only, false).await;
    // Greets, then says nothing more.
    hostile(&stack, "stalls", greeting.clone(), false).await;
    // Greets, then hangs up.
    hostile(&stack, "hangs-up", greeting.clone(), true).await;
    // Not RFB at all.
    hostile(
        &stack,
        "not-rfb",
        b"HTTP/1.1 400 Bad\r\n\r\n".to_vec(),
        false,
    )
    .await;

    let (sent, code, reason) = browse(&stack, "huge-name", 1).await;
    assert_eq!(
        (code, reason.as_str()),
        (1011, "RFB handshake with the VNC server failed")
    );
    assert!(sent.len() < 64, "no name bytes reach the browser: {sent:?}");

    // The browser, still waiting for security types, is told why in RFB terms.
    let (sent, code, reason) = browse(&stack, "tls-only", 1).await;
    assert_eq!(
        (code, reason.as_str()),
        (1011, "RFB handshake with the VNC server failed")
    );
    let told = String::from_utf8_lossy(&sent);
    assert!(
        told.contains("offers no security type the relay supports"),
        "{told}"
    );

    let (_, code, reason) = browse(&stack, "stalls", 1).await;
    assert_eq!((code, reason.as_str()), (1008, "RFB handshake timed out"));

    let (_, code, reason) = browse(&stack, "hangs-up", 1).await;
    assert_eq!(
        (code, reason.as_str()),
        (1000, "VNC server closed the connection")
    );

    let (_, code, reason) = browse(&stack, "not-rfb", 1).await;
    assert_eq!(
        (code, reason.as_str()),
        (1011, "RFB handshake with the VNC server failed")
    );

    still_serving(&stack).await;
    for outcome in ["rfb_upstream_error", "handshake_timeout", "upstream_closed"] {
        let series =
            format!("vnc_relay_sessions_total{{transport=\"websocket\",outcome=\"{outcome}\"}}");
        assert!(
            stack.relay.metric(&series).await.is_some_and(|n| n >= 1.0),
            "{series}"
        );
    }
}

/// A browser that picks a security type it wasn't offered gets a failed SecurityResult
/// with the reason (RFB 3.8) before the close, so noVNC can show why.
#[tokio::test]
async fn a_browser_that_picks_an_unoffered_security_type_is_told_why() {
    let stack = Stack::start(&[], &[]).await.unwrap();
    let (sent, code, reason) = browse(&stack, "c1", 2).await;
    assert_eq!((code, reason.as_str()), (1008, "RFB handshake failed"));
    // Version, the one type offered (None), then the failed result and its reason.
    let (head, result) = sent.split_at(14);
    assert_eq!(head, [&b"RFB 003.008\n"[..], &[1, 1]].concat());
    assert_eq!(result[..4], [0, 0, 0, 1]);
    let len = u32::from_be_bytes([result[4], result[5], result[6], result[7]]) as usize;
    let why = String::from_utf8_lossy(&result[8..]);
    assert_eq!(why.len(), len);
    assert!(why.contains("chose security type 2"), "{why}");
    still_serving(&stack).await;
}

/// Garbage after ServerInit: the raw path relays the server's stream as it is (the
/// browser judges it); a socket.io session, which follows the stream for resize
/// answers, stops following it and keeps relaying. When the server then hangs up, the
/// session ends with 1000 on both transports.
#[tokio::test]
async fn garbage_after_server_init_is_relayed_and_the_close_reported() {
    let stack = Stack::start(&[], &[]).await.unwrap();
    stack.relay.wait_ready().await;
    let garbage: Vec<u8> = (0..2048u32).map(|i| (i * 7 + 0xf0) as u8).collect();
    let script = [
        &b"RFB 003.008\n"[..],
        NONE_OK,
        &server_init(4, b"evil"),
        &garbage,
    ]
    .concat();
    hostile(&stack, "garbage", script, true).await;

    let (sent, code, reason) = browse(&stack, "garbage", 1).await;
    assert_eq!(
        (code, reason.as_str()),
        (1000, "VNC server closed the connection")
    );
    assert!(
        sent.ends_with(&garbage),
        "the stream reaches the browser as it was"
    );

    if socketio_client_available() {
        let token = stack.keys.token("garbage", Scope::Control);
        let mut sio = SioClient::connect(stack.relay.public, &token, "garbage")
            .await
            .unwrap();
        sio.send_handshake().await.unwrap();
        let mut got = Vec::new();
        let end = loop {
            match sio.next().await.unwrap() {
                SioEvent::Data(d) => got.extend(d),
                SioEvent::End(end) => break end,
                _ => {}
            }
        };
        assert_eq!(
            end,
            json!({ "code": 1000, "reason": "VNC server closed the connection" })
        );
        assert!(
            got.ends_with(&garbage),
            "{} bytes, ending {:?}",
            got.len(),
            &got[got.len().saturating_sub(16)..]
        );
        assert_eq!(
            stack
                .relay
                .metric("vnc_relay_server_stream_unfollowed_total")
                .await,
            Some(1.0)
        );
    }
    still_serving(&stack).await;
}
