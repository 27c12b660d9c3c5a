//! `kick`: how fast a kick on the control channel ends a session. Opens one session per
//! target URL (each with its own token), publishes `{type:"kick", jti, reason}` on
//! `{prefix}control` for the first `--kicks` of them, one at a time, and times each from
//! just before the PUBLISH to the moment the session's connection ends. The other
//! sessions stay open meanwhile, so the relay has to find the one named among them.
//! The sessions open `--concurrency` at a time first, and the rate at which the relays
//! admitted them (each connect ends after the registry admitted its session) is
//! reported too.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clap::Args;
use fred::prelude::*;
use serde_json::json;

use crate::conns::{open_all, print_reasons};
use crate::ping::micros;
use crate::report;
use crate::stats::Summary;
use crate::target::{TargetArgs, Targets};

/// tungstenite read buffer per session; nothing big arrives.
const WS_READ_BUF: usize = 16 * 1024;

#[derive(Args, Debug)]
pub struct KickArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Sessions to open (session i uses URL i of the list; each needs its own token).
    #[arg(long, default_value_t = 200)]
    pub sessions: usize,
    /// Sessions to kick, one after another.
    #[arg(long, default_value_t = 100)]
    pub kicks: usize,
    /// Redis the relays listen to.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,
    /// Prefix of the relays' Redis keys and channels.
    #[arg(long, default_value = "vnc:")]
    pub redis_prefix: String,
    /// Sessions opening at once.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Bound on one kick taking effect; exceeding it fails the run.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// The `jti` claim of the token in a target URL's `token` parameter.
fn jti_of(url: &str) -> Result<String> {
    let token = url
        .split(['?', '&'])
        .find_map(|p| p.strip_prefix("token="))
        .context("target URL without token=")?;
    let payload = token.split('.').nth(1).context("token is not a JWT")?;
    let claims: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload)?)?;
    claims["jti"]
        .as_str()
        .map(str::to_owned)
        .context("token without jti")
}

pub async fn run(args: KickArgs) -> Result<()> {
    ensure!(
        args.kicks <= args.sessions,
        "--kicks must not exceed --sessions"
    );
    let targets = Arc::new(Targets::load(&args.target).await?);
    let urls = targets.ws_urls()?;
    ensure!(
        urls.len() >= args.sessions,
        "{} sessions need as many target URLs (one token each), got {}",
        args.sessions,
        urls.len()
    );
    let redis = Builder::from_config(Config::from_url(&args.redis_url)?).build()?;
    redis.init().await.context("connecting to redis")?;
    let channel = format!("{}control", args.redis_prefix);

    let (conns, opened) = open_all(&targets, args.sessions, args.concurrency, WS_READ_BUF).await;
    if opened.failed() > 0 {
        print_reasons("sessions refused", &opened.failures);
    }
    ensure!(
        opened.failed() == 0,
        "{} sessions not admitted",
        opened.failed()
    );
    let admissions_per_s = opened.opened as f64 / opened.elapsed.as_secs_f64();
    let mut sessions = Vec::with_capacity(args.sessions);
    for (url, conn) in urls.iter().zip(conns) {
        sessions.push((jti_of(url)?, conn));
    }

    let mut samples = Vec::with_capacity(args.kicks);
    let mut scratch = vec![0u8; WS_READ_BUF];
    for (i, (jti, mut conn)) in sessions.drain(..args.kicks).enumerate() {
        let kick = json!({ "type": "kick", "jti": jti, "reason": "kicked" }).to_string();
        let sent = Instant::now();
        // Not checked: on a Redis Cluster the count is of one node's subscribers only.
        let _receivers: i64 = redis.publish(&channel, kick).await?;
        let ended = tokio::time::timeout(args.timeout, async {
            loop {
                match conn.recv_count(&mut scratch).await {
                    Ok(c) if c.bytes == 0 => return,
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        })
        .await;
        ended.with_context(|| {
            format!("kick {i} did not end its session within {:?}", args.timeout)
        })?;
        samples.push(micros(sent.elapsed()));
    }
    let left = sessions.len();
    for (_, conn) in sessions {
        let _ = tokio::time::timeout(Duration::from_secs(1), conn.close()).await;
    }
    let _ = redis.quit().await;

    let summary = Summary::from_samples(samples);
    println!(
        "kick {} sessions={} kicked={} (others open: {left})",
        targets.label(),
        args.sessions,
        args.kicks
    );
    println!(
        "  admissions: {admissions_per_s:.0}/s ({} at once); connect {}",
        args.concurrency,
        opened.times.line()
    );
    println!("  kick to session end: {}", summary.line());
    report::result(&json!({
        "mode": "kick",
        "sessions": args.sessions,
        "kicks": args.kicks,
        "latency_us": summary.to_json(),
        "admissions_per_s": admissions_per_s,
        "connect_us": opened.times.to_json(),
    }));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_jti_comes_from_the_token_in_the_url() {
        let payload = URL_SAFE_NO_PAD.encode(br#"{"jti":"abc-123","sub":"u"}"#);
        let url = format!("ws://127.0.0.1:1/websockify?x=1&token=h.{payload}.s");
        assert_eq!(jti_of(&url).unwrap(), "abc-123");
        assert!(jti_of("ws://127.0.0.1:1/websockify").is_err());
    }
}
