//! Who is calling: a bearer JWT from the operator's identity provider, verified with a
//! configured Ed25519 or RSA public key or an HS256 secret, issuer and audience checked,
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

/// Clock skew allowed on the identity token's `exp`/`nbf`.
const LEEWAY_SECS: u64 = 5;

/// Verifies callers' bearer tokens.
pub struct IdentityVerifier {
    key: DecodingKey,
    validation: Validation,
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
        let (key, alg) = match key {
            IdentityKey::Hs256(secret) => (DecodingKey::from_secret(secret), Algorithm::HS256),
            IdentityKey::PublicKeyPem(path) => {
                let pem = std::fs::read(path).map_err(|source| IdentityKeyError::Read {
                    path: path.display().to_string(),
                    source,
                })?;
                if let Ok(k) = DecodingKey::from_ed_pem(&pem) {
                    (k, Algorithm::EdDSA)
                } else if let Ok(k) = DecodingKey::from_rsa_pem(&pem) {
                    (k, Algorithm::RS256)
                } else {
                    return Err(IdentityKeyError::Unknown {
                        path: path.display().to_string(),
                    });
                }
            }
        };
        let mut validation = Validation::new(alg);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECS;
        Ok(IdentityVerifier { key, validation })
    }

    pub fn verify(&self, token: &str) -> Result<Caller, ApiError> {
        let data = jsonwebtoken::decode::<IdentityClaims>(token, &self.key, &self.validation)
            .map_err(|e| ApiError::Unauthorized(format!("invalid bearer token: {e}")))?;
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
        state.identity.get().verify(token.trim())
    }
}
