//! Control's settings: one struct read from flags, env and the TOML file (flags beat
//! env beat file beat the `DEFAULT_*` constants), validated into a [`ControlConfig`].

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use vnc_shared::config::{ConfigError, Secret, load_toml, opt_duration, overlay, parse_duration};
use vnc_shared::schema::DEFAULT_PREFIX;
use vnc_shared::telemetry::LogFormat;
use vnc_shared::tls::TlsFiles;
use vnc_shared::token::{DEFAULT_AUDIENCE, DEFAULT_ISSUER};

use crate::domain::StaticContainer;
use crate::infra::runtime::{
    DEFAULT_DESKTOP_NETWORK, DEFAULT_LOG_MAX_FILES, DEFAULT_LOG_MAX_SIZE, DEFAULT_PIDS_LIMIT,
};

pub const DEFAULT_LISTEN: &str = "0.0.0.0:8080";
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9101";
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";
/// Public base URL of the relays, for the `ws_url` of minted tokens.
pub const DEFAULT_RELAY_URL: &str = "ws://localhost:6080";
/// Expected `iss` / `aud` of callers' identity tokens.
pub const DEFAULT_AUTH_ISSUER: &str = "identity";
pub const DEFAULT_AUTH_AUDIENCE: &str = "vnc-control";
pub const DEFAULT_MAX_CPUS: f64 = 4.0;
pub const DEFAULT_MAX_MEMORY_MB: u64 = 8192;
pub const DEFAULT_MIN_MEMORY_MB: u64 = 64;
/// Most env and label entries of a create request.
pub const DEFAULT_MAX_ENTRIES: usize = 64;
/// Longest VNC token a caller may ask for.
pub const DEFAULT_TOKEN_MAX_TTL: Duration = Duration::from_secs(300);
/// Time a container gets to stop before it is killed.
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(10);
/// Time a started container's VNC server gets to answer.
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(60);
/// How often Redis is compared with what the runtime runs.
pub const DEFAULT_RECONCILE_INTERVAL: Duration = Duration::from_secs(30);
/// Window `starts_per_minute` counts starts in (the name says a minute: this default).
pub const DEFAULT_START_RATE_WINDOW: Duration = Duration::from_secs(60);
/// Live (not stopped or failed) containers one tenant may have.
pub const DEFAULT_MAX_CONTAINERS_PER_TENANT: usize = 10;
/// API requests per second one caller may make (sustained); 0 turns the limit off.
pub const DEFAULT_API_RATE_LIMIT: u32 = 20;
/// API requests one caller may make at once before the sustained rate applies.
pub const DEFAULT_API_RATE_BURST: u32 = 40;
pub const DEFAULT_LOG_LEVEL: &str = "info";
/// Control plane id (label `vnc.plane`) when none is configured.
pub const DEFAULT_PLANE: &str = "default";
/// Secrets the VNC passwords of Docker containers derive from; generated (0600) if
/// missing. The systemd unit's `StateDirectory=vnc-control` makes it writable.
pub const DEFAULT_VNC_PASSWORD_SECRET_FILE: &str = "/var/lib/vnc-control/vnc-password.secret";
/// Time an API client has to send a request's headers; also how long a keep-alive
/// connection may sit idle between requests.
pub const DEFAULT_HTTP_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// API connections served at once; past it new connections wait in the listen backlog
/// until one closes.
pub const DEFAULT_HTTP_MAX_CONNECTIONS: usize = 1024;

/// Which runtime runs containers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    Docker,
    /// Endpoints declared in the config file (`static_containers`).
    Static,
}

/// How the relay reaches a Docker container's VNC port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum NetworkKind {
    /// Publish the VNC port on `publish_ip` with an ephemeral host port.
    Published,
    /// Host networking, a port from `host_port_range`.
    Host,
    /// The container's own bridge address.
    Bridge,
}

/// Every setting, as flags/env (clap) and as the TOML file (serde) at once.
#[derive(Clone, Debug, Default, clap::Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlSettings {
    /// TOML config file (optional).
    #[arg(long, env = "VNC_CONTROL_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    #[arg(long, env = "VNC_CONTROL_LISTEN")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// Admin listener: /metrics.
    #[arg(long, env = "VNC_CONTROL_ADMIN_LISTEN")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_listen: Option<SocketAddr>,
    #[arg(long, env = "VNC_REDIS_URL")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_url: Option<String>,
    #[arg(long, env = "VNC_REDIS_PREFIX")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_prefix: Option<String>,
    /// Ed25519 private key (PKCS#8 PEM) that signs VNC tokens.
    #[arg(long, env = "VNC_JWT_PRIVATE_KEY")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt_private_key: Option<PathBuf>,
    /// Key id written in tokens (default: the key file's stem).
    #[arg(long, env = "VNC_JWT_KID")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt_kid: Option<String>,
    #[arg(long, env = "VNC_JWT_ISSUER")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt_issuer: Option<String>,
    #[arg(long, env = "VNC_JWT_AUDIENCE")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt_audience: Option<String>,
    /// Identity provider's public key (Ed25519 or RSA PEM) for callers' bearer tokens.
    #[arg(long, env = "VNC_CONTROL_AUTH_PUBLIC_KEY")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_public_key: Option<PathBuf>,
    /// Or an HS256 secret file for callers' bearer tokens.
    #[arg(long, env = "VNC_CONTROL_AUTH_SECRET_FILE")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_secret_file: Option<PathBuf>,
    #[arg(long, env = "VNC_CONTROL_AUTH_ISSUER")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_issuer: Option<String>,
    #[arg(long, env = "VNC_CONTROL_AUTH_AUDIENCE")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_audience: Option<String>,
    /// Public base URL of the relays (`wss://vnc.example.com`).
    #[arg(long, env = "VNC_RELAY_PUBLIC_URL")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay_url: Option<String>,
    #[arg(long, env = "VNC_NODE_ID")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    /// This control plane's id, labelled on its containers: planes sharing a Docker
    /// engine never touch each other's containers. Replicas of one plane share it.
    #[arg(long, env = "VNC_CONTROL_PLANE")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plane: Option<String>,
    #[arg(long, env = "VNC_CONTROL_RUNTIME")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<RuntimeKind>,
    /// Docker endpoint (`unix:///var/run/docker.sock`, `tcp://…`).
    #[arg(long, env = "VNC_DOCKER_HOST")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_host: Option<String>,
    #[arg(long, env = "VNC_CONTROL_NETWORK")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkKind>,
    /// Address published ports bind to / host networking answers on.
    #[arg(long, env = "VNC_CONTROL_PUBLISH_IP")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish_ip: Option<IpAddr>,
    /// Allow `network = "host"` (`true`/`false`, default false). Host-networked desktops
    /// share the host's network: they reach Redis and everything else listening on it,
    /// and each other's VNC ports.
    #[arg(long, env = "VNC_CONTROL_ALLOW_HOST_NETWORK")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_host_network: Option<bool>,
    /// Docker bridge network desktops join (published and bridge modes); control creates
    /// it with inter-container traffic disabled when it is missing.
    #[arg(long, env = "VNC_CONTROL_DESKTOP_NETWORK")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desktop_network: Option<String>,
    /// Processes (threads included) one desktop may run at once; 0 for no limit.
    #[arg(long, env = "VNC_CONTROL_DESKTOP_PIDS_LIMIT")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desktop_pids_limit: Option<u32>,
    /// Capabilities desktops get back after all are dropped (`CHOWN`, `SETUID`, ...);
    /// none by default.
    #[arg(long, env = "VNC_CONTROL_DESKTOP_CAP_ADD", value_delimiter = ',')]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desktop_cap_add: Option<Vec<String>>,
    /// Size at which a desktop's log file is rotated (`10m`, `512k`).
    #[arg(long, env = "VNC_CONTROL_DESKTOP_LOG_MAX_SIZE")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desktop_log_max_size: Option<String>,
    /// Log files kept per desktop, the current one included.
    #[arg(long, env = "VNC_CONTROL_DESKTOP_LOG_MAX_FILES")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desktop_log_max_files: Option<u32>,
    /// Time an API client has to send a request's headers (and the longest idle time
    /// of a keep-alive connection).
    #[arg(long, env = "VNC_CONTROL_HTTP_HEADER_TIMEOUT", value_parser = parse_duration)]
    #[serde(
        default,
        with = "opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub http_header_timeout: Option<Duration>,
    /// API connections served at once; more wait until one closes.
    #[arg(long, env = "VNC_CONTROL_HTTP_MAX_CONNECTIONS")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_max_connections: Option<usize>,
    /// Images callers may run.
    #[arg(long = "image", env = "VNC_CONTROL_IMAGES", value_delimiter = ',')]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images: Option<Vec<String>>,
    #[arg(long, env = "VNC_CONTROL_MAX_CPUS")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cpus: Option<f64>,
    #[arg(long, env = "VNC_CONTROL_MAX_MEMORY_MB")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory_mb: Option<u64>,
    #[arg(long, env = "VNC_CONTROL_TOKEN_MAX_TTL", value_parser = parse_duration)]
    #[serde(
        default,
        with = "opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub token_max_ttl: Option<Duration>,
    #[arg(long, env = "VNC_CONTROL_STOP_GRACE", value_parser = parse_duration)]
    #[serde(
        default,
        with = "opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub stop_grace: Option<Duration>,
    #[arg(long, env = "VNC_CONTROL_START_TIMEOUT", value_parser = parse_duration)]
    #[serde(
        default,
        with = "opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub start_timeout: Option<Duration>,
    #[arg(long, env = "VNC_CONTROL_RECONCILE_INTERVAL", value_parser = parse_duration)]
    #[serde(
        default,
        with = "opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub reconcile_interval: Option<Duration>,
    /// Secrets file the VNC passwords of Docker containers derive from (one secret per
    /// line, the first current); generated with one secret if missing. Re-read on SIGHUP.
    #[arg(long, env = "VNC_CONTROL_VNC_PASSWORD_SECRET_FILE")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vnc_password_secret_file: Option<PathBuf>,
    /// Jobs one replica runs at once.
    #[arg(long, env = "VNC_CONTROL_WORKER_CONCURRENCY")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_concurrency: Option<usize>,
    /// Container starts per minute across all replicas.
    #[arg(long, env = "VNC_CONTROL_STARTS_PER_MINUTE")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starts_per_minute: Option<u32>,
    /// The window `starts_per_minute` is counted in (default a minute): at most that
    /// many starts in any window of this length, given to tenants in turn.
    #[arg(long, env = "VNC_CONTROL_START_RATE_WINDOW", value_parser = parse_duration)]
    #[serde(
        default,
        with = "opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub start_rate_window: Option<Duration>,
    /// Live (not stopped or failed) containers one tenant may have; one more is 429.
    #[arg(long, env = "VNC_CONTROL_MAX_CONTAINERS_PER_TENANT")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_containers_per_tenant: Option<usize>,
    /// API requests per second per caller (bearer subject, or client address when
    /// unauthenticated); past it 429 with Retry-After. 0 turns the limit off.
    #[arg(long, env = "VNC_CONTROL_API_RATE_LIMIT")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_rate_limit: Option<u32>,
    /// API requests a caller may make at once above `api_rate_limit`.
    #[arg(long, env = "VNC_CONTROL_API_RATE_BURST")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_rate_burst: Option<u32>,
    /// Runs of a job before it fails for good.
    #[arg(long, env = "VNC_CONTROL_JOB_ATTEMPTS")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_attempts: Option<u32>,
    /// First retry delay (doubling each attempt).
    #[arg(long, env = "VNC_CONTROL_JOB_BACKOFF", value_parser = parse_duration)]
    #[serde(
        default,
        with = "opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub job_backoff: Option<Duration>,
    /// A job whose worker stopped heart-beating this long is taken over by another
    /// replica (the per-job lock lives this long without a refresh).
    #[arg(long, env = "VNC_CONTROL_JOB_RECLAIM_IDLE", value_parser = parse_duration)]
    #[serde(
        default,
        with = "opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub job_reclaim_idle: Option<Duration>,
    /// PEM certificate chain of the API listener; with `tls_key` the API speaks only
    /// HTTPS. Reloaded on SIGHUP.
    #[arg(long, env = "VNC_CONTROL_TLS_CERT")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    #[arg(long, env = "VNC_CONTROL_TLS_KEY")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificates: when set, every API client must present a certificate one
    /// of them signed.
    #[arg(long, env = "VNC_CONTROL_TLS_CLIENT_CA")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_client_ca: Option<PathBuf>,
    /// Containers of the static runtime (file only).
    #[arg(skip)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub static_containers: Option<Vec<StaticContainer>>,
    #[arg(long, env = "VNC_LOG_LEVEL")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_level: Option<String>,
    #[arg(long, env = "VNC_LOG_FORMAT")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
}

/// Where callers' identity tokens are verified from.
#[derive(Clone, Debug)]
pub enum AuthKey {
    PublicKeyPem(PathBuf),
    Hs256SecretFile(PathBuf),
}

/// The validated configuration `run` takes.
#[derive(Clone, Debug)]
pub struct ControlConfig {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub redis_url: Secret<String>,
    pub redis_prefix: String,
    pub jwt_private_key: PathBuf,
    pub jwt_kid: Option<String>,
    pub jwt_issuer: String,
    pub jwt_audience: String,
    pub auth_key: AuthKey,
    pub auth_issuer: String,
    pub auth_audience: String,
    pub relay_url: String,
    pub node_id: String,
    pub plane: String,
    pub runtime: RuntimeKind,
    pub docker_host: Option<String>,
    pub network: NetworkKind,
    pub publish_ip: IpAddr,
    pub allow_host_network: bool,
    pub desktop_network: String,
    pub desktop_pids_limit: u32,
    pub desktop_cap_add: Vec<String>,
    pub desktop_log_max_size: String,
    pub desktop_log_max_files: u32,
    pub http_header_timeout: Duration,
    pub http_max_connections: usize,
    pub images: Vec<String>,
    pub max_cpus: f64,
    pub max_memory_mb: u64,
    pub token_max_ttl: Duration,
    pub stop_grace: Duration,
    pub start_timeout: Duration,
    pub reconcile_interval: Duration,
    pub vnc_password_secret_file: PathBuf,
    pub worker_concurrency: Option<usize>,
    pub starts_per_minute: Option<u32>,
    pub start_rate_window: Duration,
    pub max_containers_per_tenant: usize,
    pub api_rate_limit: u32,
    pub api_rate_burst: u32,
    pub job_attempts: Option<u32>,
    pub job_backoff: Option<Duration>,
    pub job_reclaim_idle: Option<Duration>,
    pub static_containers: Vec<StaticContainer>,
    /// TLS on the API listener.
    pub tls: Option<TlsFiles>,
    pub log_level: String,
    pub log_format: LogFormat,
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0)))
}

impl ControlSettings {
    /// Lays flags/env over the file (if any), fills defaults and validates.
    pub fn resolve(&self) -> Result<ControlConfig, ConfigError> {
        let s = match &self.config {
            Some(path) => overlay(self, &load_toml::<ControlSettings>(path)?)?,
            None => self.clone(),
        };
        let mut problems = Vec::new();
        let jwt_private_key = s.jwt_private_key.clone().unwrap_or_else(|| {
            problems.push("no token signing key: set --jwt-private-key".to_owned());
            PathBuf::new()
        });
        let auth_key = match (&s.auth_public_key, &s.auth_secret_file) {
            (Some(p), None) => AuthKey::PublicKeyPem(p.clone()),
            (None, Some(p)) => AuthKey::Hs256SecretFile(p.clone()),
            _ => {
                problems.push(
                    "set exactly one of --auth-public-key and --auth-secret-file (callers' identity)"
                        .to_owned(),
                );
                AuthKey::PublicKeyPem(PathBuf::new())
            }
        };
        let runtime = s.runtime.unwrap_or(RuntimeKind::Docker);
        let static_containers = s.static_containers.clone().unwrap_or_default();
        if runtime == RuntimeKind::Static && static_containers.is_empty() {
            problems.push("the static runtime needs static_containers in the config file".into());
        }
        let images = s.images.clone().unwrap_or_default();
        if runtime == RuntimeKind::Docker && images.is_empty() {
            problems.push("no images are allowed: set --image (repeatable)".into());
        }
        let max_cpus = s.max_cpus.unwrap_or(DEFAULT_MAX_CPUS);
        if !(max_cpus.is_finite() && max_cpus > 0.0) {
            problems.push("max_cpus must be positive".into());
        }
        let network = s.network.unwrap_or(NetworkKind::Published);
        let allow_host_network = s.allow_host_network.unwrap_or(false);
        if runtime == RuntimeKind::Docker && network == NetworkKind::Host && !allow_host_network {
            problems.push(
                "network = \"host\" puts desktops on the host's network, where they reach Redis \
                 and every other service of the host: use \"published\", or set \
                 allow_host_network = true to run so anyway"
                    .into(),
            );
        }
        let desktop_network = s
            .desktop_network
            .clone()
            .unwrap_or(DEFAULT_DESKTOP_NETWORK.into());
        let desktop_cap_add: Vec<String> = (s.desktop_cap_add.clone().unwrap_or_default())
            .iter()
            .map(|c| c.trim().to_ascii_uppercase())
            .map(|c| c.strip_prefix("CAP_").map(str::to_owned).unwrap_or(c))
            .collect();
        let desktop_log_max_size = s
            .desktop_log_max_size
            .clone()
            .unwrap_or(DEFAULT_LOG_MAX_SIZE.into());
        let desktop_log_max_files = s.desktop_log_max_files.unwrap_or(DEFAULT_LOG_MAX_FILES);
        let http_header_timeout = s.http_header_timeout.unwrap_or(DEFAULT_HTTP_HEADER_TIMEOUT);
        let http_max_connections = s
            .http_max_connections
            .unwrap_or(DEFAULT_HTTP_MAX_CONNECTIONS);
        problems.extend(isolation_problems(
            &desktop_network,
            &desktop_cap_add,
            &desktop_log_max_size,
            desktop_log_max_files,
        ));
        if http_header_timeout.is_zero() || http_max_connections == 0 {
            problems.push("http_header_timeout and http_max_connections must be positive".into());
        }
        let tls =
            TlsFiles::from_settings(s.tls_cert, s.tls_key, s.tls_client_ca).unwrap_or_else(|e| {
                problems.push(e.to_owned());
                None
            });
        let start_rate_window = s.start_rate_window.unwrap_or(DEFAULT_START_RATE_WINDOW);
        if start_rate_window < Duration::from_millis(1) {
            problems.push("start_rate_window must be at least 1ms".into());
        }
        let max_containers_per_tenant = s
            .max_containers_per_tenant
            .unwrap_or(DEFAULT_MAX_CONTAINERS_PER_TENANT);
        if max_containers_per_tenant == 0 {
            problems.push("max_containers_per_tenant must be at least 1".into());
        }
        let api_rate_limit = s.api_rate_limit.unwrap_or(DEFAULT_API_RATE_LIMIT);
        let api_rate_burst = s.api_rate_burst.unwrap_or(DEFAULT_API_RATE_BURST);
        if api_rate_limit > 0 && api_rate_burst == 0 {
            problems.push("api_rate_burst must be at least 1".into());
        }
        if !problems.is_empty() {
            return Err(ConfigError::Invalid(problems.join("; ")));
        }
        Ok(ControlConfig {
            listen: s.listen.unwrap_or(addr(DEFAULT_LISTEN)),
            admin_listen: s.admin_listen.unwrap_or(addr(DEFAULT_ADMIN_LISTEN)),
            redis_url: Secret::new(s.redis_url.unwrap_or(DEFAULT_REDIS_URL.into())),
            redis_prefix: s.redis_prefix.unwrap_or(DEFAULT_PREFIX.into()),
            jwt_private_key,
            jwt_kid: s.jwt_kid,
            jwt_issuer: s.jwt_issuer.unwrap_or(DEFAULT_ISSUER.into()),
            jwt_audience: s.jwt_audience.unwrap_or(DEFAULT_AUDIENCE.into()),
            auth_key,
            auth_issuer: s.auth_issuer.unwrap_or(DEFAULT_AUTH_ISSUER.into()),
            auth_audience: s.auth_audience.unwrap_or(DEFAULT_AUTH_AUDIENCE.into()),
            relay_url: s.relay_url.unwrap_or(DEFAULT_RELAY_URL.into()),
            node_id: s.node_id.unwrap_or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .map(|h| h.trim().to_owned())
                    .unwrap_or_else(|_| "vnc-control".into())
            }),
            plane: s.plane.unwrap_or(DEFAULT_PLANE.into()),
            runtime,
            docker_host: s.docker_host,
            network,
            publish_ip: s.publish_ip.unwrap_or(IpAddr::from([127, 0, 0, 1])),
            allow_host_network,
            desktop_network,
            desktop_pids_limit: s.desktop_pids_limit.unwrap_or(DEFAULT_PIDS_LIMIT),
            desktop_cap_add,
            desktop_log_max_size,
            desktop_log_max_files,
            http_header_timeout,
            http_max_connections,
            images,
            max_cpus,
            max_memory_mb: s.max_memory_mb.unwrap_or(DEFAULT_MAX_MEMORY_MB),
            token_max_ttl: s.token_max_ttl.unwrap_or(DEFAULT_TOKEN_MAX_TTL),
            stop_grace: s.stop_grace.unwrap_or(DEFAULT_STOP_GRACE),
            start_timeout: s.start_timeout.unwrap_or(DEFAULT_START_TIMEOUT),
            reconcile_interval: s.reconcile_interval.unwrap_or(DEFAULT_RECONCILE_INTERVAL),
            vnc_password_secret_file: s
                .vnc_password_secret_file
                .unwrap_or_else(|| DEFAULT_VNC_PASSWORD_SECRET_FILE.into()),
            worker_concurrency: s.worker_concurrency,
            starts_per_minute: s.starts_per_minute,
            start_rate_window,
            max_containers_per_tenant,
            api_rate_limit,
            api_rate_burst,
            job_attempts: s.job_attempts,
            job_backoff: s.job_backoff,
            job_reclaim_idle: s.job_reclaim_idle,
            static_containers,
            tls,
            log_level: s.log_level.unwrap_or(DEFAULT_LOG_LEVEL.into()),
            log_format: s.log_format.unwrap_or_default(),
        })
    }
}

/// What is wrong with the desktop confinement settings (names only; Docker judges the
/// capability names).
fn isolation_problems(
    network: &str,
    cap_add: &[String],
    log_max_size: &str,
    log_max_files: u32,
) -> Vec<String> {
    let mut out = Vec::new();
    let name_ok = network
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    // Docker's own networks cannot carry the isolation option.
    if network.is_empty() || !name_ok || ["bridge", "host", "none"].contains(&network) {
        out.push(format!(
            "desktop_network {network:?} must be a network name of [A-Za-z0-9_.-] other than bridge, host and none"
        ));
    }
    for cap in cap_add {
        if cap == "ALL"
            || cap.is_empty()
            || !cap.bytes().all(|b| b.is_ascii_uppercase() || b == b'_')
        {
            out.push(format!(
                "desktop_cap_add {cap:?} is not one capability name"
            ));
        }
    }
    let digits = log_max_size.trim_end_matches(['k', 'm', 'g']);
    let size_ok =
        log_max_size.len() - digits.len() <= 1 && digits.parse::<u64>().is_ok_and(|n| n > 0);
    if !size_ok {
        out.push(format!(
            "desktop_log_max_size {log_max_size:?} must be a positive size such as 10m, 512k or 1g"
        ));
    }
    if log_max_files == 0 {
        out.push("desktop_log_max_files must be at least 1".into());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        settings: ControlSettings,
    }

    #[test]
    fn names_every_missing_piece() {
        let err = Cli::parse_from(["vnc-control"])
            .settings
            .resolve()
            .unwrap_err()
            .to_string();
        for want in ["--jwt-private-key", "--auth-public-key", "--image"] {
            assert!(err.contains(want), "{err}");
        }
    }

    #[test]
    fn host_networking_and_bad_isolation_settings_are_refused() {
        let base = [
            "vnc-control",
            "--jwt-private-key",
            "/k",
            "--auth-secret-file",
            "/s",
            "--image",
            "desk",
        ];
        let resolve = |extra: &[&str]| {
            let args: Vec<&str> = base.iter().chain(extra).copied().collect();
            Cli::parse_from(args).settings.resolve()
        };
        let err = resolve(&["--network", "host"]).unwrap_err().to_string();
        assert!(
            err.contains("allow_host_network") && err.contains("Redis"),
            "{err}"
        );
        let c = resolve(&["--network", "host", "--allow-host-network", "true"]).unwrap();
        assert_eq!(c.network, NetworkKind::Host);
        let c = resolve(&["--desktop-cap-add", "cap_chown,SETUID"]).unwrap();
        assert_eq!(c.desktop_cap_add, ["CHOWN", "SETUID"]);
        assert_eq!(c.desktop_pids_limit, DEFAULT_PIDS_LIMIT);
        let err = resolve(&[
            "--desktop-network",
            "bridge",
            "--desktop-cap-add",
            "ALL",
            "--desktop-log-max-size",
            "10x",
            "--desktop-log-max-files",
            "0",
            "--http-max-connections",
            "0",
        ])
        .unwrap_err()
        .to_string();
        for want in [
            "desktop_network",
            "desktop_cap_add",
            "desktop_log_max_size",
            "desktop_log_max_files",
            "http_max_connections",
        ] {
            assert!(err.contains(want), "{want}: {err}");
        }
    }

    #[test]
    fn file_declares_static_containers_and_flags_win() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("control.toml");
        std::fs::write(
            &file,
            "runtime = \"static\"\nlisten = \"127.0.0.1:1\"\njwt_private_key = \"/k\"\nauth_secret_file = \"/s\"\n\
             [[static_containers]]\ncid = \"desk\"\nowner = \"alice\"\ntenant = \"t1\"\nhost = \"127.0.0.1\"\nport = 5900\n",
        )
        .unwrap();
        let cli = Cli::parse_from([
            "vnc-control",
            "--config",
            file.to_str().unwrap(),
            "--listen",
            "127.0.0.1:2",
        ]);
        let c = cli.settings.resolve().unwrap();
        assert_eq!(c.listen, addr("127.0.0.1:2"));
        assert_eq!(c.runtime, RuntimeKind::Static);
        assert_eq!(c.static_containers[0].port, 5900);
    }
}
