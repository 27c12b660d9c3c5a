//! End-to-end tests: the server runs in-process on a loopback port and a hand-written
//! RFB client talks to it over a real TCP socket.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::event_log::{EventLog, MemorySink};
use crate::framebuffer::Framebuffer;
use crate::pixel::{self, PixelFormat};
use crate::{AuthKind, Config, MAX_SIDE, Version, auth, run};

/// Bound on every wait in these tests, so a bug fails a test instead of hanging it.
const DEADLINE: Duration = Duration::from_secs(5);
const BASE: [u8; 3] = [0x12, 0x80, 0xfe];
const PASSWORD: &str = "s3cret";

fn config(version: Version, auth: AuthKind, flood: bool) -> Config {
    Config {
        version,
        auth,
        password: Some(PASSWORD.into()),
        framebuffer: Framebuffer::new(64, 48, BASE),
        name: "fixture-test".into(),
        flood,
        echo_clipboard: false,
        update_interval: Duration::from_millis(20),
    }
}

/// A running server: its address and its log.
struct Server {
    addr: std::net::SocketAddr,
    log: MemorySink,
}

impl Server {
    async fn start(config: Config) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let log = MemorySink::default();
        let events = EventLog::new(Box::new(log.clone()));
        tokio::spawn(run(Arc::new(config), listener, events));
        Server { addr, log }
    }

    async fn connect(&self) -> Client {
        let stream = TcpStream::connect(self.addr).await.expect("connect");
        Client { stream }
    }

    /// Waits until a log line satisfies `pred`, and returns it.
    async fn wait_log(&self, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            if let Some(line) = self.log.lines().into_iter().find(|l| pred(l)) {
                return line;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no such log line in {:#?}",
                self.log.lines()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

fn is(line: &Value, key: &str, value: &str) -> bool {
    line[key] == value
}

struct Client {
    stream: TcpStream,
}

impl Client {
    async fn read(&mut self, n: usize) -> Vec<u8> {
        let mut buf = vec![0u8; n];
        tokio::time::timeout(DEADLINE, self.stream.read_exact(&mut buf))
            .await
            .expect("read timed out")
            .expect("read");
        buf
    }

    async fn read_u32(&mut self) -> u32 {
        let b = self.read(4).await;
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    async fn write(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// Whether the server closed the connection (EOF) within the deadline.
    async fn closed_by_server(&mut self) -> bool {
        let mut rest = Vec::new();
        matches!(
            tokio::time::timeout(DEADLINE, self.stream.read_to_end(&mut rest)).await,
            Ok(Ok(_)) | Ok(Err(_))
        )
    }

    /// 3.8 handshake up to the SecurityResult; returns the result code.
    async fn security_3_8(&mut self, password: Option<&str>) -> u32 {
        assert_eq!(self.read(12).await, b"RFB 003.008\n");
        self.write(b"RFB 003.008\n").await;
        let types = self.read(2).await;
        match password {
            None => {
                assert_eq!(types, [1, 1]);
                self.write(&[1]).await;
            }
            Some(password) => {
                assert_eq!(types, [1, 2]);
                self.write(&[2]).await;
                let challenge: [u8; 16] = self.read(16).await.try_into().expect("16 bytes");
                self.write(&auth::response(password.as_bytes(), &challenge))
                    .await;
            }
        }
        self.read_u32().await
    }

    /// ClientInit (shared) and ServerInit; returns (width, height, pixel format, name).
    async fn init(&mut self) -> (u16, u16, [u8; 16], String) {
        self.write(&[1]).await;
        let b = self.read(24).await;
        let width = u16::from_be_bytes([b[0], b[1]]);
        let height = u16::from_be_bytes([b[2], b[3]]);
        let format: [u8; 16] = b[4..20].try_into().expect("16 bytes");
        let len = u32::from_be_bytes([b[20], b[21], b[22], b[23]]) as usize;
        let name = String::from_utf8(self.read(len).await).expect("utf-8 name");
        (width, height, format, name)
    }

    async fn request(&mut self, incremental: bool, x: u16, y: u16, w: u16, h: u16) {
        let mut msg = vec![3, u8::from(incremental)];
        for v in [x, y, w, h] {
            msg.extend_from_slice(&v.to_be_bytes());
        }
        self.write(&msg).await;
    }

    async fn set_pixel_format(&mut self, format: PixelFormat) {
        let mut msg = vec![0, 0, 0, 0];
        msg.extend_from_slice(&format.to_bytes());
        self.write(&msg).await;
    }

    /// Reads one FramebufferUpdate with a single Raw rectangle; returns the rectangle
    /// (x, y, w, h) and its pixels decoded to RGB, row by row.
    async fn read_update(&mut self, format: PixelFormat) -> ((u16, u16, u16, u16), Vec<[u8; 3]>) {
        assert_eq!(
            self.read(4).await,
            [0, 0, 0, 1],
            "one-rectangle FramebufferUpdate"
        );
        let h = self.read(12).await;
        let at = |i: usize| u16::from_be_bytes([h[i], h[i + 1]]);
        let rect = (at(0), at(2), at(4), at(6));
        assert_eq!(&h[8..12], &[0, 0, 0, 0], "Raw encoding");
        let bpp = format.bytes_per_pixel();
        let data = self
            .read(usize::from(rect.2) * usize::from(rect.3) * bpp)
            .await;
        let pixels = data
            .chunks_exact(bpp)
            .map(|p| pixel::decode(format, p))
            .collect();
        (rect, pixels)
    }
}

#[tokio::test]
async fn handshake_3_8_none_and_updates() {
    let server = Server::start(config(Version::V3_8, AuthKind::None, false)).await;
    let mut client = server.connect().await;
    assert_eq!(client.security_3_8(None).await, 0);
    let (width, height, format, name) = client.init().await;
    assert_eq!((width, height), (64, 48));
    assert_eq!(format, PixelFormat::SERVER.to_bytes());
    assert_eq!(name, "fixture-test");

    client.request(false, 0, 0, 64, 48).await;
    let (rect, pixels) = client.read_update(PixelFormat::SERVER).await;
    assert_eq!(rect, (0, 0, 64, 48));
    assert!(
        pixels[..64 * 24].iter().all(|p| *p == BASE),
        "top half is the base colour"
    );
    let first_bottom = pixels[64 * 24..].to_vec();
    assert!(first_bottom.iter().any(|p| *p != BASE));

    // An incremental request is answered once the content has changed.
    client.request(true, 0, 0, 64, 48).await;
    let (_, next) = client.read_update(PixelFormat::SERVER).await;
    assert!(next[..64 * 24].iter().all(|p| *p == BASE));
    assert_ne!(next[64 * 24..], first_bottom[..], "bottom half changed");

    // Requests are clipped to the framebuffer.
    client.request(false, 60, 40, 100, 100).await;
    let (rect, _) = client.read_update(PixelFormat::SERVER).await;
    assert_eq!(rect, (60, 40, 4, 8));

    server
        .wait_log(|l| is(l, "event", "client_init") && l["shared"] == true)
        .await;
    server
        .wait_log(|l| is(l, "event", "version") && is(l, "version", "3.8"))
        .await;
    let req = server
        .wait_log(|l| is(l, "msg", "FramebufferUpdateRequest") && l["incremental"] == true)
        .await;
    assert_eq!(req["conn"], 1);
    assert_eq!(req["width"], 64);
    drop(client);
    server
        .wait_log(|l| is(l, "event", "closed") && l["conn"] == 1)
        .await;
}

#[tokio::test]
async fn handshake_3_8_vnc_auth_and_client_pixel_format() {
    let server = Server::start(config(Version::V3_8, AuthKind::Vnc, false)).await;
    let mut client = server.connect().await;
    assert_eq!(client.security_3_8(Some(PASSWORD)).await, 0);
    client.init().await;
    server.wait_log(|l| is(l, "event", "authenticated")).await;

    let rgb565_be = pixel::rgb565(true);
    client.set_pixel_format(rgb565_be).await;
    client.request(false, 0, 0, 64, 24).await;
    let (rect, pixels) = client.read_update(rgb565_be).await;
    assert_eq!(rect, (0, 0, 64, 24));
    // Through 5/6/5 bits and back, each channel lands within rounding of the base colour.
    let expected = pixel::decode(rgb565_be, &{
        let mut b = Vec::new();
        rgb565_be.encode(BASE, &mut b);
        b
    });
    assert!(pixels.iter().all(|p| *p == expected));
    assert!(expected.iter().zip(BASE).all(|(a, b)| a.abs_diff(b) <= 4));
    let line = server.wait_log(|l| is(l, "msg", "SetPixelFormat")).await;
    assert_eq!(line["bpp"], 16);
    assert_eq!(line["big_endian"], true);
}

#[tokio::test]
async fn wrong_password_fails_with_reason_and_closes() {
    let server = Server::start(config(Version::V3_8, AuthKind::Vnc, false)).await;
    let mut client = server.connect().await;
    assert_eq!(client.security_3_8(Some("wrong")).await, 1);
    let len = client.read_u32().await as usize;
    assert_eq!(client.read(len).await, b"authentication failed");
    assert!(client.closed_by_server().await);
    server.wait_log(|l| is(l, "event", "auth_failed")).await;
    server
        .wait_log(|l| is(l, "event", "closed") && is(l, "reason", "authentication failed"))
        .await;
}

#[tokio::test]
async fn client_may_choose_3_3_and_gets_no_security_result_for_none() {
    let server = Server::start(config(Version::V3_8, AuthKind::None, false)).await;
    let mut client = server.connect().await;
    assert_eq!(client.read(12).await, b"RFB 003.008\n");
    client.write(b"RFB 003.003\n").await;
    assert_eq!(client.read_u32().await, 1, "3.3: server-chosen type as u32");
    // No SecurityResult: the next thing is our ClientInit and the ServerInit.
    let (width, height, _, _) = client.init().await;
    assert_eq!((width, height), (64, 48));
    server
        .wait_log(|l| is(l, "event", "version") && is(l, "version", "3.3"))
        .await;
}

#[tokio::test]
async fn version_3_7_vnc_auth_failure_has_no_reason() {
    let server = Server::start(config(Version::V3_7, AuthKind::Vnc, false)).await;
    let mut client = server.connect().await;
    assert_eq!(client.read(12).await, b"RFB 003.007\n");
    client.write(b"RFB 003.007\n").await;
    assert_eq!(client.read(2).await, [1, 2]);
    client.write(&[2]).await;
    let challenge: [u8; 16] = client.read(16).await.try_into().expect("16 bytes");
    client.write(&auth::response(b"nope", &challenge)).await;
    assert_eq!(client.read_u32().await, 1);
    let mut rest = Vec::new();
    tokio::time::timeout(DEADLINE, client.stream.read_to_end(&mut rest))
        .await
        .expect("closed")
        .expect("read");
    assert!(rest.is_empty(), "no reason string before 3.8");
}

#[tokio::test]
async fn newer_client_version_than_offered_is_refused() {
    let server = Server::start(config(Version::V3_7, AuthKind::None, false)).await;
    let mut client = server.connect().await;
    client.read(12).await;
    client.write(b"RFB 003.008\n").await;
    assert_eq!(client.read(1).await, [0], "empty security type list");
    let len = client.read_u32().await as usize;
    assert_eq!(client.read(len).await, b"unsupported protocol version");
    server.wait_log(|l| is(l, "event", "bad_version")).await;
}

#[tokio::test]
async fn logs_client_messages_and_closes_on_unknown_type_without_hurting_others() {
    let server = Server::start(config(Version::V3_8, AuthKind::None, false)).await;
    let mut bad = server.connect().await;
    let mut good = server.connect().await;
    for client in [&mut bad, &mut good] {
        assert_eq!(client.security_3_8(None).await, 0);
        client.init().await;
    }

    let mut msgs = vec![2, 0, 0, 2, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0x21]; // Raw, DesktopSize
    msgs.extend_from_slice(&[4, 1, 0, 0, 0, 0, 0xff, 0x0d]); // key down Return
    msgs.extend_from_slice(&[5, 1, 0, 10, 0, 20]); // pointer (10, 20), button 1
    msgs.extend_from_slice(&[6, 0, 0, 0, 0, 0, 0, 3, b'h', b'\xe9', b'!']); // "hé!"
    msgs.push(99); // unknown
    bad.write(&msgs).await;
    assert!(bad.closed_by_server().await);

    let enc = server.wait_log(|l| is(l, "msg", "SetEncodings")).await;
    assert_eq!(enc["encodings"], serde_json::json!([0, -223]));
    let key = server.wait_log(|l| is(l, "msg", "KeyEvent")).await;
    assert_eq!(
        (key["down"].clone(), key["keysym"].clone()),
        (true.into(), 0xff0d.into())
    );
    let ptr = server.wait_log(|l| is(l, "msg", "PointerEvent")).await;
    assert_eq!(
        (
            ptr["buttons"].as_u64(),
            ptr["x"].as_u64(),
            ptr["y"].as_u64()
        ),
        (Some(1), Some(10), Some(20))
    );
    server
        .wait_log(|l| is(l, "msg", "ClientCutText") && is(l, "text", "hé!"))
        .await;
    let unknown = server.wait_log(|l| is(l, "event", "unknown_message")).await;
    assert_eq!(
        (unknown["type"].as_u64(), unknown["conn"].as_u64()),
        (Some(99), Some(1))
    );

    // The other connection still works.
    good.request(false, 0, 0, 64, 48).await;
    let (_, pixels) = good.read_update(PixelFormat::SERVER).await;
    assert_eq!(pixels[0], BASE);
}

#[tokio::test]
async fn flood_sends_without_requests_and_reports_progress() {
    let server = Server::start(config(Version::V3_8, AuthKind::None, true)).await;
    let mut client = server.connect().await;
    assert_eq!(client.security_3_8(None).await, 0);
    client.init().await;
    for _ in 0..3 {
        let (rect, pixels) = client.read_update(PixelFormat::SERVER).await;
        assert_eq!(rect, (0, 0, 64, 48));
        assert_eq!(pixels[0], BASE);
    }
    // Client messages are still read and logged while flooding.
    client.write(&[4, 0, 0, 0, 0, 0, 0, 0x61]).await;
    server
        .wait_log(|l| is(l, "msg", "KeyEvent") && l["keysym"] == 0x61)
        .await;
    let size = 16 + 64 * 48 * 4;
    server
        .wait_log(|l| is(l, "event", "flood_progress") && l["bytes"].as_u64() >= Some(3 * size))
        .await;
}

/// SetDesktopSize with one screen of `width` × `height`.
fn set_desktop_size(width: u16, height: u16) -> Vec<u8> {
    let mut m = vec![251, 0];
    m.extend_from_slice(&width.to_be_bytes());
    m.extend_from_slice(&height.to_be_bytes());
    m.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    m.extend_from_slice(&width.to_be_bytes());
    m.extend_from_slice(&height.to_be_bytes());
    m.extend_from_slice(&[0, 0, 0, 0]);
    m
}

#[tokio::test]
async fn set_desktop_size_is_answered_once_extended_desktop_size_is_listed() {
    let server = Server::start(config(Version::V3_8, AuthKind::None, false)).await;
    let mut client = server.connect().await;
    assert_eq!(client.security_3_8(None).await, 0);
    client.init().await;

    // Not listed yet: logged, not answered; the next message is the update asked for.
    client.write(&set_desktop_size(100, 80)).await;
    server
        .wait_log(|l| is(l, "msg", "SetDesktopSize") && l["width"] == 100)
        .await;
    client.request(false, 0, 0, 64, 48).await;
    assert_eq!(
        client.read_update(PixelFormat::SERVER).await.0,
        (0, 0, 64, 48)
    );

    // Raw and ExtendedDesktopSize (-308).
    client
        .write(&[2, 0, 0, 2, 0, 0, 0, 0, 0xff, 0xff, 0xfe, 0xcc])
        .await;
    // Within bounds: ok (x 1, y 0) and the new size, which later updates have.
    client.write(&set_desktop_size(100, 80)).await;
    let answer = client.read(4 + 12 + 4 + 16).await;
    assert_eq!(&answer[..4], &[0, 0, 0, 1]);
    assert_eq!(
        &answer[4..16],
        &[0, 1, 0, 0, 0, 100, 0, 80, 0xff, 0xff, 0xfe, 0xcc]
    );
    assert_eq!(&answer[16..20], &[1, 0, 0, 0]);
    assert_eq!(&answer[28..32], &[0, 100, 0, 80]);
    client.request(false, 0, 0, 1000, 1000).await;
    let (rect, pixels) = client.read_update(PixelFormat::SERVER).await;
    assert_eq!(rect, (0, 0, 100, 80));
    assert_eq!(pixels[0], BASE);

    // Over the bound, or no screen: invalid layout (y 3), the size unchanged.
    client.write(&set_desktop_size(MAX_SIDE + 1, 10)).await;
    let mut no_screen = set_desktop_size(50, 50);
    no_screen.truncate(8);
    no_screen[6] = 0;
    client.write(&no_screen).await;
    for _ in 0..2 {
        let answer = client.read(4 + 12 + 4 + 16).await;
        assert_eq!(&answer[4..12], &[0, 1, 0, 3, 0, 100, 0, 80]);
    }
    server
        .wait_log(|l| is(l, "event", "desktop_size_answer") && l["status"] == 3)
        .await;
}
