//! The REST API under `/v1` (axum): routes, the request-id and error envelope, the
//! JSON body extractor that names every unknown field, HTTP metrics, and the API's
//! OpenAPI description.

pub mod auth;
pub mod engines;
pub mod error;
pub mod files;
pub mod openapi;
pub mod rate;
pub mod responses;
pub mod routes;
pub mod sessions;
pub mod shares;

use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, FromRequest, MatchedPath, Request};
use axum::middleware::{self, Next};
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderValue, header};
use serde::de::DeserializeOwned;
use tracing::Instrument;

use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::app::App;
use crate::metrics::{HTTP_DURATION, HTTP_REQUESTS};
use auth::IdentityVerifier;
use error::{ApiError, ErrorBody, ErrorMessage};
use vnc_shared::swap::Swap;

/// Largest request body the API reads.
pub const MAX_BODY: usize = 64 * 1024;

/// What every handler shares.
pub struct AppState {
    /// Verifies callers' identity tokens; SIGHUP may replace it.
    pub identity: Swap<IdentityVerifier>,
    pub app: App,
    /// The per-caller request limit; `None` when turned off.
    pub limiter: Option<rate::CallerLimiter>,
    /// Why the API should not take traffic now, if it shouldn't (for `/readyz`).
    pub ready: Box<dyn Fn() -> Option<String> + Send + Sync>,
}

/// The API router.
pub fn router(state: Arc<AppState>) -> Router {
    let (routes, _) = api_routes().split_for_parts();
    routes
        .fallback(|| async { ApiError::not_found("route") })
        .route_layer(middleware::from_fn(http_metrics))
        .layer(middleware::from_fn_with_state(state.clone(), rate::limit))
        .layer(middleware::from_fn(envelope))
        .layer(middleware::from_fn_with_state(state.clone(), files::cors))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// Every route of the API with its OpenAPI operation: the router and the description
/// ([`openapi::document`]) are both made from this.
fn api_routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(routes::routes())
        .merge(sessions::routes())
        .merge(shares::routes())
        .merge(files::routes())
        .merge(engines::routes())
        .merge(openapi::routes())
}

/// Request id on every response (taken from `x-request-id` when sane, else new), one
/// span per request, and the JSON error envelope on every error response.
async fn envelope(req: Request, next: Next) -> Response {
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let path = req.uri().path().to_owned();
    let span = tracing::info_span!("request", request.id = %request_id, method = %req.method(), path = %path);
    let started = Instant::now();
    let mut resp = next.run(req).instrument(span.clone()).await;
    let status = resp.status();
    span.in_scope(
        || tracing::info!(status = status.as_u16(), elapsed = ?started.elapsed(), "request"),
    );
    if status.is_client_error() || status.is_server_error() {
        let message = resp
            .extensions()
            .get::<ErrorMessage>()
            .map(|m| m.0.clone())
            .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_owned());
        let body = ErrorBody {
            status_code: status.as_u16(),
            error: status.canonical_reason().unwrap_or("Error"),
            message,
            path,
            timestamp: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            request_id: request_id.clone(),
        };
        *resp.body_mut() = Body::from(serde_json::to_string(&body).unwrap_or_default());
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        resp.headers_mut().remove(header::CONTENT_LENGTH);
    }
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

/// Requests by route and status, and their duration.
async fn http_metrics(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().to_string();
    let started = Instant::now();
    let resp = next.run(req).await;
    let status = resp.status().as_u16().to_string();
    metrics::counter!(HTTP_REQUESTS, "route" => route.clone(), "method" => method, "status" => status)
        .increment(1);
    metrics::histogram!(HTTP_DURATION, "route" => route).record(started.elapsed().as_secs_f64());
    resp
}

/// Fields a request body may have, per nesting path (`""` is the top level).
pub trait KnownFields {
    const FIELDS: &'static [(&'static str, &'static [&'static str])];
}

/// Every field of `value` not in `T::FIELDS`, named with its path.
fn unknown_fields<T: KnownFields>(value: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    for (path, allowed) in T::FIELDS {
        let node = if path.is_empty() {
            Some(value)
        } else {
            value.get(path)
        };
        if let Some(obj) = node.and_then(|n| n.as_object()) {
            for key in obj.keys().filter(|k| !allowed.contains(&k.as_str())) {
                let full = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                out.push(format!("unknown field {full:?}"));
            }
        }
    }
    out
}

/// A JSON body: malformed JSON, unknown fields (each named) and wrong types are 400,
/// an oversized body 413.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + KnownFields> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        if !is_json {
            return Err(ApiError::BadRequest(vec![
                "Content-Type must be application/json".into(),
            ]));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::TooLarge(MAX_BODY)
            } else {
                ApiError::BadRequest(vec![e.body_text()])
            }
        })?;
        let value: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::BadRequest(vec![format!("body is not valid JSON: {e}")]))?;
        let unknown = unknown_fields::<T>(&value);
        if !unknown.is_empty() {
            return Err(ApiError::BadRequest(unknown));
        }
        serde_json::from_value(value)
            .map(JsonBody)
            .map_err(|e| ApiError::BadRequest(vec![e.to_string()]))
    }
}

/// A Unix time in milliseconds as the API writes times (RFC 3339, UTC, milliseconds).
fn rfc3339_ms(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}
