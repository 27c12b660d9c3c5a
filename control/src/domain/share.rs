//! Share links and the driver lease as control sees them: what a share request may
//! ask for, who may create, list and revoke a share, what a presence list shows, and
//! which session may be given control. Without I/O.

use std::time::Duration;

use vnc_shared::schema::Viewer;
use vnc_shared::token::{ClipboardPolicy, FilePolicy, Scope};

use super::{Caller, Session};

/// Live sessions a share allows when the request names none.
pub const DEFAULT_SHARE_SESSIONS: u32 = 10;
/// Most live sessions one share may allow (`max_sessions`): the relays count a share's
/// sessions in one set, and a desktop with more watchers than this is a broadcast.
pub const MAX_SHARE_SESSIONS: u32 = 100;
/// Longest share name, in characters: it is a label in the owner's listing.
pub const MAX_SHARE_NAME: usize = 64;
/// Live shares one container may have at once: each is a hash and a member of the
/// container's set that every listing reads.
pub const MAX_SHARES_PER_CONTAINER: usize = 32;

/// What `POST /v1/containers/{id}/shares` asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShareRequest {
    pub scope: Scope,
    pub ttl: Duration,
    /// `None`: [`DEFAULT_SHARE_SESSIONS`].
    pub max_sessions: Option<u32>,
    /// `None`: no name (an empty string).
    pub name: Option<String>,
    /// Less than the scope's file policy, if the share asks for less (never more).
    pub files: Option<FilePolicy>,
    /// Less than the scope's clipboard policy, likewise.
    pub clipboard: Option<ClipboardPolicy>,
}

impl ShareRequest {
    /// Every problem with the request, each named; empty when it is acceptable.
    /// `max_ttl` is the operator's `share_max_ttl`.
    pub fn problems(&self, max_ttl: Duration) -> Vec<String> {
        let mut out = Vec::new();
        if self.ttl.is_zero() || self.ttl > max_ttl {
            out.push(format!(
                "ttl_seconds must be between 1 and {}",
                max_ttl.as_secs()
            ));
        }
        if let Some(n) = self.max_sessions
            && !(1..=MAX_SHARE_SESSIONS).contains(&n)
        {
            out.push(format!(
                "max_sessions must be between 1 and {MAX_SHARE_SESSIONS}, got {n}"
            ));
        }
        if let Some(name) = &self.name {
            if name.chars().count() > MAX_SHARE_NAME {
                out.push(format!("name must be at most {MAX_SHARE_NAME} characters"));
            }
            if name.chars().any(char::is_control) {
                out.push("name must not contain control characters".into());
            }
        }
        out
    }

    pub fn max_sessions(&self) -> u32 {
        self.max_sessions.unwrap_or(DEFAULT_SHARE_SESSIONS)
    }

    /// The policies of the share's token, from `scoped` (what a token of its scope
    /// for the container carries): narrowed by what the share asks for, never
    /// widened.
    pub fn policies(&self, scoped: (FilePolicy, ClipboardPolicy)) -> (FilePolicy, ClipboardPolicy) {
        (
            self.files.map_or(scoped.0, |f| f.and(scoped.0)),
            self.clipboard.map_or(scoped.1, |c| c.and(scoped.1)),
        )
    }
}

/// A share link of a container, as control records it (`share:{id}`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Share {
    /// A UUID; the share token's `share` claim.
    pub id: String,
    pub cid: String,
    pub tenant: String,
    pub scope: Scope,
    /// A label for the owner's listing; may be empty.
    pub name: String,
    pub max_sessions: u32,
    /// The user who created it.
    pub created_by: String,
    /// Unix milliseconds.
    pub created_at: u64,
    /// Unix seconds: the share token's `exp`; the hash expires then.
    pub expires_at: u64,
}

impl Share {
    /// The `sub` of a share's token: never a user id, so a share can't pass for one.
    pub fn token_subject(&self) -> String {
        format!("share:{}", self.id)
    }

    /// Tenants never see each other's shares (the API answers 404, not 403).
    pub fn visible_to(&self, caller: &Caller) -> bool {
        self.tenant == caller.tenant
    }

    /// Who may revoke a share: its creator, the container's owner
    /// (`container_owner`, if the record is still there) or an admin of its tenant.
    pub fn revocable_by(&self, caller: &Caller, container_owner: Option<&str>) -> bool {
        self.visible_to(caller)
            && (caller.admin
                || self.created_by == caller.sub
                || container_owner == Some(caller.sub.as_str()))
    }
}

impl Session {
    /// The session's line in a presence list; `driver` is the lease's holder.
    pub fn viewer(&self, driver: Option<&str>) -> Viewer {
        Viewer {
            session_id: self.id.clone(),
            name: if self.name.is_empty() {
                self.sub.clone()
            } else {
                self.name.clone()
            },
            // A scope a relay wrote that isn't `control` sends no input: shown as view.
            scope: self.scope.parse().unwrap_or(Scope::View),
            driver: driver == Some(self.id.as_str()),
            node: self.node.clone(),
            guest: !self.share.is_empty(),
        }
    }

    /// Whether the driver lease may be given to this session: only a `control`
    /// session's input is ever relayed.
    pub fn may_drive(&self) -> bool {
        self.scope == Scope::Control.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> ShareRequest {
        ShareRequest {
            scope: Scope::View,
            ttl: Duration::from_secs(3600),
            max_sessions: None,
            name: Some("Demo".into()),
            files: None,
            clipboard: None,
        }
    }

    #[test]
    fn a_share_may_ask_for_less_never_more() {
        let scoped = (FilePolicy::Download, ClipboardPolicy::FromDesktop);
        assert_eq!(request().policies(scoped), scoped);
        let more = ShareRequest {
            files: Some(FilePolicy::Both),
            clipboard: Some(ClipboardPolicy::Both),
            ..request()
        };
        assert_eq!(more.policies(scoped), scoped);
        let less = ShareRequest {
            files: Some(FilePolicy::None),
            clipboard: Some(ClipboardPolicy::None),
            ..request()
        };
        assert_eq!(
            less.policies(scoped),
            (FilePolicy::None, ClipboardPolicy::None)
        );
    }

    #[test]
    fn share_requests_name_every_problem() {
        let max = Duration::from_secs(86_400);
        assert!(request().problems(max).is_empty());
        assert_eq!(request().max_sessions(), DEFAULT_SHARE_SESSIONS);
        let edge = ShareRequest {
            ttl: max,
            max_sessions: Some(MAX_SHARE_SESSIONS),
            name: Some("é".repeat(MAX_SHARE_NAME)),
            ..request()
        };
        assert!(edge.problems(max).is_empty(), "{:?}", edge.problems(max));
        let bad = ShareRequest {
            ttl: max + Duration::from_secs(1),
            max_sessions: Some(0),
            name: Some(format!("{}\u{7}", "x".repeat(MAX_SHARE_NAME))),
            ..request()
        };
        let p = bad.problems(max);
        assert_eq!(p.len(), 4, "{p:?}");
        assert!(p[0].contains("ttl_seconds") && p[1].contains("max_sessions"));
        assert!(p[2].contains("64 characters") && p[3].contains("control characters"));
        let zero = ShareRequest {
            ttl: Duration::ZERO,
            max_sessions: Some(MAX_SHARE_SESSIONS + 1),
            name: None,
            ..request()
        };
        assert_eq!(zero.problems(max).len(), 2);
    }

    #[test]
    fn shares_are_revoked_by_their_creator_the_owner_or_tenant_admins() {
        let share = Share {
            id: "h1".into(),
            cid: "c1".into(),
            tenant: "t1".into(),
            scope: Scope::View,
            name: String::new(),
            max_sessions: 10,
            created_by: "root".into(),
            created_at: 0,
            expires_at: 10,
        };
        assert_eq!(share.token_subject(), "share:h1");
        let owner = Some("alice");
        assert!(share.revocable_by(&Caller::of("alice", "t1", false), owner));
        assert!(share.revocable_by(&Caller::of("root", "t1", false), owner));
        assert!(share.revocable_by(&Caller::of("ops", "t1", true), None));
        assert!(!share.revocable_by(&Caller::of("bob", "t1", false), owner));
        assert!(!share.revocable_by(&Caller::of("alice", "t1", false), None));
        let eve = Caller::of("alice", "t2", true);
        assert!(!share.visible_to(&eve) && !share.revocable_by(&eve, owner));
    }

    #[test]
    fn viewers_are_named_and_flagged() {
        let mut s = Session {
            id: "s1".into(),
            cid: "c1".into(),
            sub: "alice".into(),
            tenant: "t1".into(),
            scope: "control".into(),
            node: "n1".into(),
            jti: "j1".into(),
            started_at: Some(1),
            transport: "socketio".into(),
            client_addr: String::new(),
            name: String::new(),
            share: String::new(),
        };
        let v = s.viewer(Some("s1"));
        assert_eq!(
            (v.name.as_str(), v.scope, v.driver, v.guest),
            ("alice", Scope::Control, true, false)
        );
        assert!(s.may_drive());
        s.sub = "guest:0a1b2c3d".into();
        s.name = "Ann".into();
        s.share = "h1".into();
        s.scope = "view".into();
        let v = s.viewer(Some("s2"));
        assert_eq!(
            (v.name.as_str(), v.scope, v.driver, v.guest),
            ("Ann", Scope::View, false, true)
        );
        assert!(!s.may_drive());
    }
}
