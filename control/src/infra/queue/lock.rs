//! The per-job lock (`{p}{jobs}:lock:{id}`): held by one run at a time, across
//! replicas, on top of the consumer group's single delivery. Needed because a stream
//! entry can be delivered twice (XAUTOCLAIM of a slow but live worker, a redelivery
//! after a lost ack); the lock makes the second delivery wait instead of running.

use std::time::Duration;

use fred::prelude::*;
use fred::types::{Expiration, SetOptions};

use super::{GROUP, QueueError, Shared, script, timed};

/// A lock this run holds (or held: it can expire under us if heartbeats fail).
pub(super) struct JobLock {
    pub key: String,
    /// `{consumer}/{uuid}`: names the holder, unique per run.
    pub token: String,
    /// When the SET was sent: the lock lives at least until `since + ttl`.
    pub since: tokio::time::Instant,
}

impl JobLock {
    /// Takes the lock of job `id` for `ttl`; `None` if another run holds it.
    pub async fn acquire(
        s: &Shared,
        id: &str,
        ttl: Duration,
    ) -> Result<Option<JobLock>, QueueError> {
        let lock = JobLock {
            key: s.keys.lock(id),
            token: format!("{}/{}", s.config.consumer, uuid::Uuid::new_v4()),
            since: tokio::time::Instant::now(),
        };
        let set: Option<String> = timed(s.client.set(
            &lock.key,
            lock.token.as_str(),
            Some(Expiration::PX(ttl_ms(ttl))),
            Some(SetOptions::NX),
            false,
        ))
        .await?;
        Ok(set.map(|_| lock))
    }

    /// Extends the lock by `ttl` and claims stream entry `entry` back for this
    /// consumer (resetting its idle time). `false`: the lock is someone else's now.
    pub async fn refresh(
        &self,
        s: &Shared,
        entry: &str,
        ttl: Duration,
    ) -> Result<bool, QueueError> {
        let r = timed(script::HEARTBEAT.eval(
            &s.client,
            &[&self.key, &s.keys.stream],
            vec![
                self.token.as_str().into(),
                ttl_ms(ttl).into(),
                GROUP.into(),
                s.config.consumer.as_str().into(),
                entry.into(),
            ],
        ))
        .await?;
        Ok(script::int(&r)? == 1)
    }

    /// Drops the lock if still ours; errors are logged (it expires anyway).
    pub async fn release(&self, s: &Shared) {
        let r =
            timed(script::RELEASE.eval(&s.client, &[&self.key], vec![self.token.as_str().into()]))
                .await;
        if let Err(e) = r {
            tracing::debug!(lock = %self.key, error = %e, "lock not released; it will expire");
        }
    }
}

pub(super) fn ttl_ms(d: Duration) -> i64 {
    d.as_millis().clamp(1, i64::MAX as u128) as i64
}
