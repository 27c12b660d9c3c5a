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

/// Every key matching `pattern` (SCAN MATCH, asking `page` keys per call: the COUNT
/// hint, which bounds each call's work on the server), each once and sorted. On a Redis
/// Cluster every primary is scanned (fred's `scan_cluster`), elsewhere the one server
/// is. Holds every matching key in memory: for key sets known to stay small, or for
/// one-shot operator work. Keys that are not UTF-8 (none of ours) are left out.
///
/// `pattern` is a Redis glob: `*`, `?`, `[`, `]` and `\` in a literal part must be
/// escaped with `\` ([`glob_escape`]); `{` and `}` are literal.
pub async fn scan_keys(
    client: &fred::clients::Client,
    pattern: &str,
    page: u32,
) -> Result<Vec<String>, fred::error::Error> {
    use fred::types::scan::Scanner;
    use futures_util::StreamExt;

    let mut pages = if client.is_clustered() {
        client.scan_cluster(pattern, Some(page), None).boxed()
    } else {
        client.scan(pattern, Some(page), None).boxed()
    };
    let mut keys = Vec::new();
    while let Some(result) = pages.next().await {
        // Dropping a page asks for the next one.
        let mut result = result?;
        if let Some(found) = result.take_results() {
            keys.extend(found.iter().filter_map(|k| k.as_str().map(str::to_owned)));
        }
    }
    // SCAN may return a key twice.
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

#[cfg(test)]
mod tests {
    #[test]
    fn glob_escape_leaves_only_literals() {
        assert_eq!(super::glob_escape("vnc:"), "vnc:");
        assert_eq!(super::glob_escape("{vnc}:"), "{vnc}:");
        assert_eq!(super::glob_escape(r"a*b?[c]\"), r"a\*b\?\[c\]\\");
    }
}
