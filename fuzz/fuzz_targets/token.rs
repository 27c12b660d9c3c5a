//! Fuzz target for token verification (`KeySet::verify`), what the relay runs on every
//! token a browser presents: hostile input must never panic, and a token it accepts
//! must carry the claims the relay relies on.
//!
//! Input: one mode byte, then the data.
//! - even mode: the data (as lossy UTF-8) is the token, as it comes from a URL, a
//!   cookie or a header;
//! - odd mode: the data, split at its first 0 byte, is a header and a payload that are
//!   base64url-encoded and signed with the key set's HS256 secret, so the parsing past
//!   the signature check (header fields, claims JSON) sees arbitrary bytes too.

#![no_main]

use std::sync::LazyLock;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey};
use libfuzzer_sys::fuzz_target;
use vnc_shared::token::{
    DEFAULT_AUDIENCE, DEFAULT_ISSUER, KeySet, MAX_LEEWAY, VerifyPolicy, unix_now,
};

const SECRET: &[u8; 32] = b"vnc-relay fuzzing secret, 32 b.!";

static KEYS: LazyLock<KeySet> = LazyLock::new(|| {
    KeySet::hs256([("k1".to_owned(), SECRET.to_vec())], &VerifyPolicy::default())
        .expect("key set")
});

fn signed(header: &[u8], payload: &[u8]) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let signature = jsonwebtoken::crypto::sign(
        input.as_bytes(),
        &EncodingKey::from_secret(SECRET),
        Algorithm::HS256,
    )
    .expect("HMAC signs any input");
    format!("{input}.{signature}")
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let token = if mode % 2 == 0 {
        String::from_utf8_lossy(rest).into_owned()
    } else {
        match rest.iter().position(|&b| b == 0) {
            Some(at) => signed(&rest[..at], &rest[at + 1..]),
            None => signed(rest, b""),
        }
    };
    if let Ok(claims) = KEYS.verify(&token) {
        assert!(!claims.cid.is_empty() && !claims.jti.is_empty() && !claims.sub.is_empty());
        assert_eq!(claims.iss, DEFAULT_ISSUER);
        assert_eq!(claims.aud, DEFAULT_AUDIENCE);
        assert!(
            claims.exp + MAX_LEEWAY.as_secs() >= unix_now(),
            "an expired token was accepted: {claims:?}"
        );
        assert!(
            claims.nbf <= unix_now() + MAX_LEEWAY.as_secs(),
            "a token not valid yet was accepted: {claims:?}"
        );
    }
});
