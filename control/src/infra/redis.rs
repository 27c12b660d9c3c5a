//! Control's Redis client: how it connects, times out and reconnects, for whatever
//! `redis_url` names (one server, a primary behind Sentinel, a Cluster).

use std::time::Duration;

use fred::prelude::*;

/// Bound on one command; the queue bounds its own calls too.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// The client, not connected yet (see [`vnc_shared::redis::keep_connecting`]). Commands
/// fail at once while it is disconnected (the API answers 503) instead of queueing; it
/// reconnects with back-off (at most 5 s between tries) for as long as control runs,
/// asking the sentinels for the primary again each time behind Sentinel.
pub fn client(url: &str) -> Result<Client, fred::error::Error> {
    let mut config = Config::from_url(url)?;
    config.fail_fast = true;
    Builder::from_config(config)
        .with_performance_config(|p| p.default_command_timeout = COMMAND_TIMEOUT)
        .set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2))
        .build()
}
