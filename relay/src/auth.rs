//! Who may open a session: the token (from `?token=`, `Authorization: Bearer` or the
//! `vnc_token` cookie, in that order) and the optional Origin allowlist.

use http::{HeaderMap, header};

use crate::reject::Reject;

/// The token a request carries, if any.
pub fn token_from(query: Option<&str>, headers: &HeaderMap) -> Option<String> {
    if let Some(t) = query_param(query, "token") {
        return Some(t);
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
        return Some(t.to_owned());
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, value)| *name == "vnc_token" && !value.is_empty())
        .map(|(_, value)| value.to_owned())
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
        assert_eq!(token_from(None, &h).as_deref(), Some("cookie"));
        h.insert(header::AUTHORIZATION, "Bearer bearer".parse().unwrap());
        assert_eq!(token_from(None, &h).as_deref(), Some("bearer"));
        assert_eq!(
            token_from(Some("x=1&token=q%2Bv"), &h).as_deref(),
            Some("q+v")
        );
        assert_eq!(token_from(Some("token="), &HeaderMap::new()), None);
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
