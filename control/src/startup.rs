//! Start-up: what the configuration names, loaded and checked (the signing and
//! identity keys, the limits, TLS, the VNC password secrets, the container runtime;
//! an OpenID Connect issuer's keys are fetched later, by the server), and
//! [`StartError`], each step of start-up that can fail.

use std::sync::Arc;

use vnc_shared::tls::TlsError;
use vnc_shared::token::{KeyError, Signer, read_hs256_secret};

use crate::api::auth::{IdentityKey, IdentityKeyError, IdentityVerifier};
use crate::app::Tunables;
use crate::config::{AuthKey, ControlConfig, NetworkKind, RuntimeKind};
use crate::domain::CreateLimits;
use crate::infra::oidc::OidcKeys;
use crate::infra::passwords::{PasswordKeyError, PasswordKeys};
use crate::infra::runtime::{
    DockerRuntime, Engines, Isolation, NetworkMode, PooledEngine, RuntimeError, StaticRuntime,
};

/// Name of the one engine of the static runtime.
pub const STATIC_ENGINE_NAME: &str = "static";

/// Host ports containers get in host networking.
const HOST_PORT_RANGE: (u16, u16) = (15900, 16899);

/// Each step of start-up that can fail.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("loading the token signing key: {0}")]
    SigningKey(#[from] KeyError),
    #[error("loading the identity key: {0}")]
    IdentityKey(#[from] IdentityKeyError),
    #[error("the identity secret: {0}")]
    IdentitySecret(KeyError),
    #[error("the OpenID Connect issuer: {0}")]
    Oidc(String),
    #[error("configuring redis: {0}")]
    Redis(#[from] fred::error::Error),
    #[error("docker engine {engine}: {source}")]
    Engine {
        engine: String,
        source: RuntimeError,
    },
    #[error("the VNC password secrets: {0}")]
    PasswordSecret(#[from] PasswordKeyError),
    #[error("loading the TLS certificate: {0}")]
    Tls(#[from] TlsError),
    /// `what` is the listener's address, `admin` and its address for the admin one.
    #[error("binding {what}")]
    Bind {
        what: String,
        source: std::io::Error,
    },
    #[error("serving: {0}")]
    Serve(#[from] std::io::Error),
}

/// Loads what the config names and a reload may change: the keys, the limits, the
/// TLS config (also what `vnc-control check` validates).
pub fn load_tunables(
    config: &ControlConfig,
) -> Result<(Tunables, IdentityVerifier, Option<rustls::ServerConfig>), StartError> {
    let (signer, identity) = load_keys(config)?;
    let tls = config
        .tls
        .as_ref()
        .map(vnc_shared::tls::server_config)
        .transpose()?;
    let tunables = Tunables {
        own_keys: signer.own_keys(),
        signer,
        limits: CreateLimits {
            images: config.images.clone(),
            max_cpus: config.max_cpus,
            max_memory_mb: config.max_memory_mb,
            min_memory_mb: crate::config::DEFAULT_MIN_MEMORY_MB,
            max_entries: crate::config::DEFAULT_MAX_ENTRIES,
        },
        token_max_ttl: config.token_max_ttl,
        share_max_ttl: config.share_max_ttl,
        relay_url: config.relay_url.clone(),
        public_url: config.public_url.clone(),
        max_containers_per_tenant: config.max_containers_per_tenant,
        files_default: config.files_default,
        clipboard_default: config.clipboard_default,
        files_max_bytes: config.files_max_bytes,
        viewer_origins: config.viewer_origins.clone(),
    };
    Ok((tunables, identity, tls))
}

/// `vnc-control check`: loads what the config names (keys, TLS) and says what it found.
pub fn check(config: &ControlConfig) -> Result<String, StartError> {
    let (tunables, _, tls) = load_tunables(config)?;
    Ok(format!(
        "configuration ok: signing kid {}, listen {}{}, admin {}, runtime {:?}{}",
        tunables.signer.kid(),
        config.listen,
        if tls.is_some() { " (TLS)" } else { "" },
        config.admin_listen,
        config.runtime,
        match config.runtime {
            RuntimeKind::Docker => format!(
                ", engines {}",
                config
                    .engines
                    .iter()
                    .map(|e| e.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            RuntimeKind::Static => String::new(),
        }
    ))
}

/// Loads the keys the config names.
fn load_keys(config: &ControlConfig) -> Result<(Signer, IdentityVerifier), StartError> {
    let signer = Signer::ed25519_from_pem_file(&config.jwt_private_key, config.jwt_kid.clone())?
        .with_issuer_audience(&config.jwt_issuer, &config.jwt_audience);
    let identity = match &config.auth_key {
        AuthKey::Oidc { refresh_interval } => {
            let keys =
                OidcKeys::new(&config.auth_issuer, *refresh_interval).map_err(StartError::Oidc)?;
            IdentityVerifier::new(
                IdentityKey::Oidc(Arc::new(keys)),
                &config.auth_issuer,
                &config.auth_audience,
            )?
        }
        AuthKey::PublicKeyPem(p) => IdentityVerifier::new(
            IdentityKey::PublicKeyPem(p),
            &config.auth_issuer,
            &config.auth_audience,
        )?,
        AuthKey::Hs256SecretFile(p) => {
            let secret = read_hs256_secret(p).map_err(StartError::IdentitySecret)?;
            IdentityVerifier::new(
                IdentityKey::Hs256(&secret),
                &config.auth_issuer,
                &config.auth_audience,
            )?
        }
    };
    Ok((signer, identity))
}

/// The secrets VNC passwords derive from: with the Docker runtime, read (or generated)
/// from the configured file; none with the static runtime, which starts nothing.
pub(crate) fn password_keys(config: &ControlConfig) -> Result<PasswordKeys, PasswordKeyError> {
    match config.runtime {
        RuntimeKind::Docker => PasswordKeys::load_or_create(&config.vnc_password_secret_file),
        RuntimeKind::Static => Ok(PasswordKeys::default()),
    }
}

/// The pool of engines the config names: its Docker engines, or the static runtime as
/// a pool of one.
pub(crate) fn engines(config: &ControlConfig) -> Result<Engines, StartError> {
    Ok(match config.runtime {
        RuntimeKind::Static => Engines::single(
            STATIC_ENGINE_NAME,
            Arc::new(StaticRuntime::new(
                config
                    .static_containers
                    .iter()
                    .map(|c| {
                        (
                            c.cid.clone(),
                            crate::infra::runtime::Endpoint {
                                host: c.host.clone(),
                                port: c.port,
                            },
                        )
                    })
                    .collect(),
            )),
        ),
        RuntimeKind::Docker => {
            if config.network == NetworkKind::Host {
                // Config validation refused this unless allow_host_network is set.
                tracing::warn!(
                    "network = \"host\" (allow_host_network): desktops share the host's network \
                     and reach Redis, the relays and every other service listening on it"
                );
            }
            let isolation = Isolation {
                network: config.desktop_network.clone(),
                pids_limit: config.desktop_pids_limit,
                cap_add: config.desktop_cap_add.clone(),
                log_max_size: config.desktop_log_max_size.clone(),
                log_max_files: config.desktop_log_max_files,
            };
            let mut pool = Vec::with_capacity(config.engines.len());
            for engine in &config.engines {
                let network = match config.network {
                    NetworkKind::Published => {
                        if engine.publish_ip.is_unspecified() {
                            tracing::warn!(
                                engine = %engine.name,
                                publish_ip = %engine.publish_ip,
                                "desktops' VNC ports are published on every interface of the host: \
                                 set publish_ip to the address the relays reach"
                            );
                        }
                        NetworkMode::Published {
                            host_ip: engine.publish_ip,
                        }
                    }
                    NetworkKind::Host => NetworkMode::Host {
                        host_ip: engine.publish_ip,
                        port_range: HOST_PORT_RANGE,
                    },
                    NetworkKind::Bridge => NetworkMode::Bridge,
                };
                let runtime = DockerRuntime::connect(
                    engine.docker_host.as_deref(),
                    network,
                    isolation.clone(),
                    &config.plane,
                )
                .map_err(|e| StartError::Engine {
                    engine: engine.name.clone(),
                    source: e,
                })?;
                pool.push(PooledEngine {
                    name: engine.name.clone(),
                    runtime: Arc::new(runtime),
                    capacity: engine.capacity,
                });
            }
            Engines::new(pool)
        }
    })
}
