//! Who may open a session: the token (from `?token=`, `Authorization: Bearer` or the
//! `vnc_token` cookie, in that order) and the optional Origin allowlist.
//!
//! A browser attaches the cookie to a WebSocket that any site opens, so a cookie token
//! is taken only from a request whose Origin is on the allowlist or, with no allowlist,
//! from the relay's own origin (the Origin's host and port are the Host's):
//! cross-site WebSocket hijacking gets 403. Query and bearer tokens can't be attached by
//! another site and are taken from any origin the allowlist lets through.

use http::uri::{Authority, Scheme};
use http::{HeaderMap, Uri, header};

use crate::admission::reject::Reject;

/// Where a request's token came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Query,
    Bearer,
    Cookie,
}

/// The request's token (query, bearer or cookie), under the cookie's origin rule; the
/// Origin allowlist itself is [`check_origin`]'s.
pub fn request_token(
    allowed: &[String],
    query: Option<&str>,
    headers: &HeaderMap,
) -> Result<String, Reject> {
    match token_from(query, headers) {
        None => Err(Reject::NoToken),
        Some((_, Source::Cookie)) if allowed.is_empty() && !same_origin(headers) => {
            Err(Reject::CrossSiteCookie)
        }
        Some((token, _)) => Ok(token),
    }
}

/// The token a request carries, if any, and where it came from.
pub fn token_from(query: Option<&str>, headers: &HeaderMap) -> Option<(String, Source)> {
    if let Some(t) = query_param(query, "token") {
        return Some((t, Source::Query));
    }
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty());
    if let Some(t) = bearer {
        return Some((t.to_owned(), Source::Bearer));
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, value)| *name == "vnc_token" && !value.is_empty())
        .map(|(_, value)| (value.to_owned(), Source::Cookie))
}

/// Whether the request's Origin names the host and port it was sent to (its Host). A
/// request without an Origin is not same-origin: browsers send one on every WebSocket.
fn same_origin(headers: &HeaderMap) -> bool {
    let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(origin), Some(host)) = (header(header::ORIGIN), header(header::HOST)) else {
        return false;
    };
    let (Ok(origin), Ok(host)) = (origin.parse::<Uri>(), host.parse::<Authority>()) else {
        return false;
    };
    let (Some(scheme), Some(authority)) = (origin.scheme(), origin.authority()) else {
        return false;
    };
    let default_port = if *scheme == Scheme::HTTPS { 443 } else { 80 };
    authority.host().eq_ignore_ascii_case(host.host())
        && authority.port_u16().unwrap_or(default_port) == host.port_u16().unwrap_or(default_port)
}

/// A query parameter, percent-decoded; empty values count as absent.
pub fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(k, v)| k == name && !v.is_empty())
        .map(|(_, v)| v.into_owned())
}

/// With a non-empty allowlist, the request's Origin must be on it.
pub fn check_origin(allowed: &[String], headers: &HeaderMap) -> Result<(), Reject> {
    if allowed.is_empty() {
        return Ok(());
    }
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    match origin {
        Some(o) if allowed.iter().any(|a| a.eq_ignore_ascii_case(o)) => Ok(()),
        _ => Err(Reject::Origin),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_sources_in_order() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, "a=b; vnc_token=cookie".parse().unwrap());
        assert_eq!(
            token_from(None, &h),
            Some(("cookie".into(), Source::Cookie))
        );
        h.insert(header::AUTHORIZATION, "Bearer bearer".parse().unwrap());
        assert_eq!(
            token_from(None, &h),
            Some(("bearer".into(), Source::Bearer))
        );
        assert_eq!(
            token_from(Some("x=1&token=q%2Bv"), &h),
            Some(("q+v".into(), Source::Query))
        );
        assert_eq!(token_from(Some("token="), &HeaderMap::new()), None);
    }

    fn cookie_request(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, "vnc_token=cookie".parse().unwrap());
        h.insert(header::HOST, host.parse().unwrap());
        if let Some(o) = origin {
            h.insert(header::ORIGIN, o.parse().unwrap());
        }
        h
    }

    #[test]
    fn a_cookie_token_needs_the_relays_own_origin_without_an_allowlist() {
        let taken = |origin, host| request_token(&[], None, &cookie_request(origin, host));
        assert!(taken(Some("http://relay.example:6080"), "relay.example:6080").is_ok());
        assert!(taken(Some("https://Relay.example"), "relay.example:443").is_ok());
        assert!(taken(Some("http://relay.example"), "relay.example").is_ok());
        for (origin, host) in [
            (Some("https://evil.example"), "relay.example"),
            (Some("http://relay.example:6081"), "relay.example:6080"),
            (Some("https://relay.example"), "relay.example:80"),
            (Some("null"), "relay.example"),
            (None, "relay.example"),
        ] {
            assert!(
                matches!(taken(origin, host), Err(Reject::CrossSiteCookie)),
                "{origin:?} to {host}"
            );
        }
        // Query and bearer tokens are not attached by other sites.
        let mut h = cookie_request(Some("https://evil.example"), "relay.example");
        assert_eq!(request_token(&[], Some("token=q"), &h).unwrap(), "q");
        h.insert(header::AUTHORIZATION, "Bearer b".parse().unwrap());
        assert_eq!(request_token(&[], None, &h).unwrap(), "b");
        // With an allowlist, check_origin decides for every source.
        let allowed = vec!["https://app.example".to_owned()];
        let h = cookie_request(Some("https://app.example"), "relay.example");
        assert!(check_origin(&allowed, &h).is_ok());
        assert_eq!(request_token(&allowed, None, &h).unwrap(), "cookie");
    }

    #[test]
    fn origin_allowlist() {
        let mut h = HeaderMap::new();
        assert!(check_origin(&[], &h).is_ok());
        let allowed = vec!["https://app.example".to_owned()];
        assert!(check_origin(&allowed, &h).is_err());
        h.insert(header::ORIGIN, "https://evil.example".parse().unwrap());
        assert!(check_origin(&allowed, &h).is_err());
        h.insert(header::ORIGIN, "https://app.example".parse().unwrap());
        assert!(check_origin(&allowed, &h).is_ok());
    }
}
