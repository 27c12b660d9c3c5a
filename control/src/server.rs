//! Building and serving a control plane: [`build`] wires the layers together (Redis,
//! the job queue, the runtime, the app, the API state), [`Control::serve`] runs the API
//! listener, the admin listener, the job workers and the reconciler, all stopped
//! together on shutdown; [`Running`] is what a reload replaces while it serves. What
//! the configuration names is loaded in `startup.rs`.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use fred::prelude::*;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use vnc_shared::schema::Keys;
use vnc_shared::swap::Swap;
use vnc_shared::tls::ReloadableTls;

use crate::api::rate::CallerLimiter;
use crate::api::{self, AppState};
use crate::app::App;
use crate::app::jobs::{Lifecycle, reconcile_loop};
use crate::config::{ControlConfig, ControlSettings, RuntimeKind};
use crate::infra::passwords::PasswordKeys;
use crate::infra::queue::{Queue, QueueConfig};
use crate::infra::sessions::SessionStore;
use crate::infra::shares::ShareStore;
use crate::infra::store::ContainerStore;
use crate::infra::tokens::TokenStore;
use crate::listener::HttpLimits;
use crate::startup::{StartError, engines, load_tunables, password_keys};

/// How long start-up waits for Redis before serving anyway (unready until it answers).
const REDIS_STARTUP_WAIT: Duration = Duration::from_secs(5);

/// The bound listeners `run` serves.
pub struct Listeners {
    pub api: TcpListener,
    pub admin: TcpListener,
}

/// Runs control until `shutdown` is cancelled and in-flight jobs are done.
pub async fn run(
    config: ControlConfig,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), StartError> {
    build(config, listeners).await?.serve(shutdown).await
}

/// A control plane [`build`] set up, ready to [`serve`](Control::serve).
pub struct Control {
    running: Running,
    config: ControlConfig,
    listeners: Listeners,
    prometheus: PrometheusHandle,
    lifecycle: Arc<Lifecycle>,
}

/// What the caller may watch of a running control plane (the binary reports its
/// readiness and the job queue to systemd).
#[derive(Clone)]
pub struct Running {
    /// Connected once Redis answered.
    pub redis: Client,
    pub queue: Queue,
    reloadable: Arc<Reloadable>,
}

/// What a reload replaces.
struct Reloadable {
    state: Arc<AppState>,
    tls: Option<Arc<ReloadableTls>>,
    passwords: Arc<Swap<PasswordKeys>>,
    /// The configuration running, to tell which changes take a restart.
    config: ControlConfig,
}

impl Running {
    /// SIGHUP: reads the configuration again from `settings` (the command line and
    /// environment control started with, over the config file as it is now) and puts
    /// the signing key, identity key, VNC password secrets, limits, token TTL, relay URL, TLS certificate
    /// and log level in force for the requests after it. A configuration that doesn't
    /// load is refused as a whole; the rest of the settings take a restart.
    pub fn reload(&self, settings: &ControlSettings) -> Result<String, String> {
        let result = self.apply(settings);
        let label = if result.is_ok() { "ok" } else { "refused" };
        metrics::counter!(crate::metrics::CONFIG_RELOADS, "result" => label).increment(1);
        result
    }

    fn apply(&self, settings: &ControlSettings) -> Result<String, String> {
        let r = &self.reloadable;
        let config = settings.resolve().map_err(|e| e.to_string())?;
        let (tunables, identity, tls) = load_tunables(&config).map_err(|e| e.to_string())?;
        let passwords = password_keys(&config).map_err(|e| e.to_string())?;
        vnc_shared::telemetry::log_filter(&config.log_level)?;
        let tls = match (&r.tls, tls) {
            (Some(current), Some(new)) => Some((current, new)),
            (None, None) => None,
            _ => return Err("turning TLS on or off takes a restart".into()),
        };
        vnc_shared::telemetry::set_log_level(&config.log_level)?;
        if let Some((current, new)) = tls {
            current.set(new);
        }
        let kid = tunables.signer.kid().to_owned();
        r.state.app.tunables.set(tunables);
        let identity = identity.keeping_keys_of(&r.state.identity.get());
        if let Some(keys) = identity.oidc().cloned() {
            // Fetched again now (a new issuer's for the first time): the operator may be
            // dropping a key the issuer removed. The keys in force verify meanwhile.
            tokio::spawn(async move { keys.refresh_now().await });
        }
        r.state.identity.set(identity);
        r.passwords.set(passwords);
        let (old, new) = (&r.config, &config);
        let restart_only = [
            ("listen", new.listen != old.listen),
            ("admin_listen", new.admin_listen != old.admin_listen),
            (
                "redis_url",
                new.redis_url.expose() != old.redis_url.expose(),
            ),
            ("redis_prefix", new.redis_prefix != old.redis_prefix),
            ("node_id", new.node_id != old.node_id),
            ("plane", new.plane != old.plane),
            ("runtime", new.runtime != old.runtime),
            ("docker_host, docker_engines", new.engines != old.engines),
            ("network", new.network != old.network),
            ("publish_ip", new.publish_ip != old.publish_ip),
            (
                "allow_host_network",
                new.allow_host_network != old.allow_host_network,
            ),
            (
                "desktop_network",
                new.desktop_network != old.desktop_network,
            ),
            (
                "desktop_pids_limit",
                new.desktop_pids_limit != old.desktop_pids_limit,
            ),
            (
                "desktop_cap_add",
                new.desktop_cap_add != old.desktop_cap_add,
            ),
            (
                "desktop_log_max_size",
                new.desktop_log_max_size != old.desktop_log_max_size,
            ),
            (
                "desktop_log_max_files",
                new.desktop_log_max_files != old.desktop_log_max_files,
            ),
            (
                "http_header_timeout",
                new.http_header_timeout != old.http_header_timeout,
            ),
            (
                "http_max_connections",
                new.http_max_connections != old.http_max_connections,
            ),
            (
                "static_containers",
                new.static_containers != old.static_containers,
            ),
            ("stop_grace", new.stop_grace != old.stop_grace),
            ("start_timeout", new.start_timeout != old.start_timeout),
            (
                "reconcile_interval",
                new.reconcile_interval != old.reconcile_interval,
            ),
            (
                "worker_concurrency",
                new.worker_concurrency != old.worker_concurrency,
            ),
            (
                "starts_per_minute",
                new.starts_per_minute != old.starts_per_minute,
            ),
            (
                "start_rate_window",
                new.start_rate_window != old.start_rate_window,
            ),
            ("api_rate_limit", new.api_rate_limit != old.api_rate_limit),
            ("api_rate_burst", new.api_rate_burst != old.api_rate_burst),
            ("job_attempts", new.job_attempts != old.job_attempts),
            ("job_backoff", new.job_backoff != old.job_backoff),
            (
                "job_reclaim_idle",
                new.job_reclaim_idle != old.job_reclaim_idle,
            ),
            ("log_format", new.log_format != old.log_format),
        ];
        let kept: Vec<&str> = restart_only
            .iter()
            .filter_map(|(name, changed)| changed.then_some(*name))
            .collect();
        if !kept.is_empty() {
            tracing::warn!(settings = ?kept, "changed settings take a restart; kept the running values");
        }
        Ok(format!("signing kid {kid}, log level {}", config.log_level))
    }
}

/// Bound on measuring the queue's depth for a scrape: well under Prometheus's shortest
/// usual scrape timeout, so a slow Redis costs a stale depth, not a failed scrape.
const SCRAPE_DEPTH_TIMEOUT: Duration = Duration::from_millis(500);

/// The metrics text, after measuring what is read on demand: the Redis connection and
/// the queue's depth (which keeps its last value while Redis doesn't answer).
async fn scrape(redis: Client, queue: Queue, prometheus: PrometheusHandle) -> String {
    let connected = redis.is_connected();
    crate::metrics::set_redis_connected(connected);
    if connected {
        match tokio::time::timeout(SCRAPE_DEPTH_TIMEOUT, queue.depth()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::debug!(error = %e, "queue depth not measured"),
            Err(_) => tracing::debug!("queue depth not measured: Redis was slow"),
        }
    }
    prometheus.render()
}

/// Loads the keys, gives Redis its start-up wait and sets up the runtime (recording
/// the static runtime's containers): everything before serving.
pub async fn build(config: ControlConfig, listeners: Listeners) -> Result<Control, StartError> {
    let prometheus = crate::metrics::install(&[crate::app::START_JOB, crate::app::STOP_JOB]);
    let (tunables, identity, tls) = load_tunables(&config)?;
    if let Some(keys) = identity.oidc() {
        // Unreachable now: logged, callers get 503 until the keys load on a request.
        keys.refresh().await;
    }
    let passwords = Arc::new(Swap::new(password_keys(&config)?));
    let tls = tls.map(|config| Arc::new(ReloadableTls::new(config)));
    let keys = Keys::new(config.redis_prefix.clone());
    let client = crate::infra::redis::client(config.redis_url.expose())?;
    vnc_shared::redis::keep_connecting(client.clone());
    if tokio::time::timeout(REDIS_STARTUP_WAIT, client.wait_for_connect())
        .await
        .is_err()
    {
        tracing::warn!("redis is not reachable yet");
    }
    let store = ContainerStore::new(client.clone(), keys.clone());
    let queue = Queue::new(client.clone(), keys.clone(), queue_config(&config));
    let engines = Arc::new(engines(&config)?);
    if config.runtime == RuntimeKind::Static {
        crate::app::jobs::register_static(
            &store,
            &config.static_containers,
            &config.node_id,
            config.clipboard_default,
        )
        .await;
    }
    let app = App {
        store: store.clone(),
        queue: queue.clone(),
        registry: SessionStore::new(client.clone(), keys.clone()),
        tokens: TokenStore::new(client.clone(), keys.clone()),
        shares: ShareStore::new(client.clone(), keys.clone()),
        tunables: Swap::new(tunables),
        engines: engines.clone(),
        transfers: Arc::new(tokio::sync::Semaphore::new(
            crate::app::files::MAX_TRANSFERS,
        )),
    };
    let ready = {
        let client = client.clone();
        Box::new(move || (!client.is_connected()).then(|| "redis unreachable".to_owned()))
    };
    let state = Arc::new(AppState {
        identity: Swap::new(identity),
        app,
        limiter: CallerLimiter::new(config.api_rate_limit, config.api_rate_burst),
        ready,
    });
    let reloadable = Arc::new(Reloadable {
        state,
        tls,
        passwords: passwords.clone(),
        config: config.clone(),
    });
    let lifecycle = Arc::new(Lifecycle {
        store,
        engines,
        node_id: config.node_id.clone(),
        stop_grace: config.stop_grace,
        start_timeout: config.start_timeout,
        passwords,
    });
    Ok(Control {
        running: Running {
            redis: client,
            queue,
            reloadable,
        },
        config,
        listeners,
        prometheus,
        lifecycle,
    })
}

impl Control {
    /// What the caller may watch and reload while it serves.
    pub fn running(&self) -> Running {
        self.running.clone()
    }

    /// Serves the API and the admin listener and runs the job workers and the
    /// reconciler until `shutdown` is cancelled and in-flight jobs are done.
    pub async fn serve(self, shutdown: CancellationToken) -> Result<(), StartError> {
        let Control {
            running,
            config,
            listeners,
            prometheus,
            lifecycle,
        } = self;
        let workers = tokio::spawn({
            let queue = running.queue.clone();
            let shutdown = shutdown.clone();
            let lifecycle = lifecycle.clone();
            let (redis, prefix) = (running.redis.clone(), config.redis_prefix.clone());
            async move {
                // Keys of the old schema first: the workers read only the new names.
                crate::infra::migrate::at_start(&redis, &prefix, &shutdown).await;
                queue.run(lifecycle, shutdown).await
            }
        });
        let reconciler = tokio::spawn(reconcile_loop(
            lifecycle,
            config.reconcile_interval,
            shutdown.clone(),
        ));
        let admin = Router::new().route(
            "/metrics",
            get({
                let (redis, queue) = (running.redis.clone(), running.queue.clone());
                move || scrape(redis.clone(), queue.clone(), prometheus.clone())
            }),
        );
        let admin = tokio::spawn({
            let shutdown = shutdown.clone();
            async move {
                let _ = axum::serve(listeners.admin, admin)
                    .with_graceful_shutdown(shutdown.cancelled_owned())
                    .await;
            }
        });
        tracing::info!(listen = ?listeners.api.local_addr().ok(), node.id = %config.node_id, "control serving");
        let limits = HttpLimits {
            header_timeout: config.http_header_timeout,
            max_connections: config.http_max_connections,
        };
        crate::listener::serve(
            listeners.api,
            running.reloadable.tls.clone(),
            api::router(running.reloadable.state.clone()),
            limits,
            shutdown.clone(),
        )
        .await?;
        let _ = workers.await;
        reconciler.abort();
        let _ = admin.await;
        let _ = running.redis.quit().await;
        tracing::info!("control stopped");
        Ok(())
    }
}

fn queue_config(config: &ControlConfig) -> QueueConfig {
    let mut q = QueueConfig {
        consumer: config.node_id.clone(),
        ..QueueConfig::default()
    };
    if let Some(n) = config.worker_concurrency {
        q.concurrency = n;
    }
    if let Some(n) = config.job_attempts {
        q.max_attempts = n;
    }
    if let Some(b) = config.job_backoff {
        q.backoff_base = b;
    }
    if let Some(idle) = config.job_reclaim_idle {
        q.reclaim_idle = idle;
    }
    let (_, default_max, _) = crate::infra::queue::DEFAULT_START_RATE;
    q.rate_limits = vec![(
        crate::app::START_JOB.to_owned(),
        config.starts_per_minute.unwrap_or(default_max),
        config.start_rate_window,
    )];
    q
}
