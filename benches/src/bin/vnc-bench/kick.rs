//! `kick`: how fast a kick on the control channel ends a session. Opens one session per
//! target URL (each with its own token), publishes `{type:"kick", jti, reason}` on
//! `{prefix}control` for the first `--kicks` of them, one at a time, and times each from
//! just before the PUBLISH to the moment the session's connection ends. The other
//! sessions stay open meanwhile, so the relay has to find the one named among them.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clap::Args;
use fred::prelude::*;
use serde_json::json;

use crate::client::WsClient;
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
    let targets = Targets::load(&args.target).await?;
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

    let mut sessions = Vec::with_capacity(args.sessions);
    for (i, url) in urls.iter().enumerate().take(args.sessions) {
        let conn = targets
            .connect(
                i,
                WsClient::Tungstenite {
                    read_buffer: WS_READ_BUF,
                },
            )
            .await
            .with_context(|| format!("opening session {i}"))?;
        sessions.push((jti_of(url)?, conn));
    }

    let mut samples = Vec::with_capacity(args.kicks);
    let mut scratch = vec![0u8; WS_READ_BUF];
    for (i, (jti, mut conn)) in sessions.drain(..args.kicks).enumerate() {
        let kick = json!({ "type": "kick", "jti": jti, "reason": "kicked" }).to_string();
        let sent = Instant::now();
        let receivers: i64 = redis.publish(&channel, kick).await?;
        if receivers == 0 {
            bail!("no relay listens on {channel}");
        }
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
    println!("  kick to session end: {}", summary.line());
    report::result(&json!({
        "mode": "kick",
        "sessions": args.sessions,
        "kicks": args.kicks,
        "latency_us": summary.to_json(),
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
