//! Callers' verification keys from an OpenID Connect issuer: its discovery document
//! (`{issuer}/.well-known/openid-configuration`, whose `issuer` must be the configured
//! one) names the JWKS, whose keys are cached by `kid`. A token with a `kid` not in the
//! cache makes the JWKS be fetched again, at most once per refresh interval, so a flood
//! of made-up kids costs the issuer one request per interval; keys older than
//! [`JWKS_MAX_AGE`] are fetched again in the background, and a reload fetches them at
//! once, so a key the issuer removed stops verifying. Only `https://` issuers are
//! fetched, or `http://` on a loopback host (a local issuer, and tests).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Uri;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// Keys fetched longer ago than this are fetched again (in the background, while the
/// cached ones keep verifying), so keys the issuer removed go away.
pub const JWKS_MAX_AGE: Duration = Duration::from_secs(600);
/// Time one fetch (connect, TLS, request, body) may take.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest discovery document or JWKS read; a larger body is refused.
pub const MAX_DOCUMENT_BYTES: usize = 256 * 1024;
/// Most keys taken from one JWKS; past it the set is refused as a whole.
pub const MAX_KEYS: usize = 32;

/// One verification key and the one algorithm it verifies.
#[derive(Clone)]
pub struct Key {
    pub key: DecodingKey,
    pub alg: Algorithm,
}

/// What the cache knows of a `kid`.
pub enum Lookup {
    Found(Key),
    /// The keys are loaded and this kid is not among them.
    UnknownKid,
    /// No key set has been loaded yet: why the last fetch failed.
    NotLoaded(String),
}

/// The issuer's keys, fetched on demand and cached.
pub struct OidcKeys {
    issuer: String,
    /// Least time between two fetches.
    refresh_interval: Duration,
    tls: Arc<rustls::ClientConfig>,
    /// Never held across an await.
    state: Mutex<KeyState>,
    /// Held during a fetch: one at a time.
    fetching: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct KeyState {
    keys: HashMap<String, Key>,
    /// When the keys in force were fetched; `None` until a fetch succeeded.
    fetched: Option<Instant>,
    /// When the last fetch started, then when it ended: the refresh interval counts
    /// from there, so a slow issuer is not asked again as soon as it answers.
    attempted: Option<Instant>,
    /// Why the last fetch failed, if it did.
    error: Option<String>,
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

#[derive(Deserialize)]
struct KeySet {
    keys: Vec<serde_json::Value>,
}

/// Why `url` may not be fetched: not `https://` (or `http://` on a loopback host), or
/// not an absolute URL without query.
pub fn check_url(url: &str) -> Result<(), String> {
    let uri: Uri = url.parse().map_err(|e| format!("{url:?}: {e}"))?;
    let host = uri.host().unwrap_or_default();
    let loopback = host == "localhost"
        || host
            .trim_matches(['[', ']'])
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match uri.scheme_str() {
        _ if host.is_empty() || uri.query().is_some() => {
            Err(format!("{url:?} is not an absolute URL without a query"))
        }
        Some("https") => Ok(()),
        Some("http") if loopback => Ok(()),
        _ => Err(format!(
            "{url:?} must be https:// (http:// only on a loopback host)"
        )),
    }
}

impl OidcKeys {
    /// A cache of `issuer`'s keys, fetched at most once per `refresh_interval`; nothing
    /// is fetched until [`OidcKeys::refresh`] or a lookup. HTTPS trusts the system's
    /// root certificates.
    pub fn new(issuer: &str, refresh_interval: Duration) -> Result<OidcKeys, String> {
        check_url(issuer)?;
        let mut roots = rustls::RootCertStore::empty();
        let found = rustls_native_certs::load_native_certs();
        let (added, _) = roots.add_parsable_certificates(found.certs);
        if added == 0 && issuer.starts_with("https:") {
            return Err("no system root certificates to verify the issuer's HTTPS with".into());
        }
        let tls = rustls::ClientConfig::builder_with_provider(vnc_shared::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(OidcKeys {
            issuer: issuer.to_owned(),
            refresh_interval,
            tls: Arc::new(tls),
            state: Mutex::default(),
            fetching: tokio::sync::Mutex::new(()),
        })
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Whether `self` fetches what `other` would, the same way (a reload then keeps
    /// the cache).
    pub fn same_source(&self, other: &OidcKeys) -> bool {
        self.issuer == other.issuer && self.refresh_interval == other.refresh_interval
    }

    fn state(&self) -> std::sync::MutexGuard<'_, KeyState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn may_fetch(&self, state: &KeyState) -> bool {
        state
            .attempted
            .is_none_or(|t| t.elapsed() >= self.refresh_interval)
    }

    /// The key of `kid`, fetching the key set again when it is not known (or, in the
    /// background, when the keys are old) and the refresh interval allows.
    pub async fn key(self: &Arc<Self>, kid: &str) -> Lookup {
        let (found, may_fetch, stale) = {
            let s = self.state();
            let stale = s.fetched.is_some_and(|t| t.elapsed() >= JWKS_MAX_AGE);
            (s.keys.get(kid).cloned(), self.may_fetch(&s), stale)
        };
        match found {
            Some(key) => {
                if stale && may_fetch {
                    let keys = self.clone();
                    tokio::spawn(async move { keys.refresh().await });
                }
                return Lookup::Found(key);
            }
            None if may_fetch => self.refresh().await,
            None => {}
        }
        let s = self.state();
        match (s.keys.get(kid), s.fetched) {
            (Some(key), _) => Lookup::Found(key.clone()),
            (None, Some(_)) => Lookup::UnknownKid,
            (None, None) => Lookup::NotLoaded(
                s.error
                    .clone()
                    .unwrap_or_else(|| "not fetched yet".to_owned()),
            ),
        }
    }

    /// Fetches the discovery document and the key set and puts the keys in force,
    /// unless another fetch ran within the refresh interval. A failure keeps the keys
    /// in force and is logged.
    pub async fn refresh(&self) {
        self.fetch(false).await
    }

    /// [`OidcKeys::refresh`] whatever the refresh interval says: the operator asks
    /// (a reload), so a key the issuer removed stops verifying now.
    pub async fn refresh_now(&self) {
        self.fetch(true).await
    }

    async fn fetch(&self, now: bool) {
        let _one = self.fetching.lock().await;
        {
            let mut s = self.state();
            if !now && !self.may_fetch(&s) {
                return;
            }
            s.attempted = Some(Instant::now());
        }
        let result = tokio::time::timeout(FETCH_TIMEOUT, self.fetch_keys())
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {FETCH_TIMEOUT:?}")));
        let label = if result.is_ok() { "ok" } else { "error" };
        metrics::counter!(crate::metrics::OIDC_KEY_FETCHES, "result" => label).increment(1);
        let mut s = self.state();
        s.attempted = Some(Instant::now());
        match result {
            Ok(keys) => {
                let mut kids: Vec<&String> = keys.keys().collect();
                kids.sort();
                tracing::info!(issuer = %self.issuer, ?kids, "identity provider keys loaded");
                s.keys = keys;
                s.fetched = Some(Instant::now());
                s.error = None;
            }
            Err(e) => {
                let e = format!("fetching the keys of {}: {e}", self.issuer);
                tracing::warn!(error = %e, "identity provider keys not refreshed");
                s.error = Some(e);
            }
        }
    }

    async fn fetch_keys(&self) -> Result<HashMap<String, Key>, String> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.issuer.trim_end_matches('/')
        );
        let discovery: Discovery = self.get_json(&url).await?;
        if discovery.issuer != self.issuer {
            return Err(format!(
                "the discovery document names issuer {:?}",
                discovery.issuer
            ));
        }
        check_url(&discovery.jwks_uri)?;
        let set: KeySet = self.get_json(&discovery.jwks_uri).await?;
        if set.keys.len() > MAX_KEYS {
            return Err(format!(
                "the key set has {} keys, more than {MAX_KEYS}",
                set.keys.len()
            ));
        }
        let mut keys = HashMap::new();
        for value in set.keys {
            // Keys of other kinds or uses (encryption, symmetric) are skipped.
            let Ok(jwk) = serde_json::from_value::<Jwk>(value) else {
                continue;
            };
            if let (Some(kid), Some(key)) = (jwk.common.key_id.clone(), verification_key(&jwk)) {
                keys.insert(kid, key);
            }
        }
        if keys.is_empty() {
            return Err("the key set has no signature key with a kid".into());
        }
        Ok(keys)
    }

    /// GETs `url` (checked by [`check_url`]) and parses its JSON body, read up to
    /// [`MAX_DOCUMENT_BYTES`]. Redirects are not followed.
    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, String> {
        let uri: Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
        let host = uri.host().unwrap_or_default().to_owned();
        let tls = uri.scheme_str() == Some("https");
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let stream = TcpStream::connect((host.trim_matches(['[', ']']), port))
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        let body = if tls {
            let name = rustls::pki_types::ServerName::try_from(host.trim_matches(['[', ']']))
                .map_err(|e| format!("{url}: {e}"))?
                .to_owned();
            let stream = tokio_rustls::TlsConnector::from(self.tls.clone())
                .connect(name, stream)
                .await
                .map_err(|e| format!("{url}: TLS: {e}"))?;
            get(stream, &uri).await
        } else {
            get(stream, &uri).await
        }
        .map_err(|e| format!("{url}: {e}"))?;
        serde_json::from_slice(&body).map_err(|e| format!("{url}: {e}"))
    }
}

/// One HTTP/1.1 GET over `stream`; the body of a 200 answer.
async fn get<S>(stream: S, uri: &Uri) -> Result<Bytes, String>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let req = http::Request::get(path)
        .header(
            http::header::HOST,
            uri.authority().map_or("", |a| a.as_str()),
        )
        .header(http::header::ACCEPT, "application/json")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let exchange = async move {
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        if resp.status() != http::StatusCode::OK {
            return Err(format!("answered {}", resp.status()));
        }
        Limited::new(resp.into_body(), MAX_DOCUMENT_BYTES)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .map_err(|e| format!("reading the body: {e}"))
        // `sender` goes here, which lets the connection end.
    };
    // The connection is driven here rather than in a task of its own, so it goes with
    // the fetch (when the fetch times out, too).
    let (_, body) = tokio::join!(conn, exchange);
    body
}

/// The key and algorithm a JWK verifies signatures with: RSA (RS256, or the RS*/PS*
/// its `alg` names), EC P-256 (ES256) or P-384 (ES384), Ed25519 (EdDSA). `None` for
/// symmetric or encryption keys, other curves, and an `alg` that does not fit the key.
fn verification_key(jwk: &Jwk) -> Option<Key> {
    use jsonwebtoken::jwk::PublicKeyUse;
    if matches!(&jwk.common.public_key_use, Some(u) if *u != PublicKeyUse::Signature) {
        return None;
    }
    let named = jwk.common.key_algorithm;
    let alg = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => match named {
            None | Some(KeyAlgorithm::RS256) => Algorithm::RS256,
            Some(KeyAlgorithm::RS384) => Algorithm::RS384,
            Some(KeyAlgorithm::RS512) => Algorithm::RS512,
            Some(KeyAlgorithm::PS256) => Algorithm::PS256,
            Some(KeyAlgorithm::PS384) => Algorithm::PS384,
            Some(KeyAlgorithm::PS512) => Algorithm::PS512,
            Some(_) => return None,
        },
        AlgorithmParameters::EllipticCurve(p) => match (&p.curve, named) {
            (EllipticCurve::P256, None | Some(KeyAlgorithm::ES256)) => Algorithm::ES256,
            (EllipticCurve::P384, None | Some(KeyAlgorithm::ES384)) => Algorithm::ES384,
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(p) => match (&p.curve, named) {
            (EllipticCurve::Ed25519, None | Some(KeyAlgorithm::EdDSA)) => Algorithm::EdDSA,
            _ => return None,
        },
        _ => return None,
    };
    Some(Key {
        key: DecodingKey::from_jwk(jwk).ok()?,
        alg,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_or_loopback_http_is_fetched() {
        for ok in [
            "https://idp.example.com",
            "https://idp.example.com/realms/a",
            "http://127.0.0.1:8080",
            "http://localhost:1/x",
            "http://[::1]:9/",
        ] {
            assert_eq!(check_url(ok), Ok(()), "{ok}");
        }
        for bad in [
            "http://idp.example.com",
            "http://10.0.0.1",
            "ftp://localhost",
            "idp.example.com",
            "https://idp.example.com/?a=b",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keys_verify_only_with_the_algorithm_of_their_kind() {
        let jwk = |v: serde_json::Value| serde_json::from_value::<Jwk>(v).unwrap();
        let ed = serde_json::json!({"kty": "OKP", "crv": "Ed25519", "kid": "a",
            "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"});
        assert_eq!(
            verification_key(&jwk(ed.clone())).unwrap().alg,
            Algorithm::EdDSA
        );
        let mut enc = ed.clone();
        enc["use"] = "enc".into();
        assert!(verification_key(&jwk(enc)).is_none());
        let mut wrong_alg = ed;
        wrong_alg["alg"] = "RS256".into();
        assert!(verification_key(&jwk(wrong_alg)).is_none());
        let hmac = serde_json::json!({"kty": "oct", "kid": "h", "k": "c2VjcmV0"});
        assert!(verification_key(&jwk(hmac)).is_none());
        let rsa = serde_json::json!({"kty": "RSA", "kid": "r", "n": "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw", "e": "AQAB", "alg": "PS256"});
        assert_eq!(verification_key(&jwk(rsa)).unwrap().alg, Algorithm::PS256);
    }
}
