//! Operator commands that need no running service: `keys generate`, `token mint`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use vnc_shared::token::{
    ClipboardPolicy, FilePolicy, KeyError, Minted, Scope, SignError, Signer, TokenRequest,
    generate_ed25519_pair,
};

/// Key id used when the operator names none: the date, so rotated keys sort.
pub fn default_kid() -> String {
    let days = vnc_shared::token::unix_now() / 86_400;
    format!("key-{days}")
}

/// Writes a fresh Ed25519 pair into `dir`; returns (private, public) paths.
pub fn generate_keys(dir: &Path, kid: &str) -> Result<(PathBuf, PathBuf), KeyError> {
    generate_ed25519_pair(dir, kid)
}

/// What `token mint` needs.
pub struct MintArgs<'a> {
    pub private_key: &'a Path,
    pub kid: Option<String>,
    pub issuer: &'a str,
    pub audience: &'a str,
    pub container: &'a str,
    pub user: &'a str,
    pub tenant: &'a str,
    pub scope: Scope,
    pub ttl: Duration,
    pub files: FilePolicy,
    pub clipboard: ClipboardPolicy,
}

#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("signing: {0}")]
    Sign(#[from] SignError),
}

/// Mints a token offline with the private key.
pub fn mint(args: &MintArgs<'_>) -> Result<Minted, MintError> {
    let signer = Signer::ed25519_from_pem_file(args.private_key, args.kid.clone())?
        .with_issuer_audience(args.issuer, args.audience);
    Ok(signer.mint(&TokenRequest {
        sub: args.user,
        tenant: args.tenant,
        cid: args.container,
        scope: args.scope,
        ttl: args.ttl,
        share: None,
        admin: false,
        files: args.files,
        clipboard: args.clipboard,
    })?)
}
