//! Where the client modes connect: `tcp://host:port`, `ws://host:port/path?query` or
//! `sio://host:port[/path]?containerId=..&token=..` (socket.io, namespace `/vnc`), and
//! `wss://` / `sios://`, the same over TLS (trusting the CA given with `--ca`); given
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
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue, Uri};

use crate::client::{self, Conn, WsClient};
use crate::rfb;
use crate::sio_client::SioTarget;
use crate::stream::{self, TlsTarget};

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
        /// Set for `wss://`.
        tls: Option<TlsTarget>,
    },
    Sio {
        target: SioTarget,
        addr: SocketAddr,
        /// Set for `sios://`.
        tls: Option<TlsTarget>,
    },
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
            list.push(parse(url, &mut resolved, tls.as_ref()).await?);
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

/// `tls` is the `--ca` client, if given; `wss://` and `sios://` need it.
async fn parse(
    url: &str,
    resolved: &mut HashMap<String, SocketAddr>,
    tls: Option<&TlsConnector>,
) -> Result<Target> {
    if let Some(rest) = url.strip_prefix("tcp://") {
        let authority = rest.trim_end_matches('/');
        let addr = resolve(authority, resolved).await?;
        return Ok(Target::Tcp { addr });
    }
    let secure = |host: &str| -> Result<TlsTarget> {
        let connector = tls.ok_or_else(|| {
            anyhow!(
                "{} needs --ca FILE (the CA that signed the server's certificate)",
                mask_token(url)
            )
        })?;
        TlsTarget::new(connector, host)
    };
    for (scheme, is_tls) in [("sio://", false), ("sios://", true)] {
        if let Some(rest) = url.strip_prefix(scheme) {
            let (target, authority) = parse_sio(rest)
                .with_context(|| format!("invalid socket.io target {:?}", mask_token(url)))?;
            let tls = if is_tls {
                Some(secure(host_of(&authority))?)
            } else {
                None
            };
            let addr = resolve(&authority, resolved).await?;
            return Ok(Target::Sio { target, addr, tls });
        }
    }
    let (default_port, is_tls) = if url.starts_with("ws://") {
        (80, false)
    } else if url.starts_with("wss://") {
        (443, true)
    } else {
        bail!(
            "unsupported target {:?}: expected tcp://host:port, ws[s]://host:port/path or sio[s]://host:port?containerId=..",
            mask_token(url)
        );
    };
    let uri: Uri = url
        .parse()
        .with_context(|| format!("invalid URL {:?}", mask_token(url)))?;
    let host = uri
        .host()
        .ok_or_else(|| anyhow!("URL {:?} has no host", mask_token(url)))?;
    let port = uri.port_u16().unwrap_or(default_port);
    let tls = if is_tls { Some(secure(host)?) } else { None };
    // `Uri::host` keeps the brackets of an IPv6 literal, which is what `host:port` needs.
    let addr = resolve(&format!("{host}:{port}"), resolved).await?;
    Ok(Target::Ws {
        url: url.to_owned(),
        addr,
        tls,
    })
}

/// The host of a `host:port` authority, brackets of an IPv6 literal kept.
fn host_of(authority: &str) -> &str {
    authority
        .rsplit_once(':')
        .map_or(authority, |(host, _)| host)
}

/// `host:port[/path][?query]` of a `sio://` URL: the request and the authority to
/// resolve. The Engine.IO parameters come first, then the URL's own except `token`.
fn parse_sio(rest: &str) -> Result<(SioTarget, String)> {
    let (before_query, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, path) = match before_query.find('/') {
        Some(at) => before_query.split_at(at),
        None => (before_query, ""),
    };
    if authority.is_empty() || !authority.contains(':') {
        bail!("expected sio://host:port");
    }
    let path = if path.is_empty() || path == "/" {
        "/socket.io/"
    } else {
        path
    };
    let mut token = None;
    let mut request = format!("{path}?EIO=4&transport=websocket");
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("token", t)) => token = Some(t.to_owned()),
            _ => {
                request.push('&');
                request.push_str(pair);
            }
        }
    }
    let target = SioTarget {
        host: authority.to_owned(),
        path: request,
        token,
    };
    Ok((target, authority.to_owned()))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sio_urls_become_an_engine_io_request_and_a_token() {
        let (t, authority) = parse_sio("127.0.0.1:6080?containerId=c1&token=abc").unwrap();
        assert_eq!(authority, "127.0.0.1:6080");
        assert_eq!(t.host, "127.0.0.1:6080");
        assert_eq!(
            t.path,
            "/socket.io/?EIO=4&transport=websocket&containerId=c1"
        );
        assert_eq!(t.token.as_deref(), Some("abc"));

        let (t, _) = parse_sio("localhost:1/io/?containerId=c2").unwrap();
        assert_eq!(t.path, "/io/?EIO=4&transport=websocket&containerId=c2");
        assert_eq!(t.token, None);

        // What a sios:// target's certificate must name.
        assert_eq!(host_of("127.0.0.1:6080"), "127.0.0.1");
        assert_eq!(host_of("[::1]:443"), "[::1]");
        assert!(parse_sio("/socket.io/").is_err());
        assert!(parse_sio("host-without-port").is_err());
        assert_eq!(
            mask_token("sio://h:1?containerId=c&token=secret"),
            "sio://h:1?containerId=c&token=MASKED"
        );
    }
}
