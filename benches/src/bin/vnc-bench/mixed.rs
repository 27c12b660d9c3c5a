//! `mixed`: input under streaming. N sessions against the `desktop` stand-in (through
//! the target), each receiving the FramebufferUpdates it streams on its timer and
//! sending key strokes (KeyEvent press + release, 16 bytes) at `rate` per second, tickers
//! staggered as in `conns`. The stand-in answers each release in-band with a
//! ServerCutText carrying the keysym (a sequence number), so a key stroke's round trip
//! is timed on the same connection, behind whatever update bytes are queued ahead of
//! it. Sessions are opened with `conns`' connect phase; the first `warmup` is not
//! measured. With `--pid NAME=PID` (repeatable), each server process's CPU seconds over
//! the measured part and its RSS (at the end, all sessions still open, and its peak)
//! are reported too, summed with its direct children's (websockify forks a process per
//! connection; RSS summed that way counts shared pages once per process).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, ensure};
use clap::Args;
use serde_json::json;
use tokio::time::{Instant, MissedTickBehavior};

use crate::client::Conn;
use crate::conns::{self, print_reasons, top_reasons};
use crate::ping::micros;
use crate::procfs;
use crate::report;
use crate::rfb::{self, ServerStream};
use crate::session::{Outcome, Totals};
use crate::stats::Summary;
use crate::target::{TargetArgs, Targets};

/// Read size per session (TCP scratch, tungstenite's read buffer): a 40 KB update in a
/// few reads, 2,000 sessions in 32 MiB.
const READ_BUF: usize = 16 * 1024;

#[derive(Args, Debug)]
pub struct MixedArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Sessions to open.
    #[arg(long)]
    pub sessions: usize,
    /// Key strokes per second per session.
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// Length of the run once all sessions are open.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Key strokes sent and bytes received in the first part of the run are not
    /// measured.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// Connects in flight at once.
    #[arg(long, default_value_t = 200)]
    pub connect_concurrency: usize,
    /// A server process to report, `NAME=PID` (the relay, the stand-in). Repeatable.
    #[arg(long = "pid", value_name = "NAME=PID", value_parser = parse_pid)]
    pub pids: Vec<(String, u32)>,
    /// Bound on one key stroke's round trip; exceeding it ends that session as errored.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub input_timeout: Duration,
}

/// CPU seconds of `pid` and its children (dead children are lost: a server forking per
/// connection keeps them alive while its sessions are open).
fn tree_cpu(pid: u32) -> Option<f64> {
    let main = procfs::cpu_seconds(pid).ok()?;
    let children: f64 = procfs::with_children(pid)[1..]
        .iter()
        .filter_map(|p| procfs::cpu_seconds(*p).ok())
        .sum();
    Some(main + children)
}

fn parse_pid(raw: &str) -> Result<(String, u32)> {
    let (name, pid) = raw
        .split_once('=')
        .ok_or_else(|| anyhow!("{raw:?} is not NAME=PID"))?;
    Ok((name.to_owned(), pid.parse().context("PID")?))
}

pub async fn run(args: MixedArgs) -> Result<()> {
    ensure!(args.sessions > 0, "--sessions must be at least 1");
    ensure!(
        args.rate > 0.0 && args.rate.is_finite() && args.rate <= 1000.0,
        "--rate must be within 0..=1000 (exclusive of 0)"
    );
    ensure!(
        args.warmup < args.duration,
        "--warmup must be shorter than --duration"
    );
    let targets = Arc::new(Targets::load(&args.target).await?);
    ensure!(
        targets.rfb(),
        "mixed speaks RFB to the desktop stand-in; drop --no-rfb"
    );
    for (name, pid) in &args.pids {
        procfs::cpu_seconds(*pid).with_context(|| format!("--pid {name}={pid}"))?;
    }

    let (conns, connect) =
        conns::open_all(&targets, args.sessions, args.connect_concurrency, READ_BUF).await;

    let start = Instant::now();
    let measure_from = start + args.warmup;
    let end = start + args.duration;
    // CPU of the servers over exactly the measured part, read by a task of its own.
    let pids = args.pids.clone();
    let cpu = tokio::spawn(async move {
        tokio::time::sleep_until(measure_from).await;
        let before: Vec<Option<f64>> = pids.iter().map(|(_, p)| tree_cpu(*p)).collect();
        tokio::time::sleep_until(end).await;
        pids.iter()
            .zip(before)
            .map(|((_, p), b)| Some(tree_cpu(*p)? - b?))
            .collect::<Vec<_>>()
    });

    let m = conns.len();
    let period = Duration::from_secs_f64(1.0 / args.rate);
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(j, conn)| {
            let plan = Plan {
                measure_from,
                end,
                first: start + period.mul_f64(j as f64 / m as f64),
                period,
                input_timeout: args.input_timeout,
            };
            tokio::spawn(session(conn, plan))
        })
        .collect();
    let mut outcomes = Vec::with_capacity(m);
    for task in tasks {
        outcomes.push(task.await?);
    }
    let cpu = cpu.await?;

    let (totals, closing) = Totals::of(outcomes);
    let errored = totals.errored();
    let (strokes, unanswered, bytes) = (totals.answered, totals.unanswered, totals.bytes);
    let errors = totals.errors;
    let rtt = Summary::from_samples(totals.samples);
    let measured_s = (args.duration - args.warmup).as_secs_f64();
    let (mb_per_s, _) = report::rates(bytes, measured_s);
    let gb = bytes as f64 / 1e9;

    println!(
        "mixed {} sessions={} rate={}/s duration={:?} warmup={:?}",
        targets.label(),
        args.sessions,
        args.rate,
        args.duration,
        args.warmup
    );
    println!(
        "  connect: opened {} of {} in {:.2} s, failed {}",
        connect.opened,
        args.sessions,
        connect.elapsed.as_secs_f64(),
        connect.failed()
    );
    print_reasons("connect failure", &connect.failures);
    println!(
        "  run: {errored} session(s) errored or closed; {strokes} key strokes answered, {unanswered} unanswered at the end"
    );
    print_reasons("session error", &errors);
    println!("  input rtt: {}", rtt.line());
    println!("  received: {mb_per_s:.1} MB/s over the measured {measured_s:.1} s");
    let mut servers = serde_json::Map::new();
    for ((name, pid), cpu_s) in args.pids.iter().zip(cpu) {
        // Children that exited and wait to be reaped (zombies) have no memory: skipped.
        let tree = procfs::with_children(*pid);
        let sum = |read: fn(u32) -> Result<u64>| {
            let main = read(*pid).ok()?;
            Some(main + tree[1..].iter().filter_map(|p| read(*p).ok()).sum::<u64>())
        };
        let (rss, hwm) = (sum(procfs::vm_rss_kib), sum(procfs::vm_hwm_kib));
        let per_gb = cpu_s.filter(|_| gb > 0.0).map(|c| c / gb);
        println!(
            "  {name} (pid {pid}, {} process(es)): cpu {} s, {} s per GB received; rss {} KiB, peak {} KiB",
            tree.len(),
            cpu_s.map_or("n/a".into(), |c| format!("{c:.2}")),
            per_gb.map_or("n/a".into(), |c| format!("{c:.2}")),
            rss.map_or("n/a".into(), |v| v.to_string()),
            hwm.map_or("n/a".into(), |v| v.to_string()),
        );
        servers.insert(
            name.clone(),
            json!({
                "pid": pid,
                "processes": tree.len(),
                "cpu_s": cpu_s.map(report::round3),
                "cpu_s_per_gb": per_gb.map(report::round3),
                "rss_kib": rss,
                "peak_rss_kib": hwm,
            }),
        );
    }
    report::result(&json!({
        "mode": "mixed",
        "target": targets.label(),
        "sessions": args.sessions,
        "opened": connect.opened,
        "failed_connects": connect.failed(),
        "connect_s": report::round3(connect.elapsed.as_secs_f64()),
        "errored": errored,
        "rate": args.rate,
        "duration_s": args.duration.as_secs_f64(),
        "warmup_s": args.warmup.as_secs_f64(),
        "strokes": strokes,
        "measured": rtt.count,
        "unanswered": unanswered,
        "rtt_us": rtt.to_json(),
        "received_bytes": bytes,
        "received_mb_per_s": report::round3(mb_per_s),
        "servers": servers,
        "connect_failures": top_reasons(&connect.failures),
        "session_errors": top_reasons(&errors),
    }));

    closing.wait().await;
    Ok(())
}

/// The clock and pace of one session.
#[derive(Debug, Clone, Copy)]
struct Plan {
    measure_from: Instant,
    end: Instant,
    /// This session's first key stroke, then one every `period`.
    first: Instant,
    period: Duration,
    input_timeout: Duration,
}

async fn session(mut conn: Conn, plan: Plan) -> Outcome {
    let mut out = Outcome::default();
    match drive(&mut conn, &plan, &mut out).await {
        Ok(()) => out.conn = Some(conn),
        Err(e) => out.error = Some(format!("{e:#}")),
    }
    out
}

async fn drive(conn: &mut Conn, plan: &Plan, out: &mut Outcome) -> Result<()> {
    conn.send(&rfb::update_request()).await?;
    let mut stream = ServerStream::default();
    let mut scratch = vec![0u8; READ_BUF];
    // Key strokes sent and not answered yet: sequence number, sent at, measured.
    let mut inflight: VecDeque<(u32, std::time::Instant, bool)> = VecDeque::new();
    let mut seq = 0u32;
    let mut ticker = tokio::time::interval_at(plan.first, plan.period);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let deadline = tokio::time::sleep_until(plan.end);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            biased;
            _ = &mut deadline => break,
            sent_at = ticker.tick() => {
                if let Some((_, at, _)) = inflight.front() {
                    ensure!(
                        at.elapsed() < plan.input_timeout,
                        "no echo within {:?}",
                        plan.input_timeout
                    );
                }
                seq = seq.wrapping_add(1);
                // Timed from before the write, as `ping` does: a thread descheduled
                // between the write and the clock read would otherwise shorten it.
                inflight.push_back((seq, std::time::Instant::now(), sent_at >= plan.measure_from));
                conn.send(&rfb::key_stroke(seq)).await?;
            }
            got = conn.recv_with(&mut scratch, |bytes| {
                let now = std::time::Instant::now();
                let mut answered = Ok(());
                stream.feed(bytes, |text| {
                    let keysym = <[u8; 4]>::try_from(text).map(u32::from_be_bytes);
                    match (inflight.pop_front(), keysym) {
                        (Some((s, at, measured)), Ok(k)) if s == k => {
                            out.answered += 1;
                            if measured {
                                out.samples.push(micros(now - at));
                            }
                        }
                        _ => answered = Err(anyhow!("echo out of order or malformed")),
                    }
                })?;
                answered
            }) => {
                let got = got?;
                ensure!(got.bytes > 0 || got.messages > 0, "closed by peer");
                if Instant::now() >= plan.measure_from {
                    out.bytes += got.bytes as u64;
                }
            }
        }
    }
    out.unanswered = inflight.len() as u64;
    Ok(())
}
