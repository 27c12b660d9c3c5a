//! What the registry knows of one session.

use std::net::IpAddr;

use vnc_shared::token::Scope;

/// What the registry records of a session (`{prefix}session:{sid}`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRecord {
    pub sid: String,
    pub cid: String,
    pub sub: String,
    pub tenant: String,
    pub scope: Scope,
    pub jti: String,
    /// The token's `exp`, Unix seconds.
    pub exp: u64,
    /// Unix milliseconds.
    pub started_at: u64,
    /// `websocket` or `socketio`.
    pub transport: &'static str,
    /// The session holds its token's single-use claim (`{prefix}jti:{jti}`).
    pub single_use: bool,
    /// The browser's address (see `admission/client.rs`).
    pub client_addr: IpAddr,
    /// The label the presence list shows: a share session's given name, else `sub`.
    pub name: String,
    /// The share link the session was opened with (its `sub` is then a guest id).
    pub share: Option<String>,
    /// May take control and grant it without holding it: a `control` session of the
    /// container's owner or of an admin, never a share session.
    pub privileged: bool,
}

#[cfg(test)]
impl SessionRecord {
    /// A control session `sid` of user `u1` (tenant `t1`) on container `c1`, token
    /// `jti-{sid}`, from 127.0.0.1: the unit tests' session, changed field by field.
    pub fn for_tests(sid: &str) -> SessionRecord {
        SessionRecord {
            sid: sid.into(),
            cid: "c1".into(),
            sub: "u1".into(),
            tenant: "t1".into(),
            scope: Scope::Control,
            jti: format!("jti-{sid}"),
            exp: 0,
            started_at: 0,
            transport: "websocket",
            single_use: true,
            client_addr: std::net::Ipv4Addr::LOCALHOST.into(),
            name: "u1".into(),
            share: None,
            privileged: true,
        }
    }
}
