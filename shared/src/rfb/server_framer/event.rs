//! What the server→client framer reports (rectangles, the desktop size and the answer
//! to a SetDesktopSize, message boundaries) and why it can stop following a stream.

use crate::rfb::server_message::ServerMessageKind;

/// Longest ServerFence payload the protocol allows.
pub const MAX_SERVER_FENCE_PAYLOAD: u8 = 64;

/// Why the server's stream cannot be followed. After one, the framer stays failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServerFrameError {
    #[error("unknown server message type {0}")]
    UnknownMessageType(u8),
    #[error("unknown gii server message sub-type {0}")]
    UnknownGiiSubtype(u8),
    #[error("unknown QEMU server message sub-type {0}")]
    UnknownQemuSubtype(u8),
    #[error("unknown QEMU audio operation {0}")]
    UnknownQemuAudioOperation(u16),
    #[error("unknown encoding {0}")]
    UnknownEncoding(i32),
    #[error("pixel format of {0} bits per pixel (RFB allows 8, 16 and 32)")]
    UnsupportedPixelFormat(u8),
    #[error(
        "ServerFence payload of {0} bytes is over the protocol's limit of {MAX_SERVER_FENCE_PAYLOAD}"
    )]
    FencePayloadTooLong(u8),
    #[error("Hextile sub-encoding {0:#04x} has undefined bits")]
    BadHextileSubencoding(u8),
    #[error("Tight compression control {0:#04x} is undefined")]
    BadTightControl(u8),
    #[error("Tight filter {0} is undefined")]
    BadTightFilter(u8),
    #[error("JPEG rectangle: expected a marker, got byte {0:#04x}")]
    BadJpegMarker(u8),
    #[error("JPEG rectangle: segment length {0} is below 2")]
    BadJpegLength(u16),
    #[error("cursor with alpha in encoding {0} (only Raw is defined)")]
    BadAlphaCursorEncoding(i32),
    #[error("VMware cursor type {0} is undefined")]
    BadVmwareCursorType(u8),
}

/// A FramebufferUpdate rectangle header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rectangle {
    pub x: u16,
    pub y: u16,
    pub width: u16,
    pub height: u16,
    pub encoding: i32,
}

/// The status in an ExtendedDesktopSize rectangle's y-position: how the server answered
/// a SetDesktopSize. Values past the four defined ones are kept as they came.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ResizeStatus(pub u16);

impl ResizeStatus {
    pub const OK: ResizeStatus = ResizeStatus(0);
    pub const PROHIBITED: ResizeStatus = ResizeStatus(1);
    pub const OUT_OF_RESOURCES: ResizeStatus = ResizeStatus(2);
    pub const INVALID_LAYOUT: ResizeStatus = ResizeStatus(3);

    /// The status as words: "ok", "prohibited", "out of resources", "invalid layout",
    /// or "unknown" for a value the protocol does not define.
    pub fn as_str(self) -> &'static str {
        match self.0 {
            0 => "ok",
            1 => "prohibited",
            2 => "out of resources",
            3 => "invalid layout",
            _ => "unknown",
        }
    }
}

/// The server's answer to a SetDesktopSize.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResizeAnswer {
    pub status: ResizeStatus,
    /// The desktop size now: the new one on success, the one it kept otherwise.
    pub width: u16,
    pub height: u16,
}

/// Who an ExtendedDesktopSize rectangle's x-position says changed the size.
const REASON_THIS_CLIENT: u16 = 1;

/// What the framer found in the stream. Events come in stream order, and the same
/// bytes give the same events however they are chunked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerEvent {
    /// A FramebufferUpdate rectangle starts (its payload follows).
    Rect(Rectangle),
    /// ExtendedDesktopSize with x-position 1: the server's answer to this client's
    /// SetDesktopSize.
    ResizeAnswer(ResizeAnswer),
    /// The desktop size changed for another reason: DesktopSize, or ExtendedDesktopSize
    /// for the server's own or another client's change (or the first announcement).
    DesktopSize { width: u16, height: u16 },
    /// A whole message has passed: the framer is at a message boundary.
    Message { kind: ServerMessageKind, len: u64 },
}

/// Whether an ExtendedDesktopSize rectangle answers this client's SetDesktopSize.
pub(super) fn answers_this_client(rect: &Rectangle) -> bool {
    rect.x == REASON_THIS_CLIENT
}
