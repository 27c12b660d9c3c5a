//! Who is calling: a bearer JWT from the operator's identity provider, verified with a
//! configured Ed25519 or RSA public key, an HS256 secret, or the keys an OpenID Connect
//! issuer publishes (chosen by the token's `kid`), issuer and audience checked,
//! carrying `sub`, `tenant` and optional `roles: ["admin"]`.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use http::header::AUTHORIZATION;
use http::request::Parts;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::AppState;
use super::error::ApiError;
use crate::domain::Caller;
use crate::infra::oidc::{Key, Lookup, OidcKeys};

/// Clock skew allowed on the identity token's `exp`/`nbf`.
const LEEWAY_SECS: u64 = 5;
/// Longest `kid` looked up among an OpenID Connect issuer's keys (and echoed in the
/// refusal); providers use a few dozen characters.
const MAX_KID_LEN: usize = 256;

/// Verifies callers' bearer tokens.
pub struct IdentityVerifier {
    keys: Keys,
    /// Issuer, audience, leeway and required claims; the algorithm is the key's.
    validation: Validation,
}

enum Keys {
    /// One configured key of one algorithm.
    Fixed(Key),
    /// An OpenID Connect issuer's keys, by `kid`.
    Oidc(Arc<OidcKeys>),
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityKeyError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is neither an Ed25519 nor an RSA public key PEM")]
    Unknown { path: String },
}

/// Where the identity provider's verification key comes from.
pub enum IdentityKey<'a> {
    /// An Ed25519 or RSA public key PEM file.
    PublicKeyPem(&'a std::path::Path),
    /// An HS256 shared secret.
    Hs256(&'a [u8]),
    /// The keys of an OpenID Connect issuer (which is then the expected `iss`).
    Oidc(Arc<OidcKeys>),
}

#[derive(Deserialize)]
struct IdentityClaims {
    sub: String,
    tenant: String,
    #[serde(default)]
    roles: Vec<String>,
}

impl IdentityVerifier {
    pub fn new(
        key: IdentityKey<'_>,
        issuer: &str,
        audience: &str,
    ) -> Result<IdentityVerifier, IdentityKeyError> {
        let keys = match key {
            IdentityKey::Hs256(secret) => Keys::Fixed(Key {
                key: DecodingKey::from_secret(secret),
                alg: Algorithm::HS256,
            }),
            IdentityKey::Oidc(keys) => Keys::Oidc(keys),
            IdentityKey::PublicKeyPem(path) => {
                let pem = std::fs::read(path).map_err(|source| IdentityKeyError::Read {
                    path: path.display().to_string(),
                    source,
                })?;
                let (key, alg) = if let Ok(k) = DecodingKey::from_ed_pem(&pem) {
                    (k, Algorithm::EdDSA)
                } else if let Ok(k) = DecodingKey::from_rsa_pem(&pem) {
                    (k, Algorithm::RS256)
                } else {
                    return Err(IdentityKeyError::Unknown {
                        path: path.display().to_string(),
                    });
                };
                Keys::Fixed(Key { key, alg })
            }
        };
        let mut validation = Validation::default();
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECS;
        Ok(IdentityVerifier { keys, validation })
    }

    /// `self`, keeping the key cache of `running` when both fetch from the same issuer
    /// the same way (a reload does not fetch the keys again).
    pub fn keeping_keys_of(mut self, running: &IdentityVerifier) -> IdentityVerifier {
        if let (Keys::Oidc(new), Keys::Oidc(old)) = (&self.keys, &running.keys)
            && new.same_source(old)
        {
            self.keys = Keys::Oidc(old.clone());
        }
        self
    }

    /// The OpenID Connect issuer's key cache, when callers' keys come from one.
    pub fn oidc(&self) -> Option<&Arc<OidcKeys>> {
        match &self.keys {
            Keys::Oidc(keys) => Some(keys),
            Keys::Fixed(_) => None,
        }
    }

    /// The caller a bearer token names. 401 for a token that does not verify (an
    /// unknown `kid` included), saying why; 503 while an OpenID Connect issuer's keys
    /// have never loaded, as for the other dependencies the API cannot answer without:
    /// the token may be good, and the caller should retry rather than sign in again.
    pub async fn verify(&self, token: &str) -> Result<Caller, ApiError> {
        let refused = |why: String| ApiError::Unauthorized(format!("invalid bearer token: {why}"));
        // An `alg` outside the ones jsonwebtoken knows (`none` among them) fails here.
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| refused(format!("malformed header ({e})")))?;
        let key = match &self.keys {
            Keys::Fixed(key) => key.clone(),
            Keys::Oidc(keys) => {
                let kid = header
                    .kid
                    .as_deref()
                    .ok_or_else(|| refused("no kid in its header".into()))?;
                if kid.len() > MAX_KID_LEN {
                    return Err(refused(format!(
                        "its kid is longer than {MAX_KID_LEN} bytes"
                    )));
                }
                match keys.key(kid).await {
                    Lookup::Found(key) => key,
                    Lookup::UnknownKid => {
                        return Err(refused(format!(
                            "kid {kid:?} is not among the keys of {}",
                            keys.issuer()
                        )));
                    }
                    Lookup::NotLoaded(why) => {
                        return Err(ApiError::Unavailable(format!(
                            "the identity provider's keys are not loaded: {why}"
                        )));
                    }
                }
            }
        };
        // The key decides the algorithm, never the token: an HS256 token "signed" with
        // a public key as its secret, or an RS256 one for an EdDSA key, stops here.
        if header.alg != key.alg {
            return Err(refused(format!(
                "alg {:?} is not the key's ({:?})",
                header.alg, key.alg
            )));
        }
        let mut validation = self.validation.clone();
        validation.algorithms = vec![key.alg];
        let data = jsonwebtoken::decode::<IdentityClaims>(token, &key.key, &validation)
            .map_err(|e| refused(self.reason(&e)))?;
        let c = data.claims;
        if c.sub.is_empty() || c.tenant.is_empty() {
            return Err(ApiError::Unauthorized(
                "bearer token lacks sub or tenant".into(),
            ));
        }
        Ok(Caller {
            admin: c.roles.iter().any(|r| r == "admin"),
            sub: c.sub,
            tenant: c.tenant,
        })
    }

    /// Why jsonwebtoken refused a token, in words an operator can act on.
    fn reason(&self, e: &jsonwebtoken::errors::Error) -> String {
        use jsonwebtoken::errors::ErrorKind;
        let expected = |v: &Option<std::collections::HashSet<String>>| {
            v.iter().flatten().cloned().collect::<Vec<_>>().join(", ")
        };
        match e.kind() {
            ErrorKind::InvalidSignature => "its signature does not verify".into(),
            ErrorKind::ExpiredSignature => "it has expired (exp)".into(),
            ErrorKind::ImmatureSignature => "it is not valid yet (nbf)".into(),
            ErrorKind::InvalidIssuer => {
                format!("its issuer (iss) is not {}", expected(&self.validation.iss))
            }
            ErrorKind::InvalidAudience => format!(
                "its audience (aud) is not {}",
                expected(&self.validation.aud)
            ),
            ErrorKind::MissingRequiredClaim(c) => format!("it has no {c} claim"),
            _ => e.to_string(),
        }
    }
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Caller, ApiError> {
        // Verified already by the rate limit's middleware.
        if let Some(caller) = parts.extensions.get::<Caller>() {
            return Ok(caller.clone());
        }
        let token = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| ApiError::Unauthorized("missing Authorization: Bearer token".into()))?;
        let identity = state.identity.get();
        identity.verify(token.trim()).await
    }
}
