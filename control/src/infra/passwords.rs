//! The VNC passwords of desktop containers, derived rather than stored: a container's
//! password is HMAC-SHA256(secret, container id), so a container whose record Redis
//! lost gets the same password back when it is re-adopted.
//!
//! The secrets live in one file (`vnc_password_secret_file`), one per line (blank lines
//! and `#` comments ignored): the first derives the passwords of new containers, the
//! others still derive those of containers created under them. Each secret has an id
//! (the first 12 hex digits of its SHA-256), which containers carry in the label
//! `vnc.password-key`; rotation is: put a new secret first, reload (SIGHUP), and drop
//! an old line once no container carries its id. A missing file is generated with one
//! random secret, mode 0600.

use std::fmt;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac as _};
use sha2::{Digest as _, Sha256};

/// Shortest secret accepted, in bytes.
pub const MIN_SECRET_LEN: usize = 32;

/// Random bytes of a generated secret.
const GENERATED_SECRET_BYTES: usize = 32;

/// Bytes of the HMAC a password encodes: 6 bytes are 8 base64url characters, the
/// length RFB VNC authentication uses (it reads the first 8 bytes of a password).
const PASSWORD_BYTES: usize = 6;

/// Hex digits of a secret's id.
const KEY_ID_LEN: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum PasswordKeyError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("creating {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}: no secret (one per line, the first one current)")]
    Empty(PathBuf),
    #[error("{path} line {line}: a secret needs at least {MIN_SECRET_LEN} bytes")]
    Short { path: PathBuf, line: usize },
}

struct Key {
    id: String,
    secret: Vec<u8>,
}

/// The secrets passwords derive from; the first is current. Empty with a runtime that
/// starts nothing (static): then containers get no password.
#[derive(Default)]
pub struct PasswordKeys {
    keys: Vec<Key>,
}

// Hand-written so no secret reaches a log.
impl fmt::Debug for PasswordKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.keys.iter().map(|k| &k.id))
            .finish()
    }
}

impl PasswordKeys {
    /// Reads the secrets at `path`, generating the file (and its directory, 0700) with
    /// one random secret if it does not exist.
    pub fn load_or_create(path: &Path) -> Result<PasswordKeys, PasswordKeyError> {
        if !path.exists() {
            create(path)?;
        }
        let text = std::fs::read_to_string(path).map_err(|source| PasswordKeyError::Read {
            path: path.to_owned(),
            source,
        })?;
        PasswordKeys::parse(path, &text)
    }

    fn parse(path: &Path, text: &str) -> Result<PasswordKeys, PasswordKeyError> {
        let mut keys = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let secret = line.trim();
            if secret.is_empty() || secret.starts_with('#') {
                continue;
            }
            if secret.len() < MIN_SECRET_LEN {
                return Err(PasswordKeyError::Short {
                    path: path.to_owned(),
                    line: n + 1,
                });
            }
            let digest = Sha256::digest(secret.as_bytes());
            let id: String = digest.iter().map(|b| format!("{b:02x}")).collect();
            keys.push(Key {
                id: id[..KEY_ID_LEN].to_owned(),
                secret: secret.as_bytes().to_vec(),
            });
        }
        if keys.is_empty() {
            return Err(PasswordKeyError::Empty(path.to_owned()));
        }
        Ok(PasswordKeys { keys })
    }

    /// The id of the current secret and the password it derives for `cid`; None when
    /// there are no secrets.
    pub fn current(&self, cid: &str) -> Option<(String, String)> {
        let key = self.keys.first()?;
        Some((key.id.clone(), derive(&key.secret, cid)))
    }

    /// The password the secret with id `key` derives for `cid`, if that secret is
    /// still in the file.
    pub fn derive(&self, key: &str, cid: &str) -> Option<String> {
        let key = self.keys.iter().find(|k| k.id == key)?;
        Some(derive(&key.secret, cid))
    }
}

fn derive(secret: &[u8], cid: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of every length");
    mac.update(cid.as_bytes());
    URL_SAFE_NO_PAD.encode(&mac.finalize().into_bytes()[..PASSWORD_BYTES])
}

/// Writes a new secrets file with one random secret, readable by its owner only.
fn create(path: &Path) -> Result<(), PasswordKeyError> {
    use rand::RngCore as _;
    let failed = |source| PasswordKeyError::Create {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(failed)?;
    }
    let mut bytes = [0u8; GENERATED_SECRET_BYTES];
    rand::thread_rng().fill_bytes(&mut bytes);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(failed)?;
    writeln!(
        file,
        "# VNC password secrets: the first derives new passwords; keep old lines while\n\
         # containers created under them run.\n{}",
        URL_SAFE_NO_PAD.encode(bytes)
    )
    .map_err(failed)?;
    tracing::info!(path = %path.display(), "generated a VNC password secret");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    #[test]
    fn passwords_are_stable_per_secret_and_container() {
        let path = Path::new("/k");
        let old = PasswordKeys::parse(path, A).unwrap();
        let (id_a, pw) = old.current("c1").unwrap();
        assert_eq!(pw.len(), 8);
        assert_eq!(old.current("c1").unwrap().1, pw);
        assert_ne!(old.current("c2").unwrap().1, pw);
        // Rotated: B derives new passwords, A still those of its containers.
        let rotated = PasswordKeys::parse(path, &format!("# comment\n{B}\n\n{A}\n")).unwrap();
        let (id_b, pw_b) = rotated.current("c1").unwrap();
        assert_ne!((id_b.as_str(), pw_b.as_str()), (id_a.as_str(), pw.as_str()));
        assert_eq!(rotated.derive(&id_a, "c1").unwrap(), pw);
        assert!(rotated.derive("000000000000", "c1").is_none());
        assert!(!format!("{rotated:?}").contains(A));
    }

    #[test]
    fn bad_files_are_refused_and_missing_ones_generated() {
        let path = Path::new("/k");
        assert!(matches!(
            PasswordKeys::parse(path, "# none\n"),
            Err(PasswordKeyError::Empty(_))
        ));
        assert!(matches!(
            PasswordKeys::parse(path, &format!("{A}\nshort\n")),
            Err(PasswordKeyError::Short { line: 2, .. })
        ));
        assert!(PasswordKeys::default().current("c1").is_none());

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/vnc-password.secret");
        let first = PasswordKeys::load_or_create(&path).unwrap();
        let again = PasswordKeys::load_or_create(&path).unwrap();
        assert_eq!(first.current("c1"), again.current("c1"));
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
