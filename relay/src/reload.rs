//! SIGHUP: read the configuration again and put what can change at run time in force,
//! without touching live sessions. A configuration that doesn't validate, or names
//! keys that don't load, is refused as a whole and the running one stays.
//!
//! Reloaded: the token key set (rotation: list the old and the new key until every
//! old token has expired, then remove the old one) and the log level. Listeners,
//! Redis, limits and the rest take a restart (the socket unit keeps connections
//! waiting meanwhile).

use crate::config::RelaySettings;
use crate::metrics::CONFIG_RELOADS;
use crate::server::Relay;

/// Reloads from `settings` (the command line and environment the relay started
/// with, over the config file as it is now); returns what is in force.
pub fn reload(relay: &Relay, settings: &RelaySettings) -> Result<String, String> {
    let result = apply(relay, settings);
    let label = if result.is_ok() { "ok" } else { "refused" };
    metrics::counter!(CONFIG_RELOADS, "result" => label).increment(1);
    result
}

fn apply(relay: &Relay, settings: &RelaySettings) -> Result<String, String> {
    let config = settings.resolve().map_err(|e| e.to_string())?;
    let keys = config.load_keys().map_err(|e| e.to_string())?;
    vnc_shared::telemetry::set_log_level(&config.log_level)?;
    let count = keys.len();
    relay.replace_keys(keys);
    Ok(format!("{count} key(s), log level {}", config.log_level))
}
