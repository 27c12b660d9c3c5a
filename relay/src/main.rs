//! The `vnc-relay` binary: flags, logging, signals, systemd; the work is in the library.
#![forbid(unsafe_code)]

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use vnc_relay::http::accept::bind;
use vnc_relay::replay::ReplayArgs;
use vnc_relay::{Listeners, Relay, RelayConfig, RelaySettings, Shutdown};
use vnc_shared::process::{self, StopSignals};
use vnc_shared::systemd::{self, ListenFds, Notifier};

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

/// `FileDescriptorName=` of the admin listener's socket unit; any other passed
/// socket is the public listener.
const ADMIN_SOCKET_NAME: &str = "admin";

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Replay needs none of the relay's settings (no keys, no Redis).
    if let Some(Command::Replay(args)) = cli.command {
        vnc_shared::telemetry::init_tracing(
            vnc_relay::config::DEFAULT_LOG_LEVEL,
            vnc_shared::telemetry::LogFormat::Text,
        );
        let stop = CancellationToken::new();
        let stopper = stop.clone();
        let replay = async move {
            let mut signals = StopSignals::install()?;
            tokio::spawn(async move {
                signals.recv().await;
                stopper.cancel();
            });
            vnc_relay::replay::run(&args, stop).await?;
            anyhow::Ok(())
        };
        return process::block_on(replay)?;
    }
    let config = cli.settings.resolve()?;
    vnc_shared::telemetry::init_tracing(&config.log_level, config.log_format);
    if let Some(Command::Check) = cli.command {
        println!("{}", vnc_relay::check(&config)?);
        return Ok(());
    }
    // Before the runtime starts any thread: taking the sockets unsets LISTEN_FDS.
    let passed = ListenFds::take_from_env().context("socket activation")?;
    process::block_on(serve(config, cli.settings, passed))?
}

async fn serve(
    config: RelayConfig,
    settings: RelaySettings,
    passed: ListenFds,
) -> anyhow::Result<()> {
    let notifier = Notifier::from_env();
    let _watchdog = systemd::spawn_watchdog(&notifier);
    let activated = passed.len();
    let (public, admin) = passed.split(ADMIN_SOCKET_NAME)?;
    let public = match public {
        Some(socket) => adopt(socket).context("the passed public socket")?,
        None => {
            bind(config.node.listen).with_context(|| format!("binding {}", config.node.listen))?
        }
    };
    let admin = match admin {
        Some(socket) => adopt(socket).context("the passed admin socket")?,
        None => bind(config.node.admin_listen)
            .with_context(|| format!("binding admin {}", config.node.admin_listen))?,
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
    StopSignals::install()?.spawn_two_stage(
        notifier.clone(),
        {
            let shutdown = shutdown.clone();
            move || {
                tracing::info!("signal received: draining (a second signal stops at once)");
                shutdown.drain.cancel();
            }
        },
        {
            let shutdown = shutdown.clone();
            move || {
                tracing::info!("second signal: closing every session now");
                shutdown.now.cancel();
            }
        },
    );
    let relay = Relay::build(config, Listeners { public, admin }).await?;
    let node = relay.node().clone();
    vnc_relay::node::reload::on_hangup(node.clone(), settings, notifier.clone())?;
    tokio::spawn(systemd::report(notifier, move || {
        std::future::ready(node.health())
    }));
    relay.serve(shutdown).await;
    Ok(())
}

/// A listener the service manager passed, for the runtime.
fn adopt(socket: std::net::TcpListener) -> std::io::Result<TcpListener> {
    socket.set_nonblocking(true)?;
    TcpListener::from_std(socket)
}
