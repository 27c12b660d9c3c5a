//! vnc-control placing desktops on a pool of two real Docker engines: the machine's
//! engine and a second `dockerd` of the test's own ([`SecondEngine`]), the real binary
//! and a real redis-server.
#![forbid(unsafe_code)]

use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncReadExt as _;
use vnc_tests::control::{ControlProcess, DockerStack, docker_args, docker_stack};
use vnc_tests::docker::{ContainerGuard, docker};
use vnc_tests::engine::SecondEngine;
use vnc_tests::process::eventually;

/// Bound on a start job (the image is on both engines; the fixture answers at once).
const START_WITHIN: Duration = Duration::from_secs(60);

/// Bound on the reconciler seeing an engine go or come back (it runs every 500 ms; a
/// pass lists every engine, each bounded by the engine's own timeout).
const RECONCILE_WITHIN: Duration = Duration::from_secs(60);

/// The machine's engine, as control and the `docker` CLI reach it by default.
const FIRST_ENGINE: &str = "unix:///var/run/docker.sock";

/// Whether a container named `name` exists on the engine `docker` runs against.
fn exists(found: Result<String, String>) -> bool {
    found.is_ok_and(|out| !out.trim().is_empty())
}

/// The desktop's state as its owner sees it.
async fn state_of(control: &ControlProcess, bearer: &str, cid: &str) -> String {
    let (status, view) = control
        .call("GET", &format!("/v1/containers/{cid}"), Some(bearer), None)
        .await
        .expect("GET the container");
    assert_eq!(status, 200, "{view}");
    view["state"].as_str().unwrap_or_default().to_owned()
}

/// `GET /v1/engines` as an admin: each engine's view by name.
async fn engines(control: &ControlProcess, admin: &str) -> Vec<Value> {
    let (status, body) = control
        .call("GET", "/v1/engines", Some(admin), None)
        .await
        .expect("GET /v1/engines");
    assert_eq!(status, 200, "{body}");
    body["engines"].as_array().expect("engines").clone()
}

/// The first 12 bytes the VNC server published at `host:port` sends: its RFB version.
async fn greeting(port: u16) -> Option<String> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let mut version = [0u8; 12];
    tokio::time::timeout(vnc_tests::WAIT, stream.read_exact(&mut version))
        .await
        .ok()?
        .ok()?;
    Some(String::from_utf8_lossy(&version).into_owned())
}

/// Creates a desktop as `bearer`, waits for its start, and checks it runs on engine
/// `want` (`a`: the machine's, `b`: `second`); its id, and a guard removing it from
/// the machine's engine (the second engine removes its own).
async fn create(
    control: &ControlProcess,
    second: &SecondEngine,
    bearer: &str,
    image: &str,
    want: &str,
) -> (String, ContainerGuard) {
    let (status, created) = control.create_desktop(bearer, image).await;
    assert_eq!(status, 202, "{created}");
    let cid = created["container_id"].as_str().unwrap().to_owned();
    let name = format!("vnc-{cid}");
    let guard = ContainerGuard { name: name.clone() };
    let job = control
        .wait_job(bearer, created["job_id"].as_str().unwrap(), START_WITHIN)
        .await;
    assert_eq!(job["state"], "completed", "{job}");
    let filter = format!("name=^{name}$");
    let on_a = exists(docker(&["ps", "-aq", "--filter", &filter]));
    let on_b = exists(second.docker(&["ps", "-aq", "--filter", &filter]));
    let placed = match (on_a, on_b) {
        (true, false) => "a",
        (false, true) => "b",
        other => panic!("{name} on (a, b): {other:?}"),
    };
    assert_eq!(placed, want, "desktop {cid}");
    (cid, guard)
}

/// Redis, keys, the machine's engine as `a` and a [`SecondEngine`] as `b` (each with
/// the capacity given, `cpus=…,memory_mb=…`), the fixture image on both, and a control
/// placing desktops on them (reconciling every 500 ms) with `extra` flags.
struct TwoEngines {
    _stack: (vnc_tests::redis::RedisServer, vnc_tests::keys::TestKeys),
    identity: vnc_tests::control::Identity,
    second: SecondEngine,
    control: ControlProcess,
    image: String,
}

async fn two_engines(a: &str, b: &str, extra: &[&str]) -> Option<TwoEngines> {
    let DockerStack {
        redis,
        keys,
        identity,
    } = docker_stack().await?;
    let second = SecondEngine::start()?;
    let image = vnc_tests::docker::fixture_image();
    second.load_image(&image);
    let engine_a = format!("name=a,docker_host={FIRST_ENGINE},{a}");
    let engine_b = format!("name=b,docker_host={},{b}", second.host());
    let mut flags = vec![
        "--reconcile-interval",
        "500ms",
        "--docker-engine",
        &engine_a,
        "--docker-engine",
        &engine_b,
    ];
    flags.extend_from_slice(extra);
    let control =
        ControlProcess::start(&redis.url(), &keys, &identity, &docker_args(&image, &flags))
            .await
            .unwrap();
    Some(TwoEngines {
        _stack: (redis, keys),
        identity,
        second,
        control,
        image,
    })
}

/// Engine `a` (the machine's, 2 CPUs and 512 MiB) and `b` (the test's own, 2 CPUs and
/// 384 MiB); each desktop asks for 0.5 CPU and 128 MiB. By the placement rule (most
/// free memory, then most free CPUs, then the name) the first goes to `a` (512 > 384),
/// the second to `b` (384 = 384, 2 CPUs > 1.5), the third to `a` (384 > 256). Then `b`'s
/// daemon is killed: its desktop becomes `unavailable` (not removed: its process still
/// runs; no VNC token for it), `GET /v1/engines` and the gauge say `b` is down, and the fourth desktop
/// goes to `a` though `b` would win the rule (both have 256 MiB free, `b` more CPUs).
/// `b`'s daemon starts again: its desktop is `running` again, its VNC server answering
/// at the port the engine publishes.
#[tokio::test]
async fn desktops_are_placed_across_engines_and_survive_one_going_away() {
    let Some(TwoEngines {
        _stack,
        identity,
        mut second,
        control,
        image,
    }) = two_engines("cpus=2,memory_mb=512", "cpus=2,memory_mb=384", &[]).await
    else {
        return;
    };
    let alice = identity.token("alice", "t1", false);
    let admin = identity.token("root", "t1", true);
    let (status, _) = control
        .call("GET", "/v1/engines", Some(&alice), None)
        .await
        .unwrap();
    assert_eq!(status, 403, "engines are for admins");

    let mut guards = Vec::new();
    let mut desktop = async |second: &SecondEngine, want: &str| {
        let (cid, guard) = create(&control, second, &alice, &image, want).await;
        guards.push(guard);
        cid
    };
    desktop(&second, "a").await;
    let on_b = desktop(&second, "b").await;
    desktop(&second, "a").await;
    let listed = engines(&control, &admin).await;
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(listed[0]["name"], "a");
    assert_eq!(listed[0]["state"], "up");
    assert_eq!(listed[0]["desktops"], 2);
    assert_eq!(listed[0]["used"]["memory_mb"], 256);
    assert_eq!(listed[0]["capacity"]["memory_mb"], 512);
    assert_eq!(listed[1]["name"], "b");
    assert_eq!(listed[1]["state"], "up");
    assert_eq!(listed[1]["desktops"], 1);
    assert_eq!(listed[1]["used"]["cpus"], 0.5);
    eventually("the engines' desktop gauges", RECONCILE_WITHIN, || async {
        let a = control
            .metric("vnc_control_engine_desktops{engine=\"a\"}")
            .await;
        let b = control
            .metric("vnc_control_engine_desktops{engine=\"b\"}")
            .await;
        (a == Some(2.0) && b == Some(1.0)).then_some(())
    })
    .await;

    let desktop_pid = second
        .docker(&["inspect", "-f", "{{.State.Pid}}", &format!("vnc-{on_b}")])
        .expect("docker inspect")
        .trim()
        .to_owned();
    second.kill();
    eventually(
        "the desktop on the dead engine to be unavailable",
        RECONCILE_WITHIN,
        || async { (state_of(&control, &alice, &on_b).await == "unavailable").then_some(()) },
    )
    .await;
    assert_eq!(
        control.metric("vnc_control_engine_up{engine=\"b\"}").await,
        Some(0.0)
    );
    assert_eq!(
        control.metric("vnc_control_engine_up{engine=\"a\"}").await,
        Some(1.0)
    );
    let (status, body) = control
        .call(
            "POST",
            &format!("/v1/containers/{on_b}/vnc-tokens"),
            Some(&alice),
            Some(&serde_json::json!({"scope": "control", "ttl_seconds": 60})),
        )
        .await
        .unwrap();
    assert_eq!(status, 409, "no session to an unavailable desktop: {body}");
    assert!(
        std::path::Path::new(&format!("/proc/{desktop_pid}")).exists(),
        "the unavailable desktop's process still runs (not removed)"
    );
    let listed = engines(&control, &admin).await;
    assert_eq!(listed[1]["state"], "down", "{listed:?}");
    assert_eq!(
        listed[1]["desktops"], 1,
        "unavailable desktops keep their room"
    );
    desktop(&second, "a").await;

    second.restart();
    eventually(
        "the desktop to be running again",
        RECONCILE_WITHIN,
        || async { (state_of(&control, &alice, &on_b).await == "running").then_some(()) },
    )
    .await;
    let published = second
        .docker(&["port", &format!("vnc-{on_b}"), "5900"])
        .expect("docker port");
    let port: u16 = published
        .lines()
        .next()
        .and_then(|l| l.rsplit(':').next())
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no published port in {published:?}"));
    eventually("the desktop's VNC server", vnc_tests::WAIT, || async {
        greeting(port).await.filter(|g| g.starts_with("RFB "))
    })
    .await;
    assert_eq!(engines(&control, &admin).await[1]["state"], "up");
    drop(guards);
}

/// Engine `a` (the machine's) has too few CPUs for a desktop (0.25 < 0.5), so the
/// desktop goes to `b`. With `b`'s daemon killed, the desktop is `unavailable`, and a
/// DELETE of it still ends: its stop job is retried while `b` does not answer, then
/// records it `stopped`. When `b` answers again, the reconciler removes its container
/// there.
#[tokio::test]
async fn a_desktop_deleted_while_its_engine_is_down_is_removed_when_it_comes_back() {
    let Some(TwoEngines {
        _stack,
        identity,
        mut second,
        control,
        image,
    }) = two_engines(
        "cpus=0.25,memory_mb=4096",
        "cpus=2,memory_mb=512",
        &["--job-attempts", "2", "--job-backoff", "100ms"],
    )
    .await
    else {
        return;
    };
    let alice = identity.token("alice", "t1", false);
    let (cid, _guard) = create(&control, &second, &alice, &image, "b").await;
    let name = format!("vnc-{cid}");

    second.kill();
    eventually(
        "the desktop to be unavailable",
        RECONCILE_WITHIN,
        || async { (state_of(&control, &alice, &cid).await == "unavailable").then_some(()) },
    )
    .await;
    let job = control.delete_desktop(&alice, &cid, START_WITHIN).await;
    assert_eq!(job["state"], "completed", "{job}");
    assert_eq!(state_of(&control, &alice, &cid).await, "stopped");

    second.restart();
    let filter = format!("name=^{name}$");
    eventually(
        "the stopped desktop's container to be removed from its engine",
        RECONCILE_WITHIN,
        || async {
            // Listed (the engine answers) and not there.
            let listed = second.docker(&["ps", "-aq", "--filter", &filter]).ok()?;
            listed.trim().is_empty().then_some(())
        },
    )
    .await;
    assert_eq!(state_of(&control, &alice, &cid).await, "stopped");
}
