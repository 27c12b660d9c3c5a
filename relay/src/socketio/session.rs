//! One socket.io session: the container's RFB socket pumped to and from one socket.io
//! socket, both directions inside one task.
//!
//! Container → browser: each read (at most [`MAX_DATA_EVENT`]) is one `vnc:data`
//! event. When the socket's queue is full the pump stops reading from the container
//! and retries, so a slow browser throttles the VNC server through TCP; bytes are
//! never dropped. Browser → container: `vnc:data` payloads arrive in order through
//! the input queue and are written as they are.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use serde::Serialize;
use socketioxide::extract::SocketRef;
use socketioxide::{SendError, SocketError};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::sleep;

use super::{Adapter, MAX_DATA_EVENT};
use crate::config::Limits;
use crate::io::write_all;
use crate::metrics::SessionMetrics;
use crate::session::{Activity, CLOSE_GRACE, End, Stop};
use crate::signal::Signal;

/// Longest pause between retries while the socket's queue is full.
const MAX_FULL_PAUSE: Duration = Duration::from_millis(16);

/// Relays until the session ends; returns why.
pub async fn relay(
    socket: &SocketRef<Adapter>,
    upstream: TcpStream,
    mut input: mpsc::Receiver<Bytes>,
    limits: &Limits,
    stop: &Signal,
    metrics: &SessionMetrics,
) -> End {
    let activity = Activity::default();
    let read_size = limits.read_buffer_size.min(MAX_DATA_EVENT);
    let up = async {
        while let Some(data) = input.recv().await {
            if write_all(&upstream, &data).await.is_err() {
                return End::UpstreamClosed;
            }
            metrics.to_upstream.increment(data.len() as u64);
            activity.touch();
        }
        End::ClientGone
    };
    let down = async {
        loop {
            if upstream.readable().await.is_err() {
                return End::UpstreamError;
            }
            let mut buf = BytesMut::with_capacity(read_size);
            let n = match upstream.try_read_buf(&mut buf) {
                Ok(0) => return End::UpstreamClosed,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(_) => return End::UpstreamError,
            };
            if !emit(socket, "vnc:data", &buf.freeze()).await {
                return End::ClientGone;
            }
            metrics.to_client.increment(n as u64);
            activity.touch();
        }
    };
    tokio::select! {
        biased;
        v = stop.wait() => Stop::end_for(v),
        _ = sleep(limits.max_session_duration) => End::MaxDuration,
        _ = activity.idle(limits.idle_timeout) => End::Idle,
        e = up => e,
        e = down => e,
    }
}

/// Emits one event, waiting while the socket's queue is full; false once the socket is
/// gone.
async fn emit<T: Serialize + ?Sized>(socket: &SocketRef<Adapter>, event: &str, data: &T) -> bool {
    let mut pause = Duration::from_millis(1);
    loop {
        match socket.emit(event, data) {
            Ok(()) => return true,
            Err(SendError::Socket(SocketError::InternalChannelFull)) => {
                sleep(pause).await;
                pause = (pause * 2).min(MAX_FULL_PAUSE);
            }
            Err(_) => return false,
        }
    }
}

/// Emits a last event, giving a browser that reads nothing [`CLOSE_GRACE`].
pub async fn emit_within<T: Serialize + ?Sized>(
    socket: &SocketRef<Adapter>,
    event: &str,
    data: &T,
) {
    let _ = tokio::time::timeout(CLOSE_GRACE, emit(socket, event, data)).await;
}
