//! Delayed jobs: the mover that brings due jobs from the delayed set
//! (`{p}{jobs}:delayed`, score = due Unix ms) back onto the stream as `waiting` (a job of
//! a rate-limited name to its group's list), then gives free rate-limit slots to the
//! groups (`fair.rs`).
//!
//! Every replica runs a mover; the move is one script (ZREM, then XADD only if the
//! job is still `delayed`), so two movers never move a job twice. A mover sleeps
//! until the next due job or free slot, at most [`MAX_POLL`] (another replica may add
//! an earlier one), and wakes at once when its own replica delays a job or adds one
//! to a group.

use std::sync::Arc;
use std::time::Duration;

use fred::prelude::*;
use tokio_util::sync::CancellationToken;

use super::pace::Backoff;
use super::{QueueError, Shared, fair, script, timed};

/// Longest sleep between two passes: how late a job delayed by another replica can
/// start.
pub const MAX_POLL: Duration = Duration::from_secs(1);
/// Shortest sleep between passes, so a job due "now" by one clock can't spin us.
const MIN_POLL: Duration = Duration::from_millis(5);
/// Jobs moved per script call (bounds the time Redis spends in one script).
const BATCH: i64 = 100;

/// Moves due jobs until `stop`.
pub(super) async fn mover(s: Arc<Shared>, stop: CancellationToken) {
    let mut backoff = Backoff::default();
    loop {
        let pass = async { Ok::<_, QueueError>((promote(&s).await?, fair::dispatch(&s).await?)) };
        let wait = match pass.await {
            Ok(((due, moved, next), slot)) => {
                backoff.reset();
                if moved > 0 {
                    tracing::debug!(moved, "delayed jobs are due");
                }
                if due >= BATCH {
                    continue;
                }
                [next, slot]
                    .into_iter()
                    .flatten()
                    .fold(MAX_POLL, Duration::min)
            }
            Err(e) => {
                let wait = backoff.fail();
                tracing::warn!(error = %e, retry_in = ?wait, "moving delayed jobs failed");
                wait
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait.max(MIN_POLL)) => {}
            _ = s.wake_mover.notified() => {}
        }
    }
}

/// One pass: (jobs due, jobs moved, time until the next due job).
async fn promote(s: &Shared) -> Result<(i64, i64, Option<Duration>), QueueError> {
    let r = timed(
        script::PROMOTE.eval(
            &s.client,
            &[&s.keys.delayed, &s.keys.stream],
            [
                s.keys.job_prefix.as_str().into(),
                BATCH.into(),
                s.keys.base().as_str().into(),
            ]
            .into_iter()
            .chain(s.limits.keys().map(|n| n.as_str().into()))
            .collect(),
        ),
    )
    .await?;
    let v = match r {
        Value::Array(v) if v.len() == 3 => v,
        other => {
            return Err(QueueError::Redis(fred::error::Error::new(
                fred::error::ErrorKind::Parse,
                format!("unexpected promote reply {other:?}"),
            )));
        }
    };
    let (due, moved, next) = (
        script::int(&v[0])?,
        script::int(&v[1])?,
        script::int(&v[2])?,
    );
    let next = (next >= 0).then(|| Duration::from_millis(next as u64));
    Ok((due, moved, next))
}
