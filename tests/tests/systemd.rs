//! Host deployment under systemd, tested without systemd as PID 1:
//!
//! - the shipped units pass `systemd-analyze verify`, keep their hardening score, and
//!   the sysusers files create the users the units run as;
//! - the real binaries speak `sd_notify(3)` to a socket the test owns (`NOTIFY_SOCKET`):
//!   READY=1 only once Redis answered, STATUS= with live sessions or the job queue,
//!   WATCHDOG=1 at half of `WATCHDOG_USEC`, STOPPING=1 on SIGTERM;
//! - socket activation (`LISTEN_FDS`): the relay serves the socket it is handed, and a
//!   restart on the same socket loses no connection attempt made while it was down.
#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::io::Write as _;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::StreamExt;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpStream, UnixDatagram};
use tokio::process::{Child, Command};
use vnc_shared::token::Scope;
use vnc_tests::WAIT;
use vnc_tests::control::{IDENTITY_AUDIENCE, IDENTITY_ISSUER, Identity};
use vnc_tests::fixture::Fixture;
use vnc_tests::keys::TestKeys;
use vnc_tests::process::{Proc, bin_path, listening_field};
use vnc_tests::redis::{RedisServer, free_port};
use vnc_tests::relay::RelayProcess;
use vnc_tests::ws;

// ---------------------------------------------------------------------------------
// The unit files

/// The units the packages install, in `systemd/`.
const UNITS: [&str; 4] = [
    "vnc-relay.service",
    "vnc-relay.socket",
    "vnc-relay-admin.socket",
    "vnc-control.service",
];

fn systemd_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../systemd")
}

/// True if `systemd-analyze` and `systemd-sysusers` run. If not: under `CI=true` this
/// panics (`scripts/test-deps` installs Debian's `systemd` package), otherwise it prints a loud
/// `SKIPPED` line and returns false so the test can return early.
fn systemd_tools() -> bool {
    let runs = |tool: &str| {
        std::process::Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let missing: Vec<&str> = ["systemd-analyze", "systemd-sysusers"]
        .into_iter()
        .filter(|t| !runs(t))
        .collect();
    if missing.is_empty() {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "CI=true but {} is missing: install Debian's systemd package (scripts/test-deps does)",
            missing.join(" and ")
        );
    }
    // Straight to the stderr handle, not `eprintln!`, which the test harness captures:
    // a skip must be visible in a normal run.
    let _ = writeln!(
        std::io::stderr(),
        "\n\
         ************************************************************\n\
         SKIPPED: {} missing (apt-get install systemd)\n\
         ************************************************************\n",
        missing.join(" and ")
    );
    false
}

/// Copies of the shipped units in a temporary directory, with `/usr/bin/vnc-relay` and
/// `/usr/bin/vnc-control` replaced by the freshly built binaries.
///
/// `systemd-analyze verify` checks that every `Exec*=` program exists and is
/// executable, and the units name where the packages install them, which a test
/// machine doesn't have. Rewriting only those paths in copies keeps every other line as
/// shipped; the socket units still find `vnc-relay.service`, because verify adds the
/// directory of the files it is given to the unit search path.
fn units_with_built_binaries() -> (tempfile::TempDir, Vec<PathBuf>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut paths = Vec::new();
    for unit in UNITS {
        let text = std::fs::read_to_string(systemd_dir().join(unit))
            .unwrap_or_else(|e| panic!("read systemd/{unit}: {e}"));
        let mut rewritten = text.clone();
        for bin in ["vnc-relay", "vnc-control"] {
            rewritten = rewritten.replace(
                &format!("/usr/bin/{bin} "),
                &format!("{} ", bin_path(bin).display()),
            );
        }
        if unit.ends_with(".service") {
            assert_ne!(
                rewritten, text,
                "{unit} no longer runs /usr/bin/vnc-*: update this test's rewrite"
            );
        }
        let path = dir.path().join(unit);
        std::fs::write(&path, rewritten).expect("write unit copy");
        paths.push(path);
    }
    (dir, paths)
}

#[test]
fn every_unit_passes_systemd_analyze_verify() {
    if !systemd_tools() {
        return;
    }
    let (dir, units) = units_with_built_binaries();
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .args(&units)
        .output()
        .expect("run systemd-analyze verify");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify:\n{stderr}");
    // Unknown keys and bad values are only warnings for verify; none is allowed here.
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("vnc-") || l.contains(&*dir.path().to_string_lossy()))
        .collect();
    assert!(ours.is_empty(), "systemd-analyze verify warned:\n{stderr}");

    // The check has teeth: the unit as shipped names a binary this machine lacks.
    if !Path::new("/usr/bin/vnc-relay").exists() {
        let shipped = std::process::Command::new("systemd-analyze")
            .arg("verify")
            .arg(systemd_dir().join("vnc-relay.service"))
            .output()
            .expect("run systemd-analyze verify");
        assert!(!shipped.status.success());
        assert!(String::from_utf8_lossy(&shipped.stderr).contains("/usr/bin/vnc-relay"));
    }
}

/// `systemd-analyze security --offline=yes` of one unit: its overall exposure (0 is
/// best, 10 worst) and the full table, for the failure message.
fn exposure(unit: &Path) -> (f64, String) {
    let out = std::process::Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(unit)
        .output()
        .expect("run systemd-analyze security");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let score = text
        .lines()
        .find_map(|l| {
            let rest = l.split("Overall exposure level for ").nth(1)?;
            rest.split(": ")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no overall exposure level in:\n{text}"));
    (score, text)
}

#[test]
fn services_stay_hardened() {
    if !systemd_tools() {
        return;
    }
    let (dir, _) = units_with_built_binaries();
    // The relay's goal is 2.0 at most ("OK"); it scores 1.1 as shipped. Control needs
    // the Docker socket (a supplementary group) and no user namespace, and scores 1.3.
    for (unit, most) in [("vnc-relay.service", 2.0), ("vnc-control.service", 2.0)] {
        let (score, table) = exposure(&dir.path().join(unit));
        assert!(score <= most, "{unit} exposure {score} > {most}:\n{table}");
    }
}

#[test]
fn sysusers_files_create_the_users_the_units_run_as() {
    if !systemd_tools() {
        return;
    }
    for (conf, unit) in [
        ("vnc-relay.conf", "vnc-relay.service"),
        ("vnc-control.conf", "vnc-control.service"),
    ] {
        // A scratch root: systemd-sysusers writes its etc/passwd and etc/group.
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(root.path().join("etc")).expect("mkdir etc");
        let file = systemd_dir().join("sysusers.d").join(conf);
        let out = std::process::Command::new("systemd-sysusers")
            .arg(format!("--root={}", root.path().display()))
            .arg(file.canonicalize().expect("sysusers file"))
            .output()
            .expect("run systemd-sysusers");
        assert!(
            out.status.success(),
            "systemd-sysusers {conf}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let unit_text = std::fs::read_to_string(systemd_dir().join(unit)).unwrap();
        let user = unit_text
            .lines()
            .find_map(|l| l.strip_prefix("User="))
            .unwrap_or_else(|| panic!("{unit} has no User="));
        let group = unit_text
            .lines()
            .find_map(|l| l.strip_prefix("Group="))
            .unwrap_or_else(|| panic!("{unit} has no Group="));
        let passwd = std::fs::read_to_string(root.path().join("etc/passwd")).unwrap();
        let entry = passwd
            .lines()
            .find(|l| l.starts_with(&format!("{user}:")))
            .unwrap_or_else(|| panic!("{conf} creates no user {user}: {passwd}"));
        let fields: Vec<&str> = entry.split(':').collect();
        // A system user (below 1000) that can't log in.
        assert!(fields[2].parse::<u32>().unwrap() < 1000, "{entry}");
        assert_eq!(fields[6], "/usr/sbin/nologin", "{entry}");
        let groups = std::fs::read_to_string(root.path().join("etc/group")).unwrap();
        assert!(
            groups.lines().any(|l| l.starts_with(&format!("{group}:"))),
            "{conf} creates no group {group}: {groups}"
        );
    }
}

// ---------------------------------------------------------------------------------
// sd_notify

/// A datagram socket standing in for systemd's notify socket.
struct NotifySocket {
    _dir: tempfile::TempDir,
    path: PathBuf,
    socket: UnixDatagram,
    /// Lines received but not yet consumed, with their arrival time.
    pending: VecDeque<(Instant, String)>,
}

impl NotifySocket {
    fn new() -> NotifySocket {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        NotifySocket {
            _dir: dir,
            path,
            socket,
            pending: VecDeque::new(),
        }
    }

    /// `NOTIFY_SOCKET=...` for `env`.
    fn env(&self) -> String {
        format!("NOTIFY_SOCKET={}", self.path.display())
    }

    /// The next notification line, if one arrives before `deadline`. A datagram may
    /// carry several (`STATUS=...\nREADY=1\n`).
    async fn next_before(&mut self, deadline: tokio::time::Instant) -> Option<(Instant, String)> {
        while self.pending.is_empty() {
            let mut buf = vec![0u8; 4096];
            let n = tokio::time::timeout_at(deadline, self.socket.recv(&mut buf))
                .await
                .ok()?
                .expect("recv on the notify socket");
            let at = Instant::now();
            for line in String::from_utf8_lossy(&buf[..n]).lines() {
                if !line.is_empty() {
                    self.pending.push_back((at, line.to_owned()));
                }
            }
        }
        self.pending.pop_front()
    }

    /// Every line that arrives within `span`.
    async fn collect(&mut self, span: Duration) -> Vec<(Instant, String)> {
        let deadline = tokio::time::Instant::now() + span;
        let mut lines = Vec::new();
        while let Some(line) = self.next_before(deadline).await {
            lines.push(line);
        }
        lines
    }

    /// Skips lines until one satisfies `want`; panics with what arrived after `WAIT`.
    async fn wait_for(&mut self, what: &str, want: impl Fn(&str) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut seen = Vec::new();
        while let Some((_, line)) = self.next_before(deadline).await {
            if want(&line) {
                return line;
            }
            seen.push(line);
        }
        panic!("no {what} within {WAIT:?}; got {seen:?}")
    }
}

fn lines_of(got: &[(Instant, String)]) -> Vec<&str> {
    got.iter().map(|(_, l)| l.as_str()).collect()
}

#[tokio::test]
async fn relay_is_ready_only_with_redis_answering() -> anyhow::Result<()> {
    let keys = TestKeys::new();

    // Listening and keys loaded, but nothing answers on the Redis port: no READY.
    let mut notify = NotifySocket::new();
    let relay = RelayProcess::start_under(
        &["env", &notify.env()],
        &format!("redis://127.0.0.1:{}", free_port()),
        &keys.public,
        &[],
    )
    .await?;
    notify
        .wait_for("an unready status", |l| {
            l == "STATUS=Not ready (redis unreachable): 0 live sessions"
        })
        .await;
    let later = notify.collect(Duration::from_millis(1000)).await;
    assert!(!lines_of(&later).contains(&"READY=1"), "{later:?}");
    assert_eq!(ws::http_get(relay.admin, "/readyz").await?.0, 503);

    // With Redis answering, READY=1 goes out, and means what /readyz means.
    let redis = RedisServer::start().await?;
    let mut notify = NotifySocket::new();
    let relay =
        RelayProcess::start_under(&["env", &notify.env()], &redis.url(), &keys.public, &[]).await?;
    let first = notify
        .wait_for("the first status", |l| !l.starts_with("WATCHDOG"))
        .await;
    assert_eq!(first, "STATUS=Starting: listeners bound, waiting for Redis");
    notify.wait_for("READY=1", |l| l == "READY=1").await;
    assert_eq!(ws::http_get(relay.admin, "/readyz").await?.0, 200);
    notify
        .wait_for("a serving status", |l| {
            l == "STATUS=Serving: 0 live sessions"
        })
        .await;
    Ok(())
}

#[tokio::test]
async fn relay_status_counts_live_sessions_and_says_stopping() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let keys = TestKeys::new();
    let fixture = Fixture::start(&[]).await?;
    redis
        .put_container("c1", "t1", "running", fixture.port())
        .await;
    let mut notify = NotifySocket::new();
    // With the watchdog at 1 s, the status is refreshed every 500 ms.
    let mut relay = RelayProcess::start_under(
        &["env", &notify.env(), "WATCHDOG_USEC=1000000"],
        &redis.url(),
        &keys.public,
        &["--drain-timeout", "5s"],
    )
    .await?;
    notify.wait_for("READY=1", |l| l == "READY=1").await;
    notify
        .wait_for("0 sessions", |l| l == "STATUS=Serving: 0 live sessions")
        .await;

    let mut browser = ws::connect(&relay.ws_url(&keys.token("c1", Scope::Control))).await?;
    let greeting = tokio::time::timeout(WAIT, browser.next())
        .await?
        .context("no RFB greeting")??;
    assert!(greeting.into_data().starts_with(b"RFB 003.008"));
    notify
        .wait_for("1 session", |l| l == "STATUS=Serving: 1 live session")
        .await;

    browser.close(None).await?;
    notify
        .wait_for("0 sessions", |l| l == "STATUS=Serving: 0 live sessions")
        .await;

    relay.proc.signal("TERM");
    notify.wait_for("STOPPING=1", |l| l == "STOPPING=1").await;
    assert_eq!(relay.proc.wait_exit(WAIT).await?, Some(0));
    Ok(())
}

#[tokio::test]
async fn watchdog_pings_at_half_the_interval_and_only_for_its_pid() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let keys = TestKeys::new();
    let mut notify = NotifySocket::new();
    let _relay = RelayProcess::start_under(
        &["env", &notify.env(), "WATCHDOG_USEC=1000000"],
        &redis.url(),
        &keys.public,
        &[],
    )
    .await?;
    notify.wait_for("READY=1", |l| l == "READY=1").await;

    let got = notify.collect(Duration::from_secs(3)).await;
    let pings: Vec<Instant> = got
        .iter()
        .filter(|(_, l)| l == "WATCHDOG=1")
        .map(|(at, _)| *at)
        .collect();
    // Every 500 ms: about 6 in 3 s.
    assert!(
        (4..=8).contains(&pings.len()),
        "{} pings in 3 s: {:?}",
        pings.len(),
        lines_of(&got)
    );
    let gaps: Vec<Duration> = pings.windows(2).map(|w| w[1] - w[0]).collect();
    let mean = gaps.iter().sum::<Duration>() / u32::try_from(gaps.len())?;
    assert!(
        (Duration::from_millis(400)..=Duration::from_millis(700)).contains(&mean),
        "mean gap {mean:?}: {gaps:?}"
    );
    // Never as late as the watchdog itself: systemd would have restarted the relay.
    assert!(gaps.iter().all(|g| *g < Duration::from_secs(1)), "{gaps:?}");

    // WATCHDOG_PID names another process: this watchdog is not the relay's
    // (sd_watchdog_enabled(3)), so it sends readiness but no pings.
    let mut other = NotifySocket::new();
    let _relay = RelayProcess::start_under(
        &[
            "env",
            &other.env(),
            "WATCHDOG_USEC=200000",
            "WATCHDOG_PID=1",
        ],
        &redis.url(),
        &keys.public,
        &[],
    )
    .await?;
    other.wait_for("READY=1", |l| l == "READY=1").await;
    let got = other.collect(Duration::from_secs(1)).await;
    assert!(
        !got.iter().any(|(_, l)| l == "WATCHDOG=1"),
        "{:?}",
        lines_of(&got)
    );
    Ok(())
}

/// Starts `vnc-control` with the static runtime (no Docker) against `redis_url`,
/// notifying `notify`, with the watchdog at 1 s.
async fn start_control(
    redis_url: &str,
    notify: &NotifySocket,
    keys: &TestKeys,
    identity: &Identity,
    dir: &Path,
) -> anyhow::Result<Proc> {
    let config = dir.join("control.toml");
    std::fs::write(
        &config,
        "runtime = \"static\"\n[[static_containers]]\ncid = \"desk\"\nowner = \"alice\"\n\
         tenant = \"t1\"\nhost = \"127.0.0.1\"\nport = 5900\n",
    )?;
    let mut cmd = Command::new(bin_path("vnc-control"));
    cmd.arg("--config")
        .arg(&config)
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .args(["--redis-url", redis_url])
        .arg("--jwt-private-key")
        .arg(&keys.private)
        .arg("--auth-public-key")
        .arg(&identity.public)
        .args(["--auth-issuer", IDENTITY_ISSUER])
        .args(["--auth-audience", IDENTITY_AUDIENCE])
        .args(["--plane", &format!("test-{}", free_port())])
        .env("NOTIFY_SOCKET", &notify.path)
        .env("WATCHDOG_USEC", "1000000")
        .env(
            "RUST_LOG",
            std::env::var("CONTROL_LOG").unwrap_or_else(|_| "error".into()),
        );
    Ok(Proc::start(cmd, "vnc-control").await?.0)
}

#[tokio::test]
async fn control_notifies_ready_queue_status_watchdog_and_stopping() -> anyhow::Result<()> {
    let keys = TestKeys::new();
    let identity = Identity::new();
    let dir = tempfile::tempdir()?;

    // No Redis answering: the watchdog runs, but start-up is not complete.
    let mut notify = NotifySocket::new();
    let unready = format!("redis://127.0.0.1:{}", free_port());
    let _control = start_control(&unready, &notify, &keys, &identity, dir.path()).await?;
    let early = notify.collect(Duration::from_millis(1500)).await;
    let early = lines_of(&early);
    assert!(!early.contains(&"READY=1"), "{early:?}");
    assert!(early.contains(&"WATCHDOG=1"), "{early:?}");
    assert!(
        early.contains(&"STATUS=Starting: listeners bound, waiting for Redis"),
        "{early:?}"
    );
    notify
        .wait_for("an unready status", |l| {
            l == "STATUS=Not ready (redis unreachable)"
        })
        .await;
    let later = notify.collect(Duration::from_millis(500)).await;
    assert!(!lines_of(&later).contains(&"READY=1"), "{later:?}");

    let redis = RedisServer::start().await?;
    let mut notify = NotifySocket::new();
    let mut control = start_control(&redis.url(), &notify, &keys, &identity, dir.path()).await?;
    notify.wait_for("READY=1", |l| l == "READY=1").await;
    notify
        .wait_for("the queue status", |l| {
            l == "STATUS=Serving: jobs 0 waiting, 0 active, 0 delayed, 0 failed"
        })
        .await;

    control.signal("TERM");
    notify.wait_for("STOPPING=1", |l| l == "STOPPING=1").await;
    assert_eq!(control.wait_exit(WAIT).await?, Some(0));
    Ok(())
}

// ---------------------------------------------------------------------------------
// Socket activation

/// A relay started by [`start_activated`].
struct Activated {
    child: Child,
    public: SocketAddr,
    admin: SocketAddr,
}

impl Activated {
    /// SIGTERM, then the exit code.
    async fn stop(mut self) -> anyhow::Result<Option<i32>> {
        let pid = self.child.id().context("relay pid")?;
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()?;
        assert!(status.success(), "kill -TERM {pid}");
        let status = tokio::time::timeout(WAIT, self.child.wait()).await??;
        Ok(status.code())
    }
}

/// Starts `vnc-relay` the way systemd's socket activation does: `sockets` become its
/// fds 3, 4, ..., with `LISTEN_FDS`, `LISTEN_PID` and, if given, `LISTEN_FDNAMES`.
///
/// Without unsafe code, std hands a child only its stdio descriptors, so the sockets
/// travel as stdin (and stderr, for a second one) and a shell moves them to fds 3 and
/// 4 before it `exec`s the relay. `exec` keeps the shell's pid, so `LISTEN_PID=$$` is
/// the relay's own pid, which is what `sd_listen_fds(3)` checks: systemd and
/// `systemd-socket-activate` set it in the forked child just before `exec` too.
/// `listen_pid` overrides it (a pid that is not the relay's).
async fn start_activated(
    sockets: &[&std::net::TcpListener],
    names: Option<&str>,
    listen_pid: Option<&str>,
    redis_url: &str,
    public_key: &Path,
) -> anyhow::Result<Activated> {
    let passed = |i: usize| -> anyhow::Result<Stdio> {
        Ok(Stdio::from(OwnedFd::from(sockets[i].try_clone()?)))
    };
    let mut script = String::from("exec 3<&0 </dev/null");
    let stderr = match sockets.len() {
        1 => Stdio::inherit(),
        2 => {
            script.push_str(" 4<&2");
            passed(1)?
        }
        n => anyhow::bail!("{n} sockets: one or two"),
    };
    // The relay's log goes to stdout, which is drained below.
    script.push_str(" 2>&1; export");
    script.push_str(&format!(
        " LISTEN_FDS={} LISTEN_PID={}",
        sockets.len(),
        listen_pid.unwrap_or("$$")
    ));
    if let Some(names) = names {
        script.push_str(&format!(" LISTEN_FDNAMES={names}"));
    }
    script.push_str("; exec \"$@\"");
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(&script)
        .arg("vnc-relay")
        .arg(bin_path("vnc-relay"))
        // Used only when no socket is taken from the environment.
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .args(["--redis-url", redis_url])
        .arg("--jwt-public-key")
        .arg(public_key)
        .args(["--node-id", "test-node", "--drain-timeout", "5s"])
        .env(
            "RUST_LOG",
            std::env::var("RELAY_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdin(passed(0)?)
        .stderr(stderr)
        .stdout(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().context("starting the activated relay")?;
    let mut stdout = BufReader::new(child.stdout.take().context("stdout")?).lines();
    let line = tokio::time::timeout(WAIT, async {
        while let Some(line) = stdout.next_line().await? {
            if let Some(rest) = line.strip_prefix("LISTENING ") {
                return anyhow::Ok(rest.to_owned());
            }
            eprintln!("vnc-relay: {line}");
        }
        anyhow::bail!("vnc-relay exited before listening")
    })
    .await
    .context("vnc-relay did not report LISTENING in time")??;
    // Keep reading, so the relay never blocks on a full pipe.
    tokio::spawn(async move {
        while let Ok(Some(line)) = stdout.next_line().await {
            eprintln!("vnc-relay: {line}");
        }
    });
    Ok(Activated {
        child,
        public: listening_field(&line, "public=")?,
        admin: listening_field(&line, "admin=")?,
    })
}

/// A WebSocket upgrade request for the raw endpoint, as a browser sends it.
fn upgrade_request(addr: SocketAddr, token: &str) -> String {
    format!(
        "GET /websockify?token={token} HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\n\
         Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
}

/// Reads the response head and the first binary frame after it.
async fn upgrade_answer(stream: &mut TcpStream) -> anyhow::Result<(String, Vec<u8>)> {
    let mut got = Vec::new();
    tokio::time::timeout(WAIT, async {
        loop {
            let mut buf = [0u8; 4096];
            let n = stream.read(&mut buf).await?;
            anyhow::ensure!(n > 0, "closed after {:?}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
            let (head, rest) = ws::split_response(&got);
            if let Some((_, payload)) = ws::server_frames(rest).into_iter().find(|(op, _)| *op == 2)
            {
                return Ok((head, payload.to_vec()));
            }
        }
    })
    .await
    .context("no upgrade and first frame in time")?
}

#[tokio::test]
async fn restart_on_a_passed_socket_loses_no_connection_attempt() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let keys = TestKeys::new();
    let fixture = Fixture::start(&[]).await?;
    redis
        .put_container("c1", "t1", "running", fixture.port())
        .await;
    // The test holds the listening socket, as systemd does for vnc-relay.socket.
    let socket = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = socket.local_addr()?;

    let first = start_activated(&[&socket], None, None, &redis.url(), &keys.public).await?;
    assert_eq!(
        first.public, addr,
        "the relay serves the socket it was passed"
    );
    let url = format!(
        "ws://{addr}/websockify?token={}",
        keys.token("c1", Scope::Control)
    );
    let mut browser = ws::connect(&url).await?;
    let greeting = tokio::time::timeout(WAIT, browser.next())
        .await?
        .context("no RFB greeting")??;
    assert!(greeting.into_data().starts_with(b"RFB 003.008"));
    browser.close(None).await?;
    assert_eq!(first.stop().await?, Some(0));

    // No relay runs now. The socket is still open here, so connection attempts still
    // complete (the kernel queues them) and their requests wait unanswered.
    let mut queued = Vec::new();
    for _ in 0..5 {
        let mut stream = tokio::time::timeout(WAIT, TcpStream::connect(addr)).await??;
        let request = upgrade_request(addr, &keys.token("c1", Scope::Control));
        stream.write_all(request.as_bytes()).await?;
        queued.push(stream);
    }
    let mut byte = [0u8; 1];
    assert!(
        tokio::time::timeout(Duration::from_millis(300), queued[0].read(&mut byte))
            .await
            .is_err(),
        "something answered while no relay ran"
    );

    // The next relay on the same socket serves every one of them.
    let second = start_activated(&[&socket], None, None, &redis.url(), &keys.public).await?;
    assert_eq!(second.public, addr);
    for (i, stream) in queued.iter_mut().enumerate() {
        let (head, first_frame) = upgrade_answer(stream).await?;
        assert!(head.starts_with("HTTP/1.1 101"), "connection {i}: {head}");
        assert!(
            first_frame.starts_with(b"RFB 003.008"),
            "connection {i}: {first_frame:?}"
        );
    }
    drop(queued);
    assert_eq!(second.stop().await?, Some(0));
    Ok(())
}

#[tokio::test]
async fn named_admin_socket_and_sockets_for_another_pid() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let keys = TestKeys::new();
    let public = std::net::TcpListener::bind("127.0.0.1:0")?;
    let admin = std::net::TcpListener::bind("127.0.0.1:0")?;

    // FileDescriptorName= decides, not the order.
    for (sockets, names) in [
        ([&public, &admin], "public:admin"),
        ([&admin, &public], "admin:vnc-relay.socket"),
    ] {
        let relay =
            start_activated(&sockets, Some(names), None, &redis.url(), &keys.public).await?;
        assert_eq!(relay.public, public.local_addr()?, "{names}");
        assert_eq!(relay.admin, admin.local_addr()?, "{names}");
        assert_eq!(ws::http_get(relay.admin, "/healthz").await?.0, 200);
        assert_eq!(relay.stop().await?, Some(0));
    }

    // LISTEN_PID names another process: the variables were meant for a parent, as
    // sd_listen_fds(3) decides, and the relay binds `--listen` itself.
    let relay = start_activated(&[&public], None, Some("1"), &redis.url(), &keys.public).await?;
    assert_ne!(relay.public, public.local_addr()?);
    assert_eq!(ws::http_get(relay.admin, "/healthz").await?.0, 200);
    assert_eq!(relay.stop().await?, Some(0));
    Ok(())
}
