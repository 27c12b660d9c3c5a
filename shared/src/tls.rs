//! TLS for the public listeners of both daemons: rustls with the ring provider (named
//! explicitly, never a process default), PEM files, ALPN `http/1.1`, optional client
//! certificates, and a certificate set that SIGHUP can swap while connections that
//! already finished their handshake go on with the old one.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio_rustls::TlsAcceptor;

use crate::swap::Swap;

/// The one application protocol both listeners speak (WebSocket upgrades, socket.io
/// and the control API are all HTTP/1.1).
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

/// Where a listener's certificate comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM CA certificates; when set, every client must present a certificate one of
    /// them signed.
    pub client_ca: Option<PathBuf>,
}

impl TlsFiles {
    /// The files a config names: none (plain TCP), or a certificate with its key and
    /// maybe a client CA.
    pub fn from_settings(
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
        client_ca: Option<PathBuf>,
    ) -> Result<Option<TlsFiles>, &'static str> {
        match (cert, key, client_ca) {
            (None, None, None) => Ok(None),
            (Some(cert), Some(key), client_ca) => Ok(Some(TlsFiles {
                cert,
                key,
                client_ca,
            })),
            (None, None, Some(_)) => Err("tls_client_ca needs tls_cert and tls_key"),
            _ => Err("tls_cert and tls_key go together: set both or neither"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: rustls::pki_types::pem::Error,
    },
    #[error("{path} holds no certificate")]
    NoCertificate { path: String },
    #[error("client CA {path}: {reason}")]
    ClientCa { path: String, reason: String },
    #[error("certificate {cert} with key {key}: {source}")]
    Config {
        cert: String,
        key: String,
        source: rustls::Error,
    },
}

/// The ring provider, for the server configs here and for TLS clients in tests and
/// tools.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn shown(path: &Path) -> String {
    path.display().to_string()
}

/// Every certificate in a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let read = |source| TlsError::Read {
        path: shown(path),
        source,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(read)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { path: shown(path) });
    }
    Ok(certs)
}

/// A server config from `files`: TLS 1.2 and 1.3, ALPN `http/1.1`, the key checked
/// against the leaf certificate.
pub fn server_config(files: &TlsFiles) -> Result<ServerConfig, TlsError> {
    let provider = provider();
    let chain = load_certs(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|source| TlsError::Read {
        path: shown(&files.key),
        source,
    })?;
    let config_error = |source| TlsError::Config {
        cert: shown(&files.cert),
        key: shown(&files.key),
        source,
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(config_error)?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let ca_error = |reason: String| TlsError::ClientCa {
                path: shown(path),
                reason,
            };
            let mut roots = rustls::RootCertStore::empty();
            for cert in load_certs(path)? {
                roots.add(cert).map_err(|e| ca_error(e.to_string()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| ca_error(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key).map_err(config_error)?;
    config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
    Ok(config)
}

/// A listener's TLS config in force, which [`ReloadableTls::reload`] replaces as a
/// whole or not at all.
pub struct ReloadableTls(Swap<TlsAcceptor>);

impl ReloadableTls {
    pub fn new(config: ServerConfig) -> ReloadableTls {
        ReloadableTls(Swap::new(TlsAcceptor::from(Arc::new(config))))
    }

    /// The acceptor for the next handshake.
    pub fn acceptor(&self) -> Arc<TlsAcceptor> {
        self.0.get()
    }

    /// Puts `config` in force for the next handshakes.
    pub fn set(&self, config: ServerConfig) {
        self.0.set(TlsAcceptor::from(Arc::new(config)));
    }
}
