//! A socket.io viewer: the official npm `socket.io-client`, run by node
//! (`tests/socketio/client.mjs`), driven over its stdin and stdout.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// Something that happened to the socket.
#[derive(Debug, Clone, PartialEq)]
pub enum SioEvent {
    Connect,
    ConnectError(String),
    Data(Vec<u8>),
    /// A `vnc:event` payload.
    Room(Value),
    /// A `vnc:resized` payload: the answer to a `vnc:resize`.
    Resized(Value),
    /// The `vnc:end` payload.
    End(Value),
    /// The acknowledgement of an event sent with [`SioClient::emit`].
    Ack(Value),
    /// Another event of the relay's (`vnc:self`, `vnc:presence`, `vnc:control`,
    /// `vnc:control:requested`) and its payload.
    Named(String, Value),
    Disconnect(String),
}

pub struct SioClient {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    /// Events that arrived while [`SioClient::emit`] waited for its ack, in order; the
    /// next reads return them first.
    held: VecDeque<SioEvent>,
    /// Named events that arrived while an RFB read waited for data, in order;
    /// [`SioClient::expect_named`] looks at them first.
    named: VecDeque<(String, Value)>,
}

fn client_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("socketio")
}

/// Whether node and the client's npm packages are here. Under `CI=true` their absence
/// fails the test; elsewhere the test is skipped, loudly.
pub fn socketio_client_available() -> bool {
    let node = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let packages = client_dir().join("node_modules/socket.io-client").is_dir();
    if node && packages {
        return true;
    }
    let why = if node {
        "tests/socketio/node_modules is missing: run `npm ci --prefix tests/socketio`"
    } else {
        "node is not installed"
    };
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "socket.io tests need node and socket.io-client under CI: {why}"
    );
    eprintln!("\n!!! SKIPPING socket.io test: {why} !!!\n");
    false
}

impl SioClient {
    /// Starts a client with raw options (see client.mjs) and returns before it connects.
    pub async fn start(relay: SocketAddr, mut options: Value) -> anyhow::Result<SioClient> {
        options["url"] = json!(format!("http://{relay}"));
        let mut child = Command::new("node")
            .arg(client_dir().join("client.mjs"))
            .arg(options.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("starting node")?;
        let stdin = child.stdin.take().context("stdin")?;
        let stdout = child.stdout.take().context("stdout")?;
        Ok(SioClient {
            child,
            stdin,
            lines: BufReader::new(stdout).lines(),
            held: VecDeque::new(),
            named: VecDeque::new(),
        })
    }

    /// Connects with `auth.token` and `?containerId=`; fails on `connect_error`.
    pub async fn connect(relay: SocketAddr, token: &str, cid: &str) -> anyhow::Result<SioClient> {
        let mut client = Self::start(relay, json!({ "token": token, "containerId": cid })).await?;
        match client.next().await? {
            SioEvent::Connect => Ok(client),
            other => bail!("expected connect, got {other:?}"),
        }
    }

    /// The next event, within [`crate::WAIT`].
    pub async fn next(&mut self) -> anyhow::Result<SioEvent> {
        if let Some(held) = self.held.pop_front() {
            return Ok(held);
        }
        let line = tokio::time::timeout(crate::WAIT, self.lines.next_line())
            .await
            .context("no socket.io event in time")??
            .context("socket.io client exited")?;
        let v: Value = serde_json::from_str(&line).with_context(|| line.clone())?;
        let text = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
        Ok(match v["ev"].as_str().unwrap_or_default() {
            "connect" => SioEvent::Connect,
            "connect_error" => SioEvent::ConnectError(text("message")),
            "data" => SioEvent::Data(B64.decode(text("b64"))?),
            "vnc:event" => SioEvent::Room(v["payload"].clone()),
            "vnc:resized" => SioEvent::Resized(v["payload"].clone()),
            "vnc:end" => SioEvent::End(v["payload"].clone()),
            "disconnect" => SioEvent::Disconnect(text("reason")),
            "ack" => SioEvent::Ack(v["payload"].clone()),
            name @ ("vnc:self" | "vnc:presence" | "vnc:control" | "vnc:control:requested") => {
                SioEvent::Named(name.to_owned(), v["payload"].clone())
            }
            other => bail!("unknown event {other}"),
        })
    }

    /// Skips events until one `pick` accepts.
    pub async fn expect<T>(
        &mut self,
        what: &str,
        mut pick: impl FnMut(&SioEvent) -> Option<T>,
    ) -> anyhow::Result<T> {
        loop {
            let ev = self
                .next()
                .await
                .with_context(|| format!("waiting for {what}"))?;
            if let Some(v) = pick(&ev) {
                return Ok(v);
            }
        }
    }

    /// Waits for the next `event` (a [`SioEvent::Named`] one) whose payload `accept`s,
    /// and returns the payload.
    pub async fn expect_named(
        &mut self,
        event: &str,
        accept: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Value> {
        while let Some((name, payload)) = self.named.pop_front() {
            if name == event && accept(&payload) {
                return Ok(payload);
            }
        }
        self.expect(event, |e| match e {
            SioEvent::Named(name, p) if name == event && accept(p) => Some(p.clone()),
            _ => None,
        })
        .await
    }

    /// Keeps a named event read by someone waiting for other events, for
    /// [`SioClient::expect_named`].
    pub fn keep_named(&mut self, name: String, payload: Value) {
        self.named.push_back((name, payload));
    }

    /// Waits for `vnc:end` and returns its code and reason.
    pub async fn expect_end(&mut self) -> anyhow::Result<(u16, String)> {
        self.expect("vnc:end", |e| match e {
            SioEvent::End(p) => Some((
                p["code"].as_u64().unwrap_or_default() as u16,
                p["reason"].as_str().unwrap_or_default().to_owned(),
            )),
            _ => None,
        })
        .await
    }

    /// Waits for a `vnc:event` of type `kind` and returns it.
    pub async fn expect_room_event(&mut self, kind: &str) -> anyhow::Result<Value> {
        self.expect(kind, |e| match e {
            SioEvent::Room(p) if p["type"] == kind => Some(p.clone()),
            _ => None,
        })
        .await
    }

    pub async fn command(&mut self, cmd: Value) -> anyhow::Result<()> {
        self.stdin.write_all(format!("{cmd}\n").as_bytes()).await?;
        Ok(())
    }

    /// `vnc:data` with `bytes` as one binary attachment.
    pub async fn send(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.command(json!({ "cmd": "send", "b64": B64.encode(bytes) }))
            .await
    }

    /// Emits `event` with `payload` and waits for its acknowledgement. What arrives
    /// before the ack (the relay may forward the VNC server's reply first) is kept for
    /// the next reads.
    pub async fn emit(&mut self, event: &str, payload: Value) -> anyhow::Result<Value> {
        self.command(json!({ "cmd": "emit", "event": event, "payload": payload }))
            .await?;
        let mut before = VecDeque::new();
        let ack = loop {
            match self.next().await.context("waiting for ack")? {
                SioEvent::Ack(p) => break p,
                other => before.push_back(other),
            }
        };
        // `next` took the earlier held events first: `before` has them all, in order.
        self.held = before;
        Ok(ack)
    }

    /// A browser's side of the RFB handshake at once, without reading: version 3.8,
    /// security None, shared ClientInit.
    pub async fn send_handshake(&mut self) -> anyhow::Result<()> {
        for part in [&b"RFB 003.008\n"[..], &[1], &[1]] {
            self.send(part).await?;
        }
        Ok(())
    }

    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }
}
