//! Why a session ends: [`End`], with its close code and metrics outcome, and the
//! typed [`Stop`] that ends a session from outside its task.

use std::time::Duration;

use crate::transport::websocket::frame::FrameError;
use crate::wire::signal::Signal;

/// After the session is decided to end: time to finish the frame being written, send
/// Close and receive the browser's Close.
pub const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Why the relay ends a session from outside it (see [`StopSignal`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Stop {
    Draining = 1,
    /// Control said the container stopped (room event `container.stopped`).
    ContainerStopped = 2,
    /// socket.io: the browser disconnected.
    ClientGone = 3,
    /// socket.io: the browser sent a `vnc:data` event that isn't one binary attachment.
    BadData = 4,
    /// socket.io: the browser's bytes arrive faster than the VNC server takes them.
    InputOverflow = 5,
    /// socket.io: the browser stopped answering Engine.IO pings.
    PingTimeout = 6,
    /// A kick on the control channel named this session (or its user or container).
    Kicked = 7,
    /// The session's token was revoked.
    Revoked = 8,
    /// The share link the session was opened with was revoked (or is gone).
    ShareRevoked = 9,
}

impl Stop {
    /// The session end this stop stands for.
    pub fn end(self) -> End {
        match self {
            Stop::Draining => End::Draining,
            Stop::ContainerStopped => End::ContainerStopped,
            Stop::ClientGone => End::ClientGone,
            Stop::BadData => End::BadData,
            Stop::InputOverflow => End::InputOverflow,
            Stop::PingTimeout => End::PingTimeout,
            Stop::Kicked => End::Kicked,
            Stop::Revoked => End::Revoked,
            Stop::ShareRevoked => End::ShareRevoked,
        }
    }

    fn from_u8(value: u8) -> Stop {
        [
            Stop::ContainerStopped,
            Stop::ClientGone,
            Stop::BadData,
            Stop::InputOverflow,
            Stop::PingTimeout,
            Stop::Kicked,
            Stop::Revoked,
            Stop::ShareRevoked,
        ]
        .into_iter()
        .find(|s| *s as u8 == value)
        .unwrap_or(Stop::Draining)
    }
}

/// A session's stop: set from outside the session's task (the first [`Stop`] wins),
/// awaited inside it.
#[derive(Default)]
pub struct StopSignal(Signal);

impl StopSignal {
    pub fn set(&self, why: Stop) {
        self.0.set(why as u8);
    }

    pub fn get(&self) -> Option<Stop> {
        self.0.get().map(Stop::from_u8)
    }

    /// Resolves once set.
    pub async fn wait(&self) -> Stop {
        Stop::from_u8(self.0.wait().await)
    }
}

/// Why a session ended. Each maps to one close code and one metrics outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// The container closed its socket.
    UpstreamClosed,
    /// Reading or writing the container failed.
    UpstreamError,
    /// The browser sent Close.
    ClientClosed,
    /// The browser's connection dropped without Close.
    ClientGone,
    /// The browser broke the WebSocket protocol.
    Protocol(FrameError),
    /// The browser stopped answering Pings.
    PingTimeout,
    Idle,
    MaxDuration,
    /// The relay is shutting down.
    Draining,
    /// The container stopped.
    ContainerStopped,
    /// socket.io: a `vnc:data` event without exactly one binary attachment.
    BadData,
    /// socket.io: the browser outran the VNC server by more than the input queue.
    InputOverflow,
    /// The RFB handshake did not finish within the handshake timeout.
    HandshakeTimeout,
    /// The browser broke the RFB handshake.
    ClientHandshake,
    /// The VNC server broke the RFB handshake, offered nothing the relay speaks, or
    /// refused the container's password.
    UpstreamHandshake,
    /// The browser sent an RFB message the relay can't frame.
    RfbProtocol,
    /// The VNC server sent a message the relay can't frame, in a session whose server
    /// stream it must filter (a clipboard claim without `from_desktop`).
    UpstreamUnfiltered,
    /// Ended by an operator (kick).
    Kicked,
    /// The token was revoked.
    Revoked,
    /// The share link was revoked.
    ShareRevoked,
}

impl End {
    /// Close code and reason sent to the browser.
    pub fn close(self) -> (u16, &'static str) {
        match self {
            End::UpstreamClosed => (1000, "VNC server closed the connection"),
            End::ClientClosed | End::ClientGone => (1000, "closed"),
            End::UpstreamError => (1011, "VNC server connection failed"),
            End::Protocol(FrameError::TooBig(_)) => (1009, "message too big"),
            End::Protocol(FrameError::Text) => (1008, "text frames are not supported"),
            End::Protocol(_) => (1008, "WebSocket protocol error"),
            End::PingTimeout => (1011, "browser stopped answering pings"),
            End::Idle => (4001, "idle timeout"),
            End::MaxDuration => (4002, "maximum session duration reached"),
            End::Draining => (1001, "relay is draining"),
            End::ContainerStopped => (4004, "container stopped"),
            End::BadData => (1008, "vnc:data must carry one binary attachment"),
            End::InputOverflow => (1008, "input arrives faster than the VNC server reads it"),
            End::HandshakeTimeout => (1008, "RFB handshake timed out"),
            End::ClientHandshake => (1008, "RFB handshake failed"),
            End::UpstreamHandshake => (1011, "RFB handshake with the VNC server failed"),
            End::RfbProtocol => (1008, "RFB message the relay can't accept"),
            End::UpstreamUnfiltered => (1011, "VNC server sent a message the relay can't filter"),
            End::Kicked => (4003, "session ended by an operator"),
            End::Revoked => (4003, "token revoked"),
            End::ShareRevoked => (4003, "share revoked"),
        }
    }

    /// Label of `vnc_relay_sessions_total{outcome}`.
    pub fn outcome(self) -> &'static str {
        match self {
            End::UpstreamClosed => "upstream_closed",
            End::UpstreamError => "upstream_error",
            End::ClientClosed => "client_closed",
            End::ClientGone => "client_gone",
            End::Protocol(FrameError::TooBig(_)) => "message_too_big",
            End::Protocol(_) => "protocol_error",
            End::PingTimeout => "ping_timeout",
            End::Idle => "idle_timeout",
            End::MaxDuration => "max_duration",
            End::Draining => "draining",
            End::ContainerStopped => "container_stopped",
            End::BadData => "protocol_error",
            End::InputOverflow => "input_overflow",
            End::HandshakeTimeout => "handshake_timeout",
            End::ClientHandshake => "rfb_client_error",
            End::UpstreamHandshake => "rfb_upstream_error",
            End::RfbProtocol => "rfb_protocol_error",
            End::UpstreamUnfiltered => "rfb_upstream_unfiltered",
            End::Kicked => "kicked",
            End::Revoked => "revoked",
            End::ShareRevoked => "share_revoked",
        }
    }
}
