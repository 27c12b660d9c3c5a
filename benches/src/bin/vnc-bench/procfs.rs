//! The numbers read from `/proc`: a process's resident set size, now and at its peak
//! (the per-session memory figure of `conns --pid`, the servers of `mixed`), its CPU
//! time, and our own open-file limit (each session is one fd).

use anyhow::{Context, Result, anyhow};

/// Clock ticks per second of `/proc/PID/stat` times (`USER_HZ`, 100 on Linux whatever
/// the kernel's own tick rate).
const USER_HZ: f64 = 100.0;

/// `VmRSS` of `pid` in KiB.
pub fn vm_rss_kib(pid: u32) -> Result<u64> {
    status_kib(pid, "VmRSS")
}

/// `VmHWM` (peak resident set) of `pid` in KiB.
pub fn vm_hwm_kib(pid: u32) -> Result<u64> {
    status_kib(pid, "VmHWM")
}

fn status_kib(pid: u32, field: &str) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow!("no {field} in {path}"))
}

/// User + system CPU seconds `pid` has used (all its threads).
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // The command name (field 2) may hold spaces; fields after it start with the state
    // (field 3), so utime and stime (14, 15) are the 12th and 13th after the `)`.
    let ticks: Option<u64> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().skip(11).take(2))
        .and_then(|mut f| Some(f.next()?.parse::<u64>().ok()? + f.next()?.parse::<u64>().ok()?));
    let ticks = ticks.ok_or_else(|| anyhow!("no CPU times in {path}"))?;
    Ok(ticks as f64 / USER_HZ)
}

/// `pid` and its direct children (a server that forks a process per connection, like
/// websockify): the pids to sum CPU time and RSS over.
pub fn with_children(pid: u32) -> Vec<u32> {
    let mut pids = vec![pid];
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for entry in entries.flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        // The parent pid is the second field after the command name.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
        if ppid == Some(pid) {
            pids.push(child);
        }
    }
    pids
}

/// Soft limit on open files of this process, if it can be read.
pub fn open_file_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
