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
use crate::session::gate::InputGate;
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
    /// Whether its input reaches the VNC server now (the node keeps it following the
    /// driver lease once the session registers).
    pub gate: Arc<InputGate>,
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
    name: Option<&str>,
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
    let share = claims.share.as_deref();
    let lookup = node.store().lookup(&claims.cid, &claims.jti, share).await?;
    if lookup.revoked {
        node.live().revoked.insert(&claims.jti, Some(claims.exp));
        return Err(Reject::Revoked);
    }
    let share_limit = match (share, &lookup.share) {
        (None, _) => 0,
        (Some(_), Some(s)) if s.cid == claims.cid => s.max_sessions,
        (Some(_), _) => return Err(Reject::ShareGone),
    };
    let target = lookup.container.ok_or(Reject::UnknownContainer)?;
    if target.tenant != claims.tenant {
        return Err(Reject::WrongContainer);
    }
    if target.state != ContainerState::Running {
        return Err(Reject::NotRunning(target.state.as_str()));
    }
    let upstream = upstream::connect(&target, config.limits.connect_timeout).await?;
    let sid = uuid::Uuid::new_v4().to_string();
    // A share session's user is a guest of its own, never the name the page gives:
    // a guest can't pass for a user (limits, kicks, privileges).
    let (sub, name) = match share {
        Some(_) => {
            let guest = &sid[..8];
            let name = name.and_then(display_name);
            (
                format!("guest:{guest}"),
                name.unwrap_or_else(|| format!("Guest {}", &guest[..4])),
            )
        }
        None => (claims.sub.clone(), claims.sub.clone()),
    };
    let privileged = claims.scope == Scope::Control
        && share.is_none()
        && (claims.admin || target.owner == claims.sub);
    let record = Arc::new(SessionRecord {
        sid,
        cid: claims.cid.clone(),
        sub,
        tenant: claims.tenant.clone(),
        scope: claims.scope,
        jti: claims.jti.clone(),
        exp: claims.exp,
        started_at: vnc_shared::schema::now_ms(),
        transport,
        // A share token opens up to its share's `max_sessions` sessions.
        single_use: config.registry.single_use_tokens && share.is_none(),
        client_addr,
        name,
        share: claims.share.clone(),
        privileged,
    });
    let admission = node
        .store()
        .admit_session(
            &record,
            &config.node.id,
            config.registry.session_limits,
            share_limit,
            config.registry.session_ttl,
        )
        .await?;
    match admission {
        Admission::Admitted => {}
        Admission::TokenInUse => return Err(Reject::TokenInUse),
        Admission::ContainerFull => return Err(Reject::TooManySessions("container")),
        Admission::UserFull => return Err(Reject::TooManySessions("user")),
        Admission::ShareFull => return Err(Reject::TooManySessions("share link")),
    }
    let policy = RfbPolicy {
        password: target.password,
        view_only: claims.scope == Scope::View,
        clipboard_in: claims.clipboard.to_desktop(),
        clipboard_out: claims.clipboard.from_desktop(),
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
        gate: Arc::default(),
    })
}

/// Longest display name, in characters.
pub const MAX_NAME_CHARS: usize = 48;

/// The name a share session's page gives, cleaned for the presence list: control
/// characters removed, trimmed, at most [`MAX_NAME_CHARS`]; `None` when nothing is left.
fn display_name(given: &str) -> Option<String> {
    let name: String = given
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_NAME_CHARS)
        .collect();
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_are_cleaned_and_bounded() {
        assert_eq!(display_name("  Ann \n").as_deref(), Some("Ann"));
        assert_eq!(display_name("a\u{7}b\u{1b}[31m").as_deref(), Some("ab[31m"));
        assert_eq!(display_name(" \t "), None);
        assert_eq!(
            display_name(&"é".repeat(100)).unwrap().chars().count(),
            MAX_NAME_CHARS
        );
    }
}
