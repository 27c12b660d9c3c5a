//! RFB (VNC, RFC 6143) logic the relay drives, with no I/O:
//!
//! - [`ProxyHandshake`]: runs the handshake with the browser and the VNC server at
//!   once, injecting the container's VNC password so the browser never sees it;
//! - [`ClientFramer`]: splits the browser's data-phase bytes into message spans,
//!   zero-copy, so `view` sessions can drop input and the relay knows the boundaries
//!   where it may write messages of its own;
//! - [`ServerFramer`]: follows the server's data-phase messages without copying them,
//!   reporting what they say about the desktop (the answer to a SetDesktopSize);
//! - `encode_*`: the messages the relay writes for `vnc:input` and `vnc:resize`;
//! - [`vnc_auth_response`]: VNC Authentication.
//!
//! A session: feed both sockets to a [`ProxyHandshake`] until it is done, then run
//! the browser's bytes (starting with [`Established::from_client`]) through a
//! [`ClientFramer`] and relay the server's bytes as they are (through a
//! [`ServerFramer`] too where the relay wants to know what the server answers). Every
//! length the parsers buffer is capped, and no input makes this code panic; the fuzz
//! targets in `fuzz/` check every parser.

mod auth;
#[cfg(test)]
mod chunked;
mod encode;
mod framer;
mod handshake;
mod message;
mod security;
mod server_framer;
mod server_init;
mod server_message;
mod version;
mod wire;

pub use auth::{VNC_AUTH_CHALLENGE_LEN, vnc_auth_response};
pub use encode::{
    CLIENT_CUT_TEXT_HEADER_LEN, KEY_EVENT_LEN, POINTER_EVENT_LEN, SET_DESKTOP_SIZE_LEN,
    encode_client_cut_text, encode_key_event, encode_pointer_event, encode_set_desktop_size,
};
pub use framer::{
    ClientFramer, DEFAULT_MAX_CUT_TEXT, DEFAULT_MAX_ENCODINGS, FrameError, FramerLimits,
    MAX_FENCE_PAYLOAD, Span, Spans,
};
pub use handshake::{
    Established, HandshakeError, MAX_HANDSHAKE_BUFFER, MAX_REASON_LEN, ProxyHandshake, Reason, Side,
};
pub use message::{MessageKind, message_type};
pub use security::{AuthMode, SECURITY_NONE, SECURITY_VNC_AUTH, SecurityTypes, security_type_name};
pub use server_framer::{
    MAX_SERVER_FENCE_PAYLOAD, Rectangle, ResizeAnswer, ResizeStatus, ServerEvent, ServerEvents,
    ServerFrameError, ServerFramer,
};
pub use server_init::{MAX_DESKTOP_NAME_LEN, PixelFormat, SERVER_INIT_HEADER_LEN, ServerInit};
pub use server_message::{ServerMessageKind, encoding, server_message_type};
pub use version::{PROTOCOL_VERSION_LEN, Version};
