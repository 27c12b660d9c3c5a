//! What a socket.io connection has written: a signal on every write, and the number
//! of binary WebSocket frames written so far, so a session knows how many of its
//! `vnc:data` events are still queued.
//!
//! socketioxide drains a socket's queue in a writer task of its own and says nothing
//! about it, and Engine.IO's heartbeat puts its pings into the same bounded queue with a
//! `try_send` that closes the socket when the queue is full. So the pump must never fill
//! that queue, and must know when its events have left it. Each `vnc:data` event is the
//! socket's only kind of binary frame (every other packet is text), so counting binary
//! frame headers in the bytes written after the 101 response counts the events the
//! writer has taken from the queue, exactly.
//!
//! The server wraps every connection in [`Signaled`]. When a connection's first request
//! is a socket.io upgrade, the server arms its [`WriteSignal`] and hands it to
//! socketioxide in the request's extensions, where the session finds it
//! (`req_parts().extensions`): the first thing such a connection writes is the 101
//! response head, then only WebSocket frames. A socket.io upgrade later on a connection
//! that has carried other requests gets no signal, and is refused at connect.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

/// What one connection has written, shared between its [`Signaled`] and its session.
#[derive(Debug, Clone, Default)]
pub struct WriteSignal(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    written: Notify,
    /// Set before the connection writes anything: count its frames.
    armed: AtomicBool,
    binary_frames: AtomicU64,
}

impl WriteSignal {
    /// Counts binary frames from the start of the connection's output, which must be
    /// one HTTP response head (the 101) and then WebSocket frames.
    pub fn arm(&self) {
        self.0.armed.store(true, Ordering::Release);
    }

    /// Resolves after the next write, or at once if there was one since the last wait.
    pub async fn written(&self) {
        self.0.written.notified().await;
    }

    /// Binary frames whose header has been written (of an armed connection).
    pub fn binary_frames(&self) -> u64 {
        self.0.binary_frames.load(Ordering::Acquire)
    }
}

/// A connection that notifies its [`WriteSignal`] after each write, and counts binary
/// frames once armed.
#[derive(Debug)]
pub struct Signaled<I> {
    io: I,
    signal: WriteSignal,
    frames: Option<FrameCounter>,
}

impl<I> Signaled<I> {
    pub fn new(io: I, signal: WriteSignal) -> Self {
        Signaled {
            io,
            signal,
            frames: None,
        }
    }

    pub fn into_inner(self) -> I {
        self.io
    }

    /// Accounts for the first `n` bytes of `bufs`, just written.
    fn wrote<'a>(&mut self, bufs: impl IntoIterator<Item = &'a [u8]>, mut n: usize) {
        if n == 0 {
            return;
        }
        if self.frames.is_none() && self.signal.0.armed.load(Ordering::Acquire) {
            self.frames = Some(FrameCounter::default());
        }
        if let Some(frames) = &mut self.frames {
            let mut binary = 0;
            for buf in bufs {
                let take = n.min(buf.len());
                binary += frames.feed(&buf[..take]);
                n -= take;
                if n == 0 {
                    break;
                }
            }
            if binary > 0 {
                self.signal
                    .0
                    .binary_frames
                    .fetch_add(binary, Ordering::AcqRel);
            }
        }
        self.signal.0.written.notify_one();
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Signaled<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Signaled<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = result {
            self.wrote([buf], n);
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = result {
            self.wrote(bufs.iter().map(|b| &**b), n);
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Counts binary frames in a server's output: one HTTP response head, then WebSocket
/// frames (RFC 6455), fed in pieces of any size. Payloads are skipped, never held.
#[derive(Debug)]
enum FrameCounter {
    /// In the response head; how many bytes of its closing `\r\n\r\n` were just seen.
    Head { matched: usize },
    /// Collecting a frame header (2 to 14 bytes).
    Header { buf: [u8; 14], have: usize },
    /// Passing a frame's payload.
    Payload { remaining: u64 },
}

const HEAD_END: &[u8] = b"\r\n\r\n";
const BINARY: u8 = 0x2;

impl Default for FrameCounter {
    fn default() -> Self {
        FrameCounter::Head { matched: 0 }
    }
}

impl FrameCounter {
    const NEW_FRAME: FrameCounter = FrameCounter::Header {
        buf: [0; 14],
        have: 0,
    };

    /// Feeds the next bytes of the output; returns how many binary frames began in them.
    fn feed(&mut self, mut input: &[u8]) -> u64 {
        let mut binary = 0;
        while let Some(&byte) = input.first() {
            match self {
                FrameCounter::Head { matched } => {
                    *matched = if byte == HEAD_END[*matched] {
                        *matched + 1
                    } else {
                        usize::from(byte == HEAD_END[0])
                    };
                    input = &input[1..];
                    if *matched == HEAD_END.len() {
                        *self = Self::NEW_FRAME;
                    }
                }
                FrameCounter::Header { buf, have } => {
                    let want = header_len(&buf[..*have]);
                    let take = (want - *have).min(input.len());
                    buf[*have..*have + take].copy_from_slice(&input[..take]);
                    *have += take;
                    input = &input[take..];
                    if *have == header_len(&buf[..*have]) {
                        if buf[0] & 0x0f == BINARY {
                            binary += 1;
                        }
                        let remaining = payload_len(&buf[..*have]);
                        *self = if remaining == 0 {
                            Self::NEW_FRAME
                        } else {
                            FrameCounter::Payload { remaining }
                        };
                    }
                }
                FrameCounter::Payload { remaining } => {
                    let take = (*remaining).min(input.len() as u64);
                    *remaining -= take;
                    input = &input[take as usize..];
                    if *remaining == 0 {
                        *self = Self::NEW_FRAME;
                    }
                }
            }
        }
        binary
    }
}

/// A frame header's full length, as far as its first bytes tell (2 until they do).
fn header_len(header: &[u8]) -> usize {
    let Some(&second) = header.get(1) else {
        return 2;
    };
    let extended = match second & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if second & 0x80 != 0 { 4 } else { 0 };
    2 + extended + mask
}

/// The payload length of a complete frame header.
fn payload_len(header: &[u8]) -> u64 {
    match header[1] & 0x7f {
        126 => u64::from(u16::from_be_bytes([header[2], header[3]])),
        127 => u64::from_be_bytes(header[2..10].try_into().unwrap_or_default()),
        n => u64::from(n),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;
    use tokio::io::AsyncWriteExt;

    use super::*;
    use crate::transport::websocket::frame::ServerHeader;

    /// A 101 head, then what socketioxide writes for `vnc:data` events of these sizes
    /// (a text frame and a binary frame each), with a ping and a room event between.
    fn output(sizes: &[usize]) -> Vec<u8> {
        let mut out = b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\
            connection: upgrade\r\nsec-websocket-accept: x\r\n\r\n"
            .to_vec();
        let text = |out: &mut Vec<u8>, s: &str| {
            out.extend_from_slice(ServerHeader::new(0x1, s.len()).as_bytes());
            out.extend_from_slice(s.as_bytes());
        };
        text(&mut out, "0{\"sid\":\"x\"}");
        for (i, &size) in sizes.iter().enumerate() {
            text(
                &mut out,
                "451-/vnc,[\"vnc:data\",{\"_placeholder\":true,\"num\":0}]",
            );
            out.extend_from_slice(ServerHeader::new(BINARY, size).as_bytes());
            // Payload bytes that look like a 101 head's end and like frame headers.
            out.extend((0..size).map(|j| b"\r\n\x82\x7f"[(i + j) % 4]));
            if i % 2 == 0 {
                text(&mut out, "2");
                text(
                    &mut out,
                    "42/vnc,[\"vnc:event\",{\"type\":\"viewer.joined\"}]",
                );
            }
        }
        out
    }

    const SIZES: &[usize] = &[1, 125, 126, 65_535, 65_536, 70_000, 0, 3];

    #[test]
    fn counts_every_binary_frame_after_the_head_and_nothing_else() {
        let out = output(SIZES);
        let mut counter = FrameCounter::default();
        assert_eq!(counter.feed(&out), SIZES.len() as u64);
        assert!(matches!(counter, FrameCounter::Header { have: 0, .. }));
    }

    proptest! {
        #[test]
        fn any_split_counts_the_same(cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..40)) {
            let out = output(SIZES);
            let mut at: Vec<usize> = cuts.iter().map(|c| c.index(out.len() + 1)).collect();
            at.push(0);
            at.push(out.len());
            at.sort_unstable();
            let mut counter = FrameCounter::default();
            let total: u64 = at.windows(2).map(|w| counter.feed(&out[w[0]..w[1]])).sum();
            prop_assert_eq!(total, SIZES.len() as u64);
        }

        #[test]
        fn arbitrary_output_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let mut counter = FrameCounter::default();
            counter.feed(&bytes);
        }
    }

    #[tokio::test]
    async fn an_armed_connection_counts_what_it_wrote_and_every_write_signals() {
        let signal = WriteSignal::default();
        let (a, mut b) = tokio::io::duplex(1 << 20);
        let mut conn = Signaled::new(a, signal.clone());
        signal.arm();

        let waiter = tokio::spawn({
            let signal = signal.clone();
            async move { signal.written().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        let out = output(&[10, 20_000, 300]);
        let (first, rest) = out.split_at(out.len() / 2);
        conn.write_all(first).await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the write wakes the waiter")
            .unwrap();
        let (x, y) = rest.split_at(7);
        let n = conn
            .write_vectored(&[IoSlice::new(x), IoSlice::new(y)])
            .await
            .unwrap();
        conn.write_all(&rest[n..]).await.unwrap();
        assert_eq!(signal.binary_frames(), 3);
        let mut read = vec![0; out.len()];
        tokio::io::AsyncReadExt::read_exact(&mut b, &mut read)
            .await
            .unwrap();
        assert_eq!(read, out);

        // A write with nobody waiting is kept for the next wait; an empty write is not
        // a write.
        tokio::time::timeout(Duration::from_secs(5), signal.written())
            .await
            .expect("the earlier write is kept");
        assert_eq!(conn.write(b"").await.unwrap(), 0);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), signal.written())
                .await
                .is_err(),
            "an empty write signals nothing"
        );
    }

    #[tokio::test]
    async fn an_unarmed_connection_counts_nothing() {
        let signal = WriteSignal::default();
        let (a, _b) = tokio::io::duplex(1 << 20);
        let mut conn = Signaled::new(a, signal.clone());
        conn.write_all(&output(&[10, 20])).await.unwrap();
        assert_eq!(signal.binary_frames(), 0);
    }
}
