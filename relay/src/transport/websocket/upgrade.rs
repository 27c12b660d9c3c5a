//! The WebSocket opening handshake (RFC 6455 §4.2) with websockify's subprotocol rule:
//! echo `binary` when the client offers it, accept with none when it offers none,
//! refuse anything else (the relay speaks raw binary RFB only).

use bytes::Bytes;
use http::{HeaderMap, Method, Response, StatusCode, header};
use http_body_util::Full;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use crate::admission::reject::Reject;

/// The only subprotocol the relay speaks.
pub const BINARY_PROTOCOL: &str = "binary";

/// A valid upgrade request, ready to be answered with 101.
#[derive(Debug)]
pub struct Upgrade {
    accept: String,
    protocol: Option<&'static str>,
}

fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Checks that the request is a WebSocket upgrade the relay can take.
pub fn check(method: &Method, headers: &HeaderMap) -> Result<Upgrade, Reject> {
    if method != Method::GET {
        return Err(Reject::BadRequest("WebSocket upgrade must be a GET"));
    }
    if !has_token(headers, header::CONNECTION, "upgrade")
        || !has_token(headers, header::UPGRADE, "websocket")
    {
        return Err(Reject::BadRequest("expected a WebSocket upgrade request"));
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(|v| v.as_bytes())
        != Some(b"13")
    {
        return Err(Reject::BadRequest("Sec-WebSocket-Version must be 13"));
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .map(|v| v.as_bytes())
        .filter(|k| k.len() == 24)
        .ok_or(Reject::BadRequest("missing or malformed Sec-WebSocket-Key"))?;
    let offered: Vec<&str> = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    let protocol = if offered.is_empty() {
        None
    } else if offered.contains(&BINARY_PROTOCOL) {
        Some(BINARY_PROTOCOL)
    } else {
        return Err(Reject::BadRequest(
            "unsupported WebSocket subprotocol: only \"binary\" (or none) is spoken",
        ));
    };
    Ok(Upgrade {
        accept: derive_accept_key(key),
        protocol,
    })
}

impl Upgrade {
    /// The 101 response that completes the handshake.
    pub fn response(&self) -> Response<Full<Bytes>> {
        let mut builder = Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(header::CONNECTION, "Upgrade")
            .header(header::UPGRADE, "websocket")
            .header(header::SEC_WEBSOCKET_ACCEPT, &self.accept);
        if let Some(p) = self.protocol {
            builder = builder.header(header::SEC_WEBSOCKET_PROTOCOL, p);
        }
        builder
            .body(Full::new(Bytes::new()))
            .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(protocols: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "keep-alive, Upgrade".parse().unwrap());
        h.insert(header::UPGRADE, "websocket".parse().unwrap());
        h.insert(header::SEC_WEBSOCKET_VERSION, "13".parse().unwrap());
        h.insert(
            header::SEC_WEBSOCKET_KEY,
            "dGhlIHNhbXBsZSBub25jZQ==".parse().unwrap(),
        );
        if let Some(p) = protocols {
            h.insert(header::SEC_WEBSOCKET_PROTOCOL, p.parse().unwrap());
        }
        h
    }

    #[test]
    fn follows_websockify_subprotocol_rules() {
        let up = check(&Method::GET, &headers(Some("base64, binary"))).unwrap();
        assert_eq!(up.protocol, Some("binary"));
        assert_eq!(up.accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        let none = check(&Method::GET, &headers(None)).unwrap();
        assert_eq!(none.protocol, None);
        assert!(
            none.response()
                .headers()
                .get(header::SEC_WEBSOCKET_PROTOCOL)
                .is_none()
        );
        assert!(check(&Method::GET, &headers(Some("base64"))).is_err());
    }

    #[test]
    fn refuses_non_upgrades() {
        assert!(check(&Method::POST, &headers(None)).is_err());
        let mut h = headers(None);
        h.remove(header::UPGRADE);
        assert!(check(&Method::GET, &h).is_err());
        let mut h = headers(None);
        h.insert(header::SEC_WEBSOCKET_VERSION, "8".parse().unwrap());
        assert!(check(&Method::GET, &h).is_err());
    }
}
