//! The queue's Prometheus metrics: names, labels and units in one place.

use std::time::Duration;

use metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};

use super::QueueDepth;

/// Runs that ended, by job name and outcome (`completed`, `retried`, `failed`).
pub const JOBS_TOTAL: &str = "vnc_control_jobs_total";
/// Handler run time, by job name.
pub const JOB_DURATION: &str = "vnc_control_job_duration_seconds";
/// Jobs per state (`waiting`, `active`, `delayed`, `failed`).
pub const QUEUE_DEPTH: &str = "vnc_control_queue_depth";
/// Starts deferred by the rate limit, by job name.
pub const RATE_LIMITED_TOTAL: &str = "vnc_control_jobs_rate_limited_total";

/// How a run ended, as the `outcome` label.
#[derive(Clone, Copy, Debug)]
pub enum Outcome {
    Completed,
    Retried,
    Failed,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::Retried => "retried",
            Outcome::Failed => "failed",
        }
    }
}

/// Describes the queue's metrics to the installed recorder (call once after
/// installing it), and exports the run counts and durations of `job_names` from the
/// start (counts at 0, no durations), so alerts on failing jobs see 0 rather than nothing.
pub fn describe(job_names: &[&str]) {
    for name in job_names {
        for outcome in [Outcome::Completed, Outcome::Retried, Outcome::Failed] {
            counter!(JOBS_TOTAL, "name" => name.to_string(), "outcome" => outcome.as_str())
                .absolute(0);
        }
        // Registered without a sample: exported with empty buckets, so duration panels
        // have a series before the first job.
        let _ = histogram!(JOB_DURATION, "name" => name.to_string());
    }
    describe_counter!(JOBS_TOTAL, "Job runs that ended, by name and outcome.");
    describe_histogram!(JOB_DURATION, Unit::Seconds, "How long job handlers ran.");
    describe_gauge!(QUEUE_DEPTH, "Jobs per state, as last measured.");
    describe_counter!(
        RATE_LIMITED_TOTAL,
        "Job starts put back by the rate limit, by name."
    );
}

pub(super) fn ended(name: &str, outcome: Outcome, took: Option<Duration>) {
    counter!(JOBS_TOTAL, "name" => name.to_owned(), "outcome" => outcome.as_str()).increment(1);
    if let Some(took) = took {
        histogram!(JOB_DURATION, "name" => name.to_owned()).record(took.as_secs_f64());
    }
}

pub(super) fn rate_limited(name: &str) {
    counter!(RATE_LIMITED_TOTAL, "name" => name.to_owned()).increment(1);
}

pub(super) fn set_depth(d: &QueueDepth) {
    for (state, n) in [
        ("waiting", d.waiting),
        ("active", d.active),
        ("delayed", d.delayed),
        ("failed", d.failed),
    ] {
        gauge!(QUEUE_DEPTH, "state" => state).set(n as f64);
    }
}
