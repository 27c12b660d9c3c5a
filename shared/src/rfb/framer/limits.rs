//! What one client message may declare ([`FramerLimits`]) and why the browser's
//! stream cannot be framed ([`FrameError`]).

/// Default [`FramerLimits::max_cut_text`]: 1 MiB of clipboard in one message.
pub const DEFAULT_MAX_CUT_TEXT: u32 = 1024 * 1024;
/// Default [`FramerLimits::max_encodings`]. noVNC sends about 30; TigerVNC's viewer
/// about 40.
pub const DEFAULT_MAX_ENCODINGS: u16 = 1024;
/// Longest ClientFence payload the protocol allows.
pub const MAX_FENCE_PAYLOAD: u8 = 64;

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
