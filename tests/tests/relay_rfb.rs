//! The relay as the RFB security boundary, end to end with the real relay, Redis and
//! the RFB fixture: credential injection, view-only enforcement, unframeable input,
//! and structured input over socket.io.
#![forbid(unsafe_code)]

use std::time::Duration;

use serde_json::json;
use vnc_shared::token::{ClipboardPolicy, Scope};
use vnc_tests::fixture::Fixture;
use vnc_tests::rfb::RfbClient;
use vnc_tests::sio::{SioClient, socketio_client_available};
use vnc_tests::stack::Stack;
use vnc_tests::ws::expect_close;

const W: u16 = 64;
const H: u16 = 48;
const PASSWORD: &str = "s3cret";

/// The stack with a fixture that demands VNC Authentication, its password in the
/// container record.
async fn password_stack() -> Stack {
    let stack = Stack::start(&["--auth", "vnc", "--password", PASSWORD], &[])
        .await
        .unwrap();
    stack.redis.set_field("c1", "vnc_password", PASSWORD).await;
    stack
}

#[tokio::test]
async fn the_relay_authenticates_to_the_vnc_server_and_the_browser_sees_no_password() {
    let stack = password_stack().await;
    let mut rfb = RfbClient::connect(&stack.url()).await.unwrap();
    rfb.handshake().await.unwrap();
    assert_eq!(rfb.offered, [1], "the browser is offered None only");
    assert_eq!(
        rfb.round_trip(W, H).await.unwrap()[0].rgb(1, 1),
        (255, 0, 0)
    );

    // Injection off for this container: the browser authenticates itself.
    stack
        .redis
        .set_field("c1", "inject_credentials", "false")
        .await;
    let mut own = RfbClient::connect(&stack.url()).await.unwrap();
    own.handshake_with(Some(PASSWORD)).await.unwrap();
    assert_eq!(own.offered, [2]);
    own.round_trip(W, H).await.unwrap();

    // A wrong password in the record: the browser is told why, in RFB, then 1011.
    stack
        .redis
        .set_field("c1", "inject_credentials", "true")
        .await;
    stack.redis.set_field("c1", "vnc_password", "wrong").await;
    let mut refused = RfbClient::connect(&stack.url()).await.unwrap();
    let err = refused.handshake().await.unwrap_err().to_string();
    assert!(err.contains("could not authenticate"), "{err}");
    let (code, _) = expect_close(refused.ws(), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(code, 1011);
    // The password is in no log line of the relay and no metric.
    assert!(!stack.relay.metrics().await.contains(PASSWORD));
}

#[tokio::test]
async fn view_tokens_cannot_type_and_their_sessions_are_shared() {
    let stack = Stack::start(&[], &[]).await.unwrap();
    let view = stack.relay.ws_url(&stack.keys.token("c1", Scope::View));
    let mut rfb = RfbClient::connect(&view).await.unwrap();
    // The browser asks for an exclusive session; the relay forces shared.
    rfb.handshake_full(None, false).await.unwrap();
    stack
        .fixture
        .wait_event("client_init", |e| e["event"] == "client_init")
        .await;
    assert!(
        stack
            .fixture
            .events()
            .iter()
            .filter(|e| e["event"] == "client_init")
            .all(|e| e["shared"] == true),
        "{:?}",
        stack.fixture.events()
    );
    rfb.key(true, 0x61).await.unwrap();
    rfb.send(&[5, 1, 0, 10, 0, 10]).await.unwrap(); // PointerEvent
    rfb.send(&[6, 0, 0, 0, 0, 0, 0, 2, b'h', b'i'])
        .await
        .unwrap(); // ClientCutText
    // Harmless messages pass: a full update still comes back.
    rfb.round_trip(W, H).await.unwrap();
    let events = stack.fixture.events();
    for dropped in ["KeyEvent", "PointerEvent", "ClientCutText"] {
        assert!(
            !events.iter().any(|e| e["msg"] == dropped),
            "{dropped} reached the VNC server: {events:?}"
        );
    }
    assert!(
        events
            .iter()
            .any(|e| e["msg"] == "FramebufferUpdateRequest")
    );
    stack
        .relay
        .wait_metric(
            "vnc_relay_input_dropped_total{kind=\"key_event\",reason=\"view\"}",
            1.0,
        )
        .await;

    // The same keys from a control token do reach it.
    let mut control = RfbClient::connect(&stack.url()).await.unwrap();
    control.handshake().await.unwrap();
    control.key(true, 0x62).await.unwrap();
    stack
        .fixture
        .wait_event("KeyEvent", |e| {
            e["msg"] == "KeyEvent" && e["keysym"] == 0x62
        })
        .await;
}

#[tokio::test]
async fn a_message_the_relay_cannot_frame_ends_the_session_with_1008() {
    let stack = Stack::start(&[], &[]).await.unwrap();
    for scope in [Scope::View, Scope::Control] {
        let url = stack.relay.ws_url(&stack.keys.token("c1", scope));
        let mut rfb = RfbClient::connect(&url).await.unwrap();
        rfb.handshake().await.unwrap();
        rfb.send(&[99, 1, 2, 3]).await.unwrap();
        let (code, reason) = expect_close(rfb.ws(), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(code, 1008, "{scope:?}: {reason}");
    }
    // The VNC server never saw the unknown message.
    assert!(
        !stack
            .fixture
            .events()
            .iter()
            .any(|e| e["event"] == "unknown_message")
    );
}

#[tokio::test]
async fn socketio_structured_input_reaches_the_vnc_server_for_control_tokens_only() {
    if !socketio_client_available() {
        return;
    }
    let stack = password_stack().await;
    stack.relay.wait_ready().await;
    let connect = |scope| {
        let token = stack.keys.token("c1", scope);
        let relay = stack.relay.public;
        async move { SioClient::connect(relay, &token, "c1").await.unwrap() }
    };

    // Credentials are injected on this transport too.
    let mut rfb = RfbClient::over_socketio(connect(Scope::Control).await);
    rfb.handshake().await.unwrap();
    assert_eq!(rfb.offered, [1]);
    let sio = rfb.sio();
    let inputs = [
        json!({"type": "key", "down": true, "keysym": 0xff0d}),
        json!({"type": "pointer", "x": 12, "y": 34, "buttons": 1}),
        json!({"type": "clipboard", "text": "héllo"}),
    ];
    for input in inputs {
        assert_eq!(
            sio.emit("vnc:input", input).await.unwrap(),
            json!({"ok": true})
        );
    }
    let resized = sio
        .emit("vnc:resize", json!({"width": 800, "height": 600}))
        .await
        .unwrap();
    assert_eq!(resized, json!({"ok": true}));
    let fixture = &stack.fixture;
    fixture
        .wait_event("key", |e| e["msg"] == "KeyEvent" && e["keysym"] == 0xff0d)
        .await;
    fixture
        .wait_event("pointer", |e| {
            e["msg"] == "PointerEvent" && e["x"] == 12 && e["y"] == 34 && e["buttons"] == 1
        })
        .await;
    fixture
        .wait_event("clipboard", |e| {
            e["msg"] == "ClientCutText" && e["length"] == 5
        })
        .await;
    fixture
        .wait_event("resize", |e| {
            e["msg"] == "SetDesktopSize" && e["width"] == 800 && e["screens"] == 1
        })
        .await;
    // Raw bytes and structured input interleave without breaking either.
    rfb.round_trip(W, H).await.unwrap();

    // Out of range or malformed: refused with the reason, nothing sent.
    let sio = rfb.sio();
    for (bad, why) in [
        (
            json!({"type": "key", "down": true, "keysym": "a"}),
            "invalid type",
        ),
        (
            json!({"type": "pointer", "x": 70000, "y": 1, "buttons": 0}),
            "invalid value",
        ),
        (
            json!({"type": "pointer", "x": 1, "y": 1, "buttons": 200}),
            "0..=127",
        ),
        (json!({"type": "paste", "text": "x"}), "unknown variant"),
    ] {
        let ack = sio.emit("vnc:input", bad.clone()).await.unwrap();
        assert_eq!(ack["ok"], false, "{bad}");
        assert!(ack["error"].as_str().unwrap().contains(why), "{bad}: {ack}");
    }

    // A view token's structured input is refused.
    let mut viewer = connect(Scope::View).await;
    let ack = viewer
        .emit(
            "vnc:input",
            json!({"type": "key", "down": true, "keysym": 0x71}),
        )
        .await
        .unwrap();
    assert_eq!(ack["ok"], false);
    assert!(
        ack["error"].as_str().unwrap().contains("view-only"),
        "{ack}"
    );
    rfb.round_trip(W, H).await.unwrap();
    assert!(
        !fixture
            .events()
            .iter()
            .any(|e| e["msg"] == "KeyEvent" && e["keysym"] == 0x71)
    );
}

/// Credential injection against a server that speaks 3.3 (server-chosen security type)
/// still offers the browser None.
#[tokio::test]
async fn injection_works_with_rfb_3_3_servers() {
    let fixture = Fixture::start(&["--version", "3.3", "--auth", "vnc", "--password", PASSWORD])
        .await
        .unwrap();
    let stack = Stack::start(&[], &[]).await.unwrap();
    stack
        .redis
        .put_container("old", "t1", "running", fixture.port())
        .await;
    stack.redis.set_field("old", "vnc_password", PASSWORD).await;
    let url = stack.relay.ws_url(&stack.keys.token("old", Scope::Control));
    let mut rfb = RfbClient::connect(&url).await.unwrap();
    // A 3.3 server makes a 3.3 session, where the server picks the security type.
    rfb.handshake_33().await.unwrap();
    rfb.round_trip(W, H).await.unwrap();
}

/// A token whose `clipboard` claim keeps the browser's clipboard from the desktop: its
/// ClientCutText (raw) and `vnc:input` clipboard (socket.io) never reach the VNC
/// server, and are counted; its keys still do.
#[tokio::test]
async fn a_clipboard_claim_without_to_desktop_keeps_clipboard_text_from_the_desktop() {
    let stack = Stack::start(&[], &[]).await.unwrap();
    let token = stack
        .keys
        .clipboard_token("c1", ClipboardPolicy::FromDesktop);
    let mut rfb = RfbClient::connect(&stack.relay.ws_url(&token))
        .await
        .unwrap();
    rfb.handshake().await.unwrap();
    rfb.send(&[6, 0, 0, 0, 0, 0, 0, 3, b'r', b'a', b'w'])
        .await
        .unwrap(); // ClientCutText
    rfb.key(true, 0x71).await.unwrap();
    stack
        .fixture
        .wait_event("the key after it", |e| e["keysym"] == 0x71)
        .await;
    let metric = "vnc_relay_input_dropped_total{kind=\"client_cut_text\",reason=\"clipboard\"}";
    stack.relay.wait_metric(metric, 1.0).await;
    drop(rfb);
    if socketio_client_available() {
        let token = stack
            .keys
            .clipboard_token("c1", ClipboardPolicy::FromDesktop);
        let sio = SioClient::connect(stack.relay.public, &token, "c1")
            .await
            .unwrap();
        let mut rfb = RfbClient::over_socketio(sio);
        rfb.handshake().await.unwrap();
        let clip = json!({"type": "clipboard", "text": "sio"});
        assert_eq!(
            rfb.sio().emit("vnc:input", clip).await.unwrap(),
            json!({"ok": false, "error": "this session may not send clipboard text to the desktop"})
        );
        let key = json!({"type": "key", "down": true, "keysym": 0x72});
        assert_eq!(
            rfb.sio().emit("vnc:input", key).await.unwrap(),
            json!({"ok": true})
        );
        stack
            .fixture
            .wait_event("the socket.io key", |e| e["keysym"] == 0x72)
            .await;
    }
    assert!(
        !stack
            .fixture
            .events()
            .iter()
            .any(|e| e["msg"] == "ClientCutText"),
        "clipboard text reached the desktop"
    );
}

/// A session whose clipboard claim lacks `from_desktop` never gets the desktop's
/// clipboard: the relay takes ServerCutText out of the server's stream, on both
/// transports, and the update behind it arrives whole. A session with the claim gets
/// the text.
#[tokio::test]
async fn a_clipboard_claim_without_from_desktop_keeps_the_desktops_clipboard_from_the_browser() {
    let stack = Stack::start(&["--echo-clipboard"], &[]).await.unwrap();
    let metric = "vnc_relay_output_dropped_total{kind=\"server_cut_text\",reason=\"clipboard\"}";
    let mut withheld = 0.0;
    for (policy, sees) in [
        (ClipboardPolicy::ToDesktop, false),
        (ClipboardPolicy::Both, true),
    ] {
        let mut clients = vec![];
        let token = stack.keys.clipboard_token("c1", policy);
        clients.push(
            RfbClient::connect(&stack.relay.ws_url(&token))
                .await
                .unwrap(),
        );
        if socketio_client_available() {
            let token = stack.keys.clipboard_token("c1", policy);
            let sio = SioClient::connect(stack.relay.public, &token, "c1")
                .await
                .unwrap();
            clients.push(RfbClient::over_socketio(sio));
        }
        for mut rfb in clients {
            let init = rfb.handshake().await.unwrap();
            rfb.send(&[6, 0, 0, 0, 0, 0, 0, 6, b'c', b'o', b'p', b'i', b'e', b'd'])
                .await
                .unwrap(); // ClientCutText "copied"
            rfb.request_update(false, init.width, init.height)
                .await
                .unwrap();
            if sees {
                assert_eq!(rfb.read_cut_text().await.unwrap(), b"copied", "{policy:?}");
            } else {
                withheld += 1.0;
                stack.relay.wait_metric(metric, withheld).await;
            }
            // The update right behind the cut text, whole.
            let rects = rfb.read_update().await.unwrap();
            assert_eq!(rects.len(), 1, "{policy:?}");
            assert_eq!(
                rects[0].pixels.len(),
                usize::from(init.width) * usize::from(init.height) * 4
            );
        }
    }
    // The desktop did send its clipboard to every session: the relay withheld it.
    let events = stack.fixture.events();
    let count = |key: &str, value: &str| events.iter().filter(|e| e[key] == value).count();
    assert_eq!(
        count("event", "cut_text_sent"),
        count("msg", "ClientCutText")
    );
    assert!(count("event", "cut_text_sent") >= 2);
}

/// SetPixelFormat: type 0, three bytes of padding, then the format.
fn set_pixel_format(format: [u8; 16]) -> Vec<u8> {
    [&[0, 0, 0, 0][..], &format].concat()
}

/// A session whose server stream the relay filters (no `from_desktop`) sets its pixel
/// format before it first asks for updates, never after, and never to one that VNC
/// servers frame Tight differently in: either would leave the relay unsure how long the
/// server's messages are, so a hostile browser could walk the filter past a
/// ServerCutText. Both end the session with 1008 before the message reaches the
/// server. Sessions without the filter change formats as before.
#[tokio::test]
async fn a_filtered_session_keeps_its_pixel_format_once_it_asks_for_updates() {
    let stack = Stack::start(&[], &[]).await.unwrap();
    let rgb888 = [32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0];
    // 8-bit channels at shifts 17, 9 and 1: 3-byte Tight pixels to some servers only.
    let disputed = [32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 17, 9, 1, 0, 0, 0];
    let url = |policy| {
        stack
            .relay
            .ws_url(&stack.keys.clipboard_token("c1", policy))
    };

    let mut rfb = RfbClient::connect(&url(ClipboardPolicy::ToDesktop))
        .await
        .unwrap();
    let init = rfb.handshake().await.unwrap();
    rfb.send(&set_pixel_format(rgb888)).await.unwrap();
    rfb.round_trip(init.width, init.height).await.unwrap();
    rfb.send(&set_pixel_format(rgb888)).await.unwrap();
    let (code, _) = expect_close(rfb.ws(), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(code, 1008, "a format change after the first request");

    let mut rfb = RfbClient::connect(&url(ClipboardPolicy::ToDesktop))
        .await
        .unwrap();
    rfb.handshake().await.unwrap();
    rfb.send(&set_pixel_format(disputed)).await.unwrap();
    let (code, _) = expect_close(rfb.ws(), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(code, 1008, "a format servers disagree on");
    let formats = || {
        stack
            .fixture
            .events()
            .iter()
            .filter(|e| e["msg"] == "SetPixelFormat")
            .count()
    };
    assert_eq!(formats(), 1, "only the first format reached the server");

    let mut rfb = RfbClient::connect(&url(ClipboardPolicy::Both))
        .await
        .unwrap();
    let init = rfb.handshake().await.unwrap();
    for _ in 0..2 {
        rfb.send(&set_pixel_format(rgb888)).await.unwrap();
        rfb.round_trip(init.width, init.height).await.unwrap();
    }
    assert_eq!(formats(), 3);
}
