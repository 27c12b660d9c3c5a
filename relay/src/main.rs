//! The `vnc-relay` binary: flags, logging, signals, systemd; the work is in the library.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use vnc_relay::http::accept::bind;
use vnc_relay::node::Node;
use vnc_relay::recording::format::Ending;
use vnc_relay::{Listeners, RelaySettings, Shutdown};
use vnc_shared::systemd::{self, Health, ListenFds, Notifier};

/// jemalloc, as linkerd2-proxy uses. glibc's malloc hands the pages of freed 64 KiB
/// blocks (socketioxide copies every `vnc:data` attachment into one) back to the kernel
/// and faults them in again: on a fresh relay, 600,000–850,000 page faults per 5 s
/// socket.io stream and 1.3–1.4 CPU-seconds per GB instead of 0.7, until its dynamic
/// thresholds happen to move, which may take many sessions. Its settings are in
/// `.cargo/config.toml`.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "vnc-relay",
    version,
    about = "VNC relay: browser WebSocket to container RFB"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    settings: RelaySettings,
}

#[derive(Subcommand)]
enum Command {
    /// Serve (the default).
    Run,
    /// Validate the configuration and the keys it names, then exit.
    Check,
    /// Play a session recording back to noVNC at its original pace.
    Replay(ReplayArgs),
}

#[derive(clap::Args)]
struct ReplayArgs {
    /// The recording (a `.vncrec` file from the relay's record_dir).
    file: PathBuf,
    /// Where noVNC connects: ws://ADDR/websockify (any path works).
    #[arg(long, default_value = vnc_relay::replay::DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// Playback speed factor: 2 plays twice as fast, 0.5 half as fast.
    #[arg(long, default_value = "1", value_parser = vnc_relay::replay::parse_speed)]
    speed: f64,
}

/// `FileDescriptorName=` of the admin listener's socket unit; any other passed
/// socket is the public listener.
const ADMIN_SOCKET_NAME: &str = "admin";

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Replay needs none of the relay's settings (no keys, no Redis).
    if let Some(Command::Replay(args)) = cli.command {
        return replay(args);
    }
    let config = cli.settings.resolve()?;
    vnc_shared::telemetry::init_tracing(&config.log_level, config.log_format);
    if let Some(Command::Check) = cli.command {
        let keys = config.load_keys()?;
        if let Some(files) = &config.tls {
            vnc_shared::tls::server_config(files)?;
        }
        println!(
            "configuration ok: {} key(s), listen {}{}, admin {}",
            keys.len(),
            config.listen,
            if config.tls.is_some() { " (TLS)" } else { "" },
            config.admin_listen
        );
        return Ok(());
    }
    // Before the runtime starts any thread: taking the sockets unsets LISTEN_FDS.
    let passed = ListenFds::take_from_env().context("socket activation")?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(serve(config, cli.settings, passed))
}

async fn serve(
    config: vnc_relay::RelayConfig,
    settings: RelaySettings,
    passed: ListenFds,
) -> anyhow::Result<()> {
    let notifier = Notifier::from_env();
    let _watchdog = systemd::spawn_watchdog(&notifier);
    let activated = passed.len();
    let (public, admin) = passed.split(ADMIN_SOCKET_NAME)?;
    let public = match public {
        Some(socket) => adopt(socket).context("the passed public socket")?,
        None => bind(config.listen).with_context(|| format!("binding {}", config.listen))?,
    };
    let admin = match admin {
        Some(socket) => adopt(socket).context("the passed admin socket")?,
        None => bind(config.admin_listen)
            .with_context(|| format!("binding admin {}", config.admin_listen))?,
    };
    if activated > 0 {
        tracing::info!(
            sockets = activated,
            "using the listening sockets passed by the service manager"
        );
    }
    // Tests bind port 0 and read the real ports from this line.
    println!(
        "LISTENING public={} admin={}",
        public.local_addr()?,
        admin.local_addr()?
    );
    notifier.status("Starting: listeners bound, waiting for Redis");
    let shutdown = Shutdown::default();
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let signals = shutdown.clone();
    let stopping = notifier.clone();
    tokio::spawn(async move {
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        tracing::info!("signal received: draining (a second signal stops at once)");
        stopping.stopping();
        signals.drain.cancel();
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        tracing::info!("second signal: closing every session now");
        signals.now.cancel();
    });
    let mut hup = signal(SignalKind::hangup())?;
    let started = move |relay: Arc<Node>| {
        let reloading = notifier.clone();
        let reloaded = relay.clone();
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                reloading.reloading();
                match vnc_relay::node::reload::reload(&reloaded, &settings) {
                    Ok(now) => tracing::info!(%now, "configuration reloaded"),
                    Err(e) => {
                        tracing::error!(error = %e, "reload refused; the running configuration stays")
                    }
                }
                reloading.ready();
            }
        });
        tokio::spawn(systemd::report(notifier, move || {
            std::future::ready(health(&relay))
        }));
    };
    vnc_relay::run_with(config, Listeners { public, admin }, shutdown, started).await?;
    Ok(())
}

fn replay(args: ReplayArgs) -> anyhow::Result<()> {
    vnc_shared::telemetry::init_tracing(
        vnc_relay::config::DEFAULT_LOG_LEVEL,
        vnc_shared::telemetry::LogFormat::Text,
    );
    let recording = vnc_relay::replay::load(&args.file)?;
    let meta = &recording.meta;
    println!(
        "replaying {}: session {} of container {} (user {}, started {}), {} bytes in {} records over {:.1} s, speed {}",
        args.file.display(),
        meta.session_id,
        meta.container_id,
        meta.user_id,
        meta.started_at,
        recording.data_len(),
        recording.records.len(),
        f64::from(recording.duration_ms()) / 1000.0,
        args.speed,
    );
    match recording.ending {
        Some(Ending::Complete) => {}
        Some(ending) => println!("note: the recording stopped early ({})", ending.as_str()),
        None => {
            println!("note: the recording has no end record (the relay stopped while writing it)")
        }
    }
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async {
            let listener = bind(args.listen).with_context(|| format!("binding {}", args.listen))?;
            let addr = listener.local_addr()?;
            println!(
                "open noVNC at ws://{addr}/websockify (vnc.html?host={}&port={}&path=websockify)",
                addr.ip(),
                addr.port()
            );
            println!("LISTENING public={addr}");
            let stop = tokio_util::sync::CancellationToken::new();
            let stopper = stop.clone();
            let mut term = signal(SignalKind::terminate())?;
            let mut int = signal(SignalKind::interrupt())?;
            tokio::spawn(async move {
                tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
                stopper.cancel();
            });
            vnc_relay::replay::serve(listener, Arc::new(recording), args.speed, stop).await;
            Ok(())
        })
}

/// A listener the service manager passed, for the runtime.
fn adopt(socket: std::net::TcpListener) -> std::io::Result<TcpListener> {
    socket.set_nonblocking(true)?;
    TcpListener::from_std(socket)
}

/// Readiness as `/readyz` sees it, and the live session count, for systemd.
fn health(relay: &Node) -> Health {
    let sessions = match relay.live().len() {
        1 => "1 live session".to_owned(),
        n => format!("{n} live sessions"),
    };
    if relay.is_draining() {
        return Health {
            ready: false,
            status: format!("Draining: {sessions} left"),
        };
    }
    match relay.not_ready() {
        None => Health {
            ready: true,
            status: format!("Serving: {sessions}"),
        },
        Some(why) => Health {
            ready: false,
            status: format!("Not ready ({why}): {sessions}"),
        },
    }
}
