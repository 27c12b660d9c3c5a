//! A Redis Sentinel deployment per test, on free loopback ports: a primary, one replica
//! (`--replicaof`) and three sentinels (quorum 2) watching them as service
//! [`SERVICE`]. Tests point both daemons at [`Sentinel::url`], kill the primary and
//! wait until the sentinels have promoted the replica. Every process is killed on drop.
//! Without `redis-server` (which runs the sentinels too, with `--sentinel`) it panics,
//! as `redis.rs` does: a test that needs it fails, it never skips.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use fred::prelude::*;
use fred::types::CustomCommand;
use tokio::process::{Child, Command};

use crate::process::eventually;
use crate::redis_process::{free_port, redis_binary, server_args};

/// The name the sentinels know the primary by (`sentinelServiceName`).
pub const SERVICE: &str = "vnc";

/// The data nodes' password (`requirepass`, and `masterauth` for the replica, which
/// becomes a primary's replica again after a failover). The sentinels have none, as
/// in a deployment that keeps them on a private network: a client must not send them
/// the data nodes' password.
const PASSWORD: &str = "sentinel-test-secret";

/// How long a primary may not answer before a sentinel thinks it down. Small, so a
/// failover takes a few seconds (Sentinel's default is 30 s).
const DOWN_AFTER: Duration = Duration::from_millis(1000);

/// Sentinel's `failover-timeout`: how long one failover attempt may take before
/// another sentinel tries (default 3 min).
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(5);

/// Bound on a whole failover, from the kill to the sentinels naming the new primary:
/// `DOWN_AFTER`, the vote, the promotion and the sentinels' next `INFO` of the
/// replica, with room for a first vote that fails and a second one after
/// `FAILOVER_TIMEOUT`. A failure bound, not a speed the tests assert.
pub const FAILOVER_WITHIN: Duration = Duration::from_secs(30);

/// One redis-server (primary, replica or sentinel).
struct Node {
    child: Child,
    port: u16,
}

/// A primary, its replica and three sentinels, killed on drop.
pub struct Sentinel {
    /// The two data nodes, by port; the killed one is removed.
    data: HashMap<u16, Node>,
    sentinels: Vec<Node>,
    _dir: tempfile::TempDir,
}

/// Starts `redis-server` with `args` on a free port (trying a few ports: another
/// process may take one between `free_port` and the bind); `args` gets the port.
async fn start_node(what: &str, to: To, args: impl Fn(u16) -> Vec<String>) -> anyhow::Result<Node> {
    for _ in 0..5 {
        let port = free_port();
        let mut child = Command::new(redis_binary())
            .args(args(port))
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting the {what}"))?;
        if wait_listening(&mut child, port, to).await? {
            return Ok(Node { child, port });
        }
    }
    bail!("the {what} would not start")
}

/// Waits until the server answers on its port; false if it exited (port taken). Only
/// a server that reports the child's process id counts: another process (another
/// test's redis-server) may have taken the port.
async fn wait_listening(child: &mut Child, port: u16, to: To) -> anyhow::Result<bool> {
    let pid = child.id().context("redis-server has no pid")?;
    let expected = format!("\r\nprocess_id:{pid}\r\n");
    tokio::time::timeout(crate::WAIT, async {
        loop {
            if child.try_wait()?.is_some() {
                return anyhow::Ok(false);
            }
            let info = command::<String>((port, to), "INFO", &["server"]).await;
            if info.is_ok_and(|info| info.contains(&expected)) {
                return Ok(true);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await?
}

/// A data node's flags: no persistence, and a full sync that starts at once (Redis 7
/// waits 5 s by default for more replicas to share a diskless sync).
fn data_args(port: u16, dir: &Path, extra: &[String]) -> Vec<String> {
    let mut args = server_args(port, dir);
    for flag in [
        "--repl-diskless-sync-delay",
        "0",
        "--requirepass",
        PASSWORD,
        "--masterauth",
        PASSWORD,
    ] {
        args.push(flag.to_owned());
    }
    args.extend_from_slice(extra);
    args
}

/// Which kind of node a command goes to: data nodes want the password.
#[derive(Clone, Copy)]
enum To {
    Data,
    Sentinel,
}

/// A client of one node, connected.
async fn client_of(port: u16, to: To) -> anyhow::Result<Client> {
    let auth = match to {
        To::Data => format!(":{PASSWORD}@"),
        To::Sentinel => String::new(),
    };
    let config = Config::from_url(&format!("redis://{auth}127.0.0.1:{port}"))?;
    let client = Builder::from_config(config)
        .with_connection_config(|c| c.connection_timeout = Duration::from_secs(1))
        .with_performance_config(|p| p.default_command_timeout = Duration::from_secs(2))
        .build()?;
    client.init().await?;
    Ok(client)
}

/// One command to the server on `port`, on a connection of its own.
async fn command<R: FromValue>(
    (port, to): (u16, To),
    name: &'static str,
    args: &[&str],
) -> anyhow::Result<R> {
    let client = client_of(port, to).await?;
    let reply = client
        .custom(CustomCommand::new_static(name, None, false), args.to_vec())
        .await;
    let _ = client.quit().await;
    Ok(reply?)
}

/// `SENTINEL MASTER` of the service as field → value.
async fn master_state(sentinel: u16) -> anyhow::Result<HashMap<String, String>> {
    let flat: Vec<String> =
        command((sentinel, To::Sentinel), "SENTINEL", &["MASTER", SERVICE]).await?;
    Ok(flat
        .chunks(2)
        .filter_map(|kv| match kv {
            [k, v] => Some((k.clone(), v.clone())),
            _ => None,
        })
        .collect())
}

/// The primary's port as one sentinel names it.
async fn named_primary(sentinel: u16) -> anyhow::Result<u16> {
    let addr: Vec<String> = command(
        (sentinel, To::Sentinel),
        "SENTINEL",
        &["GET-MASTER-ADDR-BY-NAME", SERVICE],
    )
    .await?;
    addr.get(1).context("no address")?.parse().context("a port")
}

/// The `role:` line of a data node's `INFO replication`.
async fn role(port: u16) -> Option<String> {
    let info: String = command((port, To::Data), "INFO", &["replication"])
        .await
        .ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("role:"))
        .map(|r| r.trim().to_owned())
}

impl Sentinel {
    /// Starts the primary, its replica (in sync before the sentinels start) and three
    /// sentinels, and waits until every sentinel knows the replica and the two others
    /// (a failover needs both).
    pub async fn start() -> anyhow::Result<Sentinel> {
        let dir = tempfile::tempdir()?;
        let primary_dir = dir.path().join("primary");
        let replica_dir = dir.path().join("replica");
        std::fs::create_dir_all(&primary_dir)?;
        std::fs::create_dir_all(&replica_dir)?;
        let primary = start_node("primary", To::Data, |port| {
            data_args(port, &primary_dir, &[])
        })
        .await?;
        let primary_port = primary.port;
        let replica = start_node("replica", To::Data, |port| {
            let of = [
                "--replicaof".into(),
                "127.0.0.1".into(),
                primary_port.to_string(),
            ];
            data_args(port, &replica_dir, &of)
        })
        .await?;
        let replica_port = replica.port;
        tokio::time::timeout(crate::WAIT, async {
            loop {
                let info: String = command((primary_port, To::Data), "INFO", &["replication"])
                    .await
                    .unwrap_or_default();
                if info.contains(&format!("port={replica_port},state=online")) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .context("the replica did not sync with the primary")?;

        let mut sentinels = Vec::new();
        for i in 0..3 {
            // Each sentinel rewrites its own config file as it learns the deployment.
            let conf = dir.path().join(format!("sentinel-{i}.conf"));
            let sentinel_dir = dir.path().join(format!("sentinel-{i}"));
            std::fs::create_dir_all(&sentinel_dir)?;
            let node = start_node("sentinel", To::Sentinel, |port| {
                let text = format!(
                    "port {port}\nbind 127.0.0.1\ndir {}\n\
                     sentinel monitor {SERVICE} 127.0.0.1 {primary_port} 2\n\
                     sentinel auth-pass {SERVICE} {PASSWORD}\n\
                     sentinel down-after-milliseconds {SERVICE} {}\n\
                     sentinel failover-timeout {SERVICE} {}\n",
                    sentinel_dir.display(),
                    DOWN_AFTER.as_millis(),
                    FAILOVER_TIMEOUT.as_millis(),
                );
                std::fs::write(&conf, text).expect("write the sentinel config");
                vec![conf.display().to_string(), "--sentinel".into()]
            })
            .await?;
            sentinels.push(node);
        }
        let ports: Vec<u16> = sentinels.iter().map(|s| s.port).collect();
        // Sentinels find the replica in the primary's INFO and each other on its
        // hello channel (every 2 s).
        eventually(
            "the sentinels to know the replica and each other",
            Duration::from_secs(30),
            || async {
                for &port in &ports {
                    let state = master_state(port).await.ok()?;
                    let ok = state.get("num-slaves").map(String::as_str) == Some("1")
                        && state.get("num-other-sentinels").map(String::as_str) == Some("2");
                    if !ok {
                        return None;
                    }
                }
                Some(())
            },
        )
        .await;
        Ok(Sentinel {
            data: HashMap::from([(primary_port, primary), (replica_port, replica)]),
            sentinels,
            _dir: dir,
        })
    }

    /// The URL both daemons take: the data nodes' password, the first sentinel as
    /// host, the others as `node`.
    pub fn url(&self) -> String {
        let mut url = format!(
            "redis-sentinel://:{PASSWORD}@127.0.0.1:{}?",
            self.sentinels[0].port
        );
        for s in &self.sentinels[1..] {
            url.push_str(&format!("node=127.0.0.1:{}&", s.port));
        }
        url.push_str(&format!("sentinelServiceName={SERVICE}"));
        url
    }

    /// The primary's port as the first sentinel that answers names it.
    pub async fn primary_port(&self) -> anyhow::Result<u16> {
        for s in &self.sentinels {
            if let Ok(port) = named_primary(s.port).await {
                return Ok(port);
            }
        }
        bail!("no sentinel names a primary")
    }

    /// Waits until the replica has every write the primary has acknowledged so far
    /// (`WAIT 1`), so a kill right after loses nothing.
    pub async fn sync_replica(&self) -> anyhow::Result<()> {
        let primary = self.primary_port().await?;
        let acked: i64 = command((primary, To::Data), "WAIT", &["1", "5000"]).await?;
        anyhow::ensure!(acked == 1, "the replica did not acknowledge the writes");
        Ok(())
    }

    /// SIGKILLs the current primary; its port.
    pub async fn kill_primary(&mut self) -> anyhow::Result<u16> {
        let port = self.primary_port().await?;
        let mut node = self
            .data
            .remove(&port)
            .context("the primary is not one of ours")?;
        node.child.kill().await?;
        Ok(port)
    }

    /// Waits (up to [`FAILOVER_WITHIN`]) until every sentinel names another primary
    /// than `old` and that node says it is the primary; its port.
    pub async fn wait_failover(&self, old: u16) -> u16 {
        let ports: Vec<u16> = self.sentinels.iter().map(|s| s.port).collect();
        eventually(
            "the sentinels to promote the replica",
            FAILOVER_WITHIN,
            || async {
                let mut named = Vec::new();
                for &port in &ports {
                    named.push(named_primary(port).await.ok()?);
                }
                let new = named[0];
                let agreed = new != old && named.iter().all(|&p| p == new);
                (agreed && role(new).await.as_deref() == Some("master")).then_some(new)
            },
        )
        .await
    }

    /// Channels (`PUBSUB CHANNELS`) and shard channels (`PUBSUB SHARDCHANNELS`) with
    /// a subscriber on the current primary, sorted; pub/sub is not replicated, so each
    /// client must subscribe again on a new primary.
    pub async fn subscriptions(&self) -> anyhow::Result<(Vec<String>, Vec<String>)> {
        let port = self.primary_port().await?;
        let mut channels: Vec<String> = command((port, To::Data), "PUBSUB", &["CHANNELS"]).await?;
        let mut shards: Vec<String> =
            command((port, To::Data), "PUBSUB", &["SHARDCHANNELS"]).await?;
        channels.sort();
        shards.sort();
        Ok((channels, shards))
    }
}
