//! HAProxy in front of a relay, as an operator runs it: its own process on loopback
//! ports, with a configuration the test writes.

use std::net::SocketAddr;
use std::process::Stdio;

use anyhow::Context;
use tokio::process::{Child, Command};

use crate::desktop::{find_program, required};
use crate::redis::free_port;

/// Whether `haproxy` is here. Under `CI=true` its absence fails the test; elsewhere the
/// test skips loudly.
pub fn haproxy_available() -> bool {
    let missing: Vec<String> = match find_program("haproxy") {
        Some(_) => vec![],
        None => vec!["haproxy (Debian package haproxy)".into()],
    };
    required("HAProxy", &missing)
}

/// How HAProxy hands a connection on to the relay.
pub enum Mode {
    /// TCP, with a PROXY protocol v2 header first (`send-proxy-v2`).
    ProxyV2,
    /// HTTP, appending the peer to `X-Forwarded-For` (`option forwardfor`).
    ForwardFor,
}

/// A running HAProxy, killed on drop.
pub struct HaProxy {
    /// Where browsers connect.
    pub front: SocketAddr,
    _child: Child,
    _dir: tempfile::TempDir,
}

impl HaProxy {
    /// HAProxy listening on a free loopback port, forwarding to `relay` in `mode`.
    pub async fn start(relay: SocketAddr, mode: Mode) -> anyhow::Result<HaProxy> {
        // Another process may take the free port before HAProxy binds it: then
        // HAProxy exits, and another port is tried.
        for _ in 0..3 {
            if let Some(haproxy) = Self::start_on(free_port(), relay, &mode).await? {
                return Ok(haproxy);
            }
        }
        anyhow::bail!("HAProxy did not start listening")
    }

    async fn start_on(
        port: u16,
        relay: SocketAddr,
        mode: &Mode,
    ) -> anyhow::Result<Option<HaProxy>> {
        let front: SocketAddr = ([127, 0, 0, 1], port).into();
        let (mode, server) = match mode {
            Mode::ProxyV2 => ("tcp", "send-proxy-v2"),
            Mode::ForwardFor => ("http\n    option forwardfor", ""),
        };
        let config = format!(
            "global\n    maxconn 1000\n\
             defaults\n    mode {mode}\n    timeout connect 5s\n    timeout client 60s\n    timeout server 60s\n    timeout tunnel 60s\n\
             frontend browsers\n    bind {front}\n    default_backend relays\n\
             backend relays\n    server relay {relay} {server}\n"
        );
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, config)?;
        let check = Command::new("haproxy")
            .arg("-c")
            .arg("-f")
            .arg(&path)
            .output()
            .await
            .context("running haproxy -c")?;
        anyhow::ensure!(
            check.status.success(),
            "haproxy refused its configuration: {}",
            String::from_utf8_lossy(&check.stdout)
        );
        let mut child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting haproxy")?;
        let listening = tokio::time::timeout(crate::WAIT, async {
            loop {
                if child.try_wait()?.is_some() {
                    return anyhow::Ok(false);
                }
                if tokio::net::TcpStream::connect(front).await.is_ok() {
                    return Ok(child.try_wait()?.is_none());
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        })
        .await
        .context("HAProxy did not listen in time")??;
        Ok(listening.then_some(HaProxy {
            front,
            _child: child,
            _dir: dir,
        }))
    }
}
