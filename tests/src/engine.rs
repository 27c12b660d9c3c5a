//! A second Docker engine on this machine, for tests of control's pool of engines: its
//! own `dockerd` with its own socket, data root, exec root, pid file and config file,
//! no default bridge (`--bridge none`), no iptables rules (`--iptables=false`: published
//! ports go through the userland proxy on loopback), its networks from an address pool
//! of its own (a `10.N.0.0/16`, away from the first engine's), and `--live-restore`, so
//! its containers outlive a killed daemon as they would on a real host whose engine
//! crashed. [`SecondEngine::kill`] and [`SecondEngine::restart`] stop and start it
//! under a test; dropping it removes everything it started (containers, the daemon, its
//! mounts and its folder), even when the test failed.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::docker::run;

/// Bound on the daemon answering after it is started.
const START_WITHIN: Duration = Duration::from_secs(60);

/// Bound on the daemon exiting after SIGTERM before it is killed.
const STOP_WITHIN: Duration = Duration::from_secs(30);

/// Bound on one `docker` command against the engine.
const COMMAND_WITHIN: Duration = Duration::from_secs(120);

/// Address pools the engines' networks are cut from: `10.{n}.0.0/16` with `n` from
/// here on, one per engine a test process starts, away from the first engine's
/// 172.17-31 and 192.168 pools.
const FIRST_POOL_OCTET: u32 = 200;

/// Engines a test process started, for their address pools.
static STARTED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

pub struct SecondEngine {
    /// Holds the socket, data root, exec root, pid file, config file and log.
    dir: PathBuf,
    /// `base=10.N.0.0/16,size=24`: where its networks' subnets come from.
    pool: String,
    /// The running daemon, if it runs.
    daemon: Option<Child>,
}

impl SecondEngine {
    /// Starts a second engine; `None` (after a loud skip message) on a machine without
    /// `dockerd`, and a panic under `CI=true` (tests that need it must fail in CI).
    pub fn start() -> Option<SecondEngine> {
        let found = Command::new("dockerd")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("CI=true but there is no dockerd to start a second Docker engine with");
            }
            let _ = writeln!(
                std::io::stderr(),
                "\n\
                 ************************************************************\n\
                 SKIPPED: no dockerd for a second Docker engine\n\
                 ************************************************************\n"
            );
            return None;
        }
        // Under /tmp, short: the socket's path must fit a sockaddr_un (108 bytes).
        let dir = tempfile::Builder::new()
            .prefix("vnc-engine-")
            .tempdir_in("/tmp")
            .expect("a folder for the second engine")
            .keep();
        std::fs::write(dir.join("daemon.json"), "{}").expect("write daemon.json");
        // Test processes run one after another; engines of one process get a pool each.
        let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let octet = FIRST_POOL_OCTET + (std::process::id() + n) % 50;
        let pool = format!("base=10.{octet}.0.0/16,size=24");
        let mut engine = SecondEngine {
            dir,
            pool,
            daemon: None,
        };
        engine.spawn();
        Some(engine)
    }

    /// The engine's address, as control's `docker_host` takes it.
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("docker.sock")
    }

    /// Runs `docker args…` against this engine (bounded); stdout on success.
    pub fn docker(&self, args: &[&str]) -> Result<String, String> {
        let mut cmd = Command::new("docker");
        cmd.arg("-H").arg(self.host()).args(args);
        run(cmd, COMMAND_WITHIN)
    }

    /// Copies image `tag` from the first engine (`docker save | docker load`).
    pub fn load_image(&self, tag: &str) {
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(format!(
            "docker save '{tag}' | docker -H '{}' load",
            self.host()
        ));
        run(cmd, COMMAND_WITHIN).unwrap_or_else(|e| panic!("copy {tag} to the second engine: {e}"));
    }

    /// Kills the daemon and the containerd it runs (SIGKILL), as a crash would; its
    /// containers keep running (live restore), unreachable through it. Returns once
    /// both are gone: a daemon started while its old containerd is still dying waits
    /// on that one and never starts.
    pub fn kill(&mut self) {
        let containerd = std::fs::read_to_string(self.dir.join("exec/containerd/containerd.pid"))
            .ok()
            .and_then(|pid| pid.trim().parse::<u32>().ok());
        if let Some(mut daemon) = self.daemon.take() {
            let _ = daemon.kill();
            let _ = daemon.wait();
        }
        if let Some(pid) = containerd {
            // Gone, or a zombie waiting for init to reap it.
            let alive = || {
                std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                    stat.rsplit_once(") ")
                        .is_some_and(|(_, rest)| !rest.starts_with('Z'))
                })
            };
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .stderr(Stdio::null())
                .status();
            let deadline = Instant::now() + STOP_WITHIN;
            while alive() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        // A pid file naming a process that still exists (a zombie not reaped yet) would
        // make the next daemon wait on a containerd that is gone.
        let _ = std::fs::remove_file(self.dir.join("exec/containerd/containerd.pid"));
        let _ = std::fs::remove_file(self.dir.join("docker.pid"));
    }

    /// Starts the daemon again on the same data root; it answers when this returns.
    pub fn restart(&mut self) {
        assert!(self.daemon.is_none(), "the second engine is running");
        self.spawn();
    }

    fn spawn(&mut self) {
        let _ = std::fs::remove_file(self.socket());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("dockerd.log"))
            .expect("open the dockerd log");
        let mut cmd = Command::new("dockerd");
        cmd.arg("-H")
            .arg(self.host())
            .arg("--config-file")
            .arg(self.dir.join("daemon.json"))
            .arg("--data-root")
            .arg(self.dir.join("data"))
            .arg("--exec-root")
            .arg(self.dir.join("exec"))
            .arg("--pidfile")
            .arg(self.dir.join("docker.pid"))
            .args(["--bridge", "none", "--iptables=false", "--ip-masq=false"])
            .args(["--default-address-pool", &self.pool])
            .args(["--live-restore", "--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log);
        self.daemon = Some(cmd.spawn().expect("spawn dockerd"));
        let deadline = Instant::now() + START_WITHIN;
        loop {
            if self
                .docker(&["info", "--format", "{{.ServerVersion}}"])
                .is_ok()
            {
                return;
            }
            if let Some(Ok(Some(status))) = self.daemon.as_mut().map(Child::try_wait) {
                self.daemon = None;
                panic!(
                    "the second dockerd exited ({status}); its log:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the second dockerd did not answer within {START_WITHIN:?}; its log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The daemon's log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default()
    }

    /// Stops the daemon (SIGTERM, then SIGKILL past [`STOP_WITHIN`]).
    fn stop(&mut self) {
        let Some(mut daemon) = self.daemon.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &daemon.id().to_string()])
            .status();
        let deadline = Instant::now() + STOP_WITHIN;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = daemon.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = daemon.kill();
        let _ = daemon.wait();
    }
}

impl Drop for SecondEngine {
    fn drop(&mut self) {
        // A killed daemon comes back to remove its containers (live restore kept them).
        if self.daemon.is_none() && self.dir.join("data").exists() {
            let restarted = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.spawn();
            }));
            if restarted.is_err() {
                self.daemon = None;
            }
        }
        if self.daemon.is_some()
            && let Ok(ids) = self.docker(&["ps", "-aq"])
        {
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                let mut args = vec!["rm", "-f"];
                args.extend(ids);
                let _ = self.docker(&args);
            }
        }
        self.stop();
        unmount_under(&self.dir);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Unmounts everything mounted at or under `dir` (the daemon bind-mounts its data root
/// and leaves mounts of containers and network namespaces), deepest first.
fn unmount_under(dir: &Path) {
    let Ok(table) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut points: Vec<&str> = table
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .filter(|point| Path::new(point).starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    points.dedup();
    for point in points {
        let _ = Command::new("umount")
            .args(["-l", point])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
