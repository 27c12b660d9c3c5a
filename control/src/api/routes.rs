//! The `/v1` routes and their JSON shapes.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use vnc_shared::token::Scope;

use super::error::ApiError;
use super::{AppState, JsonBody, KnownFields, rfc3339_ms};
use crate::domain::{Caller, Container, CreateContainer};

/// Default and largest page size of listings.
const DEFAULT_PER_PAGE: usize = 20;
const MAX_PER_PAGE: usize = 100;

type St = State<Arc<AppState>>;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/containers", post(create).get(list))
        .route("/v1/containers/{id}", get(show).delete(delete))
        .route("/v1/containers/{id}/vnc-tokens", post(vnc_token))
        .route("/v1/jobs/{id}", get(job))
        .route(
            "/healthz",
            get(|| async { Json(serde_json::json!({"alive": true})) }),
        )
        .route("/readyz", get(readyz))
}

impl KnownFields for CreateContainer {
    const FIELDS: &'static [(&'static str, &'static [&'static str])] = &[
        ("", &["image", "resources", "env", "labels", "record"]),
        ("resources", &["cpus", "memory_mb"]),
    ];
}

/// A container as the API shows it (never its VNC password or internal endpoint).
#[derive(Serialize)]
struct ContainerView {
    id: String,
    owner: String,
    tenant: String,
    state: &'static str,
    image: String,
    resources: serde_json::Value,
    labels: std::collections::BTreeMap<String, String>,
    created_at: String,
    /// Sessions are recorded (by relays with a recording directory).
    record: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

impl From<Container> for ContainerView {
    fn from(c: Container) -> Self {
        ContainerView {
            state: c.state.as_str(),
            resources: serde_json::json!({"cpus": c.cpus, "memory_mb": c.memory_mb}),
            created_at: rfc3339_ms(c.created_at),
            record: c.record,
            id: c.id,
            owner: c.owner,
            tenant: c.tenant,
            image: c.image,
            labels: c.labels,
            error: c.error,
        }
    }
}

async fn create(
    State(s): St,
    caller: Caller,
    JsonBody(req): JsonBody<CreateContainer>,
) -> Result<Response, ApiError> {
    let (c, job) = s.app.create_container(&caller, req).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({"container_id": c.id, "job_id": job})),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PageQuery {
    page: Option<usize>,
    per_page: Option<usize>,
}

async fn list(
    State(s): St,
    caller: Caller,
    q: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::BadRequest(vec![e.body_text()]))?;
    let page = q.page.unwrap_or(1);
    let per_page = q.per_page.unwrap_or(DEFAULT_PER_PAGE);
    if page == 0 || per_page == 0 || per_page > MAX_PER_PAGE {
        return Err(ApiError::BadRequest(vec![format!(
            "page must be >= 1 and per_page between 1 and {MAX_PER_PAGE}"
        )]));
    }
    let p = s.app.list(&caller, page, per_page).await?;
    let items: Vec<ContainerView> = p.items.into_iter().map(Into::into).collect();
    Ok(Json(serde_json::json!({
        "items": items, "page": page, "per_page": per_page, "total": p.total,
    })))
}

async fn show(
    State(s): St,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<ContainerView>, ApiError> {
    Ok(Json(s.app.container(&caller, &id).await?.into()))
}

async fn delete(
    State(s): St,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let job = s.app.delete_container(&caller, &id).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({"job_id": job})),
    )
        .into_response())
}

/// Fields of a job's result that say where a desktop's VNC server answers: only admins
/// see them (everyone else reaches desktops through the relay, with a token).
const ENDPOINT_FIELDS: [&str; 2] = ["host", "port"];

async fn job(
    State(s): St,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let mut j = s.app.job(&caller, &id).await?;
    if !caller.admin
        && let Some(serde_json::Value::Object(result)) = &mut j.result
    {
        result.retain(|k, _| !ENDPOINT_FIELDS.contains(&k.as_str()));
    }
    Ok(Json(serde_json::to_value(&j).unwrap_or_default()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenBody {
    scope: Scope,
    ttl_seconds: u64,
}

impl KnownFields for TokenBody {
    const FIELDS: &'static [(&'static str, &'static [&'static str])] =
        &[("", &["scope", "ttl_seconds"])];
}

async fn vnc_token(
    State(s): St,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<TokenBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let minted = s
        .app
        .vnc_token(
            &caller,
            &id,
            body.scope,
            Duration::from_secs(body.ttl_seconds),
        )
        .await?;
    let tunables = s.app.tunables.get();
    let base = tunables.relay_url.trim_end_matches('/');
    Ok(Json(serde_json::json!({
        "token": minted.token,
        "expires_at": rfc3339_ms(minted.claims.exp * 1000),
        "ws_url": format!("{base}/websockify?token={}", minted.token),
        "socketio_url": format!("{base}/socket.io/?containerId={id}"),
    })))
}

async fn readyz(State(s): St) -> Response {
    match (s.ready)() {
        None => Json(serde_json::json!({"ready": true})).into_response(),
        Some(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"ready": false, "reason": why})),
        )
            .into_response(),
    }
}
