//! The viewer page in a real browser: headless chromium driven through
//! `tests/browser/driver.mjs` (playwright-core, one JSON command per line), and the
//! stack the page talks to (Redis, a key pair, the X desktop as container `desk`, relays
//! serving `web/`). Used by `tests/tests/browser.rs` and `tests/tests/browser_sharing.rs`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use vnc_shared::token::Scope;

use crate::desktop::{Desktop, Xvnc, desktop_required, find_program, required, xvnc_required};
use crate::keys::TestKeys;
use crate::process::eventually;
use crate::redis::RedisServer;
use crate::relay::RelayProcess;

/// Colours the tests paint the desktop's root window with (`xsetroot -solid`).
pub const TEAL: (u8, u8, u8) = (0x20, 0x9a, 0x8c);
pub const ORANGE: (u8, u8, u8) = (0xe8, 0x7a, 0x1c);
pub const PURPLE: (u8, u8, u8) = (0x6a, 0x3d, 0x9a);

/// A spot of the root window no test window covers (the xterms sit top left).
pub const BACKGROUND_SPOT: (u16, u16) = (980, 720);

/// Per channel: the relay and x11vnc carry exact pixels, but x11vnc may pick a lossy
/// encoding (Tight/JPEG) for some updates.
pub const TOLERANCE: u8 = 6;

/// Bound on what the page waits for (connect, reconnect through another node).
pub const PAGE_WAIT_MS: u64 = 15_000;

/// Bound on one page load in the driver (`open`), until the viewer is set up (the
/// driver's `waitForFunction` timeout).
const OPEN_WAIT_MS: u64 = 20_000;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

pub fn web_root() -> PathBuf {
    repo_root().join("web")
}

pub fn driver_script() -> PathBuf {
    repo_root().join("tests/browser/driver.mjs")
}

pub fn chromium_path() -> PathBuf {
    std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// True if the X desktop's programs, chromium, node and both npm folders are there;
/// under `CI=true` a missing part fails the test instead.
pub fn browser_required() -> bool {
    if !desktop_required() {
        return false;
    }
    let mut missing = Vec::new();
    if !chromium_path().is_file() {
        missing.push(format!(
            "{} (Debian package chromium)",
            chromium_path().display()
        ));
    }
    if find_program("node").is_none() {
        missing.push("node (Debian package nodejs)".into());
    }
    let npm_folders = [
        ("web", "node_modules/@novnc/novnc/core/rfb.js"),
        ("tests/browser", "node_modules/playwright-core/package.json"),
    ];
    for (folder, file) in npm_folders {
        if !repo_root().join(folder).join(file).is_file() {
            missing.push(format!("{folder}/{file} (`npm ci` in {folder})"));
        }
    }
    required("browser", &missing)
}

/// The stack of one browser test: Redis, a key pair, the desktop as container `desk`
/// of tenant `t1`, and one relay serving the viewer page.
pub struct BrowserStack {
    pub redis: RedisServer,
    pub keys: TestKeys,
    pub desktop: Desktop,
    pub relay: RelayProcess,
}

impl BrowserStack {
    /// Starts it; `relay_args` are extra flags of the relay.
    pub async fn start(relay_args: &[&str]) -> BrowserStack {
        let stack = BrowserStack::start_unregistered(relay_args).await;
        stack
            .redis
            .put_container("desk", "t1", "running", stack.desktop.vnc_port)
            .await;
        stack
    }

    /// The same without `desk`'s record in Redis, for a test whose control writes it.
    pub async fn start_unregistered(relay_args: &[&str]) -> BrowserStack {
        let redis = RedisServer::start().await.expect("redis");
        let keys = TestKeys::new();
        let desktop = Desktop::start().await.expect("desktop");
        let relay = start_relay(&redis, &keys, "relay-a", relay_args).await;
        BrowserStack {
            redis,
            keys,
            desktop,
            relay,
        }
    }

    /// The viewer page on `relay` for container `desk` with a fresh token of `scope`;
    /// `extra` is more of the fragment (`&transport=socketio`, `&relays=...`).
    pub fn page_url(&self, relay: &RelayProcess, scope: Scope, extra: &str) -> String {
        let token = self.keys.token("desk", scope);
        format!(
            "http://{}/#token={token}&containerId=desk{extra}",
            relay.public
        )
    }
}

/// The stack of a browser test on TigerVNC's Xvnc (which honours SetDesktopSize and
/// keeps the X and RFB clipboards in step): Redis, a key pair, Xvnc as container
/// [`XvncStack::CID`] of tenant `t1`, and one relay serving the viewer page.
pub struct XvncStack {
    pub redis: RedisServer,
    pub keys: TestKeys,
    pub xvnc: Xvnc,
    pub relay: RelayProcess,
}

impl XvncStack {
    pub const CID: &str = "xdesk";

    /// Starts it with a `width` × `height` X screen; `None` (after a loud skip line)
    /// when the browser or Xvnc is missing outside CI.
    pub async fn start((width, height): (u16, u16)) -> Option<XvncStack> {
        if !browser_required() || !xvnc_required() {
            return None;
        }
        let redis = RedisServer::start().await.expect("redis");
        let keys = TestKeys::new();
        let xvnc = Xvnc::start(width, height).await.expect("Xvnc");
        redis
            .put_container(Self::CID, "t1", "running", xvnc.vnc_port)
            .await;
        let relay = start_relay(&redis, &keys, "relay-a", &[]).await;
        Some(XvncStack {
            redis,
            keys,
            xvnc,
            relay,
        })
    }

    /// The viewer page for the desktop with `token`; `extra` is more of the fragment.
    pub fn url(&self, token: &str, extra: &str) -> String {
        format!(
            "http://{}/#token={token}&containerId={}{extra}",
            self.relay.public,
            Self::CID
        )
    }
}

/// A relay serving `web/` under its own node id.
pub async fn start_relay(
    redis: &RedisServer,
    keys: &TestKeys,
    node_id: &str,
    extra: &[&str],
) -> RelayProcess {
    let web_root = web_root();
    let mut args = vec!["--web-root", web_root.to_str().expect("utf-8 path")];
    args.extend_from_slice(extra);
    RelayProcess::start_node(node_id, &redis.url(), &keys.public, &args)
        .await
        .expect("start vnc-relay")
}

/// `tests/browser/driver.mjs`: headless chromium, one JSON command per line.
pub struct Browser {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl Browser {
    pub async fn start() -> Browser {
        let mut child = Command::new("node")
            .arg(driver_script())
            .env("CHROMIUM", chromium_path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start node tests/browser/driver.mjs");
        let stdin = child.stdin.take().expect("driver stdin");
        let stdout = BufReader::new(child.stdout.take().expect("driver stdout")).lines();
        Browser {
            child,
            stdin,
            stdout,
        }
    }

    /// Sends one command; its answer, or an error with the page's last console lines.
    pub async fn try_call(&mut self, cmd: Value) -> anyhow::Result<Value> {
        let wait_ms = cmd["timeoutMs"].as_u64().unwrap_or(PAGE_WAIT_MS);
        self.stdin
            .write_all(format!("{cmd}\n").as_bytes())
            .await
            .context("write to the driver")?;
        // Chromium's start-up counts against the first command; the driver bounds each
        // wait itself, this only catches a hung driver.
        let limit = Duration::from_millis(wait_ms) + Duration::from_secs(30);
        let line = tokio::time::timeout(limit, self.stdout.next_line())
            .await
            .with_context(|| format!("driver did not answer {cmd} in time"))??
            .with_context(|| format!("driver exited on {cmd}: {:?}", self.child.try_wait()))?;
        let answer: Value = serde_json::from_str(&line).context("driver answer")?;
        if answer["ok"] != true {
            bail!(
                "{}: {}\npage console: {}",
                cmd["cmd"],
                answer["error"],
                answer["console"]
            );
        }
        Ok(answer)
    }

    pub async fn call(&mut self, cmd: Value) -> Value {
        match self.try_call(cmd).await {
            Ok(v) => v,
            Err(e) => panic!("{e:#}"),
        }
    }

    /// Opens `url` in a fresh page; the driver tries a load Chromium aborted for a
    /// network change again (3 loads of at most [`OPEN_WAIT_MS`] each).
    pub async fn open(&mut self, url: &str) -> Value {
        self.call(json!({"cmd": "open", "url": url, "timeoutMs": 3 * OPEN_WAIT_MS}))
            .await
    }

    /// Waits until the page's status is `status` with at least `sessions` sessions
    /// set up since it loaded; the page's state then.
    pub async fn wait_state(&mut self, status: &str, sessions: u64) -> Value {
        self.call(json!({"cmd": "waitState", "status": status, "sessions": sessions, "timeoutMs": PAGE_WAIT_MS}))
            .await["state"]
            .clone()
    }

    /// Waits until the remote screen shows `rgb` at `spot` as the page draws it.
    pub async fn wait_pixel(&mut self, (x, y): (u16, u16), (r, g, b): (u8, u8, u8)) {
        self.call(json!({"cmd": "waitPixel", "x": x, "y": y, "rgb": [r, g, b],
                         "tolerance": TOLERANCE, "timeoutMs": PAGE_WAIT_MS}))
            .await;
    }

    pub async fn click(&mut self, (x, y): (u16, u16)) {
        self.call(json!({"cmd": "click", "x": x, "y": y})).await;
    }

    pub async fn type_text(&mut self, text: &str) {
        self.call(json!({"cmd": "type", "text": text})).await;
    }

    /// Waits until the page's `control.mode` is `mode` (`driving`, `waiting`, `view`,
    /// …); the page's state then.
    pub async fn wait_control(&mut self, mode: &str) -> Value {
        self.call(json!({"cmd": "waitControl", "mode": mode, "timeoutMs": PAGE_WAIT_MS}))
            .await["state"]
            .clone()
    }

    /// Waits until the JavaScript expression `expr` is true in the page; its state then.
    pub async fn wait_for(&mut self, expr: &str) -> Value {
        self.call(json!({"cmd": "waitFor", "expr": expr, "timeoutMs": PAGE_WAIT_MS}))
            .await["state"]
            .clone()
    }

    /// Clicks the page's element `selector` (a button of the page, not the screen).
    pub async fn press(&mut self, selector: &str) {
        self.call(json!({"cmd": "press", "selector": selector}))
            .await;
    }

    /// Types `text` into the page's input field `selector`.
    pub async fn fill(&mut self, selector: &str, text: &str) {
        self.call(json!({"cmd": "fill", "selector": selector, "text": text}))
            .await;
    }

    /// Waits until an element `selector` of the page is visible and says `text`.
    pub async fn wait_text(&mut self, selector: &str, text: &str) {
        self.call(json!({"cmd": "waitText", "selector": selector, "text": text, "timeoutMs": PAGE_WAIT_MS}))
            .await;
    }

    /// Resizes the page's viewport to `width` × `height` CSS pixels.
    pub async fn viewport(&mut self, width: u32, height: u32) {
        self.call(json!({"cmd": "viewport", "width": width, "height": height}))
            .await;
    }

    /// The JSON value of the JavaScript expression `expr` in the page.
    pub async fn eval(&mut self, expr: &str) -> Value {
        self.call(json!({"cmd": "eval", "expr": expr})).await["value"].clone()
    }

    /// Builds a file of `size` bytes in the page and drops it on the remote screen as
    /// a user's drag and drop would; the SHA-256 (hex) of the bytes the page made.
    pub async fn drop_file(&mut self, name: &str, size: u64, seed: u32) -> String {
        self.call(json!({"cmd": "dropFile", "name": name, "size": size, "seed": seed}))
            .await["sha256"]
            .as_str()
            .expect("a SHA-256")
            .to_owned()
    }

    /// Clicks `selector` and saves the download it starts to `path`; its suggested name.
    pub async fn download(&mut self, selector: &str, path: &Path) -> String {
        self.call(json!({"cmd": "download", "selector": selector,
                         "path": path.to_str().expect("utf-8 path"), "timeoutMs": PAGE_WAIT_MS}))
            .await["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The page's state (`window.vncViewer`).
    pub async fn state(&mut self) -> Value {
        self.call(json!({"cmd": "state"})).await["state"].clone()
    }

    pub async fn close(mut self) {
        let _ = self.try_call(json!({"cmd": "close"})).await;
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }
}

/// Waits until `file` holds `want` (what an xterm recorded).
pub async fn wait_typed(file: &Path, want: &str) {
    eventually(
        &format!("{want:?} typed into the xterm"),
        Duration::from_millis(PAGE_WAIT_MS),
        || async {
            std::fs::read_to_string(file)
                .ok()
                .filter(|got| got.contains(want))
                .map(drop)
        },
    )
    .await
}
