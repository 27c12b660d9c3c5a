//! vnc-relay: pins each container's RFB (VNC) TCP socket to a browser WebSocket.
//!
//! `main.rs` parses flags, sets up logging and signals and calls the library: [`Relay`]
//! (build, then serve), which [`run`] wraps for tests. The design of record, with a map
//! of the folders below, is `docs/architecture.md`.
#![forbid(unsafe_code)]

pub mod admission;
pub mod config;
pub mod http;
pub mod metrics;
pub mod node;
pub mod recording;
pub mod replay;
pub mod session;
pub mod transport;
pub mod wire;

use std::sync::{Arc, OnceLock};

use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use vnc_shared::schema::Keys;
use vnc_shared::tls::{ReloadableTls, TlsError};
use vnc_shared::token::KeyError;

pub use config::{RelayConfig, RelaySettings};
use node::Node;
use node::live::Live;
use node::store::{NodeRecord, Store, StoreError};
use node::{admin, registry, rooms};
use session::end::Stop;
use transport::socketio;

/// How long start-up waits for Redis before serving anyway (unready until it answers).
const REDIS_STARTUP_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Each step of start-up that can fail.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("loading token keys: {0}")]
    Keys(#[from] KeyError),
    #[error("configuring redis: {0}")]
    Store(#[from] StoreError),
    #[error("loading the TLS certificate: {0}")]
    Tls(#[from] TlsError),
    #[error("opening the recording directory {dir}: {source}")]
    RecordDir {
        dir: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// The bound listeners `run` serves (bound by the caller, so tests can bind port 0).
pub struct Listeners {
    pub public: TcpListener,
    pub admin: TcpListener,
}

/// Shutdown signals from the caller.
#[derive(Clone, Default)]
pub struct Shutdown {
    /// Cancel to drain: stop accepting, let sessions run until the drain deadline.
    pub drain: CancellationToken,
    /// Cancel to close every session now with 1001.
    pub now: CancellationToken,
}

/// `vnc-relay check`: validates the configuration, the keys and the certificate it
/// names; says what is in force.
pub fn check(config: &RelayConfig) -> Result<String, StartError> {
    let keys = config.load_keys()?;
    if let Some(files) = &config.tls {
        vnc_shared::tls::server_config(files)?;
    }
    Ok(format!(
        "configuration ok: {} key(s), listen {}{}, admin {}",
        keys.len(),
        config.node.listen,
        if config.tls.is_some() { " (TLS)" } else { "" },
        config.node.admin_listen
    ))
}

/// Runs the relay until drained. Returns once every session has ended.
pub async fn run(
    config: RelayConfig,
    listeners: Listeners,
    shutdown: Shutdown,
) -> Result<(), StartError> {
    Relay::build(config, listeners).await?.serve(shutdown).await;
    Ok(())
}

/// A relay built and ready to serve: keys loaded, Redis given its start-up wait, the
/// room feed running. [`Relay::node`] reaches its shared state before it serves (the
/// binary reports readiness and live sessions to systemd, and reloads on SIGHUP).
pub struct Relay {
    node: Arc<Node>,
    listeners: Listeners,
    prometheus: metrics_exporter_prometheus::PrometheusHandle,
    room_feed: tokio::task::JoinHandle<()>,
    resync: Arc<Notify>,
}

impl Relay {
    pub async fn build(config: RelayConfig, listeners: Listeners) -> Result<Relay, StartError> {
        let prometheus = metrics::install();
        let keys = config.load_keys()?;
        let recordings = match &config.recording {
            Some(r) => Some(Arc::new(
                recording::Recordings::open(r.clone(), &config.node.id).map_err(|source| {
                    StartError::RecordDir {
                        dir: r.dir.clone(),
                        source,
                    }
                })?,
            )),
            None => None,
        };
        let store = Store::connect(
            config.registry.redis_url.expose(),
            Keys::new(config.registry.redis_prefix.clone()),
        )?;
        if !store.wait_connected(REDIS_STARTUP_WAIT).await {
            tracing::warn!("redis is not reachable yet; refusing sessions until it is");
        }
        let (live, room_changes) = Live::new(config.registry.input);
        let socketio = Arc::new(OnceLock::new());
        // The feed asks the heartbeat for a beat after each (re)subscribe.
        let resync = Arc::new(Notify::new());
        let subscriber = store.subscriber(false)?;
        let tls = config
            .tls
            .as_ref()
            .map(|files| vnc_shared::tls::server_config(files).map(ReloadableTls::new))
            .transpose()?;
        let node = Arc::new(Node::new(
            config, keys, tls, store, live, socketio, recordings,
        ));
        let room_feed = tokio::spawn(rooms::feed(
            subscriber,
            node.clone(),
            room_changes,
            resync.clone(),
        ));
        Ok(Relay {
            node,
            listeners,
            prometheus,
            room_feed,
            resync,
        })
    }

    /// The node's shared state.
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// Serves until drained (`shutdown`); returns once every session has ended.
    pub async fn serve(self, shutdown: Shutdown) {
        let Relay {
            node,
            listeners,
            prometheus,
            room_feed,
            resync,
        } = self;
        let drain_timeout = node.config().node.drain_timeout;
        let socketio = tokio::spawn(socketio::start(node.clone()));
        let record = NodeRecord {
            node_id: node.config().node.id.clone(),
            addr: listeners
                .public
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_default(),
            started_at: vnc_shared::schema::now_ms(),
            version: env!("CARGO_PKG_VERSION"),
        };
        let heartbeat = tokio::spawn(registry::heartbeat(node.clone(), record, resync));
        let admin_stop = CancellationToken::new();
        tokio::spawn(admin::serve(
            listeners.admin,
            node.clone(),
            prometheus,
            admin_stop.clone(),
        ));

        // Bridge the caller's signals to the node's own drain and stop.
        let bridge = {
            let node = node.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = shutdown.drain.cancelled() => node.drain(),
                    _ = shutdown.now.cancelled() => {}
                }
                tokio::select! {
                    _ = shutdown.now.cancelled() => {}
                    _ = tokio::time::sleep(drain_timeout) => {}
                }
                node.drain();
                node.stop_all(Stop::Draining);
            })
        };
        tracing::info!(
            listen = ?listeners.public.local_addr().ok(),
            node.id = %node.config().node.id,
            keys = node.keys().len(),
            "relay serving"
        );
        http::accept::accept_loop(&node, listeners.public).await;
        tracing::info!(
            live = node.live().len(),
            pending = node.pending().len(),
            ?drain_timeout,
            "draining"
        );
        node.tracker().close();
        node.tracker().wait().await;
        socketio.abort();
        room_feed.abort();
        heartbeat.abort();
        if let Err(e) = node.store().remove_node(&node.config().node.id).await {
            tracing::debug!(error = %e, "node record left to expire");
        }
        bridge.abort();
        admin_stop.cancel();
        node.store().quit().await;
        tracing::info!("relay stopped");
    }
}
