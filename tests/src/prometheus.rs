//! A real Prometheus (Debian's `prometheus` package) on a free loopback port with its
//! own storage, its HTTP API, promtool, and the rule files in `deploy/prometheus/`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

use crate::desktop::{find_program, required};
use crate::redis::free_port;

/// True if `prometheus` and `promtool` are installed. If one is missing: under
/// `CI=true` this panics, otherwise it prints a loud `SKIPPED` line and returns false.
pub fn prometheus_required() -> bool {
    let missing: Vec<String> = ["prometheus", "promtool"]
        .iter()
        .filter(|program| find_program(program).is_none())
        .map(|program| format!("{program} (Debian package prometheus)"))
        .collect();
    required("Prometheus", &missing)
}

/// `deploy/prometheus/` of the workspace.
pub fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus")
}

/// The `*.yml` files of `deploy/prometheus/<sub>`, sorted.
pub fn yaml_files(sub: &str) -> Vec<PathBuf> {
    let dir = deploy_dir().join(sub);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .filter_map(|entry| Some(entry.ok()?.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .collect();
    files.sort();
    files
}

/// Runs promtool with `args` in `deploy/prometheus/`; its exit status and output.
pub fn promtool(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new("promtool")
        .args(args)
        .current_dir(deploy_dir())
        .output()
        .expect("running promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The `expr:` texts of a rule file (one line, or a `>-` block), in order.
pub fn rule_exprs(rules: &str) -> Vec<String> {
    let mut exprs = Vec::new();
    let mut lines = rules.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(rest) = line.trim_start().strip_prefix("expr:") else {
            continue;
        };
        let rest = rest.trim();
        if !matches!(rest, ">-" | ">" | "|" | "|-") {
            exprs.push(rest.to_owned());
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        let mut block = Vec::new();
        while let Some(next) = lines.peek() {
            if next.len() - next.trim_start().len() <= indent {
                break;
            }
            block.push(next.trim());
            lines.next();
        }
        exprs.push(block.join(" "));
    }
    exprs
}

/// The series names a PromQL expression reads (identifiers that are not functions,
/// keywords or label names): exported names (no `:`) and recorded ones (with `:`).
pub fn series_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while !rest.is_empty() {
        // Skip label matchers, string literals and durations: `{...}`, `"..."`, `[...]`.
        if let Some(close) = match rest.as_bytes()[0] {
            b'{' => rest.find('}'),
            b'"' => rest[1..].find('"').map(|i| i + 1),
            b'[' => rest.find(']'),
            _ => None,
        } {
            rest = &rest[close + 1..];
            continue;
        }
        let word_len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(rest.len());
        if word_len == 0 {
            rest = &rest[rest.chars().next().map_or(1, char::len_utf8)..];
            continue;
        }
        let word = &rest[..word_len];
        rest = &rest[word_len..];
        // A grouping's label list: `by (a, b)`, `without (a)`, `on (a)`, ...
        if matches!(
            word,
            "by" | "without" | "on" | "ignoring" | "group_left" | "group_right"
        ) && rest.trim_start().starts_with('(')
        {
            rest = rest.find(')').map_or("", |close| &rest[close + 1..]);
            continue;
        }
        let called = rest.trim_start().starts_with('(');
        let is_keyword = matches!(
            word,
            "sum" | "max" | "min" | "avg" | "count" | "and" | "or" | "unless" | "offset" | "bool"
        );
        let is_number = word.starts_with(|c: char| c.is_ascii_digit());
        if !called && !is_keyword && !is_number && !names.iter().any(|n| n == word) {
            names.push(word.to_owned());
        }
    }
    names
}

/// A running Prometheus, killed on drop with its storage.
pub struct PrometheusServer {
    _child: Child,
    pub addr: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

impl PrometheusServer {
    /// Starts Prometheus with `config` (prometheus.yml text) and waits for `/-/ready`.
    pub async fn start(config: &str) -> anyhow::Result<PrometheusServer> {
        for _ in 0..5 {
            if let Some(server) = Self::try_start(config, free_port()).await? {
                return Ok(server);
            }
        }
        bail!("prometheus would not start")
    }

    /// `None` if it exited before answering (its port was taken meanwhile).
    async fn try_start(config: &str, port: u16) -> anyhow::Result<Option<PrometheusServer>> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("prometheus.yml");
        std::fs::write(&file, config)?;
        let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
        let mut child = Command::new("prometheus")
            .arg(format!("--config.file={}", file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting prometheus")?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while tokio::time::Instant::now() < deadline {
            if child.try_wait()?.is_some() {
                let out = child.wait_with_output().await?;
                let log = String::from_utf8_lossy(&out.stderr);
                if log.contains("address already in use") {
                    return Ok(None);
                }
                bail!("prometheus exited: {log}");
            }
            if crate::ws::http_get(addr, "/-/ready")
                .await
                .is_ok_and(|(status, _)| status == 200)
            {
                return Ok(Some(PrometheusServer {
                    _child: child,
                    addr,
                    _dir: dir,
                }));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("prometheus did not become ready in 30 s")
    }

    /// GET an API path (HTTP/1.0: the answer is never chunked); the `data` field of a
    /// successful answer.
    pub async fn api(&self, path_and_query: &str) -> anyhow::Result<serde_json::Value> {
        let req = format!(
            "GET {path_and_query} HTTP/1.0\r\nHost: {}\r\n\r\n",
            self.addr
        );
        let (status, body) = crate::ws::raw_http(self.addr, req.as_bytes()).await?;
        let mut answer: serde_json::Value =
            serde_json::from_str(&body).with_context(|| format!("{status}: {body}"))?;
        if status != 200 || answer["status"] != "success" {
            bail!("{path_and_query}: {status} {body}");
        }
        Ok(answer["data"].take())
    }

    /// The result vector of an instant query.
    pub async fn query(&self, promql: &str) -> anyhow::Result<Vec<serde_json::Value>> {
        let data = self
            .api(&format!("/api/v1/query?query={}", encode(promql)))
            .await?;
        Ok(data["result"].as_array().cloned().unwrap_or_default())
    }
}

/// Percent-encodes a query string value.
pub fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' | b'.' | b'~' | b':' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `deploy/grafana/dashboards/vnc-relay.json`, parsed.
pub fn dashboard() -> serde_json::Value {
    let file =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/dashboards/vnc-relay.json");
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

/// The panels of a dashboard, rows' nested panels included (rows themselves left out).
pub fn dashboard_panels(dashboard: &serde_json::Value) -> Vec<serde_json::Value> {
    let mut panels = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        if panel["type"] == "row" {
            panels.extend(panel["panels"].as_array().into_iter().flatten().cloned());
        } else {
            panels.push(panel.clone());
        }
    }
    panels
}

/// Every PromQL expression of a dashboard's panels, as written (Grafana variables in).
pub fn dashboard_exprs(dashboard: &serde_json::Value) -> Vec<String> {
    dashboard_panels(dashboard)
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(str::to_owned))
        .collect()
}

/// The series the dashboard's query variables read (`label_values(SERIES, label)`).
pub fn dashboard_variable_series(dashboard: &serde_json::Value) -> Vec<String> {
    dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["type"] == "query")
        .filter_map(|v| {
            let q = v["definition"].as_str()?;
            let inner = q.strip_prefix("label_values(")?.strip_suffix(')')?;
            Some(inner.split(',').next()?.trim().to_owned())
        })
        .collect()
}

/// An expression with Grafana's variables replaced the way Grafana would: every node
/// and replica selected (`.*`, the variables' "All"), and `rate_interval` for
/// `$__rate_interval`.
pub fn grafana_expand(expr: &str, rate_interval: &str) -> String {
    expr.replace("$__rate_interval", rate_interval)
        .replace("$node", ".*")
        .replace("$control", ".*")
}
