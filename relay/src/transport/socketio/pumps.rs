//! The socket.io transport of a session: the container's RFB socket pumped to and from
//! one socket.io socket, both directions inside the session's task.
//!
//! Container → browser: each read (at most [`MAX_DATA_EVENT`]) is one `vnc:data`
//! event. Reads go into one reused block: socketioxide copies every binary attachment
//! as it queues the event, so the block is free again once the event is queued. At most
//! [`SOCKET_BUFFER`] `vnc:data` events wait in the socket's queue (counted by the
//! connection's [`WriteSignal`]); beyond that the pump stops reading from the container
//! until the socket's writer takes one, so a slow browser throttles the VNC server
//! through TCP, bytes are never dropped, and the queue keeps room for Engine.IO's pings
//! and the relay's other events. A recorded session also hands each event's bytes to its
//! recorder (the same `Bytes`, no copy). Each read is also shown to an [`AnswerReader`]
//! (no copy), which finds the server's answers to SetDesktopSize for `vnc:resized`.
//!
//! Browser → container: `vnc:data` payloads arrive in order through the input queue
//! and are written as they are; structured input is written between the browser's
//! messages.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;
use serde_json::json;
use socketioxide::extract::SocketRef;
use socketioxide::{SendError, SocketError};
use tokio::sync::mpsc;
use vnc_shared::rfb::{
    Established, ResizeAnswer, encode_client_cut_text, encode_key_event, encode_pointer_event,
    encode_set_desktop_size,
};

use super::resize::{AnswerReader, PendingResizes, answered_payload, no_answer_payload};
use super::{Adapter, MAX_DATA_EVENT, SOCKET_BUFFER, WriteSignal};
use crate::session::end::{CLOSE_GRACE, End};
use crate::session::{Link, Transport};
use crate::wire::io::write_all;
use crate::wire::signal::Signal;

/// First and longest wait for a write between retries while the socket's queue stays
/// full.
const MIN_FULL_PAUSE: Duration = Duration::from_micros(500);
const MAX_FULL_PAUSE: Duration = Duration::from_millis(16);

/// Structured input the relay holds while the browser's own RFB message is unfinished
/// (it is written at the next message boundary): at most this many events...
const MAX_HELD_INPUT: usize = 64;
/// ...and at most this many bytes of their RFB messages. Past either bound the session
/// ends with [`End::InputOverflow`] (1008): a browser that never finishes its message
/// can't make the relay hold its input.
const MAX_HELD_INPUT_BYTES: usize = 256 * 1024;

/// What the browser sends up, in arrival order.
#[derive(Debug)]
pub enum Upward {
    /// `vnc:data`: raw RFB bytes.
    Data(Bytes),
    /// `vnc:input` or `vnc:resize`, already validated, encoded when written.
    Input(Input),
}

/// Structured input from `vnc:input` and `vnc:resize`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    Key { down: bool, keysym: u32 },
    Pointer { x: u16, y: u16, buttons: u8 },
    Clipboard(String),
    Resize { width: u16, height: u16 },
}

impl Input {
    /// The RFB message. Pointer buttons are validated to 0..=127, so bit 7, which
    /// ExtendedMouseButtons gives a meaning, stays clear.
    fn encode(&self) -> Vec<u8> {
        match self {
            Input::Key { down, keysym } => encode_key_event(*down, *keysym).to_vec(),
            Input::Pointer { x, y, buttons } => encode_pointer_event(*x, *y, *buttons).to_vec(),
            Input::Clipboard(text) => encode_client_cut_text(text),
            Input::Resize { width, height } => encode_set_desktop_size(*width, *height).to_vec(),
        }
    }
}

/// The socket.io transport: the socket, and the browser's input in arrival order.
pub struct SocketIoTransport {
    browser: SocketSink,
    input: mpsc::Receiver<Upward>,
    /// Set once the socket is gone.
    gone: Arc<Signal>,
}

impl SocketIoTransport {
    /// `written` is the connection's armed signal.
    pub fn new(
        socket: SocketRef<Adapter>,
        written: WriteSignal,
        input: mpsc::Receiver<Upward>,
        gone: Arc<Signal>,
    ) -> Self {
        SocketIoTransport {
            browser: SocketSink::new(socket, written),
            input,
            gone,
        }
    }
}

impl Transport for SocketIoTransport {
    /// One `vnc:data` event.
    async fn send(&mut self, bytes: &[u8]) -> Result<(), End> {
        let data = Bytes::copy_from_slice(bytes);
        match self.browser.send_data(&data).await {
            true => Ok(()),
            false => Err(End::ClientGone),
        }
    }

    /// The next `vnc:data` bytes from the ordered input queue (structured input is not
    /// taken before the data phase).
    async fn recv(&mut self) -> Result<Vec<u8>, End> {
        loop {
            match self.input.recv().await {
                Some(Upward::Data(data)) if !data.is_empty() => return Ok(data.to_vec()),
                Some(Upward::Data(_)) => {}
                Some(Upward::Input(i)) => {
                    tracing::debug!(input = ?i, "structured input before the RFB handshake ended: dropped");
                }
                None => return Err(End::ClientGone),
            }
        }
    }

    /// The browser hears why in `vnc:end` (see [`Transport::close`]).
    async fn refuse(&mut self, _end: End) {}

    async fn relay(&mut self, link: Link<'_>, established: Established) -> End {
        let Link {
            upstream,
            limits,
            metrics,
            mut recorder,
            policy,
            activity,
            ending,
            mut filter,
            mut cut_text,
        } = link;
        let browser = &self.browser;
        let input = &mut self.input;
        // The server's messages are followed from the first byte after ServerInit. Only
        // for sessions that may resize: view tokens can't.
        let mut answers = (!policy.view_only).then(|| AnswerReader::new(filter.formats()));
        let pending = PendingResizes::default();
        let early = {
            let data_start = established.to_client.len() - established.server_data_len;
            let data = established.to_client.get(data_start..).unwrap_or_default();
            answers.as_mut().map(|a| a.read(data)).unwrap_or_default()
        };
        if !report(browser, &pending, early).await {
            return End::ClientGone;
        }
        let read_size = limits.read_buffer_size.min(MAX_DATA_EVENT);
        let up = async {
            let mut held = HeldInput::default();
            let mut next = Some(Upward::Data(Bytes::from(established.from_client)));
            loop {
                match next.take() {
                    Some(Upward::Data(data)) => match filter.forward(upstream, &data).await {
                        Ok(n) => metrics.to_upstream.increment(n as u64),
                        Err(end) => return end,
                    },
                    Some(Upward::Input(i)) => {
                        if let Err(end) = held.push(i) {
                            return end;
                        }
                    }
                    None => {}
                }
                if filter.at_boundary() {
                    for (i, msg) in held.drain() {
                        if write_all(upstream, &msg).await.is_err() {
                            return End::UpstreamClosed;
                        }
                        metrics.to_upstream.increment(msg.len() as u64);
                        if let Input::Resize { width, height } = i
                            && let Some(given_up) = pending.sent(width, height)
                        {
                            browser
                                .emit("vnc:resized", &no_answer_payload(&given_up))
                                .await;
                        }
                    }
                }
                activity.touch();
                match input.recv().await {
                    Some(up) => next = Some(up),
                    None => return End::ClientGone,
                }
            }
        };
        let down = async {
            // One block for every read: once socketioxide has copied an event's bytes
            // (and no recorder holds them), `reserve` takes the block back in place.
            let mut buf = BytesMut::new();
            loop {
                if upstream.readable().await.is_err() {
                    return End::UpstreamError;
                }
                buf.reserve(read_size);
                let mut n = match upstream.try_read_buf(&mut (&mut buf).limit(read_size)) {
                    Ok(0) => return End::UpstreamClosed,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                    Err(_) => return End::UpstreamError,
                };
                if let Some(cut) = cut_text.as_mut() {
                    n = match cut.keep(&mut buf) {
                        Ok(kept) => kept,
                        Err(end) => return end,
                    };
                    buf.truncate(n);
                    if n == 0 {
                        continue;
                    }
                }
                let data = buf.split().freeze();
                if !browser.send_data(&data).await {
                    return End::ClientGone;
                }
                metrics.to_client.increment(n as u64);
                activity.touch();
                if let Some(reader) = answers.as_mut()
                    && !report(browser, &pending, reader.read(&data)).await
                {
                    return End::ClientGone;
                }
                if let Some(r) = recorder.as_mut() {
                    r.record_bytes(data);
                }
            }
        };
        // Requests the server left unanswered.
        let expire = async {
            loop {
                let request = pending.expired().await;
                if !browser
                    .emit("vnc:resized", &no_answer_payload(&request))
                    .await
                {
                    return End::ClientGone;
                }
            }
        };
        tokio::select! {
            biased;
            end = ending.wait() => end,
            e = up => e,
            e = down => e,
            e = expire => e,
        }
    }

    /// `vnc:end {code, reason}`, then the browser's hang-up within the grace
    /// (vnc-socketio.js hangs up on vnc:end): a connection closed while the browser's
    /// bytes are still unread is reset, and a reset can lose vnc:end on its way.
    async fn close(self, end: End) {
        let socket = &self.browser.socket;
        if end == End::ClientGone || !socket.connected() {
            return;
        }
        let (code, reason) = end.close();
        self.browser
            .emit_within("vnc:end", &json!({ "code": code, "reason": reason }))
            .await;
        let _ = tokio::time::timeout(CLOSE_GRACE, self.gone.wait()).await;
        let _ = self.browser.socket.clone().disconnect();
    }
}

/// Structured input waiting for the browser's current RFB message to end, encoded,
/// bounded by [`MAX_HELD_INPUT`] events and [`MAX_HELD_INPUT_BYTES`] bytes.
#[derive(Default)]
struct HeldInput {
    events: Vec<(Input, Vec<u8>)>,
    bytes: usize,
}

impl HeldInput {
    /// Holds one more event, unless that passes either bound.
    fn push(&mut self, input: Input) -> Result<(), End> {
        let msg = input.encode();
        if self.events.len() == MAX_HELD_INPUT || self.bytes + msg.len() > MAX_HELD_INPUT_BYTES {
            return Err(End::InputOverflow);
        }
        self.bytes += msg.len();
        self.events.push((input, msg));
        Ok(())
    }

    /// The held events with their messages, in arrival order; empty afterwards.
    fn drain(&mut self) -> impl Iterator<Item = (Input, Vec<u8>)> + '_ {
        self.bytes = 0;
        self.events.drain(..)
    }
}

/// Emits `vnc:resized` for each of the server's answers, each settling the oldest
/// pending request; false once the socket is gone.
async fn report(
    browser: &SocketSink,
    pending: &PendingResizes,
    answers: Vec<ResizeAnswer>,
) -> bool {
    for answer in answers {
        pending.answered();
        if !browser
            .emit("vnc:resized", &answered_payload(&answer))
            .await
        {
            return false;
        }
    }
    true
}

/// The browser's socket, as a session writes to it.
struct SocketSink {
    socket: SocketRef<Adapter>,
    written: WriteSignal,
    /// `vnc:data` events emitted so far; each is one binary frame on the connection.
    data_sent: AtomicU64,
}

impl SocketSink {
    fn new(socket: SocketRef<Adapter>, written: WriteSignal) -> Self {
        SocketSink {
            socket,
            written,
            data_sent: AtomicU64::new(0),
        }
    }

    /// Emits one `vnc:data` event once fewer than [`SOCKET_BUFFER`] of them wait in the
    /// socket's queue; false once the socket is gone.
    async fn send_data(&self, data: &Bytes) -> bool {
        let sent = self.data_sent.load(Ordering::Relaxed);
        while sent.saturating_sub(self.written.binary_frames()) >= SOCKET_BUFFER as u64 {
            self.written.written().await;
        }
        self.data_sent.store(sent + 1, Ordering::Relaxed);
        self.emit("vnc:data", data).await
    }

    /// Emits one event, waiting while the socket's queue is full (the room kept for
    /// events other than `vnc:data`, taken by a burst of room events); false once the
    /// socket is gone.
    async fn emit<T: Serialize + ?Sized>(&self, event: &str, data: &T) -> bool {
        let mut pause = MIN_FULL_PAUSE;
        loop {
            match self.socket.emit(event, data) {
                Ok(()) => return true,
                Err(SendError::Socket(SocketError::InternalChannelFull)) => {
                    let _ = tokio::time::timeout(pause, self.written.written()).await;
                    pause = (pause * 2).min(MAX_FULL_PAUSE);
                }
                Err(_) => return false,
            }
        }
    }

    /// Emits a last event, giving a browser that reads nothing [`CLOSE_GRACE`].
    async fn emit_within<T: Serialize + ?Sized>(&self, event: &str, data: &T) {
        let _ = tokio::time::timeout(CLOSE_GRACE, self.emit(event, data)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_input_is_bounded_in_events_and_bytes() {
        let key = Input::Key {
            down: true,
            keysym: 0x61,
        };
        let mut held = HeldInput::default();
        for _ in 0..MAX_HELD_INPUT {
            assert_eq!(held.push(key.clone()), Ok(()));
        }
        assert_eq!(held.push(key.clone()), Err(End::InputOverflow));
        assert_eq!(held.drain().count(), MAX_HELD_INPUT);
        assert_eq!(held.drain().count(), 0);

        let text = "x".repeat(60 * 1024);
        let fits = MAX_HELD_INPUT_BYTES / (text.len() + 8);
        for _ in 0..fits {
            assert_eq!(held.push(Input::Clipboard(text.clone())), Ok(()));
        }
        assert_eq!(held.push(Input::Clipboard(text)), Err(End::InputOverflow));
        // Drained, it holds nothing again.
        assert_eq!(held.drain().count(), fits);
        assert_eq!(held.push(key), Ok(()));
    }
}
