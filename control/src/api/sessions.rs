//! The routes about what the relays run: a container's live sessions, kicking a
//! session, revoking a token, and the relay nodes; and their JSON shapes. Each
//! handler's `#[utoipa::path]` is its entry in the OpenAPI description, naming the
//! error responses it shares with others from [`super::responses`].

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ErrorBody};
use super::responses::{BadBearer, BadPath, NoContainer, NotOwner, RedisFailed};
use super::{AppState, rfc3339_ms};
use crate::domain::{Caller, Node, Session};

type St = State<Arc<AppState>>;

pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(kick))
        .routes(routes!(revoke))
        .routes(routes!(nodes))
}

/// A live session as the API shows it.
#[derive(Serialize, ToSchema)]
#[schema(as = Session)]
struct SessionView {
    session_id: String,
    container_id: String,
    /// The user the session's token was minted for.
    user: String,
    /// `view` or `control`, as the relay reported it.
    scope: String,
    /// The relay node that holds it.
    node: String,
    /// `websocket` or `socketio`, as the relay reported it.
    transport: String,
    /// RFC 3339, UTC, milliseconds.
    #[schema(format = DateTime)]
    started_at: Option<String>,
    /// The browser's address as its relay saw it; `null` from a relay that doesn't
    /// record it.
    client_addr: Option<String>,
}

impl From<Session> for SessionView {
    fn from(s: Session) -> Self {
        SessionView {
            started_at: s.started_at.map(rfc3339_ms),
            session_id: s.id,
            container_id: s.cid,
            user: s.sub,
            scope: s.scope,
            node: s.node,
            transport: s.transport,
            client_addr: Some(s.client_addr).filter(|a| !a.is_empty()),
        }
    }
}

/// A relay node as the API shows it.
#[derive(Serialize, ToSchema)]
#[schema(as = Node)]
struct NodeView {
    node_id: String,
    /// Where the node's public listener is.
    addr: String,
    /// Its open sessions.
    sessions: u64,
    /// RFC 3339, UTC, milliseconds.
    #[schema(format = DateTime)]
    started_at: Option<String>,
    /// The relay's version.
    version: String,
}

impl From<Node> for NodeView {
    fn from(n: Node) -> Self {
        NodeView {
            started_at: n.started_at.map(rfc3339_ms),
            node_id: n.id,
            addr: n.addr,
            sessions: n.sessions,
            version: n.version,
        }
    }
}

/// A container's live sessions.
#[derive(Serialize, ToSchema)]
struct SessionList {
    sessions: Vec<SessionView>,
}

/// The live sessions of a container, from the relays' registry; owner or admin.
#[utoipa::path(
    get,
    path = "/v1/containers/{id}/sessions",
    operation_id = "listContainerSessions",
    tag = "sessions",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The container's id")),
    responses(
        (status = 200, description = "The sessions", body = SessionList),
        BadPath, BadBearer, NotOwner, NoContainer, RedisFailed,
    ),
)]
async fn list(
    State(s): St,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<SessionList>, ApiError> {
    let sessions = s
        .app
        .container_sessions(&caller, &id)
        .await?
        .into_iter()
        .map(Into::into)
        .collect();
    Ok(Json(SessionList { sessions }))
}

/// The answer to a kick.
#[derive(Serialize, ToSchema)]
struct Kicked {
    session_id: String,
    /// Always `true`.
    kicked: bool,
}

/// Asks whichever relay node holds the session to end it; the container's owner or
/// an admin.
#[utoipa::path(
    delete,
    path = "/v1/sessions/{sid}",
    operation_id = "kickSession",
    tag = "sessions",
    security(("bearer" = [])),
    params(("sid" = String, Path, description = "The session's id")),
    responses(
        (status = 202, description = "The kick is published", body = Kicked),
        (status = 403, description = "Neither the container's owner nor an admin", body = ErrorBody),
        (status = 404, description = "No such live session, or another tenant's", body = ErrorBody),
        BadPath, BadBearer, RedisFailed,
    ),
)]
async fn kick(State(s): St, caller: Caller, Path(sid): Path<String>) -> Result<Response, ApiError> {
    s.app.kick_session(&caller, &sid).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Kicked {
            session_id: sid,
            kicked: true,
        }),
    )
        .into_response())
}

/// The answer to a revocation.
#[derive(Serialize, ToSchema)]
struct Revoked {
    jti: String,
    /// Always `true`.
    revoked: bool,
    /// The token's expiry (RFC 3339, UTC, milliseconds): the revocation is kept until then.
    #[schema(format = DateTime)]
    expires_at: String,
}

/// Revokes a token control issued: the relays refuse it and end its sessions. The
/// token's user or an admin; idempotent.
#[utoipa::path(
    post,
    path = "/v1/tokens/{jti}/revoke",
    operation_id = "revokeToken",
    tag = "sessions",
    security(("bearer" = [])),
    params(("jti" = String, Path, description = "The token's `jti`")),
    responses(
        (status = 200, description = "Revoked", body = Revoked),
        (status = 403, description = "Neither the token's user nor an admin", body = ErrorBody),
        (status = 404, description = "No token control issued with this id, or another tenant's", body = ErrorBody),
        BadPath, BadBearer, RedisFailed,
    ),
)]
async fn revoke(
    State(s): St,
    caller: Caller,
    Path(jti): Path<String>,
) -> Result<Json<Revoked>, ApiError> {
    let t = s.app.revoke_token(&caller, &jti).await?;
    Ok(Json(Revoked {
        expires_at: rfc3339_ms(t.exp.saturating_mul(1000)),
        jti: t.jti,
        revoked: true,
    }))
}

/// The relay nodes with a live heartbeat.
#[derive(Serialize, ToSchema)]
struct NodeList {
    nodes: Vec<NodeView>,
}

/// Every relay node with a live heartbeat; admins only (nodes serve all tenants).
#[utoipa::path(
    get,
    path = "/v1/nodes",
    operation_id = "listNodes",
    tag = "sessions",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The nodes", body = NodeList),
        (status = 403, description = "Not an admin", body = ErrorBody),
        BadBearer, RedisFailed,
    ),
)]
async fn nodes(State(s): St, caller: Caller) -> Result<Json<NodeList>, ApiError> {
    let nodes = s
        .app
        .nodes(&caller)
        .await?
        .into_iter()
        .map(Into::into)
        .collect();
    Ok(Json(NodeList { nodes }))
}
