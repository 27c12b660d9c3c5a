//! Global rate limit per job name, across replicas: a sliding-window log in Redis
//! (`{p}{jobs}:rate:{name}`, a sorted set of admission times holding at most `max`
//! members, expiring with the window). A sliding window, not a fixed one, so no
//! interval of `window` length ever sees more than `max` starts, even across a
//! window boundary.
//!
//! Jobs with a group take their slot in the dispatcher (`fair.rs`, same log); this
//! check at delivery is for jobs enqueued without one by an older version.

use std::time::Duration;

use super::lock::ttl_ms;
use super::{QueueError, Shared, script, timed};

/// Admits a start of job `id` (named `name`) or says how long to wait for a slot.
/// Names without a limit are always admitted without a Redis call.
pub(super) async fn admit(
    s: &Shared,
    name: &str,
    id: &str,
) -> Result<Option<Duration>, QueueError> {
    let Some(&(max, window)) = s.limits.get(name) else {
        return Ok(None);
    };
    // Unique per admission: a job can be admitted again on a later attempt.
    let member = format!("{id}/{}", uuid::Uuid::new_v4());
    let r = timed(script::RATE.eval(
        &s.client,
        &[&s.keys.rate(name)],
        vec![i64::from(max).into(), ttl_ms(window).into(), member.into()],
    ))
    .await?;
    let wait = script::int(&r)?;
    Ok((wait > 0).then(|| Duration::from_millis(wait as u64)))
}
