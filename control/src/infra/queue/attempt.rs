//! One delivery of one job on this replica: take the job's lock, decide whether it
//! runs (it may be finished already, out of attempts, or over its rate limit), run
//! the handler under a heartbeat, and record the outcome.
//!
//! Whatever goes wrong with Redis along the way, the stream entry stays pending and
//! the lock expires, so the job is reclaimed and runs again: at-least-once.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use fred::prelude::*;
use fred::types::SetOptions;
use futures_util::FutureExt;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::lock::{JobLock, ttl_ms};
use super::telemetry::{self, Outcome};
use super::{
    GROUP, JobContext, JobError, JobHandler, JobRecord, JobState, QueueError, Shared, rate, script,
    timed,
};

/// Longest error message kept in the job hash and the dead letter.
pub const MAX_ERROR_LEN: usize = 4096;
/// Pauses between tries at recording an outcome; after the last, the job is left to
/// be reclaimed and run again.
const RECORD_RETRIES: [Duration; 3] = [
    Duration::from_millis(100),
    Duration::from_millis(400),
    Duration::from_millis(1600),
];

/// One stream entry handed to a worker task, with the slot it runs in.
pub(super) struct Delivery {
    /// Stream entry id.
    pub entry: String,
    /// The job it names; `None` for a malformed entry.
    pub job_id: Option<String>,
    /// Came from XAUTOCLAIM (a dead worker's job), not a fresh read.
    pub reclaimed: bool,
    pub permit: OwnedSemaphorePermit,
}

/// Handles one delivery; holds its slot until done.
pub(super) async fn run(
    s: Arc<Shared>,
    handler: Arc<dyn JobHandler>,
    d: Delivery,
    abort: CancellationToken,
) {
    let Delivery {
        entry,
        job_id,
        reclaimed,
        permit: _slot,
    } = d;
    let Some(id) = job_id else {
        tracing::warn!(entry = %entry, "job stream entry without a job id; dropping it");
        ack_entry(&s, &entry).await;
        return;
    };
    let span =
        tracing::info_span!("job", job.id = %id, job.entry = %entry, job.reclaimed = reclaimed);
    deliver(&s, &*handler, &entry, &id, &abort)
        .instrument(span)
        .await;
}

async fn deliver(
    s: &Shared,
    handler: &dyn JobHandler,
    entry: &str,
    id: &str,
    abort: &CancellationToken,
) {
    let lock = match JobLock::acquire(s, id, s.config.lock_ttl()).await {
        Ok(Some(lock)) => lock,
        Ok(None) => {
            // Running elsewhere: leave the entry pending; the holder's heartbeat claims
            // it back, or it is reclaimed again once the holder is gone.
            tracing::debug!("job is locked by another run; leaving it");
            return;
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not lock the job; it will be retried");
            return;
        }
    };

    let h: Result<std::collections::HashMap<String, String>, _> =
        timed(s.client.hgetall(s.keys.job(id))).await;
    let rec = match h.map(|h| JobRecord::decode(id, h)) {
        Ok(Ok(Some(rec))) => rec,
        Ok(Ok(None)) => {
            tracing::warn!("job record is gone (retention passed?); dropping the delivery");
            ack_entry(s, entry).await;
            lock.release(s).await;
            return;
        }
        Ok(Err(why)) => {
            let error = format!("job record is corrupt: {why}");
            tracing::error!(error = %error, "failing the job");
            if record(|| fail(s, &lock, entry, id, &error)).await == Some(true) {
                telemetry::ended("unknown", Outcome::Failed, None);
            }
            return;
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not read the job; it will be retried");
            lock.release(s).await;
            return;
        }
    };

    match rec.state {
        state if state.is_final() => {
            tracing::debug!(
                state = state.as_str(),
                "job already finished; acking the redelivery"
            );
            ack_entry(s, entry).await;
            lock.release(s).await;
            return;
        }
        JobState::Delayed => {
            // A stray entry of a job the delayed set owns: make sure the set has it
            // (NX keeps its due time), then drop the entry.
            let added: Result<Value, _> = timed(s.client.zadd(
                &s.keys.delayed,
                Some(SetOptions::NX),
                None,
                false,
                false,
                (0.0, id),
            ))
            .await;
            if added.is_ok() {
                ack_entry(s, entry).await;
            }
            lock.release(s).await;
            return;
        }
        _ => {}
    }

    if rec.attempts >= rec.max_attempts {
        // The last run started and never recorded an outcome: its worker died.
        let error = format!(
            "attempt {} of {} was lost (its worker stopped){}",
            rec.attempts,
            rec.max_attempts,
            rec.error
                .as_deref()
                .map(|e| format!("; last error: {e}"))
                .unwrap_or_default()
        );
        tracing::warn!(error = %error, "job failed");
        if record(|| fail(s, &lock, entry, id, &error)).await == Some(true) {
            telemetry::ended(&rec.name, Outcome::Failed, None);
        }
        return;
    }

    // A job with a group took its slot when it was dispatched (`fair.rs`).
    let admitted = match &rec.group {
        Some(_) => Ok(None),
        None => rate::admit(s, &rec.name, id).await,
    };
    match admitted {
        Ok(None) => {}
        Ok(Some(wait)) => {
            tracing::debug!(wait = ?wait, "job start is over the rate limit; delaying it");
            if record(|| schedule(s, &lock, entry, id, wait, None, false)).await == Some(true) {
                telemetry::rate_limited(&rec.name);
                s.wake_mover.notify_one();
            }
            return;
        }
        Err(e) => {
            tracing::warn!(error = %e, "rate limit check failed; the job will be retried");
            lock.release(s).await;
            return;
        }
    }

    let attempt = match timed(script::ACTIVATE.eval(&s.client, &[&s.keys.job(id)], vec![]))
        .await
        .and_then(|v| Ok(script::int(&v)?))
    {
        Ok(n) => u32::try_from(n).unwrap_or(u32::MAX),
        Err(e) => {
            tracing::warn!(error = %e, "could not mark the job active; it will be retried");
            lock.release(s).await;
            return;
        }
    };
    tracing::debug!(job.name = %rec.name, attempt, "job started");

    match run_handler(s, handler, &lock, entry, &rec, attempt, abort).await {
        Ran::Done(Ok(result), took) => {
            if record(|| complete(s, &lock, entry, id, &result)).await == Some(true) {
                tracing::info!(job.name = %rec.name, attempt, took = ?took, "job completed");
                telemetry::ended(&rec.name, Outcome::Completed, Some(took));
            }
        }
        Ran::Done(Err(JobError::Retry(msg)), took) if attempt < rec.max_attempts => {
            retry(s, &lock, entry, &rec, attempt, &msg, took).await;
        }
        Ran::Panicked(msg, took) if attempt < rec.max_attempts => {
            retry(s, &lock, entry, &rec, attempt, &msg, took).await;
        }
        Ran::Done(Err(e), took) => {
            let msg = e.to_string();
            if record(|| fail(s, &lock, entry, id, &msg)).await == Some(true) {
                tracing::warn!(job.name = %rec.name, attempt, error = %msg, "job failed");
                telemetry::ended(&rec.name, Outcome::Failed, Some(took));
            }
        }
        Ran::Panicked(msg, took) => {
            if record(|| fail(s, &lock, entry, id, &msg)).await == Some(true) {
                tracing::warn!(job.name = %rec.name, attempt, error = %msg, "job failed");
                telemetry::ended(&rec.name, Outcome::Failed, Some(took));
            }
        }
        Ran::LockLost => {
            tracing::warn!("lost the job's lock mid-run; stopped it, another run owns it now");
        }
        Ran::Aborted => {
            // Not this job's fault: put it back at once and take back the attempt.
            if record(|| schedule(s, &lock, entry, id, Duration::ZERO, None, true)).await
                == Some(true)
            {
                tracing::info!("shutdown: job given up and put back");
            }
        }
    }
}

async fn retry(
    s: &Shared,
    lock: &JobLock,
    entry: &str,
    rec: &JobRecord,
    attempt: u32,
    msg: &str,
    took: Duration,
) {
    let wait = s.config.backoff(attempt);
    if record(|| schedule(s, lock, entry, &rec.id, wait, Some(msg), false)).await == Some(true) {
        tracing::info!(job.name = %rec.name, attempt, retry_in = ?wait, error = %msg, "job will be retried");
        telemetry::ended(&rec.name, Outcome::Retried, Some(took));
        s.wake_mover.notify_one();
    }
}

/// How a handler run ended.
enum Ran {
    Done(Result<serde_json::Value, JobError>, Duration),
    Panicked(String, Duration),
    /// The lock is someone else's, or could not be refreshed before it expired.
    LockLost,
    /// The drain deadline passed.
    Aborted,
}

/// Runs the handler while refreshing the lock every third of its TTL. The handler is
/// dropped if the lock is lost, or can't be refreshed before it would expire: past
/// that point another replica may start the job.
async fn run_handler(
    s: &Shared,
    handler: &dyn JobHandler,
    lock: &JobLock,
    entry: &str,
    rec: &JobRecord,
    attempt: u32,
    abort: &CancellationToken,
) -> Ran {
    let ctx = JobContext::new(s, &rec.id, &rec.name, &rec.data, attempt, rec.max_attempts);
    let started = Instant::now();
    // A panic while building the future or while polling it fails this run only.
    let work = match std::panic::catch_unwind(AssertUnwindSafe(|| handler.handle(ctx))) {
        Ok(work) => AssertUnwindSafe(work).catch_unwind(),
        Err(panic) => return Ran::Panicked(panic_message(&panic), started.elapsed()),
    };
    tokio::pin!(work);
    let ttl = s.config.lock_ttl();
    let beat = ttl / 3;
    let mut ticker = tokio::time::interval_at(lock.since + beat, beat);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The lock is known to be ours until then (Redis set its TTL after `since`).
    let mut held_until = lock.since + ttl;
    loop {
        tokio::select! {
            biased;
            r = &mut work => {
                return match r {
                    Ok(r) => Ran::Done(r, started.elapsed()),
                    Err(panic) => Ran::Panicked(panic_message(&panic), started.elapsed()),
                };
            }
            _ = abort.cancelled() => return Ran::Aborted,
            _ = ticker.tick() => {
                let sent = Instant::now();
                match tokio::time::timeout(beat, lock.refresh(s, entry, ttl)).await {
                    Ok(Ok(true)) => held_until = sent + ttl,
                    Ok(Ok(false)) => return Ran::LockLost,
                    Ok(Err(e)) => tracing::warn!(error = %e, "job heartbeat failed"),
                    Err(_) => tracing::warn!("job heartbeat timed out"),
                }
                if Instant::now() + beat >= held_until {
                    // The next beat would come too late to save the lock.
                    return Ran::LockLost;
                }
            }
        }
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned());
    format!("handler panicked: {what}")
}

/// Tries an outcome-recording script a few times. `Some(true)`: recorded;
/// `Some(false)`: another run holds the lock (nothing written); `None`: Redis kept
/// failing (the job will be reclaimed and run again).
async fn record<F, Fut>(mut op: F) -> Option<bool>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool, QueueError>>,
{
    for (i, wait) in RECORD_RETRIES.iter().enumerate() {
        match op().await {
            Ok(true) => return Some(true),
            Ok(false) => {
                tracing::warn!("another run holds the job's lock; outcome not recorded");
                return Some(false);
            }
            Err(e) => {
                tracing::warn!(error = %e, try_ = i + 1, "recording the job outcome failed");
                tokio::time::sleep(*wait).await;
            }
        }
    }
    tracing::error!("could not record the job outcome; it will run again");
    None
}

async fn complete(
    s: &Shared,
    lock: &JobLock,
    entry: &str,
    id: &str,
    result: &serde_json::Value,
) -> Result<bool, QueueError> {
    let r = timed(script::COMPLETE.eval(
        &s.client,
        &[&s.keys.job(id), &s.keys.stream, &lock.key],
        vec![
            lock.token.as_str().into(),
            GROUP.into(),
            entry.into(),
            result.to_string().into(),
            ttl_ms(s.config.completed_retention).into(),
        ],
    ))
    .await?;
    Ok(script::int(&r)? == 1)
}

async fn schedule(
    s: &Shared,
    lock: &JobLock,
    entry: &str,
    id: &str,
    delay: Duration,
    error: Option<&str>,
    refund_attempt: bool,
) -> Result<bool, QueueError> {
    let r = timed(script::SCHEDULE.eval(
        &s.client,
        &[&s.keys.job(id), &s.keys.stream, &lock.key, &s.keys.delayed],
        vec![
            lock.token.as_str().into(),
            GROUP.into(),
            entry.into(),
            id.into(),
            (delay.as_millis().min(i64::MAX as u128) as i64).into(),
            bounded(error.unwrap_or_default()).into(),
            if refund_attempt { "1" } else { "0" }.into(),
        ],
    ))
    .await?;
    Ok(script::int(&r)? == 1)
}

async fn fail(
    s: &Shared,
    lock: &JobLock,
    entry: &str,
    id: &str,
    error: &str,
) -> Result<bool, QueueError> {
    let r = timed(script::FAIL.eval(
        &s.client,
        &[&s.keys.job(id), &s.keys.stream, &lock.key, &s.keys.dead],
        vec![
            lock.token.as_str().into(),
            GROUP.into(),
            entry.into(),
            id.into(),
            bounded(error).into(),
            ttl_ms(s.config.failed_retention).into(),
        ],
    ))
    .await?;
    Ok(script::int(&r)? == 1)
}

/// Acks and deletes a stream entry that needs no run. Best effort: if it fails the
/// entry is reclaimed and looked at again.
async fn ack_entry(s: &Shared, entry: &str) {
    let r = async {
        timed(
            s.client
                .xack::<Value, _, _, _>(&s.keys.stream, GROUP, entry),
        )
        .await?;
        timed(s.client.xdel::<Value, _, _>(&s.keys.stream, entry)).await
    }
    .await;
    if let Err(e) = r {
        tracing::warn!(error = %e, "acking a job stream entry failed");
    }
}

/// `msg` cut to [`MAX_ERROR_LEN`] bytes on a character boundary.
fn bounded(msg: &str) -> String {
    if msg.len() <= MAX_ERROR_LEN {
        return msg.to_owned();
    }
    let mut end = MAX_ERROR_LEN;
    while !msg.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &msg[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_errors_are_cut_on_a_char_boundary() {
        assert_eq!(bounded("short"), "short");
        let long = "é".repeat(MAX_ERROR_LEN);
        let cut = bounded(&long);
        assert!(cut.len() <= MAX_ERROR_LEN + "…".len());
        assert!(cut.ends_with('…'));
    }

    #[test]
    fn panic_messages_are_kept() {
        let p: Box<dyn std::any::Any + Send> = Box::new("boom");
        assert_eq!(panic_message(&p), "handler panicked: boom");
        let p: Box<dyn std::any::Any + Send> = Box::new(String::from("bang"));
        assert_eq!(panic_message(&p), "handler panicked: bang");
    }
}
