//! The `vnc-relay` binary: flags, logging, signals; the work is in the library.
#![forbid(unsafe_code)]

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio::signal::unix::{SignalKind, signal};
use vnc_relay::server::bind;
use vnc_relay::{Listeners, RelaySettings, Shutdown};

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
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = cli.settings.resolve()?;
    vnc_shared::telemetry::init_tracing(&config.log_level, config.log_format);
    if let Some(Command::Check) = cli.command {
        let keys = config.load_keys()?;
        println!(
            "configuration ok: {} key(s), listen {}, admin {}",
            keys.len(),
            config.listen,
            config.admin_listen
        );
        return Ok(());
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(serve(config))
}

async fn serve(config: vnc_relay::RelayConfig) -> anyhow::Result<()> {
    let public = bind(config.listen).with_context(|| format!("binding {}", config.listen))?;
    let admin = bind(config.admin_listen)
        .with_context(|| format!("binding admin {}", config.admin_listen))?;
    // Tests bind port 0 and read the real ports from this line.
    println!(
        "LISTENING public={} admin={}",
        public.local_addr()?,
        admin.local_addr()?
    );
    let shutdown = Shutdown::default();
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let signals = shutdown.clone();
    tokio::spawn(async move {
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        tracing::info!("signal received: draining (a second signal stops at once)");
        signals.drain.cancel();
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        tracing::info!("second signal: closing every session now");
        signals.now.cancel();
    });
    vnc_relay::run(config, Listeners { public, admin }, shutdown).await?;
    Ok(())
}
