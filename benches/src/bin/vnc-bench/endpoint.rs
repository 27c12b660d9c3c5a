//! One target URL, parsed and resolved into a [`Target`]: `tcp://host:port`,
//! `ws://host:port/path?query` or `sio://host:port[/path]?containerId=..&token=..`
//! (socket.io, namespace `/vnc`), and `wss://` / `sios://`, the same over TLS (trusting the
//! CA given with `--ca`). Also the masking of `token=` values, so URLs can be printed.
//!
//! Host names are resolved once at load time, not per connect: 5000 sessions must not
//! mean 5000 `getaddrinfo` calls on tokio's blocking pool. The caller passes one map of
//! resolved authorities for all its URLs.
//!
//! It knows nothing of connections: a connection (`client.rs`) is opened to a `Target`, and
//! the run's set of targets (`target.rs`) is built from them.

use std::collections::HashMap;
use std::net::SocketAddr;

use anyhow::{Context, Result, anyhow, bail};
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::http::Uri;

use crate::sio_client::SioTarget;
use crate::stream::TlsTarget;

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

/// Parses and resolves one URL; `resolved` holds the authorities resolved so far. `tls` is
/// the `--ca` client, if given; `wss://` and `sios://` need it.
pub async fn parse(
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
