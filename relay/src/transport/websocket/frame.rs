//! WebSocket framing (RFC 6455) for the relay's data path, without I/O.
//!
//! The relay writes server frames as a small header plus the caller's payload buffer
//! (so the payload is never copied) and decodes client frames in place: payload bytes
//! are unmasked inside the read buffer and handed out as ranges of it. A frame's payload
//! may arrive across many reads; the decoder streams it, so no frame is ever buffered
//! whole and a frame's size does not bound memory.

use std::ops::Range;

/// Frame opcodes the relay knows.
pub mod opcode {
    pub const CONTINUATION: u8 = 0x0;
    pub const TEXT: u8 = 0x1;
    pub const BINARY: u8 = 0x2;
    pub const CLOSE: u8 = 0x8;
    pub const PING: u8 = 0x9;
    pub const PONG: u8 = 0xA;
}

/// Longest server frame header: 2 bytes + 8 bytes of extended length (no mask).
pub const MAX_SERVER_HEADER: usize = 10;
/// Control frame payloads are at most 125 bytes (RFC 6455 §5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// A server→client frame header (FIN set, unmasked), ready to be written before the
/// payload in one vectored write.
#[derive(Clone, Copy, Debug)]
pub struct ServerHeader {
    bytes: [u8; MAX_SERVER_HEADER],
    len: u8,
}

impl ServerHeader {
    pub fn new(opcode: u8, payload_len: usize) -> ServerHeader {
        let mut bytes = [0u8; MAX_SERVER_HEADER];
        bytes[0] = 0x80 | opcode;
        let len = if payload_len < 126 {
            bytes[1] = payload_len as u8;
            2
        } else if payload_len <= usize::from(u16::MAX) {
            bytes[1] = 126;
            bytes[2..4].copy_from_slice(&(payload_len as u16).to_be_bytes());
            4
        } else {
            bytes[1] = 127;
            bytes[2..10].copy_from_slice(&(payload_len as u64).to_be_bytes());
            10
        };
        ServerHeader { bytes, len }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// A whole control frame (header + ≤125 bytes payload), built on the stack.
#[derive(Clone, Copy, Debug)]
pub struct ControlFrame {
    bytes: [u8; 2 + MAX_CONTROL_PAYLOAD],
    len: u8,
}

impl ControlFrame {
    /// A control frame; a payload longer than 125 bytes is cut to fit.
    pub fn new(opcode: u8, payload: &[u8]) -> ControlFrame {
        let n = payload.len().min(MAX_CONTROL_PAYLOAD);
        let mut bytes = [0u8; 2 + MAX_CONTROL_PAYLOAD];
        bytes[0] = 0x80 | opcode;
        bytes[1] = n as u8;
        bytes[2..2 + n].copy_from_slice(&payload[..n]);
        ControlFrame {
            bytes,
            len: 2 + n as u8,
        }
    }

    /// A Close frame with a status code and a reason (cut at a char boundary to fit).
    pub fn close(code: u16, reason: &str) -> ControlFrame {
        let mut payload = [0u8; MAX_CONTROL_PAYLOAD];
        payload[..2].copy_from_slice(&code.to_be_bytes());
        let mut end = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        payload[2..2 + end].copy_from_slice(&reason.as_bytes()[..end]);
        ControlFrame::new(opcode::CLOSE, &payload[..2 + end])
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// The payload of a received Ping, to be echoed in a Pong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PingPayload {
    bytes: [u8; MAX_CONTROL_PAYLOAD],
    len: u8,
}

impl PingPayload {
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// What one step of the decoder yields.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Unmasked binary payload bytes, at this range of the input slice.
    Data(Range<usize>),
    Ping(PingPayload),
    Pong,
    /// The client's Close, with its status code if it sent one.
    Close(Option<u16>),
}

/// Why a client's frames are refused; each maps to one close code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("client frames must be masked")]
    Unmasked,
    #[error("server frames must not be masked")]
    Masked,
    #[error("reserved bits set")]
    ReservedBits,
    #[error("unknown opcode {0:#x}")]
    UnknownOpcode(u8),
    #[error("text frames are not supported; send binary")]
    Text,
    #[error("control frame too long or fragmented")]
    BadControlFrame,
    #[error("continuation without a message, or a new message inside one")]
    BadContinuation,
    #[error("close frame payload is malformed")]
    BadClose,
    #[error("message exceeds {0} bytes")]
    TooBig(u64),
}

#[derive(Debug)]
enum State {
    /// Collecting header bytes (2 to 14).
    Header { buf: [u8; 14], have: usize },
    /// Streaming a data frame's payload.
    Data {
        remaining: u64,
        mask: [u8; 4],
        phase: usize,
    },
    /// Collecting a control frame's payload (≤125 bytes).
    Control {
        opcode: u8,
        mask: [u8; 4],
        buf: [u8; MAX_CONTROL_PAYLOAD],
        have: usize,
        need: usize,
    },
}

const EMPTY_HEADER: State = State::Header {
    buf: [0; 14],
    have: 0,
};

/// Decoder of a frame stream: the client→server stream (masked frames, unmasked in
/// place) or, for clients such as the load generator, the server→client stream
/// (unmasked frames). Holds no heap memory.
#[derive(Debug)]
pub struct Decoder {
    state: State,
    /// Whether frames must carry a mask (client→server) or must not (server→client).
    masked: bool,
    /// Most bytes one (possibly fragmented) message may carry.
    max_message: u64,
    /// Bytes of the current data message so far; `None` between messages.
    message: Option<u64>,
}

impl Decoder {
    /// Decodes what a browser sends: masked frames.
    pub fn new(max_message: u64) -> Decoder {
        Decoder {
            state: EMPTY_HEADER,
            masked: true,
            max_message,
            message: None,
        }
    }

    /// Decodes what a server sends: unmasked frames.
    pub fn server_frames(max_message: u64) -> Decoder {
        Decoder {
            masked: false,
            ..Decoder::new(max_message)
        }
    }

    /// Decodes from `input`, unmasking data payload in place. Returns how many bytes
    /// were consumed and what they completed, if anything. Call again with the rest
    /// until all input is consumed.
    pub fn decode(&mut self, input: &mut [u8]) -> Result<(usize, Option<Decoded>), FrameError> {
        match &mut self.state {
            State::Header { buf, have } => {
                let want = header_len(&buf[..*have]);
                let take = (want - *have).min(input.len());
                buf[*have..*have + take].copy_from_slice(&input[..take]);
                *have += take;
                // Refuse a wrongly masked frame as soon as its second byte shows it,
                // rather than waiting for mask bytes that will never come.
                if *have >= 2 && (buf[1] & 0x80 != 0) != self.masked {
                    return Err(if self.masked {
                        FrameError::Unmasked
                    } else {
                        FrameError::Masked
                    });
                }
                if *have < header_len(&buf[..*have]) {
                    return Ok((take, None));
                }
                let header = *buf;
                let item = self.start_frame(&header)?;
                Ok((take, item))
            }
            State::Data {
                remaining,
                mask,
                phase,
            } => {
                let n = (*remaining).min(input.len() as u64) as usize;
                if *mask != [0; 4] {
                    unmask(&mut input[..n], *mask, *phase);
                }
                *phase = (*phase + n) % 4;
                *remaining -= n as u64;
                if *remaining == 0 {
                    self.state = EMPTY_HEADER;
                }
                Ok((n, (n > 0).then_some(Decoded::Data(0..n))))
            }
            State::Control {
                opcode,
                mask,
                buf,
                have,
                need,
            } => {
                let take = (*need - *have).min(input.len());
                buf[*have..*have + take].copy_from_slice(&input[..take]);
                *have += take;
                if *have < *need {
                    return Ok((take, None));
                }
                let (op, mask, mut payload, len) = (*opcode, *mask, *buf, *need);
                unmask(&mut payload[..len], mask, 0);
                self.state = EMPTY_HEADER;
                Ok((take, Some(control(op, &payload[..len])?)))
            }
        }
    }

    /// Parses a complete header and moves to the payload state.
    fn start_frame(&mut self, h: &[u8; 14]) -> Result<Option<Decoded>, FrameError> {
        let fin = h[0] & 0x80 != 0;
        if h[0] & 0x70 != 0 {
            return Err(FrameError::ReservedBits);
        }
        let op = h[0] & 0x0F;
        let (len, mask_at) = match h[1] & 0x7F {
            126 => (u64::from(u16::from_be_bytes([h[2], h[3]])), 4),
            127 => (
                u64::from_be_bytes(h[2..10].try_into().unwrap_or_default()),
                10,
            ),
            n => (u64::from(n), 2),
        };
        // An all-zero mask leaves unmasked payload as it is.
        let mask = if self.masked {
            [h[mask_at], h[mask_at + 1], h[mask_at + 2], h[mask_at + 3]]
        } else {
            [0; 4]
        };
        match op {
            opcode::BINARY | opcode::CONTINUATION => {
                let so_far = match (op, self.message) {
                    (opcode::BINARY, None) => 0,
                    (opcode::CONTINUATION, Some(n)) => n,
                    _ => return Err(FrameError::BadContinuation),
                };
                let total = so_far.saturating_add(len);
                if total > self.max_message {
                    return Err(FrameError::TooBig(self.max_message));
                }
                self.message = (!fin).then_some(total);
                self.state = if len == 0 {
                    EMPTY_HEADER
                } else {
                    State::Data {
                        remaining: len,
                        mask,
                        phase: 0,
                    }
                };
                Ok(None)
            }
            opcode::TEXT => Err(FrameError::Text),
            opcode::CLOSE | opcode::PING | opcode::PONG => {
                if !fin || len > MAX_CONTROL_PAYLOAD as u64 {
                    return Err(FrameError::BadControlFrame);
                }
                if len == 0 {
                    self.state = EMPTY_HEADER;
                    return control(op, &[]).map(Some);
                }
                self.state = State::Control {
                    opcode: op,
                    mask,
                    buf: [0; MAX_CONTROL_PAYLOAD],
                    have: 0,
                    need: len as usize,
                };
                Ok(None)
            }
            other => Err(FrameError::UnknownOpcode(other)),
        }
    }
}

/// Header length implied by the bytes seen so far (2 until the length byte is known).
fn header_len(seen: &[u8]) -> usize {
    let Some(&b) = seen.get(1) else { return 2 };
    let mask = if b & 0x80 != 0 { 4 } else { 0 };
    match b & 0x7F {
        126 => 2 + 2 + mask,
        127 => 2 + 8 + mask,
        _ => 2 + mask,
    }
}

fn control(op: u8, payload: &[u8]) -> Result<Decoded, FrameError> {
    Ok(match op {
        opcode::PING => {
            let mut bytes = [0u8; MAX_CONTROL_PAYLOAD];
            bytes[..payload.len()].copy_from_slice(payload);
            Decoded::Ping(PingPayload {
                bytes,
                len: payload.len() as u8,
            })
        }
        opcode::PONG => Decoded::Pong,
        _ => match payload {
            [] => Decoded::Close(None),
            [_] => return Err(FrameError::BadClose),
            [a, b, reason @ ..] => {
                if std::str::from_utf8(reason).is_err() {
                    return Err(FrameError::BadClose);
                }
                Decoded::Close(Some(u16::from_be_bytes([*a, *b])))
            }
        },
    })
}

/// XORs `data` with the mask, starting at mask byte `phase`. Works a word at a time.
pub fn unmask(data: &mut [u8], mask: [u8; 4], phase: usize) {
    let mut m = [0u8; 4];
    for (i, b) in m.iter_mut().enumerate() {
        *b = mask[(phase + i) % 4];
    }
    let word = u32::from_ne_bytes(m);
    let wide = u64::from(word) | (u64::from(word) << 32);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let v = u64::from_ne_bytes(chunk.try_into().unwrap_or_default()) ^ wide;
        chunk.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= m[i % 4];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Builds a masked client frame the way a browser does.
    fn client_frame(fin: bool, op: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let mut out = vec![(if fin { 0x80 } else { 0 }) | op];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= 65535 => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    /// Feeds `input` in chunks of the given sizes; returns the data and the events.
    fn run(
        dec: &mut Decoder,
        mut input: Vec<u8>,
        chunks: &[usize],
    ) -> Result<(Vec<u8>, Vec<Decoded>), FrameError> {
        let (mut data, mut events) = (Vec::new(), Vec::new());
        let mut pos = 0;
        let mut sizes = chunks.iter().copied().cycle();
        while pos < input.len() {
            let end = (pos + sizes.next().unwrap_or(1).max(1)).min(input.len());
            let mut at = pos;
            while at < end {
                let (used, item) = dec.decode(&mut input[at..end])?;
                match item {
                    Some(Decoded::Data(r)) => {
                        data.extend_from_slice(&input[at + r.start..at + r.end])
                    }
                    Some(other) => events.push(other),
                    None => {}
                }
                at += used;
            }
            pos = end;
        }
        Ok((data, events))
    }

    #[test]
    fn server_headers_use_the_shortest_length_form() {
        assert_eq!(ServerHeader::new(opcode::BINARY, 5).as_bytes(), &[0x82, 5]);
        assert_eq!(
            ServerHeader::new(opcode::BINARY, 300).as_bytes(),
            &[0x82, 126, 1, 44]
        );
        assert_eq!(
            ServerHeader::new(opcode::BINARY, 70_000).as_bytes(),
            &[0x82, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]
        );
    }

    #[test]
    fn close_frames_carry_code_and_truncated_reason() {
        let f = ControlFrame::close(4001, "idle timeout");
        assert_eq!(&f.as_bytes()[..4], &[0x88, 14, 0x0F, 0xA1]);
        assert_eq!(&f.as_bytes()[4..], b"idle timeout");
        let long = "é".repeat(100);
        let f = ControlFrame::close(1000, &long);
        assert!(f.as_bytes().len() <= 127);
        assert!(std::str::from_utf8(&f.as_bytes()[4..]).is_ok());
    }

    #[test]
    fn decodes_fragmented_messages_and_interleaved_control_frames() {
        let mask = [1, 2, 3, 4];
        let mut input = client_frame(false, opcode::BINARY, b"hello ", mask);
        input.extend(client_frame(true, opcode::PING, b"p", mask));
        input.extend(client_frame(true, opcode::CONTINUATION, b"world", mask));
        input.extend(client_frame(true, opcode::CLOSE, &[0x03, 0xE8], mask));
        let (data, events) = run(&mut Decoder::new(1024), input, &[1000]).unwrap();
        assert_eq!(data, b"hello world");
        assert_eq!(events.len(), 2);
        assert!(matches!(&events[0], Decoded::Ping(p) if p.as_bytes() == b"p"));
        assert_eq!(events[1], Decoded::Close(Some(1000)));
    }

    #[test]
    fn refuses_what_a_client_must_not_send() {
        let m = [9, 9, 9, 9];
        let cases: Vec<(Vec<u8>, FrameError)> = vec![
            (client_frame(true, opcode::TEXT, b"hi", m), FrameError::Text),
            (vec![0x82, 0x02, b'h', b'i'], FrameError::Unmasked),
            (vec![0xC2, 0x80, 0, 0, 0, 0], FrameError::ReservedBits),
            (
                client_frame(true, 0x3, b"", m),
                FrameError::UnknownOpcode(3),
            ),
            (
                client_frame(false, opcode::PING, b"", m),
                FrameError::BadControlFrame,
            ),
            (
                client_frame(true, opcode::PING, &[0; 126], m),
                FrameError::BadControlFrame,
            ),
            (
                client_frame(true, opcode::CONTINUATION, b"x", m),
                FrameError::BadContinuation,
            ),
            (
                client_frame(true, opcode::CLOSE, &[3], m),
                FrameError::BadClose,
            ),
            (
                client_frame(true, opcode::BINARY, &[0; 2000], m),
                FrameError::TooBig(1024),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(run(&mut Decoder::new(1024), input, &[7]), Err(want));
        }
        let mut two_starts = client_frame(false, opcode::BINARY, b"a", m);
        two_starts.extend(client_frame(true, opcode::BINARY, b"b", m));
        assert_eq!(
            run(&mut Decoder::new(1024), two_starts, &[64]),
            Err(FrameError::BadContinuation)
        );
    }

    #[test]
    fn decodes_server_frames_for_clients() {
        let mut input = ServerHeader::new(opcode::BINARY, 3).as_bytes().to_vec();
        input.extend_from_slice(b"abc");
        input.extend_from_slice(ServerHeader::new(opcode::BINARY, 70_000).as_bytes());
        input.extend(std::iter::repeat_n(7u8, 70_000));
        input.extend_from_slice(ControlFrame::close(1000, "bye").as_bytes());
        let (data, events) = run(&mut Decoder::server_frames(1 << 20), input, &[999]).unwrap();
        assert_eq!(data.len(), 70_003);
        assert_eq!(&data[..3], b"abc");
        assert_eq!(events, vec![Decoded::Close(Some(1000))]);
        let masked = client_frame(true, opcode::BINARY, b"x", [1, 2, 3, 4]);
        assert_eq!(
            run(&mut Decoder::server_frames(64), masked, &[8]),
            Err(FrameError::Masked)
        );
    }

    #[test]
    fn the_message_limit_counts_all_fragments() {
        let m = [5, 6, 7, 8];
        let mut input = client_frame(false, opcode::BINARY, &[0; 600], m);
        input.extend(client_frame(true, opcode::CONTINUATION, &[0; 600], m));
        assert_eq!(
            run(&mut Decoder::new(1000), input, &[4096]),
            Err(FrameError::TooBig(1000))
        );
    }

    proptest! {
        // Each case decodes up to ~200 KiB; 64 cases keep the suite fast.
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// However the stream is split across reads, the decoded bytes are the sent ones.
        #[test]
        fn any_split_decodes_the_same(
            messages in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..70_000), 1..4),
            mask in any::<[u8; 4]>(),
            chunks in prop::collection::vec(1usize..9000, 1..8),
        ) {
            let mut input = Vec::new();
            let mut want = Vec::new();
            for m in &messages {
                let half = m.len() / 2;
                input.extend(client_frame(false, opcode::BINARY, &m[..half], mask));
                input.extend(client_frame(true, opcode::PONG, b"", mask));
                input.extend(client_frame(true, opcode::CONTINUATION, &m[half..], mask));
                want.extend_from_slice(m);
            }
            let (data, events) = run(&mut Decoder::new(1 << 20), input, &chunks).unwrap();
            prop_assert_eq!(data, want);
            prop_assert_eq!(events.len(), messages.len());
        }

        #[test]
        fn unmask_matches_bytewise_xor(data in prop::collection::vec(any::<u8>(), 0..100), mask in any::<[u8; 4]>(), phase in 0usize..4) {
            let mut fast = data.clone();
            unmask(&mut fast, mask, phase);
            let slow: Vec<u8> = data.iter().enumerate().map(|(i, b)| b ^ mask[(phase + i) % 4]).collect();
            prop_assert_eq!(fast, slow);
        }

        /// Arbitrary bytes never panic the decoder.
        #[test]
        fn garbage_never_panics(mut input in prop::collection::vec(any::<u8>(), 0..512)) {
            let mut dec = Decoder::new(1 << 16);
            let mut at = 0;
            while at < input.len() {
                match dec.decode(&mut input[at..]) {
                    Ok((used, _)) => at += used,
                    Err(_) => break,
                }
            }
        }
    }
}
