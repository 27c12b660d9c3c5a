//! Starting `redis-server` processes on loopback: a free port, the binary, and the
//! wait until the process itself (not another on a raced port) answers. Shared by the
//! single server, the cluster and the Sentinel deployment.

use std::path::PathBuf;

use anyhow::Context;

/// The flags every test server starts with: `port` on loopback, no persistence, its
/// files in `dir`.
pub fn server_args(port: u16, dir: &std::path::Path) -> Vec<String> {
    let mut args: Vec<String> = [
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(dir.display().to_string());
    args
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The `redis-server` binary (also `redis-sentinel`'s, run with `--sentinel`).
pub fn redis_binary() -> PathBuf {
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

/// Waits until the server answers on its port; false if it exited (port taken). Another
/// process that took the port between `free_port` and the server's bind accepts
/// connections too, even another test's redis-server, so only a server that reports the
/// child's process id counts.
pub async fn wait_listening(child: &mut tokio::process::Child, port: u16) -> anyhow::Result<bool> {
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
