//! The container and job routes, the probes, and their JSON shapes; each handler's
//! `#[utoipa::path]` is its entry in the OpenAPI description (see [`super::openapi`]),
//! naming the error responses it shares with others from [`super::responses`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use vnc_shared::schema::ContainerState;
use vnc_shared::token::{ClipboardPolicy, FilePolicy, Scope};

use super::error::{ApiError, ErrorBody};
use super::responses::{
    BadBearer, BadPath, NoContainer, NotOwner, QueueFailed, RedisFailed, TooLarge,
};
use super::{AppState, JsonBody, KnownFields, rfc3339_ms};
use crate::domain::{Caller, Container, CreateContainer, Resources};
use crate::infra::queue::{JobRecord, JobState};

/// Default and largest page size of listings.
const DEFAULT_PER_PAGE: usize = 20;
const MAX_PER_PAGE: usize = 100;

type St = State<Arc<AppState>>;

pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(show, delete))
        .routes(routes!(vnc_token))
        .routes(routes!(job))
        .routes(routes!(healthz))
        .routes(routes!(readyz))
}

impl KnownFields for CreateContainer {
    const FIELDS: &'static [(&'static str, &'static [&'static str])] = &[
        (
            "",
            &[
                "image",
                "resources",
                "env",
                "labels",
                "record",
                "files",
                "clipboard",
            ],
        ),
        ("resources", &["cpus", "memory_mb"]),
    ];
}

/// A container as the API shows it (never its VNC password or internal endpoint).
#[derive(Serialize, ToSchema)]
#[schema(as = Container)]
struct ContainerView {
    id: String,
    /// The user who created it (the bearer token's `sub`).
    owner: String,
    tenant: String,
    state: ContainerState,
    image: String,
    resources: Resources,
    labels: BTreeMap<String, String>,
    /// RFC 3339, UTC, milliseconds.
    #[schema(format = DateTime)]
    created_at: String,
    /// Sessions are recorded (by relays with a recording directory).
    record: bool,
    /// Which way files may move (a `view` token gets it without uploads).
    files: FilePolicy,
    /// Which way the clipboard may move (a `view` token gets it without `to_desktop`).
    clipboard: ClipboardPolicy,
    /// Why it failed, on a failed container.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

impl From<Container> for ContainerView {
    fn from(c: Container) -> Self {
        ContainerView {
            state: c.state,
            resources: Resources {
                cpus: c.cpus,
                memory_mb: c.memory_mb,
            },
            created_at: rfc3339_ms(c.created_at),
            record: c.record,
            files: c.files,
            clipboard: c.clipboard,
            id: c.id,
            owner: c.owner,
            tenant: c.tenant,
            image: c.image,
            labels: c.labels,
            error: c.error,
        }
    }
}

/// The answer to a create: the new container and the job that starts it.
#[derive(Serialize, ToSchema)]
struct CreateAccepted {
    container_id: String,
    /// The `start` job (`GET /v1/jobs/{id}`).
    job_id: String,
}

/// Asks for a desktop container: recorded as `creating`, and a `start` job queued in
/// the tenant's turn.
#[utoipa::path(
    post,
    path = "/v1/containers",
    operation_id = "createContainer",
    tag = "containers",
    security(("bearer" = [])),
    request_body = CreateContainer,
    responses(
        (status = 202, description = "Recorded; the start job is queued", body = CreateAccepted),
        (status = 400, description = "Not JSON, an unknown field, a wrong type, or outside the operator's bounds (image, resources, env, labels), each problem named", body = ErrorBody),
        (status = 429, description = "The tenant is at `max_containers_per_tenant` live containers, or the caller over its rate (`Retry-After`)", body = ErrorBody),
        BadBearer, TooLarge, QueueFailed,
    ),
)]
async fn create(
    State(s): St,
    caller: Caller,
    JsonBody(req): JsonBody<CreateContainer>,
) -> Result<Response, ApiError> {
    let (c, job) = s.app.create_container(&caller, req).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(CreateAccepted {
            container_id: c.id,
            job_id: job,
        }),
    )
        .into_response())
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct PageQuery {
    /// From 1 (default 1).
    #[param(minimum = 1)]
    page: Option<usize>,
    /// Items a page (default 20, at most 100).
    #[param(minimum = 1, maximum = 100)]
    per_page: Option<usize>,
}

/// A page of a listing of containers.
#[derive(Serialize, ToSchema)]
struct ContainerPage {
    items: Vec<ContainerView>,
    page: usize,
    per_page: usize,
    /// Containers in the whole listing.
    total: usize,
}

/// The caller's containers (an admin's: the tenant's), oldest first.
#[utoipa::path(
    get,
    path = "/v1/containers",
    operation_id = "listContainers",
    tag = "containers",
    security(("bearer" = [])),
    params(PageQuery),
    responses(
        (status = 200, description = "A page of containers", body = ContainerPage),
        (status = 400, description = "An unknown query parameter or one out of range", body = ErrorBody),
        BadBearer, RedisFailed,
    ),
)]
async fn list(
    State(s): St,
    caller: Caller,
    q: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ContainerPage>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::BadRequest(vec![e.body_text()]))?;
    let page = q.page.unwrap_or(1);
    let per_page = q.per_page.unwrap_or(DEFAULT_PER_PAGE);
    if page == 0 || per_page == 0 || per_page > MAX_PER_PAGE {
        return Err(ApiError::BadRequest(vec![format!(
            "page must be >= 1 and per_page between 1 and {MAX_PER_PAGE}"
        )]));
    }
    let p = s.app.list(&caller, page, per_page).await?;
    Ok(Json(ContainerPage {
        items: p.items.into_iter().map(Into::into).collect(),
        page,
        per_page,
        total: p.total,
    }))
}

/// One container; another tenant's is "not found".
#[utoipa::path(
    get,
    path = "/v1/containers/{id}",
    operation_id = "getContainer",
    tag = "containers",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The container's id")),
    responses(
        (status = 200, description = "The container", body = ContainerView),
        BadPath, BadBearer, NoContainer, RedisFailed,
    ),
)]
async fn show(
    State(s): St,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<ContainerView>, ApiError> {
    Ok(Json(s.app.container(&caller, &id).await?.into()))
}

/// The answer to a delete: the job that stops the container.
#[derive(Serialize, ToSchema)]
struct DeleteAccepted {
    /// The `stop` job (`GET /v1/jobs/{id}`).
    job_id: String,
}

/// Stops a container: marked `stopping`, its viewers told, a `stop` job queued.
#[utoipa::path(
    delete,
    path = "/v1/containers/{id}",
    operation_id = "deleteContainer",
    tag = "containers",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The container's id")),
    responses(
        (status = 202, description = "Marked stopping; the stop job is queued", body = DeleteAccepted),
        (status = 409, description = "Already stopped", body = ErrorBody),
        BadPath, BadBearer, NotOwner, NoContainer, QueueFailed,
    ),
)]
async fn delete(
    State(s): St,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let job = s.app.delete_container(&caller, &id).await?;
    Ok((StatusCode::ACCEPTED, Json(DeleteAccepted { job_id: job })).into_response())
}

/// Fields of a job's result that say where a desktop's VNC server answers: only admins
/// see them (everyone else reaches desktops through the relay, with a token).
const ENDPOINT_FIELDS: [&str; 2] = ["host", "port"];

/// A job as the API shows it.
#[derive(Serialize, ToSchema)]
#[schema(as = Job)]
struct JobView {
    id: String,
    /// `start` or `stop`.
    name: String,
    /// The job's input (`{"cid": ...}`).
    #[schema(value_type = Object)]
    data: serde_json::Value,
    state: JobState,
    /// 0 to 100.
    #[schema(maximum = 100)]
    progress: u8,
    /// Runs started so far.
    attempts: u32,
    max_attempts: u32,
    /// Why the last run failed, if it did.
    error: Option<String>,
    /// The handler's output, once completed (a start's endpoint only for admins).
    #[schema(value_type = Option<Object>)]
    result: Option<serde_json::Value>,
    /// Unix milliseconds.
    created_at: u64,
    /// Unix milliseconds.
    updated_at: u64,
    /// Unix milliseconds.
    finished_at: Option<u64>,
}

impl From<JobRecord> for JobView {
    fn from(j: JobRecord) -> Self {
        // Every field named: a new one is shown or left out on purpose.
        let JobRecord {
            id,
            name,
            data,
            state,
            progress,
            attempts,
            max_attempts,
            error,
            result,
            created_at,
            updated_at,
            finished_at,
            group: _,
        } = j;
        JobView {
            id,
            name,
            data,
            state,
            progress,
            attempts,
            max_attempts,
            error,
            result,
            created_at,
            updated_at,
            finished_at,
        }
    }
}

/// A job about a container the caller can see.
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}",
    operation_id = "getJob",
    tag = "containers",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The job's id")),
    responses(
        (status = 200, description = "The job", body = JobView),
        (status = 404, description = "No such job, or one about a container the caller can't see", body = ErrorBody),
        BadPath, BadBearer, QueueFailed,
    ),
)]
async fn job(
    State(s): St,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    let mut j = s.app.job(&caller, &id).await?;
    if !caller.admin
        && let Some(serde_json::Value::Object(result)) = &mut j.result
    {
        result.retain(|k, _| !ENDPOINT_FIELDS.contains(&k.as_str()));
    }
    Ok(Json(j.into()))
}

/// What `POST /v1/containers/{id}/vnc-tokens` asks for.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = VncTokenRequest)]
struct TokenBody {
    /// `view` for anyone of the tenant, `control` for the owner or an admin.
    scope: Scope,
    /// From 1 to the operator's `token_max_ttl`.
    #[schema(minimum = 1)]
    ttl_seconds: u64,
}

impl KnownFields for TokenBody {
    const FIELDS: &'static [(&'static str, &'static [&'static str])] =
        &[("", &["scope", "ttl_seconds"])];
}

/// A minted VNC token and where to use it.
#[derive(Serialize, ToSchema)]
struct VncToken {
    /// The JWT the relay takes.
    token: String,
    /// RFC 3339, UTC, milliseconds.
    #[schema(format = DateTime)]
    expires_at: String,
    /// The relay's WebSocket URL with the token.
    ws_url: String,
    /// The relay's socket.io URL for the container's events.
    socketio_url: String,
    /// The token's `files` claim: what the viewer page may do with files.
    files: FilePolicy,
    /// The token's `clipboard` claim.
    clipboard: ClipboardPolicy,
}

/// Mints a VNC token for a running container (recorded, so it can be revoked).
#[utoipa::path(
    post,
    path = "/v1/containers/{id}/vnc-tokens",
    operation_id = "createVncToken",
    tag = "containers",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The container's id")),
    request_body = TokenBody,
    responses(
        (status = 200, description = "The token", body = VncToken),
        (status = 400, description = "Not JSON, an unknown field, a wrong type, or `ttl_seconds` out of range; or a path that is not valid UTF-8", body = ErrorBody),
        (status = 403, description = "A `control` token for someone neither the owner nor an admin", body = ErrorBody),
        (status = 409, description = "The container is not running", body = ErrorBody),
        (status = 503, description = "Redis failed, or signing did", body = ErrorBody),
        BadBearer, NoContainer, TooLarge,
    ),
)]
async fn vnc_token(
    State(s): St,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<TokenBody>,
) -> Result<Json<VncToken>, ApiError> {
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
    Ok(Json(VncToken {
        expires_at: rfc3339_ms(minted.claims.exp * 1000),
        ws_url: format!("{base}/websockify?token={}", minted.token),
        socketio_url: format!("{base}/socket.io/?containerId={id}"),
        files: minted.claims.files,
        clipboard: minted.claims.clipboard,
        token: minted.token,
    }))
}

/// The answer of the liveness probe.
#[derive(Serialize, ToSchema)]
struct Alive {
    alive: bool,
}

/// Liveness: the process answers. Public, never rate limited.
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "healthz",
    tag = "probes",
    responses((status = 200, description = "Alive", body = Alive)),
)]
async fn healthz() -> Json<Alive> {
    Json(Alive { alive: true })
}

/// The answer of the readiness probe when ready.
#[derive(Serialize, ToSchema)]
struct Ready {
    ready: bool,
}

/// Readiness: Redis answers and the process is not draining. Public, never rate
/// limited.
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readyz",
    tag = "probes",
    responses(
        (status = 200, description = "Ready", body = Ready),
        (status = 503, description = "Not ready; `message` says why (draining, Redis)", body = ErrorBody),
    ),
)]
async fn readyz(State(s): St) -> Result<Json<Ready>, ApiError> {
    match (s.ready)() {
        None => Ok(Json(Ready { ready: true })),
        // Every error body is the envelope: the reason goes in its `message`.
        Some(why) => Err(ApiError::Unavailable(why)),
    }
}
