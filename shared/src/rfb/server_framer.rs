//! The server→client framer for the data phase: it follows the VNC server's byte stream
//! message by message without copying or buffering it, so the relay can tell what the
//! server says about the desktop (the answer to a SetDesktopSize above all) while the
//! bytes themselves go to the browser untouched.
//!
//! Bytes may arrive in any chunking. The framer reads the few header bytes that give
//! each part's length (at most 12 at a time, into a fixed buffer) and skips everything
//! else by count: pixel data, compressed streams, clipboard text. The only body it
//! scans is a JPEG rectangle's entropy-coded data, whose length is written nowhere
//! (a search for the next 0xFF marker byte).
//!
//! Pixel sizes depend on the negotiated pixel format: the one in ServerInit, then the
//! one in the client's last SetPixelFormat. The caller reports each with
//! [`ServerFramer::set_pixel_format`] once the message has been written to the server;
//! it takes effect at the next server message. A server applies SetPixelFormat when it
//! reads it, so an update it had begun before is in the old format and later ones in
//! the new. That is exact for clients that change the format between the updates they
//! ask for (noVNC does it once, before its first request; TigerVNC's viewer right
//! after an update ends) and can misjudge an update already in flight otherwise (a
//! change while continuous updates run). A misjudged stream is misread: that usually
//! ends in an error within a message or two (never a panic), and the caller stops
//! following it; until then what it reports may be wrong.
//!
//! A message type, sub-type or encoding the framer does not know is an error: its
//! length is unknowable, so the stream cannot be followed any further. After one, the
//! framer stays failed; the relay stops following that session's stream (the bytes
//! keep flowing, only what the framer reports stops).
//!
//! This file owns the framer's state machine over messages; what it reports and its
//! errors are in `event.rs`, the pixel sizes a format decides in `pixel.rs`, and the
//! lengths of rectangle payloads, encoding by encoding, in `rect.rs`.

mod event;
mod pixel;
mod rect;

pub use event::{
    MAX_SERVER_FENCE_PAYLOAD, Rectangle, ResizeAnswer, ResizeStatus, ServerEvent, ServerFrameError,
};
use pixel::PixelSizes;

use super::server_init::PixelFormat;
use super::server_message::{ServerMessageKind, server_message_type as smt};
use super::wire::{be_u16, be_u32};

/// The most header bytes one read needs (a rectangle header).
const HEADER_CAP: usize = 12;

/// What the framer reads next. Every state but [`State::JpegScan`] first gathers
/// [`ServerFramer::need`] bytes into the header buffer (none for the bookkeeping
/// states), then [`ServerFramer::advance`] acts on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// A message-type byte.
    MessageType,
    /// FramebufferUpdate: padding, rectangle count.
    UpdateHeader,
    /// x, y, width, height, encoding.
    RectHeader,
    /// A rectangle's payload has passed.
    RectDone,
    /// A message has passed; reports it.
    MessageDone,
    /// SetColourMapEntries: padding, first colour, count.
    ColourMapHeader,
    /// ServerCutText: padding, length (negative for Extended Clipboard).
    CutTextHeader,
    /// ServerFence: padding, flags, payload length.
    FenceHeader,
    /// gii: sub-type with endianness bit, length.
    GiiHeader,
    /// QEMU: sub-type, operation.
    QemuHeader,
    /// QEMU audio data: length.
    QemuAudioLength,
    /// The payload of a rectangle, by encoding; see `rect.rs`.
    Rect(RectState),
}

/// Where inside a rectangle's payload the framer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RectState {
    /// A big-endian u32 length, then that many bytes (Zlib, ZRLE, DesktopName, ...).
    LengthPrefixed,
    /// RRE or CoRRE: sub-rectangle count and background pixel; each sub-rectangle is
    /// a pixel plus `geometry` bytes.
    RreHeader { geometry: u8 },
    /// A Hextile tile's sub-encoding byte.
    HextileTile,
    /// A Hextile tile's sub-rectangle count.
    HextileSubrects { coloured: bool },
    /// Tight compression control.
    TightControl,
    /// Tight basic compression: filter id.
    TightFilter,
    /// Tight palette filter: colour count − 1.
    TightPalette,
    /// Tight compact length, byte `index` (0..=2), `value` so far.
    TightLength { index: u8, value: u32 },
    /// JPEG: 0xFF and a marker type.
    JpegMarker,
    /// JPEG: a segment length, for marker type `marker`.
    JpegLength { marker: u8 },
    /// JPEG entropy-coded data after a start of scan; `ff`: the last byte was 0xFF.
    JpegScan { ff: bool },
    /// H.264: length and flags.
    H264Header,
    /// ExtendedDesktopSize: screen count and padding.
    ExtendedDesktopSize,
    /// DesktopSize: no payload; reports the size.
    DesktopSize,
    /// Cursor with alpha: the encoding of the cursor image.
    AlphaCursor,
    /// VMware cursor: type and padding.
    VmwareCursor,
}

/// The streaming framer over the VNC server's data-phase bytes. One per session; no
/// allocation, a few dozen bytes of state.
///
/// ```
/// use vnc_shared::rfb::{PixelFormat, ResizeAnswer, ResizeStatus, ServerEvent, ServerFramer};
///
/// let rgb888 = [32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0];
/// let mut framer = ServerFramer::new(PixelFormat::from_bytes(&rgb888));
/// // A FramebufferUpdate with one ExtendedDesktopSize rectangle (x 1: this client
/// // asked; y 0: ok; 800 × 600; one screen), cut in two anywhere.
/// let mut update = vec![0, 0, 0, 1, 0, 1, 0, 0, 3, 32, 2, 88, 0xff, 0xff, 0xfe, 0xcc];
/// update.extend([1, 0, 0, 0]);
/// update.extend([0, 0, 0, 0, 0, 0, 0, 0, 3, 32, 2, 88, 0, 0, 0, 0]);
/// let mut answers = Vec::new();
/// for chunk in [&update[..7], &update[7..]] {
///     for event in framer.events(chunk) {
///         if let ServerEvent::ResizeAnswer(answer) = event? {
///             answers.push(answer);
///         }
///     }
/// }
/// let ok = ResizeAnswer { status: ResizeStatus::OK, width: 800, height: 600 };
/// assert_eq!(answers, [ok]);
/// assert!(framer.at_boundary());
/// # Ok::<(), vnc_shared::rfb::ServerFrameError>(())
/// ```
#[derive(Debug, Clone)]
pub struct ServerFramer {
    state: State,
    /// Payload bytes to pass before `state` reads anything.
    skip: u64,
    /// Header bytes gathered for `state`.
    buf: [u8; HEADER_CAP],
    have: u8,
    /// Sizes of the format in force.
    sizes: PixelSizes,
    /// A format to put in force at the next message.
    pending: Option<PixelFormat>,
    /// The message under way: its kind and bytes so far.
    kind: ServerMessageKind,
    len: u64,
    /// FramebufferUpdate: rectangles left, counting the one under way.
    rects_left: u16,
    /// The rectangle under way.
    rect: Rectangle,
    /// Hextile: the tile under way, as offsets into the rectangle.
    tile_x: u32,
    tile_y: u32,
    /// Set once the stream could not be framed; every later call returns it.
    error: Option<ServerFrameError>,
}

impl ServerFramer {
    /// A framer for a stream that starts right after ServerInit, whose pixel format is
    /// `format`.
    pub fn new(format: PixelFormat) -> ServerFramer {
        ServerFramer {
            state: State::MessageType,
            skip: 0,
            buf: [0; HEADER_CAP],
            have: 0,
            sizes: PixelSizes {
                pixel: 4,
                tpixel: 4,
            },
            pending: Some(format),
            kind: ServerMessageKind::Bell,
            len: 0,
            rects_left: 0,
            rect: Rectangle {
                x: 0,
                y: 0,
                width: 0,
                height: 0,
                encoding: 0,
            },
            tile_x: 0,
            tile_y: 0,
            error: None,
        }
    }

    /// The client's SetPixelFormat has reached the server: the format applies from the
    /// next server message on (the one under way, if any, keeps the old one). A format
    /// RFB does not allow is reported as an error when it would apply.
    pub fn set_pixel_format(&mut self, format: PixelFormat) {
        self.pending = Some(format);
    }

    /// True when every byte taken so far belongs to a complete message.
    pub fn at_boundary(&self) -> bool {
        self.state == State::MessageType && self.have == 0 && self.skip == 0 && self.error.is_none()
    }

    /// Takes bytes from the front of `input` until an event or the end of `input`;
    /// returns how many it took and the event, if any. Without an event, all of
    /// `input` was taken.
    pub fn next_event(
        &mut self,
        input: &[u8],
    ) -> Result<(usize, Option<ServerEvent>), ServerFrameError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        let result = self.frame(input);
        if let Err(e) = &result {
            self.error = Some(e.clone());
        }
        result
    }

    /// All events of `input`. Stops after the first error.
    pub fn events<'f, 'i>(&'f mut self, input: &'i [u8]) -> ServerEvents<'f, 'i> {
        ServerEvents {
            framer: self,
            input,
            done: false,
        }
    }

    fn frame(&mut self, input: &[u8]) -> Result<(usize, Option<ServerEvent>), ServerFrameError> {
        let mut used = 0;
        loop {
            if self.skip > 0 {
                let rest = input.len() - used;
                let n = usize::try_from(self.skip).map_or(rest, |skip| skip.min(rest));
                self.skip -= n as u64;
                self.len = self.len.saturating_add(n as u64);
                used += n;
                if self.skip > 0 {
                    return Ok((used, None));
                }
            }
            if let State::Rect(RectState::JpegScan { ff }) = self.state {
                let Some(rest) = input.get(used..).filter(|r| !r.is_empty()) else {
                    return Ok((used, None));
                };
                let n = self.jpeg_scan(ff, rest);
                self.len = self.len.saturating_add(n as u64);
                used += n;
                continue;
            }
            let need = self.need();
            let rest = input.get(used..).unwrap_or_default();
            let have = usize::from(self.have);
            if have == 0 && rest.len() >= need {
                // The whole header is in the input: read it in place. (Gathering it
                // byte by byte and reading it back whole stalls on store forwarding.)
                if need > 0 {
                    self.message_byte_next()?;
                }
                let head = rest.get(..need).unwrap_or_default();
                self.len = self.len.saturating_add(need as u64);
                used += need;
                if let Some(event) = self.advance(head)? {
                    return Ok((used, Some(event)));
                }
                continue;
            }
            // The header is split across inputs: gather it.
            if rest.is_empty() {
                return Ok((used, None));
            }
            if have == 0 {
                self.message_byte_next()?;
            }
            let n = (need - have).min(rest.len());
            for (slot, byte) in self.buf.iter_mut().skip(have).zip(&rest[..n]) {
                *slot = *byte;
            }
            // At most HEADER_CAP, so it fits.
            self.have = (have + n) as u8;
            self.len = self.len.saturating_add(n as u64);
            used += n;
            if usize::from(self.have) < need {
                return Ok((used, None));
            }
            self.have = 0;
            let buf = self.buf;
            if let Some(event) = self.advance(buf.get(..need).unwrap_or_default())? {
                return Ok((used, Some(event)));
            }
        }
    }

    /// Before the first header byte of a state: at a message boundary, a pending
    /// pixel format takes effect.
    fn message_byte_next(&mut self) -> Result<(), ServerFrameError> {
        if self.state == State::MessageType
            && let Some(format) = self.pending.take()
        {
            self.sizes = PixelSizes::of(&format)?;
        }
        Ok(())
    }

    /// Header bytes `state` reads.
    fn need(&self) -> usize {
        match self.state {
            State::MessageType => 1,
            State::UpdateHeader => 3,
            State::RectHeader => 12,
            State::RectDone | State::MessageDone => 0,
            State::ColourMapHeader => 5,
            State::CutTextHeader => 7,
            State::FenceHeader => 8,
            State::GiiHeader => 3,
            State::QemuHeader => 3,
            State::QemuAudioLength => 4,
            State::Rect(r) => self.rect_need(r),
        }
    }

    /// Acts on `head`, the [`ServerFramer::need`] header bytes of the state: sets what
    /// comes next and perhaps reports.
    fn advance(&mut self, head: &[u8]) -> Result<Option<ServerEvent>, ServerFrameError> {
        use ServerMessageKind as K;
        let byte = |at: usize| head.get(at).copied().unwrap_or_default();
        let u16_at = |at| be_u16(head, at).unwrap_or_default();
        let u32_at = |at| be_u32(head, at).unwrap_or_default();
        match self.state {
            State::MessageType => {
                let (kind, next) = match byte(0) {
                    smt::FRAMEBUFFER_UPDATE => (K::FramebufferUpdate, State::UpdateHeader),
                    smt::SET_COLOUR_MAP_ENTRIES => (K::SetColourMapEntries, State::ColourMapHeader),
                    smt::BELL => (K::Bell, State::MessageDone),
                    smt::SERVER_CUT_TEXT => (K::ServerCutText, State::CutTextHeader),
                    smt::END_OF_CONTINUOUS_UPDATES => {
                        (K::EndOfContinuousUpdates, State::MessageDone)
                    }
                    smt::SERVER_FENCE => (K::ServerFence, State::FenceHeader),
                    smt::XVP => {
                        // Padding, version, message code.
                        self.skip = 3;
                        (K::Xvp, State::MessageDone)
                    }
                    // The sub-type (and so the kind) comes next.
                    smt::GII => (K::GiiVersion, State::GiiHeader),
                    smt::QEMU => (K::QemuAudio, State::QemuHeader),
                    other => return Err(ServerFrameError::UnknownMessageType(other)),
                };
                self.kind = kind;
                self.state = next;
            }
            State::UpdateHeader => {
                self.rects_left = u16_at(1);
                self.state = if self.rects_left == 0 {
                    State::MessageDone
                } else {
                    State::RectHeader
                };
            }
            State::RectHeader => {
                let rect = Rectangle {
                    x: u16_at(0),
                    y: u16_at(2),
                    width: u16_at(4),
                    height: u16_at(6),
                    encoding: u32_at(8) as i32,
                };
                self.rect = rect;
                self.start_rect()?;
                return Ok(Some(ServerEvent::Rect(rect)));
            }
            State::RectDone => {
                self.rects_left = self.rects_left.saturating_sub(1);
                self.state = if self.rects_left == 0 {
                    State::MessageDone
                } else {
                    State::RectHeader
                };
            }
            State::MessageDone => {
                let event = ServerEvent::Message {
                    kind: self.kind,
                    len: self.len,
                };
                self.len = 0;
                self.state = State::MessageType;
                return Ok(Some(event));
            }
            State::ColourMapHeader => {
                self.skip = 6 * u64::from(u16_at(3));
                self.state = State::MessageDone;
            }
            State::CutTextHeader => {
                // Negative: Extended Clipboard, with the absolute value as length.
                self.skip = u64::from((u32_at(3) as i32).unsigned_abs());
                self.state = State::MessageDone;
            }
            State::FenceHeader => {
                let len = byte(7);
                if len > MAX_SERVER_FENCE_PAYLOAD {
                    return Err(ServerFrameError::FencePayloadTooLong(len));
                }
                self.skip = u64::from(len);
                self.state = State::MessageDone;
            }
            State::GiiHeader => {
                let sub = byte(0);
                self.kind = match sub & 0x7f {
                    1 => K::GiiVersion,
                    2 => K::GiiDeviceCreation,
                    _ => return Err(ServerFrameError::UnknownGiiSubtype(sub)),
                };
                // gii lengths are in the endianness bit 7 of the sub-type byte names.
                let len = if sub & 0x80 != 0 {
                    u16::from_be_bytes([byte(1), byte(2)])
                } else {
                    u16::from_le_bytes([byte(1), byte(2)])
                };
                self.skip = u64::from(len);
                self.state = State::MessageDone;
            }
            State::QemuHeader => {
                if byte(0) != 1 {
                    return Err(ServerFrameError::UnknownQemuSubtype(byte(0)));
                }
                self.state = match u16_at(1) {
                    // End, begin.
                    0 | 1 => State::MessageDone,
                    // Data: length, then the samples.
                    2 => State::QemuAudioLength,
                    op => return Err(ServerFrameError::UnknownQemuAudioOperation(op)),
                };
            }
            State::QemuAudioLength => {
                self.skip = u64::from(u32_at(0));
                self.state = State::MessageDone;
            }
            State::Rect(r) => return self.advance_rect(r, head),
        }
        Ok(None)
    }

    /// A rectangle ends after `skip` more bytes.
    fn end_rect_after(&mut self, skip: u64) {
        self.skip += skip;
        self.state = State::RectDone;
    }
}

/// Iterator over the events of one input; see [`ServerFramer::events`].
#[derive(Debug)]
pub struct ServerEvents<'f, 'i> {
    framer: &'f mut ServerFramer,
    input: &'i [u8],
    done: bool,
}

impl Iterator for ServerEvents<'_, '_> {
    type Item = Result<ServerEvent, ServerFrameError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.framer.next_event(self.input) {
            Ok((used, Some(event))) => {
                self.input = self.input.get(used..).unwrap_or_default();
                Some(Ok(event))
            }
            Ok((_, None)) => {
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

#[cfg(test)]
mod tests;
