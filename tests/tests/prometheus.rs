//! `deploy/prometheus/`: promtool accepts the scrape config and the rules, every alert's
//! unit tests pass (each alert has a case where it fires and one where it doesn't), and
//! a real Prometheus scraping a real relay and control finds every series the rules
//! read, loads the rules, and raises the Redis alerts when Redis goes away.
#![forbid(unsafe_code)]

use std::time::Duration;

use vnc_tests::control::{ControlProcess, Identity};
use vnc_tests::keys::TestKeys;
use vnc_tests::process::eventually;
use vnc_tests::prometheus::{
    PrometheusServer, deploy_dir, encode, prometheus_required, promtool, rule_exprs, series_names,
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

/// `- alert: NAME` lines of the rule files.
fn alert_names() -> Vec<String> {
    rule_texts()
        .iter()
        .flat_map(|t| {
            t.lines()
                .filter_map(|l| {
                    l.trim()
                        .strip_prefix("- alert:")
                        .map(|n| n.trim().to_owned())
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// `- record: NAME` lines of the rule files.
fn recorded_names() -> Vec<String> {
    rule_texts()
        .iter()
        .flat_map(|t| {
            t.lines()
                .filter_map(|l| {
                    l.trim()
                        .strip_prefix("- record:")
                        .map(|n| n.trim().to_owned())
                })
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
    let alerts = alert_names();
    assert!(alerts.len() >= 15, "{alerts:?}");
    for alert in &alerts {
        assert!(fires.contains(alert), "no test where {alert} fires");
        assert!(quiet.contains(alert), "no test where {alert} stays quiet");
    }
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
async fn a_real_prometheus_finds_every_series_the_rules_read_and_loads_the_rules() {
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
        .chain(recorded_names())
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

    // The rule files are loaded: every alert and recording rule is listed.
    let loaded = prometheus.api("/api/v1/rules").await.unwrap();
    let listed: Vec<String> = loaded["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .filter_map(|r| r["name"].as_str().map(str::to_owned))
        .collect();
    for name in alert_names().into_iter().chain(recorded_names()) {
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
