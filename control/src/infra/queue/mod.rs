//! Durable job queue on Redis Streams, shared by every control replica: BullMQ's
//! semantics (at-least-once, retries with exponential backoff, delayed jobs, progress,
//! dead letters, retention, concurrency and rate limits, recovery of crashed workers).
//!
//! # Redis keys (`{p}` is the schema prefix, default `vnc:`)
//!
//! | key | type | what |
//! |---|---|---|
//! | `{p}{jobs}` | stream, group `workers` | one entry (`id` = job id) per job ready to run; acked and deleted when its run ends |
//! | `{p}{jobs}:job:{id}` | hash | the job ([`record::field`]); TTL once completed/failed (retention) |
//! | `{p}{jobs}:delayed` | sorted set | job ids waiting for a time (score = due Unix ms): delayed enqueues, retry backoff, rate-limit deferrals |
//! | `{p}{jobs}:dead` | stream | dead letters (`id`, `name`, `error`, `attempts`), trimmed to `failed_retention` |
//! | `{p}{jobs}:lock:{id}` | string, PX | the run holding the job (`{consumer}/{uuid}`), refreshed by heartbeat |
//! | `{p}{jobs}:rate:{name}` | sorted set, PX | sliding-window log of starts of one job name (at most `max` members) |
//! | `{p}{jobs}:group:{name}:{group}` | list | ids of one group's (tenant's) jobs of a rate-limited name waiting for a slot, oldest first; deleted when empty |
//! | `{p}{jobs}:ring:{name}` | list | the groups with waiting jobs of a rate-limited name, each once, in serving order |
//! | `{p}{jobs}:served:{name}` | string | the group served last (at the ring's head); gone when its group empties |
//!
//! # How a job moves
//!
//! `enqueue` writes the hash and XADDs the id (or, delayed, ZADDs it), in one script.
//! A job of a rate-limited name goes instead to the end of its group's list (`fair.rs`):
//! the dispatcher on every replica moves such jobs onto the stream one slot at a time,
//! taking the groups round-robin, so one tenant's backlog never delays another
//! tenant's next start by more than one slot. Workers XREADGROUP no more entries than they have free slots, take the job's lock
//! (`SET NX PX`), check the rate limit (only a job enqueued without a group by an older
//! version still has it checked here), mark it active and run the handler while a
//! heartbeat keeps the lock and the stream entry. The outcome is written in one script
//! that also acks the entry: completed (with result, TTL), back to the delayed set
//! (retry with backoff), or failed (dead-lettered, TTL). A mover on every replica
//! brings due delayed jobs back to the stream (or to their group's list). An XAUTOCLAIM pass on every replica
//! takes over entries whose worker stopped heart-beating (it died); that lost run
//! counts as an attempt. A job over its rate limit goes back to the delayed set until
//! a slot frees, and a run given up at shutdown goes back at once; neither costs an
//! attempt.
//!
//! Times in Redis (timestamps, due times, rate windows) come from the Redis server's
//! clock, inside the scripts, so replicas with skewed clocks still agree.
//!
//! Two runs of one job never overlap: a delivery whose lock is held elsewhere is left
//! pending, a run that loses its lock is dropped, and a delivery of a completed or
//! failed job is just acked. Handlers must still be idempotent: a worker that dies
//! after its handler's side effects but before the ack gets its job run again.
//!
//! On Redis Cluster all these keys hash to one slot (the scripts touch several): they
//! share the hash tag `{jobs}`. The queue's throughput is one Redis node's, ample for
//! desktop lifecycle jobs.

mod attempt;
mod delay;
mod fair;
mod handler;
mod housekeeping;
mod lock;
mod pace;
mod rate;
pub mod record;
pub(crate) mod script;
mod telemetry;
mod worker;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use fred::prelude::*;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use vnc_shared::schema::Keys;

pub use handler::{JobContext, JobError, JobHandler};
pub use record::{JobRecord, JobState};
pub use telemetry::{JOB_DURATION, describe as describe_metrics};

/// Consumer group of the job stream.
pub const GROUP: &str = "workers";

/// Jobs one replica runs at once.
pub const DEFAULT_CONCURRENCY: usize = 5;
/// Upper bound on `concurrency` (each slot may hold a handler and its heartbeat).
pub const MAX_CONCURRENCY: usize = 1024;
/// Runs a job gets before it fails for good.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// First retry delay; run `n` that fails is retried after `base * 2^(n-1)`.
pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_secs(2);
/// Cap on one retry delay, however many attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// How long a completed job's hash stays readable.
pub const DEFAULT_COMPLETED_RETENTION: Duration = Duration::from_secs(3600);
/// How long a failed job's hash (and its dead letter) stays.
pub const DEFAULT_FAILED_RETENTION: Duration = Duration::from_secs(24 * 3600);
/// A job whose worker stopped heart-beating this long is taken over by another
/// replica. Also the lock TTL (the heartbeat refreshes it every third of this).
pub const DEFAULT_RECLAIM_IDLE: Duration = Duration::from_secs(30);
/// Floor of `reclaim_idle`: below it heartbeats would flood Redis.
pub const MIN_RECLAIM_IDLE: Duration = Duration::from_millis(100);
/// On shutdown, how long in-flight jobs may take to finish before they are given up
/// (put back for another replica, the attempt given back). Below systemd's and Kubernetes'
/// default stop grace (90 s and 30 s).
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(25);
/// Default start rate limit: 10 `start` jobs per minute across all replicas.
pub const DEFAULT_START_RATE: (&str, u32, Duration) = ("start", 10, Duration::from_secs(60));
/// Largest job `data` accepted by `enqueue` (serialized JSON).
pub const MAX_JOB_DATA_BYTES: usize = 64 * 1024;
/// Longest job name (names are metric labels and key parts).
pub const MAX_JOB_NAME_LEN: usize = 64;
/// Bound on every single Redis call the queue makes (XREADGROUP adds its BLOCK).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// How the queue runs on this replica.
#[derive(Clone, Debug)]
pub struct QueueConfig {
    /// This replica's consumer name in the group; unique per live replica.
    pub consumer: String,
    /// Jobs this replica runs at once ([`DEFAULT_CONCURRENCY`]).
    pub concurrency: usize,
    /// Runs per job before it fails ([`DEFAULT_MAX_ATTEMPTS`]).
    pub max_attempts: u32,
    /// Retry backoff base ([`DEFAULT_BACKOFF_BASE`]), doubled per attempt.
    pub backoff_base: Duration,
    /// TTL of a completed job's hash ([`DEFAULT_COMPLETED_RETENTION`]).
    pub completed_retention: Duration,
    /// TTL of a failed job's hash and dead letter ([`DEFAULT_FAILED_RETENTION`]).
    pub failed_retention: Duration,
    /// Idle time after which a dead worker's job is reclaimed, and lock TTL
    /// ([`DEFAULT_RECLAIM_IDLE`]).
    pub reclaim_idle: Duration,
    /// Global limits per job name: at most `max` starts per sliding `window`, across
    /// all replicas ([`DEFAULT_START_RATE`]). Jobs of a limited name wait in their
    /// group's list, without losing an attempt, and get slots round-robin by group.
    pub rate_limits: Vec<(String, u32, Duration)>,
    /// Shutdown grace for in-flight jobs ([`DEFAULT_DRAIN_TIMEOUT`]).
    pub drain_timeout: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        let (name, max, window) = DEFAULT_START_RATE;
        QueueConfig {
            consumer: default_consumer(),
            concurrency: DEFAULT_CONCURRENCY,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            backoff_base: DEFAULT_BACKOFF_BASE,
            completed_retention: DEFAULT_COMPLETED_RETENTION,
            failed_retention: DEFAULT_FAILED_RETENTION,
            reclaim_idle: DEFAULT_RECLAIM_IDLE,
            rate_limits: vec![(name.to_owned(), max, window)],
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
        }
    }
}

/// `{hostname}-{pid}`: stable across a process's life, distinct between replicas.
fn default_consumer() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "control".to_owned());
    format!("{host}-{}", std::process::id())
}

impl QueueConfig {
    /// Every problem with the config, for `check` and start-up.
    pub fn validate(&self) -> Result<(), QueueError> {
        let mut problems = Vec::new();
        if self.consumer.is_empty() {
            problems.push("consumer must not be empty".to_owned());
        }
        if !(1..=MAX_CONCURRENCY).contains(&self.concurrency) {
            problems.push(format!("concurrency must be 1..={MAX_CONCURRENCY}"));
        }
        if self.max_attempts == 0 {
            problems.push("max_attempts must be at least 1".to_owned());
        }
        if self.reclaim_idle < MIN_RECLAIM_IDLE {
            problems.push(format!(
                "reclaim_idle must be at least {}",
                humantime::format_duration(MIN_RECLAIM_IDLE)
            ));
        }
        for (what, d) in [
            ("completed_retention", self.completed_retention),
            ("failed_retention", self.failed_retention),
        ] {
            if d < Duration::from_millis(1) {
                problems.push(format!("{what} must be at least 1 ms"));
            }
        }
        for (name, max, window) in &self.rate_limits {
            if *max == 0 || window.is_zero() {
                problems.push(format!(
                    "rate limit of {name:?}: max and window must be > 0"
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(QueueError::Config(problems.join("; ")))
        }
    }

    /// The config with out-of-range values pulled into range (what `Queue::new` runs).
    fn sanitized(mut self) -> QueueConfig {
        self.concurrency = self.concurrency.clamp(1, MAX_CONCURRENCY);
        self.max_attempts = self.max_attempts.max(1);
        self.reclaim_idle = self.reclaim_idle.max(MIN_RECLAIM_IDLE);
        self.completed_retention = self.completed_retention.max(Duration::from_millis(1));
        self.failed_retention = self.failed_retention.max(Duration::from_millis(1));
        self.rate_limits
            .retain(|(_, max, w)| *max > 0 && !w.is_zero());
        if self.consumer.is_empty() {
            self.consumer = default_consumer();
        }
        self
    }

    /// Delay before retrying after failed run number `attempt` (1-based).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.saturating_sub(1).min(20);
        self.backoff_base.saturating_mul(factor).min(MAX_BACKOFF)
    }

    /// The lock TTL: a run that stops heart-beating loses its job after this.
    fn lock_ttl(&self) -> Duration {
        self.reclaim_idle
    }
}

/// Why a queue call failed. Every variant but `Invalid` and `Config` means Redis is
/// unreachable or misbehaving: the API answers 503.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("redis is unavailable: {0}")]
    Redis(#[from] fred::error::Error),
    #[error(
        "redis did not answer within {}",
        humantime::format_duration(COMMAND_TIMEOUT)
    )]
    Timeout,
    #[error("job {id} record is corrupt: {why}")]
    Corrupt { id: String, why: String },
    #[error("invalid job: {0}")]
    Invalid(String),
    #[error("invalid queue config: {0}")]
    Config(String),
}

/// Jobs per state right now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct QueueDepth {
    /// On the stream, not yet delivered, or in a group's list waiting for a
    /// rate-limit slot.
    pub waiting: u64,
    /// Delivered to a worker and not yet finished (includes runs of dead workers not
    /// reclaimed yet).
    pub active: u64,
    /// In the delayed set (delayed enqueues, retry backoff, rate-limit deferrals).
    pub delayed: u64,
    /// Dead letters within `failed_retention`.
    pub failed: u64,
}

/// Every key the queue uses, built once.
struct QueueKeys {
    schema: Keys,
    stream: String,
    delayed: String,
    dead: String,
    /// `{p}{jobs}:job:` (scripts append the id).
    job_prefix: String,
}

impl QueueKeys {
    fn new(schema: Keys) -> QueueKeys {
        let q = schema.queue();
        QueueKeys {
            stream: schema.jobs(),
            delayed: format!("{q}:delayed"),
            dead: format!("{q}:dead"),
            job_prefix: schema.job(""),
            schema,
        }
    }

    fn job(&self, id: &str) -> String {
        self.schema.job(id)
    }

    fn lock(&self, id: &str) -> String {
        format!("{}:lock:{id}", self.schema.queue())
    }

    fn rate(&self, name: &str) -> String {
        format!("{}:rate:{name}", self.schema.queue())
    }

    /// `{p}{jobs}:` (scripts append `group:{name}:{group}`, `ring:{name}`, `served:{name}`).
    fn base(&self) -> String {
        format!("{}:", self.schema.queue())
    }

    fn ring(&self, name: &str) -> String {
        format!("{}:ring:{name}", self.schema.queue())
    }

    fn served(&self, name: &str) -> String {
        format!("{}:served:{name}", self.schema.queue())
    }

    /// `{p}{jobs}:group:{name}:` (the dispatcher appends the group).
    fn group_prefix(&self, name: &str) -> String {
        format!("{}:group:{name}:", self.schema.queue())
    }
}

/// What every clone of a [`Queue`] and every worker task shares.
struct Shared {
    client: Client,
    keys: QueueKeys,
    config: QueueConfig,
    /// Rate limits by job name.
    limits: HashMap<String, (u32, Duration)>,
    /// Wakes this replica's mover when it put something in the delayed set or in a
    /// group's list.
    wake_mover: tokio::sync::Notify,
}

/// The job queue. Cheap to clone; every clone talks to the same Redis.
#[derive(Clone)]
pub struct Queue {
    shared: Arc<Shared>,
}

impl Queue {
    /// A queue on `client` (already connected, or connecting: the client's own
    /// reconnect policy applies). Out-of-range config values are pulled into range;
    /// call [`QueueConfig::validate`] first to refuse them instead.
    pub fn new(client: Client, keys: Keys, config: QueueConfig) -> Queue {
        let config = config.sanitized();
        let limits = config
            .rate_limits
            .iter()
            .map(|(n, max, w)| (n.clone(), (*max, *w)))
            .collect();
        Queue {
            shared: Arc::new(Shared {
                client,
                keys: QueueKeys::new(keys),
                config,
                limits,
                wake_mover: tokio::sync::Notify::new(),
            }),
        }
    }

    pub fn config(&self) -> &QueueConfig {
        &self.shared.config
    }

    /// Adds a job; it runs as soon as a worker is free, or after `delay`. Returns its
    /// id. The job is durable once this returns. A job of a rate-limited name joins
    /// the default group (`""`); see [`Queue::enqueue_in`].
    pub async fn enqueue(
        &self,
        name: &str,
        data: serde_json::Value,
        delay: Option<Duration>,
    ) -> Result<String, QueueError> {
        self.enqueue_in("", name, data, delay).await
    }

    /// [`Queue::enqueue`] for `group` (a tenant): if `name` has a rate limit, the job
    /// waits in its group's list and groups take the limit's slots in turn; otherwise
    /// the group is ignored.
    pub async fn enqueue_in(
        &self,
        group: &str,
        name: &str,
        data: serde_json::Value,
        delay: Option<Duration>,
    ) -> Result<String, QueueError> {
        if name.is_empty() || name.len() > MAX_JOB_NAME_LEN {
            return Err(QueueError::Invalid(format!(
                "job name must be 1..={MAX_JOB_NAME_LEN} bytes"
            )));
        }
        let data = data.to_string();
        if data.len() > MAX_JOB_DATA_BYTES {
            return Err(QueueError::Invalid(format!(
                "job data is {} bytes, more than {MAX_JOB_DATA_BYTES}",
                data.len()
            )));
        }
        let s = &self.shared;
        let id = uuid::Uuid::new_v4().to_string();
        let delay_ms = delay.map_or(0, |d| d.as_millis().min(i64::MAX as u128) as i64);
        let fair = s.limits.contains_key(name);
        let base = s.keys.base();
        timed(script::ENQUEUE.eval(
            &s.client,
            &[&s.keys.job(&id), &s.keys.stream, &s.keys.delayed],
            vec![
                id.as_str().into(),
                name.into(),
                data.into(),
                i64::from(s.config.max_attempts).into(),
                delay_ms.into(),
                if fair { "1" } else { "0" }.into(),
                group.into(),
                base.as_str().into(),
            ],
        ))
        .await?;
        if delay_ms > 0 || fair {
            s.wake_mover.notify_one();
        }
        tracing::debug!(job.id = %id, job.name = name, job.group = group, delay_ms, "job enqueued");
        Ok(id)
    }

    /// The job, or `None` if there is none (never was, or its retention passed).
    pub async fn get(&self, id: &str) -> Result<Option<JobRecord>, QueueError> {
        let s = &self.shared;
        let h: HashMap<String, String> = timed(s.client.hgetall(s.keys.job(id))).await?;
        JobRecord::decode(id, h).map_err(|why| QueueError::Corrupt {
            id: id.to_owned(),
            why,
        })
    }

    /// Jobs per state; also sets the `vnc_control_queue_depth{state}` gauges.
    pub async fn depth(&self) -> Result<QueueDepth, QueueError> {
        depth_of(&self.shared).await
    }

    /// Runs workers until `shutdown` is cancelled, then waits for in-flight jobs up to
    /// `drain_timeout`; jobs still running after that are given up (put back for
    /// another replica) within a few more seconds. Redis errors are logged and
    /// retried with backoff; this never fails. Dropping the returned future stops
    /// everything at once, like a crash (running jobs are reclaimed elsewhere).
    /// Call it once per replica (one consumer name, one set of slots).
    pub async fn run(&self, handler: Arc<dyn JobHandler>, shutdown: CancellationToken) {
        worker::run(self.shared.clone(), handler, shutdown).await
    }
}

/// Jobs per state (see [`QueueDepth`]); sets the depth gauges.
async fn depth_of(s: &Shared) -> Result<QueueDepth, QueueError> {
    let (len, pending, delayed, failed, grouped) = tokio::try_join!(
        timed(s.client.xlen::<u64, _>(&s.keys.stream)),
        timed(pending_count(&s.client, &s.keys.stream)),
        timed(s.client.zcard::<u64, _>(&s.keys.delayed)),
        timed(s.client.xlen::<u64, _>(&s.keys.dead)),
        fair::waiting(s),
    )?;
    // Acked entries are deleted, so the stream holds exactly the undelivered and the
    // delivered-but-unacked ones; the rest of the waiting jobs are in groups' lists.
    let depth = QueueDepth {
        waiting: len.saturating_sub(pending) + grouped,
        active: pending,
        delayed,
        failed,
    };
    telemetry::set_depth(&depth);
    Ok(depth)
}

/// Entries delivered and not acked (XPENDING summary); 0 if the group doesn't exist.
async fn pending_count(client: &Client, stream: &str) -> Result<u64, fred::error::Error> {
    match client.xpending::<Value, _, _, _>(stream, GROUP, ()).await {
        Ok(Value::Array(v)) => Ok(v.first().and_then(Value::as_i64).unwrap_or(0).max(0) as u64),
        Ok(_) => Ok(0),
        Err(e) if e.details().contains("NOGROUP") => Ok(0),
        Err(e) => Err(e),
    }
}

/// A Redis call under [`COMMAND_TIMEOUT`].
async fn timed<T>(
    fut: impl Future<Output = Result<T, fred::error::Error>>,
) -> Result<T, QueueError> {
    match tokio::time::timeout(COMMAND_TIMEOUT, fut).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(QueueError::Timeout),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let c = QueueConfig {
            backoff_base: Duration::from_secs(2),
            ..QueueConfig::default()
        };
        assert_eq!(c.backoff(1), Duration::from_secs(2));
        assert_eq!(c.backoff(2), Duration::from_secs(4));
        assert_eq!(c.backoff(3), Duration::from_secs(8));
        assert_eq!(c.backoff(40), MAX_BACKOFF);
        assert_eq!(c.backoff(0), Duration::from_secs(2));
    }

    #[test]
    fn defaults_validate_and_bad_values_are_named() {
        QueueConfig::default().validate().unwrap();
        let bad = QueueConfig {
            concurrency: 0,
            max_attempts: 0,
            reclaim_idle: Duration::from_millis(1),
            rate_limits: vec![("start".into(), 0, Duration::from_secs(1))],
            ..QueueConfig::default()
        };
        let e = bad.validate().unwrap_err().to_string();
        for word in ["concurrency", "max_attempts", "reclaim_idle", "start"] {
            assert!(e.contains(word), "{e}");
        }
        let fixed = bad.sanitized();
        assert_eq!((fixed.concurrency, fixed.max_attempts), (1, 1));
        assert_eq!(fixed.reclaim_idle, MIN_RECLAIM_IDLE);
        assert!(fixed.rate_limits.is_empty());
    }

    #[test]
    fn keys_live_under_the_prefix() {
        let k = QueueKeys::new(Keys::new("t:"));
        assert_eq!(k.stream, "t:{jobs}");
        assert_eq!(k.job("1"), "t:{jobs}:job:1");
        assert_eq!(k.job_prefix, "t:{jobs}:job:");
        assert_eq!(k.delayed, "t:{jobs}:delayed");
        assert_eq!(k.dead, "t:{jobs}:dead");
        assert_eq!(k.lock("1"), "t:{jobs}:lock:1");
        assert_eq!(k.rate("start"), "t:{jobs}:rate:start");
        assert_eq!(k.ring("start"), "t:{jobs}:ring:start");
        assert_eq!(k.served("start"), "t:{jobs}:served:start");
        assert_eq!(k.group_prefix("start"), "t:{jobs}:group:start:");
        assert_eq!(k.base(), "t:{jobs}:");
    }
}
