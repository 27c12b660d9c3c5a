//! Callers verified with an OpenID Connect issuer's keys: the real vnc-control against a
//! real redis-server and a local issuer this test serves (its discovery document and a
//! JWKS it can swap, bloat or stall, counting the JWKS requests), tokens signed with the
//! test's Ed25519 keys, and forged ones.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use vnc_shared::token::{Signer, generate_ed25519_pair, unix_now};
use vnc_tests::control::ControlProcess;
use vnc_tests::keys::TestKeys;
use vnc_tests::process::eventually;
use vnc_tests::redis::{RedisServer, free_port};

const AUDIENCE: &str = "vnc-control";

/// One of the identity provider's signing keys, and its public half as a JWK.
struct IdpKey {
    _dir: tempfile::TempDir,
    signer: Signer,
    /// The public key's PEM, and its 32 raw bytes: what an attacker would try as an
    /// HS256 secret.
    public_pem: Vec<u8>,
    raw: Vec<u8>,
    jwk: Value,
}

impl IdpKey {
    fn new(kid: &str) -> IdpKey {
        let dir = tempfile::tempdir().unwrap();
        let (private, public) = generate_ed25519_pair(dir.path(), kid).unwrap();
        let signer = Signer::ed25519_from_pem_file(&private, Some(kid.to_owned())).unwrap();
        // The SubjectPublicKeyInfo of an Ed25519 key ends with the 32 key bytes.
        let pem = std::fs::read_to_string(public).unwrap();
        let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = STANDARD.decode(b64).unwrap();
        let raw = der[der.len() - 32..].to_vec();
        let x = URL_SAFE_NO_PAD.encode(&raw);
        let jwk = json!({"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "kid": kid, "x": x});
        IdpKey {
            _dir: dir,
            signer,
            public_pem: pem.into_bytes(),
            raw,
            jwk,
        }
    }

    /// A token of `iss` for `aud`, expiring `exp_in` seconds from now.
    fn token_of(&self, iss: &str, aud: &str, exp_in: i64) -> String {
        self.signer.sign(&claims(iss, aud, exp_in)).unwrap()
    }
}

fn claims(iss: &str, aud: &str, exp_in: i64) -> Value {
    let now = unix_now();
    json!({
        "iss": iss, "aud": aud, "sub": "alice", "tenant": "t1",
        "iat": now, "exp": now.saturating_add_signed(exp_in),
    })
}

/// A token with `header` over `claims`, signed by `sign` (given the signing input).
fn forged(header: &Value, claims: &Value, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = URL_SAFE_NO_PAD.encode(sign(input.as_bytes()));
    format!("{input}.{signature}")
}

fn hs256(secret: &[u8], input: &[u8]) -> Vec<u8> {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
    mac.update(input);
    mac.finalize().into_bytes().to_vec()
}

/// The local issuer: `/.well-known/openid-configuration` and `/jwks` over HTTP on a
/// loopback port.
struct Issuer {
    url: String,
    /// The `issuer` its discovery document claims (the URL unless a test bends it).
    claimed: Arc<Mutex<String>>,
    /// The JWKS body, as sent.
    jwks: Arc<Mutex<String>>,
    /// While set, a JWKS request gets its head, promising a body that never comes.
    stall: Arc<AtomicBool>,
    jwks_requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Issuer {
    async fn start_on(port: u16, keys: &[&IdpKey]) -> Issuer {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let url = format!("http://{addr}/realms/test");
        let claimed = Arc::new(Mutex::new(url.clone()));
        let jwks = Arc::new(Mutex::new(String::new()));
        let stall = Arc::new(AtomicBool::new(false));
        let jwks_requests = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn({
            let (url, claimed, jwks, stall, count) = (
                url.clone(),
                claimed.clone(),
                jwks.clone(),
                stall.clone(),
                jwks_requests.clone(),
            );
            async move {
                while let Ok((mut stream, _)) = listener.accept().await {
                    let (url, claimed, jwks, stall, count) = (
                        url.clone(),
                        claimed.clone(),
                        jwks.clone(),
                        stall.clone(),
                        count.clone(),
                    );
                    tokio::spawn(async move {
                        let mut head = Vec::new();
                        let mut buf = [0u8; 1024];
                        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16_384 {
                            match stream.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => head.extend_from_slice(&buf[..n]),
                            }
                        }
                        let head = String::from_utf8_lossy(&head);
                        let path = head.split(' ').nth(1).unwrap_or_default();
                        let body = if path == "/realms/test/.well-known/openid-configuration" {
                            let issuer = claimed.lock().unwrap().clone();
                            Some(
                                json!({"issuer": issuer, "jwks_uri": format!("{url}/jwks")})
                                    .to_string(),
                            )
                        } else if path == "/realms/test/jwks" {
                            count.fetch_add(1, Ordering::SeqCst);
                            if stall.load(Ordering::SeqCst) {
                                let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{\"keys\": [";
                                let _ = stream.write_all(head.as_bytes()).await;
                                // Holds the connection far longer than control waits.
                                tokio::time::sleep(Duration::from_secs(300)).await;
                                return;
                            }
                            Some(jwks.lock().unwrap().clone())
                        } else {
                            None
                        };
                        let resp = match body {
                            Some(b) => {
                                format!(
                                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{b}",
                                    b.len()
                                )
                            }
                            None => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_owned(),
                        };
                        let _ = stream.write_all(resp.as_bytes()).await;
                    });
                }
            }
        });
        let issuer = Issuer {
            url,
            claimed,
            jwks,
            stall,
            jwks_requests,
            task,
        };
        issuer.serve(keys);
        issuer
    }

    /// Serves `keys` as the JWKS from now on.
    fn serve(&self, keys: &[&IdpKey]) {
        let keys: Vec<&Value> = keys.iter().map(|k| &k.jwk).collect();
        self.serve_body(json!({ "keys": keys }).to_string());
    }

    fn serve_body(&self, body: String) {
        *self.jwks.lock().unwrap() = body;
    }

    fn jwks_requests(&self) -> usize {
        self.jwks_requests.load(Ordering::SeqCst)
    }

    fn token(&self, key: &IdpKey) -> String {
        key.token_of(&self.url, AUDIENCE, 600)
    }
}

impl Drop for Issuer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Control with the static runtime (nothing needs Docker), trusting `issuer_url`,
/// fetching its keys at most once per `refresh`.
struct Stack {
    control: ControlProcess,
    _redis: RedisServer,
    _keys: TestKeys,
    _dir: tempfile::TempDir,
}

async fn control(issuer_url: &str, refresh: &str) -> Stack {
    let redis = RedisServer::start().await.unwrap();
    let keys = TestKeys::new();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("control.toml");
    std::fs::write(
        &config,
        "runtime = \"static\"\n[[static_containers]]\ncid = \"desk\"\nowner = \"alice\"\ntenant = \"t1\"\nhost = \"127.0.0.1\"\nport = 5900\n",
    )
    .unwrap();
    let auth = [
        "--auth-oidc-issuer",
        issuer_url,
        "--auth-audience",
        AUDIENCE,
        "--auth-oidc-refresh-interval",
        refresh,
    ];
    let control = ControlProcess::start_with_auth(
        &redis.url(),
        &keys,
        &auth,
        &["--config", config.to_str().unwrap()],
    )
    .await
    .unwrap();
    Stack {
        control,
        _redis: redis,
        _keys: keys,
        _dir: dir,
    }
}

async fn list(c: &ControlProcess, bearer: &str) -> (u16, Value) {
    c.call("GET", "/v1/containers", Some(bearer), None)
        .await
        .unwrap()
}

fn message(body: &Value) -> &str {
    body["message"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn a_token_verifies_with_the_issuers_key_of_its_kid_and_nothing_else() {
    let (k1, stranger) = (IdpKey::new("k1"), IdpKey::new("k9"));
    // Another key under the issuer's kid: its signatures are not k1's.
    let impostor = IdpKey::new("k1");
    let issuer = Issuer::start_on(0, &[&k1]).await;
    let stack = control(&issuer.url, "1s").await;
    let c = &stack.control;

    let (status, body) = list(c, &issuer.token(&k1)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["items"][0]["id"], "desk", "{body}");

    let good = claims(&issuer.url, AUDIENCE, 600);
    let hs256_header = json!({"alg": "HS256", "typ": "JWT", "kid": "k1"});
    let jwk_text = k1.jwk.to_string();
    for (what, token, says) in [
        (
            "another issuer",
            k1.token_of("http://127.0.0.1:1/other", AUDIENCE, 600),
            "its issuer (iss) is not",
        ),
        (
            "another audience",
            k1.token_of(&issuer.url, "vnc-relay", 600),
            "its audience (aud) is not vnc-control",
        ),
        (
            "expired",
            k1.token_of(&issuer.url, AUDIENCE, -120),
            "it has expired",
        ),
        (
            "a kid the issuer does not serve",
            issuer.token(&stranger),
            "kid \"k9\" is not among the keys of",
        ),
        (
            "another key's signature under the issuer's kid",
            issuer.token(&impostor),
            "its signature does not verify",
        ),
        (
            "alg none",
            forged(
                &json!({"alg": "none", "typ": "JWT", "kid": "k1"}),
                &good,
                |_| Vec::new(),
            ),
            "malformed header",
        ),
        (
            "HS256 with the public key's PEM as the secret",
            forged(&hs256_header, &good, |m| hs256(&k1.public_pem, m)),
            "alg HS256 is not the key's (EdDSA)",
        ),
        (
            "HS256 with the public key's bytes as the secret",
            forged(&hs256_header, &good, |m| hs256(&k1.raw, m)),
            "alg HS256 is not the key's (EdDSA)",
        ),
        (
            "HS256 with the JWK as the secret",
            forged(&hs256_header, &good, |m| hs256(jwk_text.as_bytes(), m)),
            "alg HS256 is not the key's (EdDSA)",
        ),
        (
            "a 10 KB kid",
            forged(
                &json!({"alg": "EdDSA", "kid": "k".repeat(10_000)}),
                &good,
                |_| vec![0; 64],
            ),
            "its kid is longer than 256 bytes",
        ),
        (
            "no kid",
            forged(&json!({"alg": "EdDSA", "typ": "JWT"}), &good, |_| {
                vec![0; 64]
            }),
            "no kid",
        ),
    ] {
        let (status, body) = list(c, &token).await;
        assert_eq!(status, 401, "{what}: {body}");
        assert!(message(&body).contains(says), "{what}: {body}");
    }
    assert_eq!(list(c, &issuer.token(&k1)).await.0, 200);
}

#[tokio::test]
async fn ec_keys_verify_and_published_symmetric_or_encryption_keys_never_do() {
    use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
    let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    // The uncompressed point: 0x04, then x and y.
    let point = ec.public_key_raw();
    let ec_jwk = json!({"kty": "EC", "crv": "P-256", "kid": "ec1",
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..])});
    let ec_key = EncodingKey::from_ec_pem(ec.serialize_pem().as_bytes()).unwrap();
    // A symmetric key is public once it is in a JWKS; an encryption key signs nothing.
    let secret = b"a secret the whole world can read";
    let oct_jwk = json!({"kty": "oct", "kid": "hs1", "k": URL_SAFE_NO_PAD.encode(secret)});
    let enc = IdpKey::new("enc1");
    let mut enc_jwk = enc.jwk.clone();
    enc_jwk["use"] = "enc".into();

    let issuer = Issuer::start_on(0, &[]).await;
    issuer.serve_body(json!({"keys": [ec_jwk, oct_jwk, enc_jwk]}).to_string());
    let stack = control(&issuer.url, "1s").await;
    let c = &stack.control;
    let good = claims(&issuer.url, AUDIENCE, 600);
    let signed = |alg: Algorithm, kid: &str, key: &EncodingKey| {
        let mut header = Header::new(alg);
        header.kid = Some(kid.to_owned());
        encode(&header, &good, key).unwrap()
    };

    let (status, body) = list(c, &signed(Algorithm::ES256, "ec1", &ec_key)).await;
    assert_eq!(status, 200, "{body}");
    for (what, token) in [
        (
            "HS256 with the published symmetric key",
            signed(Algorithm::HS256, "hs1", &EncodingKey::from_secret(secret)),
        ),
        (
            "EdDSA with a key published for encryption",
            enc.signer.sign(&good).unwrap(),
        ),
    ] {
        let (status, body) = list(c, &token).await;
        assert_eq!(status, 401, "{what}: {body}");
        assert!(
            message(&body).contains("is not among the keys"),
            "{what}: {body}"
        );
    }
}

#[tokio::test]
async fn the_issuers_keys_rotate_without_a_restart() {
    let (k1, k2, k3) = (IdpKey::new("k1"), IdpKey::new("k2"), IdpKey::new("k3"));
    let issuer = Issuer::start_on(0, &[&k1]).await;
    let stack = control(&issuer.url, "1s").await;
    let c = &stack.control;
    let pid = c.proc.pid();
    assert_eq!(list(c, &issuer.token(&k1)).await.0, 200);

    // The issuer adds k2: its first token makes control fetch the keys again (once the
    // refresh interval allows), and k1 still verifies.
    issuer.serve(&[&k1, &k2]);
    let k2_token = issuer.token(&k2);
    eventually(
        "a token of the added key",
        Duration::from_secs(10),
        || async { (list(c, &k2_token).await.0 == 200).then_some(()) },
    )
    .await;
    assert_eq!(list(c, &issuer.token(&k1)).await.0, 200);

    // The issuer removes k1: a reload fetches the keys at once, and k1 stops verifying.
    issuer.serve(&[&k2]);
    c.proc.signal("HUP");
    let k1_token = issuer.token(&k1);
    let body = eventually(
        "the removed key refused",
        Duration::from_secs(10),
        || async {
            let (status, body) = list(c, &k1_token).await;
            (status == 401).then_some(body)
        },
    )
    .await;
    assert!(message(&body).contains("\"k1\" is not among"), "{body}");
    assert_eq!(list(c, &k2_token).await.0, 200);

    // The issuer swaps k2 for k3 at once: k3's first token brings the new set in, and
    // k2 goes with it.
    issuer.serve(&[&k3]);
    let k3_token = issuer.token(&k3);
    eventually(
        "a token of the new key",
        Duration::from_secs(10),
        || async { (list(c, &k3_token).await.0 == 200).then_some(()) },
    )
    .await;
    let (status, body) = list(c, &k2_token).await;
    assert_eq!(status, 401, "the removed key still verifies: {body}");
    assert_eq!(c.proc.pid(), pid, "control restarted");
}

#[tokio::test]
async fn made_up_kids_do_not_make_control_hammer_the_issuer() {
    let k1 = IdpKey::new("k1");
    let issuer = Issuer::start_on(0, &[&k1]).await;
    let stack = control(&issuer.url, "2s").await;
    let c = &stack.control;
    assert_eq!(list(c, &issuer.token(&k1)).await.0, 200);

    let good = claims(&issuer.url, AUDIENCE, 600);
    let before = issuer.jwks_requests();
    let started = Instant::now();
    let mut statuses = Vec::new();
    while started.elapsed() < Duration::from_secs(5) {
        let batch: Vec<String> = (0..20)
            .map(|_| {
                let kid = format!("kid-{}", rand::random::<u64>());
                forged(&json!({"alg": "EdDSA", "kid": kid}), &good, |_| vec![0; 64])
            })
            .collect();
        let answers = futures_util::future::join_all(batch.iter().map(|t| list(c, t))).await;
        statuses.extend(answers.into_iter().map(|(s, _)| s));
    }
    let fetched = issuer.jwks_requests() - before;
    let elapsed = started.elapsed().as_secs_f64();
    assert!(statuses.len() >= 40, "{} tokens sent", statuses.len());
    assert!(statuses.iter().all(|&s| s == 401), "{statuses:?}");
    // At most one fetch per 2 s interval however many kids come (and at least one:
    // an unknown kid does ask).
    let most = (elapsed / 2.0).ceil() as usize + 1;
    assert!(
        (1..=most).contains(&fetched),
        "{fetched} JWKS fetches for {} made-up kids in {elapsed:.1}s (at most {most})",
        statuses.len()
    );
    assert_eq!(list(c, &issuer.token(&k1)).await.0, 200);
}

#[tokio::test]
async fn an_issuer_down_at_start_is_a_clear_503_until_its_keys_load() {
    let k1 = IdpKey::new("k1");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/realms/test");
    let stack = control(&url, "1s").await;
    let c = &stack.control;
    let token = k1.token_of(&url, AUDIENCE, 600);

    let (status, body) = list(c, &token).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        message(&body).contains("keys are not loaded") && message(&body).contains(&url),
        "{body}"
    );

    // Up, but its discovery document names another issuer: still refused, saying so.
    let issuer = Issuer::start_on(port, &[&k1]).await;
    *issuer.claimed.lock().unwrap() = "https://evil.example".into();
    eventually(
        "the issuer mismatch named",
        Duration::from_secs(10),
        || async {
            let (status, body) = list(c, &token).await;
            (status == 503 && message(&body).contains("evil.example")).then_some(())
        },
    )
    .await;

    *issuer.claimed.lock().unwrap() = issuer.url.clone();
    eventually("the keys to load", Duration::from_secs(10), || async {
        (list(c, &token).await.0 == 200).then_some(())
    })
    .await;
    // Refused while down, then the wrong issuer at least once; the one that loaded.
    let errors = c
        .metric(r#"vnc_control_oidc_key_fetches_total{result="error"}"#)
        .await;
    let loaded = c
        .metric(r#"vnc_control_oidc_key_fetches_total{result="ok"}"#)
        .await;
    assert!(errors >= Some(2.0), "{errors:?}: {}", c.metrics().await);
    assert_eq!(loaded, Some(1.0), "{}", c.metrics().await);
}

#[tokio::test]
async fn a_huge_overfull_or_stalled_key_set_is_refused_and_the_keys_in_force_stay() {
    let (k1, stranger) = (IdpKey::new("k1"), IdpKey::new("k9"));
    let issuer = Issuer::start_on(0, &[]).await;
    // Over the 256 KiB control reads of a document.
    issuer.serve_body(json!({"keys": [k1.jwk], "padding": "x".repeat(300 * 1024)}).to_string());
    let stack = control(&issuer.url, "1s").await;
    let c = &stack.control;
    let token = issuer.token(&k1);

    let (status, body) = list(c, &token).await;
    assert_eq!(status, 503, "{body}");
    assert!(message(&body).contains("length limit"), "{body}");

    // More keys than control takes from one set.
    let many: Vec<Value> = (0..33)
        .map(|i| {
            let mut jwk = k1.jwk.clone();
            jwk["kid"] = format!("k{i}").into();
            jwk
        })
        .collect();
    issuer.serve_body(json!({ "keys": many }).to_string());
    eventually(
        "the overfull set refused",
        Duration::from_secs(10),
        || async {
            let (status, body) = list(c, &token).await;
            (status == 503 && message(&body).contains("33 keys, more than 32")).then_some(())
        },
    )
    .await;

    // An issuer that sends the head and never the body: control gives up on it.
    issuer.stall.store(true, Ordering::SeqCst);
    eventually(
        "the stalled fetch given up",
        Duration::from_secs(20),
        || async {
            let (status, body) = list(c, &token).await;
            (status == 503 && message(&body).contains("no answer within")).then_some(())
        },
    )
    .await;

    issuer.stall.store(false, Ordering::SeqCst);
    issuer.serve(&[&k1]);
    eventually("the keys to load", Duration::from_secs(10), || async {
        (list(c, &token).await.0 == 200).then_some(())
    })
    .await;

    // Stalled again, an unknown kid's fetch fails; the keys in force still verify.
    issuer.stall.store(true, Ordering::SeqCst);
    let before = issuer.jwks_requests();
    let stranger_token = issuer.token(&stranger);
    eventually(
        "a fetch for the unknown kid",
        Duration::from_secs(20),
        || async {
            let (status, _) = list(c, &stranger_token).await;
            assert_eq!(status, 401);
            (issuer.jwks_requests() > before).then_some(())
        },
    )
    .await;
    let (status, body) = list(c, &token).await;
    assert_eq!(status, 200, "{body}");
}
