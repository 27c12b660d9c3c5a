//! A real `redis-server` per test on a free loopback port, and a client for it.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use anyhow::{Context, bail};
use fred::prelude::*;
use tokio::process::Command;

use crate::process::eventually;

fn spawn(port: u16, dir: &std::path::Path) -> anyhow::Result<tokio::process::Child> {
    Command::new(redis_binary())
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(dir)
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting redis-server")
}

/// Waits until the server answers on its port; false if it exited (port taken). Another
/// process that took the port between `free_port` and the server's bind accepts
/// connections too, even another test's redis-server, so only a server that reports the
/// child's process id counts.
async fn wait_listening(child: &mut tokio::process::Child, port: u16) -> anyhow::Result<bool> {
    let pid = child.id().context("redis-server has no pid")?;
    tokio::time::timeout(crate::WAIT, async {
        loop {
            if child.try_wait()?.is_some() {
                return anyhow::Ok(false);
            }
            if served_by(port, pid).await {
                return Ok(true);
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await?
}

/// Whether the Redis server on `port` is process `pid` (`INFO server`'s `process_id`).
async fn served_by(port: u16, pid: u32) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let expected = format!("\r\nprocess_id:{pid}\r\n");
    let exchange = async {
        let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        conn.write_all(b"INFO server\r\n").await?;
        let mut reply = Vec::new();
        // `process_id` comes before `run_id` in the section.
        while !reply.windows(7).any(|w| w == b"run_id:") {
            if conn.read_buf(&mut reply).await? == 0 {
                break;
            }
        }
        std::io::Result::Ok(String::from_utf8_lossy(&reply).contains(&expected))
    };
    matches!(
        tokio::time::timeout(std::time::Duration::from_millis(200), exchange).await,
        Ok(Ok(true))
    )
}

async fn connect(port: u16) -> anyhow::Result<Client> {
    let config = Config::from_url(&format!("redis://127.0.0.1:{port}"))?;
    let client = Builder::from_config(config).build()?;
    client.init().await?;
    Ok(client)
}

/// A running redis-server, killed on drop.
pub struct RedisServer {
    child: tokio::process::Child,
    pub port: u16,
    pub client: Client,
    _dir: tempfile::TempDir,
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

pub(crate) fn redis_binary() -> PathBuf {
    for dir in ["/usr/bin", "/usr/local/bin", "/usr/sbin"] {
        let p = PathBuf::from(dir).join("redis-server");
        if p.exists() {
            return p;
        }
    }
    panic!(
        "redis-server is not installed: `apt-get install redis-server` (scripts/test-deps does)"
    );
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
            child,
            port,
            client: connect(port).await?,
            _dir: dir,
        }))
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
        let _ = self.child.kill().await;
    }

    /// Starts the server again on the same port, with the data `stop` kept (if any).
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        let mut child = spawn(self.port, self._dir.path())?;
        anyhow::ensure!(
            wait_listening(&mut child, self.port).await?,
            "redis-server would not start again on port {}",
            self.port
        );
        self.child = child;
        self.client = connect(self.port).await?;
        Ok(())
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
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
        let counts: Vec<Value> = self
            .client
            .pubsub_numsub(channel)
            .await
            .expect("PUBSUB NUMSUB");
        counts.get(1).and_then(Value::as_i64).unwrap_or(0)
    }

    /// Publishes a room event the way control does.
    pub async fn publish_room(&self, cid: &str, kind: &str) {
        let event = serde_json::json!({ "type": kind, "cid": cid, "tenant": "t1", "at": 0 });
        let _: i64 = self
            .client
            .publish(format!("vnc:room:{cid}"), event.to_string())
            .await
            .expect("PUBLISH");
    }

    /// FLUSHALL: Redis as after a restart that lost its data.
    pub async fn wipe(&self) {
        let _: () = self.client.flushall(false).await.expect("FLUSHALL");
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
            .smembers(format!("vnc:sessions:{cid}"))
            .await
            .expect("SMEMBERS");
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

    /// Pub/sub channels with at least one subscriber, matching `pattern`.
    pub async fn channels(&self, pattern: &str) -> Vec<String> {
        let mut channels: Vec<String> = self
            .client
            .pubsub_channels(pattern)
            .await
            .expect("PUBSUB CHANNELS");
        channels.sort();
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
