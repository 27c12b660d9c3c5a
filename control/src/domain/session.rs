//! Sessions the relays hold, the relay nodes themselves, the VNC tokens control has
//! issued, and the kicks control sends the relays: what they are and who may see or
//! end them. Without I/O.

use vnc_shared::token::{MAX_LEEWAY, Scope, VncClaims};

use super::Caller;

/// A live relay session, as the node that holds it registers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub id: String,
    pub cid: String,
    /// The user the token was minted for.
    pub sub: String,
    pub tenant: String,
    pub scope: String,
    /// The relay node that holds the session.
    pub node: String,
    pub jti: String,
    /// Unix milliseconds; `None` if the node wrote something unreadable.
    pub started_at: Option<u64>,
    /// `websocket` or `socketio`.
    pub transport: String,
    /// The browser's address as the relay saw it (through a trusted load balancer:
    /// the address it reported); empty from a relay that doesn't record it.
    pub client_addr: String,
    /// The label of the presence list (a share session's given name); empty from a
    /// relay that doesn't record it (the `sub` stands in).
    pub name: String,
    /// The share link the session was opened with; empty for other sessions.
    pub share: String,
}

impl Session {
    /// Tenants never see each other's sessions (the API answers 404, not 403).
    pub fn visible_to(&self, caller: &Caller) -> bool {
        self.tenant == caller.tenant
    }

    /// Who may end a session: an admin of its tenant, or the owner of its container
    /// (`container_owner`, if the container record is still there).
    pub fn kickable_by(&self, caller: &Caller, container_owner: Option<&str>) -> bool {
        self.visible_to(caller) && (caller.admin || container_owner == Some(caller.sub.as_str()))
    }
}

/// A relay node, from its heartbeat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub id: String,
    /// Where the node serves browsers.
    pub addr: String,
    /// Live sessions on the node at its last heartbeat.
    pub sessions: u64,
    /// Unix milliseconds; `None` if the node wrote something unreadable.
    pub started_at: Option<u64>,
    pub version: String,
}

/// Relay nodes are shared by every tenant: only admins see them.
pub fn may_list_nodes(caller: &Caller) -> bool {
    caller.admin
}

/// A VNC token control minted through the API, kept so its revocation can be
/// authorized later.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedToken {
    pub jti: String,
    pub cid: String,
    /// The user it was minted for (`sub`).
    pub owner: String,
    pub tenant: String,
    pub scope: Scope,
    /// Unix seconds.
    pub exp: u64,
}

impl IssuedToken {
    pub fn from_claims(c: &VncClaims) -> IssuedToken {
        IssuedToken {
            jti: c.jti.clone(),
            cid: c.cid.clone(),
            owner: c.sub.clone(),
            tenant: c.tenant.clone(),
            scope: c.scope,
            exp: c.exp,
        }
    }

    /// Tenants never see each other's tokens (404, not 403).
    pub fn visible_to(&self, caller: &Caller) -> bool {
        self.tenant == caller.tenant
    }

    /// The user it was minted for and the tenant's admins may revoke it.
    pub fn revocable_by(&self, caller: &Caller) -> bool {
        self.visible_to(caller) && (caller.admin || self.owner == caller.sub)
    }

    /// Unix seconds until which the relays still accept the token: `exp` plus the
    /// clock-skew leeway they allow. Its record and its revocation last this long, so a
    /// revoked token can't be used in the leeway after `exp` either.
    pub fn accepted_until(&self) -> u64 {
        self.exp.saturating_add(MAX_LEEWAY.as_secs())
    }
}

pub use vnc_shared::schema::Kick;

/// The metrics label of a kick: `kick` (one session ended), `revoke` (a token) or
/// `share` (the sessions of a revoked share link).
pub fn kick_kind(kick: &Kick) -> &'static str {
    if kick.is_revocation() {
        "revoke"
    } else if kick.share.is_some() {
        "share"
    } else {
        "kick"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> Session {
        Session {
            id: "s1".into(),
            cid: "c1".into(),
            sub: "bob".into(),
            tenant: "t1".into(),
            scope: "view".into(),
            node: "n1".into(),
            jti: "j1".into(),
            started_at: Some(1),
            transport: "websocket".into(),
            client_addr: "192.0.2.7".into(),
            name: String::new(),
            share: String::new(),
        }
    }

    #[test]
    fn the_container_owner_and_tenant_admins_end_sessions() {
        let s = session();
        let owner = Some("alice");
        assert!(s.kickable_by(&Caller::of("alice", "t1", false), owner));
        assert!(s.kickable_by(&Caller::of("root", "t1", true), owner));
        assert!(s.kickable_by(&Caller::of("root", "t1", true), None));
        // The viewer himself is not the container's owner.
        assert!(!s.kickable_by(&Caller::of("bob", "t1", false), owner));
        assert!(!s.kickable_by(&Caller::of("alice", "t1", false), None));
        let eve = Caller::of("eve", "t2", true);
        assert!(!s.visible_to(&eve) && !s.kickable_by(&eve, owner));
    }

    #[test]
    fn tokens_are_revoked_by_their_user_or_tenant_admins_and_outlive_the_leeway() {
        let t = IssuedToken {
            jti: "j1".into(),
            cid: "c1".into(),
            owner: "alice".into(),
            tenant: "t1".into(),
            scope: Scope::Control,
            exp: 1_000,
        };
        assert!(t.revocable_by(&Caller::of("alice", "t1", false)));
        assert!(t.revocable_by(&Caller::of("root", "t1", true)));
        assert!(!t.revocable_by(&Caller::of("bob", "t1", false)));
        assert!(!t.revocable_by(&Caller::of("alice", "t2", true)));
        assert!(!t.visible_to(&Caller::of("alice", "t2", true)));
        assert_eq!(t.accepted_until(), 1_000 + MAX_LEEWAY.as_secs());
    }

    #[test]
    fn kicks_have_the_documented_shape() {
        assert_eq!(
            Kick::session("s1").to_message(),
            r#"{"type":"kick","sid":"s1","reason":"kicked"}"#
        );
        assert_eq!(
            Kick::revoked("j1").to_message(),
            r#"{"type":"kick","jti":"j1","reason":"revoked"}"#
        );
        assert_eq!(
            (
                kick_kind(&Kick::session("s")),
                kick_kind(&Kick::revoked("j")),
                kick_kind(&Kick::share_revoked("h"))
            ),
            ("kick", "revoke", "share")
        );
        assert_eq!(
            Kick::share_revoked("h1").to_message(),
            r#"{"type":"kick","share":"h1","reason":"share revoked"}"#
        );
        assert!(may_list_nodes(&Caller::of("root", "t1", true)));
        assert!(!may_list_nodes(&Caller::of("alice", "t1", false)));
    }
}
