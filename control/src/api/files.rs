//! The file routes: an upload into a desktop's upload folder, the listing of its
//! download folder, and a download out of it; who may call them (an identity bearer
//! or the session's VNC token), and the CORS answers that let the viewer page call
//! them from the configured origins. Each handler's `#[utoipa::path]` is its entry in
//! the OpenAPI description.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{FromRequestParts, Path, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::{StreamExt as _, TryStreamExt as _};
use http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, ORIGIN, VARY};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::responses::{BadBearer, NoContainer};
use crate::app::files::MAX_LISTED;
use crate::domain::files::FileCaller;
use crate::infra::runtime::files::FileIn;

type St = State<Arc<AppState>>;

/// Longest wait for the next chunk of an upload's body: a browser that stops sending
/// frees its transfer slot and the engine's connection after this.
pub const UPLOAD_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a browser may cache a preflight's answer.
const PREFLIGHT_MAX_AGE: &str = "600";

pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(upload, download))
}

impl FromRequestParts<Arc<AppState>> for FileCaller {
    type Rejection = ApiError;

    /// The session's VNC token (verified with control's own key) first, since the
    /// viewer page sends one; else an identity bearer, as every other route takes.
    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<FileCaller, ApiError> {
        if let Some(caller) = parts.extensions.get::<crate::domain::Caller>() {
            return Ok(FileCaller::Identity(caller.clone()));
        }
        let token = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| ApiError::Unauthorized("missing Authorization: Bearer token".into()))?;
        if let Ok(claims) = state.app.tunables.get().own_keys.verify(token) {
            return Ok(FileCaller::Token(claims));
        }
        let identity = state.identity.get();
        identity.verify(token).await.map(FileCaller::Identity)
    }
}

/// A file as the listing shows it.
#[derive(Serialize, ToSchema)]
#[schema(as = DesktopFile)]
struct FileView {
    name: String,
    /// Bytes.
    size: u64,
    /// RFC 3339, UTC, seconds.
    #[schema(format = DateTime)]
    modified: String,
}

/// The download folder's files.
#[derive(Serialize, ToSchema)]
struct FileList {
    /// Regular files directly in the folder, by name; at most 1000.
    files: Vec<FileView>,
    /// More files than listed were there.
    more: bool,
}

/// The answer to an upload.
#[derive(Serialize, ToSchema)]
struct Uploaded {
    name: String,
    /// Bytes written.
    size: u64,
}

/// The regular files in the desktop's download folder (`$HOME/Downloads`). A VNC
/// token's `files` (or the caller's role) must allow downloads.
#[utoipa::path(
    get,
    path = "/v1/containers/{id}/files",
    operation_id = "listFiles",
    tag = "files",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The container's id")),
    responses(
        (status = 200, description = "The files", body = FileList),
        (status = 400, description = "A path that is not valid UTF-8", body = ErrorBody),
        (status = 403, description = "Downloads are not allowed: the token's `files` claim, or the container's policy for the caller's role; a token of another container, or a revoked one", body = ErrorBody),
        (status = 409, description = "The static runtime (no file transfer), a container that is not running, or a desktop image without the folder", body = ErrorBody),
        (status = 502, description = "The container engine failed", body = ErrorBody),
        (status = 503, description = "Redis or the container engine is unavailable", body = ErrorBody),
        BadBearer, NoContainer,
    ),
)]
async fn list(
    State(s): St,
    who: FileCaller,
    Path(id): Path<String>,
) -> Result<Json<FileList>, ApiError> {
    let listing = s.app.list_files(&who, &id).await?;
    debug_assert!(listing.files.len() <= MAX_LISTED);
    let files = listing
        .files
        .into_iter()
        .map(|f| FileView {
            modified: humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + Duration::from_secs(f.modified),
            )
            .to_string(),
            name: f.name,
            size: f.size,
        })
        .collect();
    Ok(Json(FileList {
        files,
        more: listing.more,
    }))
}

/// Puts the request's body, as it arrives, into the desktop's upload folder
/// (`$HOME/Uploads`) as file `name`, owned by the folder's owner (an existing file
/// of that name is replaced). The body is the file's raw bytes with a
/// `Content-Length`; a VNC token's `files` (or the caller's role) must allow uploads.
#[utoipa::path(
    put,
    path = "/v1/containers/{id}/files/{name}",
    operation_id = "uploadFile",
    tag = "files",
    security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "The container's id"),
        ("name" = String, Path, description = "The file's name: one path component, percent-encoded; no `/`, `\\`, `..`, NUL or control characters, at most 255 bytes"),
    ),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The file's bytes"),
    responses(
        (status = 201, description = "Written", body = Uploaded),
        (status = 400, description = "A file name that is empty, too long, holds `/`, `\\`, `..`, NUL or a control character; or a path that is not valid UTF-8", body = ErrorBody),
        (status = 403, description = "Uploads are not allowed: the token's `files` claim (view and share tokens carry less), or the container's policy for the caller's role; a token of another container, or a revoked one", body = ErrorBody),
        (status = 409, description = "The static runtime (no file transfer), a container that is not running, or a desktop image without the upload folder", body = ErrorBody),
        (status = 411, description = "No `Content-Length` (a chunked body)", body = ErrorBody),
        (status = 413, description = "`Content-Length` over the operator's `files_max_bytes`", body = ErrorBody),
        (status = 429, description = "Too many transfers on this replica, or the caller over its rate", body = ErrorBody),
        (status = 502, description = "The container engine failed, or the body ended early", body = ErrorBody),
        (status = 503, description = "Redis or the container engine is unavailable", body = ErrorBody),
        BadBearer, NoContainer,
    ),
)]
async fn upload(
    State(s): St,
    who: FileCaller,
    Path((id, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let size = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or_else(|| {
            ApiError::LengthRequired("an upload needs a Content-Length (no chunked body)".into())
        })?;
    s.app
        .upload(&who, &id, &name, size, idle_bounded(body))
        .await?;
    Ok((StatusCode::CREATED, Json(Uploaded { name, size })).into_response())
}

/// Streams file `name` of the desktop's download folder (`$HOME/Downloads`): raw
/// bytes with their `Content-Length`, as the engine sends them. A VNC token's `files`
/// (or the caller's role) must allow downloads.
#[utoipa::path(
    get,
    path = "/v1/containers/{id}/files/{name}",
    operation_id = "downloadFile",
    tag = "files",
    security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "The container's id"),
        ("name" = String, Path, description = "The file's name (percent-encoded)"),
    ),
    responses(
        (status = 200, description = "The file's bytes", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 400, description = "A file name that is empty, too long, holds `/`, `\\`, `..`, NUL or a control character; or a path that is not valid UTF-8", body = ErrorBody),
        (status = 403, description = "Downloads are not allowed: the token's `files` claim, or the container's policy for the caller's role; a token of another container, or a revoked one", body = ErrorBody),
        (status = 404, description = "No such container (or another tenant's), or no such regular file in the download folder", body = ErrorBody),
        (status = 409, description = "The static runtime (no file transfer), a container that is not running, or a desktop image without the download folder", body = ErrorBody),
        (status = 413, description = "The file is over the operator's `files_max_bytes`", body = ErrorBody),
        (status = 429, description = "Too many transfers on this replica, or the caller over its rate", body = ErrorBody),
        (status = 502, description = "The container engine failed", body = ErrorBody),
        (status = 503, description = "Redis or the container engine is unavailable", body = ErrorBody),
        BadBearer,
    ),
)]
async fn download(
    State(s): St,
    who: FileCaller,
    Path((id, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let file = s.app.download(&who, &id, &name).await?;
    let body = Body::from_stream(file.body.map_err(std::io::Error::other));
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(CONTENT_LENGTH, HeaderValue::from(file.size));
    if let Ok(v) = HeaderValue::from_str(&content_disposition(&name)) {
        h.insert(http::header::CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}

/// `attachment` with the name percent-encoded (RFC 6266 `filename*`), so no name can
/// break the header.
fn content_disposition(name: &str) -> String {
    let encoded: String = name
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    format!("attachment; filename*=UTF-8''{encoded}")
}

/// An upload's body as a stream of chunks, failing when the next chunk takes longer
/// than [`UPLOAD_IDLE_TIMEOUT`].
fn idle_bounded(body: Body) -> FileIn {
    let chunks = body.into_data_stream();
    futures_util::stream::unfold(chunks, |mut chunks| async move {
        match tokio::time::timeout(UPLOAD_IDLE_TIMEOUT, chunks.next()).await {
            Ok(Some(Ok(chunk))) => Some((Ok(chunk), chunks)),
            Ok(Some(Err(e))) => Some((Err(std::io::Error::other(e)), chunks)),
            Ok(None) => None,
            Err(_) => Some((
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the upload stalled",
                )),
                chunks,
            )),
        }
    })
    .boxed()
}

/// Whether `path` is one of the file routes (`/v1/containers/{id}/files…`).
fn is_files_path(path: &str) -> bool {
    let Some(rest) = path.strip_prefix("/v1/containers/") else {
        return false;
    };
    let mut parts = rest.splitn(3, '/');
    matches!(
        (parts.next(), parts.next()),
        (Some(id), Some("files")) if !id.is_empty()
    )
}

/// CORS for the file routes: a request from an origin on `viewer_origins` gets
/// `Access-Control-Allow-Origin` (its own origin) on its answer, and its preflight
/// an answer here, before any other layer (it carries no credentials). Other origins
/// get nothing, so the browser keeps their pages out.
pub(super) async fn cors(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if !is_files_path(req.uri().path()) {
        return next.run(req).await;
    }
    let allowed = req
        .headers()
        .get(ORIGIN)
        .and_then(|o| o.to_str().ok())
        .filter(|o| {
            state
                .app
                .tunables
                .get()
                .viewer_origins
                .iter()
                .any(|v| v == o)
        })
        .and_then(|o| HeaderValue::from_str(o).ok());
    let Some(origin) = allowed else {
        return next.run(req).await;
    };
    let preflight = req.method() == Method::OPTIONS
        && req.headers().contains_key("access-control-request-method");
    let mut resp = if preflight {
        let mut resp = StatusCode::NO_CONTENT.into_response();
        let h = resp.headers_mut();
        h.insert(
            "access-control-allow-methods",
            HeaderValue::from_static("GET, PUT"),
        );
        h.insert(
            "access-control-allow-headers",
            HeaderValue::from_static("authorization, content-type, x-request-id"),
        );
        h.insert(
            "access-control-max-age",
            HeaderValue::from_static(PREFLIGHT_MAX_AGE),
        );
        resp
    } else {
        next.run(req).await
    };
    let h = resp.headers_mut();
    h.insert("access-control-allow-origin", origin);
    h.insert(
        "access-control-expose-headers",
        HeaderValue::from_static("x-request-id, content-length, content-disposition"),
    );
    h.append(VARY, HeaderValue::from_static("origin"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_paths_and_dispositions() {
        assert!(is_files_path("/v1/containers/c1/files"));
        assert!(is_files_path("/v1/containers/c1/files/a.txt"));
        assert!(!is_files_path("/v1/containers/c1/shares"));
        assert!(!is_files_path("/v1/containers//files"));
        assert!(!is_files_path("/v1/containers"));
        assert_eq!(
            content_disposition("a b\"\r\n.txt"),
            "attachment; filename*=UTF-8''a%20b%22%0D%0A.txt"
        );
    }
}
