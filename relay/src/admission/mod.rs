//! Admission: the checks every session passes before it starts, for both transports
//! (the raw WebSocket from `http/`, socket.io from its connect middleware): the token
//! and where it came from (`auth.rs`), revocation, a session permit, the container
//! record, the upstream connect (`upstream.rs`) and the session's place in the
//! registry. A refusal is a [`Reject`] (`reject.rs`), which says the HTTP status and
//! the reason. `pending.rs` bounds the connections still in their handshake.

pub mod auth;
pub mod client;
pub mod pending;
pub mod reject;
pub mod upstream;

use std::net::IpAddr;
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use vnc_shared::schema::ContainerState;
use vnc_shared::token::{Scope, VncClaims};

use crate::node::Node;
use crate::node::store::Admission;
use crate::session::record::SessionRecord;
use crate::session::rfb::RfbPolicy;
use reject::Reject;

/// What a session starts from: the connected VNC server and the token's claims.
pub struct Admitted {
    pub upstream: TcpStream,
    pub claims: VncClaims,
    /// How the session speaks RFB: the password to inject, view-only.
    pub policy: RfbPolicy,
    /// The session as the registry has it (written at admission).
    pub record: Arc<SessionRecord>,
    /// The session is to be recorded (the relay records, and the container or the
    /// token's scope asks for it).
    pub recorded: bool,
    /// The session's place under `max_sessions`, held until it ends.
    pub permit: OwnedSemaphorePermit,
}

/// The checks both transports share: the token (for `container_id`, if the client
/// named one), revocation (known here, then in Redis), a session permit, the
/// container record, then the upstream connect.
pub async fn admit(
    node: &Node,
    token: &str,
    container_id: Option<&str>,
    transport: &'static str,
    client_addr: IpAddr,
) -> Result<Admitted, Reject> {
    let config = node.config();
    let claims = node.keys().verify(token)?;
    if container_id.is_some_and(|cid| cid != claims.cid) {
        return Err(Reject::WrongContainer);
    }
    if node.live().revoked.contains(&claims.jti) {
        return Err(Reject::Revoked);
    }
    let permit = node.session_permit().ok_or(Reject::AtCapacity)?;
    let lookup = node.store().lookup(&claims.cid, &claims.jti).await?;
    if lookup.revoked {
        node.live().revoked.insert(&claims.jti, Some(claims.exp));
        return Err(Reject::Revoked);
    }
    let target = lookup.container.ok_or(Reject::UnknownContainer)?;
    if target.tenant != claims.tenant {
        return Err(Reject::WrongContainer);
    }
    if target.state != ContainerState::Running {
        return Err(Reject::NotRunning(target.state.as_str()));
    }
    let upstream = upstream::connect(&target, config.limits.connect_timeout).await?;
    let record = Arc::new(SessionRecord {
        sid: uuid::Uuid::new_v4().to_string(),
        cid: claims.cid.clone(),
        sub: claims.sub.clone(),
        tenant: claims.tenant.clone(),
        scope: claims.scope,
        jti: claims.jti.clone(),
        exp: claims.exp,
        started_at: vnc_shared::schema::now_ms(),
        transport,
        single_use: config.registry.single_use_tokens,
        client_addr,
    });
    let admission = node
        .store()
        .admit_session(
            &record,
            &config.node.id,
            config.registry.session_limits,
            config.registry.session_ttl,
        )
        .await?;
    match admission {
        Admission::Admitted => {}
        Admission::TokenInUse => return Err(Reject::TokenInUse),
        Admission::ContainerFull => return Err(Reject::TooManySessions("container")),
        Admission::UserFull => return Err(Reject::TooManySessions("user")),
    }
    let policy = RfbPolicy {
        password: target.password,
        view_only: claims.scope == Scope::View,
    };
    let recorded = node
        .recordings()
        .is_some_and(|r| r.wants(target.record, claims.scope));
    Ok(Admitted {
        upstream,
        claims,
        policy,
        record,
        recorded,
        permit,
    })
}
