//! The consumer side on one replica: the fetch loop (XAUTOCLAIM of dead workers'
//! jobs when due, then XREADGROUP of new ones), the slots that bound how many jobs
//! run at once, and the drain at shutdown. The mover (`delay.rs`) and the upkeep
//! (`housekeeping.rs`) run beside it.
//!
//! The fetch loop takes free slots (semaphore permits) *before* asking Redis for
//! entries and asks for no more entries than it holds: an entry this replica can't
//! start stays available to the others. Every delivery travels with its permit to
//! `attempt::run`. One loop does both kinds of fetch so the slots held during a
//! blocking read never starve the reclaim.
//!
//! Everything runs in `JoinSet`s owned by [`run`]'s future (rather than a
//! `TaskTracker`, whose tasks outlive it): dropping that future aborts every loop and
//! every running job, which is what a crash looks like to the other replicas.

use std::sync::Arc;
use std::time::Duration;

use fred::prelude::*;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::attempt::Delivery;
use super::pace::{Backoff, pause};
use super::{
    COMMAND_TIMEOUT, GROUP, JobHandler, QueueError, Shared, attempt, delay, housekeeping, timed,
};

/// XREADGROUP BLOCK: how long a read waits for entries; bounds how late shutdown is
/// noticed.
pub const READ_BLOCK: Duration = Duration::from_secs(1);
/// Most entries one XAUTOCLAIM pass takes (also bounded by free slots).
pub const MAX_CLAIM_BATCH: usize = 16;
/// After the drain deadline, how long given-up jobs get to put themselves back.
pub const ABORT_GRACE: Duration = Duration::from_secs(5);
/// Runs the loops and the jobs until `shutdown`, then drains (see `Queue::run`).
pub(super) async fn run(s: Arc<Shared>, handler: Arc<dyn JobHandler>, shutdown: CancellationToken) {
    let concurrency = s.config.concurrency;
    let slots = Arc::new(Semaphore::new(concurrency));
    // Never holds more than `concurrency` deliveries: each carries a permit.
    let (tx, mut rx) = mpsc::channel::<Delivery>(concurrency);
    // Cancelled when the drain deadline passes: running jobs give up.
    let abort = CancellationToken::new();

    let mut loops = JoinSet::new();
    loops.spawn(fetch_loop(s.clone(), slots, tx, shutdown.clone()));
    loops.spawn(delay::mover(s.clone(), shutdown.clone()));
    loops.spawn(housekeeping::run(s.clone(), shutdown.clone()));
    tracing::info!(consumer = %s.config.consumer, concurrency, "job workers started");

    let mut jobs = JoinSet::new();
    let mut deadline = None;
    // Until the fetch loop has seen shutdown and dropped its sender.
    loop {
        tokio::select! {
            d = rx.recv() => match d {
                Some(d) => {
                    jobs.spawn(attempt::run(s.clone(), handler.clone(), d, abort.clone()));
                }
                None => break,
            },
            Some(r) = jobs.join_next() => reap(r),
            _ = shutdown.cancelled(), if deadline.is_none() => {
                deadline = Some(Instant::now() + s.config.drain_timeout);
            }
        }
    }
    let deadline = deadline.unwrap_or_else(|| Instant::now() + s.config.drain_timeout);
    while let Some(r) = loops.join_next().await {
        reap(r);
    }

    tracing::info!(jobs = jobs.len(), "job workers draining");
    if tokio::time::timeout_at(deadline, drain(&mut jobs))
        .await
        .is_err()
    {
        tracing::warn!(
            jobs = jobs.len(),
            "drain deadline passed; giving up running jobs"
        );
        abort.cancel();
        if tokio::time::timeout(ABORT_GRACE, drain(&mut jobs))
            .await
            .is_err()
        {
            jobs.shutdown().await;
        }
    }
    tracing::info!(consumer = %s.config.consumer, "job workers stopped");
}

async fn drain(jobs: &mut JoinSet<()>) {
    while let Some(r) = jobs.join_next().await {
        reap(r);
    }
}

fn reap(r: Result<(), tokio::task::JoinError>) {
    if let Err(e) = r
        && e.is_panic()
    {
        tracing::error!(error = %e, "a job queue task panicked");
    }
}

/// Fetches work while slots are free: XAUTOCLAIM (every `reclaim_idle / 2`) takes
/// over entries idle for `reclaim_idle` (their worker stopped heart-beating),
/// XREADGROUP reads new ones.
async fn fetch_loop(
    s: Arc<Shared>,
    slots: Arc<Semaphore>,
    tx: mpsc::Sender<Delivery>,
    stop: CancellationToken,
) {
    let claim_every =
        (s.config.reclaim_idle / 2).clamp(Duration::from_millis(50), Duration::from_secs(15));
    // Short enough that a due claim pass is never late by more than its own period.
    let block = READ_BLOCK.min(claim_every);
    let mut next_claim = Instant::now() + claim_every;
    // XAUTOCLAIM scans the pending list from a cursor; "0-0" starts over.
    let mut cursor = String::from("0-0");
    let mut backoff = Backoff::default();
    let mut reader: Option<Reader> = None;
    let mut group_ready = false;
    while !stop.is_cancelled() {
        if !group_ready {
            match ensure_group(&s).await {
                Ok(()) => group_ready = true,
                Err(e) => {
                    let wait = backoff.fail();
                    tracing::warn!(error = %e, retry_in = ?wait, "creating the job consumer group failed");
                    pause(&stop, wait).await;
                    continue;
                }
            }
        }
        let r = match reader.take() {
            Some(r) => r,
            None => match Reader::connect(&s).await {
                Ok(r) => r,
                Err(e) => {
                    let wait = backoff.fail();
                    tracing::warn!(error = %e, retry_in = ?wait, "job reader could not connect");
                    pause(&stop, wait).await;
                    continue;
                }
            },
        };
        // Wait for one free slot, then take every other free one.
        let first = tokio::select! {
            p = slots.clone().acquire_owned() => p,
            _ = stop.cancelled() => break,
        };
        let Ok(first) = first else { break };
        let mut permits = vec![first];
        while let Ok(p) = slots.clone().try_acquire_owned() {
            permits.push(p);
        }

        if Instant::now() >= next_claim {
            next_claim = Instant::now() + claim_every;
            let count = permits.len().min(MAX_CLAIM_BATCH);
            match claim(&s, &cursor, count).await {
                Ok((next, entries)) => {
                    cursor = next;
                    for (entry, job_id) in entries {
                        let Some(permit) = permits.pop() else { break };
                        tracing::info!(entry = %entry, job.id = ?job_id, "reclaimed a job from a stopped worker");
                        let d = Delivery {
                            entry,
                            job_id,
                            reclaimed: true,
                            permit,
                        };
                        if tx.send(d).await.is_err() {
                            return;
                        }
                    }
                }
                Err(e) if is_nogroup(&e) => group_ready = false,
                Err(e) => tracing::warn!(error = %e, "reclaiming stalled jobs failed"),
            }
            if permits.is_empty() {
                reader = Some(r);
                continue;
            }
        }

        match r.read(&s, permits.len(), block).await {
            Ok(entries) => {
                backoff.reset();
                reader = Some(r);
                for (entry, job_id) in entries {
                    let Some(permit) = permits.pop() else { break };
                    let d = Delivery {
                        entry,
                        job_id,
                        reclaimed: false,
                        permit,
                    };
                    if tx.send(d).await.is_err() {
                        return;
                    }
                }
            }
            Err(e) if is_nogroup(&e) => {
                group_ready = false;
                reader = Some(r);
            }
            Err(e) => {
                // Drop the reader: its connection may be stuck mid-reply.
                drop(r);
                let wait = backoff.fail();
                tracing::warn!(error = %e, retry_in = ?wait, "reading the job stream failed");
                pause(&stop, wait).await;
            }
        }
    }
}

/// One XAUTOCLAIM call: the next cursor and the (entry, job id) pairs claimed.
async fn claim(
    s: &Shared,
    cursor: &str,
    count: usize,
) -> Result<(String, Vec<(String, Option<String>)>), QueueError> {
    let idle_ms = s.config.reclaim_idle.as_millis().min(u64::MAX as u128) as u64;
    let v: Value = timed(s.client.xautoclaim(
        &s.keys.stream,
        GROUP,
        s.config.consumer.as_str(),
        idle_ms,
        cursor,
        Some(count as u64),
        false,
    ))
    .await?;
    // [next cursor, entries, deleted ids (Redis 7; dropped from the PEL by Redis)]
    let Value::Array(mut parts) = v else {
        return Ok(("0-0".to_owned(), Vec::new()));
    };
    parts.truncate(2);
    let entries = parts.pop().map(parse_entries).unwrap_or_default();
    let next = parts
        .pop()
        .and_then(|c| c.as_string())
        .unwrap_or_else(|| "0-0".to_owned());
    Ok((next, entries))
}

/// `XGROUP CREATE {p}{jobs} workers 0 MKSTREAM`; an existing group is fine. From 0 so
/// jobs enqueued before the first worker ever started are delivered too.
async fn ensure_group(s: &Shared) -> Result<(), QueueError> {
    match timed(
        s.client
            .xgroup_create::<Value, _, _, _>(&s.keys.stream, GROUP, "0", true),
    )
    .await
    {
        Ok(_) => Ok(()),
        Err(QueueError::Redis(e)) if e.details().contains("BUSYGROUP") => Ok(()),
        Err(e) => Err(e),
    }
}

fn is_nogroup(e: &impl std::fmt::Display) -> bool {
    e.to_string().contains("NOGROUP")
}

/// A dedicated connection for XREADGROUP BLOCK, which would stall every other command
/// queued behind it on the shared client's connection. Closed when dropped.
struct Reader {
    client: Client,
}

impl Reader {
    async fn connect(s: &Shared) -> Result<Reader, QueueError> {
        let reader = Reader {
            client: s.client.clone_new(),
        };
        timed(reader.client.init()).await?;
        Ok(reader)
    }

    /// Up to `count` new entries, waiting at most `block` for the first.
    async fn read(
        &self,
        s: &Shared,
        count: usize,
        block: Duration,
    ) -> Result<Vec<(String, Option<String>)>, QueueError> {
        let block_ms = block.as_millis().max(1) as u64;
        let read = self.client.xreadgroup::<Value, _, _, _, _>(
            GROUP,
            s.config.consumer.as_str(),
            Some(count as u64),
            Some(block_ms),
            false,
            &s.keys.stream,
            ">",
        );
        let v = tokio::time::timeout(block + COMMAND_TIMEOUT, read)
            .await
            .map_err(|_| QueueError::Timeout)??;
        Ok(parse_read(v))
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        let client = self.client.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = tokio::time::timeout(COMMAND_TIMEOUT, client.quit()).await;
            });
        }
    }
}

/// Entries of an XREADGROUP reply: nil (timeout), `[[stream, entries]]` (RESP2) or
/// `{stream: entries}` (RESP3).
fn parse_read(v: Value) -> Vec<(String, Option<String>)> {
    match v {
        Value::Array(streams) => streams
            .into_iter()
            .flat_map(|s| match s {
                Value::Array(mut kv) if kv.len() == 2 => {
                    kv.pop().map(parse_entries).unwrap_or_default()
                }
                _ => Vec::new(),
            })
            .collect(),
        Value::Map(m) => m.inner().into_values().flat_map(parse_entries).collect(),
        _ => Vec::new(),
    }
}

/// `[[entry id, fields], ...]` → (entry id, value of field `id`).
fn parse_entries(v: Value) -> Vec<(String, Option<String>)> {
    let Value::Array(items) = v else {
        return Vec::new();
    };
    items
        .into_iter()
        .filter_map(|item| {
            let Value::Array(mut parts) = item else {
                return None;
            };
            parts.truncate(2);
            let fields = if parts.len() == 2 { parts.pop() } else { None };
            let entry = parts.pop()?.as_string()?;
            Some((entry, fields.and_then(job_id_field)))
        })
        .collect()
}

fn job_id_field(fields: Value) -> Option<String> {
    match fields {
        Value::Array(kv) => kv
            .chunks(2)
            .find(|c| c.len() == 2 && c[0].as_str().as_deref() == Some("id"))
            .and_then(|c| c[1].as_string()),
        Value::Map(m) => m
            .inner()
            .into_iter()
            .find(|(k, _)| k.as_str() == Some("id"))
            .and_then(|(_, v)| v.as_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: &str) -> Value {
        Value::from(x)
    }

    #[test]
    fn parses_resp2_read_replies() {
        let reply = Value::Array(vec![Value::Array(vec![
            s("vnc:{jobs}"),
            Value::Array(vec![
                Value::Array(vec![s("1-0"), Value::Array(vec![s("id"), s("j1")])]),
                Value::Array(vec![s("2-0"), Value::Array(vec![s("other"), s("x")])]),
                Value::Array(vec![s("3-0"), Value::Null]),
            ]),
        ])]);
        assert_eq!(
            parse_read(reply),
            vec![
                ("1-0".to_owned(), Some("j1".to_owned())),
                ("2-0".to_owned(), None),
                ("3-0".to_owned(), None),
            ]
        );
        assert!(parse_read(Value::Null).is_empty());
    }
}
