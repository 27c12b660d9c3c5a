//! A TLS session's browser socket with the readiness API the pumps use ([`Socket`]):
//! the TCP stream and its rustls connection, driven in place. A read decrypts what the
//! socket holds into the caller's buffer; a write encrypts the caller's bytes straight
//! into rustls's records and hands them to the socket. No bridge task, no socket pair,
//! no copy beyond the cipher's own.
//!
//! Encrypted bytes the socket didn't take stay with rustls (at most [`TLS_BUFFER`] of
//! plaintext's worth, then writes wait): [`Socket::pending`] says so and
//! [`Socket::flush`] waits until they are out, which the write helpers do after each
//! message, so nothing is left behind when the session goes quiet. On drop the
//! connection sends close_notify if the socket takes it at once.

use std::io::{self, IoSlice, Read, Write};
use std::sync::{Mutex, MutexGuard};

use tokio::net::TcpStream;
use tokio_rustls::rustls::{self, ServerConnection};

use super::io::Socket;

/// Plaintext rustls accepts for encryption beyond what the socket has taken: one
/// relay read's worth of records waiting for the browser, at most.
const TLS_BUFFER: usize = 256 * 1024;

pub struct TlsSocket {
    tcp: TcpStream,
    /// Locked by one pump at a time, never across an await.
    conn: Mutex<ServerConnection>,
}

/// The socket as `io::Read`/`io::Write` for rustls, without blocking (WouldBlock when
/// it has nothing or no room).
struct Nonblocking<'a>(&'a TcpStream);

impl Read for Nonblocking<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

impl Write for Nonblocking<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.0.try_write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn broken(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl TlsSocket {
    /// A socket from a completed handshake (and whatever plaintext rustls already
    /// holds).
    pub fn new(tcp: TcpStream, mut conn: ServerConnection) -> TlsSocket {
        conn.set_buffer_limit(Some(TLS_BUFFER));
        TlsSocket {
            tcp,
            conn: Mutex::new(conn),
        }
    }

    fn conn(&self) -> io::Result<MutexGuard<'_, ServerConnection>> {
        self.conn
            .lock()
            .map_err(|_| io::Error::other("TLS state poisoned"))
    }

    /// Hands the socket what encrypted bytes it takes now; true when none are left.
    fn flush_some(&self, conn: &mut ServerConnection) -> io::Result<bool> {
        while conn.wants_write() {
            match conn.write_tls(&mut Nonblocking(&self.tcp)) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Encrypts what rustls takes of `bufs` and hands the socket what it takes.
    fn encrypt(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut conn = self.conn()?;
        if !self.flush_some(&mut conn)? {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = conn.writer().write_vectored(bufs)?;
        self.flush_some(&mut conn)?;
        match n {
            // Everything asked was empty, or rustls is full: nothing taken.
            0 if bufs.iter().any(|b| !b.is_empty()) => Err(io::ErrorKind::WouldBlock.into()),
            n => Ok(n),
        }
    }
}

impl Socket for TlsSocket {
    async fn readable(&self) -> io::Result<()> {
        {
            let mut conn = self.conn()?;
            let state = conn.process_new_packets().map_err(broken)?;
            if state.plaintext_bytes_to_read() > 0 || state.peer_has_closed() {
                return Ok(());
            }
        }
        self.tcp.readable().await
    }

    async fn writable(&self) -> io::Result<()> {
        loop {
            if self.flush_some(&mut *self.conn()?)? {
                return self.tcp.writable().await;
            }
            self.tcp.writable().await?;
        }
    }

    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        let mut conn = self.conn()?;
        loop {
            match conn.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            // Nothing decrypted yet: take what the socket holds.
            if conn.read_tls(&mut Nonblocking(&self.tcp))? == 0 {
                return Ok(0);
            }
            let processed = conn.process_new_packets();
            // Alerts, and key updates' answers, go out with whatever else is due.
            self.flush_some(&mut conn)?;
            processed.map_err(broken)?;
        }
    }

    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        self.encrypt(&[IoSlice::new(buf)])
    }

    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.encrypt(bufs)
    }

    fn pending(&self) -> bool {
        self.conn.lock().is_ok_and(|c| c.wants_write())
    }

    async fn flush(&self) -> io::Result<()> {
        while !self.flush_some(&mut *self.conn()?)? {
            self.tcp.writable().await?;
        }
        Ok(())
    }
}

impl Drop for TlsSocket {
    fn drop(&mut self) {
        if let Ok(mut conn) = self.conn.lock() {
            conn.send_close_notify();
            let _ = conn.write_tls(&mut Nonblocking(&self.tcp));
        }
    }
}
