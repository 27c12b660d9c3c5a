//! The `vnc-control` binary: flags, logging, signals, systemd; the work is in the library.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use vnc_control::config::{ControlConfig, ControlSettings};
use vnc_control::operator::{self, MintArgs};
use vnc_shared::config::parse_duration;
use vnc_shared::process::{self, StopSignals};
use vnc_shared::systemd::Notifier;
use vnc_shared::token::{ClipboardPolicy, DEFAULT_AUDIENCE, DEFAULT_ISSUER, FilePolicy, Scope};

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
    /// Print the API's OpenAPI 3.1 description (what `GET /v1/openapi.json` serves).
    Openapi,
    /// Move the Redis keys of an older version to their current names (the daemon also
    /// does at start), print what moved, then exit. Reads only the Redis and logging
    /// settings, which may follow the subcommand too (`migrate --redis-url …`).
    Migrate {
        #[command(flatten)]
        settings: Box<ControlSettings>,
    },
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
        /// The `files` claim: none, upload, download or both.
        #[arg(long, default_value = "none")]
        files: FilePolicy,
        /// The `clipboard` claim: both, to_desktop, from_desktop or none.
        #[arg(long, default_value = "both")]
        clipboard: ClipboardPolicy,
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
            process::block_on(serve(config, cli.settings))??;
        }
        Command::Check => {
            let config = cli.settings.resolve()?;
            println!("{}", vnc_control::startup::check(&config)?);
        }
        Command::Migrate { settings } => {
            let settings = vnc_shared::config::overlay(settings.as_ref(), &cli.settings)?;
            let target = settings.resolve_redis()?;
            vnc_shared::telemetry::init_tracing(&target.log_level, target.log_format);
            let report = process::block_on(vnc_control::infra::migrate::once(
                target.redis_url.expose(),
                &target.redis_prefix,
            ))??;
            println!("migrated: {report}");
        }
        Command::Openapi => {
            let doc = vnc_control::api::openapi::document();
            println!("{}", serde_json::to_string_pretty(&doc)?);
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
                    files,
                    clipboard,
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
                files,
                clipboard,
            })?;
            if verbose {
                eprintln!("{}", serde_json::to_string(&minted.claims)?);
            }
            println!("{}", minted.token);
        }
    }
    Ok(())
}

/// Serves until the first SIGTERM or SIGINT has drained in-flight work; the second
/// exits at once.
async fn serve(config: ControlConfig, settings: ControlSettings) -> anyhow::Result<()> {
    let notifier = Notifier::from_env();
    let shutdown = CancellationToken::new();
    let draining = shutdown.clone();
    StopSignals::install()?.spawn_two_stage(
        notifier.clone(),
        move || {
            tracing::info!(
                "signal received: finishing in-flight requests and jobs (a second signal exits)"
            );
            draining.cancel();
        },
        || std::process::exit(130),
    );
    vnc_control::daemon::serve(config, settings, notifier, shutdown).await?;
    Ok(())
}
