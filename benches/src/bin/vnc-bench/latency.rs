//! `latency`: one connection, sequential ping-pong against an echo upstream. The first
//! `warmup` round trips are not recorded; the next `count` are.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use serde_json::json;

use crate::client::WsClient;
use crate::ping::{Ping, micros};
use crate::report;
use crate::stats::Summary;
use crate::target::{TargetArgs, Targets};

/// tungstenite read buffer for the one latency session; pings are small.
const WS_READ_BUF: usize = 64 * 1024;
/// Bound on the polite close at the end.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Args, Debug)]
pub struct LatencyArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Recorded round trips.
    #[arg(long, default_value_t = 20_000)]
    pub count: u64,
    /// Bytes per ping.
    #[arg(long, default_value_t = 16)]
    pub size: usize,
    /// Round trips done first and not recorded.
    #[arg(long, default_value_t = 1000)]
    pub warmup: u64,
    /// Bound on one round trip; exceeding it fails the run.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

pub async fn run(args: LatencyArgs) -> Result<()> {
    let targets = Targets::load(&args.target).await?;
    let mut ping = Ping::new(args.size, targets.rfb())?;
    let mut conn = targets
        .connect(
            0,
            WsClient::Tungstenite {
                read_buffer: WS_READ_BUF,
            },
        )
        .await?;

    let mut samples = Vec::with_capacity(usize::try_from(args.count).unwrap_or(0));
    let mut measured_from = Instant::now();
    for i in 0..args.warmup + args.count {
        if i == args.warmup {
            measured_from = Instant::now();
        }
        let rtt = tokio::time::timeout(args.timeout, ping.round_trip(&mut conn))
            .await
            .with_context(|| format!("ping {i} got no echo within {:?}", args.timeout))?
            .with_context(|| format!("ping {i}"))?;
        if i >= args.warmup {
            samples.push(micros(rtt));
        }
    }
    let elapsed = measured_from.elapsed().as_secs_f64();
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, conn.close()).await;

    let summary = Summary::from_samples(samples);
    let pings_per_s = if elapsed > 0.0 {
        summary.count as f64 / elapsed
    } else {
        0.0
    };
    println!(
        "latency {} size={}B warmup={} count={}",
        targets.label(),
        args.size,
        args.warmup,
        args.count
    );
    println!("  rtt: {}", summary.line());
    println!("  {pings_per_s:.0} round trips/s over {elapsed:.2} s");
    report::result(&json!({
        "mode": "latency",
        "target": targets.label(),
        "size": args.size,
        "warmup": args.warmup,
        "count": args.count,
        "elapsed_s": report::round3(elapsed),
        "round_trips_per_s": pings_per_s.round(),
        "rtt_us": summary.to_json(),
    }));
    Ok(())
}
