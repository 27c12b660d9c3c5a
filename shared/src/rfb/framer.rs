//! The client→server framer for the data phase: it splits the browser's byte stream
//! into spans, each "the next N bytes belong to a message of kind K", without copying
//! or allocating, so the relay can forward or drop each span as it is and knows where
//! message boundaries are (it may write messages of its own only there).
//!
//! Bytes may arrive in any chunking: a message split anywhere, several in one chunk.
//! The framer reads only what it needs to know each message's length (a header of at
//! most 9 bytes, plus the encodings of SetEncodings, see below). A message type it does
//! not know is an error: its length is unknowable, so the stream cannot be followed.
//!
//! ExtendedMouseButtons (pseudo-encoding -316) changes framing: once the client has
//! listed it in SetEncodings, a PointerEvent whose button mask has bit 7 set is 7 bytes
//! long. Clients that know the extension keep bit 7 clear in the 6-byte form (noVNC
//! masks it), so "listed in the last SetEncodings and bit 7 set" is exactly the rule a
//! server such as TigerVNC applies.

use std::ops::Range;

use super::message::{MessageKind, message_type as mt};
use super::server_init::PixelFormat;

/// Default [`FramerLimits::max_cut_text`]: 1 MiB of clipboard in one message.
pub const DEFAULT_MAX_CUT_TEXT: u32 = 1024 * 1024;
/// Default [`FramerLimits::max_encodings`]. noVNC sends about 30; TigerVNC's viewer
/// about 40.
pub const DEFAULT_MAX_ENCODINGS: u16 = 1024;
/// Longest ClientFence payload the protocol allows.
pub const MAX_FENCE_PAYLOAD: u8 = 64;

/// The ExtendedMouseButtons pseudo-encoding.
const EXTENDED_MOUSE_BUTTONS: i32 = -316;
/// Bit 7 of a PointerEvent's button mask: the ExtendedMouseButtons marker.
const POINTER_MARKER: u8 = 0x80;
/// Most header bytes any message needs before its length is known (ClientFence).
const HEADER_CAP: usize = 9;

/// Bounds on what one client message may declare. Over a limit is an error, not a
/// truncation: the rest of the stream would be misread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FramerLimits {
    /// Longest ClientCutText payload, basic or Extended Clipboard, in bytes.
    pub max_cut_text: u32,
    /// Most encodings in one SetEncodings.
    pub max_encodings: u16,
}

impl Default for FramerLimits {
    fn default() -> Self {
        FramerLimits {
            max_cut_text: DEFAULT_MAX_CUT_TEXT,
            max_encodings: DEFAULT_MAX_ENCODINGS,
        }
    }
}

/// Why the browser's stream cannot be framed. After one, the framer stays failed and
/// the session must end: the first bytes of the failing message may already have gone
/// out in earlier spans (a length is only checked once its field has arrived).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("unknown client message type {0}")]
    UnknownMessageType(u8),
    #[error("unknown QEMU client message sub-type {0}")]
    UnknownQemuSubtype(u8),
    #[error("unknown QEMU audio operation {0}")]
    UnknownQemuAudioOperation(u16),
    #[error("unknown gii client message sub-type {0}")]
    UnknownGiiSubtype(u8),
    #[error("ClientCutText of {len} bytes is over the limit of {max}")]
    CutTextTooLong { len: u32, max: u32 },
    #[error("SetEncodings with {count} encodings is over the limit of {max}")]
    TooManyEncodings { count: u16, max: u16 },
    #[error("ClientFence payload of {0} bytes is over the protocol's limit of {MAX_FENCE_PAYLOAD}")]
    FencePayloadTooLong(u8),
}

/// One span: bytes from the front of the input that all belong to one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// The message these bytes belong to.
    pub kind: MessageKind,
    /// How many bytes from the front of the input are in this span.
    pub len: usize,
    /// The span starts a message (the carried byte, if any, is its first byte).
    pub starts_message: bool,
    /// The span ends a message: after it the framer is at a boundary.
    pub ends_message: bool,
    /// The message-type byte of a QEMU or gii message whose previous input ended right
    /// after it: the kind was unknown then, so the framer held it back.
    carried: Option<u8>,
}

impl Span {
    /// Bytes the framer held back from an earlier input, to be written (or dropped)
    /// before this span's `len` input bytes. Empty except when a QEMU or gii message's
    /// type byte was the last byte of an input; at most one byte.
    pub fn carried(&self) -> &[u8] {
        self.carried.as_slice()
    }
}

/// The streaming framer over the browser's data-phase bytes. One per session; no
/// allocation, a few dozen bytes of state.
///
/// ```
/// use vnc_shared::rfb::{ClientFramer, FramerLimits, MessageKind};
///
/// let mut framer = ClientFramer::new(FramerLimits::default());
/// let view_only = true;
/// // A FramebufferUpdateRequest, a KeyEvent and the first half of a PointerEvent.
/// let chunk = [3, 1, 0, 0, 0, 0, 4, 0, 3, 0, 4, 1, 0, 0, 0, 0, 0, 0x61, 5, 0, 0];
/// let mut forwarded = Vec::new();
/// for item in framer.spans(&chunk) {
///     let (range, span) = item?;
///     if view_only && !span.kind.allowed_for_view() {
///         continue; // dropped: nothing reaches the server
///     }
///     forwarded.extend_from_slice(span.carried());
///     forwarded.extend_from_slice(&chunk[range]);
/// }
/// assert_eq!(forwarded, [3, 1, 0, 0, 0, 0, 4, 0, 3, 0]);
/// // The relay may write its own messages only between messages.
/// assert!(!framer.at_boundary());
/// let (_, rest) = framer.spans(&[10, 0, 20]).next().unwrap()?;
/// assert_eq!((rest.kind, rest.len, rest.ends_message), (MessageKind::PointerEvent, 3, true));
/// assert!(framer.at_boundary());
/// # Ok::<(), vnc_shared::rfb::FrameError>(())
/// ```
#[derive(Debug, Clone)]
pub struct ClientFramer {
    limits: FramerLimits,
    /// The message under way, if some of it was handed out.
    current: Option<Message>,
    /// A QEMU or gii type byte whose sub-type has not arrived yet.
    carried: Option<u8>,
    /// The last complete SetEncodings listed ExtendedMouseButtons.
    extended_mouse_buttons: bool,
    /// The format of the last complete SetPixelFormat.
    pixel_format: Option<PixelFormat>,
    /// Set once the stream could not be framed; every later call returns it.
    error: Option<FrameError>,
}

#[derive(Debug, Clone)]
struct Message {
    kind: MessageKind,
    /// Bytes of this message taken so far.
    seen: u64,
    /// Total length, once the header has told it.
    total: Option<u64>,
    /// The header bytes, kept only to read the length fields.
    header: [u8; HEADER_CAP],
    /// SetEncodings: the encoding being read.
    word: [u8; 4],
    /// SetEncodings: ExtendedMouseButtons was among the encodings read so far.
    lists_extended_mouse: bool,
    /// SetPixelFormat: the PIXEL_FORMAT bytes, kept for [`ClientFramer::pixel_format`].
    format: [u8; PixelFormat::LEN],
}

impl ClientFramer {
    pub fn new(limits: FramerLimits) -> ClientFramer {
        ClientFramer {
            limits,
            current: None,
            carried: None,
            extended_mouse_buttons: false,
            pixel_format: None,
            error: None,
        }
    }

    /// True when every byte handed out so far belongs to a complete message, so the
    /// relay may write a message of its own to the server now. False after an error.
    pub fn at_boundary(&self) -> bool {
        self.current.is_none() && self.error.is_none()
    }

    /// Whether the client's last SetEncodings listed ExtendedMouseButtons. While it
    /// did, a PointerEvent the relay writes must keep bit 7 of its mask clear, or the
    /// server reads it as the 7-byte form.
    pub fn extended_mouse_buttons(&self) -> bool {
        self.extended_mouse_buttons
    }

    /// The pixel format of the client's last complete SetPixelFormat, if it sent one:
    /// what the server's pixel data is in once the server has read it.
    pub fn pixel_format(&self) -> Option<PixelFormat> {
        self.pixel_format
    }

    /// The next span at the front of `input`: `Ok(None)` when `input` is empty, or
    /// when all of it (a lone QEMU or gii type byte) was held back; it comes back as
    /// the next span's [`Span::carried`]. A span never crosses a message boundary.
    pub fn next_span(&mut self, input: &[u8]) -> Result<Option<Span>, FrameError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        let result = self.frame(input);
        if let Err(e) = &result {
            self.error = Some(e.clone());
        }
        result
    }

    /// All spans of `input`, each with its byte range in `input` (for `Bytes::slice`
    /// or indexing). Stops after the first error.
    pub fn spans<'f, 'i>(&'f mut self, input: &'i [u8]) -> Spans<'f, 'i> {
        Spans {
            framer: self,
            input,
            offset: 0,
            done: false,
        }
    }

    fn frame(&mut self, input: &[u8]) -> Result<Option<Span>, FrameError> {
        let Some(&first) = input.first() else {
            return Ok(None);
        };
        let (limits, extended) = (self.limits, self.extended_mouse_buttons);
        let starts_message = self.current.is_none();
        let mut message = match self.current.take() {
            Some(message) => message,
            None => {
                let type_byte = self.carried.unwrap_or(first);
                let next = if self.carried.is_some() {
                    Some(first)
                } else {
                    input.get(1).copied()
                };
                let Some(kind) = classify(type_byte, next)? else {
                    // Only the type byte of a QEMU or gii message so far; it is all of
                    // `input` (or there would be a next byte), so all of it is taken.
                    self.carried = Some(type_byte);
                    return Ok(None);
                };
                let mut message = Message::new(kind);
                if let Some(byte) = self.carried {
                    message.push(byte, limits, extended)?;
                }
                message
            }
        };
        let used = message.consume(input, limits, extended)?;
        let (kind, ends_message) = (message.kind, message.is_complete());
        if !ends_message {
            self.current = Some(message);
        } else if kind == MessageKind::SetEncodings {
            self.extended_mouse_buttons = message.lists_extended_mouse;
        } else if kind == MessageKind::SetPixelFormat {
            self.pixel_format = Some(PixelFormat::from_bytes(&message.format));
        }
        Ok(Some(Span {
            kind,
            len: used,
            starts_message,
            ends_message,
            carried: self.carried.take(),
        }))
    }
}

impl Default for ClientFramer {
    fn default() -> Self {
        ClientFramer::new(FramerLimits::default())
    }
}

/// Iterator over the spans of one input; see [`ClientFramer::spans`].
#[derive(Debug)]
pub struct Spans<'f, 'i> {
    framer: &'f mut ClientFramer,
    input: &'i [u8],
    offset: usize,
    done: bool,
}

impl Iterator for Spans<'_, '_> {
    type Item = Result<(Range<usize>, Span), FrameError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let rest = self.input.get(self.offset..).unwrap_or_default();
        match self.framer.next_span(rest) {
            Ok(Some(span)) => {
                let range = self.offset..self.offset + span.len;
                self.offset = range.end;
                Some(Ok((range, span)))
            }
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// The kind a message starts with, `None` if the sub-type byte is still to come.
fn classify(type_byte: u8, next: Option<u8>) -> Result<Option<MessageKind>, FrameError> {
    use MessageKind::*;
    let kind = match type_byte {
        mt::SET_PIXEL_FORMAT => SetPixelFormat,
        mt::SET_ENCODINGS => SetEncodings,
        mt::FRAMEBUFFER_UPDATE_REQUEST => FramebufferUpdateRequest,
        mt::KEY_EVENT => KeyEvent,
        mt::POINTER_EVENT => PointerEvent,
        mt::CLIENT_CUT_TEXT => ClientCutText,
        mt::ENABLE_CONTINUOUS_UPDATES => EnableContinuousUpdates,
        mt::CLIENT_FENCE => ClientFence,
        mt::XVP => Xvp,
        mt::SET_DESKTOP_SIZE => SetDesktopSize,
        mt::GII => {
            let Some(sub) = next else { return Ok(None) };
            // Bit 7 is the endianness of the message, the rest the sub-type.
            match sub & 0x7f {
                0 => GiiEvents,
                1 => GiiVersion,
                2 => GiiDeviceCreation,
                3 => GiiDeviceDestruction,
                _ => return Err(FrameError::UnknownGiiSubtype(sub)),
            }
        }
        mt::QEMU => match next {
            None => return Ok(None),
            Some(0) => QemuExtendedKeyEvent,
            Some(1) => QemuAudio,
            Some(sub) => return Err(FrameError::UnknownQemuSubtype(sub)),
        },
        other => return Err(FrameError::UnknownMessageType(other)),
    };
    Ok(Some(kind))
}

/// Length of the kinds whose length never varies.
fn fixed_len(kind: MessageKind) -> Option<u64> {
    use MessageKind::*;
    match kind {
        SetPixelFormat => Some(20),
        FramebufferUpdateRequest => Some(10),
        KeyEvent => Some(8),
        EnableContinuousUpdates => Some(10),
        Xvp => Some(4),
        QemuExtendedKeyEvent => Some(12),
        _ => None,
    }
}

/// Header bytes needed before the length of a variable-length kind is known.
fn header_len(kind: MessageKind) -> u64 {
    use MessageKind::*;
    match kind {
        PointerEvent => 2,
        SetEncodings => 4,
        ClientCutText => 8,
        ClientFence => 9,
        SetDesktopSize => 8,
        GiiEvents | GiiVersion | GiiDeviceCreation | GiiDeviceDestruction => 4,
        QemuAudio => 4,
        _ => 0,
    }
}

impl Message {
    fn new(kind: MessageKind) -> Message {
        Message {
            kind,
            seen: 0,
            total: fixed_len(kind),
            header: [0; HEADER_CAP],
            word: [0; 4],
            lists_extended_mouse: false,
            format: [0; PixelFormat::LEN],
        }
    }

    fn is_complete(&self) -> bool {
        self.total == Some(self.seen)
    }

    /// Takes bytes from the front of `input` up to the end of this message; returns
    /// how many.
    fn consume(
        &mut self,
        input: &[u8],
        limits: FramerLimits,
        extended: bool,
    ) -> Result<usize, FrameError> {
        let mut used = 0;
        while !self.is_complete() {
            let Some(rest) = input.get(used..).filter(|r| !r.is_empty()) else {
                break;
            };
            match (self.total, rest.first()) {
                // The body of anything but SetEncodings and SetPixelFormat is not
                // looked at: take it whole.
                (Some(total), _) if !self.reads_body() => {
                    let left =
                        usize::try_from(total.saturating_sub(self.seen)).unwrap_or(usize::MAX);
                    let n = left.min(rest.len());
                    self.seen += n as u64;
                    used += n;
                }
                (_, Some(&byte)) => {
                    self.push(byte, limits, extended)?;
                    used += 1;
                }
                (_, None) => break,
            }
        }
        Ok(used)
    }

    /// The kinds whose body bytes the framer reads one by one.
    fn reads_body(&self) -> bool {
        matches!(
            self.kind,
            MessageKind::SetEncodings | MessageKind::SetPixelFormat
        )
    }

    /// Takes one byte: a header byte, or a SetEncodings or SetPixelFormat body byte.
    fn push(&mut self, byte: u8, limits: FramerLimits, extended: bool) -> Result<(), FrameError> {
        match self.total {
            None => {
                if let Some(slot) = usize::try_from(self.seen)
                    .ok()
                    .and_then(|i| self.header.get_mut(i))
                {
                    *slot = byte;
                }
                self.seen += 1;
                if self.seen == header_len(self.kind) {
                    self.total = Some(self.total_from_header(limits, extended)?);
                }
            }
            Some(_) => {
                match self.kind {
                    MessageKind::SetEncodings => self.encoding_byte(byte),
                    // Type and 3 bytes of padding, then PIXEL_FORMAT.
                    MessageKind::SetPixelFormat => {
                        if let Some(slot) = usize::try_from(self.seen)
                            .ok()
                            .and_then(|i| i.checked_sub(4))
                            .and_then(|i| self.format.get_mut(i))
                        {
                            *slot = byte;
                        }
                    }
                    _ => {}
                }
                self.seen += 1;
            }
        }
        Ok(())
    }

    /// Collects the encodings of SetEncodings as they pass, to notice -316.
    fn encoding_byte(&mut self, byte: u8) {
        let index = (self.seen.saturating_sub(4) % 4) as usize;
        if let Some(slot) = self.word.get_mut(index) {
            *slot = byte;
        }
        if index == 3 && i32::from_be_bytes(self.word) == EXTENDED_MOUSE_BUTTONS {
            self.lists_extended_mouse = true;
        }
    }

    fn total_from_header(&self, limits: FramerLimits, extended: bool) -> Result<u64, FrameError> {
        use MessageKind::*;
        let h = &self.header;
        let total = match self.kind {
            PointerEvent => {
                if extended && h[1] & POINTER_MARKER != 0 {
                    7
                } else {
                    6
                }
            }
            SetEncodings => {
                let count = u16::from_be_bytes([h[2], h[3]]);
                if count > limits.max_encodings {
                    return Err(FrameError::TooManyEncodings {
                        count,
                        max: limits.max_encodings,
                    });
                }
                4 + 4 * u64::from(count)
            }
            ClientCutText => {
                // Negative: Extended Clipboard, with the absolute value as length.
                let len = i32::from_be_bytes([h[4], h[5], h[6], h[7]]).unsigned_abs();
                if len > limits.max_cut_text {
                    return Err(FrameError::CutTextTooLong {
                        len,
                        max: limits.max_cut_text,
                    });
                }
                8 + u64::from(len)
            }
            ClientFence => {
                if h[8] > MAX_FENCE_PAYLOAD {
                    return Err(FrameError::FencePayloadTooLong(h[8]));
                }
                9 + u64::from(h[8])
            }
            SetDesktopSize => 8 + 16 * u64::from(h[6]),
            GiiEvents | GiiVersion | GiiDeviceCreation | GiiDeviceDestruction => {
                // gii lengths are in the endianness bit 7 of the sub-type byte names.
                let len = if h[1] & 0x80 != 0 {
                    u16::from_be_bytes([h[2], h[3]])
                } else {
                    u16::from_le_bytes([h[2], h[3]])
                };
                4 + u64::from(len)
            }
            QemuAudio => match u16::from_be_bytes([h[2], h[3]]) {
                // Enable, disable.
                0 | 1 => 4,
                // Set format: sample format, channels, frequency.
                2 => 10,
                op => return Err(FrameError::UnknownQemuAudioOperation(op)),
            },
            // Fixed-length kinds never ask.
            kind => fixed_len(kind).unwrap_or(0),
        };
        Ok(total)
    }
}

#[cfg(test)]
mod tests;
