//! A signal on every write to a connection, so a pump whose socket.io queue is full can
//! wait for the socket's writer instead of polling.
//!
//! socketioxide drains a socket's queue in a writer task of its own and has no way to
//! wait for room in it. Every write that writer makes to the connection follows packets
//! taken from the queue, so the connection's writes are the signal: the server wraps
//! each connection in [`Signaled`] and hands socketioxide the [`WriteSignal`] in the
//! request's extensions, where the session finds it (`req_parts().extensions`).

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

/// Notified after each write to one connection.
#[derive(Debug, Clone, Default)]
pub struct WriteSignal(Arc<Notify>);

impl WriteSignal {
    /// Resolves after the next write, or at once if there was one since the last wait.
    pub async fn written(&self) {
        self.0.notified().await;
    }
}

/// A connection that notifies its [`WriteSignal`] after each write that wrote bytes.
#[derive(Debug)]
pub struct Signaled<I> {
    io: I,
    signal: WriteSignal,
}

impl<I> Signaled<I> {
    pub fn new(io: I, signal: WriteSignal) -> Self {
        Signaled { io, signal }
    }

    pub fn into_inner(self) -> I {
        self.io
    }

    fn wrote(&self, result: &Poll<io::Result<usize>>) {
        if matches!(result, Poll::Ready(Ok(n)) if *n > 0) {
            self.signal.0.notify_one();
        }
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
        self.wrote(&result);
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.wrote(&result);
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::AsyncWriteExt;

    use super::*;

    #[tokio::test]
    async fn a_write_wakes_a_waiter_and_one_before_the_wait_is_kept() {
        let signal = WriteSignal::default();
        let (a, _b) = tokio::io::duplex(64);
        let mut conn = Signaled::new(a, signal.clone());

        let waiter = tokio::spawn({
            let signal = signal.clone();
            async move { signal.written().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        conn.write_all(b"x").await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the write wakes the waiter")
            .unwrap();

        // A write with nobody waiting is kept for the next wait; an empty write is not
        // a write.
        conn.write_all(b"y").await.unwrap();
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
}
