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

/// Every key matching `pattern` (and of type `kind`, if given; SCAN MATCH, asking `page`
/// keys per call: the COUNT hint, which bounds each call's work on the server; never
/// KEYS, which blocks Redis), each once and sorted. On a Redis Cluster every primary is
/// scanned (fred's `scan_cluster`), elsewhere the one server is. Holds every matching
/// key in memory: for key sets known to stay small, or for one-shot operator work.
///
/// `pattern` is a Redis glob: `*`, `?`, `[`, `]` and `\` in a literal part must be
/// escaped with `\` ([`glob_escape`]); `{` and `}` are literal.
pub async fn scan_keys(
    client: &fred::clients::Client,
    pattern: &str,
    page: u32,
    kind: Option<fred::types::scan::ScanType>,
) -> Result<Vec<String>, fred::error::Error> {
    use futures_util::TryStreamExt;
    let keys: Vec<fred::types::Key> = if client.is_clustered() {
        client
            .scan_cluster_buffered(pattern, Some(page), kind)
            .try_collect()
            .await?
    } else {
        client
            .scan_buffered(pattern, Some(page), kind)
            .try_collect()
            .await?
    };
    let mut keys: Vec<String> = keys.into_iter().filter_map(|k| k.into_string()).collect();
    keys.sort();
    keys.dedup();
    Ok(keys)
}

/// `s` with the glob specials of Redis's MATCH escaped, so it matches only itself.
pub fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
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
    fn glob_escape_leaves_only_literals() {
        assert_eq!(super::glob_escape("vnc:"), "vnc:");
        assert_eq!(super::glob_escape("{vnc}:"), "{vnc}:");
        assert_eq!(super::glob_escape(r"a*b?[c]\"), r"a\*b\?\[c\]\\");
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
