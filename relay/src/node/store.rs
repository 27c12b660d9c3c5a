//! The relay's view of Redis: resolving a container's VNC target and checking token
//! revocation, in one round trip per new session (never per relayed message), and the
//! registry writes of the heartbeat.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use fred::clients::SubscriberClient;
use fred::interfaces::LuaInterface;
use fred::prelude::*;
use fred::types::RespVersion;
use vnc_shared::config::Secret;

use crate::config::SessionLimits;

use crate::session::record::SessionRecord;
use vnc_shared::schema::{ContainerState, Keys, container_field};

/// How long one Redis call may take before the session is refused with 503.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// Time to establish one Redis connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Commands per pipeline when writing many keys (revocations) back.
const WRITE_BATCH: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redis is unavailable: {0}")]
    Unavailable(String),
    #[error("container record is corrupt: {0}")]
    Corrupt(String),
}

impl From<fred::error::Error> for StoreError {
    fn from(e: fred::error::Error) -> Self {
        StoreError::Unavailable(e.to_string())
    }
}

/// What the relay needs of a container record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerTarget {
    pub state: ContainerState,
    pub tenant: String,
    pub host: String,
    pub port: u16,
    /// The password the relay authenticates with (credential injection), if any.
    pub password: Option<Secret<String>>,
    /// The container asks for its sessions to be recorded.
    pub record: bool,
    /// The user who owns the container.
    pub owner: String,
}

/// Admission in one step (see [`Store::admit_session`]). KEYS: token claim, container
/// set, user set, session hash, and for a share session the share hash and its session
/// set. ARGV: sid, ttl ms, single use (0/1), container limit, user limit, session key
/// prefix, then the session hash's field/value pairs.
const ADMIT_SESSION: &str = r#"
local sid, ttl = ARGV[1], tonumber(ARGV[2])
local function live(set)
  local n = 0
  for _, m in ipairs(redis.call('SMEMBERS', set)) do
    if redis.call('EXISTS', ARGV[6] .. m) == 1 then n = n + 1 else redis.call('SREM', set, m) end
  end
  return n
end
local share = #KEYS == 6
if share then
  local max = tonumber(redis.call('HGET', KEYS[5], 'max_sessions'))
  if not max then return 'share_gone' end
  if live(KEYS[6]) >= max then return 'share' end
end
local per_container, per_user = tonumber(ARGV[4]), tonumber(ARGV[5])
if per_container > 0 and live(KEYS[2]) >= per_container then return 'container' end
if per_user > 0 and live(KEYS[3]) >= per_user then return 'user' end
if ARGV[3] == '1' and not redis.call('SET', KEYS[1], sid, 'NX', 'PX', ttl) then return 'token' end
redis.call('HSET', KEYS[4], unpack(ARGV, 7))
redis.call('PEXPIRE', KEYS[4], ttl)
redis.call('SADD', KEYS[2], sid)
redis.call('SADD', KEYS[3], sid)
if share then
  redis.call('SADD', KEYS[6], sid)
  local left = redis.call('PTTL', KEYS[5])
  if left > 0 then redis.call('PEXPIRE', KEYS[6], left) end
end
return 'ok'
"#;

/// What [`Store::admit_session`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    Admitted,
    ContainerFull,
    UserFull,
    TokenInUse,
    ShareFull,
    /// The share link was revoked or expired between the lookup and admission.
    ShareGone,
}

/// The `session:{sid}` hash of a record.
fn session_fields(r: &SessionRecord, node_id: &str) -> Vec<(&'static str, String)> {
    use vnc_shared::schema::session_field as f;
    let mut fields = vec![
        (f::CID, r.cid.clone()),
        (f::SUB, r.sub.clone()),
        (f::TENANT, r.tenant.clone()),
        (f::SCOPE, r.scope.as_str().to_owned()),
        (f::NODE, node_id.to_owned()),
        (f::JTI, r.jti.clone()),
        (f::STARTED_AT, r.started_at.to_string()),
        (f::TRANSPORT, r.transport.to_owned()),
        (f::CLIENT_ADDR, r.client_addr.to_string()),
        (f::NAME, r.name.clone()),
    ];
    if let Some(share) = &r.share {
        fields.push((f::SHARE, share.clone()));
    }
    fields
}

/// Deletes a single-use claim only if it still names this session.
const RELEASE_CLAIM: &str = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end";

/// What the registry records of this node (`{prefix}node:{node_id}`).
#[derive(Clone, Debug)]
pub struct NodeRecord {
    pub node_id: String,
    /// The public listener's address.
    pub addr: String,
    /// Unix milliseconds.
    pub started_at: u64,
    pub version: &'static str,
}

/// The answer to "may this token open this container, and where is it".
#[derive(Debug)]
pub struct Lookup {
    pub container: Option<ContainerTarget>,
    pub revoked: bool,
    /// For a share token: the container its share link opens, `None` when the share
    /// is gone (revoked or expired).
    pub share_cid: Option<String>,
}

/// Redis client plus the key schema.
#[derive(Clone)]
pub struct Store {
    client: Client,
    keys: Keys,
    /// Where the pub/sub clients connect too.
    config: Config,
}

/// Timeouts and reconnect policy of every Redis client of the relay.
fn builder(config: Config) -> Builder {
    let mut builder = Builder::from_config(config);
    builder
        .with_connection_config(|c| {
            c.connection_timeout = CONNECT_TIMEOUT;
            c.internal_command_timeout = COMMAND_TIMEOUT;
        })
        .with_performance_config(|p| p.default_command_timeout = COMMAND_TIMEOUT)
        .set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2));
    builder
}

impl Store {
    /// Builds the client and starts connecting in the background; it reconnects with
    /// back-off for as long as the relay runs.
    pub fn connect(url: &str, keys: Keys) -> Result<Store, StoreError> {
        let mut config = Config::from_url(url)?;
        // Refuse at once while disconnected instead of queueing: fail closed, fast.
        config.fail_fast = true;
        let client = builder(config.clone()).build()?;
        vnc_shared::redis::keep_connecting(client.clone());
        Ok(Store {
            client,
            keys,
            config,
        })
    }

    /// A new pub/sub client for the same server (not yet connected). `resp3` for the
    /// socket.io adapter, which needs RESP3 push messages.
    pub fn subscriber(&self, resp3: bool) -> Result<SubscriberClient, StoreError> {
        let mut config = self.config.clone();
        if resp3 {
            config.version = RespVersion::RESP3;
        }
        Ok(builder(config).build_subscriber_client()?)
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The command client, for the registry's other scripts (`driver.rs`).
    pub(super) fn client(&self) -> &Client {
        &self.client
    }

    pub fn is_connected(&self) -> bool {
        self.client.is_connected()
    }

    /// Waits (bounded) for the first connection; the relay starts either way.
    pub async fn wait_connected(&self, within: Duration) -> bool {
        tokio::time::timeout(within, self.client.wait_for_connect())
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Fetches the container record, the revocation flag of `jti` and, for a share
    /// token, its share's container, in one pipeline.
    pub async fn lookup(
        &self,
        cid: &str,
        jti: &str,
        share: Option<&str>,
    ) -> Result<Lookup, StoreError> {
        use container_field::{
            HOST, INJECT_CREDENTIALS, OWNER, PORT, RECORD, STATE, TENANT, VNC_PASSWORD,
        };
        let pipe = self.client.pipeline();
        let fields = vec![
            STATE,
            TENANT,
            HOST,
            PORT,
            VNC_PASSWORD,
            INJECT_CREDENTIALS,
            RECORD,
            OWNER,
        ];
        let _: () = pipe.hmget(self.keys.container(cid), fields).await?;
        let _: () = pipe.exists(self.keys.revoked(jti)).await?;
        if let Some(share) = share {
            let _: () = pipe
                .hget(self.keys.share(share), vnc_shared::schema::share_field::CID)
                .await?;
        }
        let mut replies: Vec<Value> = pipe.all().await?;
        let share_cid = match share {
            Some(_) => replies.pop().and_then(|v| v.convert().ok()).flatten(),
            None => None,
        };
        let revoked: i64 = replies.pop().map(|v| v.convert()).transpose()?.unwrap_or(0);
        let fields: Vec<Option<String>> = replies
            .pop()
            .map(|v| v.convert())
            .transpose()?
            .unwrap_or_default();
        Ok(Lookup {
            container: parse_target(&fields)?,
            revoked: revoked > 0,
            share_cid,
        })
    }

    /// Admits session `r` into the registry in one atomic step: the per-container and
    /// per-user limits (0: none) against the live sessions of every node (stale set
    /// members are pruned), the token's single-use claim, then the session record and
    /// its set memberships, all with `ttl`.
    pub async fn admit_session(
        &self,
        r: &SessionRecord,
        node_id: &str,
        limits: SessionLimits,
        ttl: Duration,
    ) -> Result<Admission, StoreError> {
        let mut keys = vec![
            self.keys.token_session(&r.jti),
            self.keys.container_sessions(&r.cid),
            self.keys.user_sessions(&r.tenant, &r.sub),
            self.keys.session(&r.sid),
        ];
        if let Some(share) = &r.share {
            keys.push(self.keys.share(share));
            keys.push(self.keys.share_sessions(share));
        }
        let mut args = vec![
            r.sid.clone(),
            ttl.as_millis().to_string(),
            u8::from(r.single_use).to_string(),
            limits.per_container.to_string(),
            limits.per_user.to_string(),
            self.keys.session(""),
        ];
        for (field, value) in session_fields(r, node_id) {
            args.push(field.to_owned());
            args.push(value);
        }
        let answer: String = self.client.eval(ADMIT_SESSION, keys, args).await?;
        Ok(match answer.as_str() {
            "ok" => Admission::Admitted,
            "container" => Admission::ContainerFull,
            "user" => Admission::UserFull,
            "share" => Admission::ShareFull,
            "share_gone" => Admission::ShareGone,
            _ => Admission::TokenInUse,
        })
    }

    /// Writes this node's heartbeat record with `ttl`.
    pub async fn record_node(
        &self,
        node: &NodeRecord,
        sessions: usize,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        use vnc_shared::schema::node_field as n;
        let pipe = self.client.pipeline();
        let key = self.keys.node(&node.node_id);
        let fields: Vec<(&str, String)> = vec![
            (n::ADDR, node.addr.clone()),
            (n::SESSIONS, sessions.to_string()),
            (n::STARTED_AT, node.started_at.to_string()),
            (n::VERSION, node.version.to_owned()),
        ];
        let _: () = pipe.hset(&key, fields).await?;
        let _: () = pipe.pexpire(&key, ttl.as_millis() as i64, None).await?;
        let _: Vec<Value> = pipe.all().await?;
        Ok(())
    }

    /// Writes session records, the container sets and the single-use claims, all
    /// with `ttl`. Whole records, not just TTLs: this restores the registry after
    /// Redis lost its data.
    pub async fn record_sessions(
        &self,
        node_id: &str,
        sessions: &[Arc<SessionRecord>],
        ttl: Duration,
    ) -> Result<(), StoreError> {
        if sessions.is_empty() {
            return Ok(());
        }
        let ms = ttl.as_millis() as i64;
        let pipe = self.client.pipeline();
        for r in sessions {
            let key = self.keys.session(&r.sid);
            let fields = session_fields(r, node_id);
            let _: () = pipe.hset(&key, fields).await?;
            let _: () = pipe.pexpire(&key, ms, None).await?;
            let _: () = pipe
                .sadd(self.keys.container_sessions(&r.cid), r.sid.as_str())
                .await?;
            let _: () = pipe
                .sadd(self.keys.user_sessions(&r.tenant, &r.sub), r.sid.as_str())
                .await?;
            if let Some(share) = &r.share {
                let _: () = pipe
                    .sadd(self.keys.share_sessions(share), r.sid.as_str())
                    .await?;
            }
            if r.single_use {
                let _: () = pipe
                    .set(
                        self.keys.token_session(&r.jti),
                        r.sid.as_str(),
                        Some(Expiration::PX(ms)),
                        None,
                        false,
                    )
                    .await?;
            }
        }
        let _: Vec<Value> = pipe.all().await?;
        Ok(())
    }

    /// Which of `jtis` Redis has revoked, in one round trip (MGET of their revocation
    /// keys).
    pub async fn revoked_among(&self, jtis: &[&str]) -> Result<HashSet<String>, StoreError> {
        if jtis.is_empty() {
            return Ok(HashSet::new());
        }
        let keys: Vec<String> = jtis.iter().map(|j| self.keys.revoked(j)).collect();
        let flags: Vec<Option<String>> = self.client.mget(keys).await?;
        Ok(jtis
            .iter()
            .zip(flags)
            .filter(|(_, flag)| flag.is_some())
            .map(|(jti, _)| (*jti).to_owned())
            .collect())
    }

    /// Writes revocations back (`{prefix}revoked:{jti}` until the Unix second each is
    /// refused until), as control wrote them: this restores them after Redis lost its
    /// data. In pipelines of [`WRITE_BATCH`].
    pub async fn record_revocations(&self, revoked: &[(String, u64)]) -> Result<(), StoreError> {
        for batch in revoked.chunks(WRITE_BATCH) {
            let pipe = self.client.pipeline();
            for (jti, until) in batch {
                let expiry = Some(Expiration::EXAT(*until as i64));
                let _: () = pipe
                    .set(self.keys.revoked(jti), "1", expiry, None, false)
                    .await?;
            }
            let _: Vec<Value> = pipe.all().await?;
        }
        Ok(())
    }

    /// Removes a session from the registry and releases its single-use claim (only
    /// if this session still holds it).
    pub async fn end_session(&self, r: &SessionRecord) -> Result<(), StoreError> {
        self.connected()?;
        let pipe = self.client.pipeline();
        let _: () = pipe.del(self.keys.session(&r.sid)).await?;
        let _: () = pipe
            .srem(self.keys.container_sessions(&r.cid), r.sid.as_str())
            .await?;
        let _: () = pipe
            .srem(self.keys.user_sessions(&r.tenant, &r.sub), r.sid.as_str())
            .await?;
        if let Some(share) = &r.share {
            let _: () = pipe
                .srem(self.keys.share_sessions(share), r.sid.as_str())
                .await?;
        }
        let _: Vec<Value> = pipe.all().await?;
        if r.single_use {
            let _: i64 = self
                .client
                .eval(
                    RELEASE_CLAIM,
                    vec![self.keys.token_session(&r.jti)],
                    vec![r.sid.as_str()],
                )
                .await?;
        }
        Ok(())
    }

    /// Removes this node's heartbeat (on a clean stop).
    pub async fn remove_node(&self, node_id: &str) -> Result<(), StoreError> {
        self.connected()?;
        let _: i64 = self.client.del(self.keys.node(node_id)).await?;
        Ok(())
    }

    /// Closes the connection; without one (Redis away) there is nothing to wait for.
    pub async fn quit(&self) {
        if self.is_connected() {
            let _ = tokio::time::timeout(COMMAND_TIMEOUT, self.client.quit()).await;
        }
    }

    /// Fails at once while disconnected: clean-up on the way out never waits for a
    /// Redis that is gone (its records expire on their own).
    fn connected(&self) -> Result<(), StoreError> {
        if self.is_connected() {
            Ok(())
        } else {
            Err(StoreError::Unavailable("not connected".into()))
        }
    }
}

fn parse_target(fields: &[Option<String>]) -> Result<Option<ContainerTarget>, StoreError> {
    let [state, tenant, host, port, password, inject, record, owner] = fields else {
        return Err(StoreError::Corrupt(format!(
            "expected 8 fields, got {}",
            fields.len()
        )));
    };
    let Some(state) = state else {
        return Ok(None);
    };
    let state = state.parse().map_err(StoreError::Corrupt)?;
    let port = match port.as_deref().map(str::parse::<u16>) {
        Some(Ok(p)) => p,
        Some(Err(_)) | None if state != ContainerState::Running => 0,
        _ => {
            return Err(StoreError::Corrupt(
                "running container without a valid port".into(),
            ));
        }
    };
    Ok(Some(ContainerTarget {
        state,
        tenant: tenant.clone().unwrap_or_default(),
        host: host.clone().unwrap_or_else(|| "127.0.0.1".into()),
        port,
        password: password
            .clone()
            .filter(|p| !p.is_empty() && inject.as_deref() != Some("false"))
            .map(Secret::new),
        record: record.as_deref() == Some("true"),
        owner: owner.clone().unwrap_or_default(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Option<String> {
        Some(v.to_owned())
    }

    #[test]
    fn parses_records() {
        let t = parse_target(&[
            s("running"),
            s("t1"),
            s("10.0.0.5"),
            s("5901"),
            None,
            None,
            None,
            None,
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            (t.state, t.port, t.host.as_str()),
            (ContainerState::Running, 5901, "10.0.0.5")
        );
        assert_eq!(t.password, None);
        assert_eq!(
            parse_target(&[None, None, None, None, None, None, None, None]).unwrap(),
            None
        );
        let stopped = parse_target(&[s("stopped"), s("t1"), None, None, None, None, None, None])
            .unwrap()
            .unwrap();
        assert_eq!(stopped.state, ContainerState::Stopped);
        assert!(
            parse_target(&[
                s("running"),
                s("t1"),
                s("h"),
                s("x"),
                None,
                None,
                None,
                None
            ])
            .is_err()
        );
        assert!(parse_target(&[s("weird"), None, None, None, None, None, None, None]).is_err());
    }

    #[test]
    fn the_password_is_injected_unless_the_record_says_not_to() {
        let record = |inject: Option<String>| {
            parse_target(&[
                s("running"),
                s("t1"),
                s("h"),
                s("5900"),
                s("pw"),
                inject,
                None,
                None,
            ])
            .unwrap()
            .unwrap()
            .password
        };
        assert_eq!(record(None), Some(Secret::new("pw".to_owned())));
        assert_eq!(record(s("true")), Some(Secret::new("pw".to_owned())));
        assert_eq!(record(s("false")), None);
    }

    #[test]
    fn only_record_true_asks_for_recording() {
        let record = |field: Option<String>| {
            parse_target(&[
                s("running"),
                s("t1"),
                s("h"),
                s("5900"),
                None,
                None,
                field,
                None,
            ])
            .unwrap()
            .unwrap()
            .record
        };
        assert!(record(s("true")));
        assert!(!record(None) && !record(s("false")) && !record(s("1")));
    }
}
