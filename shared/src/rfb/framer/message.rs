//! Reading one client message: which message a type byte starts, and how long the
//! message is, from its fixed size or the header fields that give it.

use super::limits::{FrameError, FramerLimits, MAX_FENCE_PAYLOAD};
use crate::rfb::message::{MessageKind, message_type as mt};
use crate::rfb::server_init::PixelFormat;

/// The ExtendedMouseButtons pseudo-encoding.
const EXTENDED_MOUSE_BUTTONS: i32 = -316;
/// Bit 7 of a PointerEvent's button mask: the ExtendedMouseButtons marker.
const POINTER_MARKER: u8 = 0x80;
/// Most header bytes any message needs before its length is known (ClientFence).
const HEADER_CAP: usize = 9;

/// One client message being read: its kind, how much of it has passed, and the header
/// bytes its length is read from.
#[derive(Debug, Clone)]
pub(super) struct Message {
    pub(super) kind: MessageKind,
    /// Bytes of this message taken so far.
    seen: u64,
    /// Total length, once the header has told it.
    total: Option<u64>,
    /// The header bytes, kept only to read the length fields.
    header: [u8; HEADER_CAP],
    /// SetEncodings: the encoding being read.
    word: [u8; 4],
    /// SetEncodings: ExtendedMouseButtons was among the encodings read so far.
    pub(super) lists_extended_mouse: bool,
    /// SetPixelFormat: the PIXEL_FORMAT bytes, kept for the framer's `pixel_format`.
    pub(super) format: [u8; PixelFormat::LEN],
}

/// The kind a message starts with, `None` if the sub-type byte is still to come.
pub(super) fn classify(type_byte: u8, next: Option<u8>) -> Result<Option<MessageKind>, FrameError> {
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
    pub(super) fn new(kind: MessageKind) -> Message {
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

    pub(super) fn is_complete(&self) -> bool {
        self.total == Some(self.seen)
    }

    /// Takes bytes from the front of `input` up to the end of this message; returns
    /// how many.
    pub(super) fn consume(
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
    pub(super) fn push(
        &mut self,
        byte: u8,
        limits: FramerLimits,
        extended: bool,
    ) -> Result<(), FrameError> {
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
