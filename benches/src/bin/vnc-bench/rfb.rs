//! Just enough RFB 3.8 for the stand-ins and the client to pass through an RFB-aware
//! relay: the handshake with security type None on both sides, and pings framed as
//! RFB client messages (ClientCutText), since the relay frames every browser byte as
//! RFB after the handshake. For `mixed`: key strokes (KeyEvents) and the `desktop`
//! stand-in's in-band echo of them (a ServerCutText), read on each side by a small
//! parser of the other side's messages. Transparent paths (proxy, websockify, socket.io gateways)
//! carry the same bytes unchanged, so every target sees the same traffic.

use anyhow::{Result, bail, ensure};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use vnc_shared::rfb::{VNC_AUTH_CHALLENGE_LEN, vnc_auth_response};

use crate::client::Conn;

pub const VERSION: &[u8; 12] = b"RFB 003.008\n";
const SECURITY_NONE: u8 = 1;
const SECURITY_VNC_AUTH: u8 = 2;
/// ClientCutText: type 6, 3 bytes padding, u32 length, then the text.
const CLIENT_CUT_TEXT: u8 = 6;
pub const CUT_TEXT_HEADER: usize = 8;
/// Name the stand-in servers announce in ServerInit.
const NAME: &[u8] = b"vnc-bench";
/// Bound on the ServerInit name a client accepts.
const MAX_NAME: usize = 4096;

/// ServerInit of the stand-ins: 1024×768, 32 bpp true colour, then the name.
fn server_init() -> Vec<u8> {
    let mut m = Vec::with_capacity(24 + NAME.len());
    m.extend_from_slice(&1024u16.to_be_bytes());
    m.extend_from_slice(&768u16.to_be_bytes());
    // bpp, depth, big-endian, true-colour, r/g/b max, r/g/b shift, 3 padding.
    m.extend_from_slice(&[32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0]);
    m.extend_from_slice(&(NAME.len() as u32).to_be_bytes());
    m.extend_from_slice(NAME);
    m
}

/// The server side on a stand-in's socket: version, security None (or VNC
/// Authentication when it has a `password`), result, ServerInit.
pub async fn serve(sock: &mut TcpStream, password: Option<&[u8]>) -> Result<()> {
    sock.write_all(VERSION).await?;
    let mut version = [0u8; 12];
    sock.read_exact(&mut version).await?;
    ensure!(version.starts_with(b"RFB 003."), "not an RFB client");
    let offered = if password.is_some() {
        SECURITY_VNC_AUTH
    } else {
        SECURITY_NONE
    };
    sock.write_all(&[1, offered]).await?;
    let mut choice = [0u8; 1];
    sock.read_exact(&mut choice).await?;
    ensure!(choice[0] == offered, "client chose security {}", choice[0]);
    let accepted = match password {
        None => true,
        Some(password) => {
            let challenge: [u8; VNC_AUTH_CHALLENGE_LEN] = rand::random();
            sock.write_all(&challenge).await?;
            let mut response = [0u8; VNC_AUTH_CHALLENGE_LEN];
            sock.read_exact(&mut response).await?;
            response == vnc_auth_response(password, &challenge)
        }
    };
    sock.write_all(&u32::from(!accepted).to_be_bytes()).await?;
    ensure!(accepted, "wrong VNC password");
    let mut client_init = [0u8; 1];
    sock.read_exact(&mut client_init).await?;
    sock.write_all(&server_init()).await?;
    Ok(())
}

/// Where the client is in the handshake; [`ClientHandshake::feed`] takes what the
/// server sent so far and says what to answer.
#[derive(Debug, Default)]
pub struct ClientHandshake {
    got: Vec<u8>,
    /// Bytes of `got` already handled.
    at: usize,
    state: State,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    #[default]
    Version,
    Security,
    Result,
    ServerInit,
    Done,
}

impl ClientHandshake {
    /// Adds server bytes; returns the bytes to send now (possibly empty). After
    /// [`is_done`](Self::is_done), later bytes (a source's stream) are ignored.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<u8>> {
        if self.state != State::Done {
            self.got.extend_from_slice(bytes);
        }
        let mut out = Vec::new();
        loop {
            let rest = &self.got[self.at..];
            let used = match self.state {
                State::Version if rest.len() >= 12 => {
                    ensure!(rest.starts_with(b"RFB 003."), "server is not RFB");
                    out.extend_from_slice(VERSION);
                    self.state = State::Security;
                    12
                }
                State::Security if !rest.is_empty() => {
                    let n = usize::from(rest[0]);
                    if n == 0 {
                        bail!("server refused the connection during the RFB handshake");
                    }
                    if rest.len() < 1 + n {
                        break;
                    }
                    ensure!(
                        rest[1..=n].contains(&SECURITY_NONE),
                        "server does not offer security None: {:?}",
                        &rest[1..=n]
                    );
                    out.push(SECURITY_NONE);
                    self.state = State::Result;
                    1 + n
                }
                State::Result if rest.len() >= 4 => {
                    ensure!(rest[..4] == [0, 0, 0, 0], "RFB security result failed");
                    // ClientInit: shared.
                    out.push(1);
                    self.state = State::ServerInit;
                    4
                }
                State::ServerInit if rest.len() >= 24 => {
                    let name = u32::from_be_bytes([rest[20], rest[21], rest[22], rest[23]]);
                    let name = usize::try_from(name).unwrap_or(usize::MAX);
                    ensure!(name <= MAX_NAME, "ServerInit name of {name} bytes");
                    if rest.len() < 24 + name {
                        break;
                    }
                    self.state = State::Done;
                    self.got = Vec::new();
                    self.at = 0;
                    break;
                }
                _ => break,
            };
            self.at += used;
        }
        Ok(out)
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }
}

/// Runs the client handshake over an open connection. What follows ServerInit in the
/// same read (a source's first bytes) is dropped; an echo sends nothing there.
pub async fn handshake(conn: &mut Conn) -> Result<()> {
    let mut hs = ClientHandshake::default();
    let mut scratch = vec![0u8; 16 * 1024];
    while !hs.is_done() {
        let got = conn.recv_chunk(&mut scratch).await?;
        ensure!(!got.is_empty(), "closed during the RFB handshake");
        let answer = hs.feed(&got)?;
        if !answer.is_empty() {
            conn.send(&answer).await?;
        }
    }
    Ok(())
}

/// FramebufferUpdate header (type, padding, rectangle count) plus one rectangle header.
const UPDATE_OVERHEAD: usize = 4 + 12;
/// Widest Raw rectangle the source writes, in pixels (one row each).
const MAX_ROW: usize = 16384;
/// Bell: a server message of one byte.
const BELL: u8 = 2;

/// `len` bytes of whole server messages for the `source` stand-in: FramebufferUpdates of
/// one 32 bpp Raw rectangle (one row) each, then Bells for a remainder too short for an
/// update. Written back to back they stay a valid RFB stream, so a relay that follows
/// the server's messages frames them as it would a real desktop's.
pub fn updates(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    while len - out.len() >= UPDATE_OVERHEAD + 4 {
        let width = ((len - out.len() - UPDATE_OVERHEAD) / 4).min(MAX_ROW);
        out.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0]);
        out.extend_from_slice(&(width as u16).to_be_bytes());
        out.extend_from_slice(&[0, 1, 0, 0, 0, 0]);
        out.extend((0..width * 4).map(|i| (i % 253) as u8));
    }
    out.resize(len, BELL);
    out
}

/// Frames `payload[CUT_TEXT_HEADER..]` as a ClientCutText message in place.
pub fn frame_cut_text(payload: &mut [u8]) {
    let text = (payload.len() - CUT_TEXT_HEADER) as u32;
    payload[..4].copy_from_slice(&[CLIENT_CUT_TEXT, 0, 0, 0]);
    payload[4..CUT_TEXT_HEADER].copy_from_slice(&text.to_be_bytes());
}

/// KeyEvent: type 4, down flag, 2 padding, u32 keysym.
const KEY_EVENT: u8 = 4;
/// ServerCutText: type 3, 3 bytes padding, u32 length, then the text.
const SERVER_CUT_TEXT: u8 = 3;
/// FramebufferUpdateRequest: type 3 on the client side, 10 bytes.
const UPDATE_REQUEST: u8 = 3;

/// One key stroke of a `mixed` session: a KeyEvent press and release of keysym `seq`
/// (16 bytes, the input a typing user sends). The `desktop` stand-in answers the release.
pub fn key_stroke(seq: u32) -> [u8; 16] {
    let k = seq.to_be_bytes();
    [
        KEY_EVENT, 1, 0, 0, k[0], k[1], k[2], k[3], KEY_EVENT, 0, 0, 0, k[0], k[1], k[2], k[3],
    ]
}

/// A non-incremental FramebufferUpdateRequest for the whole 1024×768 screen: what a
/// viewer sends first, and what starts the `desktop` stand-in's stream.
pub fn update_request() -> [u8; 10] {
    [UPDATE_REQUEST, 0, 0, 0, 0, 0, 4, 0, 3, 0]
}

/// The `desktop` stand-in's answer to a key release: a ServerCutText whose 4-byte text
/// is the keysym, in-band between the FramebufferUpdates.
pub fn key_echo(keysym: u32) -> [u8; 12] {
    let k = keysym.to_be_bytes();
    [SERVER_CUT_TEXT, 0, 0, 0, 0, 0, 0, 4, k[0], k[1], k[2], k[3]]
}

/// A client message the `desktop` stand-in cares about.
#[derive(Debug, PartialEq, Eq)]
pub enum ClientMessage {
    UpdateRequest,
    /// KeyEvent: down flag and keysym.
    Key {
        down: bool,
        keysym: u32,
    },
    /// Any other well-formed client message (skipped).
    Other,
}

/// Longest ClientCutText the stand-in skips; a bench client sends none.
const MAX_CLIENT_CUT_TEXT: u64 = 1 << 20;

/// Reads the next client message after the handshake; `None` at EOF.
pub async fn read_client_message<R: AsyncRead + Unpin>(
    rd: &mut R,
) -> Result<Option<ClientMessage>> {
    let mut kind = [0u8; 1];
    if rd.read(&mut kind).await? == 0 {
        return Ok(None);
    }
    let mut head = [0u8; 19];
    let msg = match kind[0] {
        0 => {
            rd.read_exact(&mut head[..19]).await?;
            ClientMessage::Other
        }
        2 => {
            rd.read_exact(&mut head[..3]).await?;
            let n = u16::from_be_bytes([head[1], head[2]]);
            skip(rd, 4 * u64::from(n)).await?;
            ClientMessage::Other
        }
        UPDATE_REQUEST => {
            rd.read_exact(&mut head[..9]).await?;
            ClientMessage::UpdateRequest
        }
        KEY_EVENT => {
            rd.read_exact(&mut head[..7]).await?;
            ClientMessage::Key {
                down: head[0] != 0,
                keysym: u32::from_be_bytes([head[3], head[4], head[5], head[6]]),
            }
        }
        5 => {
            rd.read_exact(&mut head[..5]).await?;
            ClientMessage::Other
        }
        CLIENT_CUT_TEXT => {
            rd.read_exact(&mut head[..7]).await?;
            let len = u32::from_be_bytes([head[3], head[4], head[5], head[6]]);
            ensure!(
                u64::from(len) <= MAX_CLIENT_CUT_TEXT,
                "ClientCutText of {len} bytes"
            );
            skip(rd, u64::from(len)).await?;
            ClientMessage::Other
        }
        t => bail!("unexpected client message type {t}"),
    };
    Ok(Some(msg))
}

async fn skip<R: AsyncRead + Unpin>(rd: &mut R, n: u64) -> Result<()> {
    let copied = tokio::io::copy(&mut rd.take(n), &mut tokio::io::sink()).await?;
    ensure!(copied == n, "closed inside a client message");
    Ok(())
}

/// Longest ServerCutText a [`ServerStream`] collects (the stand-in's are 4 bytes).
const MAX_SERVER_CUT_TEXT: usize = 64;

/// Follows the server→client stream of the `desktop` stand-in after the handshake
/// (FramebufferUpdates of 32 bpp Raw rectangles, Bells, ServerCutTexts) in whatever
/// pieces it arrives, handing each ServerCutText's text to the caller. Pixel bytes are
/// skipped, never buffered.
#[derive(Debug, Default)]
pub struct ServerStream {
    state: Part,
    /// Header bytes gathered so far and how many the current part needs.
    head: [u8; 12],
    have: usize,
    /// Rectangles left in the current update.
    rects: u16,
    /// Pixel bytes left to skip, or text bytes left to collect.
    left: usize,
    text: Vec<u8>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Part {
    #[default]
    Type,
    /// Padding and rectangle count of a FramebufferUpdate (3 bytes).
    UpdateHead,
    /// Position, size and encoding of a rectangle (12 bytes).
    RectHead,
    Pixels,
    /// Padding and length of a ServerCutText (7 bytes).
    CutHead,
    CutText,
}

impl ServerStream {
    pub fn feed(&mut self, mut data: &[u8], mut on_text: impl FnMut(&[u8])) -> Result<()> {
        while !data.is_empty() {
            let need = match self.state {
                Part::Type => 1,
                Part::UpdateHead => 3,
                Part::RectHead => 12,
                Part::CutHead => 7,
                Part::Pixels | Part::CutText => {
                    let n = self.left.min(data.len());
                    if self.state == Part::CutText {
                        self.text.extend_from_slice(&data[..n]);
                    }
                    data = &data[n..];
                    self.left -= n;
                    if self.left == 0 {
                        if self.state == Part::CutText {
                            on_text(&self.text);
                            self.text.clear();
                        }
                        self.next_rect();
                    }
                    continue;
                }
            };
            let n = (need - self.have).min(data.len());
            self.head[self.have..self.have + n].copy_from_slice(&data[..n]);
            self.have += n;
            data = &data[n..];
            if self.have < need {
                break;
            }
            self.have = 0;
            let h = self.head;
            match self.state {
                Part::Type => match h[0] {
                    0 => self.state = Part::UpdateHead,
                    BELL => {}
                    SERVER_CUT_TEXT => self.state = Part::CutHead,
                    t => bail!("unexpected server message type {t}"),
                },
                Part::UpdateHead => {
                    self.rects = u16::from_be_bytes([h[1], h[2]]);
                    self.next_rect();
                }
                Part::RectHead => {
                    let encoding = i32::from_be_bytes([h[8], h[9], h[10], h[11]]);
                    ensure!(encoding == 0, "rectangle encoding {encoding}, expected Raw");
                    let (w, hgt) = (
                        u16::from_be_bytes([h[4], h[5]]),
                        u16::from_be_bytes([h[6], h[7]]),
                    );
                    self.left = usize::from(w) * usize::from(hgt) * 4;
                    self.state = Part::Pixels;
                    if self.left == 0 {
                        self.next_rect();
                    }
                }
                Part::CutHead => {
                    let len = u32::from_be_bytes([h[3], h[4], h[5], h[6]]) as usize;
                    ensure!(len <= MAX_SERVER_CUT_TEXT, "ServerCutText of {len} bytes");
                    self.left = len;
                    self.state = Part::CutText;
                    if len == 0 {
                        on_text(&[]);
                        self.state = Part::Type;
                    }
                }
                Part::Pixels | Part::CutText => unreachable!("handled above"),
            }
        }
        Ok(())
    }

    /// After a rectangle (or an update's header, or a text): the next rectangle of the
    /// update, or the next message.
    fn next_rect(&mut self) {
        if self.state != Part::CutText && self.rects > 0 {
            self.rects -= 1;
            self.state = Part::RectHead;
        } else {
            self.state = Part::Type;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_stream_finds_the_echoes_whatever_the_pieces() {
        let mut stream = updates(40_000);
        stream.extend_from_slice(&key_echo(7));
        stream.extend_from_slice(&updates(1000));
        stream.extend_from_slice(&key_echo(0x0102_0304));
        stream.extend_from_slice(&updates(21));
        for piece in [1, 3, 11, 4096, stream.len()] {
            let mut s = ServerStream::default();
            let mut got = Vec::new();
            for chunk in stream.chunks(piece) {
                s.feed(chunk, |t| got.push(t.to_vec())).unwrap();
            }
            assert_eq!(
                got,
                vec![vec![0, 0, 0, 7], vec![1, 2, 3, 4]],
                "piece {piece}"
            );
            assert_eq!(s.state, Part::Type);
        }
        let mut s = ServerStream::default();
        assert!(s.feed(&[9], |_| {}).is_err(), "unknown message type");
    }

    #[tokio::test]
    async fn client_messages_are_read_whole() {
        let mut input = Vec::new();
        input.extend_from_slice(&update_request());
        input.extend_from_slice(&key_stroke(42));
        let mut cut = [0u8; 11];
        frame_cut_text(&mut cut);
        input.extend_from_slice(&cut);
        input.extend_from_slice(&[2, 0, 0, 1, 0, 0, 0, 0]);
        let mut rd = &input[..];
        let mut got = Vec::new();
        while let Some(m) = read_client_message(&mut rd).await.unwrap() {
            got.push(m);
        }
        assert_eq!(
            got,
            vec![
                ClientMessage::UpdateRequest,
                ClientMessage::Key {
                    down: true,
                    keysym: 42
                },
                ClientMessage::Key {
                    down: false,
                    keysym: 42
                },
                ClientMessage::Other,
                ClientMessage::Other,
            ]
        );
    }

    #[test]
    fn updates_fill_the_length_with_whole_messages() {
        for len in [1, 19, 20, 21, 23, 65536, 65537, 200_000] {
            let stream = updates(len);
            assert_eq!(stream.len(), len);
            let mut at = 0;
            while at < len {
                match stream[at] {
                    0 => {
                        assert_eq!(&stream[at + 1..at + 4], &[0, 0, 1], "{len} at {at}");
                        let width = u16::from_be_bytes([stream[at + 8], stream[at + 9]]);
                        assert_eq!(&stream[at + 10..at + 16], &[0, 1, 0, 0, 0, 0]);
                        at += UPDATE_OVERHEAD + usize::from(width) * 4;
                    }
                    BELL => at += 1,
                    t => panic!("{len}: message type {t} at {at}"),
                }
            }
            assert_eq!(at, len);
        }
    }

    #[test]
    fn client_handshake_whatever_the_pieces() {
        let mut server = Vec::new();
        server.extend_from_slice(VERSION);
        server.extend_from_slice(&[2, 2, SECURITY_NONE]);
        server.extend_from_slice(&[0, 0, 0, 0]);
        server.extend_from_slice(&server_init());
        for piece in [1, 2, 5, server.len()] {
            let mut hs = ClientHandshake::default();
            let mut sent = Vec::new();
            for chunk in server.chunks(piece) {
                sent.extend(hs.feed(chunk).unwrap());
            }
            assert!(hs.is_done(), "piece {piece}");
            assert_eq!(sent, [&VERSION[..], &[SECURITY_NONE, 1]].concat());
            assert!(hs.feed(b"stream bytes").unwrap().is_empty());
        }
    }

    #[test]
    fn client_handshake_refusals() {
        let mut hs = ClientHandshake::default();
        assert!(hs.feed(b"HTTP/1.1 400").is_err());
        let mut hs = ClientHandshake::default();
        let mut server = VERSION.to_vec();
        server.extend_from_slice(&[1, 2]);
        assert!(hs.feed(&server).is_err(), "VNC auth only");
        let mut hs = ClientHandshake::default();
        let mut server = VERSION.to_vec();
        server.extend_from_slice(&[1, 1, 0, 0, 0, 1]);
        assert!(hs.feed(&server).is_err(), "failed result");
    }

    #[test]
    fn cut_text_framing() {
        let mut p = [0xAAu8; 16];
        frame_cut_text(&mut p);
        assert_eq!(&p[..8], &[6, 0, 0, 0, 0, 0, 0, 8]);
        assert_eq!(&p[8..], &[0xAA; 8]);
    }
}
