//! The `vnc-control` binary: flags, logging, signals, systemd; the work is in the library.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use vnc_control::config::{ControlConfig, ControlSettings};
use vnc_control::operator::{self, MintArgs};
use vnc_control::server::{self, Listeners};
use vnc_shared::config::parse_duration;
use vnc_shared::systemd::{self, Health, Notifier};
use vnc_shared::token::{DEFAULT_AUDIENCE, DEFAULT_ISSUER, Scope};

#[derive(Parser)]
#[command(name = "vnc-control", version, about = "VNC control plane")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    settings: ControlSettings,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API and run jobs (the default).
    Run,
    /// Validate the configuration and the keys it names, then exit.
    Check,
    /// Key management.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Token operations.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Write an Ed25519 key pair: KID.key.pem (private, 0600) and KID.pub.pem.
    Generate {
        #[arg(long)]
        out: PathBuf,
        /// Key id (default: key-<days since epoch>).
        #[arg(long)]
        kid: Option<String>,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Mint a VNC token offline with the private key; prints the token.
    Mint {
        #[arg(long, env = "VNC_JWT_PRIVATE_KEY")]
        private_key: PathBuf,
        /// Key id (default: the key file's stem).
        #[arg(long)]
        kid: Option<String>,
        #[arg(long)]
        container: String,
        #[arg(long)]
        user: String,
        #[arg(long)]
        tenant: String,
        #[arg(long, default_value = "control")]
        scope: Scope,
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        ttl: Duration,
        #[arg(long, env = "VNC_JWT_ISSUER", default_value = DEFAULT_ISSUER)]
        issuer: String,
        #[arg(long, env = "VNC_JWT_AUDIENCE", default_value = DEFAULT_AUDIENCE)]
        audience: String,
        /// Print the claims as JSON on stderr too.
        #[arg(long)]
        verbose: bool,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => {
            let config = cli.settings.resolve()?;
            vnc_shared::telemetry::init_tracing(&config.log_level, config.log_format);
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(serve(config, cli.settings))?;
        }
        Command::Check => {
            let config = cli.settings.resolve()?;
            let (tunables, _, tls) = server::load_tunables(&config)?;
            println!(
                "configuration ok: signing kid {}, listen {}{}, admin {}, runtime {:?}",
                tunables.signer.kid(),
                config.listen,
                if tls.is_some() { " (TLS)" } else { "" },
                config.admin_listen,
                config.runtime
            );
        }
        Command::Keys {
            command: KeysCommand::Generate { out, kid },
        } => {
            let kid = kid.unwrap_or_else(operator::default_kid);
            let (private, public) = operator::generate_keys(&out, &kid)?;
            println!(
                "kid {kid}\nprivate {}\npublic {}",
                private.display(),
                public.display()
            );
        }
        Command::Token {
            command:
                TokenCommand::Mint {
                    private_key,
                    kid,
                    container,
                    user,
                    tenant,
                    scope,
                    ttl,
                    issuer,
                    audience,
                    verbose,
                },
        } => {
            let minted = operator::mint(&MintArgs {
                private_key: &private_key,
                kid,
                issuer: &issuer,
                audience: &audience,
                container: &container,
                user: &user,
                tenant: &tenant,
                scope,
                ttl,
            })?;
            if verbose {
                eprintln!("{}", serde_json::to_string(&minted.claims)?);
            }
            println!("{}", minted.token);
        }
    }
    Ok(())
}

async fn serve(config: ControlConfig, settings: ControlSettings) -> anyhow::Result<()> {
    use anyhow::Context;
    use tokio::signal::unix::{SignalKind, signal};

    let notifier = Notifier::from_env();
    let _watchdog = systemd::spawn_watchdog(&notifier);
    let api = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let admin = tokio::net::TcpListener::bind(config.admin_listen)
        .await
        .with_context(|| format!("binding admin {}", config.admin_listen))?;
    // Tests bind port 0 and read the real ports from this line.
    println!(
        "LISTENING api={} admin={}",
        api.local_addr()?,
        admin.local_addr()?
    );
    notifier.status("Starting: listeners bound, waiting for Redis");
    let shutdown = tokio_util::sync::CancellationToken::new();
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let signals = shutdown.clone();
    let stopping = notifier.clone();
    tokio::spawn(async move {
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        tracing::info!(
            "signal received: finishing in-flight requests and jobs (a second signal exits)"
        );
        stopping.stopping();
        signals.cancel();
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        std::process::exit(130);
    });
    let mut hup = signal(SignalKind::hangup())?;
    let draining = shutdown.clone();
    let started = move |running: server::Running| {
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
        tokio::spawn(systemd::report(notifier, move || {
            health(running.clone(), draining.clone())
        }));
    };
    server::run_with(config, Listeners { api, admin }, shutdown, started).await?;
    Ok(())
}

/// Readiness as `/readyz` sees it, and the job queue, for systemd.
async fn health(running: server::Running, draining: tokio_util::sync::CancellationToken) -> Health {
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
