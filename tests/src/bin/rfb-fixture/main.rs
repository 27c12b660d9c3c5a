//! `rfb-fixture`: a small but real RFB (RFC 6143) server for end-to-end tests of the relay.
//!
//! It offers protocol 3.3, 3.7 or 3.8, security None or VNC Authentication, answers
//! framebuffer update requests with Raw rectangles of a framebuffer whose bottom half
//! changes over time, answers SetDesktopSize with an ExtendedDesktopSize rectangle like
//! a real server (ok within bounds, invalid layout above them; see `session.rs`), and
//! logs every event and client message as one JSON line. With `--flood` it pushes
//! full-screen updates as fast as the peer reads them instead.
//!
//! The binary is pure Rust with no runtime file needs, so it runs in a scratch image.
//! After binding it prints `LISTENING <ip:port>` on stdout: tests read that line to learn
//! the port.
//!
//! In a container it follows the desktop image contract of the control plane
//! (`vnc_control::infra::runtime`): without `--listen` it listens on
//! `$VNC_LISTEN_HOST:$VNC_PORT` (host default `0.0.0.0`) when `VNC_PORT` is set, and
//! without `--auth` it requires VNC authentication with `$VNC_PASSWORD` when that is set.
//!
//! With `--probe IP:PORT` it serves nothing: it opens one TCP connection and exits 0 if
//! it was accepted, 1 if not, so a test can `docker exec` it in a scratch container to
//! learn what that container can reach.

#![forbid(unsafe_code)]

mod auth;
mod event_log;
mod framebuffer;
mod handshake;
mod pixel;
mod session;

#[cfg(test)]
mod e2e_tests;

use std::fmt;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Parser, ValueEnum};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::event_log::EventLog;
use crate::framebuffer::Framebuffer;

/// Largest framebuffer side we accept: bounds the work and bytes of one full update
/// (4096 × 4096 × 4 bytes = 64 MiB on the wire, written in bounded chunks).
pub const MAX_SIDE: u16 = 4096;

/// How long to wait before accepting again after an accept error (EMFILE and friends).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Protocol version the server offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum Version {
    #[value(name = "3.3")]
    V3_3,
    #[value(name = "3.7")]
    V3_7,
    #[value(name = "3.8")]
    V3_8,
}

impl Version {
    /// The 12-byte ProtocolVersion message for this version.
    pub fn banner(self) -> &'static [u8; 12] {
        match self {
            Version::V3_3 => b"RFB 003.003\n",
            Version::V3_7 => b"RFB 003.007\n",
            Version::V3_8 => b"RFB 003.008\n",
        }
    }

    /// Short form used in logs and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V3_3 => "3.3",
            Version::V3_7 => "3.7",
            Version::V3_8 => "3.8",
        }
    }
}

/// Security type the server offers (exactly one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AuthKind {
    /// Security type 1.
    None,
    /// Security type 2, VNC Authentication (DES challenge/response).
    Vnc,
}

#[derive(Parser)]
#[command(
    name = "rfb-fixture",
    about = "RFB (VNC) fixture server for end-to-end tests"
)]
struct Cli {
    /// Address to listen on; port 0 picks a free port (printed as `LISTENING ip:port`).
    /// Default: `$VNC_LISTEN_HOST:$VNC_PORT` (host `0.0.0.0`) if `VNC_PORT` is set, else
    /// `127.0.0.1:0`.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Protocol version the server offers; clients may pick a lower one.
    #[arg(long, value_enum, default_value = "3.8")]
    version: Version,
    /// Security type the server offers. Default: `vnc` if `VNC_PASSWORD` is set, else
    /// `none`.
    #[arg(long, value_enum)]
    auth: Option<AuthKind>,
    /// Password for `--auth vnc` (VNC uses at most the first 8 bytes); `VNC_PASSWORD`
    /// is the fallback.
    #[arg(long, env = "RFB_FIXTURE_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// Framebuffer width in pixels.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=MAX_SIDE as i64))]
    width: u16,
    /// Framebuffer height in pixels.
    #[arg(long, default_value_t = 48, value_parser = clap::value_parser!(u16).range(1..=MAX_SIDE as i64))]
    height: u16,
    /// Desktop name sent in ServerInit.
    #[arg(long, default_value = "rfb-fixture")]
    name: String,
    /// Base colour of the top half of the framebuffer, as RRGGBB hex.
    #[arg(long, default_value = "ff0000", value_parser = parse_color)]
    color: [u8; 3],
    /// Write JSON-lines logs to this file (appending) instead of stderr.
    #[arg(long)]
    log: Option<std::path::PathBuf>,
    /// Send full-screen updates back to back without waiting for requests.
    #[arg(long)]
    flood: bool,
    /// Answer each ClientCutText with a ServerCutText of the same text, in order with
    /// the updates (a server whose clipboard now holds it tells its clients).
    #[arg(long)]
    echo_clipboard: bool,
    /// Wait this long before listening: a desktop whose VNC server comes up slowly.
    #[arg(long, default_value_t = 0)]
    start_delay_ms: u64,
    /// How often the framebuffer content changes, in milliseconds.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    update_interval_ms: u64,
    /// Serve nothing: connect to this address, exit 0 if the connection is accepted
    /// within `--probe-timeout-ms`, 1 if not.
    #[arg(long, value_name = "IP:PORT")]
    probe: Option<SocketAddr>,
    /// Bound of a `--probe` connect, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    probe_timeout_ms: u64,
}

/// Parses `RRGGBB` (an optional leading `#` is allowed).
fn parse_color(s: &str) -> Result<[u8; 3], String> {
    let hex = s.strip_prefix('#').unwrap_or(s);
    if hex.len() != 6 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("expected RRGGBB hex, got {s:?}"));
    }
    let byte = |i: usize| u8::from_str_radix(&hex[i..i + 2], 16).map_err(|e| e.to_string());
    Ok([byte(0)?, byte(2)?, byte(4)?])
}

/// Everything a connection needs to know about the server; shared read-only.
pub struct Config {
    pub version: Version,
    pub auth: AuthKind,
    /// VNC password; required when `auth` is `Vnc`. Never logged.
    pub password: Option<String>,
    pub framebuffer: Framebuffer,
    pub name: String,
    pub flood: bool,
    pub echo_clipboard: bool,
    pub update_interval: Duration,
}

// Hand-written so the password never reaches a log or panic message.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("version", &self.version)
            .field("auth", &self.auth)
            .field("password", &self.password.as_ref().map(|_| "MASKED"))
            .field("framebuffer", &self.framebuffer)
            .field("name", &self.name)
            .field("flood", &self.flood)
            .field("echo_clipboard", &self.echo_clipboard)
            .field("update_interval", &self.update_interval)
            .finish()
    }
}

/// Default listen address outside a container.
const DEFAULT_LISTEN: &str = "127.0.0.1:0";

/// Listen host when only `VNC_PORT` is given: the container image contract says
/// `0.0.0.0`, so the server is reachable on the container's own address.
const DEFAULT_CONTAINER_HOST: &str = "0.0.0.0";

/// The container image contract's environment (see the module docs).
#[derive(Default)]
struct ImageEnv {
    /// `VNC_PORT`.
    port: Option<String>,
    /// `VNC_LISTEN_HOST`.
    host: Option<String>,
    /// `VNC_PASSWORD`.
    password: Option<String>,
}

impl ImageEnv {
    fn from_process() -> Self {
        // Empty values count as unset, as `docker run -e VNC_PASSWORD=` would give.
        let var = |name| std::env::var(name).ok().filter(|v: &String| !v.is_empty());
        ImageEnv {
            port: var("VNC_PORT"),
            host: var("VNC_LISTEN_HOST"),
            password: var("VNC_PASSWORD"),
        }
    }
}

/// Flags beat the image environment, which beats the defaults.
fn listen_addr(cli: &Cli, env: &ImageEnv) -> anyhow::Result<SocketAddr> {
    if let Some(addr) = cli.listen {
        return Ok(addr);
    }
    let Some(port) = &env.port else {
        return Ok(DEFAULT_LISTEN.parse()?);
    };
    let port: u16 = port
        .parse()
        .with_context(|| format!("VNC_PORT={port:?} is not a port number"))?;
    let host = env.host.as_deref().unwrap_or(DEFAULT_CONTAINER_HOST);
    let ip: std::net::IpAddr = host
        .parse()
        .with_context(|| format!("VNC_LISTEN_HOST={host:?} is not an IP address"))?;
    Ok(SocketAddr::new(ip, port))
}

impl Config {
    fn from_cli(cli: &Cli, env: &ImageEnv) -> anyhow::Result<Self> {
        let password = cli.password.clone().or_else(|| env.password.clone());
        let auth = match cli.auth {
            Some(auth) => auth,
            None if env.password.is_some() => AuthKind::Vnc,
            None => AuthKind::None,
        };
        if auth == AuthKind::Vnc && password.is_none() {
            bail!("--auth vnc needs --password, RFB_FIXTURE_PASSWORD or VNC_PASSWORD");
        }
        Ok(Config {
            version: cli.version,
            auth,
            password,
            framebuffer: Framebuffer::new(cli.width, cli.height, cli.color),
            name: cli.name.clone(),
            flood: cli.flood,
            echo_clipboard: cli.echo_clipboard,
            update_interval: Duration::from_millis(cli.update_interval_ms),
        })
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(target) = cli.probe {
        return probe(target, Duration::from_millis(cli.probe_timeout_ms)).await;
    }
    let env = ImageEnv::from_process();
    let config = Config::from_cli(&cli, &env)?;
    let listen = listen_addr(&cli, &env)?;
    let log = match &cli.log {
        Some(path) => {
            EventLog::file(path).with_context(|| format!("open log {}", path.display()))?
        }
        None => EventLog::stderr(),
    };
    tokio::time::sleep(std::time::Duration::from_millis(cli.start_delay_ms)).await;
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("bind {listen}"))?;
    let addr = listener.local_addr().context("local_addr")?;
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "LISTENING {addr}").context("write LISTENING line")?;
        stdout.flush().context("flush stdout")?;
    }

    // In a scratch container we are PID 1, which ignores SIGTERM unless handled.
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("install SIGTERM handler")?;
    tokio::select! {
        () = run(Arc::new(config), listener, log.clone()) => {}
        _ = tokio::signal::ctrl_c() => log.server(json!({"event": "shutdown", "signal": "SIGINT"})),
        _ = sigterm.recv() => log.server(json!({"event": "shutdown", "signal": "SIGTERM"})),
    }
    Ok(())
}

/// `--probe`: one TCP connect to `target`, bounded by `within`.
async fn probe(target: SocketAddr, within: Duration) -> anyhow::Result<()> {
    match tokio::time::timeout(within, TcpStream::connect(target)).await {
        Ok(Ok(_)) => {
            println!("REACHED {target}");
            Ok(())
        }
        Ok(Err(e)) => bail!("probe {target}: {e}"),
        Err(_) => bail!("probe {target}: no answer within {within:?}"),
    }
}

/// Serves connections on `listener` forever; each connection runs in its own task.
/// Tests call this directly with a listener bound to port 0.
pub async fn run(config: Arc<Config>, listener: TcpListener, log: EventLog) {
    if let Ok(addr) = listener.local_addr() {
        log.server(json!({"event": "listening", "addr": addr.to_string()}));
    }
    // The generation counter is the framebuffer's clock: each tick changes the content.
    let (generation_tx, generation_rx) = watch::channel(0u64);
    let accept_loop = async {
        let mut next_conn: u64 = 1;
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => {
                    let conn = next_conn;
                    next_conn += 1;
                    let task = connection(
                        conn,
                        stream,
                        peer,
                        Arc::clone(&config),
                        generation_rx.clone(),
                        log.clone(),
                    );
                    tokio::spawn(task);
                }
                Err(e) => {
                    log.server(json!({"event": "accept_error", "error": e.to_string()}));
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            }
        }
    };
    // Both run forever; joined here (not spawned) so dropping `run` stops the clock too.
    tokio::join!(accept_loop, tick(generation_tx, config.update_interval));
}

/// Advances the framebuffer generation every `interval`.
async fn tick(generation: watch::Sender<u64>, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await; // the first tick completes at once
    loop {
        ticks.tick().await;
        generation.send_modify(|g| *g = g.wrapping_add(1));
    }
}

/// One connection from accept to close: logs `connected`, runs the session, logs `closed`.
async fn connection(
    conn: u64,
    stream: TcpStream,
    peer: SocketAddr,
    config: Arc<Config>,
    generation: watch::Receiver<u64>,
    log: EventLog,
) {
    log.conn(
        conn,
        json!({"event": "connected", "peer": peer.to_string()}),
    );
    // Small writes (handshake, input-driven replies) should not wait for Nagle.
    let _ = stream.set_nodelay(true);
    let reason = match session::run(conn, stream, &config, generation, &log).await {
        Ok(reason) => reason,
        Err(e) => {
            log.conn(conn, json!({"event": "error", "error": format!("{e:#}")}));
            format!("error: {e:#}")
        }
    };
    log.conn(conn, json!({"event": "closed", "reason": reason}));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_colors() {
        assert_eq!(parse_color("ff0000"), Ok([0xff, 0, 0]));
        assert_eq!(parse_color("#0a0B0c"), Ok([0x0a, 0x0b, 0x0c]));
        assert!(parse_color("ff00").is_err());
        assert!(parse_color("gg0000").is_err());
        assert!(parse_color("+f0000").is_err());
    }

    #[test]
    fn vnc_auth_requires_a_password() {
        let none = ImageEnv::default();
        let mut cli = Cli::parse_from(["rfb-fixture", "--auth", "vnc"]);
        cli.password = None; // whatever RFB_FIXTURE_PASSWORD says
        assert!(Config::from_cli(&cli, &none).is_err());
        let cli = Cli::parse_from(["rfb-fixture", "--auth", "vnc", "--password", "pw"]);
        let config = Config::from_cli(&cli, &none).expect("config");
        assert!(!format!("{config:?}").contains("\"pw\""));
    }

    #[test]
    fn cli_defaults() {
        let cli = Cli::try_parse_from(["rfb-fixture"]).expect("parse");
        let none = ImageEnv::default();
        assert_eq!(
            listen_addr(&cli, &none).expect("listen"),
            "127.0.0.1:0".parse().expect("addr")
        );
        assert_eq!(cli.version, Version::V3_8);
        let mut cli_no_pw = Cli::try_parse_from(["rfb-fixture"]).expect("parse");
        cli_no_pw.password = None; // whatever RFB_FIXTURE_PASSWORD says
        let config = Config::from_cli(&cli_no_pw, &none).expect("config");
        assert_eq!(config.auth, AuthKind::None);
        assert_eq!((cli.width, cli.height), (64, 48));
        assert_eq!(cli.color, [0xff, 0, 0]);
        assert_eq!(cli.update_interval_ms, 100);
        assert!(Cli::try_parse_from(["rfb-fixture", "--version", "3.5"]).is_err());
        assert!(Cli::try_parse_from(["rfb-fixture", "--width", "0"]).is_err());
    }

    #[test]
    fn image_env_sets_listen_address_and_auth() {
        let env = ImageEnv {
            port: Some("5901".into()),
            host: None,
            password: Some("secret".into()),
        };
        let mut cli = Cli::parse_from(["rfb-fixture"]);
        cli.password = None; // whatever RFB_FIXTURE_PASSWORD says
        assert_eq!(
            listen_addr(&cli, &env).expect("listen"),
            "0.0.0.0:5901".parse().expect("addr")
        );
        let config = Config::from_cli(&cli, &env).expect("config");
        assert_eq!(config.auth, AuthKind::Vnc);
        assert_eq!(config.password.as_deref(), Some("secret"));

        let env = ImageEnv {
            host: Some("127.0.0.1".into()),
            ..env
        };
        assert_eq!(
            listen_addr(&cli, &env).expect("listen"),
            "127.0.0.1:5901".parse().expect("addr")
        );
        for (port, host) in [("x", None), ("70000", None), ("5900", Some("localhost"))] {
            let bad = ImageEnv {
                port: Some(port.into()),
                host: host.map(Into::into),
                password: None,
            };
            assert!(listen_addr(&cli, &bad).is_err(), "{port} {host:?}");
        }
    }

    #[test]
    fn flags_beat_the_image_env() {
        let env = ImageEnv {
            port: Some("5901".into()),
            host: None,
            password: Some("secret".into()),
        };
        let cli = Cli::parse_from(["rfb-fixture", "--listen", "127.0.0.1:0", "--auth", "none"]);
        assert_eq!(
            listen_addr(&cli, &env).expect("listen"),
            "127.0.0.1:0".parse().expect("addr")
        );
        assert_eq!(
            Config::from_cli(&cli, &env).expect("config").auth,
            AuthKind::None
        );
        let cli = Cli::parse_from(["rfb-fixture", "--password", "flagpw"]);
        let config = Config::from_cli(&cli, &env).expect("config");
        assert_eq!(config.auth, AuthKind::Vnc);
        assert_eq!(config.password.as_deref(), Some("flagpw"));
    }
}
