//! A real X desktop for browser tests: Xvfb on a display it picks itself, x11vnc
//! serving it on a free loopback port, and X clients on it (`xsetroot`, an `xterm` that
//! writes what is typed into it to a file). Everything is stopped when dropped.
//!
//! Needs Debian's `xvfb`, `x11vnc`, `xterm` and `x11-xserver-utils` (`xsetroot`);
//! [`desktop_required`] says whether they are there.
//!
//! [`Xvnc`] is the other desktop: TigerVNC's X server with its own RFB server, which
//! (unlike x11vnc) honours SetDesktopSize, so a viewer can resize the screen; X clients
//! (`xdpyinfo`, `xclip`) run on its display. [`xvnc_required`] says whether it is there.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::process::eventually;

/// Programs the desktop runs, and the Debian package of each.
const PROGRAMS: &[(&str, &str)] = &[
    ("Xvfb", "xvfb"),
    ("x11vnc", "x11vnc"),
    ("xterm", "xterm"),
    ("xsetroot", "x11-xserver-utils"),
    ("xwininfo", "x11-utils"),
];

/// Programs of the [`Xvnc`] desktop and its clients, and the Debian package of each.
const XVNC_PROGRAMS: &[(&str, &str)] = &[
    ("Xvnc", "tigervnc-standalone-server"),
    ("xdpyinfo", "x11-utils"),
    ("xclip", "xclip"),
];

/// Screen size of the test desktop.
pub const WIDTH: u16 = 1024;
pub const HEIGHT: u16 = 768;

/// Font of the xterm: an Xft font from `fonts-dejavu-core` (Xvfb has no core fonts
/// beyond its built-in `fixed`).
const XTERM_FONT: &str = "DejaVu Sans Mono";

/// True if every program of the desktop is installed. If one is missing: under
/// `CI=true` this panics (browser tests must fail in CI), otherwise it prints a loud
/// `SKIPPED` line and returns false so the test can return early.
pub fn desktop_required() -> bool {
    programs_required("an X desktop", PROGRAMS)
}

/// True if TigerVNC's `Xvnc` and its clients (`xdpyinfo`, `xclip`) are installed; like
/// [`desktop_required`], panics under `CI=true` when one is missing.
pub fn xvnc_required() -> bool {
    programs_required("a TigerVNC X server", XVNC_PROGRAMS)
}

/// [`required`] for `programs` (each with its Debian package) on `PATH`.
fn programs_required(what: &str, programs: &[(&str, &str)]) -> bool {
    let missing: Vec<String> = programs
        .iter()
        .filter(|(program, _)| find_program(program).is_none())
        .map(|(program, package)| format!("{program} (Debian package {package})"))
        .collect();
    required(what, &missing)
}

/// Shared by the desktop and browser checks: panics under `CI=true` when something is
/// missing, else prints a loud skip line; true when nothing is missing.
pub fn required(what: &str, missing: &[String]) -> bool {
    if missing.is_empty() {
        return true;
    }
    let list = missing.join(", ");
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "CI=true but {what} is not available; missing: {list} (scripts/test-deps installs them)"
        );
    }
    use std::io::Write as _;
    // Straight to the stderr handle, not `eprintln!`, which the test harness captures:
    // a skip must be visible in a normal run.
    let _ = writeln!(
        std::io::stderr(),
        "\n\
         ************************************************************\n\
         SKIPPED: no {what}; missing: {list}\n\
         ************************************************************\n"
    );
    false
}

/// The path of `program` on `PATH`, if any.
pub fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// Xvfb + x11vnc, and the X clients started on them.
pub struct Desktop {
    /// `:N`, as Xvfb chose it.
    pub display: String,
    /// Loopback port x11vnc serves RFB on.
    pub vnc_port: u16,
    xvfb: Child,
    x11vnc: Child,
    clients: Vec<Child>,
    dir: tempfile::TempDir,
}

impl Desktop {
    /// Starts Xvfb on a free display and x11vnc on a free loopback port (shared, so
    /// several viewers may connect; no VNC password: the port is on loopback only).
    pub async fn start() -> anyhow::Result<Desktop> {
        let dir = tempfile::tempdir()?;
        let (xvfb, display) = start_xvfb().await?;
        let mut last_error = None;
        // The free port could be taken between the probe and x11vnc's bind: retry.
        for _ in 0..5 {
            let port = crate::redis::free_port();
            match start_x11vnc(&display, port, dir.path()).await {
                Ok(x11vnc) => {
                    return Ok(Desktop {
                        display,
                        vnc_port: port,
                        xvfb,
                        x11vnc,
                        clients: Vec::new(),
                        dir,
                    });
                }
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("x11vnc would not start")))
    }

    /// Paints the root window one colour (`xsetroot -solid`).
    pub async fn set_background(&self, (r, g, b): (u8, u8, u8)) {
        let status = self
            .x_command("xsetroot")
            .args(["-solid", &format!("#{r:02x}{g:02x}{b:02x}")])
            .status()
            .await
            .expect("run xsetroot");
        assert!(status.success(), "xsetroot: {status}");
    }

    /// Starts an xterm titled `title` at `geometry` (columns x rows + x + y) running
    /// `cat > FILE`: every line typed into it lands in the returned file. Returns once
    /// the window is mapped.
    pub async fn xterm_recording(&mut self, title: &str, geometry: &str) -> PathBuf {
        let file = self.dir.path().join(format!("{title}.typed"));
        std::fs::write(&file, "").expect("create the typed file");
        let child = self
            .x_command("xterm")
            .args([
                "-T",
                title,
                "-geometry",
                geometry,
                "-fa",
                XTERM_FONT,
                "-fs",
                "11",
            ])
            .args(["-e", "sh", "-c", "exec cat > \"$0\""])
            .arg(&file)
            .spawn()
            .expect("start xterm");
        self.clients.push(child);
        self.wait_window(title).await;
        file
    }

    /// Waits until a window named `title` is viewable.
    pub async fn wait_window(&self, title: &str) {
        eventually(&format!("window {title:?}"), crate::WAIT, || async {
            let out = self
                .x_command("xwininfo")
                .args(["-name", title])
                .stderr(Stdio::null())
                .output()
                .await
                .ok()?;
            String::from_utf8_lossy(&out.stdout)
                .contains("IsViewable")
                .then_some(())
        })
        .await
    }

    /// A command with `DISPLAY` set to this desktop.
    pub fn x_command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("DISPLAY", &self.display)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true);
        cmd
    }
}

/// Xvfb on a display it picks (`-displayfd`), 24-bit colour. `-noreset`: without it the
/// server resets (and forgets the root colour) whenever its last client disconnects.
async fn start_xvfb() -> anyhow::Result<(Child, String)> {
    let mut xvfb = Command::new("Xvfb");
    xvfb.args(["-screen", "0", &format!("{WIDTH}x{HEIGHT}x24")]);
    start_x_server(xvfb, "Xvfb").await
}

/// Starts an X server (`cmd` with its own arguments) on a display it picks
/// (`-displayfd`), local connections only, never resetting; returns it and `:N` once
/// it has reported the display.
async fn start_x_server(mut cmd: Command, name: &str) -> anyhow::Result<(Child, String)> {
    let mut child = cmd
        .args(["-displayfd", "1", "-nolisten", "tcp", "-noreset"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {name}"))?;
    let mut stdout = BufReader::new(child.stdout.take().context("X server stdout")?);
    let mut line = String::new();
    let n = tokio::time::timeout(crate::WAIT, stdout.read_line(&mut line))
        .await
        .with_context(|| format!("{name} did not report its display in time"))??;
    if n == 0 || line.trim().is_empty() {
        bail!("{name} exited before it was ready: {:?}", child.try_wait());
    }
    drain(stdout);
    Ok((child, format!(":{}", line.trim())))
}

/// x11vnc on `display`, listening on 127.0.0.1:`port`; returns once it listens (it
/// prints `PORT=N` then).
async fn start_x11vnc(display: &str, port: u16, dir: &Path) -> anyhow::Result<Child> {
    let mut child = Command::new("x11vnc")
        .args(["-display", display, "-rfbport", &port.to_string()])
        .args(["-localhost", "-shared", "-forever", "-nopw", "-noipv6"])
        // No ~/.vnc, no xauth lookups, less polling delay for quick tests. No MIT-SHM:
        // x11vnc only removes its shared memory segments when it exits cleanly, and a
        // test's x11vnc is killed, so each run leaked ~34 of the kernel's 4096.
        .args(["-norc", "-wait", "5", "-defer", "5", "-noshm"])
        .arg("-o")
        .arg(dir.join("x11vnc.log"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting x11vnc")?;
    let stdout = child.stdout.take().context("x11vnc stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let want = format!("PORT={port}");
    let ready = tokio::time::timeout(crate::WAIT, async {
        while let Some(line) = lines.next_line().await? {
            if line.trim() == want {
                return anyhow::Ok(true);
            }
        }
        Ok(false)
    })
    .await
    .context("x11vnc did not report its port in time")??;
    if !ready {
        bail!(
            "x11vnc exited before listening on {port}: {:?}",
            child.try_wait()
        );
    }
    drain(lines.into_inner());
    Ok(child)
}

/// Reads a child's stdout to its end in the background: a closed pipe would kill the
/// child with SIGPIPE at its next write.
fn drain(mut out: impl tokio::io::AsyncBufRead + Unpin + Send + 'static) {
    tokio::spawn(async move {
        let mut sink = tokio::io::sink();
        let _ = tokio::io::copy_buf(&mut out, &mut sink).await;
    });
}

impl Drop for Desktop {
    fn drop(&mut self) {
        for child in &mut self.clients {
            let _ = child.start_kill();
        }
        let _ = self.x11vnc.start_kill();
        terminate_x_server(&mut self.xvfb);
    }
}

/// Stops an X server: SIGTERM first (it then removes its lock file and socket under
/// /tmp), SIGKILL if it has not exited within 2 s.
fn terminate_x_server(server: &mut Child) {
    if let Some(pid) = server.id() {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while std::time::Instant::now() < deadline {
            if matches!(server.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let _ = server.start_kill();
}

/// TigerVNC's `Xvnc` (Debian `tigervnc-standalone-server`): an X server that is its own
/// RFB server, on a display it picks and a free loopback port, with no VNC
/// authentication (loopback only). It honours SetDesktopSize (x11vnc does not), and it
/// keeps the X clipboard and the RFB clipboard in step. Stopped when dropped.
pub struct Xvnc {
    /// `:N`, as Xvnc chose it.
    pub display: String,
    /// Loopback port Xvnc serves RFB on.
    pub vnc_port: u16,
    server: Child,
}

impl Xvnc {
    /// Starts Xvnc with a `width`x`height` 24-bit screen; returns once its RFB port
    /// accepts connections.
    pub async fn start(width: u16, height: u16) -> anyhow::Result<Xvnc> {
        let mut last_error = None;
        // The free port could be taken between the probe and Xvnc's bind: retry.
        for _ in 0..5 {
            let port = crate::redis::free_port();
            match start_xvnc(width, height, port).await {
                Ok((server, display)) => {
                    return Ok(Xvnc {
                        display,
                        vnc_port: port,
                        server,
                    });
                }
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("Xvnc would not start")))
    }

    /// A command with `DISPLAY` set to this desktop, stdin and stdout closed.
    pub fn x_command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("DISPLAY", &self.display)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    /// Runs `program args` on the display and returns its stdout; fails if it exits
    /// unsuccessfully or runs past [`crate::WAIT`]. Not for programs that fork and
    /// keep stdout open (`xclip -i`): use [`Xvnc::set_clipboard`].
    pub async fn output(&self, program: &str, args: &[&str]) -> anyhow::Result<String> {
        let out = tokio::time::timeout(
            crate::WAIT,
            self.x_command(program)
                .args(args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .output(),
        )
        .await
        .with_context(|| format!("{program} did not finish in time"))?
        .with_context(|| format!("running {program}"))?;
        if !out.status.success() {
            bail!(
                "{program} {args:?}: {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The X screen's size, from `xdpyinfo`'s `dimensions:` line.
    pub async fn screen_size(&self) -> anyhow::Result<(u16, u16)> {
        let info = self.output("xdpyinfo", &[]).await?;
        parse_dimensions(&info).with_context(|| format!("no dimensions in xdpyinfo: {info}"))
    }

    /// Sets the X CLIPBOARD selection to `text` (`xclip -i`, which forks a child that
    /// owns the selection until another client takes it or the server stops).
    pub async fn set_clipboard(&self, text: &str) -> anyhow::Result<()> {
        let mut child = self
            .x_command("xclip")
            .args(["-selection", "clipboard", "-i"])
            .stdin(Stdio::piped())
            // The forked owner keeps stderr: not piped, or nothing would see its end.
            .stderr(Stdio::null())
            .kill_on_drop(false)
            .spawn()
            .context("starting xclip")?;
        let mut stdin = child.stdin.take().context("xclip stdin")?;
        tokio::io::AsyncWriteExt::write_all(&mut stdin, text.as_bytes()).await?;
        drop(stdin);
        let status = tokio::time::timeout(crate::WAIT, child.wait())
            .await
            .context("xclip -i did not finish in time")??;
        if !status.success() {
            bail!("xclip -i: {status}");
        }
        Ok(())
    }

    /// The X CLIPBOARD selection's text (`xclip -o`); an error when no client owns it.
    pub async fn clipboard(&self) -> anyhow::Result<String> {
        self.output("xclip", &["-selection", "clipboard", "-o"])
            .await
    }
}

impl Drop for Xvnc {
    fn drop(&mut self) {
        terminate_x_server(&mut self.server);
    }
}

/// `W x H` from xdpyinfo's `  dimensions:    1024x768 pixels (...)` line.
fn parse_dimensions(info: &str) -> Option<(u16, u16)> {
    let size = info
        .lines()
        .find_map(|l| l.trim().strip_prefix("dimensions:"))?
        .split_whitespace()
        .next()?;
    let (w, h) = size.split_once('x')?;
    Some((w.parse().ok()?, h.parse().ok()?))
}

/// Xvnc on a display it picks (`-displayfd`), RFB on 127.0.0.1:`port`, no VNC
/// authentication, every viewer shared. `-noreset`: as for Xvfb.
async fn start_xvnc(width: u16, height: u16, port: u16) -> anyhow::Result<(Child, String)> {
    let mut xvnc = Command::new("Xvnc");
    xvnc.args(["-geometry", &format!("{width}x{height}"), "-depth", "24"])
        .args(["-rfbport", &port.to_string(), "-localhost"])
        .args(["-SecurityTypes", "None", "-AlwaysShared"]);
    let (mut child, display) = start_x_server(xvnc, "Xvnc").await?;
    // The display is reported once the server is up; its RFB listener should be too,
    // but a failed bind only shows as a refused connection: check it.
    let listening = tokio::time::timeout(crate::WAIT, async {
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return true;
            }
            if matches!(child.try_wait(), Ok(Some(_))) {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or(false);
    if !listening {
        let _ = child.start_kill();
        bail!("Xvnc on {display} is not listening on {port}");
    }
    Ok((child, display))
}

#[cfg(test)]
mod tests {
    #[test]
    fn xdpyinfo_dimensions() {
        let info = "screen #0:\n  dimensions:    1000x700 pixels (264x185 millimeters)\n";
        assert_eq!(super::parse_dimensions(info), Some((1000, 700)));
        assert_eq!(super::parse_dimensions("screen #0:\n"), None);
    }

    /// The fixture itself: its screen has the size asked for, its port speaks RFB, and
    /// the X clipboard round-trips through `xclip`.
    #[tokio::test]
    async fn xvnc_starts_with_its_size_and_runs_x_clients() {
        if !super::xvnc_required() {
            return;
        }
        let xvnc = super::Xvnc::start(800, 600).await.expect("start Xvnc");
        assert_eq!(xvnc.screen_size().await.expect("xdpyinfo"), (800, 600));
        let mut rfb = tokio::net::TcpStream::connect(("127.0.0.1", xvnc.vnc_port))
            .await
            .expect("connect to Xvnc");
        let mut version = [0u8; 12];
        tokio::io::AsyncReadExt::read_exact(&mut rfb, &mut version)
            .await
            .expect("RFB version");
        assert_eq!(&version[..4], b"RFB ");
        xvnc.set_clipboard("from the fixture")
            .await
            .expect("xclip -i");
        assert_eq!(
            xvnc.clipboard().await.expect("xclip -o"),
            "from the fixture"
        );
    }
}
