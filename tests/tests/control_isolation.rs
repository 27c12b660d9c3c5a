//! What a hostile tenant or client cannot do to vnc-control and its desktops: over the
//! real binary, a real redis-server and a real Docker engine. Desktops are confined
//! (process limit, no capabilities, no new privileges, no swap, rotated logs) on their
//! own network where they cannot reach each other; caller labels stay in `user.*`; a
//! job's status shows no endpoint to non-admins; and control's HTTP listener closes
//! half-sent requests and caps its connections.
#![forbid(unsafe_code)]

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use vnc_tests::WAIT;
use vnc_tests::control::{ControlProcess, Identity};
use vnc_tests::docker::{ContainerGuard, NetworkGuard, docker, docker_required, inspect};
use vnc_tests::keys::TestKeys;
use vnc_tests::process::eventually;
use vnc_tests::redis::RedisServer;

const MIB: u64 = 1024 * 1024;

/// An image name no test starts: creates that pass validation fail in their job.
const NO_IMAGE: &str = "vnc-test-never-started:none";

/// Redis, the VNC token keys and an identity provider for one test's control.
struct Stack {
    redis: RedisServer,
    keys: TestKeys,
    identity: Identity,
}

impl Stack {
    async fn new() -> Stack {
        Stack {
            redis: RedisServer::start().await.unwrap(),
            keys: TestKeys::new(),
            identity: Identity::new(),
        }
    }

    /// Starts control on this stack with `flags`.
    async fn control(&self, flags: &[&str]) -> ControlProcess {
        ControlProcess::start(&self.redis.url(), &self.keys, &self.identity, flags)
            .await
            .unwrap()
    }
}

/// Creates a desktop of `image` for `bearer` with `labels`; the status and body.
async fn create(
    control: &ControlProcess,
    bearer: &str,
    image: &str,
    labels: Value,
) -> (u16, Value) {
    let body =
        json!({"image": image, "resources": {"cpus": 0.5, "memory_mb": 128}, "labels": labels});
    control
        .call("POST", "/v1/containers", Some(bearer), Some(&body))
        .await
        .unwrap()
}

/// Runs `/rfb-fixture --probe target` inside container `name`: whether it connected.
fn reaches(name: &str, target: &str) -> Result<String, String> {
    docker(&[
        "exec",
        name,
        "/rfb-fixture",
        "--probe",
        target,
        "--probe-timeout-ms",
        "3000",
    ])
}

/// Two tenants' desktops on Docker: `docker inspect` shows every confinement setting
/// and the network control created without inter-container traffic; from inside one
/// desktop the other's VNC port cannot be reached (its own can); the start job's
/// endpoint is shown to an admin only.
#[tokio::test]
async fn desktops_are_confined_and_cannot_reach_each_other() {
    if !docker_required() {
        return;
    }
    let stack = Stack::new().await;
    let identity = &stack.identity;
    let image = vnc_tests::docker::fixture_image();
    // Its own network, so the test sees control create it; removed after the
    // desktops (the guards drop in reverse order).
    let network = format!("vnc-test-{}", stack.redis.port);
    let _ = docker(&["network", "rm", &network]);
    let _network = NetworkGuard {
        name: network.clone(),
    };
    let control = stack
        .control(&[
            "--image",
            &image,
            "--desktop-network",
            &network,
            "--desktop-pids-limit",
            "64",
            "--desktop-log-max-size",
            "1m",
            "--desktop-log-max-files",
            "2",
            "--start-timeout",
            "30s",
        ])
        .await;

    let alice = identity.token("alice", "t1", false);
    let bob = identity.token("bob", "t2", false);
    let mut desktops = Vec::new();
    let mut guards = Vec::new();
    for (bearer, team) in [(&alice, "a"), (&bob, "b")] {
        let (status, created) = create(&control, bearer, &image, json!({"user.team": team})).await;
        assert_eq!(status, 202, "{created}");
        let cid = created["container_id"].as_str().unwrap().to_owned();
        guards.push(ContainerGuard {
            name: format!("vnc-{cid}"),
        });
        let job = created["job_id"].as_str().unwrap().to_owned();
        desktops.push((bearer.clone(), cid, job));
    }
    for (bearer, cid, _) in &desktops {
        eventually(
            &format!("{cid} to run"),
            Duration::from_secs(60),
            || async {
                let (_, c) = control
                    .call("GET", &format!("/v1/containers/{cid}"), Some(bearer), None)
                    .await
                    .ok()?;
                assert_ne!(c["state"], "failed", "{c}");
                (c["state"] == "running").then_some(())
            },
        )
        .await;
    }

    let net = inspect("network", &network).unwrap();
    assert_eq!(net["Driver"], "bridge", "{net}");
    assert_eq!(
        net["Options"]["com.docker.network.bridge.enable_icc"], "false",
        "{net}"
    );

    let mut addresses = Vec::new();
    for (_, cid, _) in &desktops {
        let c = inspect("container", &format!("vnc-{cid}")).unwrap();
        let host = &c["HostConfig"];
        assert_eq!(host["PidsLimit"], 64, "{host}");
        assert_eq!(host["CapDrop"], json!(["ALL"]), "{host}");
        assert!(
            host["CapAdd"].as_array().is_none_or(Vec::is_empty),
            "{host}"
        );
        assert_eq!(
            host["SecurityOpt"],
            json!(["no-new-privileges:true"]),
            "{host}"
        );
        assert_eq!(host["Memory"], 128 * MIB, "{host}");
        assert_eq!(host["MemorySwap"], host["Memory"], "no swap: {host}");
        assert_eq!(
            host["LogConfig"],
            json!({"Type": "json-file", "Config": {"max-size": "1m", "max-file": "2"}}),
            "{host}"
        );
        // Joined by id (a name may briefly match two networks on older engines).
        assert_eq!(host["NetworkMode"], net["Id"], "{host}");
        // Published on the relay-facing address only.
        let published = c["NetworkSettings"]["Ports"]["5900/tcp"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(!published.is_empty(), "{c}");
        for binding in published.iter().chain(
            host["PortBindings"]["5900/tcp"]
                .as_array()
                .into_iter()
                .flatten(),
        ) {
            assert_eq!(binding["HostIp"], "127.0.0.1", "{binding}");
        }
        assert!(c["Config"]["Labels"]["user.team"].is_string(), "{c}");
        let ip = c["NetworkSettings"]["Networks"][&network]["IPAddress"]
            .as_str()
            .filter(|ip| !ip.is_empty())
            .unwrap_or_else(|| panic!("no address on {network}: {c}"))
            .to_owned();
        addresses.push(ip);
    }

    let a = format!("vnc-{}", desktops[0].1);
    // The probe works in there: desktop A reaches its own VNC server...
    reaches(&a, &format!("{}:5900", addresses[0])).expect("A reaches its own VNC port");
    // ...but not tenant B's, on the same network.
    let crossed = reaches(&a, &format!("{}:5900", addresses[1]));
    assert!(
        crossed.is_err(),
        "desktop A reached desktop B's VNC port: {crossed:?}"
    );

    // The start job's result names the endpoint to an admin only.
    let (_, _, job) = &desktops[0];
    let (status, seen) = control
        .call("GET", &format!("/v1/jobs/{job}"), Some(&alice), None)
        .await
        .unwrap();
    assert_eq!(status, 200, "{seen}");
    assert_eq!(seen["state"], "completed", "{seen}");
    assert_eq!(
        seen["result"],
        json!({}),
        "the owner sees no endpoint: {seen}"
    );
    let admin = identity.token("root", "t1", true);
    let (status, seen) = control
        .call("GET", &format!("/v1/jobs/{job}"), Some(&admin), None)
        .await
        .unwrap();
    assert_eq!(status, 200, "{seen}");
    assert_eq!(seen["result"]["host"], "127.0.0.1", "{seen}");
    assert!(seen["result"]["port"].as_u64().is_some(), "{seen}");
}

/// Caller labels outside `user.*` (a reverse proxy's, control's own) are refused with
/// 400 naming the label and the namespace, and nothing is created.
#[tokio::test]
async fn caller_labels_outside_the_user_namespace_are_refused() {
    let stack = Stack::new().await;
    let control = stack.control(&["--image", NO_IMAGE]).await;
    let alice = stack.identity.token("alice", "t1", false);
    for label in ["traefik.enable", "vnc.cid", "user."] {
        let (status, body) = create(&control, &alice, NO_IMAGE, json!({ label: "true" })).await;
        assert_eq!(status, 400, "{label}: {body}");
        let message = body["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(label) && message.contains("user.*"),
            "{label}: {message}"
        );
    }
    let (_, listed) = control
        .call("GET", "/v1/containers", Some(&alice), None)
        .await
        .unwrap();
    assert_eq!(listed["total"], 0, "{listed}");
}

/// Reads from `stream` until the server closes it; what it sent.
async fn until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    // A reset counts as closed too.
    let _ = stream.read_to_end(&mut got).await;
    got
}

/// Reads from `stream` until `needle` arrived (panics if the stream ends first).
async fn read_until(stream: &mut TcpStream, needle: &str) {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&got).contains(needle) {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before {needle:?}: {got:?}");
        got.extend_from_slice(&buf[..n]);
    }
}

/// A control whose API closes silent clients after `header_timeout` and serves at
/// most `max_connections` at once (with the stack it needs).
async fn control_with(header_timeout: &str, max_connections: &str) -> (Stack, ControlProcess) {
    let stack = Stack::new().await;
    let control = stack
        .control(&[
            "--image",
            NO_IMAGE,
            "--http-header-timeout",
            header_timeout,
            "--http-max-connections",
            max_connections,
        ])
        .await;
    (stack, control)
}

/// A client that sends half a request line and then nothing, and one that sends
/// nothing at all, are closed by control once its 1 s header timeout passes; a
/// normal request is still answered.
#[tokio::test]
async fn half_sent_requests_are_closed_after_the_header_timeout() {
    let (_stack, control) = control_with("1s", "16").await;
    let mut partial = TcpStream::connect(control.api).await.unwrap();
    partial.write_all(b"GET /v1/contai").await.unwrap();
    let mut silent = TcpStream::connect(control.api).await.unwrap();
    for (what, stream) in [
        ("half a request line", &mut partial),
        ("nothing", &mut silent),
    ] {
        let answer = tokio::time::timeout(WAIT, until_closed(stream))
            .await
            .unwrap_or_else(|_| panic!("a client that sent {what} was still open after {WAIT:?}"));
        assert!(
            answer.is_empty() || answer.starts_with(b"HTTP/1.1 408"),
            "{what}: {}",
            String::from_utf8_lossy(&answer)
        );
    }
    let (status, _) = vnc_tests::ws::http_get(control.api, "/healthz")
        .await
        .unwrap();
    assert_eq!(status, 200);
}

/// With a cap of 2 connections, two idle keep-alive clients hold both slots: a third
/// client's request is not answered while they stay, and is answered once one of
/// them leaves (over the cap, connections wait; they are not refused).
#[tokio::test]
async fn connections_over_the_cap_wait_for_a_free_slot() {
    let (_stack, control) = control_with("60s", "2").await;
    let request = format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n\r\n", control.api);
    let mut idle = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(control.api).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        tokio::time::timeout(WAIT, read_until(&mut stream, "\"alive\":true"))
            .await
            .expect("a client under the cap is answered");
        idle.push(stream);
    }

    let mut third = TcpStream::connect(control.api).await.unwrap();
    third.write_all(request.as_bytes()).await.unwrap();
    let mut buf = [0u8; 256];
    let early = tokio::time::timeout(Duration::from_secs(1), third.read(&mut buf)).await;
    assert!(
        early.is_err(),
        "a connection over the cap was served (or closed): {early:?}"
    );

    drop(idle.remove(0));
    tokio::time::timeout(WAIT, read_until(&mut third, "\"alive\":true"))
        .await
        .expect("the waiting client is answered once a slot frees");
}

/// `network = "host"` is refused at start-up (here through `check`, which validates
/// the same configuration) unless `allow_host_network` is set.
#[test]
fn host_networking_is_refused_unless_allowed() {
    let keys = TestKeys::new();
    let identity = Identity::new();
    let check = |extra: &[&str]| {
        let out = std::process::Command::new(vnc_tests::process::bin_path("vnc-control"))
            .arg("--jwt-private-key")
            .arg(&keys.private)
            .arg("--auth-public-key")
            .arg(&identity.public)
            .args(["--image", NO_IMAGE, "--network", "host"])
            .args(extra)
            .arg("check")
            .output()
            .expect("run vnc-control check");
        let text = String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout);
        (out.status.success(), text)
    };
    let (ok, text) = check(&[]);
    assert!(!ok, "{text}");
    assert!(
        text.contains("allow_host_network") && text.contains("Redis"),
        "{text}"
    );
    let (ok, text) = check(&["--allow-host-network", "true"]);
    assert!(ok, "{text}");
}
