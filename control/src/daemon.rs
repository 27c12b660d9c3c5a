//! Control as a service: binds the listeners, reports start-up, readiness and the job
//! queue to systemd, reloads the configuration on SIGHUP, and serves until shutdown.
//! The binary sets up logging and the stop signals and calls [`serve`].

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use vnc_shared::systemd::{self, Health, Notifier};

use crate::config::{ControlConfig, ControlSettings};
use crate::server::{self, Listeners, Running};
use crate::startup::StartError;

/// Serves `config` until `shutdown` is cancelled and in-flight work is done. SIGHUP
/// reloads from `settings` (the command line and environment control started with,
/// over the config file as it is then).
pub async fn serve(
    config: ControlConfig,
    settings: ControlSettings,
    notifier: Notifier,
    shutdown: CancellationToken,
) -> Result<(), StartError> {
    let _watchdog = systemd::spawn_watchdog(&notifier);
    let api = bind(config.listen, config.listen.to_string()).await?;
    let admin = bind(
        config.admin_listen,
        format!("admin {}", config.admin_listen),
    )
    .await?;
    // Tests bind port 0 and read the real ports from this line.
    println!(
        "LISTENING api={} admin={}",
        api.local_addr()?,
        admin.local_addr()?
    );
    notifier.status("Starting: listeners bound, waiting for Redis");
    let mut hup = signal(SignalKind::hangup())?;
    let control = server::build(config, Listeners { api, admin }).await?;
    let running = control.running();
    let reloading = notifier.clone();
    let reloader = running.clone();
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            reloading.reloading();
            match reloader.reload(&settings) {
                Ok(now) => tracing::info!(%now, "configuration reloaded"),
                Err(e) => {
                    tracing::error!(error = %e, "reload refused; the running configuration stays")
                }
            }
            reloading.ready();
        }
    });
    let draining = shutdown.clone();
    tokio::spawn(systemd::report(notifier, move || {
        health(running.clone(), draining.clone())
    }));
    control.serve(shutdown).await
}

/// Binds one listener; `what` names it in the error.
async fn bind(addr: SocketAddr, what: String) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { what, source })
}

/// Readiness as `/readyz` sees it, and the job queue, for systemd.
async fn health(running: Running, draining: CancellationToken) -> Health {
    use fred::interfaces::ClientLike;

    if draining.is_cancelled() {
        return Health {
            ready: false,
            status: "Stopping: finishing in-flight requests and jobs".into(),
        };
    }
    if !running.redis.is_connected() {
        return Health {
            ready: false,
            status: "Not ready (redis unreachable)".into(),
        };
    }
    let jobs = match running.queue.depth().await {
        Ok(d) => format!(
            "jobs {} waiting, {} active, {} delayed, {} failed",
            d.waiting, d.active, d.delayed, d.failed
        ),
        Err(e) => format!("job queue unknown ({e})"),
    };
    Health {
        ready: true,
        status: format!("Serving: {jobs}"),
    }
}
