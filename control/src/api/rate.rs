//! The per-caller API rate limit: a token bucket per caller (the bearer token's
//! tenant and subject, or the client address when the request carries no valid
//! token), `rate` requests per second with bursts of `burst`. A request over it gets
//! 429 with `Retry-After` (whole seconds until a token is back). `/healthz` and
//! `/readyz` are not limited (probes).
//!
//! The buckets are kept in two generations of at most [`GENERATION`] callers each
//! (so at most [`MAX_TRACKED_CALLERS`]): when the current one is full it becomes the
//! previous one and the old previous one is dropped. A caller seen in the previous
//! generation moves to the current one; a dropped caller starts again with a full
//! bucket, so eviction can only let a caller through earlier, never hold one back.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::header::AUTHORIZATION;

use super::AppState;
use super::error::ApiError;
use crate::domain::Caller;
use crate::metrics::RATE_LIMITED;

/// Callers one generation holds.
pub const GENERATION: usize = 50_000;
/// Most callers tracked at once (two generations).
pub const MAX_TRACKED_CALLERS: usize = 2 * GENERATION;
/// Paths never limited: the probes.
pub const UNLIMITED: [&str; 2] = ["/healthz", "/readyz"];
/// Who a request counts against.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
enum CallerKey {
    /// An authenticated caller: tenant and subject.
    Subject(String, String),
    /// An unauthenticated one: its address (an IPv6 address by its /64, which one
    /// host usually has whole).
    Address(IpAddr),
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets by caller, bounded (see the module doc).
pub struct CallerLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<Generations>,
}

#[derive(Default)]
struct Generations {
    current: HashMap<CallerKey, Bucket>,
    previous: HashMap<CallerKey, Bucket>,
}

impl CallerLimiter {
    /// `per_second` requests a second with bursts of `burst`; `None` when
    /// `per_second` is 0 (no limit).
    pub fn new(per_second: u32, burst: u32) -> Option<CallerLimiter> {
        (per_second > 0).then(|| CallerLimiter {
            rate: f64::from(per_second),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(Generations::default()),
        })
    }

    /// Takes a token of `key`'s bucket, or says how long until one is back.
    fn take(&self, key: CallerKey, now: Instant) -> Result<(), Duration> {
        let mut g = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if !g.current.contains_key(&key) {
            let moved = g.previous.remove(&key);
            if g.current.len() >= GENERATION {
                g.previous = std::mem::take(&mut g.current);
            }
            let fresh = Bucket {
                tokens: self.burst,
                at: now,
            };
            g.current.insert(key.clone(), moved.unwrap_or(fresh));
        }
        let Some(b) = g.current.get_mut(&key) else {
            return Ok(());
        };
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.rate).min(self.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / self.rate))
        }
    }
}

/// The client address of a connection, for the limit of unauthenticated callers: the
/// API listener puts it in every request's extensions as `ConnectInfo<PeerAddr>`.
#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub SocketAddr);

/// The middleware: verifies the bearer token once (the handler's [`Caller`] comes
/// from here then), and answers 429 to a caller over its limit.
pub(super) async fn limit(
    State(state): State<Arc<AppState>>,
    mut req: Request,
    next: Next,
) -> Response {
    let Some(limiter) = &state.limiter else {
        return next.run(req).await;
    };
    if UNLIMITED.contains(&req.uri().path()) {
        return next.run(req).await;
    }
    let bearer = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let caller = match bearer {
        Some(t) => state.identity.get().verify(t.trim()).await.ok(),
        None => None,
    };
    let key = match &caller {
        Some(c) => CallerKey::Subject(c.tenant.clone(), c.sub.clone()),
        None => CallerKey::Address(client_ip(&req)),
    };
    let kind = match key {
        CallerKey::Subject(..) => "subject",
        CallerKey::Address(_) => "address",
    };
    if let Err(wait) = limiter.take(key, Instant::now()) {
        metrics::counter!(RATE_LIMITED, "caller" => kind).increment(1);
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        return ApiError::TooMany {
            message: format!("too many requests: try again in {} s", secs.max(1)),
            retry_after: Some(secs.max(1)),
        }
        .into_response();
    }
    if let Some(c) = caller {
        req.extensions_mut().insert::<Caller>(c);
    }
    next.run(req).await
}

/// The client's address, an IPv6 one cut to its /64; unspecified if unknown.
fn client_ip(req: &Request) -> IpAddr {
    let ip = req
        .extensions()
        .get::<ConnectInfo<PeerAddr>>()
        .map(|ConnectInfo(PeerAddr(a))| a.ip())
        .unwrap_or(IpAddr::from([0, 0, 0, 0]));
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut s = v6.segments();
                s[4..].fill(0);
                IpAddr::from(s)
            }
        },
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(n: usize) -> CallerKey {
        CallerKey::Subject("t".into(), n.to_string())
    }

    #[test]
    fn a_burst_passes_then_the_rate_holds_and_callers_are_apart() {
        let l = CallerLimiter::new(2, 3).unwrap();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(l.take(sub(1), t0).is_ok());
        }
        let wait = l.take(sub(1), t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        assert!(
            l.take(sub(2), t0).is_ok(),
            "another caller has its own bucket"
        );
        assert!(l.take(sub(1), t0 + Duration::from_millis(500)).is_ok());
        assert!(l.take(sub(1), t0 + Duration::from_millis(500)).is_err());
        assert!(CallerLimiter::new(0, 10).is_none());
    }

    #[test]
    fn callers_are_bounded_and_eviction_only_refills() {
        let l = CallerLimiter::new(1, 1).unwrap();
        let t0 = Instant::now();
        assert!(l.take(sub(0), t0).is_ok());
        assert!(l.take(sub(0), t0).is_err());
        for n in 1..=2 * GENERATION {
            let _ = l.take(sub(n), t0);
        }
        let g = l.buckets.lock().unwrap();
        assert!(g.current.len() + g.previous.len() <= MAX_TRACKED_CALLERS);
        drop(g);
        assert!(l.take(sub(0), t0).is_ok(), "an evicted caller starts full");
    }

    #[test]
    fn ipv6_callers_count_by_their_64() {
        let mut req = Request::new(axum::body::Body::empty());
        let addr: SocketAddr = "[2001:db8:1:2:3:4:5:6]:80".parse().unwrap();
        req.extensions_mut().insert(ConnectInfo(PeerAddr(addr)));
        assert_eq!(client_ip(&req), "2001:db8:1:2::".parse::<IpAddr>().unwrap());
    }
}
