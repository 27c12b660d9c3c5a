//! `conns`: many concurrent sessions. Phase 1 opens them (bounded connect concurrency,
//! each connect under a timeout, failures counted by reason). Phase 2 runs them for
//! `duration`: each pings `rate` times per second with tickers staggered uniformly over
//! the period (session j of m starts at j·period/m), or with `--rate 0` stays idle. With
//! `--pid`, the VmRSS of that process (the relay) is sampled before phase 1, after it
//! (sessions open and idle), and at the end, giving the memory cost per session.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, ensure};
use clap::Args;
use serde_json::json;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::client::{Conn, WsClient};
use crate::ping::micros;
use crate::procfs;
use crate::report;
use crate::session::{self, Outcome, Plan, Totals};
use crate::stats::Summary;
use crate::target::{TargetArgs, Targets};

/// tungstenite read buffer per session: pings are tiny, and thousands of sessions with
/// the 128 KiB default would make the bench itself the memory hog.
const WS_READ_BUF: usize = 4 * 1024;
/// File descriptors kept free for everything that is not a session.
const FD_HEADROOM: u64 = 64;
/// Distinct failure reasons printed.
const MAX_REASONS: usize = 5;

#[derive(Args, Debug)]
pub struct ConnsArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Sessions to open.
    #[arg(long)]
    pub sessions: usize,
    /// Pings per second per session; 0 keeps the sessions idle (memory measurement).
    #[arg(long, default_value_t = 5.0)]
    pub rate: f64,
    /// Length of the run once all sessions are open.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Pings sent in the first part of the run are not measured.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// Connects in flight at once.
    #[arg(long, default_value_t = 200)]
    pub connect_concurrency: usize,
    /// Process whose VmRSS is sampled (the relay under test).
    #[arg(long)]
    pub pid: Option<u32>,
    /// Bytes per ping.
    #[arg(long, default_value_t = 16)]
    pub size: usize,
    /// Pause after all sessions are open, before the "open" RSS sample.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub settle: Duration,
    /// Bound on one round trip; exceeding it ends that session as errored.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub ping_timeout: Duration,
}

pub async fn run(args: ConnsArgs) -> Result<()> {
    ensure!(args.sessions > 0, "--sessions must be at least 1");
    ensure!(
        args.connect_concurrency > 0,
        "--connect-concurrency must be at least 1"
    );
    ensure!(
        args.rate >= 0.0 && args.rate.is_finite() && args.rate <= 1000.0,
        "--rate must be within 0..=1000"
    );
    if let Some(limit) = procfs::open_file_limit()
        && args.sessions as u64 + FD_HEADROOM > limit
    {
        eprintln!(
            "warning: {} sessions need about as many fds; the open-file limit is {limit}",
            args.sessions
        );
    }
    let targets = Arc::new(Targets::load(&args.target).await?);
    // Fail fast on a wrong --pid; later samples only warn (the process may have died,
    // which the session errors then explain).
    let rss_before = args.pid.map(procfs::vm_rss_kib).transpose()?;

    let (conns, connect) = open_all(
        &targets,
        args.sessions,
        args.connect_concurrency,
        WS_READ_BUF,
    )
    .await;
    tokio::time::sleep(args.settle).await;
    let rss_open = rss(args.pid);

    let outcomes = run_sessions(conns, &args, targets.rfb()).await?;
    let rss_end = rss(args.pid);

    let (totals, closing) = Totals::of(outcomes);
    let errored = totals.errored();
    let (pings, unanswered, errors) = (totals.answered, totals.unanswered, totals.errors);
    let rtt = Summary::from_samples(totals.samples);
    let opened = connect.opened;

    println!(
        "conns {} sessions={} rate={}/s duration={:?} warmup={:?} size={}B",
        targets.label(),
        args.sessions,
        args.rate,
        args.duration,
        args.warmup,
        args.size
    );
    println!(
        "  connect: opened {opened} of {} in {:.2} s, failed {}; connect time {}",
        args.sessions,
        connect.elapsed.as_secs_f64(),
        connect.failed(),
        connect.times.line()
    );
    print_reasons("connect failure", &connect.failures);
    println!(
        "  run: {errored} session(s) errored or closed; {pings} pings, {unanswered} unanswered at the end"
    );
    print_reasons("session error", &errors);
    if args.rate > 0.0 {
        println!("  rtt: {}", rtt.line());
    }
    let rss_json = match args.pid {
        Some(pid) => {
            let per_session = match (rss_before, rss_open) {
                (Some(before), Some(open)) if opened > 0 => {
                    Some((open as f64 - before as f64) / opened as f64)
                }
                _ => None,
            };
            let kib = |v: Option<u64>| v.map_or("n/a".to_owned(), |v| format!("{v} KiB"));
            println!(
                "  rss of pid {pid}: before {}, open {}, end {}; {} per open session",
                kib(rss_before),
                kib(rss_open),
                kib(rss_end),
                per_session.map_or("n/a".to_owned(), |v| format!("{v:.1} KiB"))
            );
            json!({
                "pid": pid,
                "before_kib": rss_before,
                "open_kib": rss_open,
                "end_kib": rss_end,
                "delta_per_session_kib": per_session.map(report::round3),
            })
        }
        None => serde_json::Value::Null,
    };
    report::result(&json!({
        "mode": "conns",
        "target": targets.label(),
        "sessions": args.sessions,
        "opened": opened,
        "failed_connects": connect.failed(),
        "connect_s": report::round3(connect.elapsed.as_secs_f64()),
        "connect_us": connect.times.to_json(),
        "errored": errored,
        "rate": args.rate,
        "duration_s": args.duration.as_secs_f64(),
        "warmup_s": args.warmup.as_secs_f64(),
        "size": args.size,
        "pings": pings,
        "measured": rtt.count,
        "unanswered": unanswered,
        "rtt_us": rtt.to_json(),
        "rss": rss_json,
        "connect_failures": top_reasons(&connect.failures),
        "session_errors": top_reasons(&errors),
    }));

    closing.wait().await;
    Ok(())
}

/// How phase 1 went.
pub struct ConnectReport {
    pub opened: usize,
    pub failures: HashMap<String, usize>,
    /// Successful connect times, µs.
    pub times: Summary,
    pub elapsed: Duration,
}

impl ConnectReport {
    pub fn failed(&self) -> usize {
        self.failures.values().sum()
    }
}

/// Opens `n` sessions, `concurrency` connects at once, tungstenite reading
/// `ws_read_buffer` bytes at a time.
pub async fn open_all(
    targets: &Arc<Targets>,
    n: usize,
    concurrency: usize,
    ws_read_buffer: usize,
) -> (Vec<Conn>, ConnectReport) {
    let started = Instant::now();
    let permits = Arc::new(Semaphore::new(concurrency));
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let permits = Arc::clone(&permits);
            let targets = Arc::clone(targets);
            tokio::spawn(async move {
                let _permit = permits.acquire_owned().await;
                let t = std::time::Instant::now();
                let conn = targets
                    .connect(
                        i,
                        WsClient::Tungstenite {
                            read_buffer: ws_read_buffer,
                        },
                    )
                    .await;
                (conn, t.elapsed())
            })
        })
        .collect();

    let mut conns = Vec::with_capacity(n);
    let mut failures: HashMap<String, usize> = HashMap::new();
    let mut times = Vec::with_capacity(n);
    for task in tasks {
        match task.await {
            Ok((Ok(conn), took)) => {
                conns.push(conn);
                times.push(micros(took));
            }
            Ok((Err(e), _)) => *failures.entry(format!("{e:#}")).or_default() += 1,
            Err(e) => *failures.entry(format!("connect task: {e}")).or_default() += 1,
        }
    }
    let report = ConnectReport {
        opened: conns.len(),
        failures,
        times: Summary::from_samples(times),
        elapsed: started.elapsed(),
    };
    (conns, report)
}

async fn run_sessions(conns: Vec<Conn>, args: &ConnsArgs, rfb: bool) -> Result<Vec<Outcome>> {
    let m = conns.len();
    let start = Instant::now();
    let period = (args.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / args.rate));
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(j, conn)| {
            let plan = Plan {
                measure_from: start + args.warmup,
                end: start + args.duration,
                // Uniform stagger so the load is smooth rather than m pings at once.
                pace: period.map(|p| (p, start + p.mul_f64(j as f64 / m as f64))),
                ping_timeout: args.ping_timeout,
                size: args.size,
                rfb,
            };
            tokio::spawn(session::run(conn, plan))
        })
        .collect();
    let mut outcomes = Vec::with_capacity(m);
    for task in tasks {
        outcomes.push(task.await?);
    }
    Ok(outcomes)
}

fn rss(pid: Option<u32>) -> Option<u64> {
    match procfs::vm_rss_kib(pid?) {
        Ok(kib) => Some(kib),
        Err(e) => {
            eprintln!("warning: {e:#}");
            None
        }
    }
}

/// Reasons, most frequent first.
fn sorted_reasons(reasons: &HashMap<String, usize>) -> Vec<(&String, &usize)> {
    let mut sorted: Vec<_> = reasons.iter().collect();
    sorted.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
    sorted
}

pub fn print_reasons(what: &str, reasons: &HashMap<String, usize>) {
    let sorted = sorted_reasons(reasons);
    for (reason, count) in sorted.iter().take(MAX_REASONS) {
        println!("    {what} ×{count}: {reason}");
    }
    if sorted.len() > MAX_REASONS {
        println!("    … and {} other reason(s)", sorted.len() - MAX_REASONS);
    }
}

/// The most frequent reasons as a JSON object `{reason: count}`.
pub fn top_reasons(reasons: &HashMap<String, usize>) -> serde_json::Value {
    sorted_reasons(reasons)
        .into_iter()
        .take(MAX_REASONS)
        .map(|(reason, count)| (reason.clone(), json!(count)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}
