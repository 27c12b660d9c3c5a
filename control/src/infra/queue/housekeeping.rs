//! Periodic upkeep every replica does while running: refresh the queue depth gauges,
//! trim dead letters older than `failed_retention` (failures trim too, but a quiet
//! queue would keep stale ones), and delete consumers of the group that own nothing
//! and have been idle for an hour (each restart under a new name leaves one behind).

use std::sync::Arc;
use std::time::Duration;

use fred::prelude::*;
use fred::types::streams::{XCapKind, XCapTrim};
use tokio_util::sync::CancellationToken;

use super::pace::pause;
use super::{GROUP, QueueError, Shared, depth_of, timed};

/// How often the upkeep runs.
pub const INTERVAL: Duration = Duration::from_secs(15);
/// A consumer with nothing pending and idle this long is deleted from the group.
pub const CONSUMER_IDLE: Duration = Duration::from_secs(3600);

pub(super) async fn run(s: Arc<Shared>, stop: CancellationToken) {
    loop {
        if let Err(e) = depth_of(&s).await {
            tracing::debug!(error = %e, "measuring queue depth failed");
        }
        if let Err(e) = trim_dead_letters(&s).await {
            tracing::debug!(error = %e, "trimming dead letters failed");
        }
        match prune_consumers(&s).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(consumers = n, "deleted idle job consumers"),
            Err(e) => tracing::debug!(error = %e, "pruning job consumers failed"),
        }
        if pause(&stop, INTERVAL).await {
            return;
        }
    }
}

/// XTRIM MINID: dead-letter entry ids are their Unix ms.
async fn trim_dead_letters(s: &Shared) -> Result<(), QueueError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let min = now.saturating_sub(s.config.failed_retention).as_millis();
    let _: Value = timed(s.client.xtrim(
        &s.keys.dead,
        (XCapKind::MinID, XCapTrim::Exact, min.to_string()),
    ))
    .await?;
    Ok(())
}

/// Deletes idle consumers with no pending entries; returns how many.
async fn prune_consumers(s: &Shared) -> Result<usize, QueueError> {
    let reply = match timed(
        s.client
            .xinfo_consumers::<Value, _, _>(&s.keys.stream, GROUP),
    )
    .await
    {
        Ok(v) => v,
        // No stream or group yet: nothing to prune.
        Err(QueueError::Redis(e))
            if e.details().contains("NOGROUP") || e.details().contains("no such key") =>
        {
            return Ok(0);
        }
        Err(e) => return Err(e),
    };
    let idle_ms = CONSUMER_IDLE.as_millis() as i64;
    let mut deleted = 0;
    for c in consumers(reply) {
        if c.name != s.config.consumer && c.pending == 0 && c.idle_ms >= idle_ms {
            let _: Value = timed(s.client.xgroup_delconsumer(
                &s.keys.stream,
                GROUP,
                c.name.as_str(),
            ))
            .await?;
            deleted += 1;
        }
    }
    Ok(deleted)
}

#[derive(Debug, PartialEq)]
struct Consumer {
    name: String,
    pending: i64,
    idle_ms: i64,
}

/// XINFO CONSUMERS: a list of field/value lists (RESP2) or maps (RESP3).
fn consumers(reply: Value) -> Vec<Consumer> {
    let Value::Array(list) = reply else {
        return Vec::new();
    };
    list.into_iter()
        .filter_map(|c| {
            let pairs: Vec<(String, Value)> = match c {
                Value::Array(kv) => kv
                    .chunks(2)
                    .filter(|p| p.len() == 2)
                    .filter_map(|p| Some((p[0].as_string()?, p[1].clone())))
                    .collect(),
                Value::Map(m) => m
                    .inner()
                    .into_iter()
                    .filter_map(|(k, v)| Some((k.as_str()?.to_owned(), v)))
                    .collect(),
                _ => return None,
            };
            let get = |f: &str| pairs.iter().find(|(k, _)| k == f).map(|(_, v)| v);
            Some(Consumer {
                name: get("name")?.as_string()?,
                pending: get("pending").and_then(Value::as_i64).unwrap_or(0),
                idle_ms: get("idle").and_then(Value::as_i64).unwrap_or(0),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_xinfo_consumers() {
        let c = |name: &str, pending: i64, idle: i64| {
            Value::Array(vec![
                "name".into(),
                name.into(),
                "pending".into(),
                pending.into(),
                "idle".into(),
                idle.into(),
            ])
        };
        let reply = Value::Array(vec![c("a", 0, 5), c("b", 2, 7_200_000)]);
        assert_eq!(
            consumers(reply),
            vec![
                Consumer {
                    name: "a".into(),
                    pending: 0,
                    idle_ms: 5
                },
                Consumer {
                    name: "b".into(),
                    pending: 2,
                    idle_ms: 7_200_000
                },
            ]
        );
        assert!(consumers(Value::Null).is_empty());
    }
}
