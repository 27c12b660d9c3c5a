//! The VNC token: a short-lived JWT that opens one container for one user.
//!
//! Control mints with a private key (Ed25519 by default); relays verify with public
//! keys only, so a relay can't mint. The algorithm is pinned per key set, the key is
//! chosen by `kid` (several keys may be live at once for rotation), and every claim the
//! relay relies on is required.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// Why signing a token failed.
pub use jsonwebtoken::errors::Error as SignError;

mod key_file;
mod policy;

pub use key_file::{KeyError, generate_ed25519_pair, kid_from_path, read_hs256_secret};
use key_file::{ed25519_public_pem, read_key};
pub use policy::{ClipboardPolicy, FilePolicy};

/// Default `iss` of tokens minted by control.
pub const DEFAULT_ISSUER: &str = "vnc-control";
/// Default `aud` of tokens, i.e. who may accept them.
pub const DEFAULT_AUDIENCE: &str = "vnc-relay";
/// Clock-skew allowance for `exp` and `nbf`; the design caps it at 5 s.
pub const MAX_LEEWAY: Duration = Duration::from_secs(5);
/// The most a token may live: tokens are meant to be used within seconds.
pub const MAX_TTL: Duration = Duration::from_secs(24 * 3600);

/// What a token lets its holder do in the session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Input allowed.
    Control,
    /// The relay drops input.
    View,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Control => "control",
            Scope::View => "view",
        }
    }
}

impl std::str::FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "control" => Ok(Scope::Control),
            "view" => Ok(Scope::View),
            other => Err(format!("scope must be control or view, not {other:?}")),
        }
    }
}

/// The claims of a VNC token. Every field but `share`, `admin`, `files` and `clipboard`
/// is required: a token missing one does not deserialize and is refused. A token
/// without `files` allows no file transfer, one without `clipboard` allows it both
/// ways (see [`FilePolicy`] and [`ClipboardPolicy`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VncClaims {
    pub iss: String,
    pub aud: String,
    /// User id.
    pub sub: String,
    pub tenant: String,
    /// Container id the token opens.
    pub cid: String,
    pub scope: Scope,
    /// Unique id, for revocation and single use.
    pub jti: String,
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
    /// The share link the token belongs to (many sessions may use it; `sub` is then
    /// `share:{share_id}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share: Option<String>,
    /// The caller held the admin role when control minted it (may take control of
    /// the tenant's desktops).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub admin: bool,
    /// Which way files may move through control's file routes.
    #[serde(default)]
    pub files: FilePolicy,
    /// Which way the clipboard may move through the relay.
    #[serde(default)]
    pub clipboard: ClipboardPolicy,
}

/// Signature algorithms a key set may be pinned to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenAlgorithm {
    /// Ed25519 signatures (JWT `alg: EdDSA`), the default.
    EdDsa,
    /// HMAC-SHA256 with a shared secret; only when configured explicitly.
    Hs256,
}

impl TokenAlgorithm {
    fn jwt(self) -> Algorithm {
        match self {
            TokenAlgorithm::EdDsa => Algorithm::EdDSA,
            TokenAlgorithm::Hs256 => Algorithm::HS256,
        }
    }
}

impl std::str::FromStr for TokenAlgorithm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "eddsa" | "ed25519" => Ok(TokenAlgorithm::EdDsa),
            "hs256" => Ok(TokenAlgorithm::Hs256),
            other => Err(format!("algorithm must be eddsa or hs256, not {other:?}")),
        }
    }
}

/// Why a token was refused. `reason()` is the stable label used in metrics.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("token is malformed")]
    Malformed,
    #[error("token algorithm is not allowed")]
    AlgorithmNotAllowed,
    #[error("token has no kid or an unknown kid")]
    UnknownKey,
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token has expired")]
    Expired,
    #[error("token is not yet valid")]
    NotYetValid,
    #[error("token audience is wrong")]
    WrongAudience,
    #[error("token issuer is wrong")]
    WrongIssuer,
    #[error("token claims are invalid: {0}")]
    InvalidClaims(String),
}

impl TokenError {
    pub fn reason(&self) -> &'static str {
        match self {
            TokenError::Malformed => "malformed",
            TokenError::AlgorithmNotAllowed => "algorithm",
            TokenError::UnknownKey => "unknown_kid",
            TokenError::BadSignature => "signature",
            TokenError::Expired => "expired",
            TokenError::NotYetValid => "not_yet_valid",
            TokenError::WrongAudience => "audience",
            TokenError::WrongIssuer => "issuer",
            TokenError::InvalidClaims(_) => "claims",
        }
    }
}

/// What a verifier checks besides the signature.
#[derive(Clone, Debug)]
pub struct VerifyPolicy {
    pub issuer: String,
    pub audience: String,
    /// Clock-skew allowance, capped at [`MAX_LEEWAY`].
    pub leeway: Duration,
}

impl Default for VerifyPolicy {
    fn default() -> Self {
        VerifyPolicy {
            issuer: DEFAULT_ISSUER.to_owned(),
            audience: DEFAULT_AUDIENCE.to_owned(),
            leeway: MAX_LEEWAY,
        }
    }
}

/// Verification keys by `kid`, all of one pinned algorithm.
pub struct KeySet {
    algorithm: TokenAlgorithm,
    keys: HashMap<String, DecodingKey>,
    validation: Validation,
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut kids: Vec<_> = self.keys.keys().collect();
        kids.sort();
        f.debug_struct("KeySet")
            .field("algorithm", &self.algorithm)
            .field("kids", &kids)
            .finish()
    }
}

impl KeySet {
    /// Ed25519 public keys from PEM files, each `(kid, path)`.
    pub fn ed25519_from_pem_files<'a>(
        files: impl IntoIterator<Item = (String, &'a Path)>,
        policy: &VerifyPolicy,
    ) -> Result<KeySet, KeyError> {
        let mut keys = Vec::new();
        for (kid, path) in files {
            let pem = read_key(path)?;
            let key = DecodingKey::from_ed_pem(&pem).map_err(|e| KeyError::Invalid {
                path: path.display().to_string(),
                what: "Ed25519 public key PEM",
                reason: e.to_string(),
            })?;
            keys.push((kid, key));
        }
        KeySet::new(TokenAlgorithm::EdDsa, keys, policy)
    }

    /// HS256 shared secrets, each `(kid, secret)`. Only for deployments that chose it.
    pub fn hs256(
        secrets: impl IntoIterator<Item = (String, Vec<u8>)>,
        policy: &VerifyPolicy,
    ) -> Result<KeySet, KeyError> {
        let keys = secrets
            .into_iter()
            .map(|(kid, secret)| (kid, DecodingKey::from_secret(&secret)))
            .collect();
        KeySet::new(TokenAlgorithm::Hs256, keys, policy)
    }

    fn new(
        algorithm: TokenAlgorithm,
        keys: Vec<(String, DecodingKey)>,
        policy: &VerifyPolicy,
    ) -> Result<KeySet, KeyError> {
        let mut map = HashMap::with_capacity(keys.len());
        for (kid, key) in keys {
            if map.insert(kid.clone(), key).is_some() {
                return Err(KeyError::DuplicateKid(kid));
            }
        }
        if map.is_empty() {
            return Err(KeyError::Empty);
        }
        let mut validation = Validation::new(algorithm.jwt());
        validation.set_issuer(&[&policy.issuer]);
        validation.set_audience(&[&policy.audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = policy.leeway.min(MAX_LEEWAY).as_secs();
        Ok(KeySet {
            algorithm,
            keys: map,
            validation,
        })
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Verifies `token` and returns its claims, or why it is refused.
    pub fn verify(&self, token: &str) -> Result<VncClaims, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        if header.alg != self.algorithm.jwt() {
            return Err(TokenError::AlgorithmNotAllowed);
        }
        let key = header
            .kid
            .as_deref()
            .and_then(|kid| self.keys.get(kid))
            .ok_or(TokenError::UnknownKey)?;
        let data = jsonwebtoken::decode::<VncClaims>(token, key, &self.validation)
            .map_err(|e| map_jwt_error(e.kind()))?;
        let claims = data.claims;
        // An empty tenant would match a record whose tenant is missing.
        if [&claims.cid, &claims.jti, &claims.sub, &claims.tenant]
            .iter()
            .any(|c| c.is_empty())
        {
            return Err(TokenError::InvalidClaims(
                "cid, jti, sub and tenant must not be empty".into(),
            ));
        }
        Ok(claims)
    }
}

fn map_jwt_error(kind: &ErrorKind) -> TokenError {
    match kind {
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
        ErrorKind::InvalidAudience => TokenError::WrongAudience,
        ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
        ErrorKind::InvalidSignature => TokenError::BadSignature,
        ErrorKind::InvalidAlgorithm => TokenError::AlgorithmNotAllowed,
        ErrorKind::MissingRequiredClaim(c) => TokenError::InvalidClaims(format!("missing {c}")),
        ErrorKind::Json(e) => TokenError::InvalidClaims(e.to_string()),
        _ => TokenError::Malformed,
    }
}

/// What a minted token is for.
#[derive(Clone, Debug)]
pub struct TokenRequest<'a> {
    pub sub: &'a str,
    pub tenant: &'a str,
    pub cid: &'a str,
    pub scope: Scope,
    pub ttl: Duration,
    /// For a share link's token.
    pub share: Option<&'a str>,
    /// The caller is an admin.
    pub admin: bool,
    /// Which way files may move (already narrowed for the scope by the caller).
    pub files: FilePolicy,
    /// Which way the clipboard may move (already narrowed for the scope).
    pub clipboard: ClipboardPolicy,
}

/// A private key that mints tokens (control's side).
pub struct Signer {
    kid: String,
    algorithm: TokenAlgorithm,
    key: EncodingKey,
    /// The public half (the secret for HS256), so control can verify its own tokens.
    verifying: DecodingKey,
    issuer: String,
    audience: String,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .field("key", &"MASKED")
            .finish()
    }
}

/// A minted token and its claims.
#[derive(Clone, Debug)]
pub struct Minted {
    pub token: String,
    pub claims: VncClaims,
}

impl Signer {
    /// An Ed25519 signer from a PKCS#8 PEM private key file; kid defaults to the stem.
    pub fn ed25519_from_pem_file(path: &Path, kid: Option<String>) -> Result<Signer, KeyError> {
        let pem = read_key(path)?;
        let key = EncodingKey::from_ed_pem(&pem).map_err(|e| KeyError::Invalid {
            path: path.display().to_string(),
            what: "Ed25519 private key PEM",
            reason: e.to_string(),
        })?;
        let public = ed25519_public_pem(path, &pem)?;
        let verifying =
            DecodingKey::from_ed_pem(public.as_bytes()).map_err(|e| KeyError::Invalid {
                path: path.display().to_string(),
                what: "Ed25519 private key PEM",
                reason: e.to_string(),
            })?;
        Ok(Signer {
            kid: kid.unwrap_or_else(|| kid_from_path(path)),
            algorithm: TokenAlgorithm::EdDsa,
            key,
            verifying,
            issuer: DEFAULT_ISSUER.into(),
            audience: DEFAULT_AUDIENCE.into(),
        })
    }

    /// An HS256 signer from a shared secret.
    pub fn hs256(kid: String, secret: &[u8]) -> Signer {
        Signer {
            kid,
            algorithm: TokenAlgorithm::Hs256,
            key: EncodingKey::from_secret(secret),
            verifying: DecodingKey::from_secret(secret),
            issuer: DEFAULT_ISSUER.into(),
            audience: DEFAULT_AUDIENCE.into(),
        }
    }

    /// Sets the `iss` and `aud` this signer writes.
    pub fn with_issuer_audience(mut self, issuer: &str, audience: &str) -> Signer {
        self.issuer = issuer.to_owned();
        self.audience = audience.to_owned();
        self
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// A key set holding only this signer's own key, checking the issuer and audience
    /// it writes: what control verifies the VNC tokens it minted with when a browser
    /// presents one to its API.
    pub fn own_keys(&self) -> KeySet {
        let policy = VerifyPolicy {
            issuer: self.issuer.clone(),
            audience: self.audience.clone(),
            leeway: MAX_LEEWAY,
        };
        // One key, so the kid can't be given twice and the set is not empty.
        KeySet::new(
            self.algorithm,
            vec![(self.kid.clone(), self.verifying.clone())],
            &policy,
        )
        .expect("a key set of one key")
    }

    /// Mints a token valid from now for `req.ttl` (capped at [`MAX_TTL`]).
    pub fn mint(&self, req: &TokenRequest<'_>) -> Result<Minted, SignError> {
        let now = unix_now();
        let claims = VncClaims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: req.sub.to_owned(),
            tenant: req.tenant.to_owned(),
            cid: req.cid.to_owned(),
            scope: req.scope,
            jti: uuid::Uuid::new_v4().to_string(),
            iat: now,
            nbf: now,
            exp: now + req.ttl.min(MAX_TTL).as_secs().max(1),
            share: req.share.map(str::to_owned),
            admin: req.admin,
            files: req.files,
            clipboard: req.clipboard,
        };
        let token = self.sign(&claims)?;
        Ok(Minted { token, claims })
    }

    /// Signs arbitrary claims with this key (tests use it to build hostile tokens).
    pub fn sign<T: Serialize>(&self, claims: &T) -> Result<String, SignError> {
        let mut header = Header::new(self.algorithm.jwt());
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.key)
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::key_file::MIN_HS256_SECRET;
    use super::*;
    use base64::Engine as _;

    fn b64(data: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        signer: Signer,
        keys: KeySet,
        public_pem: Vec<u8>,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let (private, public) = generate_ed25519_pair(dir.path(), "k1").unwrap();
        let signer = Signer::ed25519_from_pem_file(&private, None).unwrap();
        let keys = KeySet::ed25519_from_pem_files(
            [(kid_from_path(&public), public.as_path())],
            &VerifyPolicy::default(),
        )
        .unwrap();
        let public_pem = std::fs::read(&public).unwrap();
        Fixture {
            _dir: dir,
            signer,
            keys,
            public_pem,
        }
    }

    fn request() -> TokenRequest<'static> {
        TokenRequest {
            sub: "u1",
            tenant: "t1",
            cid: "c1",
            scope: Scope::View,
            ttl: Duration::from_secs(60),
            share: None,
            admin: false,
            files: FilePolicy::Upload,
            clipboard: ClipboardPolicy::FromDesktop,
        }
    }

    fn claims_json(f: impl FnOnce(&mut serde_json::Value)) -> serde_json::Value {
        let now = unix_now();
        let mut v = serde_json::json!({
            "iss": DEFAULT_ISSUER, "aud": DEFAULT_AUDIENCE, "sub": "u1", "tenant": "t1",
            "cid": "c1", "scope": "control", "jti": "j1",
            "iat": now, "nbf": now, "exp": now + 60,
        });
        f(&mut v);
        v
    }

    #[test]
    fn mint_then_verify_round_trips() {
        let fx = fixture();
        assert_eq!(fx.signer.kid(), "k1");
        let minted = fx.signer.mint(&request()).unwrap();
        let claims = fx.keys.verify(&minted.token).unwrap();
        assert_eq!(claims, minted.claims);
        assert_eq!(claims.scope, Scope::View);
        assert_eq!(claims.exp - claims.iat, 60);
    }

    #[test]
    fn a_signer_verifies_its_own_tokens_and_old_tokens_get_default_policies() {
        let fx = fixture();
        let own = fx.signer.own_keys();
        let minted = fx.signer.mint(&request()).unwrap();
        let claims = own.verify(&minted.token).unwrap();
        assert_eq!(claims.files, FilePolicy::Upload);
        assert_eq!(claims.clipboard, ClipboardPolicy::FromDesktop);
        // A token minted before the policy claims: no files, clipboard both ways.
        let old = fx.signer.sign(&claims_json(|_| {})).unwrap();
        let claims = own.verify(&old).unwrap();
        assert_eq!(
            (claims.files, claims.clipboard),
            (FilePolicy::None, ClipboardPolicy::Both)
        );
        let other = Signer::hs256("k1".into(), &[7; 32]);
        assert_eq!(
            own.verify(&other.mint(&request()).unwrap().token),
            Err(TokenError::AlgorithmNotAllowed)
        );
        let hs = Signer::hs256("s".into(), &[7; 32]);
        assert!(
            hs.own_keys()
                .verify(&hs.mint(&request()).unwrap().token)
                .is_ok()
        );
    }

    #[test]
    fn refuses_expired_and_future_tokens_beyond_leeway() {
        let fx = fixture();
        let now = unix_now();
        let expired = fx
            .signer
            .sign(&claims_json(|v| v["exp"] = (now - 10).into()))
            .unwrap();
        assert_eq!(fx.keys.verify(&expired), Err(TokenError::Expired));
        let within_leeway = fx
            .signer
            .sign(&claims_json(|v| v["exp"] = (now - 2).into()))
            .unwrap();
        assert!(fx.keys.verify(&within_leeway).is_ok());
        let future = fx
            .signer
            .sign(&claims_json(|v| v["nbf"] = (now + 30).into()))
            .unwrap();
        assert_eq!(fx.keys.verify(&future), Err(TokenError::NotYetValid));
    }

    #[test]
    fn refuses_wrong_audience_issuer_and_missing_claims() {
        let fx = fixture();
        let t = |f: fn(&mut serde_json::Value)| fx.signer.sign(&claims_json(f)).unwrap();
        assert_eq!(
            fx.keys.verify(&t(|v| v["aud"] = "other".into())),
            Err(TokenError::WrongAudience)
        );
        assert_eq!(
            fx.keys.verify(&t(|v| v["iss"] = "other".into())),
            Err(TokenError::WrongIssuer)
        );
        for claim in ["cid", "scope", "jti", "nbf", "exp", "tenant"] {
            let token = fx
                .signer
                .sign(&claims_json(|v| {
                    v.as_object_mut().unwrap().remove(claim);
                }))
                .unwrap();
            assert!(
                matches!(fx.keys.verify(&token), Err(TokenError::InvalidClaims(_))),
                "missing {claim} must be refused"
            );
        }
        for claim in ["cid", "jti", "sub", "tenant"] {
            let token = fx
                .signer
                .sign(&claims_json(|v| v[claim] = "".into()))
                .unwrap();
            assert!(
                matches!(fx.keys.verify(&token), Err(TokenError::InvalidClaims(_))),
                "empty {claim} must be refused"
            );
        }
        assert!(matches!(
            fx.keys.verify(&t(|v| v["scope"] = "admin".into())),
            Err(TokenError::InvalidClaims(_))
        ));
    }

    #[test]
    fn refuses_alg_none_key_confusion_and_unknown_kid() {
        let fx = fixture();
        let payload = b64(claims_json(|_| {}).to_string().as_bytes());
        let none = format!(
            "{}.{payload}.",
            b64(br#"{"alg":"none","typ":"JWT","kid":"k1"}"#)
        );
        assert_eq!(fx.keys.verify(&none), Err(TokenError::Malformed));

        // HS256 signed with the public key's bytes: the classic key-confusion attack.
        let confused = Signer::hs256("k1".into(), &fx.public_pem);
        let token = confused.sign(&claims_json(|_| {})).unwrap();
        assert_eq!(fx.keys.verify(&token), Err(TokenError::AlgorithmNotAllowed));

        let other_kid = Signer::ed25519_from_pem_file(
            &generate_ed25519_pair(fx._dir.path(), "k2").unwrap().0,
            None,
        )
        .unwrap();
        let token = other_kid.mint(&request()).unwrap().token;
        assert_eq!(fx.keys.verify(&token), Err(TokenError::UnknownKey));

        assert_eq!(fx.keys.verify("not-a-jwt"), Err(TokenError::Malformed));
        assert_eq!(fx.keys.verify(""), Err(TokenError::Malformed));
    }

    #[test]
    fn refuses_a_tampered_signature() {
        let fx = fixture();
        let token = fx.signer.mint(&request()).unwrap().token;
        let (head, _sig) = token.rsplit_once('.').unwrap();
        let forged = fx
            .signer
            .sign(&claims_json(|v| v["cid"] = "other".into()))
            .unwrap();
        let forged_sig = forged.rsplit_once('.').unwrap().1;
        let spliced = format!("{head}.{forged_sig}");
        assert_eq!(fx.keys.verify(&spliced), Err(TokenError::BadSignature));
    }

    #[test]
    fn key_rotation_accepts_both_kids() {
        let fx = fixture();
        let (private2, public2) = generate_ed25519_pair(fx._dir.path(), "k2").unwrap();
        let public1 = fx._dir.path().join("k1.pub.pem");
        let keys = KeySet::ed25519_from_pem_files(
            [
                (kid_from_path(&public1), public1.as_path()),
                (kid_from_path(&public2), public2.as_path()),
            ],
            &VerifyPolicy::default(),
        )
        .unwrap();
        let signer2 = Signer::ed25519_from_pem_file(&private2, None).unwrap();
        assert!(
            keys.verify(&fx.signer.mint(&request()).unwrap().token)
                .is_ok()
        );
        assert!(
            keys.verify(&signer2.mint(&request()).unwrap().token)
                .is_ok()
        );
    }

    #[test]
    fn hs256_only_when_configured() {
        let policy = VerifyPolicy::default();
        let keys = KeySet::hs256([("s1".to_owned(), b"secret".to_vec())], &policy).unwrap();
        let signer = Signer::hs256("s1".into(), b"secret");
        assert!(keys.verify(&signer.mint(&request()).unwrap().token).is_ok());
        let wrong = Signer::hs256("s1".into(), b"other");
        assert_eq!(
            keys.verify(&wrong.mint(&request()).unwrap().token),
            Err(TokenError::BadSignature)
        );
        // An EdDSA key set never takes an HS256 token, even with a valid secret.
        let fx = fixture();
        assert_eq!(
            fx.keys.verify(&signer.mint(&request()).unwrap().token),
            Err(TokenError::AlgorithmNotAllowed)
        );
    }

    #[test]
    fn signer_debug_masks_the_key() {
        let fx = fixture();
        let shown = format!("{:?}", fx.signer);
        assert!(shown.contains("MASKED"));
        assert!(!shown.contains("PRIVATE"));
    }

    #[test]
    fn short_hs256_secrets_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (short, long) = (dir.path().join("short"), dir.path().join("long"));
        std::fs::write(&short, "hunter2\n").unwrap();
        std::fs::write(&long, [b'k'; MIN_HS256_SECRET]).unwrap();
        let err = read_hs256_secret(&short).unwrap_err().to_string();
        assert!(err.contains("7 bytes; it needs at least 32"), "{err}");
        assert_eq!(read_hs256_secret(&long).unwrap().len(), MIN_HS256_SECRET);
    }
}
