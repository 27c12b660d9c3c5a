//! A lean socket.io client for `sio://` targets: Engine.IO v4 / socket.io v5 over a
//! WebSocket, namespace `/vnc`, exactly the frames `relay/assets/vnc-socketio.js`
//! exchanges with the relay (see `sio_wire.rs`), pings answered.
//!
//! Why not a full client: a general socket.io client decodes every event into a JSON
//! value, copies each attachment into an owned buffer and hops through its own tasks
//! and channels. On a two-core machine that shares the CPU with the relay under test,
//! that work would be a large share of every measurement and would flatten the
//! difference between relays. This one is one task, one socket and one read buffer:
//! a `vnc:data` attachment is counted (throughput) or copied once into the caller's
//! buffer (echo) straight from where the read put it, and a send is one `write` of the
//! announcing text frame plus the binary frame. The same client is used against every
//! socket.io server compared, so their results differ by the servers only.

use std::collections::VecDeque;

use anyhow::{Context, Result, anyhow, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};

use crate::lean_ws;
use crate::recv_count::RecvCount;
use crate::sio_wire::{self, Item, Masks, Reader};
use crate::stream::Stream;

/// WebSocket close code sent when the client leaves.
const NORMAL_CLOSURE: u16 = 1000;

/// Where and as whom a socket.io connection is opened.
#[derive(Debug, Clone)]
pub struct SioTarget {
    /// `Host` header value.
    pub host: String,
    /// Request path and query: `/socket.io/?EIO=4&transport=websocket&...`.
    pub path: String,
    /// Sent in the namespace connect packet as `auth.token`.
    pub token: Option<String>,
}

pub struct SioConn {
    stream: Stream,
    reader: Reader,
    /// Read buffer; `buf[start..end]` is read but not yet consumed. Grows only if a
    /// text frame doesn't fit (up to [`sio_wire::MAX_TEXT_FRAME`]).
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Frames to send that are not on the wire yet (answers to pings), written before
    /// the next send or opportunistically while reading.
    out: Vec<u8>,
    /// Scratch for building frames to send, reused.
    wbuf: Vec<u8>,
    masks: Masks,
    /// Events other than `vnc:data` read while data was awaited, oldest first, for
    /// [`SioConn::next_event`]; at most [`HELD_EVENTS`] (the oldest are dropped).
    events: VecDeque<Event>,
    /// Acknowledgement id of the next emitted event.
    next_ack: u64,
}

/// Most events kept for [`SioConn::next_event`] while data is read.
const HELD_EVENTS: usize = 256;

/// A named event or an acknowledgement, with its first argument.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Named(String, serde_json::Value),
    Ack(serde_json::Value),
}

/// What a read loop hands back to its caller.
enum Seen {
    /// `vnc:data` bytes and completed events (either may be 0 after control frames).
    Data(RecvCount),
    /// The server ended the session or the connection.
    Closed,
}

impl SioConn {
    /// Upgrades `stream`, waits for Engine.IO open, joins namespace `/vnc` with the
    /// token and waits for the admission. `read_buffer` sizes the read buffer.
    pub async fn connect(
        target: &SioTarget,
        mut stream: Stream,
        headers: &[(HeaderName, HeaderValue)],
        read_buffer: usize,
    ) -> Result<SioConn> {
        let first = lean_ws::upgrade(&mut stream, &target.host, &target.path, None, headers)
            .await
            .context("socket.io websocket upgrade")?;
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ u64::from(stream.local_addr()?.port()) << 48;
        let cap = read_buffer.max(first.len()).max(sio_wire::MAX_HEADER * 2);
        let mut buf = vec![0; cap];
        buf[..first.len()].copy_from_slice(&first);
        let mut conn = SioConn {
            stream,
            reader: Reader::default(),
            buf,
            start: 0,
            end: first.len(),
            out: Vec::new(),
            wbuf: Vec::new(),
            masks: Masks::new(seed),
            events: VecDeque::new(),
            next_ack: 0,
        };
        conn.expect(|i| matches!(i, Item::Open), "Engine.IO open")
            .await?;
        let connect = sio_wire::connect_packet(target.token.as_deref());
        conn.wbuf.clear();
        sio_wire::push_text(&mut conn.wbuf, &connect, &mut conn.masks);
        conn.stream.send_all(&conn.wbuf).await?;
        conn.expect(|i| matches!(i, Item::Connected), "namespace /vnc connect")
            .await?;
        Ok(conn)
    }

    /// Reads until an item `want` accepts; a connect error, the end or data before it
    /// fails.
    async fn expect(&mut self, want: fn(&Item<'_>) -> bool, what: &str) -> Result<()> {
        loop {
            let step = self
                .reader
                .next(&self.buf[self.start..self.end])
                .context("socket.io stream")?;
            if step.used == 0 && step.item.is_none() {
                if self.fill().await? == 0 {
                    bail!("connection closed while waiting for {what}");
                }
                continue;
            }
            self.start += step.used;
            match step.item {
                Some(ref i) if want(i) => return Ok(()),
                Some(Item::ConnectError(message)) => bail!("connect_error: {message}"),
                Some(Item::Ping) => self.queue_pong(),
                Some(Item::WsPing(p)) => {
                    sio_wire::push_ws_pong(&mut self.out, &p, &mut self.masks);
                }
                Some(other) => bail!("waiting for {what}, got {other:?}"),
                None => {}
            }
        }
    }

    /// Emits `name` with `body`, asking for an acknowledgement (see
    /// [`SioConn::next_event`]).
    pub async fn emit(&mut self, name: &str, body: &serde_json::Value) -> Result<()> {
        self.wbuf.clear();
        self.wbuf.append(&mut self.out);
        let packet = sio_wire::event_packet(self.next_ack, name, body);
        self.next_ack += 1;
        sio_wire::push_text(&mut self.wbuf, &packet, &mut self.masks);
        self.stream.send_all(&self.wbuf).await?;
        Ok(())
    }

    /// The next event other than `vnc:data` (whose bytes are dropped) or
    /// acknowledgement; the session's end fails it.
    pub async fn next_event(&mut self) -> Result<Event> {
        loop {
            if let Some(event) = self.events.pop_front() {
                return Ok(event);
            }
            if let Some(Seen::Closed) = self.drain(|_| Ok(()))? {
                bail!("the session ended");
            }
            if self.events.is_empty() && self.fill().await? == 0 {
                bail!("connection closed");
            }
            self.try_flush_out()?;
        }
    }

    /// Puts an event back in front of those kept for [`SioConn::next_event`].
    pub fn hold_first(&mut self, event: Event) {
        if self.events.len() == HELD_EVENTS {
            self.events.pop_back();
        }
        self.events.push_front(event);
    }

    /// Keeps an event for [`SioConn::next_event`], within [`HELD_EVENTS`].
    pub fn hold(&mut self, event: Event) {
        if self.events.len() == HELD_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }

    /// Sends `data` as `vnc:data` events (split at 64 KiB), in one write together with
    /// any pending answers to pings.
    pub async fn send(&mut self, data: &[u8]) -> Result<()> {
        self.wbuf.clear();
        self.wbuf.append(&mut self.out);
        sio_wire::push_data(&mut self.wbuf, data, &mut self.masks);
        self.stream.send_all(&self.wbuf).await?;
        Ok(())
    }

    /// Fills `buf` with the next `vnc:data` bytes; more than asked for is an error.
    pub async fn recv_exact(&mut self, dst: &mut [u8]) -> Result<()> {
        let mut filled = 0;
        while filled < dst.len() {
            let seen = self.drain(|bytes| {
                let end = filled + bytes.len();
                let Some(slot) = dst.get_mut(filled..end) else {
                    return Err(anyhow!("received {end} bytes, expected {}", dst.len()));
                };
                slot.copy_from_slice(bytes);
                filled = end;
                Ok(())
            })?;
            match seen {
                Some(Seen::Closed) => bail!(
                    "socket.io session ended after {filled} of {} bytes",
                    dst.len()
                ),
                Some(Seen::Data(_)) => {}
                None => {
                    self.flush_out().await?;
                    if self.fill().await? == 0 {
                        bail!("connection closed after {filled} of {} bytes", dst.len());
                    }
                }
            }
        }
        Ok(())
    }

    /// Counts what arrives: returns after one read's worth of frames; 0 bytes and 0
    /// messages means the session ended. Cancel-safe (nothing is consumed across the
    /// one await, a read into the free part of the buffer).
    pub async fn recv_count(&mut self) -> Result<RecvCount> {
        self.recv_with(|_| Ok(())).await
    }

    /// [`recv_count`](Self::recv_count), handing every `vnc:data` byte to `sink` as it is
    /// consumed. Cancel-safe as well: what was consumed went to `sink` before the await.
    pub async fn recv_with(
        &mut self,
        mut sink: impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<RecvCount> {
        loop {
            match self.drain(&mut sink)? {
                Some(Seen::Data(count)) => return Ok(count),
                Some(Seen::Closed) => {
                    return Ok(RecvCount {
                        bytes: 0,
                        messages: 0,
                    });
                }
                None => {
                    self.try_flush_out()?;
                    if self.fill().await? == 0 {
                        return Ok(RecvCount {
                            bytes: 0,
                            messages: 0,
                        });
                    }
                }
            }
        }
    }

    /// Reads until `vnc:data` bytes arrive and returns a copy of them (the RFB
    /// handshake); empty once the session ended.
    pub async fn recv_chunk(&mut self) -> Result<Vec<u8>> {
        let mut data = Vec::new();
        loop {
            let seen = self.drain(|bytes| {
                data.extend_from_slice(bytes);
                Ok(())
            })?;
            match seen {
                Some(Seen::Closed) => return Ok(data),
                Some(Seen::Data(_)) if !data.is_empty() => return Ok(data),
                Some(Seen::Data(_)) => {}
                None => {
                    self.flush_out().await?;
                    if self.fill().await? == 0 {
                        return Ok(data);
                    }
                }
            }
        }
    }

    /// Consumes every complete item in the buffer, handing `vnc:data` bytes to `sink`.
    /// `None` when the buffer held nothing but partial frames.
    fn drain(&mut self, mut sink: impl FnMut(&[u8]) -> Result<()>) -> Result<Option<Seen>> {
        let mut count = RecvCount {
            bytes: 0,
            messages: 0,
        };
        let mut any = false;
        loop {
            let step = self
                .reader
                .next(&self.buf[self.start..self.end])
                .context("socket.io stream")?;
            if step.used == 0 && step.item.is_none() {
                break;
            }
            self.start += step.used;
            match step.item {
                None => {}
                Some(Item::Data { bytes, last }) => {
                    any = true;
                    count.bytes += bytes.len();
                    count.messages += usize::from(last);
                    sink(bytes)?;
                }
                Some(Item::Ping) => {
                    any = true;
                    self.queue_pong();
                }
                Some(Item::WsPing(p)) => {
                    any = true;
                    sio_wire::push_ws_pong(&mut self.out, &p, &mut self.masks);
                }
                Some(Item::End { code, reason }) => {
                    if code != NORMAL_CLOSURE {
                        bail!("vnc:end {code} {reason}");
                    }
                    return Ok(Some(Seen::Closed));
                }
                Some(Item::Disconnected | Item::Closed(_)) => return Ok(Some(Seen::Closed)),
                Some(Item::ConnectError(m)) => bail!("connect_error: {m}"),
                Some(Item::Open | Item::Connected) => {}
                Some(Item::Event { name, body }) => self.hold(Event::Named(name, body)),
                Some(Item::Ack(body)) => self.hold(Event::Ack(body)),
            }
        }
        if !any {
            return Ok(None);
        }
        if count.bytes == 0 && count.messages == 0 {
            // Only pings: one empty message, so a counting caller keeps reading.
            count.messages = 1;
        }
        Ok(Some(Seen::Data(count)))
    }

    /// Reads once into the free end of the buffer, first moving the unconsumed tail
    /// (a partial frame, at most a text frame) to the front, or growing the buffer if
    /// a text frame doesn't fit. Returns the bytes read; 0 is EOF.
    async fn fill(&mut self) -> Result<usize> {
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        } else if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                (self.start, self.end) = (0, self.end - self.start);
            } else {
                let max = sio_wire::MAX_TEXT_FRAME + sio_wire::MAX_HEADER;
                if self.buf.len() >= max {
                    bail!("a frame does not fit the read buffer");
                }
                self.buf.resize((self.buf.len() * 2).min(max), 0);
            }
        }
        let n = self
            .stream
            .read(&mut self.buf[self.end..])
            .await
            .context("socket.io read")?;
        self.end += n;
        Ok(n)
    }

    fn queue_pong(&mut self) {
        sio_wire::push_text(&mut self.out, sio_wire::EIO_PONG, &mut self.masks);
    }

    async fn flush_out(&mut self) -> Result<()> {
        if !self.out.is_empty() {
            self.stream.send_all(&self.out).await?;
            self.out.clear();
        }
        Ok(())
    }

    /// Writes pending answers without waiting (they are a few bytes, and the socket's
    /// send buffer is empty while only reading); what doesn't fit waits for the next
    /// call or send.
    fn try_flush_out(&mut self) -> Result<()> {
        while !self.out.is_empty() {
            match self.stream.try_write(&self.out) {
                Ok(n) => {
                    self.out.drain(..n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(anyhow::Error::new(e).context("socket.io write")),
            }
        }
        Ok(())
    }

    /// Leaves the namespace and closes the WebSocket, then the socket.
    pub async fn close(mut self) {
        self.wbuf.clear();
        self.wbuf.append(&mut self.out);
        sio_wire::push_text(&mut self.wbuf, sio_wire::DISCONNECT, &mut self.masks);
        sio_wire::push_ws_close(&mut self.wbuf, NORMAL_CLOSURE, &mut self.masks);
        if self.stream.write_all(&self.wbuf).await.is_ok() {
            let _ = self.stream.shutdown().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::{self, TlsTarget, test_pki};
    use tokio::io::{AsyncRead, AsyncWrite};
    use tokio::net::{TcpListener, TcpStream};
    use tokio_rustls::TlsAcceptor;

    /// Reads one masked client frame from `s`: (opcode, unmasked payload).
    async fn read_client_frame<S: AsyncRead + Unpin>(s: &mut S) -> (u8, Vec<u8>) {
        let mut h = [0u8; 2];
        s.read_exact(&mut h).await.unwrap();
        let len = match h[1] & 0x7F {
            126 => {
                let mut b = [0u8; 2];
                s.read_exact(&mut b).await.unwrap();
                u16::from_be_bytes(b) as usize
            }
            127 => {
                let mut b = [0u8; 8];
                s.read_exact(&mut b).await.unwrap();
                u64::from_be_bytes(b) as usize
            }
            n => n as usize,
        };
        let mut mask = [0u8; 4];
        s.read_exact(&mut mask).await.unwrap();
        let mut p = vec![0u8; len];
        s.read_exact(&mut p).await.unwrap();
        for (i, b) in p.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
        (h[0] & 0x0F, p)
    }

    fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0x80 | opcode];
        if payload.len() < 126 {
            f.push(payload.len() as u8);
        } else {
            f.push(126);
            f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        }
        f.extend_from_slice(payload);
        f
    }

    /// Reads a WebSocket upgrade request; returns its head and the accept key.
    async fn read_upgrade<S: AsyncRead + Unpin>(s: &mut S) -> (String, String) {
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            s.read_exact(&mut b).await.unwrap();
            head.push(b[0]);
        }
        let head = String::from_utf8(head).unwrap();
        let key = head
            .lines()
            .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
            .unwrap();
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        (head, accept)
    }
    /// A socket.io server just big enough for the client (over TLS with `tls`): answers
    /// the upgrade, sends open, checks the connect packet's token, pings, then echoes
    /// one vnc:data event split over two events and ends with vnc:end.
    async fn fake_server(
        tls: Option<TlsAcceptor>,
    ) -> (std::net::SocketAddr, tokio::task::JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            match tls {
                None => fake_session(s).await,
                Some(acceptor) => fake_session(acceptor.accept(s).await.unwrap()).await,
            }
        });
        (addr, task)
    }

    /// The server side of [`fake_server`]'s one session; what the client sent.
    async fn fake_session<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) -> Vec<String> {
        let (head, accept) = read_upgrade(&mut s).await;
        let mut seen = vec![head.lines().next().unwrap().to_owned()];
        let mut out = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
        )
        .into_bytes();
        out.extend(frame(
            1,
            br#"0{"sid":"e","upgrades":[],"pingInterval":25000}"#,
        ));
        s.write_all(&out).await.unwrap();
        let (_, connect) = read_client_frame(&mut s).await;
        seen.push(String::from_utf8(connect).unwrap());
        // A ping before the admission: the client answers it with its first send.
        let mut out = frame(1, b"2");
        out.extend(frame(1, br#"40/vnc,{"sid":"s"}"#));
        s.write_all(&out).await.unwrap();
        for _ in 0..3 {
            let (op, p) = read_client_frame(&mut s).await;
            seen.push(format!("{op}:{}", String::from_utf8_lossy(&p)));
        }
        let mut out = Vec::new();
        for half in [&b"hello "[..], b"world"] {
            out.extend(frame(1, sio_wire::DATA_HEADER.as_bytes()));
            out.extend(frame(2, half));
        }
        out.extend(frame(
            1,
            br#"42/vnc,["vnc:end",{"code":4001,"reason":"idle"}]"#,
        ));
        s.write_all(&out).await.unwrap();
        s.flush().await.unwrap();
        seen
    }

    #[tokio::test]
    async fn connects_answers_pings_and_echoes_through_a_server() {
        echo_session(false).await;
    }

    #[tokio::test]
    async fn connects_answers_pings_and_echoes_over_tls() {
        echo_session(true).await;
    }

    /// One session against [`fake_server`], over TLS or not: what the client sends and
    /// receives, and what the server saw.
    async fn echo_session(tls: bool) {
        let pki = test_pki::new(&["127.0.0.1"]);
        let (addr, server) = fake_server(tls.then(|| pki.acceptor.clone())).await;
        let target = SioTarget {
            host: addr.to_string(),
            path: "/socket.io/?EIO=4&transport=websocket&containerId=c1".into(),
            token: Some("tok".into()),
        };
        let tls_target =
            tls.then(|| TlsTarget::new(&stream::connector(&pki.ca).unwrap(), "127.0.0.1").unwrap());
        let stream = Stream::connect(addr, tls_target.as_ref()).await.unwrap();
        assert_eq!(matches!(stream, Stream::Tls(_)), tls);
        let mut conn = SioConn::connect(&target, stream, &[], 64).await.unwrap();
        conn.send(b"hello world").await.unwrap();
        let mut got = [0u8; 11];
        conn.recv_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello world");
        let err = conn
            .recv_count()
            .await
            .err()
            .expect("vnc:end 4001 is an error");
        assert!(format!("{err:#}").contains("vnc:end 4001 idle"), "{err:#}");
        let seen = server.await.unwrap();
        assert_eq!(
            seen,
            vec![
                "GET /socket.io/?EIO=4&transport=websocket&containerId=c1 HTTP/1.1".to_owned(),
                r#"40/vnc,{"token":"tok"}"#.to_owned(),
                "1:3".to_owned(),
                format!("1:{}", sio_wire::DATA_HEADER),
                "2:hello world".to_owned(),
            ]
        );
    }

    #[tokio::test]
    async fn a_refused_connect_reports_the_servers_message() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let (_, accept) = read_upgrade(&mut s).await;
            let mut out = format!(
                "HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
            )
            .into_bytes();
            out.extend(frame(1, br#"0{"sid":"e"}"#));
            s.write_all(&out).await.unwrap();
            let _ = read_client_frame(&mut s).await;
            s.write_all(&frame(1, br#"44/vnc,{"message":"token revoked"}"#))
                .await
                .unwrap();
            let _ = s.read(&mut [0u8; 64]).await;
        });
        let target = SioTarget {
            host: addr.to_string(),
            path: "/socket.io/?EIO=4&transport=websocket&containerId=c1".into(),
            token: Some("tok".into()),
        };
        let stream = Stream::Tcp(TcpStream::connect(addr).await.unwrap());
        let Err(err) = SioConn::connect(&target, stream, &[], 4096).await else {
            panic!("a refused connect must fail");
        };
        assert!(
            format!("{err:#}").contains("connect_error: token revoked"),
            "{err:#}"
        );
    }
}
