//! A real Redis Cluster per test: six `redis-server` processes in cluster mode on free
//! loopback ports (three primaries with a replica each), formed by `redis-cli --cluster
//! create`, a clustered fred client for it, and failovers on demand: a manual
//! `CLUSTER FAILOVER` on a replica, or the SIGKILL of a primary. Every process is killed
//! when the cluster drops.
//!
//! Measured on the 2-core test machine (Redis 7.0.15, debug build, one cluster at a
//! time): `start` takes about 3.2 s (the six servers, `--cluster create` waiting for the
//! nodes to meet, every replica's first sync); `failover_slot_of` 0.5-1.2 s until every
//! node agrees on the new roles; `kill_primary_of` 3.8-5 s, most of it the 2 s node
//! timeout and the replica's election delay.
//!
//! How fred 10 behaves on a cluster (`tests/tests/redis_cluster.rs` shows each):
//! - `Config::from_url` takes `redis-cluster://host:port?node=host:port&node=...`
//!   ([`RedisCluster::url`]); any one node is enough, the client learns the rest.
//! - Commands with keys go to the primary of the key's slot, pipelines included (each
//!   command by its own key), and so do scripts: fred's `eval` by its keys (which must
//!   share a slot) and an EVAL sent with `ClusterHash::Offset(2)` by its first key. A
//!   `MOVED` after a failover is followed.
//! - `flushall` reaches one node only: [`RedisCluster::wipe`] uses `flushall_cluster`.
//!   `scan` and `scan_page` read one node (the hash tag's, if the pattern has one);
//!   `scan_cluster` reads every primary.
//! - A `multi()` must stay within one slot (fred refuses keys on two nodes, Redis
//!   `CROSSSLOT` two slots on one node): keys written together share a `{hash tag}`.
//! - `spublish` and `ssubscribe` route by the channel's slot, so one `ssubscribe` call
//!   takes channels of one slot only. Plain `publish` reaches subscribers on every node,
//!   but the count it returns is of the subscribers on the node it was sent to.
//! - A shard subscription is lost when its slot's primary hands over with `CLUSTER
//!   FAILOVER` (the connection stays up; `resubscribe_all` brings it back), and
//!   follows a primary that dies (the connection drops, `manage_subscriptions`
//!   subscribes again).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use fred::clients::SubscriberClient;
use fred::prelude::*;
use tokio::process::{Child, Command};

use crate::redis_process::{free_port, wait_listening};

mod topology;

pub use topology::{NodeView, parse_nodes};
use topology::{info_field, owner};

/// Three primaries, each with one replica.
const NODES: usize = 6;

/// Redis Cluster's slot count.
const SLOTS: u32 = 16384;

/// `cluster-node-timeout`: how long a silent node takes to be marked failed. Short, so a
/// killed primary is replaced within seconds.
const NODE_TIMEOUT_MS: u32 = 2000;

/// Bound on forming the cluster and on each failover: the node timeout, the replica's
/// election delay (0.5-1 s) and a loaded machine, with room to spare.
const SETTLE: Duration = Duration::from_secs(30);

/// Bound on one `redis-cli` call.
const CLI_TIMEOUT: Duration = Duration::from_secs(10);

/// One cluster node's process, its ports and data folder.
struct Node {
    /// `None` once killed.
    child: Option<Child>,
    port: u16,
    _dir: tempfile::TempDir,
}

/// A slot changing hands: which key's slot, the primary before and after (ports).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Failover {
    pub slot: u16,
    pub old_primary: u16,
    pub new_primary: u16,
}

/// A running six-node Redis Cluster, killed on drop.
pub struct RedisCluster {
    nodes: Vec<Node>,
    cli: PathBuf,
    /// A clustered client connected from [`RedisCluster::url`].
    pub client: Client,
}

/// The paths of `redis-server` and `redis-cli`, if both are installed.
fn binaries() -> Option<(PathBuf, PathBuf)> {
    let find = |name: &str| {
        ["/usr/bin", "/usr/local/bin", "/usr/sbin"]
            .iter()
            .map(|dir| Path::new(dir).join(name))
            .find(|p| p.exists())
    };
    Some((find("redis-server")?, find("redis-cli")?))
}

/// True if `redis-server` and `redis-cli` are installed. If not: under `CI=true` this
/// panics (tests that need a cluster must fail in CI), otherwise it prints a loud
/// `SKIPPED` line and returns false so the test can return early.
pub fn cluster_required() -> bool {
    if binaries().is_some() {
        return true;
    }
    let why = "redis-server or redis-cli is not installed (`apt-get install redis-server`, \
               which scripts/test-deps does)";
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true but {why}");
    }
    use std::io::Write;
    // Straight to the stderr handle: the test harness captures `eprintln!`.
    let _ = writeln!(
        std::io::stderr(),
        "\n\
         ************************************************************\n\
         SKIPPED: {why}\n\
         ************************************************************\n"
    );
    false
}

fn spawn_node(server: &Path, port: u16, bus_port: u16, dir: &Path) -> anyhow::Result<Child> {
    Command::new(server)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--cluster-enabled", "yes"])
        // Its own bus port: the default (port + 10000) may be taken or past 65535.
        .args(["--cluster-port", &bus_port.to_string()])
        .arg("--cluster-config-file")
        .arg(dir.join("nodes.conf"))
        .args(["--cluster-node-timeout", &NODE_TIMEOUT_MS.to_string()])
        .args(["--appendonly", "no", "--save", ""])
        // A replica's first sync starts at once, not after the default 5 s wait for
        // more replicas to share one transfer.
        .args(["--repl-diskless-sync-delay", "0"])
        .arg("--dir")
        .arg(dir)
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting redis-server")
}

/// A node on free ports, tried again when another process took one of them first.
async fn start_node(server: &Path) -> anyhow::Result<Node> {
    for _ in 0..5 {
        let (port, bus_port) = (free_port(), free_port());
        if port == bus_port {
            continue;
        }
        let dir = tempfile::tempdir()?;
        let mut child = spawn_node(server, port, bus_port, dir.path())?;
        if wait_listening(&mut child, port).await? {
            return Ok(Node {
                child: Some(child),
                port,
                _dir: dir,
            });
        }
    }
    bail!("a cluster node would not start")
}

/// Polls `check` every 50 ms until it returns `Some`, for at most `within`.
async fn poll<T, F, Fut>(what: &str, within: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let last = match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => None,
            Err(e) => Some(e),
        };
        if tokio::time::Instant::now() >= deadline {
            match last {
                Some(e) => bail!("timed out waiting for {what}: {e:#}"),
                None => bail!("timed out waiting for {what}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A clustered client built from `url`, connected, reconnecting the way the daemons'
/// clients do.
pub async fn connect(url: &str) -> anyhow::Result<Client> {
    let client = Builder::from_config(Config::from_url(url)?)
        .set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2))
        .build()?;
    client.init().await?;
    Ok(client)
}

impl RedisCluster {
    /// Starts six nodes, forms the cluster and waits until every node agrees on it.
    pub async fn start() -> anyhow::Result<RedisCluster> {
        let (server, cli) = binaries().context("redis-server or redis-cli is not installed")?;
        let nodes =
            futures_util::future::try_join_all((0..NODES).map(|_| start_node(&server))).await?;
        let mut create = Command::new(&cli);
        create.args(["--cluster", "create"]);
        create.args(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)));
        create.args(["--cluster-replicas", "1", "--cluster-yes"]);
        let out = tokio::time::timeout(SETTLE, create.kill_on_drop(true).output())
            .await
            .context("redis-cli --cluster create timed out")??;
        ensure!(
            out.status.success(),
            "redis-cli --cluster create: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let ports: Vec<u16> = nodes.iter().map(|n| n.port).collect();
        let url = cluster_url(&ports);
        let mut cluster = RedisCluster {
            nodes,
            cli,
            // Replaced once the cluster is formed: a client connected earlier would
            // have learned a partial slot map.
            client: Builder::from_config(Config::from_url(&url)?).build()?,
        };
        cluster.settle(None).await?;
        cluster.client = connect(&url).await?;
        Ok(cluster)
    }

    /// The fred URL of the cluster: every node, the first one in the authority.
    pub fn url(&self) -> String {
        cluster_url(&self.ports())
    }

    /// The ports of all six nodes, killed ones included.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    /// The ports of the nodes still running.
    pub fn live_ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.port)
            .collect()
    }

    /// A new subscriber client of the cluster, connected, re-subscribing after
    /// reconnects. `resp3` as the relay's socket.io adapter has it.
    pub async fn subscriber(&self, resp3: bool) -> anyhow::Result<SubscriberClient> {
        let mut config = Config::from_url(&self.url())?;
        if resp3 {
            config.version = fred::types::RespVersion::RESP3;
        }
        let subscriber = Builder::from_config(config)
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2))
            .build_subscriber_client()?;
        subscriber.init().await?;
        // Detached: it lives as long as the client's connections (the test's runtime).
        drop(subscriber.manage_subscriptions());
        Ok(subscriber)
    }

    /// Runs one command on one node with `redis-cli -e` (an error reply is an `Err`);
    /// returns its output.
    pub async fn node_command(&self, port: u16, args: &[&str]) -> anyhow::Result<String> {
        let mut cmd = Command::new(&self.cli);
        cmd.args(["-e", "-h", "127.0.0.1", "-p", &port.to_string()])
            .args(args)
            .kill_on_drop(true);
        let out = tokio::time::timeout(CLI_TIMEOUT, cmd.output())
            .await
            .with_context(|| format!("redis-cli -p {port} {args:?} timed out"))??;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        ensure!(
            out.status.success(),
            "redis-cli -p {port} {args:?}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(stdout)
    }

    /// The cluster as the node on `port` sees it (`CLUSTER NODES`).
    pub async fn view(&self, port: u16) -> anyhow::Result<Vec<NodeView>> {
        parse_nodes(&self.node_command(port, &["CLUSTER", "NODES"]).await?)
    }

    /// The slot of `key` (`CLUSTER KEYSLOT`, asked of a live node).
    pub async fn slot_of(&self, key: &str) -> anyhow::Result<u16> {
        let port = *self.live_ports().first().context("no live node")?;
        let out = self
            .node_command(port, &["CLUSTER", "KEYSLOT", key])
            .await?;
        Ok(out.trim().parse()?)
    }

    /// The port of the primary serving `key`'s slot, as a live node sees it.
    pub async fn primary_of(&self, key: &str) -> anyhow::Result<u16> {
        let slot = self.slot_of(key).await?;
        let port = *self.live_ports().first().context("no live node")?;
        let view = self.view(port).await?;
        Ok(owner(&view, slot)
            .with_context(|| format!("no primary serves slot {slot}"))?
            .port)
    }

    /// Checks, on every live node, that the cluster is whole: `cluster_state:ok`, all
    /// slots served by primaries that are up, each replica in sync with its primary's
    /// link up, every node's role as every other node sees it what the node itself
    /// says, and (when `expect` is given) slot `.0` served by the node on port `.1`.
    async fn settled_once(&self, expect: Option<(u16, u16)>) -> anyhow::Result<Option<()>> {
        let live = self.live_ports();
        let mut views = Vec::with_capacity(live.len());
        for &port in &live {
            let info = self.node_command(port, &["CLUSTER", "INFO"]).await?;
            if info_field(&info, "cluster_state") != Some("ok")
                || info_field(&info, "cluster_slots_ok") != Some(&SLOTS.to_string())
            {
                return Ok(None);
            }
            let view = self.view(port).await?;
            let served: u32 = view
                .iter()
                .filter(|v| v.primary && !v.failed)
                .flat_map(|v| &v.slots)
                .map(|&(a, b)| u32::from(b - a) + 1)
                .sum();
            if served != SLOTS {
                return Ok(None);
            }
            if let Some((slot, primary)) = expect
                && owner(&view, slot).map(|v| v.port) != Some(primary)
            {
                return Ok(None);
            }
            let me = view.iter().find(|v| v.port == port).context("myself")?;
            if !me.primary {
                let replication = self.node_command(port, &["INFO", "replication"]).await?;
                if info_field(&replication, "master_link_status") != Some("up")
                    || info_field(&replication, "master_sync_in_progress") != Some("0")
                {
                    return Ok(None);
                }
            }
            views.push((port, view));
        }
        // A node's role change reaches the others by gossip, after its slots do.
        for (port, own) in &views {
            let me = own.iter().find(|v| v.port == *port).context("myself")?;
            for (_, other) in &views {
                let seen = other.iter().find(|v| v.id == me.id);
                if seen.is_none_or(|v| (v.primary, &v.primary_id) != (me.primary, &me.primary_id)) {
                    return Ok(None);
                }
            }
        }
        Ok(Some(()))
    }

    /// Waits until [`Self::settled_once`] holds.
    async fn settle(&self, expect: Option<(u16, u16)>) -> anyhow::Result<()> {
        poll("the cluster to settle", SETTLE, || {
            self.settled_once(expect)
        })
        .await
    }

    /// The primary of `key`'s slot and one of its replicas that is up.
    async fn primary_and_replica(&self, key: &str) -> anyhow::Result<(u16, NodeView, NodeView)> {
        let slot = self.slot_of(key).await?;
        let port = *self.live_ports().first().context("no live node")?;
        let view = self.view(port).await?;
        let primary = owner(&view, slot)
            .with_context(|| format!("no primary serves slot {slot}"))?
            .clone();
        let replica = view
            .iter()
            .find(|v| {
                v.primary_id.as_deref() == Some(&primary.id)
                    && !v.failed
                    && self.live_ports().contains(&v.port)
            })
            .with_context(|| format!("the primary of slot {slot} has no live replica"))?
            .clone();
        Ok((slot, primary, replica))
    }

    /// Moves `key`'s slot to a replica of its primary with `CLUSTER FAILOVER` (the
    /// replica first catches up, so no write is lost), and waits until every node sees
    /// the replica as the slot's primary and the old primary in sync as its replica.
    pub async fn failover_slot_of(&self, key: &str) -> anyhow::Result<Failover> {
        let (slot, primary, replica) = self.primary_and_replica(key).await?;
        let reply = self
            .node_command(replica.port, &["CLUSTER", "FAILOVER"])
            .await?;
        ensure!(reply.trim() == "OK", "CLUSTER FAILOVER: {reply}");
        self.settle(Some((slot, replica.port))).await?;
        Ok(Failover {
            slot,
            old_primary: primary.port,
            new_primary: replica.port,
        })
    }

    /// SIGKILLs the primary of `key`'s slot, once its replica has every write the
    /// primary has (this is about failover, not about losing unreplicated writes), and
    /// waits until the replica has been elected and every live node sees it serving
    /// the slot with `cluster_state:ok`.
    pub async fn kill_primary_of(&mut self, key: &str) -> anyhow::Result<Failover> {
        let (slot, primary, replica) = self.primary_and_replica(key).await?;
        let info = self
            .node_command(primary.port, &["INFO", "replication"])
            .await?;
        let written: u64 = info_field(&info, "master_repl_offset")
            .context("master_repl_offset")?
            .parse()?;
        poll("the replica to catch up", SETTLE, || async {
            let info = self
                .node_command(replica.port, &["INFO", "replication"])
                .await?;
            let applied: u64 = info_field(&info, "master_repl_offset")
                .context("master_repl_offset")?
                .parse()?;
            Ok((applied >= written).then_some(()))
        })
        .await?;
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.port == primary.port)
            .context("the primary is not one of the cluster's processes")?;
        let mut child = node
            .child
            .take()
            .context("the primary was killed already")?;
        child.kill().await.context("SIGKILL the primary")?;
        self.settle(Some((slot, replica.port))).await?;
        Ok(Failover {
            slot,
            old_primary: primary.port,
            new_primary: replica.port,
        })
    }

    /// Keys stored on the node on `port` (`DBSIZE`).
    pub async fn dbsize(&self, port: u16) -> anyhow::Result<u64> {
        Ok(self.node_command(port, &["DBSIZE"]).await?.trim().parse()?)
    }

    /// A string key's value.
    pub async fn get(&self, key: &str) -> Option<String> {
        self.client.get(key).await.expect("GET")
    }

    pub async fn set(&self, key: &str, value: &str) {
        let _: () = self
            .client
            .set(key, value, None, None, false)
            .await
            .expect("SET");
    }

    pub async fn del(&self, key: &str) {
        let _: i64 = self.client.del(key).await.expect("DEL");
    }

    pub async fn exists(&self, key: &str) -> bool {
        let n: i64 = self.client.exists(key).await.expect("EXISTS");
        n > 0
    }

    /// Sets fields of a hash.
    pub async fn hset(&self, key: &str, fields: &[(&str, &str)]) {
        let fields: Vec<(&str, &str)> = fields.to_vec();
        let _: () = self.client.hset(key, fields).await.expect("HSET");
    }

    /// A hash; empty when the key is gone.
    pub async fn hash(&self, key: &str) -> HashMap<String, String> {
        self.client.hgetall(key).await.expect("HGETALL")
    }

    /// FLUSHALL on every primary: the cluster as after a restart that lost its data.
    pub async fn wipe(&self) {
        self.client.flushall_cluster().await.expect("FLUSHALL");
    }

    /// Publishes `message` (JSON) on `channel`. Redis forwards a `PUBLISH` to every
    /// node, but the count it returns is of the subscribers on the node it was sent to
    /// only (fred picks that node), so it is returned here for display, not for checks.
    pub async fn publish(&self, channel: &str, message: &serde_json::Value) -> i64 {
        self.client
            .publish(channel, message.to_string())
            .await
            .expect("PUBLISH")
    }

    /// Publishes `message` (JSON) on the shard channel `channel`; returns how many
    /// subscribers of the channel's shard it reached.
    pub async fn spublish(&self, channel: &str, message: &serde_json::Value) -> i64 {
        self.client
            .spublish(channel, message.to_string())
            .await
            .expect("SPUBLISH")
    }

    /// Subscribers of one plain pub/sub channel, over every live node (`PUBSUB NUMSUB`
    /// counts one node's clients only).
    pub async fn subscribers(&self, channel: &str) -> i64 {
        self.count_over_nodes("NUMSUB", channel).await
    }

    /// Subscribers of one sharded channel, over every live node (a slot's subscribers
    /// are on its primary; after a failover, on the new one).
    pub async fn shard_subscribers(&self, channel: &str) -> i64 {
        self.count_over_nodes("SHARDNUMSUB", channel).await
    }

    /// `PUBSUB {command} channel` on every live node, summed.
    async fn count_over_nodes(&self, command: &str, channel: &str) -> i64 {
        let mut total = 0;
        for port in self.live_ports() {
            let out = self
                .node_command(port, &["PUBSUB", command, channel])
                .await
                .expect("PUBSUB");
            // Two lines: the channel, its count.
            total += out
                .lines()
                .nth(1)
                .and_then(|n| n.trim().parse::<i64>().ok())
                .expect("a PUBSUB count");
        }
        total
    }

    /// Waits until a key exists (or panics).
    pub async fn wait_key(&self, key: &str) {
        crate::process::eventually(key, crate::WAIT, || async {
            let n: i64 = self.client.exists(key).await.ok()?;
            (n > 0).then_some(())
        })
        .await
    }
}

/// `redis-cluster://127.0.0.1:p1?node=127.0.0.1:p2&node=...`
fn cluster_url(ports: &[u16]) -> String {
    let mut url = format!("redis-cluster://127.0.0.1:{}", ports[0]);
    for (i, port) in ports[1..].iter().enumerate() {
        url.push(if i == 0 { '?' } else { '&' });
        url.push_str(&format!("node=127.0.0.1:{port}"));
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_lists_every_node() {
        assert_eq!(
            cluster_url(&[1, 2, 3]),
            "redis-cluster://127.0.0.1:1?node=127.0.0.1:2&node=127.0.0.1:3"
        );
    }
}
