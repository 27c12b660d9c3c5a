//! The relay's view of Redis: resolving a container's VNC target and checking token
//! revocation, in one round trip per new session (never per relayed message), and the
//! registry writes of the heartbeat.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use fred::clients::SubscriberClient;
use fred::prelude::*;
use fred::types::RespVersion;
use futures_util::future::try_join_all;
use tokio::sync::broadcast::error::RecvError;
use vnc_shared::config::Secret;

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

mod admit;

pub use admit::Admission;

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

/// Places sessions in one counting set, in one key (one hash slot): the sorted set of
/// a container's, a user's or a share's live sessions, scored by expiry on the Redis
/// server's clock. Drops expired members; with a `limit` (0: none; admission places one
/// session), refuses when that many others are live; else gives each session the
/// score now + ttl and keeps the set alive as long as its newest member. KEYS: the
/// set. ARGV: ttl ms, limit, then the session ids. 1 when placed.
const PLACE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if limit > 0 and not redis.call('ZSCORE', KEYS[1], ARGV[3])
    and redis.call('ZCARD', KEYS[1]) >= limit then
  return 0
end
for i = 3, #ARGV do redis.call('ZADD', KEYS[1], now + ttl, ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], ttl)
return 1
"#;

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
    /// For a share token: the container its share link opens and the live sessions
    /// it allows, `None` when the share is gone (revoked or expired).
    pub share: Option<ShareTarget>,
}

/// What admission needs of a share link.
#[derive(Debug, PartialEq, Eq)]
pub struct ShareTarget {
    pub cid: String,
    pub max_sessions: u32,
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

    /// Keeps `subscriber`'s sharded channels (`SSUBSCRIBE`) subscribed: pub/sub is not
    /// replicated, so a new connection (Redis restarted, a Sentinel failover) has none,
    /// and on a Redis Cluster a failover moves a slot to another primary without
    /// closing the connection while the server drops that slot's subscriptions without
    /// a word. So every channel `subscriber` holds is taken again, one command each,
    /// after each of its reconnects (`after_reconnects`; a subscriber may take its own
    /// again instead) and whenever this node's command client sees the cluster's
    /// topology change (a `MOVED` reply, at the latest to the next heartbeat's write of
    /// a room's keys). The task ends with the clients.
    pub fn keep_shard_subscriptions(&self, subscriber: SubscriberClient, after_reconnects: bool) {
        let mut reconnects = subscriber.reconnect_rx();
        let mut topology = self.client.cluster_change_rx();
        let clustered = self.client.is_clustered();
        tokio::spawn(async move {
            loop {
                let cause = tokio::select! {
                    r = reconnects.recv(), if after_reconnects => r.map(|_| "reconnected"),
                    r = topology.recv(), if clustered => r.map(|_| "cluster topology changed"),
                    else => return,
                };
                let cause = match cause {
                    Ok(cause) => cause,
                    Err(RecvError::Lagged(_)) => "missed events",
                    Err(RecvError::Closed) => return,
                };
                for channel in subscriber.tracked_shard_channels() {
                    if let Err(e) = subscriber.ssubscribe(channel.to_string()).await {
                        // Taken again at the next event.
                        tracing::warn!(%channel, cause, error = %e, "subscribing again failed");
                    }
                }
            }
        });
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
            use vnc_shared::schema::share_field::{CID, MAX_SESSIONS};
            let _: () = pipe
                .hmget(self.keys.share(share), vec![CID, MAX_SESSIONS])
                .await?;
        }
        let mut replies: Vec<Value> = pipe.all().await?;
        let share = match share {
            Some(_) => {
                let fields: Vec<Option<String>> = replies
                    .pop()
                    .map(|v| v.convert())
                    .transpose()?
                    .unwrap_or_default();
                parse_share(&fields)
            }
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
            share,
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
        // The counting sets, refreshed: one script per set, with this node's sessions in
        // it, at most WRITE_BATCH sets at once.
        let mut sets: BTreeMap<String, Vec<&str>> = BTreeMap::new();
        for r in sessions {
            let sid = r.sid.as_str();
            sets.entry(self.keys.container_sessions(&r.cid))
                .or_default()
                .push(sid);
            sets.entry(self.keys.user_sessions(&r.tenant, &r.sub))
                .or_default()
                .push(sid);
            if let Some(share) = &r.share {
                sets.entry(self.keys.share_sessions(share))
                    .or_default()
                    .push(sid);
            }
        }
        let sets: Vec<_> = sets.into_iter().collect();
        for batch in sets.chunks(WRITE_BATCH) {
            try_join_all(batch.iter().map(|(set, sids)| async move {
                // Limit 0: a refresh, never refused.
                let mut args = vec![ms.to_string(), "0".to_owned()];
                args.extend(sids.iter().map(|s| s.to_string()));
                let _: i64 = self.client.eval(PLACE, vec![set.as_str()], args).await?;
                Ok::<_, StoreError>(())
            }))
            .await?;
        }
        Ok(())
    }

    /// Which of `jtis` Redis has revoked, in one round trip.
    pub async fn revoked_among(&self, jtis: &[&str]) -> Result<HashSet<String>, StoreError> {
        if jtis.is_empty() {
            return Ok(HashSet::new());
        }
        // One EXISTS per key, not MGET: on a Redis Cluster the keys lie in many slots.
        let pipe = self.client.pipeline();
        for jti in jtis {
            let _: () = pipe.exists(self.keys.revoked(jti)).await?;
        }
        let flags: Vec<i64> = pipe.all().await?;
        Ok(jtis
            .iter()
            .zip(flags)
            .filter(|(_, flag)| *flag > 0)
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
            .zrem(self.keys.container_sessions(&r.cid), r.sid.as_str())
            .await?;
        let _: () = pipe
            .zrem(self.keys.user_sessions(&r.tenant, &r.sub), r.sid.as_str())
            .await?;
        if let Some(share) = &r.share {
            let _: () = pipe
                .zrem(self.keys.share_sessions(share), r.sid.as_str())
                .await?;
        }
        let _: Vec<Value> = pipe.all().await?;
        if r.single_use {
            self.release_claim(r).await?;
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

/// A share's `cid` and `max_sessions`; `None` when the share is gone or unreadable.
fn parse_share(fields: &[Option<String>]) -> Option<ShareTarget> {
    let [Some(cid), Some(max)] = fields else {
        return None;
    };
    Some(ShareTarget {
        cid: cid.clone(),
        max_sessions: max.parse().ok()?,
    })
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
