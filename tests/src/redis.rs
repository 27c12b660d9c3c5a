//! A real `redis-server` per test on a free loopback port, and a client for it.

use std::collections::{BTreeMap, HashMap};

use anyhow::{Context, bail};
use fred::prelude::*;
use tokio::process::Command;

use crate::process::eventually;
pub use crate::redis_process::free_port;
use crate::redis_process::{redis_binary, server_args, wait_listening};

fn spawn(port: u16, dir: &std::path::Path) -> anyhow::Result<tokio::process::Child> {
    Command::new(redis_binary())
        .args(server_args(port, dir))
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting redis-server")
}

async fn connect(port: u16) -> anyhow::Result<Client> {
    let config = Config::from_url(&format!("redis://127.0.0.1:{port}"))?;
    let client = Builder::from_config(config).build()?;
    client.init().await?;
    Ok(client)
}

/// A score in a sorted set that scores by expiry (Unix ms or s) that never passes:
/// a member as a relay or control would write it, kept for the whole test.
pub fn far_future() -> f64 {
    1e13
}

/// A running Redis, killed on drop: one redis-server, or a 6-node Redis Cluster
/// ([`RedisServer::start_cluster`]) that the same helpers reach by key.
pub struct RedisServer {
    backing: Backing,
    /// The server's port (a cluster's first node).
    pub port: u16,
    /// Routes by key on a cluster.
    pub client: Client,
}

enum Backing {
    One {
        child: tokio::process::Child,
        dir: tempfile::TempDir,
    },
    Cluster(crate::cluster::RedisCluster),
}

impl RedisServer {
    pub async fn start() -> anyhow::Result<RedisServer> {
        for _ in 0..5 {
            if let Some(server) = Self::try_start(free_port()).await? {
                return Ok(server);
            }
        }
        bail!("redis-server would not start")
    }

    /// A server on a given port (one a relay was told about before Redis was up).
    pub async fn start_on(port: u16) -> anyhow::Result<RedisServer> {
        Self::try_start(port)
            .await?
            .with_context(|| format!("redis-server would not start on port {port}"))
    }

    async fn try_start(port: u16) -> anyhow::Result<Option<RedisServer>> {
        let dir = tempfile::tempdir()?;
        let mut child = spawn(port, dir.path())?;
        if !wait_listening(&mut child, port).await? {
            return Ok(None);
        }
        Ok(Some(RedisServer {
            backing: Backing::One { child, dir },
            port,
            client: connect(port).await?,
        }))
    }

    /// A 6-node Redis Cluster (3 primaries, 3 replicas) on loopback.
    pub async fn start_cluster() -> anyhow::Result<RedisServer> {
        let cluster = crate::cluster::RedisCluster::start().await?;
        Ok(RedisServer {
            port: cluster.ports()[0],
            client: cluster.client.clone(),
            backing: Backing::Cluster(cluster),
        })
    }

    /// The cluster behind this Redis, if it is one.
    pub fn cluster(&self) -> Option<&crate::cluster::RedisCluster> {
        match &self.backing {
            Backing::Cluster(c) => Some(c),
            Backing::One { .. } => None,
        }
    }

    fn one(&mut self) -> (&mut tokio::process::Child, &std::path::Path) {
        match &mut self.backing {
            Backing::One { child, dir } => (child, dir.path()),
            Backing::Cluster(_) => panic!("a single server's operation asked of a cluster"),
        }
    }

    /// Stops the server (SIGKILL), after writing its data to disk when `keep_data`.
    pub async fn stop(&mut self, keep_data: bool) {
        if keep_data {
            let save = fred::types::CustomCommand::new_static("SAVE", None, false);
            let _: String = self
                .client
                .custom(save, Vec::<String>::new())
                .await
                .expect("SAVE");
        }
        let _ = self.one().0.kill().await;
    }

    /// Starts the server again on the same port, with the data `stop` kept (if any).
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        let port = self.port;
        let mut child = spawn(port, self.one().1)?;
        anyhow::ensure!(
            wait_listening(&mut child, self.port).await?,
            "redis-server would not start again on port {}",
            self.port
        );
        *self.one().0 = child;
        self.client = connect(self.port).await?;
        Ok(())
    }

    pub fn url(&self) -> String {
        match &self.backing {
            Backing::One { .. } => format!("redis://127.0.0.1:{}", self.port),
            Backing::Cluster(c) => c.url(),
        }
    }

    /// Writes a container record the way control does.
    pub async fn put_container(&self, cid: &str, tenant: &str, state: &str, port: u16) {
        let fields = vec![
            ("owner", "u1".to_owned()),
            ("tenant", tenant.to_owned()),
            ("state", state.to_owned()),
            ("host", "127.0.0.1".to_owned()),
            ("port", port.to_string()),
        ];
        let _: () = self
            .client
            .hset(format!("vnc:container:{cid}"), fields)
            .await
            .expect("HSET container");
    }

    /// Writes a share link the way control does: `vnc:share:{id}` for `cid`, live
    /// for a minute.
    pub async fn put_share(&self, share_id: &str, cid: &str, scope: &str, max_sessions: u32) {
        let key = format!("vnc:share:{share_id}");
        let fields = vec![
            ("cid", cid.to_owned()),
            ("tenant", "t1".to_owned()),
            ("scope", scope.to_owned()),
            ("max_sessions", max_sessions.to_string()),
        ];
        let _: () = self.client.hset(&key, fields).await.expect("HSET share");
        let _: () = self
            .client
            .expire(&key, 60, None)
            .await
            .expect("EXPIRE share");
    }

    /// Registers a live session as a relay does: its record `fields` (expiring after
    /// `ttl`), then its place in the container's counting set and, for a share
    /// session, in the share's.
    pub async fn register_session(
        &self,
        sid: &str,
        cid: &str,
        share: Option<&str>,
        fields: Vec<(&str, String)>,
        ttl: std::time::Duration,
    ) {
        let key = format!("vnc:session:{sid}");
        let _: () = self.client.hset(&key, fields).await.expect("HSET session");
        let _: () = self
            .client
            .pexpire(&key, ttl.as_millis() as i64, None)
            .await
            .expect("PEXPIRE session");
        let sets = std::iter::once(format!("vnc:sessions:{{{cid}}}"))
            .chain(share.map(|h| format!("vnc:share_sessions:{{{h}}}")));
        for set in sets {
            let _: () = self
                .client
                .zadd(set, None, None, false, false, (far_future(), sid))
                .await
                .expect("ZADD");
        }
    }

    /// A string key's value.
    pub async fn get(&self, key: &str) -> Option<String> {
        self.client.get(key).await.expect("GET")
    }

    pub async fn del(&self, key: &str) {
        let _: i64 = self.client.del(key).await.expect("DEL");
    }

    /// Sets one field of a container record (`vnc_password`, `inject_credentials`).
    pub async fn set_field(&self, cid: &str, field: &str, value: &str) {
        let _: () = self
            .client
            .hset(format!("vnc:container:{cid}"), (field, value))
            .await
            .expect("HSET field");
    }

    pub async fn revoke(&self, jti: &str) {
        let _: () = self
            .client
            .set(
                format!("vnc:revoked:{jti}"),
                "1",
                Some(Expiration::EX(60)),
                None,
                false,
            )
            .await
            .expect("SET revoked");
    }

    /// Revokes `jti` the way control does (the flag, then the kick with the token's
    /// `exp`) while no relay listens: `CLIENT KILL TYPE pubsub` and both writes run in
    /// one MULTI, so no subscriber is back in time to hear the kick. Returns how many
    /// subscribers the kick reached (0).
    pub async fn revoke_unheard(&self, jti: &str, exp: u64) -> i64 {
        let kill = fred::types::CustomCommand::new_static("CLIENT", None, false);
        let kick =
            serde_json::json!({ "type": "kick", "jti": jti, "exp": exp, "reason": "revoked" });
        let trx = self.client.multi();
        let _: () = trx
            .custom(kill, vec!["KILL", "TYPE", "pubsub"])
            .await
            .expect("CLIENT KILL");
        let _: () = trx
            .set(
                format!("vnc:revoked:{jti}"),
                "1",
                Some(Expiration::EXAT(exp as i64)),
                None,
                false,
            )
            .await
            .expect("SET revoked");
        let _: () = trx
            .publish("vnc:control", kick.to_string())
            .await
            .expect("PUBLISH");
        let (_killed, _set, heard): (i64, Value, i64) = trx.exec(true).await.expect("EXEC");
        heard
    }

    /// Subscribers of one pub/sub channel.
    pub async fn subscribers(&self, channel: &str) -> i64 {
        if let Backing::Cluster(c) = &self.backing {
            return c.subscribers(channel).await;
        }
        let counts: Vec<Value> = self
            .client
            .pubsub_numsub(channel)
            .await
            .expect("PUBSUB NUMSUB");
        counts.get(1).and_then(Value::as_i64).unwrap_or(0)
    }

    /// Subscribers of one sharded channel (a room), on every node of a cluster.
    pub async fn shard_subscribers(&self, channel: &str) -> i64 {
        let Backing::Cluster(c) = &self.backing else {
            let counts: Vec<Value> = self
                .client
                .pubsub_shardnumsub(channel)
                .await
                .expect("PUBSUB SHARDNUMSUB");
            return counts.get(1).and_then(Value::as_i64).unwrap_or(0);
        };
        c.shard_subscribers(channel).await
    }

    /// Publishes a room event the way control does (on the room's sharded channel).
    pub async fn publish_room(&self, cid: &str, kind: &str) {
        let event = serde_json::json!({ "type": kind, "cid": cid, "tenant": "t1", "at": 0 });
        let _: i64 = self
            .client
            .spublish(format!("vnc:room:{{{cid}}}"), event.to_string())
            .await
            .expect("PUBLISH");
    }

    /// FLUSHALL: Redis as after a restart that lost its data.
    pub async fn wipe(&self) {
        let _: () = self.client.flushall_cluster().await.expect("FLUSHALL");
    }

    /// Publishes `message` (JSON) on `channel`.
    pub async fn publish(&self, channel: &str, message: &serde_json::Value) {
        let _: i64 = self
            .client
            .publish(channel, message.to_string())
            .await
            .expect("PUBLISH");
    }

    /// The live sessions of a container in the registry: sid → its record.
    pub async fn sessions(&self, cid: &str) -> BTreeMap<String, HashMap<String, String>> {
        let sids: Vec<String> = self
            .client
            .zrange(
                format!("vnc:sessions:{{{cid}}}"),
                0,
                -1,
                None,
                false,
                None,
                false,
            )
            .await
            .expect("ZRANGE");
        let mut out = BTreeMap::new();
        for sid in sids {
            let record: HashMap<String, String> = self
                .client
                .hgetall(format!("vnc:session:{sid}"))
                .await
                .expect("HGETALL");
            if !record.is_empty() {
                out.insert(sid, record);
            }
        }
        out
    }

    /// A hash (a node record, say); empty when the key is gone.
    pub async fn hash(&self, key: &str) -> HashMap<String, String> {
        self.client.hgetall(key).await.expect("HGETALL")
    }

    /// Sharded pub/sub channels (rooms) with at least one subscriber, matching
    /// `pattern`.
    pub async fn shard_channels(&self, pattern: &str) -> Vec<String> {
        let mut channels: Vec<String> = match &self.backing {
            Backing::One { .. } => self
                .client
                .pubsub_shardchannels(pattern)
                .await
                .expect("PUBSUB SHARDCHANNELS"),
            // Each node knows the channels of its own slots.
            Backing::Cluster(c) => {
                let mut all = Vec::new();
                for port in c.live_ports() {
                    let out = c
                        .node_command(port, &["PUBSUB", "SHARDCHANNELS", pattern])
                        .await
                        .expect("PUBSUB SHARDCHANNELS");
                    all.extend(out.lines().filter(|l| !l.is_empty()).map(str::to_owned));
                }
                all
            }
        };
        channels.sort();
        channels.dedup();
        channels
    }

    /// Waits until a key exists (or panics).
    pub async fn wait_key(&self, key: &str) {
        eventually(key, crate::WAIT, || async {
            let n: i64 = self.client.exists(key).await.ok()?;
            (n > 0).then_some(())
        })
        .await
    }
}

/// Runs each named test body, an `async fn(RedisServer)`, twice: on one redis-server
/// (`standalone::name`) and on a real 6-node Redis Cluster (`cluster::name`; fails
/// under `CI=true` when the cluster's binaries are missing, skips loudly elsewhere). A
/// multi-threaded runtime of 4 workers, as the queue's tests need.
#[macro_export]
macro_rules! on_every_redis {
    ($($name:ident),+ $(,)?) => {
        mod standalone {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let redis = $crate::redis::RedisServer::start().await.expect("redis-server");
                    super::$name(redis).await
                }
            )+
        }
        mod cluster {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    if !$crate::cluster::cluster_required() {
                        return;
                    }
                    let redis = $crate::redis::RedisServer::start_cluster()
                        .await
                        .expect("redis cluster");
                    super::$name(redis).await
                }
            )+
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A port that another process listens on is not mistaken for the server's: the
    /// server can't bind it, exits, and the start fails instead of handing out a client
    /// of the other process.
    #[tokio::test]
    async fn a_port_another_process_holds_is_not_taken_for_the_server() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let err = RedisServer::start_on(port)
            .await
            .err()
            .expect("a refused start");
        assert!(err.to_string().contains("would not start"), "{err:#}");
    }
}
