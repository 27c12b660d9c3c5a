//! The routes of share links and of who is in a desktop: creating, listing and
//! revoking a container's share links, its presence list, and giving its input to one
//! session; and their JSON shapes. Each handler's `#[utoipa::path]` is its entry in the
//! OpenAPI description, naming the error responses it shares with others from
//! [`super::responses`].

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use vnc_shared::schema::Viewer;
use vnc_shared::token::{ClipboardPolicy, FilePolicy, Scope};

use super::error::{ApiError, ErrorBody};
use super::responses::{BadBearer, BadPath, NoContainer, NotOwner, RedisFailed, TooLarge};
use super::{AppState, JsonBody, KnownFields, rfc3339_ms};
use crate::app::shares::ShareListing;
use crate::domain::{Caller, Share, ShareRequest};

type St = State<Arc<AppState>>;

pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(revoke))
        .routes(routes!(presence))
        .routes(routes!(driver))
}

/// What `POST /v1/containers/{id}/shares` asks for.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ShareRequest)]
struct ShareBody {
    /// What the link's sessions may do: `view`, or `control` (they may then ask for
    /// the desktop's input).
    scope: Scope,
    /// From 1 to the operator's `share_max_ttl`: the link, and every session opened
    /// with it, ends then.
    #[schema(minimum = 1)]
    ttl_seconds: u64,
    /// Live sessions the link allows at once, 1 to 100 (default 10).
    #[schema(minimum = 1, maximum = 100)]
    max_sessions: Option<u32>,
    /// A label for the owner's listing: at most 64 characters, no control characters.
    #[schema(max_length = 64)]
    name: Option<String>,
    /// Less file transfer than a token of `scope` gets (a `view` share never uploads);
    /// more is narrowed to it.
    files: Option<FilePolicy>,
    /// Less clipboard than a token of `scope` gets (a `view` share never pastes into
    /// the desktop); more is narrowed to it.
    clipboard: Option<ClipboardPolicy>,
}

impl KnownFields for ShareBody {
    const FIELDS: &'static [(&'static str, &'static [&'static str])] = &[(
        "",
        &[
            "scope",
            "ttl_seconds",
            "max_sessions",
            "name",
            "files",
            "clipboard",
        ],
    )];
}

/// A created share link.
#[derive(Serialize, ToSchema)]
struct ShareCreated {
    share_id: String,
    /// The viewer page of the relay with the token in its fragment (the fragment
    /// never reaches a server): the link to hand out.
    url: String,
    /// The share's VNC token (many sessions may use it, up to `max_sessions`).
    token: String,
    /// RFC 3339, UTC, milliseconds.
    #[schema(format = DateTime)]
    expires_at: String,
    scope: Scope,
    max_sessions: u32,
    /// `null` when the request named none.
    #[schema(required = true)]
    name: Option<String>,
    /// The token's `files` claim.
    files: FilePolicy,
    /// The token's `clipboard` claim.
    clipboard: ClipboardPolicy,
}

/// A live share link as the listing shows it (never its token).
#[derive(Serialize, ToSchema)]
#[schema(as = Share)]
struct ShareView {
    share_id: String,
    scope: Scope,
    /// `null` when it has none.
    #[schema(required = true)]
    name: Option<String>,
    max_sessions: u32,
    /// Live sessions opened with it.
    sessions: usize,
    /// The user who created it.
    created_by: String,
    /// RFC 3339, UTC, milliseconds.
    #[schema(format = DateTime)]
    created_at: String,
    /// RFC 3339, UTC, milliseconds.
    #[schema(format = DateTime)]
    expires_at: String,
}

impl From<ShareListing> for ShareView {
    fn from(l: ShareListing) -> Self {
        let s = l.share;
        ShareView {
            created_at: rfc3339_ms(s.created_at),
            expires_at: rfc3339_ms(s.expires_at.saturating_mul(1000)),
            share_id: s.id,
            scope: s.scope,
            name: Some(s.name).filter(|n| !n.is_empty()),
            max_sessions: s.max_sessions,
            sessions: l.sessions,
            created_by: s.created_by,
        }
    }
}

/// A container's live share links.
#[derive(Serialize, ToSchema)]
struct ShareList {
    shares: Vec<ShareView>,
}

/// The viewer page of the relays at `relay_url` (their WebSocket base URL: the page
/// is served on the same listener over HTTP) opening container `cid` with a share
/// token; with this API's `public_url`, the page's way to the file routes.
fn share_url(relay_url: &str, public_url: Option<&str>, token: &str, cid: &str) -> String {
    let base = relay_url.trim_end_matches('/');
    let page = if let Some(rest) = base.strip_prefix("wss://") {
        format!("https://{rest}")
    } else if let Some(rest) = base.strip_prefix("ws://") {
        format!("http://{rest}")
    } else {
        base.to_owned()
    };
    let cid: String = url_escape(cid);
    let control = public_url
        .map(|u| format!("&control={}", url_escape(u.trim_end_matches('/'))))
        .unwrap_or_default();
    format!("{page}/#token={token}&containerId={cid}&share=1{control}")
}

/// Percent-encodes what is not unreserved (RFC 3986) in a fragment parameter.
fn url_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Creates a share link of a running container: a VNC token many people may open
/// the desktop with (up to `max_sessions` at once) until it expires or is revoked.
#[utoipa::path(
    post,
    path = "/v1/containers/{id}/shares",
    operation_id = "createShare",
    tag = "shares",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The container's id")),
    request_body = ShareBody,
    responses(
        (status = 201, description = "The share link and its token", body = ShareCreated),
        (status = 400, description = "Not JSON, an unknown field, a wrong type, or `ttl_seconds`, `max_sessions` or `name` out of bounds, each problem named; or a path that is not valid UTF-8", body = ErrorBody),
        (status = 409, description = "The container is not running", body = ErrorBody),
        (status = 429, description = "The container has 32 live share links, or the caller is over its rate (`Retry-After`)", body = ErrorBody),
        (status = 503, description = "Redis failed, or signing did", body = ErrorBody),
        BadBearer, NotOwner, NoContainer, TooLarge,
    ),
)]
async fn create(
    State(s): St,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<ShareBody>,
) -> Result<Response, ApiError> {
    let req = ShareRequest {
        scope: body.scope,
        ttl: Duration::from_secs(body.ttl_seconds),
        max_sessions: body.max_sessions,
        name: body.name,
        files: body.files,
        clipboard: body.clipboard,
    };
    let (share, minted) = s.app.create_share(&caller, &id, req).await?;
    let tunables = s.app.tunables.get();
    let url = share_url(
        &tunables.relay_url,
        tunables.public_url.as_deref(),
        &minted.token,
        &share.cid,
    );
    let Share {
        id,
        scope,
        name,
        max_sessions,
        expires_at,
        ..
    } = share;
    Ok((
        StatusCode::CREATED,
        Json(ShareCreated {
            share_id: id,
            url,
            token: minted.token,
            expires_at: rfc3339_ms(expires_at.saturating_mul(1000)),
            scope,
            max_sessions,
            name: Some(name).filter(|n| !n.is_empty()),
            files: minted.claims.files,
            clipboard: minted.claims.clipboard,
        }),
    )
        .into_response())
}

/// The live share links of a container, oldest first, each with its live sessions;
/// owner or admin.
#[utoipa::path(
    get,
    path = "/v1/containers/{id}/shares",
    operation_id = "listShares",
    tag = "shares",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The container's id")),
    responses(
        (status = 200, description = "The share links", body = ShareList),
        BadPath, BadBearer, NotOwner, NoContainer, RedisFailed,
    ),
)]
async fn list(
    State(s): St,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<ShareList>, ApiError> {
    let shares = s
        .app
        .container_shares(&caller, &id)
        .await?
        .into_iter()
        .map(Into::into)
        .collect();
    Ok(Json(ShareList { shares }))
}

/// The answer to a share's revocation.
#[derive(Serialize, ToSchema)]
struct ShareRevoked {
    share_id: String,
    /// Always `true`.
    revoked: bool,
}

/// Revokes a share link: the relays refuse it from now on and end its sessions. The
/// share's creator, the container's owner or an admin.
#[utoipa::path(
    delete,
    path = "/v1/shares/{share_id}",
    operation_id = "revokeShare",
    tag = "shares",
    security(("bearer" = [])),
    params(("share_id" = String, Path, description = "The share's id")),
    responses(
        (status = 200, description = "Revoked; the kick is published", body = ShareRevoked),
        (status = 403, description = "Neither the share's creator, the container's owner nor an admin", body = ErrorBody),
        (status = 404, description = "No such live share (expired, already revoked), or another tenant's", body = ErrorBody),
        BadPath, BadBearer, RedisFailed,
    ),
)]
async fn revoke(
    State(s): St,
    caller: Caller,
    Path(share_id): Path<String>,
) -> Result<Json<ShareRevoked>, ApiError> {
    let share = s.app.revoke_share(&caller, &share_id).await?;
    Ok(Json(ShareRevoked {
        share_id: share.id,
        revoked: true,
    }))
}

/// Who is in a desktop.
#[derive(Serialize, ToSchema)]
struct PresenceView {
    /// The session holding the desktop's input, if any.
    #[schema(required = true)]
    driver: Option<String>,
    /// Its live sessions, oldest first, at most 256.
    viewers: Vec<Viewer>,
    /// Live sessions left off `viewers`.
    more: usize,
}

/// Who is in a container's desktop, from the relays' registry and the driver lease;
/// owner or admin.
#[utoipa::path(
    get,
    path = "/v1/containers/{id}/presence",
    operation_id = "getPresence",
    tag = "shares",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The container's id")),
    responses(
        (status = 200, description = "The sessions and the driver", body = PresenceView),
        BadPath, BadBearer, NotOwner, NoContainer, RedisFailed,
    ),
)]
async fn presence(
    State(s): St,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<PresenceView>, ApiError> {
    let p = s.app.presence(&caller, &id).await?;
    Ok(Json(PresenceView {
        driver: p.driver,
        viewers: p.viewers,
        more: p.more,
    }))
}

/// What `POST /v1/containers/{id}/driver` asks for.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = DriverRequest)]
struct DriverBody {
    /// The live `control` session of the container to give the input to, or `null`
    /// to free it. Required: `{}` frees nothing.
    #[serde(deserialize_with = "Option::deserialize")]
    #[schema(required = true)]
    session_id: Option<String>,
}

impl KnownFields for DriverBody {
    const FIELDS: &'static [(&'static str, &'static [&'static str])] = &[("", &["session_id"])];
}

/// The driver lease after a change.
#[derive(Serialize, ToSchema)]
struct DriverView {
    /// The session that now holds the input, or `null`.
    #[schema(required = true)]
    driver: Option<String>,
}

/// Gives a desktop's input to one of its live `control` sessions, or frees it; the
/// relays holding the desktop are told. Owner or admin.
#[utoipa::path(
    post,
    path = "/v1/containers/{id}/driver",
    operation_id = "setDriver",
    tag = "shares",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The container's id")),
    request_body = DriverBody,
    responses(
        (status = 200, description = "The lease is set (or freed) and the change published", body = DriverView),
        (status = 400, description = "Not JSON, an unknown field, a wrong type or no `session_id`; or a path that is not valid UTF-8", body = ErrorBody),
        (status = 404, description = "No such container (or another tenant's), or no such live session of it", body = ErrorBody),
        (status = 409, description = "The session is a `view` session", body = ErrorBody),
        BadBearer, NotOwner, TooLarge, RedisFailed,
    ),
)]
async fn driver(
    State(s): St,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<DriverBody>,
) -> Result<Json<DriverView>, ApiError> {
    let driver = s
        .app
        .set_driver(&caller, &id, body.session_id.as_deref())
        .await?;
    Ok(Json(DriverView { driver }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn share_urls_open_the_relays_viewer_page() {
        assert_eq!(
            share_url("wss://vnc.example.com/", None, "T", "c1"),
            "https://vnc.example.com/#token=T&containerId=c1&share=1"
        );
        assert_eq!(
            share_url("ws://127.0.0.1:6080", None, "T", "a b&c"),
            "http://127.0.0.1:6080/#token=T&containerId=a%20b%26c&share=1"
        );
        assert_eq!(
            share_url(
                "https://relay",
                Some("https://api.example.com:8443/"),
                "T",
                "c"
            ),
            "https://relay/#token=T&containerId=c&share=1&control=https%3A%2F%2Fapi.example.com%3A8443"
        );
    }
}
