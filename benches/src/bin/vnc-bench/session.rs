//! One session of the `conns` run after it is open: either it pings the echo upstream on
//! its own ticker, or (rate 0) it sits idle and only watches for the peer closing.
//! It returns the connection still open so the caller can sample memory with every
//! session alive before closing them.

use std::collections::HashMap;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};

use crate::client::Conn;
use crate::ping::{Ping, micros};

/// Time the sessions' connections get to close at the end of a run.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Read buffer of an idle TCP session (what it reads is unexpected anyway).
const IDLE_SCRATCH: usize = 4 * 1024;

/// The clock and pace shared by all sessions of a run.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Pings sent before this are done but not recorded.
    pub measure_from: Instant,
    /// Sessions stop here; a ping still in flight then is counted as unanswered.
    pub end: Instant,
    /// Ping period and this session's first tick; `None` for an idle session.
    pub pace: Option<(Duration, Instant)>,
    /// Bound on one round trip; exceeding it ends the session as errored.
    pub ping_timeout: Duration,
    /// Bytes per ping.
    pub size: usize,
    /// Pings framed as RFB messages.
    pub rfb: bool,
}

/// What one session did during the run (a `conns` or a `mixed` one).
#[derive(Default)]
pub struct Outcome {
    /// Present unless the session failed; still open.
    pub conn: Option<Conn>,
    /// RTTs in µs of pings (key strokes) sent after warmup.
    pub samples: Vec<u32>,
    /// Completed round trips, warmup included.
    pub answered: u64,
    /// Pings (key strokes) in flight when the run ended.
    pub unanswered: u64,
    /// Bytes received after warmup besides the answers (`mixed`: the server's stream).
    pub bytes: u64,
    /// Why the session ended early, if it did (peer closed, error, ping timeout).
    pub error: Option<String>,
}

/// What the sessions of a run add up to.
#[derive(Default)]
pub struct Totals {
    pub samples: Vec<u32>,
    pub answered: u64,
    pub unanswered: u64,
    pub bytes: u64,
    /// Why sessions ended early, with how many did so for each reason.
    pub errors: HashMap<String, usize>,
}

/// The sessions' connections, closing.
pub struct Closing(JoinSet<()>);

impl Closing {
    /// Waits until every connection is closed, or [`CLOSE_TIMEOUT`] has passed.
    pub async fn wait(mut self) {
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
            while self.0.join_next().await.is_some() {}
        })
        .await;
    }
}

impl Totals {
    /// Adds `outcomes` up (before closing, so the numbers don't wait on slow closes)
    /// and starts closing their connections.
    pub fn of(outcomes: Vec<Outcome>) -> (Totals, Closing) {
        let (mut t, mut closes) = (Totals::default(), JoinSet::new());
        for o in outcomes {
            t.answered += o.answered;
            t.unanswered += o.unanswered;
            t.bytes += o.bytes;
            t.samples.extend_from_slice(&o.samples);
            if let Some(e) = o.error {
                *t.errors.entry(e).or_default() += 1;
            }
            if let Some(conn) = o.conn {
                closes.spawn(conn.close());
            }
        }
        (t, Closing(closes))
    }

    /// Sessions that ended early.
    pub fn errored(&self) -> usize {
        self.errors.values().sum()
    }
}

pub async fn run(mut conn: Conn, plan: Plan) -> Outcome {
    let mut out = Outcome::default();
    let result = match plan.pace {
        Some((period, first)) => ping_loop(&mut conn, &plan, period, first, &mut out).await,
        None => idle(&mut conn, plan.end).await,
    };
    match result {
        Ok(()) => out.conn = Some(conn),
        Err(e) => out.error = Some(e),
    }
    out
}

async fn ping_loop(
    conn: &mut Conn,
    plan: &Plan,
    period: Duration,
    first: Instant,
    out: &mut Outcome,
) -> Result<(), String> {
    let mut ping = Ping::new(plan.size, plan.rfb).map_err(|e| e.to_string())?;
    let expected = plan.end.saturating_duration_since(first).as_secs_f64() / period.as_secs_f64();
    out.samples.reserve(expected.ceil() as usize + 1);
    let mut ticker = tokio::time::interval_at(first, period);
    // A late ping does not trigger a burst of catch-up pings.
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let sent_at = tokio::select! {
            biased;
            _ = tokio::time::sleep_until(plan.end) => return Ok(()),
            t = ticker.tick() => t,
        };
        if sent_at >= plan.end {
            return Ok(());
        }
        let round = tokio::time::timeout(plan.ping_timeout, ping.round_trip(conn));
        match tokio::time::timeout_at(plan.end, round).await {
            Err(_run_over) => {
                out.unanswered += 1;
                return Ok(());
            }
            Ok(Err(_timeout)) => {
                return Err(format!("no echo within {:?}", plan.ping_timeout));
            }
            Ok(Ok(Err(e))) => return Err(format!("{e:#}")),
            Ok(Ok(Ok(rtt))) => {
                out.answered += 1;
                if sent_at >= plan.measure_from {
                    out.samples.push(micros(rtt));
                }
            }
        }
    }
}

async fn idle(conn: &mut Conn, end: Instant) -> Result<(), String> {
    let mut scratch = vec![0u8; IDLE_SCRATCH];
    let deadline = tokio::time::sleep_until(end);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            biased;
            _ = &mut deadline => return Ok(()),
            got = conn.recv_count(&mut scratch) => match got {
                Ok(got) if got.bytes == 0 && got.messages == 0 => {
                    return Err("closed by peer while idle".into());
                }
                // Unexpected but harmless: a server may send something unprompted.
                Ok(_) => {}
                Err(e) => return Err(format!("{e:#}")),
            },
        }
    }
}
