//! A real Redis Cluster per test: three primaries (no replicas) of `redis-server
//! --cluster-enabled yes` on free loopback ports, the 16384 slots split between them,
//! and a cluster client for it.

use anyhow::{Context, bail};
use fred::prelude::*;
use fred::types::CustomCommand;
use tokio::process::Command;

use crate::process::eventually;
use crate::redis::free_port;

/// Primaries in the cluster.
const NODES: usize = 3;
/// Hash slots of Redis Cluster.
const SLOTS: usize = 16384;

/// A running cluster; every node is killed on drop.
pub struct RedisCluster {
    nodes: Vec<Node>,
    /// Connected to the whole cluster.
    pub client: Client,
    _dir: tempfile::TempDir,
}

struct Node {
    _child: tokio::process::Child,
    port: u16,
    /// The cluster bus port (not `port` + 10000: that may be past 65535).
    bus: u16,
    /// Connected to this node alone.
    client: Client,
}

impl RedisCluster {
    pub async fn start() -> anyhow::Result<RedisCluster> {
        let dir = tempfile::tempdir()?;
        let mut nodes = Vec::with_capacity(NODES);
        for _ in 0..NODES {
            nodes.push(Node::start(dir.path()).await?);
        }
        for (i, node) in nodes.iter().enumerate() {
            let (first, last) = (i * SLOTS / NODES, (i + 1) * SLOTS / NODES - 1);
            node.command(
                "CLUSTER",
                vec!["ADDSLOTSRANGE".into(), first.to_string(), last.to_string()],
            )
            .await?;
        }
        for node in &nodes[1..] {
            nodes[0]
                .command(
                    "CLUSTER",
                    vec![
                        "MEET".into(),
                        "127.0.0.1".into(),
                        node.port.to_string(),
                        node.bus.to_string(),
                    ],
                )
                .await?;
        }
        for node in &nodes {
            let client = node.client.clone();
            eventually("the cluster to form", crate::WAIT, || {
                let client = client.clone();
                async move {
                    let info: String = client
                        .custom(
                            CustomCommand::new_static("CLUSTER", None, false),
                            vec!["INFO"],
                        )
                        .await
                        .ok()?;
                    (info.contains("cluster_state:ok")
                        && info.contains(&format!("cluster_known_nodes:{NODES}")))
                    .then_some(())
                }
            })
            .await;
        }
        let config = Config::from_url(&format!("redis-cluster://127.0.0.1:{}", nodes[0].port))?;
        let client = Builder::from_config(config).build()?;
        client.init().await?;
        Ok(RedisCluster {
            nodes,
            client,
            _dir: dir,
        })
    }

    /// The cluster's URL, as the daemons take it.
    pub fn url(&self) -> String {
        format!("redis-cluster://127.0.0.1:{}", self.nodes[0].port)
    }

    /// How many keys each primary holds (`DBSIZE`).
    pub async fn keys_per_node(&self) -> anyhow::Result<Vec<u64>> {
        let mut sizes = Vec::with_capacity(self.nodes.len());
        for node in &self.nodes {
            sizes.push(
                node.client
                    .custom(
                        CustomCommand::new_static("DBSIZE", None, false),
                        Vec::<String>::new(),
                    )
                    .await?,
            );
        }
        Ok(sizes)
    }
}

impl Node {
    async fn start(dir: &std::path::Path) -> anyhow::Result<Node> {
        for _ in 0..5 {
            let (port, bus) = (free_port(), free_port());
            if port == bus {
                continue;
            }
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args([
                    "--cluster-enabled",
                    "yes",
                    "--cluster-port",
                    &bus.to_string(),
                ])
                .arg("--cluster-config-file")
                .arg(dir.join(format!("nodes-{port}.conf")))
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(dir)
                .stdout(std::process::Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .context("starting redis-server (apt-get install redis-server)")?;
            let config = Config::from_url(&format!("redis://127.0.0.1:{port}"))?;
            let client = Builder::from_config(config).build()?;
            let connected = tokio::time::timeout(crate::WAIT, async {
                loop {
                    if client.init().await.is_ok() {
                        return;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
            })
            .await;
            if connected.is_ok() {
                return Ok(Node {
                    _child: child,
                    port,
                    bus,
                    client,
                });
            }
        }
        bail!("a cluster node would not start")
    }

    async fn command(&self, cmd: &'static str, args: Vec<String>) -> anyhow::Result<()> {
        let _: Value = self
            .client
            .custom(CustomCommand::new_static(cmd, None, false), args)
            .await
            .with_context(|| format!("{cmd} on node {}", self.port))?;
        Ok(())
    }
}
