//! SIGHUP: read the configuration again and put what can change at run time in force,
//! without touching live sessions. A configuration that doesn't validate, or names
//! keys or a certificate that don't load, is refused as a whole and the running one
//! stays.
//!
//! Reloaded: the token key set (rotation: list the old and the new key until every
//! old token has expired, then remove the old one), the TLS certificate and client CA, the log level,
//! the limits and timeouts (for sessions that start afterwards; live sessions keep
//! theirs), the session bounds, allowed origins, single-use tokens, the web root, and
//! the PROXY protocol and trusted proxies (for connections accepted afterwards).
//! The listeners, Redis, the node id, the record TTL, turning TLS on or off, session
//! recording and socket.io's ping settings take a restart (the socket unit keeps connections
//! waiting meanwhile); a change of them is logged and otherwise ignored.

use std::sync::Arc;

use tokio::signal::unix::{SignalKind, signal};
use vnc_shared::systemd::Notifier;
use vnc_shared::tls::server_config;

use super::Node;
use crate::config::{RelayConfig, RelaySettings};
use crate::metrics::CONFIG_RELOADS;

/// Reloads on every SIGHUP, telling the service manager (`RELOADING=1`, then
/// `READY=1`); the handler is installed before this returns.
pub fn on_hangup(
    node: Arc<Node>,
    settings: RelaySettings,
    notifier: Notifier,
) -> std::io::Result<()> {
    let mut hup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            notifier.reloading();
            match reload(&node, &settings) {
                Ok(now) => tracing::info!(%now, "configuration reloaded"),
                Err(e) => {
                    tracing::error!(error = %e, "reload refused; the running configuration stays")
                }
            }
            notifier.ready();
        }
    });
    Ok(())
}

/// Reloads from `settings` (the command line and environment the relay started
/// with, over the config file as it is now); returns what is in force.
fn reload(node: &Node, settings: &RelaySettings) -> Result<String, String> {
    let result = apply(node, settings);
    let label = if result.is_ok() { "ok" } else { "refused" };
    metrics::counter!(CONFIG_RELOADS, "result" => label).increment(1);
    result
}

fn apply(node: &Node, settings: &RelaySettings) -> Result<String, String> {
    let new = settings.resolve().map_err(|e| e.to_string())?;
    let old = node.config();
    let keys = new.load_keys().map_err(|e| e.to_string())?;
    vnc_shared::telemetry::log_filter(&new.log_level)?;
    let new = keep_restart_only(&old, new);
    let tls = match (node.tls(), &new.tls) {
        (Some(current), Some(files)) => {
            Some((current, server_config(files).map_err(|e| e.to_string())?))
        }
        (None, None) => None,
        _ => return Err("turning TLS on or off takes a restart".into()),
    };
    vnc_shared::telemetry::set_log_level(&new.log_level)?;
    if let Some((current, config)) = tls {
        current.set(config);
    }
    let summary = format!(
        "{} key(s), log level {}, max sessions {}{}",
        keys.len(),
        new.log_level,
        new.node.max_sessions,
        if new.tls.is_some() {
            ", TLS certificate reloaded"
        } else {
            ""
        }
    );
    node.reconfigure(new, keys);
    Ok(summary)
}

/// `new` with the settings that take a restart put back to what runs, each change
/// logged.
fn keep_restart_only(old: &RelayConfig, mut new: RelayConfig) -> RelayConfig {
    let mut kept = Vec::new();
    macro_rules! keep {
        ($($field:ident).+) => {
            if new.$($field).+ != old.$($field).+ {
                kept.push(stringify!($($field).+));
                new.$($field).+ = old.$($field).+.clone();
            }
        };
    }
    keep!(node.listen);
    keep!(node.admin_listen);
    keep!(node.id);
    keep!(node.drain_timeout);
    keep!(registry.redis_prefix);
    keep!(registry.session_ttl);
    keep!(registry.input);
    keep!(log_format);
    keep!(recording);
    keep!(limits.ping_interval);
    keep!(limits.max_missed_pongs);
    if new.registry.redis_url.expose() != old.registry.redis_url.expose() {
        kept.push("registry.redis_url");
        new.registry.redis_url = old.registry.redis_url.clone();
    }
    if !kept.is_empty() {
        tracing::warn!(settings = ?kept, "changed settings take a restart; kept the running values");
    }
    new
}
