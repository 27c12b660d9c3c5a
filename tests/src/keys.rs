//! A fresh Ed25519 key pair per test and tokens made with it, valid or hostile.

use std::path::PathBuf;
use std::time::Duration;

use vnc_shared::token::{
    ClipboardPolicy, FilePolicy, Minted, Scope, Signer, TokenRequest, generate_ed25519_pair,
    unix_now,
};

pub struct TestKeys {
    pub dir: tempfile::TempDir,
    pub signer: Signer,
    pub public: PathBuf,
    pub private: PathBuf,
}

impl TestKeys {
    pub fn new() -> TestKeys {
        Self::with_kid("k1")
    }

    pub fn with_kid(kid: &str) -> TestKeys {
        let dir = tempfile::tempdir().expect("tempdir");
        let (private, public) = generate_ed25519_pair(dir.path(), kid).expect("key pair");
        let signer = Signer::ed25519_from_pem_file(&private, None).expect("signer");
        TestKeys {
            dir,
            signer,
            public,
            private,
        }
    }

    /// A valid 60 s token for container `cid` of tenant `t1`.
    pub fn token(&self, cid: &str, scope: Scope) -> String {
        self.mint(cid, scope).token
    }

    /// [`TestKeys::token`] with its claims (`jti`, `exp`).
    pub fn mint(&self, cid: &str, scope: Scope) -> Minted {
        self.mint_with(cid, scope, ClipboardPolicy::Both)
    }

    /// A control token for `cid` whose `clipboard` claim is `clipboard`.
    pub fn clipboard_token(&self, cid: &str, clipboard: ClipboardPolicy) -> String {
        self.mint_with(cid, Scope::Control, clipboard).token
    }

    fn mint_with(&self, cid: &str, scope: Scope, clipboard: ClipboardPolicy) -> Minted {
        self.signer
            .mint(&TokenRequest {
                sub: "u1",
                tenant: "t1",
                cid,
                scope,
                ttl: Duration::from_secs(60),
                share: None,
                admin: false,
                files: FilePolicy::Both,
                clipboard,
            })
            .expect("mint")
    }

    /// A share link's token for container `cid` (`sub` `share:{share_id}`), as control
    /// mints it.
    pub fn share_token(&self, cid: &str, scope: Scope, share_id: &str) -> String {
        let sub = format!("share:{share_id}");
        self.signer
            .mint(&TokenRequest {
                sub: &sub,
                tenant: "t1",
                cid,
                scope,
                ttl: Duration::from_secs(60),
                share: Some(share_id),
                admin: false,
                files: FilePolicy::Both,
                clipboard: ClipboardPolicy::Both,
            })
            .expect("mint")
            .token
    }

    /// The claims of a valid token as JSON, for tests that bend one of them.
    pub fn claims(cid: &str) -> serde_json::Value {
        let now = unix_now();
        serde_json::json!({
            "iss": "vnc-control", "aud": "vnc-relay", "sub": "u1", "tenant": "t1",
            "cid": cid, "scope": "control", "jti": uuid_like(),
            "iat": now, "nbf": now, "exp": now + 60,
        })
    }

    /// Signs arbitrary claims with this key.
    pub fn sign(&self, claims: &serde_json::Value) -> String {
        self.signer.sign(claims).expect("sign")
    }
}

impl Default for TestKeys {
    fn default() -> Self {
        Self::new()
    }
}

fn uuid_like() -> String {
    format!("jti-{}", rand::random::<u64>())
}
