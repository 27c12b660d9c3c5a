//! The routes about what the relays run: a container's live sessions, kicking a
//! session, revoking a token, and the relay nodes; and their JSON shapes.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use http::StatusCode;
use serde::Serialize;

use super::error::ApiError;
use super::{AppState, rfc3339_ms};
use crate::domain::{Caller, Node, Session};

type St = State<Arc<AppState>>;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/containers/{id}/sessions", get(list))
        .route("/v1/sessions/{sid}", delete(kick))
        .route("/v1/tokens/{jti}/revoke", post(revoke))
        .route("/v1/nodes", get(nodes))
}

/// A live session as the API shows it.
#[derive(Serialize)]
struct SessionView {
    session_id: String,
    container_id: String,
    /// The user the session's token was minted for.
    user: String,
    scope: String,
    node: String,
    transport: String,
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
#[derive(Serialize)]
struct NodeView {
    node_id: String,
    addr: String,
    sessions: u64,
    started_at: Option<String>,
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

async fn list(
    State(s): St,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let sessions: Vec<SessionView> = s
        .app
        .container_sessions(&caller, &id)
        .await?
        .into_iter()
        .map(Into::into)
        .collect();
    Ok(Json(serde_json::json!({ "sessions": sessions })))
}

async fn kick(State(s): St, caller: Caller, Path(sid): Path<String>) -> Result<Response, ApiError> {
    s.app.kick_session(&caller, &sid).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "session_id": sid, "kicked": true })),
    )
        .into_response())
}

async fn revoke(
    State(s): St,
    caller: Caller,
    Path(jti): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let t = s.app.revoke_token(&caller, &jti).await?;
    Ok(Json(serde_json::json!({
        "jti": t.jti,
        "revoked": true,
        "expires_at": rfc3339_ms(t.exp.saturating_mul(1000)),
    })))
}

async fn nodes(State(s): St, caller: Caller) -> Result<Json<serde_json::Value>, ApiError> {
    let nodes: Vec<NodeView> = s
        .app
        .nodes(&caller)
        .await?
        .into_iter()
        .map(Into::into)
        .collect();
    Ok(Json(serde_json::json!({ "nodes": nodes })))
}
