//! Keeping a Redis client connecting from the start.
//!
//! Both daemons build fred clients with `fail_fast`, so a command issued while Redis is
//! down fails at once (the relay refuses the session with 503, control answers 503)
//! instead of queueing. fred then also gives up on the *first* connection if Redis
//! isn't there yet; once connected, its reconnect policy takes over. This starts the
//! connection again with back-off until it has been made once, so a daemon started
//! before Redis comes up on its own.

use std::time::Duration;

use fred::interfaces::ClientLike;

/// Longest pause between two first-connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Connects `client` in the background, retrying the first connection until it
/// succeeds; returns at once. The task ends when the client quits.
pub fn keep_connecting<C>(client: C)
where
    C: ClientLike + Send + Sync + 'static,
{
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(100);
        loop {
            match client.connect().await {
                // The client quit: the connection task ended on purpose.
                Ok(Ok(())) => return,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, ?backoff, "redis not reachable yet; retrying");
                }
                Err(e) => tracing::warn!(error = %e, "redis connection task failed"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    });
}

/// The URL schemes both daemons take for `redis_url`: one server (`redis`), a primary
/// found through Sentinel (`redis-sentinel`: the host and every `node` query parameter
/// are sentinels, `sentinelServiceName` names the primary), or a Cluster
/// (`redis-cluster`); each with a TLS form (`rediss…`).
pub const URL_SCHEMES: [&str; 6] = [
    "redis",
    "rediss",
    "redis-sentinel",
    "rediss-sentinel",
    "redis-cluster",
    "rediss-cluster",
];

/// Why `url` is no Redis address the daemons can use, or `None`. The reason never
/// quotes the URL, which may carry a password.
pub fn url_problem(url: &str) -> Option<&'static str> {
    let scheme = url.split_once("://").map(|(scheme, _)| scheme);
    if !scheme.is_some_and(|s| URL_SCHEMES.contains(&s)) {
        return Some(
            "redis_url must start with redis://, rediss://, redis-sentinel://, \
             rediss-sentinel://, redis-cluster:// or rediss-cluster://",
        );
    }
    // fred reads it the same way when the daemon connects.
    if fred::types::config::Config::from_url(url).is_err() {
        return Some(
            "redis_url is not a valid Redis URL (a Sentinel URL needs \
             ?sentinelServiceName=NAME; more sentinels as &node=host:port)",
        );
    }
    None
}

#[cfg(test)]
mod tests {
    use super::url_problem;

    #[test]
    fn sentinel_and_cluster_urls_are_taken() {
        for url in [
            "redis://127.0.0.1:6379",
            "rediss://:secret@redis.example:6380/2",
            "redis-sentinel://10.0.0.1:26379?node=10.0.0.2:26379&node=10.0.0.3:26379&sentinelServiceName=vnc",
            "rediss-sentinel://:secret@s1:26379/0?sentinelServiceName=vnc",
            "redis-cluster://10.0.0.1:6379?node=10.0.0.2:6379",
        ] {
            assert_eq!(url_problem(url), None, "{url}");
        }
    }

    #[test]
    fn other_schemes_and_a_sentinel_url_without_its_service_are_refused() {
        for url in [
            "http://127.0.0.1:6379",
            "127.0.0.1:6379",
            "redis-sentinel://10.0.0.1:26379?node=10.0.0.2:26379",
        ] {
            assert!(url_problem(url).is_some(), "{url}");
        }
        // The reason never quotes the URL (a password may be in it).
        let reason = url_problem("redis-sentinel://:hunter2@s1:26379").unwrap();
        assert!(!reason.contains("hunter2"), "{reason}");
    }
}
