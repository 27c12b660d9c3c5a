//! The Redis key schema of `docs/architecture.md` as typed helpers, so both sides build the
//! same keys from one place. The prefix is configurable (default `vnc:`).
//!
//! Redis Cluster: every script and transaction touches keys of one hash slot. Keys a
//! script combines carry the same hash tag (the part in braces): a container's lease and
//! room channel share `{cid}`, the job queue's keys share `{jobs}`. Counting sets
//! (sessions of a container, of a user, of a share; shares of a container) are sorted
//! sets scored by expiry, counted and pruned within their own key, so no script reads a
//! key of another slot; what spans slots (admission against several limits, a tenant's
//! quota) follows the protocols written down in the architecture.

use serde::{Deserialize, Serialize};

/// Default key prefix.
pub const DEFAULT_PREFIX: &str = "vnc:";

/// Builds every key and channel name under one prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Default for Keys {
    fn default() -> Self {
        Keys::new(DEFAULT_PREFIX)
    }
}

impl Keys {
    pub fn new(prefix: impl Into<String>) -> Keys {
        Keys {
            prefix: prefix.into(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Hash: the container record ([`ContainerField`]).
    pub fn container(&self, cid: &str) -> String {
        format!("{}container:{cid}", self.prefix)
    }

    /// Set: container ids of a tenant.
    pub fn tenant_containers(&self, tenant: &str) -> String {
        format!("{}containers:{tenant}", self.prefix)
    }

    /// String, PX: held while a create counts and writes a tenant's containers
    /// against its quota.
    pub fn tenant_lock(&self, tenant: &str) -> String {
        format!("{}containers_lock:{tenant}", self.prefix)
    }

    /// Hash with TTL: one live session.
    pub fn session(&self, sid: &str) -> String {
        format!("{}session:{sid}", self.prefix)
    }

    /// Sorted set: live session ids of a container, scored by expiry (Unix ms, the
    /// Redis server's clock).
    pub fn container_sessions(&self, cid: &str) -> String {
        format!("{}sessions:{{{cid}}}", self.prefix)
    }

    /// Hash with TTL: a relay node's heartbeat.
    pub fn node(&self, node_id: &str) -> String {
        format!("{}node:{node_id}", self.prefix)
    }

    /// String with TTL until the token's exp: a revoked token.
    pub fn revoked(&self, jti: &str) -> String {
        format!("{}revoked:{jti}", self.prefix)
    }

    /// Hash with TTL until the token's exp (plus the relays' leeway): a token control
    /// minted through its API (`cid`, `owner`, `tenant`, `scope`, `exp`), so it can
    /// authorize its revocation.
    pub fn token(&self, jti: &str) -> String {
        format!("{}token:{jti}", self.prefix)
    }

    /// Sorted set: live session ids of one user (for the per-user session limit),
    /// scored by expiry.
    pub fn user_sessions(&self, tenant: &str, sub: &str) -> String {
        format!("{}user_sessions:{{{tenant}:{sub}}}", self.prefix)
    }

    /// String with TTL: the live session holding a single-use token (one live session
    /// per `jti` across nodes); the owning node refreshes it and deletes it at the end.
    pub fn token_session(&self, jti: &str) -> String {
        format!("{}jti:{jti}", self.prefix)
    }

    /// String with TTL: the session that holds input on a container (the driver
    /// lease; see "Sharing and control" in the architecture).
    pub fn driver(&self, cid: &str) -> String {
        format!("{}driver:{{{cid}}}", self.prefix)
    }

    /// Hash expiring with the share: a share link ([`share_field`]).
    pub fn share(&self, share_id: &str) -> String {
        format!("{}share:{share_id}", self.prefix)
    }

    /// Sorted set: share ids of a container, scored by the share's expiry (Unix
    /// seconds).
    pub fn container_shares(&self, cid: &str) -> String {
        format!("{}shares:{{{cid}}}", self.prefix)
    }

    /// Sorted set: live session ids opened with a share link, scored by expiry.
    pub fn share_sessions(&self, share_id: &str) -> String {
        format!("{}share_sessions:{{{share_id}}}", self.prefix)
    }

    /// What every key of the job queue starts with (one hash slot: its scripts touch
    /// several).
    pub fn queue(&self) -> String {
        format!("{}{{jobs}}", self.prefix)
    }

    /// Stream: job ids to run (group `workers`).
    pub fn jobs(&self) -> String {
        self.queue()
    }

    /// Hash: one job.
    pub fn job(&self, id: &str) -> String {
        format!("{}:job:{id}", self.queue())
    }

    /// Pub/sub channel of domain events.
    pub fn events_channel(&self) -> String {
        format!("{}events", self.prefix)
    }

    /// Sharded pub/sub channel of one container's room (`SPUBLISH`, in the slot of
    /// the container's lease).
    pub fn room_channel(&self, cid: &str) -> String {
        format!("{}room:{{{cid}}}", self.prefix)
    }

    /// The container whose room channel `channel` is.
    pub fn room_of<'a>(&self, channel: &'a str) -> Option<&'a str> {
        channel
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix("room:{")?
            .strip_suffix('}')
    }

    /// Pub/sub channel of kicks.
    pub fn control_channel(&self) -> String {
        format!("{}control", self.prefix)
    }
}

/// Fields of the `container:{cid}` hash.
pub mod container_field {
    pub const OWNER: &str = "owner";
    pub const TENANT: &str = "tenant";
    pub const STATE: &str = "state";
    pub const HOST: &str = "host";
    pub const PORT: &str = "port";
    pub const IMAGE: &str = "image";
    pub const NODE: &str = "node";
    pub const CREATED_AT: &str = "created_at";
    /// The container's VNC password; never returned by the API.
    pub const VNC_PASSWORD: &str = "vnc_password";
    /// `"false"` turns credential injection off for the container: the browser then
    /// authenticates itself (pass-through VNC Authentication). On by default.
    pub const INJECT_CREDENTIALS: &str = "inject_credentials";
    /// `"true"`: relays that have a recording directory record every session of the
    /// container (see the relay's `record_dir`). Absent or anything else: only the
    /// relays' `record_scopes` decide.
    pub const RECORD: &str = "record";
}

/// Fields of the `session:{sid}` hash (written by the relay node that holds it).
pub mod session_field {
    pub const CID: &str = "cid";
    pub const SUB: &str = "sub";
    pub const TENANT: &str = "tenant";
    pub const SCOPE: &str = "scope";
    pub const NODE: &str = "node";
    pub const JTI: &str = "jti";
    /// Unix milliseconds.
    pub const STARTED_AT: &str = "started_at";
    /// `websocket` or `socketio`.
    pub const TRANSPORT: &str = "transport";
    /// The browser's address: the TCP peer, or what a trusted load balancer says
    /// (PROXY protocol, `X-Forwarded-For`, `Forwarded`).
    pub const CLIENT_ADDR: &str = "client_addr";
    /// The label shown in the presence list (a share session's given name, else the
    /// user id).
    pub const NAME: &str = "name";
    /// The share link a session was opened with (share sessions only).
    pub const SHARE: &str = "share";
}

/// Fields of the `share:{share_id}` hash (written by control).
pub mod share_field {
    pub const CID: &str = "cid";
    pub const TENANT: &str = "tenant";
    /// `control` or `view`.
    pub const SCOPE: &str = "scope";
    pub const NAME: &str = "name";
    /// Live sessions the share allows at once, across nodes.
    pub const MAX_SESSIONS: &str = "max_sessions";
    pub const CREATED_BY: &str = "created_by";
    /// Unix milliseconds.
    pub const CREATED_AT: &str = "created_at";
    /// Unix seconds (the share token's `exp`).
    pub const EXPIRES_AT: &str = "expires_at";
}

/// A message on a room channel (`room:{cid}`) that relays act on besides handing it
/// to the room's viewers: the driver lease moved, the room's presence changed, a
/// viewer asks for control. Control's lifecycle events (`container.*`) are other
/// types on the same channel.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type")]
pub enum RoomMessage {
    /// The lease `driver:{cid}` now names `driver` (or no one).
    #[serde(rename = "driver")]
    Driver {
        cid: String,
        driver: Option<String>,
        /// The session that moved it, `"control"`, or none when the driver's session
        /// ended.
        by: Option<String>,
        /// Unix milliseconds.
        at: u64,
        /// Orders the changes (Redis's clock in microseconds when the relay made
        /// it): a node ignores a change older than the last it applied. 0 (control's
        /// changes): always applied.
        #[serde(default)]
        seq: u64,
    },
    /// The room's live sessions, as read from the registry after a change.
    #[serde(rename = "presence")]
    Presence {
        cid: String,
        viewers: Vec<Viewer>,
        /// Sessions left off the list (it holds at most [`MAX_PRESENCE`]).
        more: usize,
    },
    /// A viewer asks the driver (or the owner) for control.
    #[serde(rename = "control.request")]
    ControlRequest {
        cid: String,
        session_id: String,
        name: String,
    },
}

/// Most viewers a presence list names.
pub const MAX_PRESENCE: usize = 256;

/// One live session in a room's presence list.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Viewer {
    pub session_id: String,
    pub name: String,
    pub scope: crate::token::Scope,
    /// Holds the driver lease.
    pub driver: bool,
    /// The relay node holding the session.
    pub node: String,
    /// Opened with a share link.
    pub guest: bool,
}

/// Fields of the `node:{node_id}` hash (a relay node's heartbeat).
pub mod node_field {
    pub const ADDR: &str = "addr";
    /// Live sessions on the node.
    pub const SESSIONS: &str = "sessions";
    /// Unix milliseconds.
    pub const STARTED_AT: &str = "started_at";
    pub const VERSION: &str = "version";
}

/// A message on the `control` channel: `{"type":"kick", "sid"|"jti"|"cid"|"sub"|"share": …,
/// "reason": …}` (a revocation also carries the token's `"exp"`). Control publishes it; every relay node ends the local sessions that
/// match every selector given (at least one is), with close code 4003.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type")]
pub enum ControlMessage {
    #[serde(rename = "kick")]
    Kick(Kick),
}

/// The selectors and reason of a kick (see [`ControlMessage`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Kick {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// The sessions opened with a share link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share: Option<String>,
    /// The revoked token's `exp` (Unix seconds), on a revocation: relays remember the
    /// revocation until then (plus their leeway). Absent from older publishers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
    /// [`Kick::KICKED`], [`Kick::REVOKED`] (the browser is told "token revoked"), or
    /// free text.
    #[serde(default)]
    pub reason: String,
}

impl Kick {
    pub const KICKED: &str = "kicked";
    pub const REVOKED: &str = "revoked";
    /// The browser is told "share revoked".
    pub const SHARE_REVOKED: &str = "share revoked";

    /// Ends one session.
    pub fn session(sid: &str) -> Kick {
        Kick {
            sid: Some(sid.to_owned()),
            reason: Kick::KICKED.to_owned(),
            ..Kick::default()
        }
    }

    /// Ends every session opened with a revoked share link.
    pub fn share_revoked(share_id: &str) -> Kick {
        Kick {
            share: Some(share_id.to_owned()),
            reason: Kick::SHARE_REVOKED.to_owned(),
            ..Kick::default()
        }
    }

    /// Ends every session opened with a revoked token (control sets `exp` too).
    pub fn revoked(jti: &str) -> Kick {
        Kick {
            jti: Some(jti.to_owned()),
            reason: Kick::REVOKED.to_owned(),
            ..Kick::default()
        }
    }

    pub fn is_revocation(&self) -> bool {
        self.reason == Kick::REVOKED
    }

    /// Whether it selects anything (a kick naming nobody must end nothing).
    pub fn names_someone(&self) -> bool {
        self.sid.is_some()
            || self.jti.is_some()
            || self.cid.is_some()
            || self.sub.is_some()
            || self.share.is_some()
    }

    /// The control channel message.
    pub fn to_message(&self) -> String {
        serde_json::to_string(&ControlMessage::Kick(self.clone())).unwrap_or_default()
    }
}

/// Lifecycle state of a container record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum ContainerState {
    Creating,
    Running,
    Stopping,
    Stopped,
    Failed,
    /// Its Docker engine does not answer: neither removed nor recreated elsewhere;
    /// back to its real state when the engine answers again (control's reconciler).
    Unavailable,
}

impl ContainerState {
    pub fn as_str(self) -> &'static str {
        match self {
            ContainerState::Creating => "creating",
            ContainerState::Running => "running",
            ContainerState::Stopping => "stopping",
            ContainerState::Stopped => "stopped",
            ContainerState::Failed => "failed",
            ContainerState::Unavailable => "unavailable",
        }
    }
}

impl std::str::FromStr for ContainerState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "creating" => ContainerState::Creating,
            "running" => ContainerState::Running,
            "stopping" => ContainerState::Stopping,
            "stopped" => ContainerState::Stopped,
            "failed" => ContainerState::Failed,
            "unavailable" => ContainerState::Unavailable,
            other => return Err(format!("unknown container state {other:?}")),
        })
    }
}

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kicks_have_one_wire_form() {
        assert_eq!(
            Kick::session("s1").to_message(),
            r#"{"type":"kick","sid":"s1","reason":"kicked"}"#
        );
        let parse = |s: &str| serde_json::from_str::<ControlMessage>(s);
        let ControlMessage::Kick(parsed) =
            parse(r#"{"type":"kick","jti":"j","reason":"revoked"}"#).unwrap();
        assert_eq!(parsed, Kick::revoked("j"));
        assert!(parsed.is_revocation() && parsed.names_someone());
        let with_exp = Kick {
            exp: Some(1_700_000_000),
            ..Kick::revoked("j")
        };
        assert_eq!(
            with_exp.to_message(),
            r#"{"type":"kick","jti":"j","exp":1700000000,"reason":"revoked"}"#
        );
        assert!(parse(r#"{"type":"hello","sid":"s"}"#).is_err());
        let ControlMessage::Kick(nobody) = parse(r#"{"type":"kick"}"#).unwrap();
        assert!(!nobody.names_someone());
    }

    #[test]
    fn keys_follow_the_documented_schema() {
        let k = Keys::default();
        assert_eq!(k.container("c1"), "vnc:container:c1");
        assert_eq!(k.tenant_containers("t1"), "vnc:containers:t1");
        assert_eq!(k.session("s1"), "vnc:session:s1");
        assert_eq!(k.container_sessions("c1"), "vnc:sessions:{c1}");
        assert_eq!(k.user_sessions("t1", "u1"), "vnc:user_sessions:{t1:u1}");
        assert_eq!(k.node("n1"), "vnc:node:n1");
        assert_eq!(k.revoked("j1"), "vnc:revoked:j1");
        assert_eq!(k.jobs(), "vnc:{jobs}");
        assert_eq!(k.job("1"), "vnc:{jobs}:job:1");
        assert_eq!(k.events_channel(), "vnc:events");
        assert_eq!(k.room_channel("c1"), "vnc:room:{c1}");
        assert_eq!(k.room_of(&k.room_channel("c-1")), Some("c-1"));
        assert_eq!(k.room_of("vnc:room:c1"), None);
        assert_eq!(k.room_of("vnc:control"), None);
        assert_eq!(k.control_channel(), "vnc:control");
        assert_eq!(k.driver("c1"), "vnc:driver:{c1}");
        assert_eq!(k.share("h1"), "vnc:share:h1");
        assert_eq!(k.container_shares("c1"), "vnc:shares:{c1}");
        assert_eq!(k.share_sessions("h1"), "vnc:share_sessions:{h1}");
        assert_eq!(Keys::new("test:").container("c"), "test:container:c");
    }

    /// Redis Cluster's hash tag: the part between the first `{` and the next `}`, if
    /// not empty; else the whole key.
    fn hash_tag(key: &str) -> &str {
        key.find('{')
            .and_then(|open| {
                let rest = &key[open + 1..];
                rest.find('}')
                    .filter(|&close| close > 0)
                    .map(|close| &rest[..close])
            })
            .unwrap_or(key)
    }

    #[test]
    fn keys_a_script_combines_share_a_slot() {
        let k = Keys::default();
        assert_eq!(hash_tag(&k.driver("c1")), hash_tag(&k.room_channel("c1")));
        assert_ne!(hash_tag(&k.driver("c1")), hash_tag(&k.driver("c2")));
        assert_eq!(hash_tag(&k.jobs()), hash_tag(&k.job("j1")));
        assert_eq!(
            hash_tag(&k.jobs()),
            hash_tag(&format!("{}:delayed", k.queue()))
        );
        // Counting sets spread: one slot per container, user, share.
        assert_eq!(hash_tag(&k.container_sessions("c1")), "c1");
        assert_eq!(hash_tag(&k.user_sessions("t1", "u1")), "t1:u1");
        assert_eq!(hash_tag(&k.share_sessions("h1")), "h1");
    }

    #[test]
    fn room_messages_have_one_wire_form() {
        let driver = RoomMessage::Driver {
            cid: "c1".into(),
            driver: Some("s1".into()),
            by: Some("control".into()),
            at: 5,
            seq: 0,
        };
        assert_eq!(
            serde_json::to_string(&driver).unwrap(),
            r#"{"type":"driver","cid":"c1","driver":"s1","by":"control","at":5,"seq":0}"#
        );
        let freed = r#"{"type":"driver","cid":"c1","driver":null,"by":null,"at":6}"#;
        assert!(matches!(
            serde_json::from_str::<RoomMessage>(freed).unwrap(),
            RoomMessage::Driver {
                driver: None,
                by: None,
                ..
            }
        ));
        let request = r#"{"type":"control.request","cid":"c1","session_id":"s2","name":"Ann"}"#;
        assert!(matches!(
            serde_json::from_str::<RoomMessage>(request).unwrap(),
            RoomMessage::ControlRequest { .. }
        ));
        // Control's lifecycle events are not room messages the relay acts on.
        assert!(
            serde_json::from_str::<RoomMessage>(r#"{"type":"container.stopped","cid":"c1"}"#)
                .is_err()
        );
        let ControlMessage::Kick(share) =
            serde_json::from_str(&Kick::share_revoked("h1").to_message()).unwrap();
        assert!(share.names_someone() && !share.is_revocation());
        assert_eq!(share.share.as_deref(), Some("h1"));
    }

    #[test]
    fn container_state_round_trips() {
        for s in [
            "creating",
            "running",
            "stopping",
            "stopped",
            "failed",
            "unavailable",
        ] {
            assert_eq!(s.parse::<ContainerState>().unwrap().as_str(), s);
        }
        assert!("bogus".parse::<ContainerState>().is_err());
    }
}
