//! Fair dispatch of rate-limited jobs: each job of a limited name waits in its group's
//! list (`{p}{jobs}:group:{name}:{group}`; the app's group is the tenant), and the
//! groups with waiting jobs form a ring (`{p}{jobs}:ring:{name}`). Whenever the name's
//! sliding window has a free slot, the dispatcher gives it to the next group of the
//! ring and moves that group's oldest job onto the stream, in one script
//! ([`script::DISPATCH`]): a job is always in exactly one place (list, stream or
//! delayed set), so a replica dying mid-way loses nothing.
//!
//! Bounds: a group's list holds that group's waiting jobs (in the app, one start per
//! container, so at most the tenant's container quota) and is deleted by Redis when it
//! empties; the ring holds each group with waiting jobs once and drops it with its
//! last job; the marker of the group served last (`{p}{jobs}:served:{name}`) goes with
//! it. Admission happens here, so the worker runs a dispatched job without checking
//! the limit again, and a reclaimed run of it takes no second slot.

use std::time::Duration;

use fred::prelude::*;

use super::lock::ttl_ms;
use super::{QueueError, Shared, script, timed};

/// Jobs one dispatch call may move (bounds the time Redis spends in one script).
const BATCH: i64 = 100;

/// Dispatches every free slot of every rate-limited name; returns how long until the
/// next slot frees while jobs still wait (`None`: nothing waits).
pub(super) async fn dispatch(s: &Shared) -> Result<Option<Duration>, QueueError> {
    let mut next: Option<Duration> = None;
    for (name, &(max, window)) in &s.limits {
        loop {
            let (moved, wait) = dispatch_one(s, name, max, window).await?;
            if moved > 0 {
                tracing::debug!(job.name = %name, moved, "rate-limited jobs dispatched");
            }
            if wait == 0 {
                continue;
            }
            if wait > 0 {
                let wait = Duration::from_millis(wait as u64);
                next = Some(next.map_or(wait, |n| n.min(wait)));
            }
            break;
        }
    }
    Ok(next)
}

/// One [`script::DISPATCH`] call: (jobs moved, ms until the next slot / -1 / 0).
async fn dispatch_one(
    s: &Shared,
    name: &str,
    max: u32,
    window: Duration,
) -> Result<(i64, i64), QueueError> {
    let (ring, served, rate, groups) = (
        s.keys.ring(name),
        s.keys.served(name),
        s.keys.rate(name),
        s.keys.group_prefix(name),
    );
    let r = timed(script::DISPATCH.eval(
        &s.client,
        &[&ring, &served, &rate, &s.keys.stream],
        vec![
            groups.as_str().into(),
            s.keys.job_prefix.as_str().into(),
            i64::from(max).into(),
            ttl_ms(window).into(),
            BATCH.into(),
        ],
    ))
    .await?;
    match r {
        Value::Array(v) if v.len() == 2 => Ok((script::int(&v[0])?, script::int(&v[1])?)),
        other => Err(QueueError::Redis(fred::error::Error::new(
            fred::error::ErrorKind::Parse,
            format!("unexpected dispatch reply {other:?}"),
        ))),
    }
}

/// Jobs waiting in the groups of every rate-limited name (for the depth gauge).
pub(super) async fn waiting(s: &Shared) -> Result<u64, QueueError> {
    let mut n = 0;
    for name in s.limits.keys() {
        let groups = s.keys.group_prefix(name);
        let r = timed(script::GROUPED.eval(
            &s.client,
            &[&s.keys.ring(name)],
            vec![groups.as_str().into()],
        ))
        .await?;
        n += script::int(&r)?.max(0) as u64;
    }
    Ok(n)
}
