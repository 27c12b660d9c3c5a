//! Start-up and the serve loop: the API listener, the admin listener, the job
//! workers and the reconciler, all stopped together on shutdown.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use fred::prelude::*;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use vnc_shared::schema::Keys;
use vnc_shared::swap::Swap;
use vnc_shared::tls::{ReloadableTls, TlsError};
use vnc_shared::token::{KeyError, Signer, read_hs256_secret};

use crate::api::auth::{IdentityKey, IdentityKeyError, IdentityVerifier};
use crate::api::rate::CallerLimiter;
use crate::api::{self, AppState};
use crate::app::jobs::{Lifecycle, reconcile_loop};
use crate::app::{App, Tunables};
use crate::config::{AuthKey, ControlConfig, ControlSettings, NetworkKind, RuntimeKind};
use crate::domain::CreateLimits;
use crate::infra::passwords::{PasswordKeyError, PasswordKeys};
use crate::infra::queue::{Queue, QueueConfig};
use crate::infra::runtime::{
    DockerRuntime, Isolation, NetworkMode, Runtime, RuntimeError, StaticRuntime,
};
use crate::infra::sessions::SessionStore;
use crate::infra::store::ContainerStore;
use crate::infra::tokens::TokenStore;
use crate::listener::HttpLimits;

/// Host ports containers get in host networking.
const HOST_PORT_RANGE: (u16, u16) = (15900, 16899);

/// How long start-up waits for Redis before serving anyway (unready until it answers).
const REDIS_STARTUP_WAIT: Duration = Duration::from_secs(5);

/// Each step of start-up that can fail.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("loading the token signing key: {0}")]
    SigningKey(#[from] KeyError),
    #[error("loading the identity key: {0}")]
    IdentityKey(#[from] IdentityKeyError),
    #[error("the identity secret: {0}")]
    IdentitySecret(KeyError),
    #[error("configuring redis: {0}")]
    Redis(#[from] fred::error::Error),
    #[error("connecting to the container runtime: {0}")]
    Runtime(#[from] RuntimeError),
    #[error("the VNC password secrets: {0}")]
    PasswordSecret(#[from] PasswordKeyError),
    #[error("loading the TLS certificate: {0}")]
    Tls(#[from] TlsError),
    #[error("serving: {0}")]
    Serve(#[from] std::io::Error),
}

/// The bound listeners `run` serves.
pub struct Listeners {
    pub api: TcpListener,
    pub admin: TcpListener,
}

/// Loads what the config names and a reload may change: the keys, the limits, the
/// TLS config (also what `vnc-control check` validates).
pub fn load_tunables(
    config: &ControlConfig,
) -> Result<(Tunables, IdentityVerifier, Option<rustls::ServerConfig>), StartError> {
    let (signer, identity) = load_keys(config)?;
    let tls = config
        .tls
        .as_ref()
        .map(vnc_shared::tls::server_config)
        .transpose()?;
    let tunables = Tunables {
        signer,
        limits: CreateLimits {
            images: config.images.clone(),
            max_cpus: config.max_cpus,
            max_memory_mb: config.max_memory_mb,
            min_memory_mb: crate::config::DEFAULT_MIN_MEMORY_MB,
            max_entries: crate::config::DEFAULT_MAX_ENTRIES,
        },
        token_max_ttl: config.token_max_ttl,
        relay_url: config.relay_url.clone(),
        max_containers_per_tenant: config.max_containers_per_tenant,
    };
    Ok((tunables, identity, tls))
}

/// Loads the keys the config names.
fn load_keys(config: &ControlConfig) -> Result<(Signer, IdentityVerifier), StartError> {
    let signer = Signer::ed25519_from_pem_file(&config.jwt_private_key, config.jwt_kid.clone())?
        .with_issuer_audience(&config.jwt_issuer, &config.jwt_audience);
    let identity = match &config.auth_key {
        AuthKey::PublicKeyPem(p) => IdentityVerifier::new(
            IdentityKey::PublicKeyPem(p),
            &config.auth_issuer,
            &config.auth_audience,
        )?,
        AuthKey::Hs256SecretFile(p) => {
            let secret = read_hs256_secret(p).map_err(StartError::IdentitySecret)?;
            IdentityVerifier::new(
                IdentityKey::Hs256(&secret),
                &config.auth_issuer,
                &config.auth_audience,
            )?
        }
    };
    Ok((signer, identity))
}

/// The secrets VNC passwords derive from: with the Docker runtime, read (or generated)
/// from the configured file; none with the static runtime, which starts nothing.
fn password_keys(config: &ControlConfig) -> Result<PasswordKeys, PasswordKeyError> {
    match config.runtime {
        RuntimeKind::Docker => PasswordKeys::load_or_create(&config.vnc_password_secret_file),
        RuntimeKind::Static => Ok(PasswordKeys::default()),
    }
}

fn runtime(config: &ControlConfig) -> Result<Arc<dyn Runtime>, StartError> {
    Ok(match config.runtime {
        RuntimeKind::Static => Arc::new(StaticRuntime::new(
            config
                .static_containers
                .iter()
                .map(|c| {
                    (
                        c.cid.clone(),
                        crate::infra::runtime::Endpoint {
                            host: c.host.clone(),
                            port: c.port,
                        },
                    )
                })
                .collect(),
        )),
        RuntimeKind::Docker => {
            let network = match config.network {
                NetworkKind::Published => {
                    if config.publish_ip.is_unspecified() {
                        tracing::warn!(
                            publish_ip = %config.publish_ip,
                            "desktops' VNC ports are published on every interface of the host: \
                             set publish_ip to the address the relays reach"
                        );
                    }
                    NetworkMode::Published {
                        host_ip: config.publish_ip,
                    }
                }
                NetworkKind::Host => {
                    // Config validation refused this unless allow_host_network is set.
                    tracing::warn!(
                        "network = \"host\" (allow_host_network): desktops share the host's network \
                         and reach Redis, the relays and every other service listening on it"
                    );
                    NetworkMode::Host {
                        host_ip: config.publish_ip,
                        port_range: HOST_PORT_RANGE,
                    }
                }
                NetworkKind::Bridge => NetworkMode::Bridge,
            };
            let isolation = Isolation {
                network: config.desktop_network.clone(),
                pids_limit: config.desktop_pids_limit,
                cap_add: config.desktop_cap_add.clone(),
                log_max_size: config.desktop_log_max_size.clone(),
                log_max_files: config.desktop_log_max_files,
            };
            Arc::new(DockerRuntime::connect(
                config.docker_host.as_deref(),
                network,
                isolation,
                &config.plane,
            )?)
        }
    })
}

/// Runs control until `shutdown` is cancelled and in-flight jobs are done.
pub async fn run(
    config: ControlConfig,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), StartError> {
    run_with(config, listeners, shutdown, |_| {}).await
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
            ("docker_host", new.docker_host != old.docker_host),
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

/// [`run`], handing `started` the Redis client and the queue once the keys are loaded,
/// Redis had its start-up wait and the runtime is set up.
pub async fn run_with(
    config: ControlConfig,
    listeners: Listeners,
    shutdown: CancellationToken,
    started: impl FnOnce(Running),
) -> Result<(), StartError> {
    let prometheus = crate::metrics::install();
    let (tunables, identity, tls) = load_tunables(&config)?;
    let passwords = Arc::new(Swap::new(password_keys(&config)?));
    let tls = tls.map(|config| Arc::new(ReloadableTls::new(config)));
    let keys = Keys::new(config.redis_prefix.clone());
    let mut redis_config = Config::from_url(config.redis_url.expose())?;
    redis_config.fail_fast = true;
    let client = Builder::from_config(redis_config)
        .with_performance_config(|p| p.default_command_timeout = Duration::from_secs(2))
        .set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2))
        .build()?;
    vnc_shared::redis::keep_connecting(client.clone());
    if tokio::time::timeout(REDIS_STARTUP_WAIT, client.wait_for_connect())
        .await
        .is_err()
    {
        tracing::warn!("redis is not reachable yet");
    }
    let store = ContainerStore::new(client.clone(), keys.clone());
    let queue = Queue::new(client.clone(), keys.clone(), queue_config(&config));
    let runtime = runtime(&config)?;
    if config.runtime == RuntimeKind::Static {
        crate::app::jobs::register_static(&store, &config.static_containers, &config.node_id).await;
    }
    let app = App {
        store: store.clone(),
        queue: queue.clone(),
        registry: SessionStore::new(client.clone(), keys.clone()),
        tokens: TokenStore::new(client.clone(), keys.clone()),
        tunables: Swap::new(tunables),
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
        state: state.clone(),
        tls,
        passwords: passwords.clone(),
        config: config.clone(),
    });
    started(Running {
        redis: client.clone(),
        queue: queue.clone(),
        reloadable: reloadable.clone(),
    });

    let lifecycle = Arc::new(Lifecycle {
        store: store.clone(),
        runtime: runtime.clone(),
        node_id: config.node_id.clone(),
        stop_grace: config.stop_grace,
        start_timeout: config.start_timeout,
        passwords,
    });
    let workers = tokio::spawn({
        let queue = queue.clone();
        let shutdown = shutdown.clone();
        let lifecycle = lifecycle.clone();
        async move { queue.run(lifecycle, shutdown).await }
    });
    let reconciler = tokio::spawn(reconcile_loop(
        lifecycle,
        config.reconcile_interval,
        shutdown.clone(),
    ));
    let admin = Router::new().route(
        "/metrics",
        get(move || std::future::ready(prometheus.render())),
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
        reloadable.tls.clone(),
        api::router(state),
        limits,
        shutdown.clone(),
    )
    .await?;
    let _ = workers.await;
    reconciler.abort();
    let _ = admin.await;
    let _ = client.quit().await;
    tracing::info!("control stopped");
    Ok(())
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
