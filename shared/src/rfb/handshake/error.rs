//! Why a proxy handshake fails, and which side is to blame.

use std::fmt;

use crate::rfb::security::SecurityTypes;

/// What the browser is told when the relay's own VNC Authentication fails.
pub(super) const RELAY_AUTH_FAILED: &str = "the relay could not authenticate to the VNC server";

/// One end of the relayed connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The VNC server in the container.
    Server,
    /// The browser (noVNC).
    Client,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Server => "VNC server",
            Side::Client => "browser",
        })
    }
}

/// A failure reason that may be missing (3.3 and 3.7 send none), printed as `: reason`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason(pub Option<String>);

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(reason) => write!(f, ": {reason}"),
            None => Ok(()),
        }
    }
}

/// Why the handshake failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    #[error("the {side} did not send an RFB ProtocolVersion (got \"{greeting}\")")]
    NotRfb { side: Side, greeting: String },
    #[error("the {side} speaks RFB {major}.{minor}; the relay needs 3.3 or later")]
    VersionTooOld { side: Side, major: u16, minor: u16 },
    #[error("the VNC server refused the connection{reason}")]
    ServerRefused { reason: Reason },
    #[error(
        "the VNC server offers no security type the relay supports (it offers {offered}; \
         the relay supports 1 (None) and 2 (VNC Authentication))"
    )]
    UnsupportedSecurity { offered: SecurityTypes },
    #[error("{RELAY_AUTH_FAILED}{reason}")]
    UpstreamAuthFailed { reason: Reason },
    #[error("the VNC server rejected the browser's VNC password{reason}")]
    ClientAuthRejected { reason: Reason },
    #[error("the browser chose security type {chosen}; the relay offered only {offered}")]
    UnofferedSecurityType { chosen: u8, offered: u8 },
    #[error("the {side} sent a {what} of {len} bytes, over the limit of {max}")]
    TooLong {
        side: Side,
        what: &'static str,
        len: u32,
        max: u32,
    },
    #[error("the {side} sent more than {max} bytes before the handshake could use them")]
    TooMuchData { side: Side, max: usize },
    #[error("the handshake has not finished")]
    Unfinished,
}

impl HandshakeError {
    /// Which side is at fault, for choosing a close code: a browser that breaks the
    /// protocol is a policy violation, a server that does is an upstream error.
    pub fn caused_by(&self) -> Side {
        use HandshakeError::*;
        match self {
            NotRfb { side, .. }
            | VersionTooOld { side, .. }
            | TooLong { side, .. }
            | TooMuchData { side, .. } => *side,
            ClientAuthRejected { .. } | UnofferedSecurityType { .. } | Unfinished => Side::Client,
            ServerRefused { .. } | UnsupportedSecurity { .. } | UpstreamAuthFailed { .. } => {
                Side::Server
            }
        }
    }
}
