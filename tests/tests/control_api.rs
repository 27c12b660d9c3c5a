//! vnc-control end to end: the real binary against a real redis-server, with the real
//! relay, and containers on a real Docker engine where one is needed.
#![forbid(unsafe_code)]

use std::time::Duration;

use fred::prelude::*;
use serde_json::{Value, json};
use vnc_tests::control::{ControlProcess, DockerStack, Identity, docker_args, docker_stack};
use vnc_tests::fixture::Fixture;
use vnc_tests::keys::TestKeys;
use vnc_tests::process::eventually;
use vnc_tests::redis::RedisServer;
use vnc_tests::relay::RelayProcess;
use vnc_tests::rfb::RfbClient;

/// Polls a job until it is completed or failed; returns its record.
async fn wait_job(control: &ControlProcess, bearer: &str, job: &str, within: Duration) -> Value {
    control.wait_job(bearer, job, within).await
}

/// Asks control for a VNC token for container `cid`; returns the status and body.
async fn ask_token(c: &ControlProcess, bearer: &str, cid: &str, body: &Value) -> (u16, Value) {
    c.call(
        "POST",
        &format!("/v1/containers/{cid}/vnc-tokens"),
        Some(bearer),
        Some(body),
    )
    .await
    .unwrap()
}

/// Asks control for a desktop of `image`; returns the status and body.
async fn create_container(c: &ControlProcess, bearer: &str, image: &str) -> (u16, Value) {
    c.create_desktop(bearer, image).await
}

/// A stack for API tests without Docker: the static runtime declares container
/// `desk` (owner alice, tenant t1) served by the RFB fixture.
struct StaticStack {
    redis: RedisServer,
    identity: Identity,
    control: ControlProcess,
    _fixture: Fixture,
    _keys: TestKeys,
    _dir: tempfile::TempDir,
}

async fn static_stack() -> StaticStack {
    let redis = RedisServer::start().await.unwrap();
    let keys = TestKeys::new();
    let identity = Identity::new();
    let fixture = Fixture::start(&[]).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("control.toml");
    std::fs::write(
        &config,
        format!(
            "runtime = \"static\"\n[[static_containers]]\ncid = \"desk\"\nowner = \"alice\"\ntenant = \"t1\"\nhost = \"127.0.0.1\"\nport = {}\n",
            fixture.port()
        ),
    )
    .unwrap();
    let control = ControlProcess::start(
        &redis.url(),
        &keys,
        &identity,
        &[
            "--config",
            config.to_str().unwrap(),
            "--image",
            "desk-image",
        ],
    )
    .await
    .unwrap();
    StaticStack {
        redis,
        identity,
        control,
        _fixture: fixture,
        _keys: keys,
        _dir: dir,
    }
}

#[tokio::test]
async fn errors_are_enveloped_and_bodies_validated() {
    let s = static_stack().await;
    let alice = s.identity.token("alice", "t1", false);
    let c = &s.control;

    // No token, a forged one: 401 with the documented envelope.
    let (status, body) = c.call("GET", "/v1/containers", None, None).await.unwrap();
    assert_eq!(status, 401, "{body}");
    for field in [
        "statusCode",
        "error",
        "message",
        "path",
        "timestamp",
        "requestId",
    ] {
        assert!(!body[field].is_null(), "{field} missing in {body}");
    }
    assert_eq!(body["path"], "/v1/containers");
    let forged = Identity::new().token("alice", "t1", true);
    assert_eq!(
        c.call("GET", "/v1/containers", Some(&forged), None)
            .await
            .unwrap()
            .0,
        401
    );

    // Unknown fields and out-of-range values: 400 naming each problem.
    let (status, body) = c
        .call(
            "POST",
            "/v1/containers",
            Some(&alice),
            Some(&json!({"image": "desk-image", "resources": {"cpus": 1, "memory_mb": 256, "gpus": 1}, "color": "red"})),
        )
        .await
        .unwrap();
    assert_eq!(status, 400);
    let msg = body["message"].as_str().unwrap();
    assert!(
        msg.contains("\"resources.gpus\"") && msg.contains("\"color\""),
        "{msg}"
    );
    let (status, body) = c
        .call(
            "POST",
            "/v1/containers",
            Some(&alice),
            Some(&json!({"image": "bitcoin-miner", "resources": {"cpus": 99, "memory_mb": 1}})),
        )
        .await
        .unwrap();
    assert_eq!(status, 400);
    let msg = body["message"].as_str().unwrap();
    assert!(
        msg.contains("bitcoin-miner") && msg.contains("cpus") && msg.contains("memory_mb"),
        "{msg}"
    );

    // Malformed JSON, wrong types, oversized body.
    let (status, _) = c
        .call("POST", "/v1/containers", Some(&alice), Some(&json!("nope")))
        .await
        .unwrap();
    assert_eq!(status, 400);
    let huge = json!({"image": "x".repeat(100_000), "resources": {"cpus": 1, "memory_mb": 256}});
    assert_eq!(
        c.call("POST", "/v1/containers", Some(&alice), Some(&huge))
            .await
            .unwrap()
            .0,
        413
    );
    assert_eq!(
        c.call("GET", "/v1/nothing", Some(&alice), None)
            .await
            .unwrap()
            .0,
        404
    );
}

/// `"record": true` at create time lands on the container record, where the relays
/// read it (`relay_recording.rs` covers what a relay does with it).
#[tokio::test]
async fn containers_created_with_record_true_are_marked_for_recording() {
    let s = static_stack().await;
    let alice = s.identity.token("alice", "t1", false);
    let c = &s.control;
    let mut created = Vec::new();
    for record in [Some(true), None] {
        let mut body = json!({"image": "desk-image", "resources": {"cpus": 0.5, "memory_mb": 128}});
        if let Some(record) = record {
            body["record"] = json!(record);
        }
        let (status, answer) = c
            .call("POST", "/v1/containers", Some(&alice), Some(&body))
            .await
            .unwrap();
        assert_eq!(status, 202, "{answer}");
        created.push(answer["container_id"].as_str().unwrap().to_owned());
    }
    for (cid, recorded) in created.iter().zip([true, false]) {
        let field: Option<String> = s
            .redis
            .client
            .hget(format!("vnc:container:{cid}"), "record")
            .await
            .unwrap();
        assert_eq!(
            field.as_deref() == Some("true"),
            recorded,
            "{cid}: {field:?}"
        );
        let (status, view) = c
            .call("GET", &format!("/v1/containers/{cid}"), Some(&alice), None)
            .await
            .unwrap();
        assert_eq!(
            (status, view["record"].as_bool()),
            (200, Some(recorded)),
            "{view}"
        );
    }
    // Not a boolean: refused like any other malformed body.
    let body = json!({"image": "desk-image", "resources": {"cpus": 0.5, "memory_mb": 128}, "record": "yes"});
    let (status, _) = c
        .call("POST", "/v1/containers", Some(&alice), Some(&body))
        .await
        .unwrap();
    assert_eq!(status, 400);
}

#[tokio::test]
async fn tenants_are_isolated_and_token_scopes_follow_ownership() {
    let s = static_stack().await;
    let c = &s.control;
    let alice = s.identity.token("alice", "t1", false);
    let bob = s.identity.token("bob", "t1", false);
    let eve = s.identity.token("eve", "t2", true);
    let token = |scope: &str| json!({"scope": scope, "ttl_seconds": 60});

    let (status, body) = c
        .call("GET", "/v1/containers/desk", Some(&alice), None)
        .await
        .unwrap();
    assert_eq!(
        (status, body["state"].as_str()),
        (200, Some("running")),
        "{body}"
    );
    assert!(body.get("vnc_password").is_none());
    let (status, list) = c
        .call("GET", "/v1/containers", Some(&alice), None)
        .await
        .unwrap();
    assert_eq!((status, list["total"].as_u64()), (200, Some(1)), "{list}");

    // Another tenant sees nothing, even an admin: 404, not 403.
    assert_eq!(
        c.call("GET", "/v1/containers/desk", Some(&eve), None)
            .await
            .unwrap()
            .0,
        404
    );
    let (status, _) = ask_token(c, &eve, "desk", &token("view")).await;
    assert_eq!(status, 404);

    // The owner gets control; a colleague may view but not control.
    let (status, body) = ask_token(c, &alice, "desk", &token("control")).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["ws_url"]
            .as_str()
            .unwrap()
            .contains("/websockify?token=")
    );
    assert!(
        body["socketio_url"]
            .as_str()
            .unwrap()
            .contains("containerId=desk")
    );
    assert!(body["expires_at"].as_str().is_some());
    let view = ask_token(c, &bob, "desk", &token("view")).await;
    assert_eq!(view.0, 200);
    let ctl = ask_token(c, &bob, "desk", &token("control")).await;
    assert_eq!(ctl.0, 403);
    let long = ask_token(
        c,
        &alice,
        "desk",
        &json!({"scope": "view", "ttl_seconds": 86400}),
    )
    .await;
    assert_eq!(long.0, 400);

    // A stopped container gets no token, not even a view one.
    let fields = vec![
        ("owner", "alice"),
        ("tenant", "t1"),
        ("state", "stopped"),
        ("image", "desk-image"),
    ];
    let _: () = s
        .redis
        .client
        .hset("vnc:container:old", fields)
        .await
        .unwrap();
    let (status, body) = ask_token(c, &alice, "old", &token("view")).await;
    assert_eq!(status, 409, "{body}");
}

/// POST → start job completes → the container runs on Docker → a token from control
/// opens a relay session that completes the RFB handshake with the fixture inside the
/// container → DELETE → the container is gone, its record stopped, the events seen.
#[tokio::test]
async fn container_lifecycle_on_docker_through_the_relay() {
    let Some(DockerStack {
        redis,
        keys,
        identity,
    }) = docker_stack().await
    else {
        return;
    };
    let image = vnc_tests::docker::fixture_image();
    let relay = RelayProcess::start(&redis.url(), &keys.public, &[])
        .await
        .unwrap();
    let relay_url = format!("ws://{}", relay.public);
    let control = ControlProcess::start(
        &redis.url(),
        &keys,
        &identity,
        &docker_args(
            &image,
            &["--relay-url", &relay_url, "--start-timeout", "30s"],
        ),
    )
    .await
    .unwrap();
    let events = redis.client.clone_new();
    events.init().await.unwrap();
    let mut rx = events.message_rx();
    let _: () = events.subscribe("vnc:events").await.unwrap();

    let alice = identity.token("alice", "t1", false);
    let (status, created) = create_container(&control, &alice, &image).await;
    assert_eq!(status, 202, "{created}");
    let cid = created["container_id"].as_str().unwrap().to_owned();
    let job = wait_job(
        &control,
        &alice,
        created["job_id"].as_str().unwrap(),
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(job["state"], "completed", "{job}");
    assert_eq!(job["progress"], 100);
    let (_, c) = control
        .call("GET", &format!("/v1/containers/{cid}"), Some(&alice), None)
        .await
        .unwrap();
    assert_eq!(c["state"], "running", "{c}");

    let (status, tok) = control
        .call(
            "POST",
            &format!("/v1/containers/{cid}/vnc-tokens"),
            Some(&alice),
            Some(&json!({"scope": "control", "ttl_seconds": 60})),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{tok}");
    // The container demands VNC Authentication with the password control generated;
    // the relay answers it and offers the browser None: the browser knows no password.
    let mut rfb = RfbClient::connect(tok["ws_url"].as_str().unwrap())
        .await
        .unwrap();
    let init = rfb.handshake().await.unwrap();
    assert_eq!(init.name, "rfb-fixture");
    let rects = rfb.round_trip(init.width, init.height).await.unwrap();
    assert_eq!(rects[0].rgb(1, 1), (255, 0, 0));

    let (status, deleted) = control
        .call(
            "DELETE",
            &format!("/v1/containers/{cid}"),
            Some(&alice),
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, 202, "{deleted}");
    let job = wait_job(
        &control,
        &alice,
        deleted["job_id"].as_str().unwrap(),
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(job["state"], "completed", "{job}");
    let (_, c) = control
        .call("GET", &format!("/v1/containers/{cid}"), Some(&alice), None)
        .await
        .unwrap();
    assert_eq!(c["state"], "stopped");
    let listed = std::process::Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("label=vnc.cid={cid}")])
        .output()
        .unwrap();
    assert!(listed.stdout.is_empty(), "container still exists");

    let mut seen = Vec::new();
    while !seen.contains(&"container.stopped".to_owned()) {
        let msg = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("events")
            .unwrap();
        let v: Value = serde_json::from_str(&msg.value.as_string().unwrap_or_default()).unwrap();
        if v["cid"] == cid.as_str() {
            seen.push(v["type"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(
        seen,
        [
            "container.created",
            "container.started",
            "container.stopping",
            "container.stopped"
        ]
    );
}

/// Starts that can't succeed end as `failed` jobs with the reason, the container
/// record `failed`, dead-lettered, and nothing left running.
#[tokio::test]
async fn failed_starts_are_recorded_and_dead_lettered() {
    let Some(DockerStack {
        redis,
        keys,
        identity,
    }) = docker_stack().await
    else {
        return;
    };
    let exits = vnc_tests::docker::exiting_fixture_image();
    let alice = identity.token("alice", "t1", false);
    let images = format!("{exits},vnc-missing:nope");
    let flags = [
        "--image",
        images.as_str(),
        "--job-backoff",
        "100ms",
        "--start-timeout",
        "10s",
    ];

    let control = ControlProcess::start(&redis.url(), &keys, &identity, &flags)
        .await
        .unwrap();
    for (image, reason) in [
        ("vnc-missing:nope", "not present"),
        (exits.as_str(), "exit code"),
    ] {
        let (status, created) = create_container(&control, &alice, image).await;
        assert_eq!(status, 202, "{created}");
        let job = wait_job(
            &control,
            &alice,
            created["job_id"].as_str().unwrap(),
            Duration::from_secs(60),
        )
        .await;
        assert_eq!(job["state"], "failed", "{job}");
        assert_eq!(job["attempts"], 1, "not worth retrying: {job}");
        assert!(job["error"].as_str().unwrap().contains(reason), "{job}");
        let cid = created["container_id"].as_str().unwrap();
        let (_, c) = control
            .call("GET", &format!("/v1/containers/{cid}"), Some(&alice), None)
            .await
            .unwrap();
        assert_eq!(c["state"], "failed", "{c}");
        let left = std::process::Command::new("docker")
            .args(["ps", "-aq", "--filter", &format!("label=vnc.cid={cid}")])
            .output()
            .unwrap();
        assert!(
            left.stdout.is_empty(),
            "a failed start left a container behind"
        );
    }

    // An engine that doesn't answer: retried with backoff, then failed for good.
    let unreachable = ControlProcess::start(
        &redis.url(),
        &keys,
        &identity,
        &[
            &flags[..],
            &["--docker-host", "unix:///nonexistent/docker.sock"],
        ]
        .concat(),
    )
    .await
    .unwrap();
    drop(control);
    let (_, created) = create_container(&unreachable, &alice, &exits).await;
    let job_id = created["job_id"].as_str().unwrap().to_owned();
    let job = wait_job(&unreachable, &alice, &job_id, Duration::from_secs(60)).await;
    assert_eq!(job["state"], "failed", "{job}");
    assert_eq!(
        (job["attempts"].as_u64(), job["max_attempts"].as_u64()),
        (Some(3), Some(3)),
        "{job}"
    );
    assert!(
        job["error"].as_str().unwrap().contains("unavailable"),
        "{job}"
    );
    let dead: Vec<(String, std::collections::HashMap<String, String>)> = redis
        .client
        .xrange("vnc:{jobs}:dead", "-", "+", None)
        .await
        .unwrap();
    assert!(
        dead.iter().any(|(_, f)| f.values().any(|v| v == &job_id)),
        "{dead:?}"
    );
}

/// Docker changes behind control's back reach Redis: a killed container's record
/// leaves `running`. (Containers without a record are re-adopted, not removed: see
/// control_recovery.rs.)
#[tokio::test]
async fn the_reconciler_keeps_redis_true() {
    let Some(DockerStack {
        redis,
        keys,
        identity,
    }) = docker_stack().await
    else {
        return;
    };
    let image = vnc_tests::docker::fixture_image();
    let control = ControlProcess::start(
        &redis.url(),
        &keys,
        &identity,
        &["--image", &image, "--reconcile-interval", "500ms"],
    )
    .await
    .unwrap();
    let alice = identity.token("alice", "t1", false);
    let (_, created) = create_container(&control, &alice, &image).await;
    let cid = created["container_id"].as_str().unwrap().to_owned();
    let job = wait_job(
        &control,
        &alice,
        created["job_id"].as_str().unwrap(),
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(job["state"], "completed", "{job}");

    vnc_tests::docker::docker(&["kill", &format!("vnc-{cid}")]).unwrap();
    let state = eventually(
        "the killed container's record to change",
        Duration::from_secs(20),
        || async {
            let (_, c) = control
                .call("GET", &format!("/v1/containers/{cid}"), Some(&alice), None)
                .await
                .ok()?;
            (c["state"] != "running").then(|| c["state"].as_str().unwrap_or_default().to_owned())
        },
    )
    .await;
    assert_eq!(state, "failed", "SIGKILL exits 137");
    let _ = vnc_tests::docker::docker(&["rm", "-f", &format!("vnc-{cid}")]);
}

/// A replica killed (SIGKILL) while it runs a start job: another replica takes the
/// job over once the dead one's lock expires and finishes it; the container is created
/// once.
#[tokio::test]
async fn a_second_replica_finishes_the_job_of_a_killed_one() {
    let Some(DockerStack {
        redis,
        keys,
        identity,
    }) = docker_stack().await
    else {
        return;
    };
    let image = vnc_tests::docker::slow_fixture_image();
    let flags = |node: &'static str| {
        vec![
            "--image",
            vnc_tests::docker::SLOW_FIXTURE_IMAGE,
            "--node-id",
            node,
            "--job-reclaim-idle",
            "1s",
            "--start-timeout",
            "30s",
        ]
    };
    let mut first = ControlProcess::start(&redis.url(), &keys, &identity, &flags("replica-a"))
        .await
        .unwrap();
    let alice = identity.token("alice", "t1", false);
    let (_, created) = create_container(&first, &alice, &image).await;
    let (cid, job) = (
        created["container_id"].as_str().unwrap().to_owned(),
        created["job_id"].as_str().unwrap().to_owned(),
    );
    // Running on the first replica: its VNC server isn't up yet (5 s start delay).
    eventually(
        "the first replica to take the job",
        Duration::from_secs(10),
        || async {
            let (_, j) = first
                .call("GET", &format!("/v1/jobs/{job}"), Some(&alice), None)
                .await
                .ok()?;
            (j["state"] == "active" && j["progress"].as_u64()? >= 50).then_some(())
        },
    )
    .await;
    let second = ControlProcess::start(&redis.url(), &keys, &identity, &flags("replica-b"))
        .await
        .unwrap();
    first.proc.signal("KILL");
    first.proc.wait_exit(Duration::from_secs(5)).await.unwrap();

    let done = wait_job(&second, &alice, &job, Duration::from_secs(60)).await;
    assert_eq!(done["state"], "completed", "{done}");
    assert_eq!(done["attempts"], 2, "{done}");
    let (_, c) = second
        .call("GET", &format!("/v1/containers/{cid}"), Some(&alice), None)
        .await
        .unwrap();
    assert_eq!(c["state"], "running", "{c}");
    let ids =
        vnc_tests::docker::docker(&["ps", "-aq", "--filter", &format!("label=vnc.cid={cid}")])
            .unwrap();
    assert_eq!(ids.lines().count(), 1, "exactly one container: {ids}");
    let _ = vnc_tests::docker::docker(&["rm", "-f", &format!("vnc-{cid}")]);
}
