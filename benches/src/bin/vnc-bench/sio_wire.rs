//! The socket.io wire as the bench client speaks it, without I/O: server WebSocket
//! frames read in place by a streaming [`Reader`], the Engine.IO v4 / socket.io v5
//! packets inside them, and the few client frames the bench sends (masked, as RFC 6455
//! requires of a client).
//!
//! Only what namespace `/vnc` uses is understood, the packets of
//! `relay/assets/vnc-socketio.js`: Engine.IO open `0{..}`, ping `2` (answered `3`),
//! close `1`; socket.io connect `40/vnc,{..}`, connect error `44/vnc,{"message":..}`,
//! `451-/vnc,["vnc:data",{"_placeholder":true,"num":0}]` followed by one binary frame
//! with the bytes, `42/vnc,["vnc:end",{"code":..,"reason":..}]`, disconnect `41/vnc,`.
//! Anything else on the namespace (other events, acks) is skipped, binary attachments
//! included.
//!
//! `vnc:data` attachments are streamed: their bytes are handed out as they sit in the
//! caller's read buffer, never buffered or copied here, so reading a 64 KiB event costs
//! what reading 64 KiB of a raw WebSocket does. Text frames are small and are only
//! parsed once complete.

use std::fmt::Write as _;

/// The namespace the relay serves.
pub const NAMESPACE: &str = "/vnc";
/// Largest `vnc:data` payload per event (the relay refuses bigger ones).
pub const MAX_DATA_EVENT: usize = 64 * 1024;
/// Largest text frame accepted; the packets above are a few hundred bytes at most.
pub const MAX_TEXT_FRAME: usize = 64 * 1024;
/// Largest server frame header: 2 bytes, 8 of extended length, no mask.
pub const MAX_HEADER: usize = 10;
/// The text frame announcing one `vnc:data` binary attachment.
pub const DATA_HEADER: &str = r#"451-/vnc,["vnc:data",{"_placeholder":true,"num":0}]"#;
/// The client's answer to an Engine.IO ping.
pub const EIO_PONG: &str = "3";
/// The client leaving the namespace.
pub const DISCONNECT: &str = "41/vnc,";

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("masked frame from the server")]
    Masked,
    #[error("reserved bits set in a server frame")]
    Reserved,
    #[error("fragmented server message (opcode {0:#x})")]
    Fragmented(u8),
    #[error("unknown opcode {0:#x}")]
    Opcode(u8),
    #[error("text frame of {0} bytes is over the limit")]
    TextTooLarge(u64),
    #[error("control frame of {0} bytes")]
    ControlTooLarge(u64),
    #[error("text frame is not UTF-8")]
    NotUtf8,
    #[error("binary frame without a binary event announcing it")]
    UnexpectedBinary,
    #[error("text frame while {0} binary attachment(s) are still due")]
    MissingAttachment(usize),
    #[error("bad packet {0:?}")]
    BadPacket(String),
}

/// What the next bytes of the server's stream hold, as far as the client cares.
#[derive(Debug, PartialEq, Eq)]
pub enum Item<'a> {
    /// A piece of a `vnc:data` attachment; `last` when it completes the event.
    Data { bytes: &'a [u8], last: bool },
    /// Engine.IO open.
    Open,
    /// Namespace `/vnc` admitted the client.
    Connected,
    /// Namespace `/vnc` refused the client, with the server's message.
    ConnectError(String),
    /// Engine.IO ping: answer [`EIO_PONG`].
    Ping,
    /// WebSocket ping: answer a pong frame with this payload.
    WsPing(Vec<u8>),
    /// `vnc:end {code, reason}`: the relay is about to disconnect.
    End { code: u16, reason: String },
    /// Another event of namespace `/vnc` (`vnc:self`, `vnc:control`, ...) and its
    /// first argument.
    Event {
        name: String,
        body: serde_json::Value,
    },
    /// The acknowledgement of an event the client emitted, its first argument.
    Ack(serde_json::Value),
    /// The server left the namespace (`41/vnc,`) or closed Engine.IO (`1`).
    Disconnected,
    /// WebSocket close frame, with its code if any.
    Closed(Option<u16>),
}

/// One step of [`Reader::next`]: bytes of the input used, and what they meant.
/// `used == 0 && item.is_none()` means more input is needed.
#[derive(Debug, PartialEq, Eq)]
pub struct Step<'a> {
    pub used: usize,
    pub item: Option<Item<'a>>,
}

/// Streaming reader of server frames.
#[derive(Debug, Default)]
pub struct Reader {
    /// Binary attachments still due for the last binary event.
    attachments_due: usize,
    /// Whether those attachments are `vnc:data` bytes (else they are skipped).
    attachments_are_data: bool,
    /// Payload bytes of the binary frame being streamed.
    binary_left: u64,
    /// Whether the binary frame being streamed is `vnc:data`.
    binary_is_data: bool,
}

impl Reader {
    /// Consumes at most one frame header, one piece of a binary payload, or one
    /// complete text/control frame from the front of `input`.
    pub fn next<'a>(&mut self, input: &'a [u8]) -> Result<Step<'a>, WireError> {
        if self.binary_left > 0 {
            let n = usize::try_from(self.binary_left)
                .unwrap_or(usize::MAX)
                .min(input.len());
            if n == 0 {
                return Ok(NEED_MORE);
            }
            self.binary_left -= n as u64;
            let item = self.binary_is_data.then_some(Item::Data {
                bytes: &input[..n],
                last: self.binary_left == 0,
            });
            return Ok(Step { used: n, item });
        }
        let Some(header) = parse_header(input)? else {
            return Ok(NEED_MORE);
        };
        match header.opcode {
            OP_BINARY => {
                if self.attachments_due == 0 {
                    return Err(WireError::UnexpectedBinary);
                }
                self.attachments_due -= 1;
                self.binary_left = header.len;
                self.binary_is_data = self.attachments_are_data;
                // An empty attachment completes at once; others stream on the next calls.
                let item = (header.len == 0 && self.binary_is_data).then_some(Item::Data {
                    bytes: &[],
                    last: true,
                });
                Ok(Step {
                    used: header.size,
                    item,
                })
            }
            OP_TEXT => {
                if header.len > MAX_TEXT_FRAME as u64 {
                    return Err(WireError::TextTooLarge(header.len));
                }
                let end = header.size + header.len as usize;
                let Some(payload) = input.get(header.size..end) else {
                    return Ok(NEED_MORE);
                };
                if self.attachments_due > 0 {
                    return Err(WireError::MissingAttachment(self.attachments_due));
                }
                let text = std::str::from_utf8(payload).map_err(|_| WireError::NotUtf8)?;
                let item = self.text(text)?;
                Ok(Step { used: end, item })
            }
            OP_CLOSE | OP_PING | OP_PONG => {
                if header.len > 125 {
                    return Err(WireError::ControlTooLarge(header.len));
                }
                let end = header.size + header.len as usize;
                let Some(payload) = input.get(header.size..end) else {
                    return Ok(NEED_MORE);
                };
                let item = match header.opcode {
                    OP_CLOSE => Some(Item::Closed(
                        payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]])),
                    )),
                    OP_PING => Some(Item::WsPing(payload.to_vec())),
                    _ => None,
                };
                Ok(Step { used: end, item })
            }
            op => Err(WireError::Opcode(op)),
        }
    }

    /// One Engine.IO packet in a text frame.
    fn text(&mut self, text: &str) -> Result<Option<Item<'static>>, WireError> {
        let bad = || WireError::BadPacket(truncate(text));
        let mut chars = text.chars();
        Ok(match chars.next().ok_or_else(bad)? {
            '0' => Some(Item::Open),
            '1' => Some(Item::Disconnected),
            '2' => Some(Item::Ping),
            '3' | '6' => None,
            '4' => self.socketio(chars.as_str()).map_err(|()| bad())?,
            _ => return Err(bad()),
        })
    }

    /// One socket.io packet (the text after Engine.IO's `4`).
    fn socketio(&mut self, packet: &str) -> Result<Option<Item<'static>>, ()> {
        let p = parse_socketio(packet)?;
        if p.attachments > 0 {
            // Binary events and binary acks of any namespace are followed by their
            // attachments; only vnc:data ones are handed out.
            self.attachments_due = p.attachments;
            self.attachments_are_data =
                p.kind == '5' && p.namespace == NAMESPACE && p.data.starts_with(r#"["vnc:data","#);
        }
        if p.namespace != NAMESPACE {
            return Ok(None);
        }
        Ok(match p.kind {
            '0' => Some(Item::Connected),
            '1' => Some(Item::Disconnected),
            '4' => {
                let message = serde_json::from_str::<serde_json::Value>(p.data)
                    .ok()
                    .and_then(|v| v.get("message")?.as_str().map(str::to_owned))
                    .unwrap_or_else(|| p.data.to_owned());
                Some(Item::ConnectError(message))
            }
            '2' => {
                let Ok(serde_json::Value::Array(mut args)) = serde_json::from_str(p.data) else {
                    return Err(());
                };
                let name = args.first().and_then(|e| e.as_str()).unwrap_or_default();
                if name != "vnc:end" {
                    let name = name.to_owned();
                    let body = args.get_mut(1).map(serde_json::Value::take);
                    return Ok(Some(Item::Event {
                        name,
                        body: body.unwrap_or_default(),
                    }));
                }
                let body = args.get(1);
                let code = body
                    .and_then(|b| b.get("code")?.as_u64())
                    .and_then(|c| u16::try_from(c).ok())
                    .unwrap_or(0);
                let reason = body
                    .and_then(|b| b.get("reason")?.as_str())
                    .unwrap_or_default()
                    .to_owned();
                Some(Item::End { code, reason })
            }
            '3' => {
                let Ok(serde_json::Value::Array(mut args)) = serde_json::from_str(p.data) else {
                    return Err(());
                };
                let body = args.get_mut(0).map(serde_json::Value::take);
                Some(Item::Ack(body.unwrap_or_default()))
            }
            '5' | '6' => None,
            _ => return Err(()),
        })
    }
}

const NEED_MORE: Step<'static> = Step {
    used: 0,
    item: None,
};

/// A socket.io packet split into its parts: `<kind>[<n>-][<nsp>,][<ack id>]<data>`.
#[derive(Debug, PartialEq, Eq)]
struct SocketIoPacket<'a> {
    kind: char,
    attachments: usize,
    namespace: &'a str,
    data: &'a str,
}

fn parse_socketio(packet: &str) -> Result<SocketIoPacket<'_>, ()> {
    let mut chars = packet.chars();
    let kind = chars.next().ok_or(())?;
    let mut rest = chars.as_str();
    let mut attachments = 0;
    if kind == '5' || kind == '6' {
        let (n, after) = rest.split_once('-').ok_or(())?;
        attachments = n.parse().map_err(|_| ())?;
        rest = after;
    }
    let namespace = if rest.starts_with('/') {
        let (nsp, after) = rest.split_once(',').unwrap_or((rest, ""));
        rest = after;
        nsp
    } else {
        "/"
    };
    let data = rest.trim_start_matches(|c: char| c.is_ascii_digit());
    Ok(SocketIoPacket {
        kind,
        attachments,
        namespace,
        data,
    })
}

fn truncate(text: &str) -> String {
    text.chars().take(80).collect()
}

/// A server frame header.
#[derive(Debug, PartialEq, Eq)]
struct Header {
    opcode: u8,
    len: u64,
    /// Header bytes.
    size: usize,
}

fn parse_header(input: &[u8]) -> Result<Option<Header>, WireError> {
    let [b0, b1, ..] = *input else {
        return Ok(None);
    };
    if b1 & 0x80 != 0 {
        return Err(WireError::Masked);
    }
    if b0 & 0x70 != 0 {
        return Err(WireError::Reserved);
    }
    let opcode = b0 & 0x0F;
    // Neither socketioxide nor Node's ws fragments what it sends; refusing fragments
    // keeps the reader a handful of states.
    if b0 & 0x80 == 0 || opcode == OP_CONTINUATION {
        return Err(WireError::Fragmented(opcode));
    }
    let (len, size) = match b1 & 0x7F {
        126 => match input.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match input.get(2..10) {
            Some(b) => (u64::from_be_bytes(b.try_into().unwrap_or_default()), 10),
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    Ok(Some(Header { opcode, len, size }))
}

/// Mask keys for client frames: xorshift64*, seeded per connection. RFC 6455 wants
/// unpredictable keys against cache poisoning through proxies; a loopback benchmark
/// needs only that they vary.
pub struct Masks(u64);

impl Masks {
    pub fn new(seed: u64) -> Masks {
        Masks(seed | 1)
    }

    fn next(&mut self) -> [u8; 4] {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let v = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        ((v >> 32) as u32).to_ne_bytes()
    }
}

/// Appends one masked client frame to `out`.
pub fn push_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8], masks: &mut Masks) {
    out.push(0x80 | opcode);
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if let Ok(len) = u16::try_from(len) {
        out.push(0x80 | 126);
        out.extend_from_slice(&len.to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    let mask = masks.next();
    out.extend_from_slice(&mask);
    out.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
}

/// Appends a binary frame.
pub fn push_binary(out: &mut Vec<u8>, payload: &[u8], masks: &mut Masks) {
    push_frame(out, OP_BINARY, payload, masks);
}

/// Appends a text frame.
pub fn push_text(out: &mut Vec<u8>, text: &str, masks: &mut Masks) {
    push_frame(out, OP_TEXT, text.as_bytes(), masks);
}

/// Appends `vnc:data` events carrying `data`, split at [`MAX_DATA_EVENT`]: each is the
/// announcing text frame plus one binary frame.
pub fn push_data(out: &mut Vec<u8>, data: &[u8], masks: &mut Masks) {
    for chunk in data.chunks(MAX_DATA_EVENT) {
        push_text(out, DATA_HEADER, masks);
        push_frame(out, OP_BINARY, chunk, masks);
    }
}

/// Appends a WebSocket pong answering a ping.
pub fn push_ws_pong(out: &mut Vec<u8>, payload: &[u8], masks: &mut Masks) {
    push_frame(out, OP_PONG, payload, masks);
}

/// Appends a WebSocket close frame with `code`.
pub fn push_ws_close(out: &mut Vec<u8>, code: u16, masks: &mut Masks) {
    push_frame(out, OP_CLOSE, &code.to_be_bytes(), masks);
}

/// The namespace connect packet carrying the token in the handshake auth.
/// An event of namespace `/vnc` with one argument, asking for acknowledgement `id`.
pub fn event_packet(id: u64, name: &str, body: &serde_json::Value) -> String {
    format!("42{NAMESPACE},{id}{}", serde_json::json!([name, body]))
}

pub fn connect_packet(token: Option<&str>) -> String {
    let mut packet = format!("40{NAMESPACE},");
    if let Some(token) = token {
        let auth = serde_json::json!({ "token": token });
        let _ = write!(packet, "{auth}");
    }
    packet
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server frame (unmasked).
    fn server_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0x80 | opcode];
        match payload.len() {
            n if n < 126 => f.push(n as u8),
            n if n <= 0xFFFF => {
                f.push(126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(payload);
        f
    }

    /// Runs the reader over `input` fed in `chunk`-byte reads, the way the client does
    /// (unused bytes stay at the front of the next read). Returns the items, with data
    /// pieces joined into one `Data` per event.
    fn read_all(input: &[u8], chunk: usize) -> Result<Vec<Owned>, WireError> {
        let mut reader = Reader::default();
        let mut items = Vec::new();
        let mut data = Vec::new();
        let mut buf: Vec<u8> = Vec::new();
        let mut fed = 0;
        loop {
            let step = reader.next(&buf)?;
            if step.used == 0 && step.item.is_none() {
                if fed == input.len() {
                    assert!(buf.is_empty(), "bytes left over: {buf:?}");
                    return Ok(items);
                }
                let end = (fed + chunk).min(input.len());
                buf.extend_from_slice(&input[fed..end]);
                fed = end;
                continue;
            }
            match step.item {
                Some(Item::Data { bytes, last }) => {
                    data.extend_from_slice(bytes);
                    if last {
                        items.push(Owned::Data(std::mem::take(&mut data)));
                    }
                }
                Some(other) => items.push(Owned::Other(format!("{other:?}"))),
                None => {}
            }
            buf.drain(..step.used);
        }
    }

    #[derive(Debug, PartialEq, Eq)]
    enum Owned {
        Data(Vec<u8>),
        Other(String),
    }

    fn other(item: Item<'_>) -> Owned {
        Owned::Other(format!("{item:?}"))
    }

    fn session_bytes(big: &[u8]) -> Vec<u8> {
        let mut s = Vec::new();
        s.extend(server_frame(
            OP_TEXT,
            br#"0{"sid":"a","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#,
        ));
        s.extend(server_frame(OP_TEXT, br#"40/vnc,{"sid":"b"}"#));
        s.extend(server_frame(OP_TEXT, DATA_HEADER.as_bytes()));
        s.extend(server_frame(OP_BINARY, b"RFB 003.008\n"));
        s.extend(server_frame(OP_TEXT, b"2"));
        s.extend(server_frame(OP_TEXT, DATA_HEADER.as_bytes()));
        s.extend(server_frame(OP_BINARY, big));
        // Another event with an attachment: skipped, attachment included.
        s.extend(server_frame(
            OP_TEXT,
            br#"451-/vnc,["other",{"_placeholder":true,"num":0}]"#,
        ));
        s.extend(server_frame(OP_BINARY, b"not data"));
        s.extend(server_frame(
            OP_TEXT,
            br#"42/vnc,["vnc:event",{"type":"viewer.joined"}]"#,
        ));
        s.extend(server_frame(OP_PING, b"hi"));
        s.extend(server_frame(
            OP_TEXT,
            br#"42/vnc,["vnc:end",{"code":4001,"reason":"idle timeout"}]"#,
        ));
        s.extend(server_frame(OP_TEXT, b"41/vnc,"));
        s.extend(server_frame(OP_CLOSE, &1000u16.to_be_bytes()));
        s
    }

    #[test]
    fn a_session_reads_the_same_whatever_the_read_sizes() {
        let big: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
        let input = session_bytes(&big);
        let want = vec![
            other(Item::Open),
            other(Item::Connected),
            Owned::Data(b"RFB 003.008\n".to_vec()),
            other(Item::Ping),
            Owned::Data(big.clone()),
            other(Item::Event {
                name: "vnc:event".into(),
                body: serde_json::json!({ "type": "viewer.joined" }),
            }),
            other(Item::WsPing(b"hi".to_vec())),
            other(Item::End {
                code: 4001,
                reason: "idle timeout".into(),
            }),
            other(Item::Disconnected),
            other(Item::Closed(Some(1000))),
        ];
        for chunk in [1, 2, 3, 7, 64, 1500, 65_536, input.len()] {
            assert_eq!(read_all(&input, chunk).unwrap(), want, "chunk {chunk}");
        }
    }

    #[test]
    fn data_pieces_point_into_the_input_without_copying() {
        let mut input = server_frame(OP_TEXT, DATA_HEADER.as_bytes());
        input.extend(server_frame(OP_BINARY, &[7; 300]));
        let mut reader = Reader::default();
        let text = reader.next(&input).unwrap();
        assert_eq!((text.used, text.item), (2 + DATA_HEADER.len(), None));
        let rest = &input[text.used..];
        let header = reader.next(rest).unwrap();
        assert_eq!((header.used, header.item), (4, None));
        let body = &rest[4..];
        let piece = reader.next(&body[..100]).unwrap();
        let Some(Item::Data { bytes, last }) = piece.item else {
            panic!("{piece:?}");
        };
        assert_eq!(
            (bytes.as_ptr(), bytes.len(), last),
            (body.as_ptr(), 100, false)
        );
        let piece = reader.next(&body[100..]).unwrap();
        assert!(matches!(piece.item, Some(Item::Data { last: true, .. })));
        assert_eq!(piece.used, 200);
    }

    #[test]
    fn connect_error_carries_the_message() {
        let input = server_frame(OP_TEXT, br#"44/vnc,{"message":"token expired"}"#);
        assert_eq!(
            read_all(&input, 5).unwrap(),
            vec![other(Item::ConnectError("token expired".into()))]
        );
    }

    #[test]
    fn acknowledgements_carry_their_answer_and_events_are_sent_with_an_id() {
        let input = server_frame(OP_TEXT, br#"43/vnc,7[{"ok":false,"error":"no"}]"#);
        assert_eq!(
            read_all(&input, 4).unwrap(),
            vec![other(Item::Ack(
                serde_json::json!({ "ok": false, "error": "no" })
            ))]
        );
        let body = serde_json::json!({ "session_id": "s" });
        assert_eq!(
            event_packet(7, "vnc:control:grant", &body),
            r#"42/vnc,7["vnc:control:grant",{"session_id":"s"}]"#
        );
    }

    #[test]
    fn packets_of_other_namespaces_are_ignored() {
        let mut input = server_frame(OP_TEXT, br#"40{"sid":"x"}"#);
        input.extend(server_frame(OP_TEXT, br#"42["vnc:end",{"code":1}]"#));
        input.extend(server_frame(OP_TEXT, b"6"));
        assert_eq!(read_all(&input, 3).unwrap(), vec![]);
    }

    #[test]
    fn broken_streams_are_refused() {
        let cases: Vec<(Vec<u8>, WireError)> = vec![
            (server_frame(OP_BINARY, b"x"), WireError::UnexpectedBinary),
            (vec![0x82, 0x81, 0, 0, 0, 0, 1], WireError::Masked),
            (vec![0x02, 0x01, 1], WireError::Fragmented(OP_BINARY)),
            (vec![0xC2, 0x01, 1], WireError::Reserved),
            (vec![0x83, 0x00], WireError::Opcode(3)),
            (
                vec![0x81, 127, 0, 0, 0, 0, 0, 1, 0, 1],
                WireError::TextTooLarge(65_537),
            ),
            (
                server_frame(OP_TEXT, b"9"),
                WireError::BadPacket("9".into()),
            ),
            (
                server_frame(OP_TEXT, b"45x-/vnc,[]"),
                WireError::BadPacket("45x-/vnc,[]".into()),
            ),
            (
                [
                    server_frame(OP_TEXT, DATA_HEADER.as_bytes()),
                    server_frame(OP_TEXT, b"2"),
                ]
                .concat(),
                WireError::MissingAttachment(1),
            ),
            (server_frame(OP_TEXT, &[0xFF]), WireError::NotUtf8),
        ];
        for (input, want) in cases {
            assert_eq!(read_all(&input, 4), Err(want), "{input:?}");
        }
    }

    /// Unmasks one client frame: (opcode, payload, frame length).
    fn client_frame(f: &[u8]) -> (u8, Vec<u8>, usize) {
        assert_eq!(f[0] & 0xF0, 0x80, "FIN and no reserved bits");
        assert_eq!(f[1] & 0x80, 0x80, "client frames are masked");
        let (len, at) = match f[1] & 0x7F {
            126 => (u16::from_be_bytes([f[2], f[3]]) as usize, 4),
            127 => (
                u64::from_be_bytes(f[2..10].try_into().unwrap()) as usize,
                10,
            ),
            n => (n as usize, 2),
        };
        let mask = &f[at..at + 4];
        let payload = f[at + 4..at + 4 + len]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ mask[i % 4])
            .collect();
        (f[0] & 0x0F, payload, at + 4 + len)
    }

    #[test]
    fn data_is_sent_as_announced_binary_events_of_at_most_64k() {
        let data: Vec<u8> = (0..MAX_DATA_EVENT + 10).map(|i| i as u8).collect();
        let mut out = Vec::new();
        let mut masks = Masks::new(42);
        push_data(&mut out, &data, &mut masks);
        let mut frames = Vec::new();
        let mut at = 0;
        while at < out.len() {
            let (op, payload, len) = client_frame(&out[at..]);
            frames.push((op, payload));
            at += len;
        }
        assert_eq!(frames.len(), 4);
        assert_eq!(frames[0], (OP_TEXT, DATA_HEADER.as_bytes().to_vec()));
        assert_eq!(frames[1], (OP_BINARY, data[..MAX_DATA_EVENT].to_vec()));
        assert_eq!(frames[2], (OP_TEXT, DATA_HEADER.as_bytes().to_vec()));
        assert_eq!(frames[3], (OP_BINARY, data[MAX_DATA_EVENT..].to_vec()));
    }

    #[test]
    fn mask_keys_vary() {
        let mut masks = Masks::new(0);
        let keys: std::collections::HashSet<_> = (0..100).map(|_| masks.next()).collect();
        assert!(keys.len() > 95);
    }

    #[test]
    fn control_packets() {
        assert_eq!(connect_packet(Some("a\"b")), r#"40/vnc,{"token":"a\"b"}"#);
        assert_eq!(connect_packet(None), "40/vnc,");
        let mut out = Vec::new();
        let mut masks = Masks::new(1);
        push_ws_close(&mut out, 1000, &mut masks);
        assert_eq!(client_frame(&out), (OP_CLOSE, vec![0x03, 0xE8], 8));
        out.clear();
        push_text(&mut out, EIO_PONG, &mut masks);
        assert_eq!(client_frame(&out), (OP_TEXT, b"3".to_vec(), 7));
        out.clear();
        push_ws_pong(&mut out, b"hi", &mut masks);
        assert_eq!(client_frame(&out), (OP_PONG, b"hi".to_vec(), 8));
    }

    #[test]
    fn socketio_packets_split_into_parts() {
        let p = parse_socketio(r#"51-/vnc,["vnc:data",{"_placeholder":true,"num":0}]"#).unwrap();
        assert_eq!(
            (p.kind, p.attachments, p.namespace, p.data),
            (
                '5',
                1,
                "/vnc",
                r#"["vnc:data",{"_placeholder":true,"num":0}]"#
            )
        );
        let p = parse_socketio(r#"2/vnc,12["x"]"#).unwrap();
        assert_eq!((p.kind, p.namespace, p.data), ('2', "/vnc", r#"["x"]"#));
        let p = parse_socketio("1/vnc").unwrap();
        assert_eq!((p.kind, p.namespace, p.data), ('1', "/vnc", ""));
        let p = parse_socketio(r#"0{"sid":"s"}"#).unwrap();
        assert_eq!((p.kind, p.namespace), ('0', "/"));
        assert!(parse_socketio("").is_err());
        assert!(parse_socketio("5/vnc,[]").is_err());
    }
}
