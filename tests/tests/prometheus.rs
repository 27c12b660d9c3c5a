//! `deploy/prometheus/` and `deploy/grafana/`: promtool accepts the scrape config and
//! the rules, every alert's unit tests pass (each alert has a case where it fires and
//! one where it doesn't), promtool parses every expression of the dashboard, and a real
//! Prometheus scraping a real relay and control finds every series the rules and the
//! dashboard read, answers every dashboard query, loads the rules, and raises the Redis
//! alerts when Redis goes away.
#![forbid(unsafe_code)]

use std::time::Duration;

use vnc_tests::control::{ControlProcess, Identity};
use vnc_tests::keys::TestKeys;
use vnc_tests::process::eventually;
use vnc_tests::prometheus::{
    PrometheusServer, dashboard, dashboard_exprs, dashboard_panels, dashboard_variable_series,
    deploy_dir, encode, grafana_expand, prometheus_required, promtool, rule_exprs, series_names,
    yaml_files,
};
use vnc_tests::redis::RedisServer;
use vnc_tests::relay::RelayProcess;

/// Bound on waits for Prometheus (it scrapes and evaluates every second here).
const PROMETHEUS_WAIT: Duration = Duration::from_secs(30);

fn rule_texts() -> Vec<String> {
    yaml_files("rules")
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect()
}

/// The names of the rule files' rules of one kind: `- KIND: NAME` lines (`alert`,
/// `record`).
fn rule_names(kind: &str) -> Vec<String> {
    let prefix = format!("- {kind}:");
    rule_texts()
        .iter()
        .flat_map(|t| {
            t.lines()
                .filter_map(|l| l.trim().strip_prefix(&prefix).map(|n| n.trim().to_owned()))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn promtool_accepts_the_config_and_rules_and_every_alert_has_passing_tests() {
    if !prometheus_required() {
        return;
    }
    let (ok, out) = promtool(&["check", "config", "prometheus.yml"]);
    assert!(ok, "promtool check config:\n{out}");
    let rules: Vec<String> = yaml_files("rules")
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    assert!(!rules.is_empty());
    let mut args = vec!["check", "rules"];
    args.extend(rules.iter().map(String::as_str));
    let (ok, out) = promtool(&args);
    assert!(ok, "promtool check rules:\n{out}");

    let tests: Vec<String> = yaml_files("tests")
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let mut args = vec!["test", "rules"];
    args.extend(tests.iter().map(String::as_str));
    let (ok, out) = promtool(&args);
    assert!(ok, "promtool test rules:\n{out}");
    assert!(!out.contains("FAILED"), "{out}");

    // Every alert has a case where it fires and one where it stays quiet.
    let cases: String = tests
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    let mut fires = Vec::new();
    let mut quiet = Vec::new();
    let mut lines = cases.lines();
    while let Some(line) = lines.next() {
        if let Some(name) = line.trim().strip_prefix("alertname:") {
            let expected = lines.next().unwrap_or_default().trim();
            if expected == "exp_alerts: []" {
                quiet.push(name.trim().to_owned());
            } else if expected == "exp_alerts:" {
                fires.push(name.trim().to_owned());
            }
        }
    }
    let alerts = rule_names("alert");
    assert!(alerts.len() >= 15, "{alerts:?}");
    for alert in &alerts {
        assert!(fires.contains(alert), "no test where {alert} fires");
        assert!(quiet.contains(alert), "no test where {alert} stays quiet");
    }
}

#[test]
fn the_dashboard_is_provisioning_ready_and_promtool_parses_every_expression() {
    let dashboard = dashboard();
    assert!(dashboard["uid"].as_str().is_some_and(|u| !u.is_empty()));
    // Provisioned dashboards carry no numeric id: Grafana assigns one.
    assert!(dashboard.get("id").is_none_or(|id| id.is_null()));
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    let variable = |name: &str| variables.iter().find(|v| v["name"] == name).cloned();
    assert_eq!(variable("datasource").unwrap()["type"], "datasource");
    assert_eq!(variable("datasource").unwrap()["query"], "prometheus");
    for name in ["node", "control"] {
        let v = variable(name).unwrap_or_else(|| panic!("no {name} variable"));
        assert_eq!(v["includeAll"], true, "{v}");
        assert_eq!(v["allValue"], ".*", "{v}");
    }

    let panels = dashboard_panels(&dashboard);
    let mut ids: Vec<u64> = panels.iter().map(|p| p["id"].as_u64().unwrap()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), panels.len(), "panel ids repeat");
    for panel in &panels {
        assert_eq!(
            panel["datasource"]["uid"], "${datasource}",
            "{}",
            panel["title"]
        );
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{} has no query", panel["title"]);
        for target in targets {
            let expr = target["expr"].as_str().unwrap();
            assert_eq!(target["datasource"]["uid"], "${datasource}", "{expr}");
            // The per-node view: every relay series follows the node variable, every
            // control series the control variable.
            if expr.contains("vnc_relay_") {
                assert!(expr.contains(r#"instance=~"$node""#), "{expr}");
            }
            if expr.contains("vnc_control_") {
                assert!(expr.contains(r#"instance=~"$control""#), "{expr}");
            }
        }
    }
    let exprs = dashboard_exprs(&dashboard);
    assert!(exprs.len() >= 20, "{exprs:?}");
    for needed in [
        "vnc_relay_sessions_active",
        "vnc_relay_sessions_total",
        "vnc_relay_bytes_total",
        "vnc_relay_upstream_connect_duration_seconds_bucket",
        "vnc_relay_auth_failures_total",
        "vnc_control_kicks_total",
        "vnc_control_queue_depth",
        "vnc_control_jobs_total",
        "vnc_control_job_duration_seconds_bucket",
    ] {
        assert!(
            exprs
                .iter()
                .any(|e| series_names(e).iter().any(|n| n == needed)),
            "no panel reads {needed}"
        );
    }

    if !prometheus_required() {
        return;
    }
    // promtool parses each expression as a recording rule's.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, expr) in exprs.iter().enumerate() {
        let expr = grafana_expand(expr, "5m");
        rules.push_str(&format!(
            "      - record: dashboard:expr_{i}\n        expr: {}\n",
            serde_json::to_string(&expr).unwrap()
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboard.yml");
    std::fs::write(&file, &rules).unwrap();
    let (ok, out) = promtool(&["check", "rules", file.to_str().unwrap()]);
    assert!(
        ok,
        "promtool check rules on the dashboard's expressions:\n{out}\n{rules}"
    );
    assert!(
        out.contains(&format!("{} rules found", exprs.len())),
        "{out}"
    );
}

#[test]
fn series_names_are_read_from_rule_expressions() {
    let exprs = rule_exprs(
        "      - record: a:b:sum\n        expr: sum without (transport) (vnc_x_total)\n\
         \x20     - alert: A\n        expr: >-\n          rate(vnc_y_total{outcome=~\"a|b\"}[5m]) / a:b:sum > 0.2\n\
         \x20         and on (instance) up{job=\"j\"} == 0\n        for: 1m\n",
    );
    assert_eq!(exprs.len(), 2, "{exprs:?}");
    assert_eq!(series_names(&exprs[0]), ["vnc_x_total"]);
    assert_eq!(series_names(&exprs[1]), ["vnc_y_total", "a:b:sum", "up"]);
}

#[tokio::test]
async fn a_real_prometheus_finds_every_series_the_rules_and_the_dashboard_read() {
    if !prometheus_required() {
        return;
    }
    let mut redis = RedisServer::start().await.unwrap();
    let keys = TestKeys::new();
    let identity = Identity::new();
    let relay = RelayProcess::start(&redis.url(), &keys.public, &[])
        .await
        .unwrap();
    let control =
        ControlProcess::start_static(&redis.url(), &keys, &identity, &[("c1", "u1", "t1")])
            .await
            .unwrap();
    relay.wait_ready().await;
    // One API request (refused: no caller token), so control's request series exist.
    let (status, _) = vnc_tests::ws::http_get(control.api, "/v1/nodes")
        .await
        .unwrap();
    assert_eq!(status, 401);

    // The shipped scrape config's jobs, pointed at this test's daemons, every second.
    let rules = deploy_dir().join("rules").canonicalize().unwrap();
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
         rule_files:\n  - {}/*.yml\n\
         scrape_configs:\n\
         \x20 - job_name: vnc-relay\n    static_configs:\n      - targets: ['{}']\n\
         \x20 - job_name: vnc-control\n    static_configs:\n      - targets: ['{}']\n",
        rules.display(),
        relay.admin,
        control.admin,
    );
    let prometheus = PrometheusServer::start(&config).await.unwrap();

    eventually("both targets up", PROMETHEUS_WAIT, || async {
        let targets = prometheus.api("/api/v1/targets").await.ok()?;
        let active = targets["activeTargets"].as_array()?;
        let up = |job: &str| {
            active
                .iter()
                .any(|t| t["labels"]["job"] == job && t["health"] == "up")
        };
        (up("vnc-relay") && up("vnc-control")).then_some(())
    })
    .await;

    // Every series an expression reads (exported ones from the first scrape on) and
    // every recorded one (once its rule has run: dashboards read them too).
    let mut names: Vec<String> = rule_texts()
        .iter()
        .flat_map(|t| rule_exprs(t))
        .flat_map(|e| series_names(&e))
        .chain(rule_names("record"))
        .collect();
    names.sort();
    names.dedup();
    for name in ["up", "vnc_relay_ready", "vnc_control_queue_depth"] {
        assert!(names.iter().any(|n| n == name), "{name} not in {names:?}");
    }
    for name in &names {
        eventually(
            &format!("series {name} in Prometheus"),
            PROMETHEUS_WAIT,
            || async {
                let series = prometheus
                    .api(&format!("/api/v1/series?match%5B%5D={}", encode(name)))
                    .await
                    .ok()?;
                (!series.as_array()?.is_empty()).then_some(())
            },
        )
        .await;
    }

    // Every series the dashboard reads is in the scrape, and every panel's query
    // answers with data (Grafana's "All" for the variables).
    let exported: Vec<String> = prometheus
        .api("/api/v1/label/__name__/values")
        .await
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    let dashboard = dashboard();
    let mut read: Vec<String> = dashboard_exprs(&dashboard)
        .iter()
        .flat_map(|e| series_names(e))
        .chain(dashboard_variable_series(&dashboard))
        .collect();
    read.sort();
    read.dedup();
    assert!(read.len() >= 15, "{read:?}");
    for name in &read {
        assert!(
            exported.contains(name),
            "the dashboard reads {name}, not exported: {exported:?}"
        );
    }
    for expr in dashboard_exprs(&dashboard) {
        let expr = grafana_expand(&expr, "5s");
        eventually(&format!("data for {expr}"), PROMETHEUS_WAIT, || async {
            (!prometheus.query(&expr).await.ok()?.is_empty()).then_some(())
        })
        .await;
    }

    // The rule files are loaded: every alert and recording rule is listed.
    let loaded = prometheus.api("/api/v1/rules").await.unwrap();
    let listed: Vec<String> = loaded["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .filter_map(|r| r["name"].as_str().map(str::to_owned))
        .collect();
    for name in rule_names("alert").into_iter().chain(rule_names("record")) {
        assert!(listed.contains(&name), "{name} not loaded: {listed:?}");
    }
    for group in loaded["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            assert_eq!(rule["health"], "ok", "{rule}");
        }
    }

    // A healthy stack raises nothing, and reads as healthy.
    let one = |v: &[serde_json::Value]| v.len() == 1 && v[0]["value"][1] == "1";
    assert!(one(&prometheus.query("vnc_relay_ready").await.unwrap()));
    assert!(one(&prometheus
        .query("vnc_control_redis_connected")
        .await
        .unwrap()));
    let max = prometheus.query("vnc_relay_max_sessions").await.unwrap();
    assert_eq!(max.len(), 1, "{max:?}");
    assert_ne!(max[0]["value"][1], "0", "{max:?}");
    let alerts = prometheus.query("ALERTS").await.unwrap();
    assert!(alerts.is_empty(), "alerts on a healthy stack: {alerts:?}");

    // Redis goes away: both daemons say so, and the alerts go pending (they fire once
    // their `for:` has passed, which the promtool tests cover).
    redis.stop(false).await;
    for alert in [
        "VncRelayRedisUnreachable",
        "VncControlRedisUnreachable",
        "VncRelayNotReady",
    ] {
        eventually(&format!("{alert} pending"), PROMETHEUS_WAIT, || async {
            let query = format!("ALERTS{{alertname=\"{alert}\",alertstate=\"pending\"}}");
            (!prometheus.query(&query).await.ok()?.is_empty()).then_some(())
        })
        .await;
    }
}
