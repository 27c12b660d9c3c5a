//! File transfer and clipboard policy as control sees them: what a token of a scope
//! (or of a share) may carry, who may move files which way, and which file names a
//! request may use. Without I/O.

use vnc_shared::token::{ClipboardPolicy, FilePolicy, Scope, VncClaims};

use super::{Caller, Container};

/// Longest file name, in bytes: Linux's `NAME_MAX`, so any accepted name can be
/// created in the desktop's folder.
pub const MAX_FILE_NAME: usize = 255;

/// Which way a file moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Browser → desktop (`PUT …/files/{name}`).
    Upload,
    /// Desktop → browser (`GET …/files`, `GET …/files/{name}`).
    Download,
}

impl Direction {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Upload => "upload",
            Direction::Download => "download",
        }
    }

    /// Whether `policy` lets files move this way.
    pub fn allowed_by(self, policy: FilePolicy) -> bool {
        match self {
            Direction::Upload => policy.upload(),
            Direction::Download => policy.download(),
        }
    }
}

/// The policies a token of `scope` for container `c` carries: the container's,
/// without uploads and without browser → desktop clipboard for `view` (a viewer sends
/// nothing into the desktop).
pub fn token_policies(c: &Container, scope: Scope) -> (FilePolicy, ClipboardPolicy) {
    match scope {
        Scope::Control => (c.files, c.clipboard),
        Scope::View => (c.files.without_upload(), c.clipboard.without_to_desktop()),
    }
}

/// Who is moving a file: a caller of the identity provider, or the holder of a VNC
/// token control minted (the viewer page).
#[derive(Clone, Debug)]
pub enum FileCaller {
    Identity(Caller),
    Token(VncClaims),
}

impl FileCaller {
    /// Whether this caller may see container `c` at all (else "not found").
    pub fn sees(&self, c: &Container) -> bool {
        match self {
            FileCaller::Identity(caller) => c.visible_to(caller),
            FileCaller::Token(claims) => claims.tenant == c.tenant,
        }
    }

    /// Why this caller may not move a file `dir` in container `c`; `None` when it
    /// may. A caller of the tenant gets the policy of the token it could mint (the
    /// owner and admins a `control` one, the others a `view` one); a token holder its
    /// token's `files`, within the container's policy, for the token's container only.
    pub fn refusal(&self, c: &Container, dir: Direction) -> Option<String> {
        let policy = match self {
            FileCaller::Identity(caller) => {
                let scope = if c.managed_by(caller) {
                    Scope::Control
                } else {
                    Scope::View
                };
                token_policies(c, scope).0
            }
            FileCaller::Token(claims) => {
                if claims.cid != c.id {
                    return Some("the VNC token is for another container".into());
                }
                claims.files.and(c.files)
            }
        };
        (!dir.allowed_by(policy)).then(|| {
            format!(
                "file {}s are not allowed here (files: {})",
                dir.as_str(),
                policy.as_str()
            )
        })
    }

    /// The user for logs and metrics.
    pub fn sub(&self) -> &str {
        match self {
            FileCaller::Identity(caller) => &caller.sub,
            FileCaller::Token(claims) => &claims.sub,
        }
    }
}

/// Why `name` can't name a file in a desktop's folder; `None` when it can. A name is
/// one path component: not empty, not `.` or `..` nor holding `..`, no `/`, `\`, NUL
/// or other control character, at most [`MAX_FILE_NAME`] bytes.
pub fn file_name_problem(name: &str) -> Option<String> {
    if name.is_empty() || name == "." {
        return Some("the file name is empty".into());
    }
    if name.len() > MAX_FILE_NAME {
        return Some(format!(
            "the file name is longer than {MAX_FILE_NAME} bytes"
        ));
    }
    if name.contains("..") {
        return Some("the file name must not contain \"..\"".into());
    }
    if name.contains(['/', '\\']) {
        return Some("the file name must not contain a path separator".into());
    }
    if name.chars().any(char::is_control) {
        return Some("the file name must not contain NUL or control characters".into());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_are_refused() {
        for ok in ["report.pdf", "a b.txt", "ünïcödé.txt", ".bashrc", "x"] {
            assert_eq!(file_name_problem(ok), None, "{ok}");
        }
        let long = "a".repeat(MAX_FILE_NAME + 1);
        for bad in [
            "",
            ".",
            "..",
            "../etc/passwd",
            "a..b",
            "a/b",
            "/etc",
            "a\\b",
            "a\0b",
            "a\nb",
            long.as_str(),
        ] {
            assert!(file_name_problem(bad).is_some(), "{bad:?}");
        }
        assert_eq!(file_name_problem(&"a".repeat(MAX_FILE_NAME)), None);
    }

    fn container(files: FilePolicy) -> Container {
        Container {
            files,
            clipboard: ClipboardPolicy::Both,
            ..crate::domain::tests::container()
        }
    }

    #[test]
    fn view_tokens_never_upload_or_paste() {
        let c = container(FilePolicy::Both);
        assert_eq!(
            token_policies(&c, Scope::View),
            (FilePolicy::Download, ClipboardPolicy::FromDesktop)
        );
        assert_eq!(
            token_policies(&c, Scope::Control),
            (FilePolicy::Both, ClipboardPolicy::Both)
        );
        let none = container(FilePolicy::Upload);
        assert_eq!(token_policies(&none, Scope::View).0, FilePolicy::None);
    }

    #[test]
    fn who_may_move_files() {
        let c = container(FilePolicy::Both);
        let owner = FileCaller::Identity(Caller {
            sub: "alice".into(),
            tenant: "t1".into(),
            admin: false,
        });
        let colleague = FileCaller::Identity(Caller {
            sub: "bob".into(),
            tenant: "t1".into(),
            admin: false,
        });
        assert!(owner.refusal(&c, Direction::Upload).is_none());
        assert!(colleague.refusal(&c, Direction::Upload).is_some());
        assert!(colleague.refusal(&c, Direction::Download).is_none());
        let download_only = container(FilePolicy::Download);
        assert!(owner.refusal(&download_only, Direction::Upload).is_some());
    }

    #[test]
    fn a_token_moves_files_of_its_own_container_within_its_claim_and_the_policy() {
        let claims = |cid: &str, files: FilePolicy| {
            FileCaller::Token(VncClaims {
                iss: "vnc-control".into(),
                aud: "vnc-relay".into(),
                sub: "alice".into(),
                tenant: "t1".into(),
                cid: cid.into(),
                scope: Scope::Control,
                jti: "j".into(),
                iat: 0,
                nbf: 0,
                exp: 0,
                share: None,
                admin: false,
                files,
                clipboard: ClipboardPolicy::Both,
            })
        };
        let c = container(FilePolicy::Both);
        assert!(
            claims("c1", FilePolicy::Both)
                .refusal(&c, Direction::Upload)
                .is_none()
        );
        let other = claims("c2", FilePolicy::Both).refusal(&c, Direction::Download);
        assert!(other.unwrap().contains("another container"));
        let view = claims("c1", FilePolicy::Download);
        assert!(view.refusal(&c, Direction::Upload).is_some());
        assert!(view.refusal(&c, Direction::Download).is_none());
        // The container's policy bounds even a token that claims more.
        let closed = container(FilePolicy::None);
        assert!(
            claims("c1", FilePolicy::Both)
                .refusal(&closed, Direction::Download)
                .is_some()
        );
        assert!(!claims("c1", FilePolicy::Both).sees(&Container {
            tenant: "t2".into(),
            ..c
        }));
    }
}
