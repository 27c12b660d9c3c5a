//! The `rfb-fixture` binary (a small real RFB server) with its JSON-lines log.

use std::net::SocketAddr;
use std::path::PathBuf;

use tokio::process::Command;

use crate::process::{Proc, bin_path, eventually};

pub struct Fixture {
    pub proc: Proc,
    pub addr: SocketAddr,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Fixture {
    /// Starts the fixture with extra flags (`--auth vnc`, `--flood`, ...).
    pub async fn start(extra: &[&str]) -> anyhow::Result<Fixture> {
        let dir = tempfile::tempdir()?;
        let log = dir.path().join("fixture.log");
        let mut cmd = Command::new(bin_path("rfb-fixture"));
        cmd.args(["--listen", "127.0.0.1:0"])
            .arg("--log")
            .arg(&log)
            .args(extra);
        let (proc, line) = Proc::start(cmd, "rfb-fixture").await?;
        Ok(Fixture {
            proc,
            addr: line.trim().parse()?,
            log,
            _dir: dir,
        })
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Every log line so far, parsed.
    pub fn events(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Bytes the fixture's flood has written so far (`--flood`).
    pub fn flood_bytes(&self) -> Option<u64> {
        self.events()
            .iter()
            .rev()
            .find(|e| e["event"] == "flood_progress")
            .and_then(|e| e["bytes"].as_u64())
    }

    /// Waits until the flood stops growing (its socket buffers are full: the reader
    /// stopped reading), checks it stays stalled, and returns the bytes written.
    pub async fn wait_flood_stalled(&self) -> u64 {
        let stalled_at = eventually(
            "the flood to stall",
            std::time::Duration::from_secs(20),
            || async {
                let a = self.flood_bytes()?;
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                let b = self.flood_bytes()?;
                (a == b && a > 0).then_some(a)
            },
        )
        .await;
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        assert_eq!(
            self.flood_bytes(),
            Some(stalled_at),
            "the fixture's writes must block"
        );
        stalled_at
    }

    /// Waits until a log line satisfies `pred`; returns it.
    pub async fn wait_event(
        &self,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        eventually(what, crate::WAIT, || async {
            self.events().into_iter().find(|e| pred(e))
        })
        .await
    }
}
