//! Key files: reading PEM keys and HS256 secrets, the key id a file name gives, and
//! generating an Ed25519 pair for `vnc-control keys generate`; and [`KeyError`], why a
//! key could not be loaded or written.

use std::path::Path;

/// Errors loading keys.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("reading key {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("key {path} is not a valid {what}: {reason}")]
    Invalid {
        path: String,
        what: &'static str,
        reason: String,
    },
    #[error("key id {0:?} is given twice")]
    DuplicateKid(String),
    #[error("the key set is empty")]
    Empty,
    #[error("writing key {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

/// Shortest HS256 secret taken: the hash's output size (RFC 7518 §3.2).
pub(super) const MIN_HS256_SECRET: usize = 32;

/// An HS256 secret from a file (surrounding whitespace trimmed), refused when short.
pub fn read_hs256_secret(path: &Path) -> Result<Vec<u8>, KeyError> {
    let raw = std::fs::read(path).map_err(|source| KeyError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let secret = raw.trim_ascii();
    if secret.len() < MIN_HS256_SECRET {
        return Err(KeyError::Invalid {
            path: path.display().to_string(),
            what: "HS256 secret",
            reason: format!(
                "{} bytes; it needs at least {MIN_HS256_SECRET}",
                secret.len()
            ),
        });
    }
    Ok(secret.to_vec())
}

/// The key id of a key file: its file stem (`keys/2026-11.pub.pem` → `2026-11`).
pub fn kid_from_path(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    name.split('.').next().unwrap_or_default().to_owned()
}

/// A key file's bytes.
pub(super) fn read_key(path: &Path) -> Result<Vec<u8>, KeyError> {
    std::fs::read(path).map_err(|source| KeyError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// The SPKI PEM of the public half of an Ed25519 PKCS#8 private key PEM, so the
/// holder of a signing key can verify what it signed.
pub(super) fn ed25519_public_pem(path: &Path, private_pem: &[u8]) -> Result<String, KeyError> {
    use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
    use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePublicKey};
    let invalid = |reason: String| KeyError::Invalid {
        path: path.display().to_string(),
        what: "Ed25519 private key PEM",
        reason,
    };
    let text = std::str::from_utf8(private_pem).map_err(|e| invalid(e.to_string()))?;
    let signing =
        ed25519_dalek::SigningKey::from_pkcs8_pem(text).map_err(|e| invalid(e.to_string()))?;
    signing
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| invalid(e.to_string()))
}

/// Generates an Ed25519 key pair and writes `{kid}.key.pem` (PKCS#8, mode 0600) and
/// `{kid}.pub.pem` (SPKI) into `dir`. Returns the two paths.
pub fn generate_ed25519_pair(
    dir: &Path,
    kid: &str,
) -> Result<(std::path::PathBuf, std::path::PathBuf), KeyError> {
    use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
    use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey};

    let signing = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let invalid = |what: &'static str, reason: String| KeyError::Invalid {
        path: dir.display().to_string(),
        what,
        reason,
    };
    let private = signing
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| invalid("PKCS#8 encoding", e.to_string()))?;
    let public = signing
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| invalid("SPKI encoding", e.to_string()))?;
    let private_path = dir.join(format!("{kid}.key.pem"));
    let public_path = dir.join(format!("{kid}.pub.pem"));
    let write = |path: &Path, data: &[u8], mode: u32| -> Result<(), KeyError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let err = |source| KeyError::Write {
            path: path.display().to_string(),
            source,
        };
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(path)
            .map_err(err)?;
        file.write_all(data).map_err(err)
    };
    std::fs::create_dir_all(dir).map_err(|source| KeyError::Write {
        path: dir.display().to_string(),
        source,
    })?;
    write(&private_path, private.as_bytes(), 0o600)?;
    write(&public_path, public.as_bytes(), 0o644)?;
    Ok((private_path, public_path))
}
