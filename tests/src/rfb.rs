//! A minimal RFB client speaking through the relay, as noVNC would: over the raw
//! WebSocket or over socket.io (`vnc:data`).

use std::collections::VecDeque;

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use crate::sio::{SioClient, SioEvent};
use crate::ws::{Ws, connect_with};

/// What ServerInit said.
#[derive(Debug)]
pub struct ServerInit {
    pub width: u16,
    pub height: u16,
    pub name: String,
}

/// One rectangle of a FramebufferUpdate: Raw, pixels in the server's 32 bpp format, or
/// ExtendedDesktopSize (-308), `pixels` holding its screens.
#[derive(Debug)]
pub struct Rect {
    pub x: u16,
    pub y: u16,
    pub width: u16,
    pub height: u16,
    pub encoding: i32,
    pub pixels: Vec<u8>,
}

/// The ExtendedDesktopSize pseudo-encoding.
pub const EXTENDED_DESKTOP_SIZE: i32 = -308;

impl Rect {
    /// The (r, g, b) of a pixel, for the default little-endian 32 bpp format.
    pub fn rgb(&self, x: u16, y: u16) -> (u8, u8, u8) {
        let i = (usize::from(y) * usize::from(self.width) + usize::from(x)) * 4;
        (self.pixels[i + 2], self.pixels[i + 1], self.pixels[i])
    }
}

/// How the client reaches the relay.
pub enum Link {
    Ws(Box<Ws>),
    Sio(Box<SioClient>),
}

pub struct RfbClient {
    pub link: Link,
    buf: Vec<u8>,
    /// The security types the server offered in the last handshake.
    pub offered: Vec<u8>,
    /// Every byte received, in order, once [`RfbClient::capture`] was called.
    received: Option<Vec<u8>>,
    /// `vnc:resized` payloads that arrived while reading RFB data, oldest first.
    resized: VecDeque<Value>,
}

impl RfbClient {
    pub async fn connect(url: &str) -> anyhow::Result<RfbClient> {
        Self::connect_with(url, &[]).await
    }

    /// Connects with extra request headers (`Origin`, `Cookie`, `Authorization`).
    pub async fn connect_with(
        url: &str,
        headers: &[(&'static str, &str)],
    ) -> anyhow::Result<RfbClient> {
        Ok(RfbClient::over_ws(connect_with(url, headers).await?))
    }

    /// An RFB client over an open WebSocket (`ws://` or `wss://`).
    pub fn over_ws(ws: Ws) -> RfbClient {
        RfbClient {
            link: Link::Ws(Box::new(ws)),
            buf: Vec::new(),
            offered: Vec::new(),
            received: None,
            resized: VecDeque::new(),
        }
    }

    /// An RFB client over an admitted socket.io socket.
    pub fn over_socketio(sio: SioClient) -> RfbClient {
        RfbClient {
            link: Link::Sio(Box::new(sio)),
            buf: Vec::new(),
            offered: Vec::new(),
            received: None,
            resized: VecDeque::new(),
        }
    }

    /// The WebSocket, for a client connected with [`RfbClient::connect`].
    pub fn ws(&mut self) -> &mut Ws {
        match &mut self.link {
            Link::Ws(ws) => ws,
            Link::Sio(_) => panic!("this client speaks socket.io"),
        }
    }

    /// The socket.io client, for one made with [`RfbClient::over_socketio`].
    pub fn sio(&mut self) -> &mut SioClient {
        match &mut self.link {
            Link::Sio(sio) => sio,
            Link::Ws(_) => panic!("this client speaks WebSocket"),
        }
    }

    async fn read_exact(&mut self, n: usize) -> anyhow::Result<Vec<u8>> {
        while self.buf.len() < n {
            match &mut self.link {
                Link::Ws(ws) => {
                    let msg = tokio::time::timeout(crate::WAIT, ws.next())
                        .await
                        .context("no RFB data in time")?
                        .context("connection ended")??;
                    match msg {
                        Message::Binary(b) => self.take_in(&b),
                        Message::Close(f) => bail!("closed by relay: {f:?}"),
                        _ => {}
                    }
                }
                Link::Sio(sio) => match sio.next().await? {
                    SioEvent::Data(b) => self.take_in(&b),
                    SioEvent::Room(_) => {}
                    SioEvent::Resized(p) => self.resized.push_back(p),
                    SioEvent::Named(name, p) => sio.keep_named(name, p),
                    other => bail!("socket.io: {other:?}"),
                },
            }
        }
        Ok(self.buf.drain(..n).collect())
    }

    fn take_in(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        if let Some(log) = &mut self.received {
            log.extend_from_slice(bytes);
        }
    }

    /// Keeps every byte received from now on (call before the handshake to have the
    /// whole stream the relay sent).
    pub fn capture(&mut self) {
        self.received.get_or_insert_with(Vec::new);
    }

    /// The bytes received since [`RfbClient::capture`].
    pub fn received(&self) -> &[u8] {
        self.received.as_deref().unwrap_or_default()
    }

    /// The next `vnc:resized` payload (socket.io only), keeping RFB data that arrives
    /// meanwhile for the next read.
    pub async fn resized(&mut self) -> anyhow::Result<Value> {
        loop {
            if let Some(p) = self.resized.pop_front() {
                return Ok(p);
            }
            match self.sio().next().await? {
                SioEvent::Data(b) => self.take_in(&b),
                SioEvent::Room(_) => {}
                SioEvent::Resized(p) => return Ok(p),
                other => bail!("socket.io: {other:?}"),
            }
        }
    }

    /// SetEncodings with `encodings` (noVNC lists ExtendedDesktopSize, -308; servers
    /// answer SetDesktopSize only then).
    pub async fn set_encodings(&mut self, encodings: &[i32]) -> anyhow::Result<()> {
        let mut msg = vec![2, 0];
        msg.extend_from_slice(&(encodings.len() as u16).to_be_bytes());
        for e in encodings {
            msg.extend_from_slice(&e.to_be_bytes());
        }
        self.send(&msg).await
    }

    pub async fn send(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        match &mut self.link {
            Link::Ws(ws) => ws.send(Message::binary(bytes.to_vec())).await?,
            Link::Sio(sio) => sio.send(bytes).await?,
        }
        Ok(())
    }

    /// Version 3.8, security None, shared ClientInit; returns ServerInit.
    pub async fn handshake(&mut self) -> anyhow::Result<ServerInit> {
        self.handshake_with(None).await
    }

    /// Version 3.8 and shared ClientInit; security None, or VNC Authentication with
    /// `password` when given.
    pub async fn handshake_with(&mut self, password: Option<&str>) -> anyhow::Result<ServerInit> {
        self.handshake_full(password, true).await
    }

    /// Version 3.8; security None, or VNC Authentication with `password`; ClientInit
    /// with the `shared` flag given.
    pub async fn handshake_full(
        &mut self,
        password: Option<&str>,
        shared: bool,
    ) -> anyhow::Result<ServerInit> {
        let version = self.read_exact(12).await?;
        if &version != b"RFB 003.008\n" {
            bail!("unexpected version {:?}", String::from_utf8_lossy(&version));
        }
        self.send(b"RFB 003.008\n").await?;
        let count = self.read_exact(1).await?[0];
        if count == 0 {
            let len = self.read_exact(4).await?;
            let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
            let reason = self.read_exact(len).await?;
            bail!("refused: {}", String::from_utf8_lossy(&reason));
        }
        let types = self.read_exact(usize::from(count)).await?;
        self.offered = types.clone();
        match password {
            None if types.contains(&1) => self.send(&[1]).await?,
            Some(pw) if types.contains(&2) => {
                self.send(&[2]).await?;
                let challenge: [u8; 16] = self.read_exact(16).await?.try_into().unwrap_or_default();
                self.send(&vnc_shared::rfb::vnc_auth_response(
                    pw.as_bytes(),
                    &challenge,
                ))
                .await?;
            }
            _ => bail!(
                "wanted security {} but the server offers {types:?}",
                if password.is_some() {
                    "VNC auth"
                } else {
                    "None"
                }
            ),
        }
        let result = self.read_exact(4).await?;
        if result != [0, 0, 0, 0] {
            bail!("security result {result:?}");
        }
        self.send(&[u8::from(shared)]).await?;
        self.server_init().await
    }

    /// Version 3.3 (the server chooses the security type; None has no result), shared
    /// ClientInit; returns ServerInit.
    pub async fn handshake_33(&mut self) -> anyhow::Result<ServerInit> {
        let version = self.read_exact(12).await?;
        if &version != b"RFB 003.003\n" {
            bail!("unexpected version {:?}", String::from_utf8_lossy(&version));
        }
        self.send(b"RFB 003.003\n").await?;
        let security = self.read_exact(4).await?;
        if security != [0, 0, 0, 1] {
            bail!("expected security type None, got {security:?}");
        }
        self.send(&[1]).await?;
        self.server_init().await
    }

    async fn server_init(&mut self) -> anyhow::Result<ServerInit> {
        let head = self.read_exact(24).await?;
        let name_len = u32::from_be_bytes([head[20], head[21], head[22], head[23]]) as usize;
        let name = self.read_exact(name_len).await?;
        Ok(ServerInit {
            width: u16::from_be_bytes([head[0], head[1]]),
            height: u16::from_be_bytes([head[2], head[3]]),
            name: String::from_utf8_lossy(&name).into_owned(),
        })
    }

    pub async fn request_update(
        &mut self,
        incremental: bool,
        width: u16,
        height: u16,
    ) -> anyhow::Result<()> {
        let mut msg = vec![3, u8::from(incremental), 0, 0, 0, 0];
        msg.extend_from_slice(&width.to_be_bytes());
        msg.extend_from_slice(&height.to_be_bytes());
        self.send(&msg).await
    }

    /// Reads one FramebufferUpdate of Raw and ExtendedDesktopSize rectangles.
    pub async fn read_update(&mut self) -> anyhow::Result<Vec<Rect>> {
        let head = self.read_exact(4).await?;
        if head[0] != 0 {
            bail!("expected FramebufferUpdate, got message type {}", head[0]);
        }
        let count = u16::from_be_bytes([head[2], head[3]]);
        let mut rects = Vec::new();
        for _ in 0..count {
            let r = self.read_exact(12).await?;
            let be = |i: usize| u16::from_be_bytes([r[i], r[i + 1]]);
            let (x, y, width, height) = (be(0), be(2), be(4), be(6));
            let encoding = i32::from_be_bytes([r[8], r[9], r[10], r[11]]);
            let pixels = match encoding {
                0 => {
                    self.read_exact(usize::from(width) * usize::from(height) * 4)
                        .await?
                }
                EXTENDED_DESKTOP_SIZE => {
                    // Screen count, padding, 16 bytes a screen.
                    let head = self.read_exact(4).await?;
                    let screens = self.read_exact(16 * usize::from(head[0])).await?;
                    [head, screens].concat()
                }
                other => bail!("expected Raw or ExtendedDesktopSize, got encoding {other}"),
            };
            rects.push(Rect {
                x,
                y,
                width,
                height,
                encoding,
                pixels,
            });
        }
        Ok(rects)
    }

    /// Reads one plain ServerCutText; returns its text's bytes.
    pub async fn read_cut_text(&mut self) -> anyhow::Result<Vec<u8>> {
        let head = self.read_exact(8).await?;
        if head[0] != 3 {
            bail!("expected ServerCutText, got message type {}", head[0]);
        }
        let len = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
        if len > 1 << 20 {
            bail!("ServerCutText of {len} bytes (extended, or over 1 MiB)");
        }
        self.read_exact(len as usize).await
    }

    pub async fn key(&mut self, down: bool, keysym: u32) -> anyhow::Result<()> {
        let mut msg = vec![4, u8::from(down), 0, 0];
        msg.extend_from_slice(&keysym.to_be_bytes());
        self.send(&msg).await
    }

    /// A full update round trip: the session is alive and relaying both ways.
    pub async fn round_trip(&mut self, width: u16, height: u16) -> anyhow::Result<Vec<Rect>> {
        self.request_update(false, width, height).await?;
        self.read_update().await
    }
}
