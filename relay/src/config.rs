//! The relay's settings: one struct read from flags, env and the TOML file (flags beat
//! env beat file beat the `DEFAULT_*` constants), validated into a [`RelayConfig`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use vnc_shared::config::{ConfigError, Secret, load_toml, opt_duration, overlay, parse_duration};
use vnc_shared::schema::DEFAULT_PREFIX;
use vnc_shared::telemetry::LogFormat;
use vnc_shared::tls::TlsFiles;

use crate::node::store::SessionLimits;
use crate::recording::RecordingConfig;
use vnc_shared::token::{
    DEFAULT_AUDIENCE, DEFAULT_ISSUER, KeyError, KeySet, MAX_LEEWAY, Scope, TokenAlgorithm,
    VerifyPolicy, kid_from_path, read_hs256_secret,
};

pub const DEFAULT_LISTEN: &str = "0.0.0.0:6080";
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9100";
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";
/// Concurrent sessions one node serves (a connection takes one when it is admitted).
pub const DEFAULT_MAX_SESSIONS: usize = 10_000;
/// Connections in their handshake (before the upgrade and admission) one node holds,
/// apart from sessions; more are refused with 503.
pub const DEFAULT_MAX_PENDING_CONNECTIONS: usize = 1024;
/// Connections in their handshake from one client address; more are closed at once.
pub const DEFAULT_MAX_PENDING_PER_ADDRESS: usize = 64;
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
/// How long SIGTERM lets live sessions run before closing them with 1001.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_LOG_LEVEL: &str = "info";
/// Lifetime of this node's registry records in Redis (sessions, node heartbeat,
/// single-use claims); refreshed every third of it, so a dead node's records are gone
/// within it.
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(15);
/// One live session per token (`jti`) across nodes.
pub const DEFAULT_SINGLE_USE_TOKENS: bool = true;
/// Largest recording file; past it the recording stops (marked truncated) and the
/// session goes on.
pub const DEFAULT_RECORD_MAX_BYTES: u64 = 256 << 20;
/// Most bytes of recordings the recording directory holds; the oldest are deleted to
/// make room.
pub const DEFAULT_RECORD_TOTAL_BYTES: u64 = 4 << 30;
/// Smallest `record_max_bytes`: room for the metadata and some records.
pub const MIN_RECORD_MAX_BYTES: u64 = 4096;

/// Every setting, as flags/env (clap) and as the TOML file (serde) at once. All fields
/// are optional here; [`RelaySettings::resolve`] applies defaults and validates.
#[derive(Clone, Debug, Default, clap::Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelaySettings {
    /// TOML config file (optional).
    #[arg(long, env = "VNC_RELAY_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Public listener (WebSocket and socket.io).
    #[arg(long, env = "VNC_RELAY_LISTEN")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// Admin listener: /metrics, /healthz, /readyz.
    #[arg(long, env = "VNC_RELAY_ADMIN_LISTEN")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_listen: Option<SocketAddr>,
    #[arg(long, env = "VNC_REDIS_URL")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_url: Option<String>,
    /// Prefix of every Redis key and channel.
    #[arg(long, env = "VNC_REDIS_PREFIX")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_prefix: Option<String>,
    /// Token verification key, PEM file; `KID=PATH` or `PATH` (kid = file stem). Repeat
    /// for rotation.
    #[arg(
        long = "jwt-public-key",
        env = "VNC_JWT_PUBLIC_KEYS",
        value_delimiter = ','
    )]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt_public_keys: Option<Vec<String>>,
    /// `eddsa` (default) or `hs256`; HS256 takes `--jwt-secret-file` instead of keys.
    #[arg(long, env = "VNC_JWT_ALGORITHM")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt_algorithm: Option<TokenAlgorithm>,
    /// HS256 shared secret files, `KID=PATH` or `PATH`.
    #[arg(
        long = "jwt-secret-file",
        env = "VNC_JWT_SECRET_FILES",
        value_delimiter = ','
    )]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt_secret_files: Option<Vec<String>>,
    #[arg(long, env = "VNC_JWT_ISSUER")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt_issuer: Option<String>,
    #[arg(long, env = "VNC_JWT_AUDIENCE")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt_audience: Option<String>,
    /// This node's id (default: the hostname).
    #[arg(long, env = "VNC_NODE_ID")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    /// Browser origins allowed to connect (`https://app.example.com`); empty allows any.
    #[arg(
        long = "allowed-origin",
        env = "VNC_RELAY_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_origins: Option<Vec<String>>,
    #[arg(long, env = "VNC_RELAY_MAX_SESSIONS")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_sessions: Option<usize>,
    /// Connections in their handshake (not yet sessions), in total.
    #[arg(long, env = "VNC_RELAY_MAX_PENDING_CONNECTIONS")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pending_connections: Option<usize>,
    /// Connections in their handshake from one client address.
    #[arg(long, env = "VNC_RELAY_MAX_PENDING_PER_ADDRESS")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pending_per_address: Option<usize>,
    #[arg(long, env = "VNC_RELAY_HANDSHAKE_TIMEOUT", value_parser = parse_duration)]
    #[serde(
        default,
        with = "opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub handshake_timeout: Option<Duration>,
    #[arg(long, env = "VNC_RELAY_CONNECT_TIMEOUT", value_parser = parse_duration)]
    #[serde(
        default,
        with = "opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub connect_timeout: Option<Duration>,
    #[arg(long, env = "VNC_RELAY_IDLE_TIMEOUT", value_parser = parse_duration)]
    #[serde(
        default,
        with = "opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub idle_timeout: Option<Duration>,
    #[arg(long, env = "VNC_RELAY_MAX_SESSION_DURATION", value_parser = parse_duration)]
    #[serde(
        default,
        with = "opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_session_duration: Option<Duration>,
    #[arg(long, env = "VNC_RELAY_PING_INTERVAL", value_parser = parse_duration)]
    #[serde(
        default,
        with = "opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub ping_interval: Option<Duration>,
    #[arg(long, env = "VNC_RELAY_MAX_MISSED_PONGS")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_missed_pongs: Option<u32>,
    #[arg(long, env = "VNC_RELAY_MAX_MESSAGE_SIZE")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_message_size: Option<usize>,
    #[arg(long, env = "VNC_RELAY_READ_BUFFER_SIZE")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_buffer_size: Option<usize>,
    #[arg(long, env = "VNC_RELAY_DRAIN_TIMEOUT", value_parser = parse_duration)]
    #[serde(
        default,
        with = "opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub drain_timeout: Option<Duration>,
    /// Lifetime of registry records in Redis, refreshed every third of it.
    #[arg(long, env = "VNC_RELAY_SESSION_TTL", value_parser = parse_duration)]
    #[serde(
        default,
        with = "opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub session_ttl: Option<Duration>,
    /// Live sessions one container may have across all nodes (0: no limit).
    #[arg(long, env = "VNC_RELAY_MAX_SESSIONS_PER_CONTAINER")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_sessions_per_container: Option<usize>,
    /// Live sessions one user may have across all nodes (0: no limit).
    #[arg(long, env = "VNC_RELAY_MAX_SESSIONS_PER_USER")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_sessions_per_user: Option<usize>,
    /// One live session per token across nodes (`true`/`false`).
    #[arg(long, env = "VNC_RELAY_SINGLE_USE_TOKENS")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub single_use_tokens: Option<bool>,
    /// PEM certificate chain of the public listener; with `tls_key` the listener speaks
    /// only TLS (wss://, https://). Reloaded on SIGHUP.
    #[arg(long, env = "VNC_RELAY_TLS_CERT")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    #[arg(long, env = "VNC_RELAY_TLS_KEY")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// Record sessions to files in this folder (created if missing); unset records
    /// nothing.
    #[arg(long, env = "VNC_RELAY_RECORD_DIR")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_dir: Option<PathBuf>,
    /// Largest recording file, bytes; past it the recording stops, not the session.
    #[arg(long, env = "VNC_RELAY_RECORD_MAX_BYTES")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_max_bytes: Option<u64>,
    /// Most bytes of recordings in record_dir; the oldest are deleted to make room.
    #[arg(long, env = "VNC_RELAY_RECORD_TOTAL_BYTES")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_total_bytes: Option<u64>,
    /// Token scopes (`control`, `view`) whose sessions are always recorded; besides
    /// them, containers whose record says `record`.
    #[arg(
        long = "record-scope",
        env = "VNC_RELAY_RECORD_SCOPES",
        value_delimiter = ','
    )]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_scopes: Option<Vec<Scope>>,
    /// Folder served at `/` (the viewer page); none serves no page.
    #[arg(long, env = "VNC_RELAY_WEB_ROOT")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web_root: Option<PathBuf>,
    /// Log filter (`info`, `vnc_relay=debug`); `RUST_LOG` wins when set.
    #[arg(long, env = "VNC_LOG_LEVEL")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_level: Option<String>,
    /// `text` or `json`.
    #[arg(long, env = "VNC_LOG_FORMAT")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
}

/// Per-session limits and timers.
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_sessions: usize,
    pub max_pending_connections: usize,
    pub max_pending_per_address: usize,
    pub handshake_timeout: Duration,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_session_duration: Duration,
    pub ping_interval: Duration,
    pub max_missed_pongs: u32,
    pub max_message_size: usize,
    pub read_buffer_size: usize,
    pub drain_timeout: Duration,
}

/// Where the token verification keys come from.
#[derive(Clone, Debug)]
pub enum KeySource {
    Ed25519PublicKeys(Vec<(String, PathBuf)>),
    Hs256Secrets(Vec<(String, PathBuf)>),
}

/// The validated configuration `run` takes.
#[derive(Clone, Debug)]
pub struct RelayConfig {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub redis_url: Secret<String>,
    pub redis_prefix: String,
    pub keys: KeySource,
    pub policy: VerifyPolicy,
    pub node_id: String,
    pub allowed_origins: Vec<String>,
    pub limits: Limits,
    pub session_ttl: Duration,
    pub single_use_tokens: bool,
    /// Per-container and per-user session limits across nodes.
    pub session_limits: SessionLimits,
    pub web_root: Option<PathBuf>,
    /// TLS on the public listener.
    pub tls: Option<TlsFiles>,
    /// Session recording; `None` (no `record_dir`) records nothing.
    pub recording: Option<RecordingConfig>,
    pub log_level: String,
    pub log_format: LogFormat,
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
        let s = match &self.config {
            Some(path) => overlay(self, &load_toml::<RelaySettings>(path)?)?,
            None => self.clone(),
        };
        let algorithm = s.jwt_algorithm.unwrap_or(TokenAlgorithm::EdDsa);
        let entries = |v: &Option<Vec<String>>| -> Vec<(String, PathBuf)> {
            v.iter()
                .flatten()
                .filter(|e| !e.is_empty())
                .map(|e| key_entry(e))
                .collect()
        };
        let keys = match algorithm {
            TokenAlgorithm::EdDsa => KeySource::Ed25519PublicKeys(entries(&s.jwt_public_keys)),
            TokenAlgorithm::Hs256 => KeySource::Hs256Secrets(entries(&s.jwt_secret_files)),
        };
        let limits = Limits {
            max_sessions: s.max_sessions.unwrap_or(DEFAULT_MAX_SESSIONS),
            max_pending_connections: s
                .max_pending_connections
                .unwrap_or(DEFAULT_MAX_PENDING_CONNECTIONS),
            max_pending_per_address: s
                .max_pending_per_address
                .unwrap_or(DEFAULT_MAX_PENDING_PER_ADDRESS),
            handshake_timeout: s.handshake_timeout.unwrap_or(DEFAULT_HANDSHAKE_TIMEOUT),
            connect_timeout: s.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT),
            idle_timeout: s.idle_timeout.unwrap_or(DEFAULT_IDLE_TIMEOUT),
            max_session_duration: s
                .max_session_duration
                .unwrap_or(DEFAULT_MAX_SESSION_DURATION),
            ping_interval: s.ping_interval.unwrap_or(DEFAULT_PING_INTERVAL),
            max_missed_pongs: s.max_missed_pongs.unwrap_or(DEFAULT_MAX_MISSED_PONGS),
            max_message_size: s.max_message_size.unwrap_or(DEFAULT_MAX_MESSAGE_SIZE),
            read_buffer_size: s.read_buffer_size.unwrap_or(DEFAULT_READ_BUFFER_SIZE),
            drain_timeout: s.drain_timeout.unwrap_or(DEFAULT_DRAIN_TIMEOUT),
        };
        let tls = TlsFiles::from_settings(s.tls_cert, s.tls_key, None)
            .map_err(|e| ConfigError::Invalid(e.into()))?;
        let config = RelayConfig {
            listen: s.listen.unwrap_or(addr(DEFAULT_LISTEN)),
            admin_listen: s.admin_listen.unwrap_or(addr(DEFAULT_ADMIN_LISTEN)),
            redis_url: Secret::new(s.redis_url.unwrap_or(DEFAULT_REDIS_URL.into())),
            redis_prefix: s.redis_prefix.unwrap_or(DEFAULT_PREFIX.into()),
            keys,
            policy: VerifyPolicy {
                issuer: s.jwt_issuer.unwrap_or(DEFAULT_ISSUER.into()),
                audience: s.jwt_audience.unwrap_or(DEFAULT_AUDIENCE.into()),
                leeway: MAX_LEEWAY,
            },
            node_id: s.node_id.unwrap_or_else(hostname),
            allowed_origins: s.allowed_origins.unwrap_or_default(),
            limits,
            session_ttl: s.session_ttl.unwrap_or(DEFAULT_SESSION_TTL),
            single_use_tokens: s.single_use_tokens.unwrap_or(DEFAULT_SINGLE_USE_TOKENS),
            session_limits: SessionLimits {
                per_container: s.max_sessions_per_container.unwrap_or(0),
                per_user: s.max_sessions_per_user.unwrap_or(0),
            },
            web_root: s.web_root,
            tls,
            recording: s.record_dir.map(|dir| RecordingConfig {
                dir,
                max_bytes: s.record_max_bytes.unwrap_or(DEFAULT_RECORD_MAX_BYTES),
                total_bytes: s.record_total_bytes.unwrap_or(DEFAULT_RECORD_TOTAL_BYTES),
                scopes: s.record_scopes.unwrap_or_default(),
            }),
            log_level: s.log_level.unwrap_or(DEFAULT_LOG_LEVEL.into()),
            log_format: s.log_format.unwrap_or_default(),
        };
        config.validate()?;
        Ok(config)
    }
}

impl RelayConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        let problems: Vec<&str> = [
            (l.max_sessions == 0, "max_sessions must be at least 1"),
            (
                l.max_pending_connections == 0 || l.max_pending_per_address == 0,
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
            (
                !self.redis_url.expose().starts_with("redis://")
                    && !self.redis_url.expose().starts_with("rediss://"),
                "redis_url must start with redis:// or rediss://",
            ),
            (self.node_id.is_empty(), "node_id must not be empty"),
            (
                self.session_ttl < Duration::from_secs(3),
                "session_ttl must be at least 3s",
            ),
        ]
        .into_iter()
        .filter_map(|(bad, msg)| bad.then_some(msg))
        .collect();
        let keys_missing = match &self.keys {
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
        match &self.keys {
            KeySource::Ed25519PublicKeys(files) => KeySet::ed25519_from_pem_files(
                files.iter().map(|(kid, p)| (kid.clone(), p.as_path())),
                &self.policy,
            ),
            KeySource::Hs256Secrets(files) => {
                let mut secrets = Vec::new();
                for (kid, path) in files {
                    secrets.push((kid.clone(), read_hs256_secret(path)?));
                }
                KeySet::hs256(secrets, &self.policy)
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
        assert_eq!(c.listen, addr("127.0.0.1:7001"));
        assert_eq!(c.limits.idle_timeout, Duration::from_secs(90));
        assert_eq!(c.limits.ping_interval, DEFAULT_PING_INTERVAL);
        match &c.keys {
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
}
