//! Control's settings: one struct read from flags, env and the TOML file (flags beat
//! env beat file beat the `DEFAULT_*` constants), declared with
//! [`vnc_shared::settings!`] one line per setting, section by section (listeners,
//! Redis and the node, VNC tokens, callers, the runtime and its desktops, create
//! limits, the lifecycle and its jobs, logging), and validated into a
//! [`ControlConfig`]. Each setting's default is a `DEFAULT_*` constant here, or of the
//! layer that owns it (the runtime's desktop confinement, the queue's job settings,
//! the shared Redis prefix and token issuer and audience).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use vnc_shared::config::{ConfigError, Secret, load_toml, overlay};
use vnc_shared::telemetry::LogFormat;
use vnc_shared::tls::TlsFiles;
use vnc_shared::token::{ClipboardPolicy, DEFAULT_AUDIENCE, DEFAULT_ISSUER, FilePolicy, MAX_TTL};

mod checks;
mod engines;
mod redis_target;

use checks::{base_url_ok, isolation_problems, origin_ok};

use engines::engines;
pub use engines::{
    DEFAULT_ENGINE_NAME, DockerEngine, EngineConfig, MAX_DOCKER_ENGINES, MAX_ENGINE_NAME_LEN,
};
pub use redis_target::RedisTarget;

use crate::domain::StaticContainer;
use crate::infra::runtime::{
    DEFAULT_DESKTOP_NETWORK, DEFAULT_LOG_MAX_FILES, DEFAULT_LOG_MAX_SIZE, DEFAULT_PIDS_LIMIT,
};

// Listeners.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8080";
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9101";
/// Time an API client has to send a request's headers; also how long a keep-alive
/// connection may sit idle between requests.
pub const DEFAULT_HTTP_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// API connections served at once; past it new connections wait in the listen backlog
/// until one closes.
pub const DEFAULT_HTTP_MAX_CONNECTIONS: usize = 1024;

// Redis and this node (the key prefix: `vnc_shared::schema::DEFAULT_PREFIX`).
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";
/// Node id when none is configured and the host name cannot be read (the host name is
/// the default).
pub const DEFAULT_NODE_ID: &str = "vnc-control";
/// Control plane id (label `vnc.plane`) when none is configured.
pub const DEFAULT_PLANE: &str = "default";

// VNC tokens (issuer and audience: `vnc_shared::token::DEFAULT_ISSUER`, `DEFAULT_AUDIENCE`).
/// Public base URL of the relays, for the `ws_url` of minted tokens.
pub const DEFAULT_RELAY_URL: &str = "ws://localhost:6080";
/// Longest VNC token a caller may ask for.
pub const DEFAULT_TOKEN_MAX_TTL: Duration = Duration::from_secs(300);
/// Longest share link a caller may ask for (at most `vnc_shared::token::MAX_TTL`, the
/// longest token control signs).
pub const DEFAULT_SHARE_MAX_TTL: Duration = Duration::from_secs(24 * 3600);

// Callers.
/// Expected `iss` / `aud` of callers' identity tokens.
pub const DEFAULT_AUTH_ISSUER: &str = "identity";
pub const DEFAULT_AUTH_AUDIENCE: &str = "vnc-control";
/// Least time between two fetches of an OpenID Connect issuer's keys (a token with an
/// unknown `kid` asks for one): a flood of made-up kids costs the issuer one request
/// per interval.
pub const DEFAULT_AUTH_OIDC_REFRESH_INTERVAL: Duration = Duration::from_secs(30);
/// API requests per second one caller may make (sustained); 0 turns the limit off.
pub const DEFAULT_API_RATE_LIMIT: u32 = 20;
/// API requests one caller may make at once before the sustained rate applies.
pub const DEFAULT_API_RATE_BURST: u32 = 40;

// The runtime and its desktops (the desktop confinement defaults are the runtime's:
// `crate::infra::runtime::DEFAULT_*`).
pub const DEFAULT_RUNTIME: RuntimeKind = RuntimeKind::Docker;
pub const DEFAULT_NETWORK: NetworkKind = NetworkKind::Published;
/// Where published ports bind and host networking answers: loopback.
pub const DEFAULT_PUBLISH_IP: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// Host networking is refused unless allowed.
pub const DEFAULT_ALLOW_HOST_NETWORK: bool = false;
/// Secrets the VNC passwords of Docker containers derive from; generated (0600) if
/// missing. The systemd unit's `StateDirectory=vnc-control` makes it writable.
pub const DEFAULT_VNC_PASSWORD_SECRET_FILE: &str = "/var/lib/vnc-control/vnc-password.secret";

// What a create request may ask for.
pub const DEFAULT_MAX_CPUS: f64 = 4.0;
pub const DEFAULT_MAX_MEMORY_MB: u64 = 8192;
pub const DEFAULT_MIN_MEMORY_MB: u64 = 64;
/// Most env and label entries of a create request.
pub const DEFAULT_MAX_ENTRIES: usize = 64;
/// Live (not stopped or failed) containers one tenant may have.
pub const DEFAULT_MAX_CONTAINERS_PER_TENANT: usize = 10;

// Files and the clipboard.
/// File policy of a container whose create request names none: both ways (the owner's
/// own desktop); view and share tokens get less.
pub const DEFAULT_FILES_DEFAULT: FilePolicy = FilePolicy::Both;
/// Clipboard policy of a container whose create request names none: both ways, as
/// every session had before the policy existed.
pub const DEFAULT_CLIPBOARD_DEFAULT: ClipboardPolicy = ClipboardPolicy::Both;
/// Largest file moved either way (an upload's body, a download's file): 1 GiB. One
/// request carries one file, so this is the bound per request too.
pub const DEFAULT_FILES_MAX_BYTES: u64 = 1 << 30;

// The container lifecycle and its jobs (the queue's own defaults:
// `crate::infra::queue::DEFAULT_*`).
/// Time a container gets to stop before it is killed.
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(10);
/// Time a started container's VNC server gets to answer.
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(60);
/// How often Redis is compared with what the runtime runs.
pub const DEFAULT_RECONCILE_INTERVAL: Duration = Duration::from_secs(30);
/// Window `starts_per_minute` counts starts in (the name says a minute: this default).
pub const DEFAULT_START_RATE_WINDOW: Duration = Duration::from_secs(60);

// Logging.
pub const DEFAULT_LOG_LEVEL: &str = "info";
pub const DEFAULT_LOG_FORMAT: LogFormat = LogFormat::Text;

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

vnc_shared::settings! {
    /// Every setting, as flags/env (clap) and as the TOML file (serde) at once.
    #[derive(Clone, Debug, Default)]
    pub struct ControlSettings {
        /// TOML config file (optional).
        flag config: PathBuf = "VNC_CONTROL_CONFIG",

        // Listeners.
        listen: SocketAddr = "VNC_CONTROL_LISTEN",
        /// Admin listener: /metrics.
        admin_listen: SocketAddr = "VNC_CONTROL_ADMIN_LISTEN",
        /// Time an API client has to send a request's headers (and the longest idle time
        /// of a keep-alive connection).
        http_header_timeout: Duration = "VNC_CONTROL_HTTP_HEADER_TIMEOUT",
        /// API connections served at once; more wait until one closes.
        http_max_connections: usize = "VNC_CONTROL_HTTP_MAX_CONNECTIONS",
        /// PEM certificate chain of the API listener; with `tls_key` the API speaks only
        /// HTTPS. Reloaded on SIGHUP.
        tls_cert: PathBuf = "VNC_CONTROL_TLS_CERT",
        /// PEM private key of `tls_cert`.
        tls_key: PathBuf = "VNC_CONTROL_TLS_KEY",
        /// PEM CA certificates: when set, every API client must present a certificate one
        /// of them signed.
        tls_client_ca: PathBuf = "VNC_CONTROL_TLS_CLIENT_CA",

        // Redis and this node.
        redis_url: String = "VNC_REDIS_URL",
        redis_prefix: String = "VNC_REDIS_PREFIX",
        node_id: String = "VNC_NODE_ID",
        /// This control plane's id, labelled on its containers: planes sharing a Docker
        /// engine never touch each other's containers. Replicas of one plane share it.
        plane: String = "VNC_CONTROL_PLANE",

        // VNC tokens.
        /// Ed25519 private key (PKCS#8 PEM) that signs VNC tokens.
        jwt_private_key: PathBuf = "VNC_JWT_PRIVATE_KEY",
        /// Key id written in tokens (default: the key file's stem).
        jwt_kid: String = "VNC_JWT_KID",
        jwt_issuer: String = "VNC_JWT_ISSUER",
        jwt_audience: String = "VNC_JWT_AUDIENCE",
        /// Public base URL of the relays (`wss://vnc.example.com`).
        relay_url: String = "VNC_RELAY_PUBLIC_URL",
        /// Public base URL of this API as browsers reach it (`https://vnc-api.example.com`),
        /// for the viewer page's file transfer (`control=` in share links).
        public_url: String = "VNC_CONTROL_PUBLIC_URL",
        token_max_ttl: Duration = "VNC_CONTROL_TOKEN_MAX_TTL",
        /// Longest share link (`POST /v1/containers/{id}/shares`) a caller may ask for.
        share_max_ttl: Duration = "VNC_CONTROL_SHARE_MAX_TTL",

        // Callers.
        /// Identity provider's public key (Ed25519 or RSA PEM) for callers' bearer tokens.
        auth_public_key: PathBuf = "VNC_CONTROL_AUTH_PUBLIC_KEY",
        /// Or an HS256 secret file for callers' bearer tokens.
        auth_secret_file: PathBuf = "VNC_CONTROL_AUTH_SECRET_FILE",
        /// Or an OpenID Connect issuer URL (`https://`; `http://` only on loopback): its
        /// discovery document names the JWKS whose keys verify callers' tokens, chosen
        /// by `kid`; the expected `iss` is this URL.
        auth_oidc_issuer: String = "VNC_CONTROL_AUTH_OIDC_ISSUER",
        /// Least time between two fetches of the issuer's keys (an unknown `kid` asks
        /// for one).
        auth_oidc_refresh_interval: Duration = "VNC_CONTROL_AUTH_OIDC_REFRESH_INTERVAL",
        auth_issuer: String = "VNC_CONTROL_AUTH_ISSUER",
        auth_audience: String = "VNC_CONTROL_AUTH_AUDIENCE",
        /// API requests per second per caller (bearer subject, or client address when
        /// unauthenticated); past it 429 with Retry-After. 0 turns the limit off.
        api_rate_limit: u32 = "VNC_CONTROL_API_RATE_LIMIT",
        /// API requests a caller may make at once above `api_rate_limit`.
        api_rate_burst: u32 = "VNC_CONTROL_API_RATE_BURST",

        // The runtime and its desktops.
        runtime: RuntimeKind = "VNC_CONTROL_RUNTIME",
        /// Docker endpoint (`unix:///var/run/docker.sock`, `tcp://…`): a pool of one engine
        /// named `default` with no capacity bound. Not with `docker_engines`.
        docker_host: String = "VNC_DOCKER_HOST",
        /// The Docker engines desktops are placed on, each
        /// `name=N,docker_host=ADDR,publish_ip=IP,cpus=C,memory_mb=M` (`publish_ip`
        /// optional: the top-level one); repeatable; in the environment separated by `;`;
        /// in the file also as tables (`[[docker_engines]]`). Not with `docker_host`.
        docker_engines: Vec<DockerEngine> = "VNC_CONTROL_DOCKER_ENGINES" (long = "docker-engine", value_delimiter = ';'),
        network: NetworkKind = "VNC_CONTROL_NETWORK",
        /// Address published ports bind to / host networking answers on.
        publish_ip: IpAddr = "VNC_CONTROL_PUBLISH_IP",
        /// Allow `network = "host"` (`true`/`false`, default false). Host-networked desktops
        /// share the host's network: they reach Redis and everything else listening on it,
        /// and each other's VNC ports.
        allow_host_network: bool = "VNC_CONTROL_ALLOW_HOST_NETWORK",
        /// Docker bridge network desktops join (published and bridge modes); control creates
        /// it with inter-container traffic disabled when it is missing.
        desktop_network: String = "VNC_CONTROL_DESKTOP_NETWORK",
        /// Processes (threads included) one desktop may run at once; 0 for no limit.
        desktop_pids_limit: u32 = "VNC_CONTROL_DESKTOP_PIDS_LIMIT",
        /// Capabilities desktops get back after all are dropped (`CHOWN`, `SETUID`, ...);
        /// none by default.
        desktop_cap_add: Vec<String> = "VNC_CONTROL_DESKTOP_CAP_ADD" (value_delimiter = ','),
        /// Size at which a desktop's log file is rotated (`10m`, `512k`).
        desktop_log_max_size: String = "VNC_CONTROL_DESKTOP_LOG_MAX_SIZE",
        /// Log files kept per desktop, the current one included.
        desktop_log_max_files: u32 = "VNC_CONTROL_DESKTOP_LOG_MAX_FILES",
        /// Secrets file the VNC passwords of Docker containers derive from (one secret per
        /// line, the first current); generated with one secret if missing. Re-read on SIGHUP.
        vnc_password_secret_file: PathBuf = "VNC_CONTROL_VNC_PASSWORD_SECRET_FILE",
        /// Containers of the static runtime (file only).
        file static_containers: Vec<StaticContainer>,

        // What a create request may ask for.
        /// Images callers may run.
        images: Vec<String> = "VNC_CONTROL_IMAGES" (long = "image", value_delimiter = ','),
        max_cpus: f64 = "VNC_CONTROL_MAX_CPUS",
        max_memory_mb: u64 = "VNC_CONTROL_MAX_MEMORY_MB",
        /// Live (not stopped or failed) containers one tenant may have; one more is 429.
        max_containers_per_tenant: usize = "VNC_CONTROL_MAX_CONTAINERS_PER_TENANT",

        // Files and the clipboard.
        /// File policy of containers whose create request names none: none, upload,
        /// download or both.
        files_default: FilePolicy = "VNC_CONTROL_FILES_DEFAULT",
        /// Clipboard policy of containers whose create request names none: both,
        /// to_desktop, from_desktop or none.
        clipboard_default: ClipboardPolicy = "VNC_CONTROL_CLIPBOARD_DEFAULT",
        /// Largest file moved either way, in bytes (413 past it).
        files_max_bytes: u64 = "VNC_CONTROL_FILES_MAX_BYTES",
        /// Origins of the viewer page (`https://vnc.example.com`) allowed to call the
        /// file routes from a browser (CORS); none by default.
        viewer_origins: Vec<String> = "VNC_CONTROL_VIEWER_ORIGINS" (long = "viewer-origin", value_delimiter = ','),

        // The container lifecycle and its jobs.
        stop_grace: Duration = "VNC_CONTROL_STOP_GRACE",
        start_timeout: Duration = "VNC_CONTROL_START_TIMEOUT",
        reconcile_interval: Duration = "VNC_CONTROL_RECONCILE_INTERVAL",
        /// Jobs one replica runs at once.
        worker_concurrency: usize = "VNC_CONTROL_WORKER_CONCURRENCY",
        /// Container starts per minute across all replicas.
        starts_per_minute: u32 = "VNC_CONTROL_STARTS_PER_MINUTE",
        /// The window `starts_per_minute` is counted in (default a minute): at most that
        /// many starts in any window of this length, given to tenants in turn.
        start_rate_window: Duration = "VNC_CONTROL_START_RATE_WINDOW",
        /// Runs of a job before it fails for good.
        job_attempts: u32 = "VNC_CONTROL_JOB_ATTEMPTS",
        /// First retry delay (doubling each attempt).
        job_backoff: Duration = "VNC_CONTROL_JOB_BACKOFF",
        /// A job whose worker stopped heart-beating this long is taken over by another
        /// replica (the per-job lock lives this long without a refresh).
        job_reclaim_idle: Duration = "VNC_CONTROL_JOB_RECLAIM_IDLE",

        // Logging.
        log_level: String = "VNC_LOG_LEVEL",
        log_format: LogFormat = "VNC_LOG_FORMAT",
    }
}

/// Where callers' identity tokens are verified from.
#[derive(Clone, Debug)]
pub enum AuthKey {
    PublicKeyPem(PathBuf),
    Hs256SecretFile(PathBuf),
    /// The keys an OpenID Connect issuer publishes (`auth_issuer` is its URL).
    Oidc {
        refresh_interval: Duration,
    },
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
    pub public_url: Option<String>,
    pub node_id: String,
    pub plane: String,
    pub runtime: RuntimeKind,
    /// The Docker engines (one named [`DEFAULT_ENGINE_NAME`] from `docker_host` when
    /// `docker_engines` is not set), in the configured order.
    pub engines: Vec<EngineConfig>,
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
    pub share_max_ttl: Duration,
    pub stop_grace: Duration,
    pub start_timeout: Duration,
    pub reconcile_interval: Duration,
    pub vnc_password_secret_file: PathBuf,
    pub worker_concurrency: Option<usize>,
    pub starts_per_minute: Option<u32>,
    pub start_rate_window: Duration,
    pub max_containers_per_tenant: usize,
    pub files_default: FilePolicy,
    pub clipboard_default: ClipboardPolicy,
    pub files_max_bytes: u64,
    pub viewer_origins: Vec<String>,
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
        let refresh_interval = s
            .auth_oidc_refresh_interval
            .unwrap_or(DEFAULT_AUTH_OIDC_REFRESH_INTERVAL);
        let auth_key = match (&s.auth_public_key, &s.auth_secret_file, &s.auth_oidc_issuer) {
            (Some(p), None, None) => AuthKey::PublicKeyPem(p.clone()),
            (None, Some(p), None) => AuthKey::Hs256SecretFile(p.clone()),
            (None, None, Some(issuer)) => {
                if let Err(e) = crate::infra::oidc::check_url(issuer) {
                    problems.push(format!("auth_oidc_issuer {e}"));
                }
                if s.auth_issuer.as_ref().is_some_and(|i| i != issuer) {
                    problems.push(
                        "auth_issuer must be unset or equal auth_oidc_issuer (the tokens' iss)"
                            .into(),
                    );
                }
                if refresh_interval < Duration::from_secs(1) {
                    problems.push("auth_oidc_refresh_interval must be at least 1s".into());
                }
                AuthKey::Oidc { refresh_interval }
            }
            _ => {
                problems.push(
                    "set exactly one of --auth-public-key, --auth-secret-file and \
                     --auth-oidc-issuer (callers' identity)"
                        .to_owned(),
                );
                AuthKey::PublicKeyPem(PathBuf::new())
            }
        };
        let runtime = s.runtime.unwrap_or(DEFAULT_RUNTIME);
        let static_containers = s.static_containers.clone().unwrap_or_default();
        if runtime == RuntimeKind::Static && static_containers.is_empty() {
            problems.push("the static runtime needs static_containers in the config file".into());
        }
        let images = s.images.clone().unwrap_or_default();
        if runtime == RuntimeKind::Docker && images.is_empty() {
            problems.push("no images are allowed: set --image (repeatable)".into());
        }
        let publish_ip = s.publish_ip.unwrap_or(DEFAULT_PUBLISH_IP);
        let engines = engines(
            s.docker_host.clone(),
            s.docker_engines.clone().unwrap_or_default(),
            publish_ip,
            &mut problems,
        );
        let max_cpus = s.max_cpus.unwrap_or(DEFAULT_MAX_CPUS);
        if !(max_cpus.is_finite() && max_cpus > 0.0) {
            problems.push("max_cpus must be positive".into());
        }
        let network = s.network.unwrap_or(DEFAULT_NETWORK);
        let allow_host_network = s.allow_host_network.unwrap_or(DEFAULT_ALLOW_HOST_NETWORK);
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
        let redis = RedisTarget::of(&s);
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
        let files_max_bytes = s.files_max_bytes.unwrap_or(DEFAULT_FILES_MAX_BYTES);
        if files_max_bytes == 0 {
            problems.push("files_max_bytes must be at least 1".into());
        }
        let viewer_origins = s.viewer_origins.clone().unwrap_or_default();
        for origin in &viewer_origins {
            if !origin_ok(origin) {
                problems.push(format!(
                    "viewer_origins: {origin:?} is not an origin (scheme://host[:port], nothing after)"
                ));
            }
        }
        if let Some(url) = s
            .public_url
            .as_deref()
            .filter(|u| !u.is_empty() && !base_url_ok(u))
        {
            problems.push(format!(
                "public_url: {url:?} is not a base URL (http(s)://host[:port][/path], no query)"
            ));
        }
        if let Some(url) = &s.redis_url
            && let Some(problem) = vnc_shared::redis::url_problem(url)
        {
            problems.push(problem.into());
        }
        let share_max_ttl = s.share_max_ttl.unwrap_or(DEFAULT_SHARE_MAX_TTL);
        if share_max_ttl < Duration::from_secs(1) || share_max_ttl > MAX_TTL {
            problems.push(format!(
                "share_max_ttl must be between 1s and {}s (the longest token control signs)",
                MAX_TTL.as_secs()
            ));
        }
        if !problems.is_empty() {
            return Err(ConfigError::Invalid(problems.join("; ")));
        }
        Ok(ControlConfig {
            listen: s.listen.unwrap_or(addr(DEFAULT_LISTEN)),
            admin_listen: s.admin_listen.unwrap_or(addr(DEFAULT_ADMIN_LISTEN)),
            redis_url: redis.redis_url,
            redis_prefix: redis.redis_prefix,
            jwt_private_key,
            jwt_kid: s.jwt_kid,
            jwt_issuer: s.jwt_issuer.unwrap_or(DEFAULT_ISSUER.into()),
            jwt_audience: s.jwt_audience.unwrap_or(DEFAULT_AUDIENCE.into()),
            auth_key,
            auth_issuer: (s.auth_oidc_issuer.or(s.auth_issuer))
                .unwrap_or(DEFAULT_AUTH_ISSUER.into()),
            auth_audience: s.auth_audience.unwrap_or(DEFAULT_AUTH_AUDIENCE.into()),
            relay_url: s.relay_url.unwrap_or(DEFAULT_RELAY_URL.into()),
            public_url: s.public_url.filter(|u| !u.is_empty()),
            node_id: s.node_id.unwrap_or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .map(|h| h.trim().to_owned())
                    .unwrap_or_else(|_| DEFAULT_NODE_ID.into())
            }),
            plane: s.plane.unwrap_or(DEFAULT_PLANE.into()),
            runtime,
            engines,
            network,
            publish_ip,
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
            share_max_ttl,
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
            files_default: s.files_default.unwrap_or(DEFAULT_FILES_DEFAULT),
            clipboard_default: s.clipboard_default.unwrap_or(DEFAULT_CLIPBOARD_DEFAULT),
            files_max_bytes,
            viewer_origins,
            api_rate_limit,
            api_rate_burst,
            job_attempts: s.job_attempts,
            job_backoff: s.job_backoff,
            job_reclaim_idle: s.job_reclaim_idle,
            static_containers,
            tls,
            log_level: redis.log_level,
            log_format: redis.log_format,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infra::runtime::Capacity;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        settings: ControlSettings,
    }

    #[test]
    fn public_urls_are_http_base_urls() {
        for good in [
            "https://api.example",
            "http://127.0.0.1:8080/",
            "https://a.example/vnc/api",
        ] {
            assert!(base_url_ok(good), "{good}");
        }
        for bad in [
            "ftp://a",
            "https://",
            "https://u@a",
            "https://a/x?y",
            "https://a/#f",
            "https://a/b c",
            "a.example",
        ] {
            assert!(!base_url_ok(bad), "{bad}");
        }
    }

    #[test]
    fn viewer_origins_are_bare_http_origins() {
        for good in ["https://a.example", "http://127.0.0.1:6080"] {
            assert!(origin_ok(good), "{good}");
        }
        for bad in [
            "https://a.example/",
            "ftp://a.example",
            "https://",
            "https://a b",
            "https://a\tb",
            "a.example",
            "https://a?x",
            "https://a#x",
            "https://a://b",
        ] {
            assert!(!origin_ok(bad), "{bad}");
        }
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

    /// The configuration of a Docker control with a signing key, an identity secret,
    /// an image and `extra` flags; a flag or setting refused is the error.
    fn resolve(extra: &[&str]) -> Result<ControlConfig, String> {
        let base = [
            "vnc-control",
            "--jwt-private-key",
            "/k",
            "--auth-secret-file",
            "/s",
            "--image",
            "desk",
        ];
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        Cli::try_parse_from(args)
            .map_err(|e| e.to_string())
            .and_then(|c| c.settings.resolve().map_err(|e| e.to_string()))
    }

    #[test]
    fn a_sentinel_url_is_taken_and_another_scheme_refused() {
        let sentinel =
            "redis-sentinel://:hunter2@10.0.0.1:26379?node=10.0.0.2:26379&sentinelServiceName=vnc";
        let c = resolve(&["--redis-url", sentinel]).unwrap();
        assert_eq!(c.redis_url.expose(), sentinel);
        let err = resolve(&["--redis-url", "tcp://:hunter2@10.0.0.1:6379"]).unwrap_err();
        assert!(err.contains("redis_url must start with redis://"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        let err = resolve(&["--redis-url", "redis-sentinel://10.0.0.1:26379"]).unwrap_err();
        assert!(err.contains("sentinelServiceName"), "{err}");
    }

    #[test]
    fn host_networking_and_bad_isolation_settings_are_refused() {
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
    fn docker_engines_from_flags_and_file() {
        // No engines listed: today's single engine, unbounded.
        let c = resolve(&["--docker-host", "tcp://10.0.0.1:2375"]).unwrap();
        assert_eq!(c.engines.len(), 1);
        assert_eq!(c.engines[0].name, DEFAULT_ENGINE_NAME);
        assert_eq!(
            c.engines[0].docker_host.as_deref(),
            Some("tcp://10.0.0.1:2375")
        );
        assert_eq!(c.engines[0].capacity, None);
        let c = resolve(&[
            "--docker-engine",
            "name=a,docker_host=unix:///a.sock,cpus=4,memory_mb=8192",
            "--docker-engine",
            "name=b, docker_host=tcp://10.0.0.2:2375, publish_ip=10.0.0.2, cpus=0.5, memory_mb=512",
        ])
        .unwrap();
        assert_eq!(c.engines.len(), 2);
        assert_eq!(c.engines[0].publish_ip, DEFAULT_PUBLISH_IP);
        assert_eq!(c.engines[1].publish_ip.to_string(), "10.0.0.2");
        assert_eq!(
            c.engines[1].capacity,
            Some(Capacity {
                cpus: 0.5,
                memory_mb: 512
            })
        );
        for (bad, want) in [
            (
                &["--docker-engine", "name=a,docker_host=unix:///a,cpus=1"][..],
                "no memory_mb",
            ),
            (
                &[
                    "--docker-engine",
                    "name=a,docker_host=unix:///a,cpus=1,memory_mb=1,x=1",
                ],
                "unknown field x",
            ),
            (
                &[
                    "--docker-engine",
                    "name=a,docker_host=unix:///a,cpus=1,memory_mb=1",
                    "--docker-engine",
                    "name=a,docker_host=unix:///b,cpus=1,memory_mb=1",
                ],
                "given twice",
            ),
            (
                &[
                    "--docker-engine",
                    "name=a b,docker_host=unix:///a,cpus=0,memory_mb=1",
                ],
                "[A-Za-z0-9_.-]",
            ),
            (
                &[
                    "--docker-engine",
                    "name=a,docker_host=unix:///a,cpus=0,memory_mb=1",
                ],
                "positive cpus",
            ),
            (
                &[
                    "--docker-host",
                    "unix:///x",
                    "--docker-engine",
                    "name=a,docker_host=unix:///a,cpus=1,memory_mb=1",
                ],
                "not both",
            ),
        ] {
            let err = resolve(bad).unwrap_err();
            assert!(err.contains(want), "{bad:?}: {err}");
        }
        // The file takes tables and lines alike.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("control.toml");
        std::fs::write(
            &file,
            "[[docker_engines]]\nname = \"a\"\ndocker_host = \"unix:///a\"\ncpus = 4\nmemory_mb = 4096\n\
             [[docker_engines]]\nname = \"b\"\ndocker_host = \"unix:///b\"\npublish_ip = \"10.0.0.9\"\ncpus = 2.0\nmemory_mb = 2048\n",
        )
        .unwrap();
        let c = resolve(&["--config", file.to_str().unwrap()]).unwrap();
        let names: Vec<&str> = c.engines.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(c.engines[1].publish_ip.to_string(), "10.0.0.9");
        std::fs::write(
            &file,
            "docker_engines = [\"name=c,docker_host=unix:///c,cpus=2,memory_mb=2048\"]\n",
        )
        .unwrap();
        let c = resolve(&["--config", file.to_str().unwrap()]).unwrap();
        assert_eq!(c.engines[0].name, "c");
    }

    #[test]
    fn share_links_last_a_second_to_a_day() {
        let resolve = |extra: &[&str]| {
            let base = [
                "vnc-control",
                "--jwt-private-key",
                "/k",
                "--auth-secret-file",
                "/s",
            ];
            let args: Vec<&str> = base
                .iter()
                .chain(["--image", "desk"].iter())
                .chain(extra)
                .copied()
                .collect();
            Cli::parse_from(args).settings.resolve()
        };
        assert_eq!(resolve(&[]).unwrap().share_max_ttl, DEFAULT_SHARE_MAX_TTL);
        let c = resolve(&["--share-max-ttl", "2h"]).unwrap();
        assert_eq!(c.share_max_ttl, Duration::from_secs(7200));
        for bad in ["0s", "25h"] {
            let err = resolve(&["--share-max-ttl", bad]).unwrap_err().to_string();
            assert!(err.contains("share_max_ttl"), "{bad}: {err}");
        }
    }

    #[test]
    fn exactly_one_source_of_callers_keys() {
        let resolve = |auth: &[&str]| {
            let base = ["vnc-control", "--jwt-private-key", "/k", "--image", "desk"];
            let args: Vec<&str> = base.iter().chain(auth).copied().collect();
            Cli::parse_from(args).settings.resolve()
        };
        let oidc = ["--auth-oidc-issuer", "https://idp.example.com/realm"];
        for two in [
            &["--auth-public-key", "/p", "--auth-secret-file", "/s"][..],
            &["--auth-public-key", "/p", oidc[0], oidc[1]],
            &["--auth-secret-file", "/s", oidc[0], oidc[1]],
            &[],
        ] {
            let err = resolve(two).unwrap_err().to_string();
            assert!(err.contains("exactly one of"), "{two:?}: {err}");
            assert!(err.contains("--auth-oidc-issuer"), "{err}");
        }
        let c = resolve(&oidc).unwrap();
        assert_eq!(c.auth_issuer, oidc[1]);
        assert!(matches!(
            c.auth_key,
            AuthKey::Oidc { refresh_interval } if refresh_interval == DEFAULT_AUTH_OIDC_REFRESH_INTERVAL
        ));
        for (extra, want) in [
            (
                &["--auth-oidc-issuer", "http://idp.example.com"][..],
                "loopback",
            ),
            (
                &[oidc[0], oidc[1], "--auth-issuer", "other"],
                "auth_issuer must be unset",
            ),
            (
                &[oidc[0], oidc[1], "--auth-oidc-refresh-interval", "10ms"],
                "at least 1s",
            ),
        ] {
            let err = resolve(extra).unwrap_err().to_string();
            assert!(err.contains(want), "{extra:?}: {err}");
        }
        let c = resolve(&["--auth-oidc-issuer", "http://127.0.0.1:9/"]).unwrap();
        assert_eq!(c.auth_issuer, "http://127.0.0.1:9/");
    }

    /// Every setting's flag and env name is the one the example config documents
    /// (`key = value  # ENV`), and its flag is the key with dashes.
    #[test]
    fn flags_and_env_names_match_the_example_config() {
        use clap::CommandFactory;

        let example = include_str!("../../configs/control.toml");
        let documented: Vec<(&str, &str)> = example
            .lines()
            .filter_map(|line| {
                let (setting, env) = line.trim_start_matches(['#', ' ']).split_once(" = ")?;
                let env = env.rsplit_once('#')?.1.trim();
                env.starts_with("VNC_").then_some((setting, env))
            })
            .collect();
        assert!(documented.len() > 40, "{documented:?}");
        let cli = Cli::command();
        for (setting, env) in documented {
            let arg = cli
                .get_arguments()
                .find(|a| a.get_id() == setting)
                .unwrap_or_else(|| panic!("no flag for {setting}"));
            assert_eq!(
                arg.get_env().and_then(|e| e.to_str()),
                Some(env),
                "{setting}"
            );
            // Repeatable lists take the singular.
            let long = match setting {
                "images" => "image".to_owned(),
                "viewer_origins" => "viewer-origin".to_owned(),
                "docker_engines" => "docker-engine".to_owned(),
                _ => setting.replace('_', "-"),
            };
            assert_eq!(arg.get_long(), Some(long.as_str()), "{setting}");
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
