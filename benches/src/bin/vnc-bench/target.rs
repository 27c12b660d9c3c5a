//! Where the client modes connect: the target flags every client mode shares, and the
//! run's set of [`Target`]s, given once (`--target`) or as a file of URLs (`--url-file`,
//! session i uses line i mod n, so every session can carry its own token); then one connect
//! to a session's target under the connect timeout, RFB handshake included.
//!
//! The URL schemes and their parsing are `endpoint.rs`'s.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};

use crate::client::{self, Conn, WsClient};
use crate::endpoint::{self, Target, mask_token};
use crate::rfb;
use crate::stream;

/// Flags shared by every client mode.
#[derive(Args, Debug)]
pub struct TargetArgs {
    /// `tcp://host:port` (plain TCP), `ws://host:port/path?query` (WebSocket) or
    /// `sio://host:port[/path]?containerId=ID&token=T` (socket.io namespace `/vnc` over
    /// its websocket transport; path default `/socket.io/`, `token` goes in the connect
    /// packet's auth, the other parameters in the handshake query). `wss://` and
    /// `sios://` are the same over TLS and need `--ca`.
    #[arg(
        long,
        required_unless_present = "url_file",
        conflicts_with = "url_file"
    )]
    pub target: Option<String>,
    /// File with one target URL per line; session i uses line i mod n (blank lines and
    /// lines starting with `#` are skipped).
    #[arg(long, value_name = "FILE")]
    pub url_file: Option<PathBuf>,
    /// PEM CA certificate(s) that signed the server's certificate, the only ones trusted
    /// for `wss://` and `sios://` targets. The certificate must name the URL's host (an
    /// IP literal is checked against its IP addresses).
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Extra HTTP header for WebSocket handshakes, `Name: value` (e.g. Origin, Cookie,
    /// Authorization). Repeatable.
    #[arg(long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    /// Bound on one connect: TCP connect, WebSocket or socket.io handshake, RFB
    /// handshake.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,
    /// No RFB: skip the RFB handshake after connecting and send pings unframed (for
    /// stand-ins started with `--no-rfb` behind a relay that isn't RFB-aware).
    #[arg(long)]
    pub no_rfb: bool,
}

/// The targets of one run plus what every connect to them needs.
pub struct Targets {
    list: Vec<Target>,
    /// Printable description with `token=` values masked.
    label: String,
    headers: Vec<(HeaderName, HeaderValue)>,
    connect_timeout: Duration,
    rfb: bool,
}

impl Targets {
    pub async fn load(args: &TargetArgs) -> Result<Self> {
        let urls: Vec<String> = match (&args.target, &args.url_file) {
            (Some(url), _) => vec![url.trim().to_owned()],
            (None, Some(path)) => std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_owned)
                .collect(),
            (None, None) => bail!("either --target or --url-file is required"),
        };
        if urls.is_empty() {
            bail!("no target URLs given");
        }

        // One TLS client for every target: sessions after the first can resume.
        let tls = match &args.ca {
            Some(ca) => {
                Some(stream::connector(ca).with_context(|| format!("--ca {}", ca.display()))?)
            }
            None => None,
        };
        // Many lines usually share one host:port; resolve each authority once.
        let mut resolved: HashMap<String, SocketAddr> = HashMap::new();
        let mut list = Vec::with_capacity(urls.len());
        for url in &urls {
            list.push(endpoint::parse(url, &mut resolved, tls.as_ref()).await?);
        }

        let label = match &args.url_file {
            Some(path) => format!(
                "{} ({} urls from {})",
                mask_token(&urls[0]),
                urls.len(),
                path.display()
            ),
            None => mask_token(&urls[0]),
        };
        let headers = args
            .headers
            .iter()
            .map(|h| parse_header(h))
            .collect::<Result<_>>()?;
        Ok(Self {
            list,
            label,
            headers,
            connect_timeout: args.connect_timeout,
            rfb: !args.no_rfb,
        })
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// The URL of each target, in order; all must be `ws://` or `wss://` (the kick mode
    /// reads each session's token from its URL).
    pub fn ws_urls(&self) -> Result<Vec<&str>> {
        self.list
            .iter()
            .map(|t| match t {
                Target::Ws { url, .. } => Ok(url.as_str()),
                _ => bail!("this mode needs ws:// or wss:// targets"),
            })
            .collect()
    }

    /// Whether connections do the RFB handshake and pings are RFB messages.
    pub fn rfb(&self) -> bool {
        self.rfb
    }

    /// Connects to the target of session `i` under the connect timeout. `ws_read_buffer`
    /// sizes tungstenite's eagerly allocated read buffer (small for thousands of idle
    /// sessions, large for throughput).
    pub async fn connect(&self, i: usize, ws_client: WsClient) -> Result<Conn> {
        let target = &self.list[i % self.list.len()];
        let connect = async {
            let mut conn = client::connect(target, &self.headers, ws_client).await?;
            if self.rfb {
                rfb::handshake(&mut conn).await.context("RFB handshake")?;
            }
            Ok(conn)
        };
        tokio::time::timeout(self.connect_timeout, connect)
            .await
            .map_err(|_| anyhow!("connect timed out after {:?}", self.connect_timeout))?
    }
}

fn parse_header(raw: &str) -> Result<(HeaderName, HeaderValue)> {
    let (name, value) = raw
        .split_once(':')
        .ok_or_else(|| anyhow!("header {raw:?} is not `Name: value`"))?;
    let name = HeaderName::from_bytes(name.trim().as_bytes())
        .with_context(|| format!("invalid header name in {raw:?}"))?;
    let value = HeaderValue::from_str(value.trim()).context("invalid header value")?;
    Ok((name, value))
}
