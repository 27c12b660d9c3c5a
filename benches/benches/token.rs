//! Token verification cost: what the relay pays once per new session.
#![forbid(unsafe_code)]

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use vnc_shared::token::{
    ClipboardPolicy, FilePolicy, KeySet, Scope, Signer, TokenRequest, VerifyPolicy,
    generate_ed25519_pair, kid_from_path,
};

fn request() -> TokenRequest<'static> {
    TokenRequest {
        sub: "user-1",
        tenant: "tenant-1",
        cid: "container-1",
        scope: Scope::Control,
        ttl: Duration::from_secs(60),
        share: None,
        admin: false,
        files: FilePolicy::Both,
        clipboard: ClipboardPolicy::Both,
    }
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (private, public) = generate_ed25519_pair(dir.path(), "k1").expect("keys");
    let signer = Signer::ed25519_from_pem_file(&private, None).expect("signer");
    let policy = VerifyPolicy::default();
    let keys =
        KeySet::ed25519_from_pem_files([(kid_from_path(&public), public.as_path())], &policy)
            .expect("key set");
    let token = signer.mint(&request()).expect("mint").token;

    let hs_keys = KeySet::hs256(
        [("s1".to_owned(), b"a-long-shared-secret".to_vec())],
        &policy,
    )
    .expect("hs256 set");
    let hs_signer = Signer::hs256("s1".into(), b"a-long-shared-secret");
    let hs_token = hs_signer.mint(&request()).expect("mint").token;

    let mut g = c.benchmark_group("token");
    g.bench_function("verify_eddsa", |b| {
        b.iter(|| keys.verify(&token).expect("valid"))
    });
    g.bench_function("verify_hs256", |b| {
        b.iter(|| hs_keys.verify(&hs_token).expect("valid"))
    });
    g.bench_function("mint_eddsa", |b| {
        b.iter(|| signer.mint(&request()).expect("mint"))
    });
    g.bench_function("reject_bad_signature", |b| {
        let forged = format!("{}x", &token[..token.len() - 1]);
        b.iter(|| keys.verify(&forged).expect_err("forged"))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
