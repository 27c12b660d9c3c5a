//! How the queue's loops wait: a pause that shutdown cuts short, and the back-off
//! after consecutive Redis errors.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// First and longest pause after a Redis error in a loop.
const ERROR_BACKOFF_MIN: Duration = Duration::from_millis(100);
const ERROR_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Sleeps `d` unless `stop` comes first; returns whether it did.
pub(super) async fn pause(stop: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        _ = stop.cancelled() => true,
        _ = tokio::time::sleep(d) => false,
    }
}

/// Exponential pause after consecutive Redis errors, 100 ms up to 5 s.
#[derive(Default)]
pub(super) struct Backoff {
    failures: u32,
}

impl Backoff {
    /// Records a failure; returns how long to wait before the next try.
    pub fn fail(&mut self) -> Duration {
        let wait = ERROR_BACKOFF_MIN
            .saturating_mul(1 << self.failures.min(16))
            .min(ERROR_BACKOFF_MAX);
        self.failures = self.failures.saturating_add(1);
        wait
    }

    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_a_cap_and_resets() {
        let mut b = Backoff::default();
        assert_eq!(b.fail(), Duration::from_millis(100));
        assert_eq!(b.fail(), Duration::from_millis(200));
        for _ in 0..40 {
            b.fail();
        }
        assert_eq!(b.fail(), ERROR_BACKOFF_MAX);
        b.reset();
        assert_eq!(b.fail(), Duration::from_millis(100));
    }
}
