//! What the app gives the queue: a [`JobHandler`] that runs one job, and what it
//! gets: a [`JobContext`] (the job, and progress reporting) and [`JobError`] to say
//! whether a failure is worth retrying.

use futures_util::future::BoxFuture;

use super::{Shared, script, timed};

/// Runs jobs. One handler serves every job name; dispatch on `job.name`. Must be
/// idempotent: a job can run again after a worker dies before recording the outcome.
pub trait JobHandler: Send + Sync + 'static {
    /// Runs one job; the `Ok` value is stored as the job's result.
    fn handle<'a>(
        &'a self,
        job: JobContext<'a>,
    ) -> BoxFuture<'a, Result<serde_json::Value, JobError>>;
}

/// Why a run failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    /// Worth another try: retried with exponential backoff until `max_attempts`
    /// runs, then failed and dead-lettered.
    #[error("{0}")]
    Retry(String),
    /// Will never work: failed and dead-lettered at once.
    #[error("{0}")]
    Fatal(String),
}

/// One run of one job, as the handler sees it.
pub struct JobContext<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub data: &'a serde_json::Value,
    /// Which run this is, from 1.
    pub attempt: u32,
    pub max_attempts: u32,
    /// `None` for a context built by [`JobContext::detached`].
    shared: Option<&'a Shared>,
}

impl<'a> JobContext<'a> {
    pub(super) fn new(
        shared: &'a Shared,
        id: &'a str,
        name: &'a str,
        data: &'a serde_json::Value,
        attempt: u32,
        max_attempts: u32,
    ) -> JobContext<'a> {
        JobContext {
            id,
            name,
            data,
            attempt,
            max_attempts,
            shared: Some(shared),
        }
    }

    /// A context tied to no queue (progress goes nowhere), to unit-test handlers.
    pub fn detached(
        id: &'a str,
        name: &'a str,
        data: &'a serde_json::Value,
        attempt: u32,
    ) -> JobContext<'a> {
        JobContext {
            id,
            name,
            data,
            attempt,
            max_attempts: attempt,
            shared: None,
        }
    }

    /// Whether a `Retry` from this run fails the job for good.
    pub fn is_last_attempt(&self) -> bool {
        self.attempt >= self.max_attempts
    }

    /// Records progress (clamped to 100) in the job hash. Best effort: a Redis error
    /// is logged, not returned, since progress is advisory.
    pub async fn progress(&self, pct: u8) {
        let Some(s) = self.shared else { return };
        let pct = i64::from(pct.min(100));
        let key = s.keys.job(self.id);
        if let Err(e) = timed(script::PROGRESS.eval(&s.client, &[&key], vec![pct.into()])).await {
            tracing::debug!(job.id = self.id, error = %e, "progress not recorded");
        }
    }
}
