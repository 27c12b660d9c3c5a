//! The relay's settings: one struct read from flags, env and the TOML file (flags beat
//! env beat file beat the `DEFAULT_*` constants), declared with
//! [`vnc_shared::settings!`] one line per setting, and validated into a
//! [`RelayConfig`] in sections: the node, each session's limits, the registry (Redis),
//! tokens, recording, TLS and logging. Each setting's default is a `DEFAULT_*` constant
//! here (or the shared Redis prefix, token issuer and audience).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use vnc_shared::config::{ConfigError, Secret, load_toml, overlay};
use vnc_shared::schema::DEFAULT_PREFIX;
use vnc_shared::telemetry::LogFormat;
use vnc_shared::tls::TlsFiles;
use vnc_shared::token::{
    DEFAULT_AUDIENCE, DEFAULT_ISSUER, KeyError, KeySet, MAX_LEEWAY, Scope, TokenAlgorithm,
    VerifyPolicy, kid_from_path, read_hs256_secret,
};

// This node: listeners, bounds on sessions and handshakes, the drain (node id: the
// host name).
pub const DEFAULT_LISTEN: &str = "0.0.0.0:6080";
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9100";
/// Concurrent sessions one node serves (a connection takes one when it is admitted).
pub const DEFAULT_MAX_SESSIONS: usize = 10_000;
/// Connections in their handshake (before the upgrade and admission) one node holds,
/// apart from sessions; more are refused with 503.
pub const DEFAULT_MAX_PENDING_CONNECTIONS: usize = 1024;
/// Connections in their handshake from one client address; more are closed at once.
pub const DEFAULT_MAX_PENDING_PER_ADDRESS: usize = 64;
/// How long SIGTERM lets live sessions run before closing them with 1001.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections start with no PROXY protocol header (the peer is the client).
pub const DEFAULT_PROXY_PROTOCOL: bool = false;

// Each session's limits and timers.
/// Time a connection has from accept to a finished upgrade: HTTP request, token,
/// Redis lookup and upstream connect together. Bounds slowloris clients.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time to open the TCP connection to the container's VNC server.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A session with no bytes either way for this long ends with 4001.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// No session lasts longer than this (4002).
pub const DEFAULT_MAX_SESSION_DURATION: Duration = Duration::from_secs(12 * 3600);
/// How often the relay pings the browser.
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(20);
/// Pings in a row without a pong before the browser is taken for gone.
pub const DEFAULT_MAX_MISSED_PONGS: u32 = 3;
/// Largest message (all fragments) a browser may send; RFB client messages are small,
/// clipboard text the largest. Bigger ends the session with 1009.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 1 << 20;
/// Bytes read from a socket at once; one such buffer per direction is in flight.
pub const DEFAULT_READ_BUFFER_SIZE: usize = 64 * 1024;

// Redis and the registry across nodes (key prefix: `vnc_shared::schema::DEFAULT_PREFIX`;
// per-container and per-user session caps: 0, no cap).
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";
/// Lifetime of this node's registry records in Redis (sessions, node heartbeat,
/// single-use claims); refreshed every third of it, so a dead node's records are gone
/// within it.
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(15);
/// One live session per token (`jti`) across nodes.
pub const DEFAULT_SINGLE_USE_TOKENS: bool = true;
/// One driver per desktop (see [`InputMode`]).
pub const DEFAULT_INPUT: InputMode = InputMode::Lease;

// Recording (off unless `record_dir` is set).
/// Largest recording file; past it the recording stops (marked truncated) and the
/// session goes on.
pub const DEFAULT_RECORD_MAX_BYTES: u64 = 256 << 20;
/// Most bytes of recordings the recording directory holds; the oldest are deleted to
/// make room.
pub const DEFAULT_RECORD_TOTAL_BYTES: u64 = 4 << 30;
/// Smallest `record_max_bytes`: room for the metadata and some records.
pub const MIN_RECORD_MAX_BYTES: u64 = 4096;

// Logging (format: text).
pub const DEFAULT_LOG_LEVEL: &str = "info";

vnc_shared::settings! {
    /// Every setting, as flags/env (clap) and as the TOML file (serde) at once. All
    /// fields are optional here; [`RelaySettings::resolve`] applies defaults and
    /// validates.
    #[derive(Clone, Debug, Default)]
    pub struct RelaySettings {
        /// TOML config file (optional).
        flag config: PathBuf = "VNC_RELAY_CONFIG",

        // This node.
        /// Public listener (WebSocket and socket.io).
        listen: SocketAddr = "VNC_RELAY_LISTEN",
        /// Admin listener: /metrics, /healthz, /readyz.
        admin_listen: SocketAddr = "VNC_RELAY_ADMIN_LISTEN",
        /// This node's id (default: the hostname).
        node_id: String = "VNC_NODE_ID",
        /// Browser origins allowed to connect (`https://app.example.com`); empty allows
        /// any.
        allowed_origins: Vec<String> = "VNC_RELAY_ALLOWED_ORIGINS" (long = "allowed-origin", value_delimiter = ','),
        /// Folder served at `/` (the viewer page); none serves no page.
        web_root: PathBuf = "VNC_RELAY_WEB_ROOT",
        max_sessions: usize = "VNC_RELAY_MAX_SESSIONS",
        /// Connections in their handshake (not yet sessions), in total.
        max_pending_connections: usize = "VNC_RELAY_MAX_PENDING_CONNECTIONS",
        /// Connections in their handshake from one client address.
        max_pending_per_address: usize = "VNC_RELAY_MAX_PENDING_PER_ADDRESS",
        drain_timeout: Duration = "VNC_RELAY_DRAIN_TIMEOUT",
        /// Every connection on the public listener starts with a PROXY protocol v2
        /// header naming the client (`true`/`false`); one without is closed.
        proxy_protocol: bool = "VNC_RELAY_PROXY_PROTOCOL",
        /// Proxies (CIDR ranges) whose `Forwarded` / `X-Forwarded-For` headers name the
        /// client; other peers' headers are ignored.
        trusted_proxies: Vec<IpNet> = "VNC_RELAY_TRUSTED_PROXIES" (long = "trusted-proxy", value_delimiter = ','),

        // Each session.
        handshake_timeout: Duration = "VNC_RELAY_HANDSHAKE_TIMEOUT",
        connect_timeout: Duration = "VNC_RELAY_CONNECT_TIMEOUT",
        idle_timeout: Duration = "VNC_RELAY_IDLE_TIMEOUT",
        max_session_duration: Duration = "VNC_RELAY_MAX_SESSION_DURATION",
        ping_interval: Duration = "VNC_RELAY_PING_INTERVAL",
        max_missed_pongs: u32 = "VNC_RELAY_MAX_MISSED_PONGS",
        max_message_size: usize = "VNC_RELAY_MAX_MESSAGE_SIZE",
        read_buffer_size: usize = "VNC_RELAY_READ_BUFFER_SIZE",

        // Redis and the registry.
        redis_url: String = "VNC_REDIS_URL",
        /// Prefix of every Redis key and channel.
        redis_prefix: String = "VNC_REDIS_PREFIX",
        /// Lifetime of registry records in Redis, refreshed every third of it.
        session_ttl: Duration = "VNC_RELAY_SESSION_TTL",
        /// Live sessions one container may have across all nodes (0: no limit).
        max_sessions_per_container: usize = "VNC_RELAY_MAX_SESSIONS_PER_CONTAINER",
        /// Live sessions one user may have across all nodes (0: no limit).
        max_sessions_per_user: usize = "VNC_RELAY_MAX_SESSIONS_PER_USER",
        /// One live session per token across nodes (`true`/`false`).
        single_use_tokens: bool = "VNC_RELAY_SINGLE_USE_TOKENS",
        /// Who of a desktop's sessions may send input: `lease` (one driver at a time,
        /// across nodes) or `shared` (every `control` session). The same on every node.
        input: InputMode = "VNC_RELAY_INPUT",

        // Tokens.
        /// Token verification key, PEM file; `KID=PATH` or `PATH` (kid = file stem).
        /// Repeat for rotation.
        jwt_public_keys: Vec<String> = "VNC_JWT_PUBLIC_KEYS" (long = "jwt-public-key", value_delimiter = ','),
        /// `eddsa` (default) or `hs256`; HS256 takes `--jwt-secret-file` instead of keys.
        jwt_algorithm: TokenAlgorithm = "VNC_JWT_ALGORITHM",
        /// HS256 shared secret files, `KID=PATH` or `PATH`.
        jwt_secret_files: Vec<String> = "VNC_JWT_SECRET_FILES" (long = "jwt-secret-file", value_delimiter = ','),
        jwt_issuer: String = "VNC_JWT_ISSUER",
        jwt_audience: String = "VNC_JWT_AUDIENCE",

        // TLS.
        /// PEM certificate chain of the public listener; with `tls_key` the listener
        /// speaks only TLS (wss://, https://). Reloaded on SIGHUP.
        tls_cert: PathBuf = "VNC_RELAY_TLS_CERT",
        /// PEM private key of `tls_cert`.
        tls_key: PathBuf = "VNC_RELAY_TLS_KEY",
        /// PEM CA certificates: when set, every browser must present a client
        /// certificate one of them signed (mutual TLS). Reloaded on SIGHUP.
        tls_client_ca: PathBuf = "VNC_RELAY_TLS_CLIENT_CA",

        // Recording.
        /// Record sessions to files in this folder (created if missing); unset records
        /// nothing.
        record_dir: PathBuf = "VNC_RELAY_RECORD_DIR",
        /// Largest recording file, bytes; past it the recording stops, not the session.
        record_max_bytes: u64 = "VNC_RELAY_RECORD_MAX_BYTES",
        /// Most bytes of recordings in record_dir; the oldest are deleted to make room.
        record_total_bytes: u64 = "VNC_RELAY_RECORD_TOTAL_BYTES",
        /// Token scopes (`control`, `view`) whose sessions are always recorded; besides
        /// them, containers whose record says `record`.
        record_scopes: Vec<Scope> = "VNC_RELAY_RECORD_SCOPES" (long = "record-scope", value_delimiter = ','),

        // Logging.
        /// Log filter (`info`, `vnc_relay=debug`); `RUST_LOG` wins when set.
        log_level: String = "VNC_LOG_LEVEL",
        /// `text` or `json`.
        log_format: LogFormat = "VNC_LOG_FORMAT",
    }
}

/// The validated configuration the relay runs with, in sections.
#[derive(Clone, Debug)]
pub struct RelayConfig {
    pub node: NodeConfig,
    pub limits: Limits,
    pub registry: RegistryConfig,
    pub tokens: TokenConfig,
    /// Session recording; `None` (no `record_dir`) records nothing.
    pub recording: Option<RecordingConfig>,
    /// TLS on the public listener.
    pub tls: Option<TlsFiles>,
    pub log_level: String,
    pub log_format: LogFormat,
}

/// This node: its listeners and id, what it serves, and its node-wide bounds.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeConfig {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub id: String,
    pub allowed_origins: Vec<String>,
    pub web_root: Option<PathBuf>,
    /// Sessions at once.
    pub max_sessions: usize,
    /// Connections in their handshake at once, in total and from one address.
    pub max_pending_connections: usize,
    pub max_pending_per_address: usize,
    /// How long a drain lets live sessions run.
    pub drain_timeout: Duration,
    /// The public listener expects a PROXY protocol v2 header on every connection.
    pub proxy_protocol: bool,
    /// Peers whose forwarding headers name the client.
    pub trusted_proxies: Vec<IpNet>,
}

/// Each session's limits and timers.
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    pub handshake_timeout: Duration,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_session_duration: Duration,
    pub ping_interval: Duration,
    pub max_missed_pongs: u32,
    pub max_message_size: usize,
    pub read_buffer_size: usize,
}

/// Redis and what the registry across nodes enforces.
#[derive(Clone, Debug)]
pub struct RegistryConfig {
    pub redis_url: Secret<String>,
    pub redis_prefix: String,
    /// Lifetime of this node's records in Redis.
    pub session_ttl: Duration,
    pub single_use_tokens: bool,
    /// Per-container and per-user session limits across nodes.
    pub session_limits: SessionLimits,
    pub input: InputMode,
}

/// Who of a desktop's sessions may send input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InputMode {
    /// One session at a time: the holder of the driver lease (`{prefix}driver:{cid}`).
    Lease,
    /// Every `control` session.
    Shared,
}

impl std::str::FromStr for InputMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "lease" => Ok(InputMode::Lease),
            "shared" => Ok(InputMode::Shared),
            other => Err(format!("input must be lease or shared, not {other:?}")),
        }
    }
}

/// Session limits across nodes; 0 is no limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionLimits {
    pub per_container: usize,
    pub per_user: usize,
}

/// Where the token verification keys come from, and what a token must say.
#[derive(Clone, Debug)]
pub struct TokenConfig {
    pub keys: KeySource,
    pub policy: VerifyPolicy,
}

/// Where the token verification keys come from.
#[derive(Clone, Debug)]
pub enum KeySource {
    Ed25519PublicKeys(Vec<(String, PathBuf)>),
    Hs256Secrets(Vec<(String, PathBuf)>),
}

/// Where and what the relay records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordingConfig {
    pub dir: PathBuf,
    /// Largest recording file.
    pub max_bytes: u64,
    /// Most bytes of recordings the directory holds.
    pub total_bytes: u64,
    /// Token scopes whose sessions are always recorded.
    pub scopes: Vec<Scope>,
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0)))
}

/// `KID=PATH` or `PATH` (kid = file stem).
fn key_entry(entry: &str) -> (String, PathBuf) {
    match entry.split_once('=') {
        Some((kid, path)) if !kid.is_empty() => (kid.to_owned(), PathBuf::from(path)),
        _ => {
            let path = PathBuf::from(entry);
            (kid_from_path(&path), path)
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "vnc-relay".to_owned())
}

impl RelaySettings {
    /// Lays flags/env over the file (if any), fills defaults and validates.
    pub fn resolve(&self) -> Result<RelayConfig, ConfigError> {
        let settings = match &self.config {
            Some(path) => overlay(self, &load_toml::<RelaySettings>(path)?)?,
            None => self.clone(),
        };
        let config = RelayConfig {
            tokens: settings.tokens(),
            tls: TlsFiles::from_settings(
                settings.tls_cert,
                settings.tls_key,
                settings.tls_client_ca,
            )
            .map_err(|e| ConfigError::Invalid(e.into()))?,
            node: NodeConfig {
                listen: settings.listen.unwrap_or(addr(DEFAULT_LISTEN)),
                admin_listen: settings.admin_listen.unwrap_or(addr(DEFAULT_ADMIN_LISTEN)),
                id: settings.node_id.unwrap_or_else(hostname),
                allowed_origins: settings.allowed_origins.unwrap_or_default(),
                web_root: settings.web_root,
                max_sessions: settings.max_sessions.unwrap_or(DEFAULT_MAX_SESSIONS),
                max_pending_connections: settings
                    .max_pending_connections
                    .unwrap_or(DEFAULT_MAX_PENDING_CONNECTIONS),
                max_pending_per_address: settings
                    .max_pending_per_address
                    .unwrap_or(DEFAULT_MAX_PENDING_PER_ADDRESS),
                drain_timeout: settings.drain_timeout.unwrap_or(DEFAULT_DRAIN_TIMEOUT),
                proxy_protocol: settings.proxy_protocol.unwrap_or(DEFAULT_PROXY_PROTOCOL),
                trusted_proxies: settings.trusted_proxies.unwrap_or_default(),
            },
            limits: Limits {
                handshake_timeout: settings
                    .handshake_timeout
                    .unwrap_or(DEFAULT_HANDSHAKE_TIMEOUT),
                connect_timeout: settings.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT),
                idle_timeout: settings.idle_timeout.unwrap_or(DEFAULT_IDLE_TIMEOUT),
                max_session_duration: settings
                    .max_session_duration
                    .unwrap_or(DEFAULT_MAX_SESSION_DURATION),
                ping_interval: settings.ping_interval.unwrap_or(DEFAULT_PING_INTERVAL),
                max_missed_pongs: settings
                    .max_missed_pongs
                    .unwrap_or(DEFAULT_MAX_MISSED_PONGS),
                max_message_size: settings
                    .max_message_size
                    .unwrap_or(DEFAULT_MAX_MESSAGE_SIZE),
                read_buffer_size: settings
                    .read_buffer_size
                    .unwrap_or(DEFAULT_READ_BUFFER_SIZE),
            },
            registry: RegistryConfig {
                redis_url: Secret::new(settings.redis_url.unwrap_or(DEFAULT_REDIS_URL.into())),
                redis_prefix: settings.redis_prefix.unwrap_or(DEFAULT_PREFIX.into()),
                session_ttl: settings.session_ttl.unwrap_or(DEFAULT_SESSION_TTL),
                single_use_tokens: settings
                    .single_use_tokens
                    .unwrap_or(DEFAULT_SINGLE_USE_TOKENS),
                session_limits: SessionLimits {
                    per_container: settings.max_sessions_per_container.unwrap_or(0),
                    per_user: settings.max_sessions_per_user.unwrap_or(0),
                },
                input: settings.input.unwrap_or(DEFAULT_INPUT),
            },
            recording: settings.record_dir.map(|dir| RecordingConfig {
                dir,
                max_bytes: settings
                    .record_max_bytes
                    .unwrap_or(DEFAULT_RECORD_MAX_BYTES),
                total_bytes: settings
                    .record_total_bytes
                    .unwrap_or(DEFAULT_RECORD_TOTAL_BYTES),
                scopes: settings.record_scopes.unwrap_or_default(),
            }),
            log_level: settings.log_level.unwrap_or(DEFAULT_LOG_LEVEL.into()),
            log_format: settings.log_format.unwrap_or_default(),
        };
        config.validate()?;
        Ok(config)
    }

    /// The key source and policy the token settings name.
    fn tokens(&self) -> TokenConfig {
        let entries = |v: &Option<Vec<String>>| -> Vec<(String, PathBuf)> {
            v.iter()
                .flatten()
                .filter(|e| !e.is_empty())
                .map(|e| key_entry(e))
                .collect()
        };
        let keys = match self.jwt_algorithm.unwrap_or(TokenAlgorithm::EdDsa) {
            TokenAlgorithm::EdDsa => KeySource::Ed25519PublicKeys(entries(&self.jwt_public_keys)),
            TokenAlgorithm::Hs256 => KeySource::Hs256Secrets(entries(&self.jwt_secret_files)),
        };
        TokenConfig {
            keys,
            policy: VerifyPolicy {
                issuer: self.jwt_issuer.clone().unwrap_or(DEFAULT_ISSUER.into()),
                audience: self.jwt_audience.clone().unwrap_or(DEFAULT_AUDIENCE.into()),
                leeway: MAX_LEEWAY,
            },
        }
    }
}

impl RelayConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let (n, l, r) = (&self.node, &self.limits, &self.registry);
        let redis_url = vnc_shared::redis::url_problem(r.redis_url.expose());
        let problems: Vec<&str> = [
            (n.max_sessions == 0, "max_sessions must be at least 1"),
            (
                n.max_pending_connections == 0 || n.max_pending_per_address == 0,
                "max_pending_connections and max_pending_per_address must be at least 1",
            ),
            (
                l.read_buffer_size < 1024 || l.read_buffer_size > 16 << 20,
                "read_buffer_size must be between 1 KiB and 16 MiB",
            ),
            (
                l.max_message_size == 0,
                "max_message_size must be at least 1",
            ),
            (
                l.max_missed_pongs == 0,
                "max_missed_pongs must be at least 1",
            ),
            (l.ping_interval.is_zero(), "ping_interval must be positive"),
            (l.idle_timeout.is_zero(), "idle_timeout must be positive"),
            (
                l.handshake_timeout.is_zero() || l.connect_timeout.is_zero(),
                "handshake_timeout and connect_timeout must be positive",
            ),
            (redis_url.is_some(), redis_url.unwrap_or_default()),
            (n.id.is_empty(), "node_id must not be empty"),
            (
                r.session_ttl < Duration::from_secs(3),
                "session_ttl must be at least 3s",
            ),
        ]
        .into_iter()
        .filter_map(|(bad, msg)| bad.then_some(msg))
        .collect();
        let keys_missing = match &self.tokens.keys {
            KeySource::Ed25519PublicKeys(k) | KeySource::Hs256Secrets(k) => k.is_empty(),
        };
        let mut problems: Vec<String> = problems.into_iter().map(str::to_owned).collect();
        if let Some(r) = &self.recording {
            if r.dir.as_os_str().is_empty() {
                problems.push("record_dir must not be empty".into());
            }
            if r.max_bytes < MIN_RECORD_MAX_BYTES {
                problems.push(format!(
                    "record_max_bytes must be at least {MIN_RECORD_MAX_BYTES}"
                ));
            }
            if r.total_bytes < r.max_bytes {
                problems.push("record_total_bytes must be at least record_max_bytes".into());
            }
        }
        if keys_missing {
            problems.push(
                "no token keys: set --jwt-public-key (or --jwt-secret-file with --jwt-algorithm hs256)"
                    .into(),
            );
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems.join("; ")))
        }
    }

    /// Loads the verification key set the config names.
    pub fn load_keys(&self) -> Result<KeySet, KeyError> {
        match &self.tokens.keys {
            KeySource::Ed25519PublicKeys(files) => KeySet::ed25519_from_pem_files(
                files.iter().map(|(kid, p)| (kid.clone(), p.as_path())),
                &self.tokens.policy,
            ),
            KeySource::Hs256Secrets(files) => {
                let mut secrets = Vec::new();
                for (kid, path) in files {
                    secrets.push((kid.clone(), read_hs256_secret(path)?));
                }
                KeySet::hs256(secrets, &self.tokens.policy)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        settings: RelaySettings,
    }

    #[test]
    fn flags_beat_the_file_and_defaults_fill_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("relay.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:7000\"\nidle_timeout = \"90s\"\njwt_public_keys = [\"main=/k/a.pem\"]\n",
        )
        .unwrap();
        let cli = Cli::parse_from([
            "vnc-relay",
            "--config",
            file.to_str().unwrap(),
            "--listen",
            "127.0.0.1:7001",
        ]);
        let c = cli.settings.resolve().unwrap();
        assert_eq!(c.node.listen, addr("127.0.0.1:7001"));
        assert_eq!(c.limits.idle_timeout, Duration::from_secs(90));
        assert_eq!(c.limits.ping_interval, DEFAULT_PING_INTERVAL);
        match &c.tokens.keys {
            KeySource::Ed25519PublicKeys(k) => {
                assert_eq!(k, &[("main".to_owned(), PathBuf::from("/k/a.pem"))])
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn refuses_to_start_without_keys_and_names_each_problem() {
        let cli = Cli::parse_from(["vnc-relay", "--max-sessions", "0"]);
        let err = cli.settings.resolve().unwrap_err().to_string();
        assert!(err.contains("max_sessions"), "{err}");
        assert!(err.contains("no token keys"), "{err}");
    }

    #[test]
    fn kid_defaults_to_the_file_stem() {
        assert_eq!(
            key_entry("/etc/vnc/2026-11.pub.pem"),
            (
                "2026-11".to_owned(),
                PathBuf::from("/etc/vnc/2026-11.pub.pem")
            )
        );
    }

    #[test]
    fn recording_is_off_unless_a_directory_is_set() {
        let c = Cli::parse_from(["vnc-relay", "--jwt-public-key", "k.pem"])
            .settings
            .resolve()
            .unwrap();
        assert_eq!(c.recording, None);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("relay.toml");
        std::fs::write(
            &file,
            "record_dir = \"/var/lib/vnc-relay/recordings\"\nrecord_scopes = [\"view\"]\n",
        )
        .unwrap();
        let cli = Cli::parse_from([
            "vnc-relay",
            "--config",
            file.to_str().unwrap(),
            "--jwt-public-key",
            "k.pem",
            "--record-max-bytes",
            "100000",
        ]);
        let r = cli.settings.resolve().unwrap().recording.unwrap();
        assert_eq!(
            r,
            RecordingConfig {
                dir: PathBuf::from("/var/lib/vnc-relay/recordings"),
                max_bytes: 100_000,
                total_bytes: DEFAULT_RECORD_TOTAL_BYTES,
                scopes: vec![Scope::View],
            }
        );
        let bad = Cli::parse_from([
            "vnc-relay",
            "--jwt-public-key",
            "k.pem",
            "--record-dir",
            "/tmp/r",
            "--record-max-bytes",
            "100",
            "--record-total-bytes",
            "50",
            "--record-scope",
            "control,view",
        ]);
        let err = bad.settings.resolve().unwrap_err().to_string();
        assert!(err.contains("record_max_bytes must be at least"), "{err}");
        assert!(err.contains("record_total_bytes must be at least"), "{err}");
    }

    #[test]
    fn the_redis_url_is_masked_in_debug() {
        let cli = Cli::parse_from([
            "vnc-relay",
            "--jwt-public-key",
            "k.pem",
            "--redis-url",
            "redis://:hunter2@127.0.0.1:6379",
        ]);
        let c = cli.settings.resolve().unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn a_sentinel_url_is_taken_and_another_scheme_refused() {
        let resolve = |url: &str| {
            Cli::parse_from(["vnc-relay", "--jwt-public-key", "k.pem", "--redis-url", url])
                .settings
                .resolve()
        };
        let sentinel =
            "redis-sentinel://:hunter2@10.0.0.1:26379?node=10.0.0.2:26379&sentinelServiceName=vnc";
        assert_eq!(
            resolve(sentinel).unwrap().registry.redis_url.expose(),
            sentinel
        );
        let err = resolve("http://:hunter2@10.0.0.1:6379")
            .unwrap_err()
            .to_string();
        assert!(err.contains("redis_url must start with redis://"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }
}
