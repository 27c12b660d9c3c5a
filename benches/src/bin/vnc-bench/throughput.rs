//! `throughput`: `streams` connections read everything the target sends (the
//! container→browser direction against a `source` upstream). All streams share one clock:
//! bytes arriving during the first `warmup` are not counted, then `duration` is measured.

use std::time::Duration;

use anyhow::{Result, ensure};
use clap::Args;
use serde_json::json;
use tokio::time::Instant;

use crate::client::{Conn, WsClient};
use crate::report;
use crate::target::{TargetArgs, Targets};

/// TCP read buffer and tungstenite read buffer per stream: large, so a read drains a
/// full socket buffer's worth per syscall.
const READ_BUF: usize = 256 * 1024;
/// Bound on the polite close at the end.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// Most streams one run opens.
const MAX_STREAMS: usize = 1024;

#[derive(Args, Debug)]
pub struct ThroughputArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Measured time.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Time read but not counted, before the measurement.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// Parallel connections (stream i uses URL i mod n of --url-file).
    #[arg(long, default_value_t = 1)]
    pub streams: usize,
    /// How ws targets are read: `lean` parses frames in place and counts payload (the
    /// same per-byte client work as a tcp target); `tungstenite` copies each message.
    #[arg(long, default_value = "lean", value_parser = ["lean", "tungstenite"])]
    pub ws_client: String,
}

/// What one stream counted in the measured window.
struct StreamResult {
    bytes: u64,
    messages: u64,
    /// Why the stream stopped before the end, if it did.
    ended_early: Option<String>,
}

pub async fn run(args: ThroughputArgs) -> Result<()> {
    ensure!(
        (1..=MAX_STREAMS).contains(&args.streams),
        "--streams must be 1..={MAX_STREAMS}"
    );
    ensure!(!args.duration.is_zero(), "--duration must be > 0");
    let targets = Targets::load(&args.target).await?;
    let ws_client = match args.ws_client.as_str() {
        "lean" => WsClient::Lean,
        _ => WsClient::Tungstenite {
            read_buffer: READ_BUF,
        },
    };
    let mut conns = Vec::with_capacity(args.streams);
    for i in 0..args.streams {
        conns.push(targets.connect(i, ws_client).await?);
    }

    let measure_from = Instant::now() + args.warmup;
    let end = measure_from + args.duration;
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|conn| tokio::spawn(read_stream(conn, measure_from, end)))
        .collect();
    let mut results = Vec::with_capacity(tasks.len());
    for task in tasks {
        results.push(task.await?);
    }

    let secs = args.duration.as_secs_f64();
    println!(
        "throughput {} streams={} warmup={:?} duration={:?}",
        targets.label(),
        args.streams,
        args.warmup,
        args.duration
    );
    let mut per_stream = Vec::with_capacity(results.len());
    let mut total = 0u64;
    for (i, r) in results.iter().enumerate() {
        total += r.bytes;
        let (mb, gbit) = report::rates(r.bytes, secs);
        let avg_msg = r.bytes.checked_div(r.messages).unwrap_or(0);
        println!(
            "  stream {i}: {} bytes  {mb:.1} MB/s  {gbit:.3} Gbit/s  ({} reads/messages, avg {avg_msg} B){}",
            r.bytes,
            r.messages,
            r.ended_early
                .as_deref()
                .map(|e| format!("  ENDED EARLY: {e}"))
                .unwrap_or_default()
        );
        per_stream.push(json!({
            "bytes": r.bytes,
            "mb_per_s": report::round3(mb),
            "gbit_per_s": report::round3(gbit),
            "messages": r.messages,
            "avg_message_bytes": avg_msg,
            "ended_early": r.ended_early,
        }));
    }
    let (mb, gbit) = report::rates(total, secs);
    let ended_early = results.iter().filter(|r| r.ended_early.is_some()).count();
    println!("  total: {total} bytes  {mb:.1} MB/s  {gbit:.3} Gbit/s");
    if ended_early > 0 {
        println!("  {ended_early} stream(s) ended before the end of the run");
    }
    report::result(&json!({
        "mode": "throughput",
        "target": targets.label(),
        "streams": args.streams,
        "warmup_s": args.warmup.as_secs_f64(),
        "duration_s": secs,
        "total_bytes": total,
        "total_mb_per_s": report::round3(mb),
        "total_gbit_per_s": report::round3(gbit),
        "ended_early": ended_early,
        "per_stream": per_stream,
    }));
    Ok(())
}

async fn read_stream(mut conn: Conn, measure_from: Instant, end: Instant) -> StreamResult {
    let mut scratch = vec![0u8; READ_BUF];
    let mut result = StreamResult {
        bytes: 0,
        messages: 0,
        ended_early: None,
    };
    let deadline = tokio::time::sleep_until(end);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            biased;
            _ = &mut deadline => break,
            got = conn.recv_count(&mut scratch) => match got {
                Ok(got) if got.bytes == 0 && got.messages == 0 => {
                    result.ended_early = Some("peer closed".into());
                    break;
                }
                Ok(got) => {
                    if Instant::now() >= measure_from {
                        result.bytes += got.bytes as u64;
                        result.messages += got.messages as u64;
                    }
                }
                Err(e) => {
                    result.ended_early = Some(format!("{e:#}"));
                    break;
                }
            },
        }
    }
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, conn.close()).await;
    result
}
