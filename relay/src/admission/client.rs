//! Who the browser is, by address: the TCP peer, unless a load balancer the operator
//! trusts says otherwise. Two ways, both opt-in:
//!
//! - `proxy_protocol`: every connection on the public listener starts with a PROXY
//!   protocol v2 header (HAProxy's `send-proxy-v2`, AWS NLB, …) naming the client; a
//!   connection without one is closed. The header is read before TLS and HTTP.
//! - `trusted_proxies`: from a peer in these ranges, the `Forwarded` (RFC 7239) or else
//!   `X-Forwarded-For` header names the client: the right-most address not itself a
//!   trusted proxy. From any other peer the headers are ignored, so a browser can't
//!   claim another address.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::HeaderMap;
use ipnet::IpNet;
use ppp::v2::{Addresses, Command, Header};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::pending::PendingGuard;
use super::reject::Reject;
use crate::config::NodeConfig;

/// The fixed part of a PROXY v2 header: the signature, version and command, family
/// and protocol, and the length of what follows.
const PROXY_PREFIX_LEN: usize = 16;
/// Most bytes a PROXY v2 header may carry after its fixed part: the longest address
/// block (two UNIX paths, 216 bytes) and room for a few TLVs. A longer one is refused,
/// so a peer can't make the relay buffer 64 KiB before it says anything.
const MAX_PROXY_BODY: usize = 512;
/// Forwarding hops read from `Forwarded` / `X-Forwarded-For`; a longer chain is read
/// from its right end only.
const MAX_FORWARDED_HOPS: usize = 16;

/// A PROXY header that isn't one the relay accepts.
#[derive(Debug, thiserror::Error)]
pub enum ProxyHeaderError {
    #[error("reading the PROXY header: {0}")]
    Read(#[from] std::io::Error),
    #[error("the PROXY header did not arrive in time")]
    Timeout,
    #[error("the connection does not start with the PROXY v2 signature")]
    NoSignature,
    #[error("the PROXY header is {0} bytes past its fixed part; at most {MAX_PROXY_BODY}")]
    TooLong(usize),
    #[error("not a PROXY protocol v2 header: {0}")]
    Invalid(#[from] ppp::v2::ParseError),
}

/// Reads the PROXY v2 header at the start of `stream`, and no byte more; returns the
/// client's address it names. A `LOCAL` header (the balancer's own health check) or one
/// without an IP address names none: the peer is the client.
pub async fn read_proxy_header(
    stream: &mut TcpStream,
    within: Duration,
) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    let read = async {
        let mut header = vec![0; PROXY_PREFIX_LEN];
        stream.read_exact(&mut header).await?;
        // Checked before the length is believed: a client that speaks first in HTTP
        // or TLS is closed at once, not read on to the length its bytes make up.
        if !header.starts_with(ppp::v2::PROTOCOL_PREFIX) {
            return Err(ProxyHeaderError::NoSignature);
        }
        let body = usize::from(u16::from_be_bytes([header[14], header[15]]));
        if body > MAX_PROXY_BODY {
            return Err(ProxyHeaderError::TooLong(body));
        }
        header.resize(PROXY_PREFIX_LEN + body, 0);
        stream.read_exact(&mut header[PROXY_PREFIX_LEN..]).await?;
        let parsed = Header::try_from(header.as_slice())?;
        Ok(match (parsed.command, parsed.addresses) {
            (Command::Proxy, Addresses::IPv4(a)) => {
                Some(SocketAddr::from((a.source_address, a.source_port)))
            }
            (Command::Proxy, Addresses::IPv6(a)) => {
                Some(SocketAddr::from((a.source_address, a.source_port)))
            }
            _ => None,
        })
    };
    tokio::time::timeout(within, read)
        .await
        .map_err(|_| ProxyHeaderError::Timeout)?
}

/// The address a connection comes from as the listener knows it (the TCP peer, or the
/// client its PROXY header named), and its place among the connections in their
/// handshake: in every request's extensions.
#[derive(Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    /// Taken (and so given back) by the connection's task once the handshake is over.
    pub pending: Arc<Mutex<Option<PendingGuard>>>,
}

impl Peer {
    /// The connection is past its handshake (upgraded, or done with HTTP): it leaves
    /// the pending connections.
    pub fn handshake_over(&self) {
        if let Ok(mut pending) = self.pending.lock() {
            pending.take();
        }
    }
}

/// The client's address for a request: its connection's [`Peer`], or the client a
/// trusted proxy's forwarding headers name (see [`forwarded_client`]). A named client
/// counts against its own `max_pending_per_address` from then on, not the proxy's.
pub fn of_request(
    extensions: &http::Extensions,
    headers: &HeaderMap,
    node: &NodeConfig,
) -> Result<IpAddr, Reject> {
    let Some(peer) = extensions.get::<Peer>() else {
        return Err(Reject::BadRequest("no connection for this request"));
    };
    let client = forwarded_client(peer.addr.ip(), headers, &node.trusted_proxies);
    if client != peer.addr.ip() {
        let mut pending = peer.pending.lock().map_err(|_| Reject::AtCapacity)?;
        if let Some(guard) = pending.as_mut() {
            guard
                .rebind(client, node.max_pending_per_address)
                .map_err(|_| Reject::TooManyPending)?;
        }
    }
    Ok(client)
}

/// Whether `addr` is one of the trusted proxies.
pub fn is_trusted(addr: IpAddr, trusted: &[IpNet]) -> bool {
    trusted.iter().any(|net| net.contains(&canonical(addr)))
}

/// The client's address for a request from `peer`: `peer` itself unless it is a
/// trusted proxy; then the right-most address of the forwarding chain that isn't a
/// trusted proxy (`Forwarded` wins over `X-Forwarded-For`). An entry that doesn't
/// parse (`unknown`, an obfuscated name) stops the walk at the hop that wrote it.
pub fn forwarded_client(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    if !is_trusted(peer, trusted) {
        return peer;
    }
    let chain = forwarding_chain(headers);
    let mut client = peer;
    for hop in chain.iter().rev().take(MAX_FORWARDED_HOPS) {
        let Some(addr) = hop else {
            return client;
        };
        client = *addr;
        if !is_trusted(client, trusted) {
            return client;
        }
    }
    client
}

/// The forwarding chain, left (the first hop) to right, from `Forwarded`'s `for=`
/// parameters, or else from `X-Forwarded-For`; `None` for an entry that isn't an IP.
fn forwarding_chain(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let values = |name| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect::<Vec<_>>()
    };
    let forwarded = values(http::header::FORWARDED);
    if !forwarded.is_empty() {
        return forwarded
            .into_iter()
            .map(|element| {
                element
                    .split(';')
                    .find_map(|pair| {
                        let (key, value) = pair.trim().split_once('=')?;
                        key.eq_ignore_ascii_case("for").then_some(value)
                    })
                    .and_then(parse_node)
            })
            .collect();
    }
    values(http::HeaderName::from_static("x-forwarded-for"))
        .into_iter()
        .map(parse_node)
        .collect()
}

/// An address as forwarding headers write it: `192.0.2.1`, `192.0.2.1:4711`,
/// `"[2001:db8::1]:4711"`, `2001:db8::1`.
fn parse_node(node: &str) -> Option<IpAddr> {
    let node = node.trim().trim_matches('"');
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Ok(addr) = node.parse::<SocketAddr>() {
        return Some(canonical(addr.ip()));
    }
    let bracketed = node.strip_prefix('[')?.split(']').next()?;
    bracketed.parse().ok().map(canonical)
}

/// IPv4-mapped IPv6 addresses (`::ffff:192.0.2.1`) as the IPv4 they are.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        map
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let spoofed = headers(&[("x-forwarded-for", "203.0.113.9")]);
        assert_eq!(
            forwarded_client(ip("198.51.100.4"), &spoofed, &trusted),
            ip("198.51.100.4")
        );
        assert_eq!(
            forwarded_client(ip("10.0.0.2"), &spoofed, &[]),
            ip("10.0.0.2")
        );
    }

    #[test]
    fn the_right_most_untrusted_hop_is_the_client() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        // The browser wrote a fake first entry; the balancers appended what they saw.
        let h = headers(&[
            ("x-forwarded-for", "6.6.6.6, 203.0.113.9"),
            ("x-forwarded-for", "10.1.2.3"),
        ]);
        assert_eq!(
            forwarded_client(ip("10.0.0.2"), &h, &trusted),
            ip("203.0.113.9")
        );
        let h = headers(&[(
            "forwarded",
            "for=6.6.6.6, for=\"[2001:db8::7]:4711\";proto=https, for=10.1.2.3",
        )]);
        assert_eq!(
            forwarded_client(ip("10.0.0.2"), &h, &trusted),
            ip("2001:db8::7")
        );
        // Forwarded wins over X-Forwarded-For; `unknown` stops the walk.
        let h = headers(&[
            ("forwarded", "for=unknown, for=10.9.9.9"),
            ("x-forwarded-for", "203.0.113.9"),
        ]);
        assert_eq!(
            forwarded_client(ip("10.0.0.2"), &h, &trusted),
            ip("10.9.9.9")
        );
        // No header: the trusted peer itself.
        assert_eq!(
            forwarded_client(ip("10.0.0.2"), &HeaderMap::new(), &trusted),
            ip("10.0.0.2")
        );
    }

    /// `bytes` written by a peer, then what [`read_proxy_header`] makes of them and the
    /// first byte it left unread.
    async fn read_from_peer(bytes: Vec<u8>) -> (Result<Option<SocketAddr>, ProxyHeaderError>, u8) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let peer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(&bytes).await.unwrap();
            s.write_all(b"G").await.unwrap();
            s
        });
        let (mut stream, _) = listener.accept().await.unwrap();
        let _peer = peer.await.unwrap();
        let got = read_proxy_header(&mut stream, Duration::from_secs(5)).await;
        let mut next = [0u8];
        let _ = stream.read_exact(&mut next).await;
        (got, next[0])
    }

    fn header(command: ppp::v2::Command, tlv: &[u8]) -> Vec<u8> {
        use ppp::v2::{Builder, Protocol, Version};
        let addresses = ppp::v2::IPv4::new([203, 0, 113, 9], [10, 0, 0, 1], 4711, 6080);
        let mut builder =
            Builder::with_addresses(Version::Two | command, Protocol::Stream, addresses);
        if !tlv.is_empty() {
            builder = builder.write_tlv(0xE0, tlv).unwrap();
        }
        builder.build().unwrap()
    }

    #[tokio::test]
    async fn a_proxy_header_names_the_client_and_nothing_past_it_is_read() {
        let (got, next) = read_from_peer(header(Command::Proxy, b"")).await;
        assert_eq!(got.unwrap(), Some("203.0.113.9:4711".parse().unwrap()));
        assert_eq!(next, b'G');
        // A balancer's health check (LOCAL) names no client.
        let (got, next) = read_from_peer(header(Command::Local, b"")).await;
        assert_eq!(got.unwrap(), None);
        assert_eq!(next, b'G');
    }

    #[tokio::test]
    async fn a_proxy_header_over_its_bound_or_not_one_is_refused() {
        // 12 address bytes and a TLV of 3 + 500: past MAX_PROXY_BODY.
        let (got, _) = read_from_peer(header(Command::Proxy, &[7; 500])).await;
        assert!(
            matches!(got, Err(ProxyHeaderError::TooLong(515))),
            "{got:?}"
        );
        // Within the bound, TLVs are fine.
        let (got, _) = read_from_peer(header(Command::Proxy, &[7; 400])).await;
        assert!(got.is_ok(), "{got:?}");
        let (got, _) =
            read_from_peer(b"GET /websockify HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()).await;
        assert!(matches!(got, Err(ProxyHeaderError::NoSignature)), "{got:?}");
        // The signature, then a version and command that aren't PROXY v2's.
        let mut bad = header(Command::Proxy, b"");
        bad[12] = 0x11;
        let (got, _) = read_from_peer(bad).await;
        assert!(matches!(got, Err(ProxyHeaderError::Invalid(_))), "{got:?}");
    }

    #[test]
    fn a_long_forwarding_chain_is_read_from_its_right_end_only() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        // The client, then more trusted hops than are read.
        let mut chain = vec!["203.0.113.9".to_owned()];
        chain.extend((1..=MAX_FORWARDED_HOPS).map(|i| format!("10.0.0.{i}")));
        let h = headers(&[("x-forwarded-for", &chain.join(", "))]);
        // The walk stops at the last hop it reads, a trusted proxy, not the client.
        assert_eq!(
            forwarded_client(ip("10.0.0.200"), &h, &trusted),
            ip("10.0.0.1")
        );
        chain.remove(1);
        let h = headers(&[("x-forwarded-for", &chain.join(", "))]);
        assert_eq!(
            forwarded_client(ip("10.0.0.200"), &h, &trusted),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn mapped_addresses_match_their_ipv4_ranges() {
        let trusted: Vec<IpNet> = vec!["127.0.0.1/32".parse().unwrap()];
        assert!(is_trusted(ip("::ffff:127.0.0.1"), &trusted));
        assert_eq!(parse_node("::ffff:192.0.2.1"), Some(ip("192.0.2.1")));
        assert_eq!(parse_node("192.0.2.1:80"), Some(ip("192.0.2.1")));
        assert_eq!(parse_node("_hidden"), None);
    }
}
