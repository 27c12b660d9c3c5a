//! The real `vnc-control` binary on free loopback ports, identity tokens for its
//! callers, and a small JSON-over-HTTP client that checks every answer against the
//! OpenAPI description control serves (a mismatch fails the test that made the call).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::process::Command;
use vnc_shared::token::{Signer, generate_ed25519_pair, unix_now};

use crate::keys::TestKeys;
use crate::openapi::ApiDescription;
use crate::process::{Proc, bin_path, listening_field};

/// The operator's identity provider, as far as tests need one: an Ed25519 key pair
/// whose tokens control accepts as callers.
pub struct Identity {
    _dir: tempfile::TempDir,
    signer: Signer,
    pub public: PathBuf,
}

pub const IDENTITY_ISSUER: &str = "test-idp";
pub const IDENTITY_AUDIENCE: &str = "vnc-control";

impl Identity {
    pub fn new() -> Identity {
        let dir = tempfile::tempdir().expect("tempdir");
        let (private, public) = generate_ed25519_pair(dir.path(), "idp").expect("identity keys");
        let signer = Signer::ed25519_from_pem_file(&private, None).expect("identity signer");
        Identity {
            _dir: dir,
            signer,
            public,
        }
    }

    /// A bearer token for `sub` of `tenant` (an admin if `admin`), valid 10 minutes.
    pub fn token(&self, sub: &str, tenant: &str, admin: bool) -> String {
        let now = unix_now();
        let roles: Vec<&str> = if admin { vec!["admin"] } else { vec![] };
        self.signer
            .sign(&serde_json::json!({
                "iss": IDENTITY_ISSUER, "aud": IDENTITY_AUDIENCE, "sub": sub, "tenant": tenant,
                "roles": roles, "iat": now, "exp": now + 600,
            }))
            .expect("sign identity token")
    }
}

impl Default for Identity {
    fn default() -> Self {
        Self::new()
    }
}

/// Redis, the VNC token keys and an identity provider, for tests that need Docker.
pub struct DockerStack {
    pub redis: crate::redis::RedisServer,
    pub keys: TestKeys,
    pub identity: Identity,
}

/// A [`DockerStack`]; `None` (after a loud skip message) on a machine without a Docker
/// engine (see [`crate::docker::docker_required`]).
pub async fn docker_stack() -> Option<DockerStack> {
    if !crate::docker::docker_required() {
        return None;
    }
    Some(DockerStack {
        redis: crate::redis::RedisServer::start()
            .await
            .expect("start redis"),
        keys: TestKeys::new(),
        identity: Identity::new(),
    })
}

/// Flags of a control on the machine's Docker engine allowing `image`, publishing its
/// desktops' VNC ports on 127.0.0.1 (what the Docker tests run), then `extra`.
pub fn docker_args<'a>(image: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "--image",
        image,
        "--network",
        "published",
        "--publish-ip",
        "127.0.0.1",
    ];
    args.extend_from_slice(extra);
    args
}

pub struct ControlProcess {
    pub proc: Proc,
    pub api: SocketAddr,
    pub admin: SocketAddr,
    /// Holds the VNC password secrets file control was given (unless the test gave one).
    _secrets: tempfile::TempDir,
    /// Control's OpenAPI description, fetched before the first call.
    description: tokio::sync::OnceCell<Arc<ApiDescription>>,
}

impl ControlProcess {
    /// Starts control against `redis_url`, signing VNC tokens with `keys`, trusting
    /// `identity` for callers, with extra flags (`--image`, `--relay-url`, ...). Its VNC
    /// password secrets file is generated in a directory of its own unless `extra`
    /// names one (replicas that share containers must share it).
    pub async fn start(
        redis_url: &str,
        keys: &TestKeys,
        identity: &Identity,
        extra: &[&str],
    ) -> anyhow::Result<ControlProcess> {
        let public = identity.public.to_str().unwrap_or_default();
        let auth = [
            "--auth-public-key",
            public,
            "--auth-issuer",
            IDENTITY_ISSUER,
            "--auth-audience",
            IDENTITY_AUDIENCE,
        ];
        Self::start_with_auth(redis_url, keys, &auth, extra).await
    }

    /// [`ControlProcess::start`] verifying callers as the flags `auth` say
    /// (`--auth-oidc-issuer URL`, ...).
    pub async fn start_with_auth(
        redis_url: &str,
        keys: &TestKeys,
        auth: &[&str],
        extra: &[&str],
    ) -> anyhow::Result<ControlProcess> {
        let secrets = tempfile::tempdir()?;
        let mut cmd = Command::new(bin_path("vnc-control"));
        if !extra.contains(&"--vnc-password-secret-file") {
            cmd.arg("--vnc-password-secret-file")
                .arg(secrets.path().join("vnc-password.secret"));
        }
        cmd.args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .args(["--redis-url", redis_url])
            .arg("--jwt-private-key")
            .arg(&keys.private)
            .args(auth)
            // Tests share one Docker engine: each test's Redis is a control plane.
            .args([
                "--plane",
                &format!("test-{}", redis_url.rsplit(':').next().unwrap_or("0")),
            ])
            .args(extra)
            .env(
                "RUST_LOG",
                std::env::var("CONTROL_LOG").unwrap_or_else(|_| "warn".into()),
            )
            // Tests poll the API from one caller every 20 ms, past the default
            // per-caller limit; a test of the limit passes `--api-rate-limit`, which
            // wins over this.
            .env("VNC_CONTROL_API_RATE_LIMIT", "100000");
        let (proc, line) = Proc::start(cmd, "vnc-control").await?;
        Ok(ControlProcess {
            api: listening_field(&line, "api=")?,
            admin: listening_field(&line, "admin=")?,
            proc,
            _secrets: secrets,
            description: tokio::sync::OnceCell::new(),
        })
    }

    /// Starts control with the static runtime declaring `containers` as
    /// `(cid, owner, tenant)`, all running (nothing dials their endpoints unless a test
    /// opens a relay session).
    pub async fn start_static(
        redis_url: &str,
        keys: &TestKeys,
        identity: &Identity,
        containers: &[(&str, &str, &str)],
    ) -> anyhow::Result<ControlProcess> {
        let at: Vec<_> = containers
            .iter()
            .map(|&(cid, owner, tenant)| (cid, owner, tenant, 5900))
            .collect();
        Self::start_static_at(redis_url, keys, identity, &at).await
    }

    /// [`ControlProcess::start_static`] with each container's VNC port on 127.0.0.1:
    /// `(cid, owner, tenant, port)`.
    pub async fn start_static_at(
        redis_url: &str,
        keys: &TestKeys,
        identity: &Identity,
        containers: &[(&str, &str, &str, u16)],
    ) -> anyhow::Result<ControlProcess> {
        Self::start_static_with(redis_url, keys, identity, containers, &[]).await
    }

    /// [`ControlProcess::start_static_at`] with extra flags (`--relay-url`, ...).
    pub async fn start_static_with(
        redis_url: &str,
        keys: &TestKeys,
        identity: &Identity,
        containers: &[(&str, &str, &str, u16)],
        extra: &[&str],
    ) -> anyhow::Result<ControlProcess> {
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("control.toml");
        let mut toml = "runtime = \"static\"\n".to_owned();
        for (cid, owner, tenant, port) in containers {
            toml.push_str(&format!(
                "[[static_containers]]\ncid = {cid:?}\nowner = {owner:?}\ntenant = {tenant:?}\nhost = \"127.0.0.1\"\nport = {port}\n"
            ));
        }
        std::fs::write(&config, toml)?;
        let config = config.to_str().unwrap_or_default().to_owned();
        // Control reads its config once, at start-up; the directory may go after that.
        let mut args = vec!["--config", config.as_str()];
        args.extend_from_slice(extra);
        Self::start(redis_url, keys, identity, &args).await
    }

    /// A `control` VNC token for container `cid` (60 s) from the API, as `bearer`.
    pub async fn vnc_token(&self, bearer: &str, cid: &str) -> String {
        let body = serde_json::json!({"scope": "control", "ttl_seconds": 60});
        let path = format!("/v1/containers/{cid}/vnc-tokens");
        let (status, minted) = self
            .call("POST", &path, Some(bearer), Some(&body))
            .await
            .expect("POST vnc-tokens");
        assert_eq!(status, 200, "{minted}");
        minted["token"].as_str().expect("a token").to_owned()
    }

    /// Asks for a desktop of `image` (0.5 CPU, 128 MiB) as `bearer`; the status and
    /// body (`container_id`, `job_id`).
    pub async fn create_desktop(&self, bearer: &str, image: &str) -> (u16, serde_json::Value) {
        let body =
            serde_json::json!({"image": image, "resources": {"cpus": 0.5, "memory_mb": 128}});
        self.call("POST", "/v1/containers", Some(bearer), Some(&body))
            .await
            .expect("POST /v1/containers")
    }

    /// Creates a desktop from `body` as `bearer` and waits up to `within` for its start
    /// job to complete; its id, and the guard that removes its container (made before
    /// the wait, so a failed start is cleaned up too).
    pub async fn start_desktop(
        &self,
        bearer: &str,
        body: &serde_json::Value,
        within: std::time::Duration,
    ) -> (String, crate::docker::ContainerGuard) {
        let (status, created) = self
            .call("POST", "/v1/containers", Some(bearer), Some(body))
            .await
            .expect("POST /v1/containers");
        assert_eq!(status, 202, "{created}");
        let cid = created["container_id"]
            .as_str()
            .expect("container_id")
            .to_owned();
        let guard = crate::docker::ContainerGuard {
            name: format!("vnc-{cid}"),
        };
        let job = self
            .wait_job(bearer, created["job_id"].as_str().expect("job_id"), within)
            .await;
        assert_eq!(job["state"], "completed", "{job}");
        (cid, guard)
    }

    /// Deletes desktop `cid` as `bearer` and waits up to `within` for its stop job to
    /// finish; the job's record.
    pub async fn delete_desktop(
        &self,
        bearer: &str,
        cid: &str,
        within: std::time::Duration,
    ) -> serde_json::Value {
        let (status, deleted) = self
            .call(
                "DELETE",
                &format!("/v1/containers/{cid}"),
                Some(bearer),
                None,
            )
            .await
            .expect("DELETE /v1/containers/{id}");
        assert_eq!(status, 202, "{deleted}");
        self.wait_job(bearer, deleted["job_id"].as_str().expect("job_id"), within)
            .await
    }

    /// Polls job `job` as `bearer` until it is completed or failed; its record.
    pub async fn wait_job(
        &self,
        bearer: &str,
        job: &str,
        within: std::time::Duration,
    ) -> serde_json::Value {
        crate::process::eventually(&format!("job {job} to finish"), within, || async {
            let (status, body) = self
                .call("GET", &format!("/v1/jobs/{job}"), Some(bearer), None)
                .await
                .ok()?;
            (status == 200 && matches!(body["state"].as_str(), Some("completed" | "failed")))
                .then_some(body)
        })
        .await
    }

    /// The value of one metric line (exact name and labels) on the admin listener.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        crate::ws::metric_at(self.admin, series).await
    }

    /// The Prometheus text from the admin listener.
    pub async fn metrics(&self) -> String {
        crate::ws::http_get(self.admin, "/metrics")
            .await
            .expect("GET /metrics")
            .1
    }

    /// [`ControlProcess::call`], also returning the response head (status line and
    /// headers, as sent).
    pub async fn call_with_head(
        &self,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        body: Option<&serde_json::Value>,
    ) -> anyhow::Result<(u16, String, serde_json::Value)> {
        self.exchange(None, method, path, bearer, body).await
    }

    /// An HTTP/1.1 request to the API, closing the connection after the answer.
    fn request(&self, call: &ApiCall) -> String {
        let body = call.body.map(|b| b.to_string()).unwrap_or_default();
        let mut req = format!(
            "{} {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
            call.method,
            call.path,
            self.api,
            body.len()
        );
        if !body.is_empty() {
            req.push_str("Content-Type: application/json\r\n");
        }
        if let Some(t) = call.bearer {
            req.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        req.push_str("\r\n");
        req.push_str(&body);
        req
    }

    /// Sends a JSON request with a bearer token; returns the status and the JSON body
    /// (`Null` when the body is empty or not JSON).
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        body: Option<&serde_json::Value>,
    ) -> anyhow::Result<(u16, serde_json::Value)> {
        self.call_over(None, method, path, bearer, body).await
    }

    /// [`ControlProcess::call`] over TLS with the client `tls`, when given.
    pub async fn call_over(
        &self,
        tls: Option<Arc<rustls::ClientConfig>>,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        body: Option<&serde_json::Value>,
    ) -> anyhow::Result<(u16, serde_json::Value)> {
        let (status, _, body) = self.exchange(tls, method, path, bearer, body).await?;
        Ok((status, body))
    }

    /// One request and its answer (status, head, JSON body), the answer checked against
    /// control's OpenAPI description: panics when it doesn't match.
    async fn exchange(
        &self,
        tls: Option<Arc<rustls::ClientConfig>>,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        body: Option<&serde_json::Value>,
    ) -> anyhow::Result<(u16, String, serde_json::Value)> {
        let description = self.description(tls.clone()).await?;
        let call = ApiCall {
            method,
            path,
            bearer,
            body,
        };
        let (status, head, text) = self.send(tls, &call).await?;
        if let Err(e) = description.check(method, path, status, &head, &text) {
            panic!(
                "control's answer to {method} {path} does not match its OpenAPI description: {e}"
            );
        }
        Ok((
            status,
            head,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
        ))
    }

    /// Control's OpenAPI description (`GET /v1/openapi.json`), fetched once over the
    /// first call's transport. An answer that isn't an OpenAPI 3.1 document panics.
    pub async fn description(
        &self,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> anyhow::Result<Arc<ApiDescription>> {
        self.description
            .get_or_try_init(|| async {
                let call = ApiCall {
                    method: "GET",
                    path: "/v1/openapi.json",
                    bearer: None,
                    body: None,
                };
                let (status, _, text) = self.send(tls, &call).await?;
                anyhow::ensure!(status == 200, "GET /v1/openapi.json: {status} {text}");
                let doc = serde_json::from_str(&text)
                    .unwrap_or_else(|e| panic!("GET /v1/openapi.json is not JSON ({e}): {text}"));
                let description = ApiDescription::new(doc)
                    .unwrap_or_else(|e| panic!("GET /v1/openapi.json: {e:#}"));
                Ok(Arc::new(description))
            })
            .await
            .cloned()
    }

    /// Sends a request as is; the status, head and body text of the answer.
    async fn send(
        &self,
        tls: Option<Arc<rustls::ClientConfig>>,
        call: &ApiCall<'_>,
    ) -> anyhow::Result<(u16, String, String)> {
        let req = self.request(call);
        match tls {
            None => {
                let stream = tokio::net::TcpStream::connect(self.api).await?;
                crate::ws::http_exchange(stream, req.as_bytes()).await
            }
            Some(tls) => {
                let stream = crate::tls::connect(self.api, tls).await?;
                crate::ws::http_exchange(stream, req.as_bytes()).await
            }
        }
    }
}

/// One request to control's API, as the client sends it.
struct ApiCall<'a> {
    method: &'a str,
    path: &'a str,
    /// The caller's bearer token, if any.
    bearer: Option<&'a str>,
    /// The JSON body, if any.
    body: Option<&'a serde_json::Value>,
}
