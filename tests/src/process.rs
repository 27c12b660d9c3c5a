//! Child processes of a test: found next to the test binary, started with piped
//! stdout, their `LISTENING ...` line read, killed on drop.

use std::path::PathBuf;
use std::process::Stdio;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};

/// Path of a workspace binary. `VNC_BIN_DIR` wins; else the profile folder this test
/// binary lives in (`target/debug/deps/..`). The test command builds them first.
pub fn bin_path(name: &str) -> PathBuf {
    let dir = std::env::var_os("VNC_BIN_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            let exe = std::env::current_exe().ok()?;
            Some(exe.parent()?.parent()?.to_path_buf())
        })
        .unwrap_or_else(|| PathBuf::from("target/debug"));
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first (`cargo build --workspace --bins`, which the README's test command does)",
        path.display()
    );
    path
}

/// A running child process, killed on drop.
pub struct Proc {
    pub child: Child,
    pub stdout: BufReader<ChildStdout>,
    pub name: String,
}

impl Proc {
    /// Starts `cmd` (stdout piped, stderr to `stderr_to` or inherited) and waits for
    /// its `LISTENING ...` line; returns the process and the rest of that line.
    pub async fn start(mut cmd: Command, name: &str) -> anyhow::Result<(Proc, String)> {
        cmd.stdout(Stdio::piped())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let mut child = cmd.spawn().with_context(|| format!("starting {name}"))?;
        let stdout = child.stdout.take().context("stdout")?;
        let mut proc = Proc {
            child,
            stdout: BufReader::new(stdout),
            name: name.to_owned(),
        };
        let mut line = String::new();
        loop {
            line.clear();
            let n = tokio::time::timeout(crate::WAIT, proc.stdout.read_line(&mut line))
                .await
                .with_context(|| format!("{name} did not report LISTENING in time"))??;
            if n == 0 {
                bail!(
                    "{name} exited before listening: {:?}",
                    proc.child.try_wait()
                );
            }
            if let Some(rest) = line.trim().strip_prefix("LISTENING ") {
                return Ok((proc, rest.to_owned()));
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// Sends a signal by name (`TERM`, `KILL`, `STOP`, `CONT`).
    pub fn signal(&self, sig: &str) {
        let status = std::process::Command::new("kill")
            .args([format!("-{sig}"), self.pid().to_string()])
            .status();
        assert!(
            status.is_ok_and(|s| s.success()),
            "kill -{sig} {}",
            self.name
        );
    }

    /// Resident set size in KiB, from /proc.
    pub fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// Waits (bounded) for the process to exit; returns its exit code.
    pub async fn wait_exit(&mut self, within: std::time::Duration) -> anyhow::Result<Option<i32>> {
        let status = tokio::time::timeout(within, self.child.wait())
            .await
            .with_context(|| format!("{} did not exit in time", self.name))??;
        Ok(status.code())
    }
}

/// Polls `check` until it returns `Some` or the deadline passes.
pub async fn eventually<T, F, Fut>(what: &str, within: std::time::Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The address after `name` (`public=`, `api=`, ...) in a `LISTENING ...` line.
pub fn listening_field(line: &str, name: &str) -> anyhow::Result<std::net::SocketAddr> {
    line.split_whitespace()
        .find_map(|f| f.strip_prefix(name))
        .with_context(|| format!("no {name} in LISTENING line {line:?}"))?
        .parse()
        .context("address")
}
