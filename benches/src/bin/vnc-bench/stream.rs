//! What a `ws://`/`wss://` or `sio://`/`sios://` connection runs over: plain TCP, or TLS
//! over TCP (rustls, ring provider, trusting only the CA given with `--ca`).
//!
//! An enum rather than a boxed trait object: the plain path keeps a bare `TcpStream`
//! (one predictable branch per read or write, no allocation, no dynamic dispatch), and
//! only the TLS state, which is large, is boxed.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use anyhow::{Context as _, Result, anyhow};
use futures_util::FutureExt;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use vnc_shared::tls::{ALPN_HTTP1, load_certs, provider};

/// TLS settings of one secure target: whom to trust and which name the server's
/// certificate must carry (the URL's host; an IP literal is checked against the
/// certificate's IP addresses).
#[derive(Clone)]
pub struct TlsTarget {
    /// Shared by every target of a run, so sessions can resume.
    connector: TlsConnector,
    name: ServerName<'static>,
}

impl fmt::Debug for TlsTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsTarget")
            .field("name", &self.name.to_str())
            .finish_non_exhaustive()
    }
}

impl TlsTarget {
    /// `host` as a URL spells it: a DNS name, an IPv4 literal or a bracketed IPv6 one.
    pub fn new(connector: &TlsConnector, host: &str) -> Result<TlsTarget> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(bare.to_owned())
            .map_err(|e| anyhow!("{host:?} is not a TLS server name: {e}"))?;
        Ok(TlsTarget {
            connector: connector.clone(),
            name,
        })
    }
}

/// A TLS client that trusts the CA certificates in `ca` (PEM) and nothing else, and
/// offers ALPN `http/1.1` like a browser opening a WebSocket.
pub fn connector(ca: &Path) -> Result<TlsConnector> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in load_certs(ca)? {
        roots
            .add(cert)
            .with_context(|| format!("CA certificate in {}", ca.display()))?;
    }
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}

pub enum Stream {
    Tcp(TcpStream),
    /// Boxed: rustls' connection state is about a kilobyte.
    Tls(Box<TlsStream<TcpStream>>),
}

impl Stream {
    /// TCP connect with TCP_NODELAY, then the TLS handshake if `tls` is given. The
    /// caller bounds it with a timeout.
    pub async fn connect(addr: SocketAddr, tls: Option<&TlsTarget>) -> Result<Stream> {
        let tcp = TcpStream::connect(addr)
            .await
            .with_context(|| format!("tcp connect {addr}"))?;
        tcp.set_nodelay(true)?;
        let Some(tls) = tls else {
            return Ok(Stream::Tcp(tcp));
        };
        let stream = tls
            .connector
            .connect(tls.name.clone(), tcp)
            .await
            .with_context(|| format!("TLS handshake with {addr} as {}", tls.name.to_str()))?;
        Ok(Stream::Tls(Box::new(stream)))
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Stream::Tcp(s) => s.local_addr(),
            Stream::Tls(s) => s.get_ref().0.local_addr(),
        }
    }

    /// `write_all`, and for TLS a flush: rustls keeps the encrypted bytes a full socket
    /// didn't take, and the caller may only read next.
    pub async fn send_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.write_all(buf).await?;
        if let Stream::Tls(s) = self {
            s.flush().await?;
        }
        Ok(())
    }

    /// Writes what it can without waiting; `WouldBlock` if nothing was taken. Over TLS,
    /// rustls takes the bytes into its own buffer and writes what the socket accepts;
    /// a rest (only if the socket's send buffer is full) goes with the next write.
    pub fn try_write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.try_write(buf),
            Stream::Tls(s) => s
                .write(buf)
                .now_or_never()
                .unwrap_or_else(|| Err(io::ErrorKind::WouldBlock.into())),
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Tcp(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A throwaway PKI for tests: a CA, and a TLS acceptor with a certificate it signed.
#[cfg(test)]
pub mod test_pki {
    use std::path::PathBuf;

    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    use tokio_rustls::TlsAcceptor;
    use vnc_shared::tls::{TlsFiles, server_config};

    pub struct TestPki {
        /// Holds the PEM files.
        _dir: tempfile::TempDir,
        /// The CA certificate, PEM: what `--ca` names.
        pub ca: PathBuf,
        /// A server whose certificate the CA signed for `names`.
        pub acceptor: TlsAcceptor,
    }

    /// A CA and a server certificate for `names` (DNS names or IP literals), built with
    /// the relay's own server config.
    pub fn new(names: &[&str]) -> TestPki {
        let dir = tempfile::tempdir().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate().unwrap();
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf_params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();

        let ca = dir.path().join("ca.crt");
        let files = TlsFiles {
            cert: dir.path().join("server.crt"),
            key: dir.path().join("server.key"),
            client_ca: None,
        };
        std::fs::write(&ca, ca_cert.pem()).unwrap();
        std::fs::write(&files.cert, leaf.pem()).unwrap();
        std::fs::write(&files.key, leaf_key.serialize_pem()).unwrap();
        let config = server_config(&files).unwrap();
        TestPki {
            _dir: dir,
            ca,
            acceptor: TlsAcceptor::from(std::sync::Arc::new(config)),
        }
    }
}
