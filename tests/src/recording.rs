//! Session recordings as docs/recording.md describes them, read independently of the
//! relay's own parser, and `vnc-relay replay` as a process.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail, ensure};
use tokio::process::Command;

use crate::process::{Proc, bin_path, listening_field};

/// The documented first line.
pub const MAGIC: &[u8] = b"VNC-RELAY-RECORDING 1\n";

/// One recording file, read.
#[derive(Debug)]
pub struct RecordingFile {
    pub path: PathBuf,
    pub meta: serde_json::Value,
    /// `(ms since start, bytes)` of each data record.
    pub records: Vec<(u32, Vec<u8>)>,
    /// The end record's JSON, if the file has one.
    pub end: Option<serde_json::Value>,
    pub raw: Vec<u8>,
}

impl RecordingFile {
    pub fn read(path: &Path) -> anyhow::Result<RecordingFile> {
        let raw = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let rest = raw.strip_prefix(MAGIC).context("no magic line")?;
        let nl = rest
            .iter()
            .position(|&b| b == b'\n')
            .context("no metadata line")?;
        let meta = serde_json::from_slice(&rest[..nl]).context("metadata")?;
        let mut at = &rest[nl + 1..];
        let (mut records, mut end) = (Vec::new(), None);
        while !at.is_empty() {
            ensure!(end.is_none(), "bytes after the end record");
            ensure!(at.len() >= 8, "cut inside a record header");
            let ms = u32::from_be_bytes(at[..4].try_into()?);
            let len = u32::from_be_bytes(at[4..8].try_into()?);
            let n = (len & 0x7fff_ffff) as usize;
            ensure!(at.len() >= 8 + n, "cut inside a record");
            let payload = &at[8..8 + n];
            if len & 0x8000_0000 == 0 {
                records.push((ms, payload.to_vec()));
            } else {
                end = Some(serde_json::from_slice(payload).context("end record")?);
            }
            at = &at[8 + n..];
        }
        Ok(RecordingFile {
            path: path.to_owned(),
            meta,
            records,
            end,
            raw,
        })
    }

    /// The recorded bytes, in order.
    pub fn data(&self) -> Vec<u8> {
        self.records
            .iter()
            .flat_map(|(_, b)| b.iter().copied())
            .collect()
    }

    /// The record holding byte `offset` of the data, and the time of the record
    /// before it: the pause before that byte was sent.
    pub fn pause_before(&self, offset: usize) -> Option<u32> {
        let mut seen = 0;
        for (i, (ms, bytes)) in self.records.iter().enumerate() {
            if seen + bytes.len() > offset {
                return Some(ms.saturating_sub(self.records.get(i.checked_sub(1)?)?.0));
            }
            seen += bytes.len();
        }
        None
    }
}

/// Finished recordings in `dir` (`*.vncrec`), oldest first; and whether any file is
/// still being written.
pub fn finished(dir: &Path) -> (Vec<PathBuf>, bool) {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| Some(e.ok()?.path())).collect())
        .unwrap_or_default();
    names.sort();
    let writing = names.iter().any(|p| p.to_string_lossy().ends_with(".part"));
    names.retain(|p| p.extension().is_some_and(|e| e == "vncrec"));
    (names, writing)
}

/// `vnc-relay replay FILE --listen 127.0.0.1:0`.
pub struct ReplayProcess {
    pub proc: Proc,
    pub addr: SocketAddr,
}

impl ReplayProcess {
    pub async fn start(file: &Path, extra: &[&str]) -> anyhow::Result<ReplayProcess> {
        let mut cmd = Command::new(bin_path("vnc-relay"));
        cmd.arg("replay")
            .arg(file)
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .env("RUST_LOG", "warn");
        let (proc, line) = Proc::start(cmd, "vnc-relay replay").await?;
        Ok(ReplayProcess {
            addr: listening_field(&line, "public=")?,
            proc,
        })
    }

    pub fn url(&self) -> String {
        format!("ws://{}/websockify", self.addr)
    }
}

/// What `vnc-relay replay FILE` prints and its exit status, for files it refuses.
pub fn replay_refusal(file: &Path) -> anyhow::Result<String> {
    let out = std::process::Command::new(bin_path("vnc-relay"))
        .arg("replay")
        .arg(file)
        .args(["--listen", "127.0.0.1:0"])
        .env("RUST_BACKTRACE", "0")
        .output()?;
    if out.status.success() {
        bail!("replay accepted {}", file.display());
    }
    Ok(String::from_utf8_lossy(&out.stderr).into_owned())
}
