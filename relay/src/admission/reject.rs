//! Why a request is refused before the upgrade, each reason mapped to one HTTP status
//! (`docs/architecture.md`) in one place, answered as a small JSON body.

use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::Full;
use vnc_shared::token::TokenError;

use crate::admission::upstream::UpstreamError;
use crate::metrics::{AUTH_FAILURES, REJECTIONS};
use crate::node::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum Reject {
    #[error("{0}")]
    BadRequest(&'static str),
    #[error("no token: pass ?token=, the vnc_token cookie or Authorization: Bearer")]
    NoToken,
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("token has been revoked")]
    Revoked,
    #[error("share link revoked or expired")]
    ShareGone,
    #[error("token is single-use and already holds a live session")]
    TokenInUse,
    #[error("too many live sessions for this {0}")]
    TooManySessions(&'static str),
    #[error("too many connections in their handshake from this address")]
    TooManyPending,
    #[error("origin is not allowed")]
    Origin,
    #[error(
        "a token from the vnc_token cookie is taken only from the relay's own origin or an allowed one"
    )]
    CrossSiteCookie,
    #[error("token is not valid for this container")]
    WrongContainer,
    #[error("unknown container")]
    UnknownContainer,
    #[error("container is not running (state: {0})")]
    NotRunning(&'static str),
    #[error("no such endpoint")]
    NotFound,
    /// What failed, never where: the body names no internal address.
    #[error("the desktop's VNC server is unreachable ({0})")]
    Upstream(&'static str),
    #[error("relay is draining")]
    Draining,
    #[error("relay is at its session limit")]
    AtCapacity,
    /// What failed, never where or Redis's own words.
    #[error("relay can't verify the session right now: {0}")]
    Unavailable(&'static str),
}

/// The address and the OS error go to the relay's log, not to the client.
impl From<UpstreamError> for Reject {
    fn from(e: UpstreamError) -> Self {
        tracing::warn!(error = %e, "VNC server unreachable");
        Reject::Upstream(match e {
            UpstreamError::Timeout { .. } => "connect timed out",
            UpstreamError::Connect { source, .. }
                if source.kind() == std::io::ErrorKind::ConnectionRefused =>
            {
                "connection refused"
            }
            UpstreamError::Connect { .. } => "connect failed",
        })
    }
}

/// Redis's error and a corrupt record's details go to the relay's log, not to the
/// client.
impl From<StoreError> for Reject {
    fn from(e: StoreError) -> Self {
        tracing::warn!(error = %e, "session store failed");
        Reject::Unavailable(match e {
            StoreError::Unavailable(_) => "redis unreachable",
            StoreError::Corrupt(_) => "the container's record is unreadable",
        })
    }
}

impl Reject {
    pub fn status(&self) -> StatusCode {
        match self {
            Reject::BadRequest(_) => StatusCode::BAD_REQUEST,
            Reject::NoToken | Reject::Token(_) => StatusCode::UNAUTHORIZED,
            Reject::Revoked
            | Reject::ShareGone
            | Reject::TokenInUse
            | Reject::Origin
            | Reject::CrossSiteCookie
            | Reject::WrongContainer => StatusCode::FORBIDDEN,
            Reject::UnknownContainer | Reject::NotRunning(_) | Reject::NotFound => {
                StatusCode::NOT_FOUND
            }
            Reject::Upstream(_) => StatusCode::BAD_GATEWAY,
            Reject::TooManySessions(_) | Reject::TooManyPending => StatusCode::TOO_MANY_REQUESTS,
            Reject::Draining | Reject::AtCapacity | Reject::Unavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    /// Counts the refusal and renders it as `{"status", "error", "message"}`.
    pub fn into_response(self) -> Response<Full<Bytes>> {
        self.count();
        json_response(self.status(), &self.to_string())
    }

    /// Counts the refusal in the metrics (auth failures by reason, refusals by status).
    pub fn count(&self) {
        let status = self.status();
        match self {
            Reject::NoToken => metrics::counter!(AUTH_FAILURES, "reason" => "missing").increment(1),
            Reject::Token(e) => {
                metrics::counter!(AUTH_FAILURES, "reason" => e.reason()).increment(1)
            }
            Reject::Revoked => metrics::counter!(AUTH_FAILURES, "reason" => "revoked").increment(1),
            Reject::ShareGone => {
                metrics::counter!(AUTH_FAILURES, "reason" => "share_revoked").increment(1)
            }
            _ => {}
        }
        metrics::counter!(REJECTIONS, "status" => status.as_str().to_owned()).increment(1);
    }
}

/// A JSON error response: `{"status", "error", "message"}`.
pub fn json_response(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({
        "status": status.as_u16(),
        "error": status.canonical_reason().unwrap_or("error"),
        "message": message,
    });
    json(status, &body)
}

/// A response with a JSON body.
pub fn json(status: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_design() {
        let cases = [
            (Reject::BadRequest("x"), 400),
            (Reject::NoToken, 401),
            (Reject::Token(TokenError::Expired), 401),
            (Reject::Revoked, 403),
            (Reject::TokenInUse, 403),
            (Reject::TooManySessions("user"), 429),
            (Reject::Origin, 403),
            (Reject::CrossSiteCookie, 403),
            (Reject::WrongContainer, 403),
            (Reject::UnknownContainer, 404),
            (Reject::NotRunning("stopped"), 404),
            (Reject::Upstream("connection refused"), 502),
            (Reject::Draining, 503),
            (Reject::Unavailable("redis unreachable"), 503),
        ];
        for (r, code) in cases {
            assert_eq!(r.status().as_u16(), code, "{r}");
        }
    }

    #[test]
    fn bodies_name_no_internal_address_or_redis_error() {
        let refused = UpstreamError::Connect {
            addr: "10.1.2.3:5901".into(),
            source: std::io::ErrorKind::ConnectionRefused.into(),
        };
        let timeout = UpstreamError::Timeout {
            addr: "10.1.2.3:5901".into(),
            after: std::time::Duration::from_secs(5),
        };
        let redis = StoreError::Unavailable("IO Error: 10.9.9.9:6379: refused".into());
        let corrupt = StoreError::Corrupt("port \"x\" of vnc:container:c1".into());
        let bodies = [
            Reject::from(refused).to_string(),
            Reject::from(timeout).to_string(),
            Reject::from(redis).to_string(),
            Reject::from(corrupt).to_string(),
        ];
        for body in &bodies {
            assert!(!body.contains("10."), "{body}");
            assert!(!body.contains("vnc:"), "{body}");
        }
        assert_eq!(
            bodies[0],
            "the desktop's VNC server is unreachable (connection refused)"
        );
        assert_eq!(
            bodies[2],
            "relay can't verify the session right now: redis unreachable"
        );
    }
}
