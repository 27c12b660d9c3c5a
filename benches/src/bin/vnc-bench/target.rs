//! Where the client modes connect: `tcp://host:port` or `ws://host:port/path?query`, given
//! once (`--target`) or as a file of URLs (`--url-file`, session i uses line i mod n, so
//! every session can carry its own token).
//!
//! Host names are resolved once at load time, not per connect: 5000 sessions must not
//! mean 5000 `getaddrinfo` calls on tokio's blocking pool.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue, Uri};

use crate::client::{self, Conn, WsClient};

/// Flags shared by every client mode.
#[derive(Args, Debug)]
pub struct TargetArgs {
    /// `tcp://host:port` (plain TCP) or `ws://host:port/path?query` (WebSocket).
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
    /// Extra HTTP header for WebSocket handshakes, `Name: value` (e.g. Origin, Cookie,
    /// Authorization). Repeatable.
    #[arg(long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    /// Bound on one connect: TCP connect plus WebSocket handshake.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,
}

/// One parsed, resolved target URL.
#[derive(Debug, Clone)]
pub enum Target {
    Tcp {
        addr: SocketAddr,
    },
    Ws {
        /// The URL as given; the handshake request is built from it per connect because
        /// each request needs a fresh `Sec-WebSocket-Key`.
        url: String,
        addr: SocketAddr,
    },
}

/// The targets of one run plus what every connect to them needs.
pub struct Targets {
    list: Vec<Target>,
    /// Printable description with `token=` values masked.
    label: String,
    headers: Vec<(HeaderName, HeaderValue)>,
    connect_timeout: Duration,
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

        // Many lines usually share one host:port; resolve each authority once.
        let mut resolved: HashMap<String, SocketAddr> = HashMap::new();
        let mut list = Vec::with_capacity(urls.len());
        for url in &urls {
            list.push(parse(url, &mut resolved).await?);
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
        })
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// Connects to the target of session `i` under the connect timeout. `ws_read_buffer`
    /// sizes tungstenite's eagerly allocated read buffer (small for thousands of idle
    /// sessions, large for throughput).
    pub async fn connect(&self, i: usize, ws_client: WsClient) -> Result<Conn> {
        let target = &self.list[i % self.list.len()];
        tokio::time::timeout(
            self.connect_timeout,
            client::connect(target, &self.headers, ws_client),
        )
        .await
        .map_err(|_| anyhow!("connect timed out after {:?}", self.connect_timeout))?
    }
}

async fn parse(url: &str, resolved: &mut HashMap<String, SocketAddr>) -> Result<Target> {
    if let Some(rest) = url.strip_prefix("tcp://") {
        let authority = rest.trim_end_matches('/');
        let addr = resolve(authority, resolved).await?;
        return Ok(Target::Tcp { addr });
    }
    if url.starts_with("wss://") {
        bail!("wss:// is not supported (this build has no TLS); use ws:// on loopback");
    }
    if !url.starts_with("ws://") {
        bail!(
            "unsupported target {:?}: expected tcp://host:port or ws://host:port/path",
            mask_token(url)
        );
    }
    let uri: Uri = url
        .parse()
        .with_context(|| format!("invalid URL {:?}", mask_token(url)))?;
    let host = uri
        .host()
        .ok_or_else(|| anyhow!("URL {:?} has no host", mask_token(url)))?;
    let port = uri.port_u16().unwrap_or(80);
    // `Uri::host` keeps the brackets of an IPv6 literal, which is what `host:port` needs.
    let addr = resolve(&format!("{host}:{port}"), resolved).await?;
    Ok(Target::Ws {
        url: url.to_owned(),
        addr,
    })
}

async fn resolve(
    authority: &str,
    resolved: &mut HashMap<String, SocketAddr>,
) -> Result<SocketAddr> {
    if let Some(addr) = resolved.get(authority) {
        return Ok(*addr);
    }
    let addr = tokio::net::lookup_host(authority)
        .await
        .with_context(|| format!("resolving {authority}"))?
        .next()
        .ok_or_else(|| anyhow!("{authority} resolved to no address"))?;
    resolved.insert(authority.to_owned(), addr);
    Ok(addr)
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

/// Hides the value of a `token=` query parameter so URLs can be printed.
pub fn mask_token(url: &str) -> String {
    let Some((base, query)) = url.split_once('?') else {
        return url.to_owned();
    };
    let masked: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some(("token", _)) => "token=MASKED".to_owned(),
            _ => pair.to_owned(),
        })
        .collect();
    format!("{base}?{}", masked.join("&"))
}
