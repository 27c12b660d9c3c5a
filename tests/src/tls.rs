//! A test PKI: CAs, the certificates they sign as PEM files, and TLS clients that
//! trust one CA (and may present a client certificate).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, date_time_ymd};
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use vnc_shared::tls::{load_certs, provider};

/// A certificate and its key, as PEM files.
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// When a certificate is valid.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    /// From yesterday for a year.
    Current,
    /// All of 2020.
    Expired,
}

pub struct TestCa {
    dir: tempfile::TempDir,
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate, PEM.
    pub cert: PathBuf,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA certificate");
        let path = dir.path().join(format!("{name}.crt"));
        std::fs::write(&path, cert.pem()).expect("write CA");
        TestCa {
            dir,
            issuer: Issuer::new(params, key),
            cert: path,
        }
    }

    /// A certificate for `localhost` and `127.0.0.1` (server or client), written as
    /// `{name}.crt` and `{name}.key` in the CA's folder.
    pub fn issue(&self, name: &str, validity: Validity) -> CertFiles {
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .expect("leaf params");
        params.distinguished_name.push(DnType::CommonName, name);
        if validity == Validity::Expired {
            params.not_before = date_time_ymd(2020, 1, 1);
            params.not_after = date_time_ymd(2020, 12, 31);
        } else {
            let now = std::time::SystemTime::now();
            params.not_before = (now - std::time::Duration::from_secs(86_400)).into();
            params.not_after = (now + std::time::Duration::from_secs(365 * 86_400)).into();
        }
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign leaf");
        let files = CertFiles {
            cert: self.dir.path().join(format!("{name}.crt")),
            key: self.dir.path().join(format!("{name}.key")),
        };
        std::fs::write(&files.cert, cert.pem()).expect("write certificate");
        std::fs::write(&files.key, key.serialize_pem()).expect("write key");
        files
    }

    /// A TLS client that trusts this CA only, presenting `identity` if given.
    pub fn client(&self, identity: Option<&CertFiles>) -> Arc<ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in load_certs(&self.cert).expect("CA certificate") {
            roots.add(cert).expect("trust CA");
        }
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots);
        let mut config = match identity {
            None => builder.with_no_client_auth(),
            Some(files) => builder
                .with_client_auth_cert(
                    load_certs(&files.cert).expect("client cert"),
                    key(&files.key),
                )
                .expect("client certificate"),
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

fn key(path: &Path) -> rustls::pki_types::PrivateKeyDer<'static> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::PrivateKeyDer::from_pem_file(path).expect("client key")
}

/// Opens TLS to `addr` as `localhost`.
pub async fn connect(
    addr: std::net::SocketAddr,
    client: Arc<ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    TlsConnector::from(client)
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
}

/// `GET path` over TLS; the status and body of the answer.
pub async fn https_get(
    addr: std::net::SocketAddr,
    client: Arc<ClientConfig>,
    path: &str,
) -> anyhow::Result<(u16, String)> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    crate::ws::http_over(connect(addr, client).await?, request.as_bytes()).await
}
