//! Readiness-based socket I/O on shared references, so both half-pumps of a session can
//! share the two sockets inside one task, and a pump can wait for data before it takes
//! a buffer.

use std::io::{self, IoSlice};

use tokio::net::TcpStream;

/// A socket with tokio's readiness API: the browser's TCP connection, or a TLS
/// session's TCP connection with its rustls state (`tls.rs`).
pub trait Socket: Send + Sync + 'static {
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send;
    fn writable(&self) -> impl Future<Output = io::Result<()>> + Send;
    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize>;
    fn try_write(&self, buf: &[u8]) -> io::Result<usize>;
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;
    /// Bytes a write took that are not on their way yet (TLS records the socket had no
    /// room for); a plain socket has none.
    fn pending(&self) -> bool {
        false
    }
    /// Waits until nothing is [`Socket::pending`].
    fn flush(&self) -> impl Future<Output = io::Result<()>> + Send {
        std::future::ready(Ok(()))
    }
}

macro_rules! readiness_socket {
    ($($ty:ty),*) => {$(
        impl Socket for $ty {
            fn readable(&self) -> impl Future<Output = io::Result<()>> + Send {
                <$ty>::readable(self)
            }
            fn writable(&self) -> impl Future<Output = io::Result<()>> + Send {
                <$ty>::writable(self)
            }
            fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
                <$ty>::try_read(self, buf)
            }
            fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
                <$ty>::try_write(self, buf)
            }
            fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
                <$ty>::try_write_vectored(self, bufs)
            }
        }
    )*};
}

readiness_socket!(TcpStream);

/// Waits until `stream` is readable and only then takes a pooled buffer of `size`
/// bytes to read into. Returns the buffer and the byte count (0 at EOF).
pub async fn read_when_ready(stream: &impl Socket, size: usize) -> io::Result<(Vec<u8>, usize)> {
    loop {
        stream.readable().await?;
        let mut buf = crate::wire::bufpool::take(size);
        match stream.try_read(&mut buf) {
            Ok(n) => return Ok((buf, n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => crate::wire::bufpool::give(buf),
            Err(e) => {
                crate::wire::bufpool::give(buf);
                return Err(e);
            }
        }
    }
}

/// Writes as much of `head` then `body` as the socket takes now, with vectored
/// writes (`writev`), so a frame header and the payload it announces go out without
/// copying the payload. `done` counts bytes written across calls; returns whether
/// everything is out.
pub fn try_write_vectored(
    stream: &impl Socket,
    head: &[u8],
    body: &[u8],
    done: &mut usize,
) -> io::Result<bool> {
    let total = head.len() + body.len();
    while *done < total {
        let result = if *done < head.len() {
            stream.try_write_vectored(&[IoSlice::new(&head[*done..]), IoSlice::new(body)])
        } else {
            stream.try_write(&body[*done - head.len()..])
        };
        match result {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => *done += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Writes the rest of `head` then `body` (after the first `done` bytes), waiting for
/// the socket as needed.
pub async fn write_all_vectored(
    stream: &impl Socket,
    head: &[u8],
    body: &[u8],
    mut done: usize,
) -> io::Result<()> {
    while !try_write_vectored(stream, head, body, &mut done)? {
        stream.writable().await?;
    }
    stream.flush().await
}

/// Writes all of `data`.
pub async fn write_all(stream: &impl Socket, data: &[u8]) -> io::Result<()> {
    write_all_vectored(stream, &[], data, 0).await
}
