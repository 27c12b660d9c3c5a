//! The real `vnc-relay` binary, on free loopback ports.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

use tokio::process::Command;

use crate::process::{Proc, bin_path, listening_field};

pub struct RelayProcess {
    pub proc: Proc,
    pub public: SocketAddr,
    pub admin: SocketAddr,
    /// `--node-id`: unique per relay of a test run unless a test names it.
    pub node_id: String,
}

/// A fresh node id (relays of one test share a Redis, and the registry keys nodes).
fn next_node_id() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    format!("node-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

impl RelayProcess {
    /// Starts a relay against `redis_url` trusting `public_key`, with extra flags.
    pub async fn start(
        redis_url: &str,
        public_key: &Path,
        extra: &[&str],
    ) -> anyhow::Result<RelayProcess> {
        Self::start_under(&[], redis_url, public_key, extra).await
    }

    /// [`RelayProcess::start`] run through a launcher, e.g. `["prlimit", "--nofile=64", "--"]`.
    pub async fn start_under(
        launcher: &[&str],
        redis_url: &str,
        public_key: &Path,
        extra: &[&str],
    ) -> anyhow::Result<RelayProcess> {
        Self::launch(
            launcher,
            redis_url,
            Some(public_key),
            &next_node_id(),
            extra,
        )
        .await
    }

    /// A relay with a given node id.
    pub async fn start_node(
        node_id: &str,
        redis_url: &str,
        public_key: &Path,
        extra: &[&str],
    ) -> anyhow::Result<RelayProcess> {
        Self::launch(&[], redis_url, Some(public_key), node_id, extra).await
    }

    /// A relay whose keys come from its config file (`--config` among `extra`), so a
    /// reload can change them.
    pub async fn start_configured(redis_url: &str, extra: &[&str]) -> anyhow::Result<RelayProcess> {
        Self::launch(&[], redis_url, None, &next_node_id(), extra).await
    }

    async fn launch(
        launcher: &[&str],
        redis_url: &str,
        public_key: Option<&Path>,
        node_id: &str,
        extra: &[&str],
    ) -> anyhow::Result<RelayProcess> {
        let mut cmd = match launcher {
            [program, args @ ..] => {
                let mut c = Command::new(program);
                c.args(args).arg(bin_path("vnc-relay"));
                c
            }
            [] => Command::new(bin_path("vnc-relay")),
        };
        cmd.args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .args(["--redis-url", redis_url])
            .args(["--node-id", node_id]);
        if let Some(key) = public_key {
            cmd.arg("--jwt-public-key").arg(key);
        }
        cmd.args(extra).env(
            "RUST_LOG",
            std::env::var("RELAY_LOG").unwrap_or_else(|_| "warn".into()),
        );
        let (proc, line) = Proc::start(cmd, "vnc-relay").await?;
        Ok(RelayProcess {
            public: listening_field(&line, "public=")?,
            admin: listening_field(&line, "admin=")?,
            proc,
            node_id: node_id.to_owned(),
        })
    }

    /// `ws://` URL of the raw WebSocket endpoint with a token.
    pub fn ws_url(&self, token: &str) -> String {
        format!("ws://{}/websockify?token={token}", self.public)
    }

    /// A raw WebSocket session with `token` from client address `source` (any
    /// 127.0.0.0/8 address works on loopback), as a browser behind another address.
    pub async fn connect_from(&self, source: IpAddr, token: &str) -> anyhow::Result<crate::ws::Ws> {
        crate::ws::connect_from(source, self.public, &self.ws_url(token), &[]).await
    }

    /// The Prometheus text from the admin listener.
    pub async fn metrics(&self) -> String {
        crate::ws::http_get(self.admin, "/metrics")
            .await
            .expect("GET /metrics")
            .1
    }

    /// The value of one metric line (exact name and labels) on the admin listener.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        crate::ws::metric_at(self.admin, series).await
    }

    /// `vnc_relay_sessions_active` of one transport (`websocket` or `socketio`).
    pub async fn active_sessions(&self, transport: &str) -> Option<f64> {
        self.metric(&format!(
            "vnc_relay_sessions_active{{transport=\"{transport}\"}}"
        ))
        .await
    }

    /// Waits until `/readyz` says ready (Redis answered, socket.io started).
    pub async fn wait_ready(&self) {
        crate::process::eventually("relay ready", crate::WAIT, || async {
            let (status, _) = crate::ws::http_get(self.admin, "/readyz").await.ok()?;
            (status == 200).then_some(())
        })
        .await;
    }

    /// Waits until one metric line reaches `value`. Sessions are counted when their task
    /// finishes, a moment after the browser has seen the close.
    pub async fn wait_metric(&self, series: &str, value: f64) {
        crate::process::eventually(&format!("{series} = {value}"), crate::WAIT, || async {
            (self.metric(series).await == Some(value)).then_some(())
        })
        .await;
    }
}
