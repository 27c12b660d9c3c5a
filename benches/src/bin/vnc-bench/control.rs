//! Control-plane benchmarks over its REST API: VNC tokens minted per second, and the
//! job queue's own overhead (a job's `finished_at - created_at` with a runtime whose
//! start is immediate, e.g. the static runtime answering at once).
//!
//! Requests go over keep-alive HTTP/1.1 connections, one per worker, so the figures
//! are the API's, not connection setup's.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use clap::Args;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::report;
use crate::stats::Summary;

/// Largest response body read.
const MAX_BODY: usize = 1 << 20;

#[derive(Args, Debug)]
pub struct TokensArgs {
    /// Control's API address.
    #[arg(long)]
    pub api: SocketAddr,
    /// Caller's bearer token (identity provider JWT).
    #[arg(long)]
    pub bearer: String,
    /// Running container to mint tokens for.
    #[arg(long)]
    pub container: String,
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
}

#[derive(Args, Debug)]
pub struct QueueArgs {
    #[arg(long)]
    pub api: SocketAddr,
    #[arg(long)]
    pub bearer: String,
    /// Image to create (must be allowed by control).
    #[arg(long)]
    pub image: String,
    /// Jobs to time, one after the other.
    #[arg(long, default_value_t = 500)]
    pub count: usize,
}

/// One keep-alive HTTP/1.1 connection.
struct Http {
    stream: BufReader<TcpStream>,
    host: String,
}

impl Http {
    async fn connect(addr: SocketAddr) -> Result<Http> {
        let stream = TcpStream::connect(addr).await.context("connect")?;
        stream.set_nodelay(true)?;
        Ok(Http {
            stream: BufReader::new(stream),
            host: addr.to_string(),
        })
    }

    async fn call(
        &mut self,
        method: &str,
        path: &str,
        bearer: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value)> {
        let body = body.map(Value::to_string).unwrap_or_default();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {bearer}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.host,
            body.len()
        );
        self.stream.get_mut().write_all(req.as_bytes()).await?;
        let mut line = String::new();
        self.stream.read_line(&mut line).await?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .context("status line")?;
        let mut length = 0usize;
        loop {
            line.clear();
            if self.stream.read_line(&mut line).await? == 0 {
                bail!("connection closed mid-response");
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().context("content-length")?;
            }
        }
        ensure!(length <= MAX_BODY, "response body of {length} bytes");
        let mut buf = vec![0; length];
        self.stream.read_exact(&mut buf).await?;
        Ok((status, serde_json::from_slice(&buf).unwrap_or(Value::Null)))
    }
}

pub async fn tokens(args: TokensArgs) -> Result<()> {
    ensure!(args.concurrency > 0, "--concurrency must be at least 1");
    let deadline = Instant::now() + args.duration;
    let path = format!("/v1/containers/{}/vnc-tokens", args.container);
    let body = json!({"scope": "view", "ttl_seconds": 60});
    let mut workers = Vec::new();
    for _ in 0..args.concurrency {
        let (path, body, bearer, api) = (path.clone(), body.clone(), args.bearer.clone(), args.api);
        workers.push(tokio::spawn(async move {
            let mut http = Http::connect(api).await?;
            let mut samples = Vec::new();
            while Instant::now() < deadline {
                let started = Instant::now();
                let (status, reply) = http.call("POST", &path, &bearer, Some(&body)).await?;
                ensure!(status == 200, "token request answered {status}: {reply}");
                samples.push(started.elapsed().as_micros() as u32);
            }
            anyhow::Ok(samples)
        }));
    }
    let mut samples = Vec::new();
    for w in workers {
        samples.extend(w.await??);
    }
    let per_s = samples.len() as f64 / args.duration.as_secs_f64();
    let latency = Summary::from_samples(samples);
    println!(
        "tokens: {per_s:.0}/s with {} connections; latency {}",
        args.concurrency,
        latency.line()
    );
    report::result(&json!({
        "mode": "control-tokens", "concurrency": args.concurrency,
        "per_s": per_s.round(), "latency_us": latency.to_json(),
    }));
    Ok(())
}

pub async fn queue(args: QueueArgs) -> Result<()> {
    ensure!(args.count > 0, "--count must be at least 1");
    let mut http = Http::connect(args.api).await?;
    let create = json!({"image": args.image, "resources": {"cpus": 0.5, "memory_mb": 128}});
    let mut overhead_ms = Vec::with_capacity(args.count);
    for _ in 0..args.count {
        let (status, created) = http
            .call("POST", "/v1/containers", &args.bearer, Some(&create))
            .await?;
        ensure!(status == 202, "create answered {status}: {created}");
        let job = created["job_id"].as_str().context("job_id")?.to_owned();
        let record = loop {
            let (_, j) = http
                .call("GET", &format!("/v1/jobs/{job}"), &args.bearer, None)
                .await?;
            if j["finished_at"].is_u64() {
                break j;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        let took = record["finished_at"]
            .as_u64()
            .unwrap_or(0)
            .saturating_sub(record["created_at"].as_u64().unwrap_or(0));
        overhead_ms.push(took as u32);
    }
    let summary = Summary::from_samples(overhead_ms);
    println!(
        "queue: enqueue → job finished (server clock, ms): p50 {} p99 {} max {} (n={})",
        summary.p50, summary.p99, summary.max, summary.count
    );
    report::result(
        &json!({"mode": "control-queue", "count": args.count, "overhead_ms": summary.to_json()}),
    );
    Ok(())
}
