//! The container runtimes against a real Docker engine and the RFB fixture image:
//! start per network mode, readiness, VNC auth, idempotence, labels and limits,
//! failures, stop, state, listing, events; the static runtime; an unreachable engine.
//!
//! Containers publish on 127.0.0.1, use host networking bound to 127.0.0.1, or sit on
//! the local bridge. Each test uses its own cid and removes its container on the way
//! out, even when it fails.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use futures_util::StreamExt as _;
use futures_util::stream::BoxStream;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use vnc_control::infra::runtime::{
    ContainerSpec, DockerRuntime, Endpoint, Isolation, LABEL_CID, LABEL_MANAGED, LABEL_OWNER,
    LABEL_TENANT, NetworkMode, Runtime, RuntimeError, RuntimeState, StaticRuntime, wait_for_rfb,
};
use vnc_tests::WAIT;
use vnc_tests::docker::{
    ContainerGuard, NetworkGuard, docker, docker_required, exiting_fixture_image, fixture_image,
};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Host ports for host networking in these tests; away from the usual ephemeral range.
const HOST_PORTS: (u16, u16) = (24000, 24999);

/// Grace period for stops in tests: the fixture handles SIGTERM at once.
const GRACE: Duration = Duration::from_secs(5);

/// The control plane id these tests label their containers with.
const PLANE: &str = "runtime-tests";
fn published() -> DockerRuntime {
    DockerRuntime::connect(
        None,
        NetworkMode::Published { host_ip: LOOPBACK },
        Isolation::default(),
        PLANE,
    )
    .expect("connect")
}

fn host_network() -> DockerRuntime {
    let mode = NetworkMode::Host {
        host_ip: LOOPBACK,
        port_range: HOST_PORTS,
    };
    DockerRuntime::connect(None, mode, Isolation::default(), PLANE).expect("connect")
}

/// A fresh cid and a guard that removes its container however the test ends.
fn unique_cid(what: &str) -> (String, ContainerGuard) {
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let cid = format!("t-{what}-{}", &suffix[..12]);
    let guard = ContainerGuard {
        name: format!("vnc-{cid}"),
    };
    (cid, guard)
}

fn spec(cid: &str, image: String) -> ContainerSpec {
    ContainerSpec {
        cid: cid.to_owned(),
        owner: "alice".into(),
        tenant: "acme".into(),
        image,
        cpus: 0.5,
        memory_mb: 64,
        env: BTreeMap::from([("DESKTOP_THEME".into(), "dark".into())]),
        labels: BTreeMap::from([("test.suite".into(), "docker_runtime".into())]),
        vnc_password: None,
    }
}

/// Reads the server's ProtocolVersion, answers 3.8 and returns (greeting, security types).
async fn greeting_and_security_types(endpoint: &Endpoint) -> (String, Vec<u8>) {
    let io = async {
        let mut stream = TcpStream::connect((endpoint.host.as_str(), endpoint.port)).await?;
        let mut version = [0u8; 12];
        stream.read_exact(&mut version).await?;
        stream.write_all(b"RFB 003.008\n").await?;
        let count = stream.read_u8().await?;
        let mut types = vec![0u8; usize::from(count)];
        stream.read_exact(&mut types).await?;
        std::io::Result::Ok((String::from_utf8_lossy(&version).into_owned(), types))
    };
    tokio::time::timeout(WAIT, io)
        .await
        .expect("handshake in time")
        .expect("handshake")
}

/// Containers carrying label vnc.cid=cid, per the engine.
fn containers_of(cid: &str) -> Vec<String> {
    docker(&[
        "ps",
        "-a",
        "-q",
        "--filter",
        &format!("label={LABEL_CID}={cid}"),
    ])
    .expect("docker ps")
    .lines()
    .map(str::to_owned)
    .collect()
}

/// Start, readiness through the endpoint, a None-auth handshake, state, listing, stop.
async fn serves_rfb_then_stops(runtime: DockerRuntime, what: &str) -> Endpoint {
    let (cid, _guard) = unique_cid(what);
    let endpoint = runtime
        .start(&spec(&cid, fixture_image()))
        .await
        .expect("start");
    wait_for_rfb(&endpoint, WAIT).await.expect("RFB greeting");
    let (version, types) = greeting_and_security_types(&endpoint).await;
    assert_eq!(version, "RFB 003.008\n");
    assert_eq!(types, vec![1], "no password: security type None only");

    assert_eq!(
        runtime.state(&cid).await.expect("state"),
        RuntimeState::Running
    );
    let managed = runtime.list_managed().await.expect("list");
    assert!(
        managed.contains(&(cid.clone(), RuntimeState::Running)),
        "{cid} not in {managed:?}"
    );
    // What re-adoption reads: the labels, the env, the state and the same endpoint.
    let found = runtime
        .inspect(&cid)
        .await
        .expect("inspect")
        .expect("found");
    assert_eq!(found.labels[LABEL_OWNER], "alice");
    assert_eq!(found.labels["test.suite"], "docker_runtime");
    assert_eq!(found.env["DESKTOP_THEME"], "dark");
    assert_eq!(found.state, RuntimeState::Running);
    assert_eq!(found.endpoint.as_ref(), Some(&endpoint));

    runtime.stop(&cid, GRACE).await.expect("stop");
    assert!(containers_of(&cid).is_empty(), "stop removes the container");
    assert_eq!(
        runtime.state(&cid).await.expect("state"),
        RuntimeState::Missing
    );
    runtime.stop(&cid, GRACE).await.expect("second stop is Ok");
    assert_eq!(runtime.inspect(&cid).await.expect("inspect"), None);
    let managed = runtime.list_managed().await.expect("list");
    assert!(
        !managed.iter().any(|(c, _)| *c == cid),
        "{cid} still listed"
    );
    endpoint
}

#[tokio::test]
async fn published_on_loopback_serves_rfb() {
    if !docker_required() {
        return;
    }
    let endpoint = serves_rfb_then_stops(published(), "pub").await;
    assert_eq!(endpoint.host, "127.0.0.1");
    assert_ne!(endpoint.port, 5900, "an ephemeral host port");
}

#[tokio::test]
async fn host_network_serves_rfb() {
    if !docker_required() {
        return;
    }
    let endpoint = serves_rfb_then_stops(host_network(), "host").await;
    assert_eq!(endpoint.host, "127.0.0.1");
    assert!(
        (HOST_PORTS.0..=HOST_PORTS.1).contains(&endpoint.port),
        "{endpoint}"
    );
}

#[tokio::test]
async fn bridge_ip_serves_rfb() {
    if !docker_required() {
        return;
    }
    let runtime = DockerRuntime::connect(None, NetworkMode::Bridge, Isolation::default(), PLANE)
        .expect("connect");
    let endpoint = serves_rfb_then_stops(runtime, "bridge").await;
    assert_eq!(endpoint.port, 5900);
    let ip: IpAddr = endpoint.host.parse().expect("an IP address");
    assert!(ip.is_ipv4() && !ip.is_loopback(), "{ip}");
}

#[tokio::test]
async fn vnc_password_makes_the_image_demand_vnc_auth() {
    if !docker_required() {
        return;
    }
    for runtime in [published(), host_network()] {
        let (cid, _guard) = unique_cid("auth");
        let mut spec = spec(&cid, fixture_image());
        spec.vnc_password = Some("s3cret".into());
        let endpoint = runtime.start(&spec).await.expect("start");
        wait_for_rfb(&endpoint, WAIT).await.expect("RFB greeting");
        let (_, types) = greeting_and_security_types(&endpoint).await;
        assert_eq!(types, vec![2], "VNC Authentication only");
        runtime.stop(&cid, GRACE).await.expect("stop");
    }
}

#[tokio::test]
async fn start_is_idempotent() {
    if !docker_required() {
        return;
    }
    for runtime in [published(), host_network()] {
        let (cid, _guard) = unique_cid("idem");
        let spec = spec(&cid, fixture_image());
        // Two deliveries of the same job at once, then a late third.
        let (first, second) = tokio::join!(runtime.start(&spec), runtime.start(&spec));
        let first = first.expect("first start");
        assert_eq!(second.expect("second start"), first);
        assert_eq!(runtime.start(&spec).await.expect("third start"), first);
        assert_eq!(containers_of(&cid).len(), 1, "one container for one cid");
        wait_for_rfb(&first, WAIT).await.expect("RFB greeting");
        runtime.stop(&cid, GRACE).await.expect("stop");
    }
}

#[tokio::test]
async fn labels_env_and_limits_are_on_the_container() {
    if !docker_required() {
        return;
    }
    let runtime = published();
    let (cid, _guard) = unique_cid("labels");
    let mut spec = spec(&cid, fixture_image());
    spec.labels.insert(LABEL_OWNER.into(), "mallory".into());
    spec.vnc_password = Some("pw".into());
    runtime.start(&spec).await.expect("start");

    let inspect = docker(&["inspect", &format!("vnc-{cid}")]).expect("docker inspect");
    let inspect: serde_json::Value = serde_json::from_str(&inspect).expect("inspect json");
    let container = &inspect[0];
    let labels = &container["Config"]["Labels"];
    assert_eq!(labels[LABEL_MANAGED], "true");
    assert_eq!(labels[LABEL_CID], cid.as_str());
    assert_eq!(labels[LABEL_OWNER], "alice", "the runtime's labels win");
    assert_eq!(labels[LABEL_TENANT], "acme");
    assert_eq!(labels["test.suite"], "docker_runtime");
    assert_eq!(container["HostConfig"]["NanoCpus"], 500_000_000);
    assert_eq!(container["HostConfig"]["Memory"], 64 * 1024 * 1024);
    let env: Vec<&str> = container["Config"]["Env"]
        .as_array()
        .expect("env")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    for expected in ["DESKTOP_THEME=dark", "VNC_PORT=5900", "VNC_PASSWORD=pw"] {
        assert!(env.contains(&expected), "{expected} not in {env:?}");
    }
    let bindings = &container["HostConfig"]["PortBindings"]["5900/tcp"];
    assert_eq!(
        bindings[0]["HostIp"], "127.0.0.1",
        "published on loopback only"
    );
    runtime.stop(&cid, GRACE).await.expect("stop");
}

#[tokio::test]
async fn missing_image_is_image_missing() {
    if !docker_required() {
        return;
    }
    let (cid, _guard) = unique_cid("noimg");
    let image = "vnc-no-such-image:never".to_owned();
    let err = published()
        .start(&spec(&cid, image.clone()))
        .await
        .expect_err("no such image");
    assert!(
        matches!(&err, RuntimeError::ImageMissing(i) if *i == image),
        "{err:?}"
    );
    assert!(!err.retryable());
    assert!(containers_of(&cid).is_empty());
}

#[tokio::test]
async fn container_that_exits_at_once_is_failed_with_its_reason() {
    if !docker_required() {
        return;
    }
    for runtime in [published(), host_network()] {
        let (cid, _guard) = unique_cid("exits");
        let err = runtime
            .start(&spec(&cid, exiting_fixture_image()))
            .await
            .expect_err("exits at once");
        let RuntimeError::Failed(reason) = &err else {
            panic!("expected Failed, got {err:?}");
        };
        assert!(reason.contains("exit code 2"), "{reason}");
        assert!(reason.contains("exit-at-once"), "the log lines: {reason}");
        assert!(!err.retryable());
        assert!(
            containers_of(&cid).is_empty(),
            "a failed start leaves nothing behind"
        );
        assert_eq!(
            runtime.state(&cid).await.expect("state"),
            RuntimeState::Missing
        );
    }
}

/// The next state change of `cid` on the feed, within the harness bound.
async fn next_of(
    events: &mut BoxStream<'static, (String, RuntimeState)>,
    cid: &str,
) -> RuntimeState {
    let next = async {
        loop {
            let (c, state) = events.next().await.expect("the feed never ends");
            if c == cid {
                return state;
            }
        }
    };
    tokio::time::timeout(WAIT, next)
        .await
        .expect("event in time")
}

#[tokio::test]
async fn events_report_start_kill_and_removal() {
    if !docker_required() {
        return;
    }
    let runtime = published();
    let (cid, _guard) = unique_cid("events");
    let mut events = runtime.events();
    // Poll the feed while starting, so the subscription is live before anything happens.
    let spec = spec(&cid, fixture_image());
    let (started, first) = tokio::join!(runtime.start(&spec), next_of(&mut events, &cid));
    started.expect("start");
    assert_eq!(first, RuntimeState::Running);

    docker(&["kill", &format!("vnc-{cid}")]).expect("docker kill");
    // SIGKILL: exit code 137.
    assert_eq!(
        next_of(&mut events, &cid).await,
        RuntimeState::Exited { code: 137 }
    );
    assert_eq!(
        runtime.state(&cid).await.expect("state"),
        RuntimeState::Exited { code: 137 }
    );
    let managed = runtime.list_managed().await.expect("list");
    assert!(managed.contains(&(cid.clone(), RuntimeState::Exited { code: 137 })));

    runtime.stop(&cid, GRACE).await.expect("stop");
    let mut last = next_of(&mut events, &cid).await;
    while last != RuntimeState::Missing {
        last = next_of(&mut events, &cid).await; // a `stop` report may come first
    }
}

#[tokio::test]
async fn static_runtime_answers_as_declared() {
    // No engine involved.
    let endpoint = Endpoint {
        host: "127.0.0.1".into(),
        port: 5901,
    };
    let runtime: std::sync::Arc<dyn Runtime> = std::sync::Arc::new(StaticRuntime::new(
        BTreeMap::from([("desk-1".to_owned(), endpoint)]),
    ));
    assert_eq!(
        runtime.state("desk-1").await.expect("state"),
        RuntimeState::Running
    );
    assert_eq!(
        runtime.state("desk-2").await.expect("state"),
        RuntimeState::Missing
    );
    assert_eq!(
        runtime.list_managed().await.expect("list"),
        vec![("desk-1".to_owned(), RuntimeState::Running)]
    );
    let err = runtime
        .start(&spec("desk-1", "any".into()))
        .await
        .expect_err("start");
    assert!(matches!(err, RuntimeError::Unsupported(m) if m.contains("declared in config")));
    let err = runtime.stop("desk-1", GRACE).await.expect_err("stop");
    assert!(matches!(err, RuntimeError::Unsupported(_)));
    assert!(runtime.events().next().await.is_none(), "no events");
}

#[tokio::test]
async fn unreachable_engine_is_unavailable() {
    // No engine involved: nothing listens on these.
    let closed_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let tcp = format!("tcp://127.0.0.1:{closed_port}");
    for host in ["unix:///nonexistent.sock", tcp.as_str()] {
        let runtime =
            DockerRuntime::connect(Some(host), NetworkMode::Bridge, Isolation::default(), PLANE)
                .expect("connect does not contact the engine");
        let err = runtime.state("c1").await.expect_err("state");
        assert!(
            matches!(err, RuntimeError::Unavailable(_)),
            "{host}: {err:?}"
        );
        assert!(err.retryable());
        let err = runtime
            .start(&spec("c1", "img".into()))
            .await
            .expect_err("start");
        assert!(
            matches!(err, RuntimeError::Unavailable(_)),
            "{host}: {err:?}"
        );
        let err = runtime.stop("c1", GRACE).await.expect_err("stop");
        assert!(
            matches!(err, RuntimeError::Unavailable(_)),
            "{host}: {err:?}"
        );
        let err = runtime.list_managed().await.expect_err("list");
        assert!(
            matches!(err, RuntimeError::Unavailable(_)),
            "{host}: {err:?}"
        );
    }
}

#[tokio::test]
async fn unknown_cids_are_missing() {
    if !docker_required() {
        return;
    }
    let runtime = published();
    let (cid, _guard) = unique_cid("none");
    assert_eq!(
        runtime.state(&cid).await.expect("state"),
        RuntimeState::Missing
    );
    runtime
        .stop(&cid, GRACE)
        .await
        .expect("stop of nothing is Ok");
    assert_eq!(
        runtime.state("bad/cid").await.expect("state"),
        RuntimeState::Missing
    );
}

/// Four replicas (runtimes that share nothing) start a desktop each at the same moment
/// on a network that does not exist yet: every start succeeds, and one network of that
/// name is left, without inter-container traffic (engines before API 1.44 let racing
/// creators make two; the later ones are removed).
#[tokio::test]
async fn replicas_racing_to_create_the_desktop_network_leave_one() {
    if !docker_required() {
        return;
    }
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let network = format!("vnc-test-race-{}", &suffix[..12]);
    let _network = NetworkGuard {
        name: network.clone(),
    };
    let replicas: Vec<_> = (0..4)
        .map(|_| {
            let isolation = Isolation {
                network: network.clone(),
                ..Isolation::default()
            };
            let mode = NetworkMode::Published { host_ip: LOOPBACK };
            DockerRuntime::connect(None, mode, isolation, PLANE).expect("connect")
        })
        .collect();
    let desktops: Vec<_> = (0..4).map(|_| unique_cid("race")).collect();
    let image = fixture_image();
    let starts = replicas.iter().zip(&desktops).map(|(runtime, (cid, _))| {
        let spec = spec(cid, image.clone());
        async move { runtime.start(&spec).await }
    });
    for started in futures_util::future::join_all(starts).await {
        started.expect("every replica's start");
    }
    let named = docker(&[
        "network",
        "ls",
        "-q",
        "--filter",
        &format!("name=^{network}$"),
    ])
    .expect("docker network ls");
    assert_eq!(named.lines().count(), 1, "{named}");
    let icc = docker(&[
        "network",
        "inspect",
        "--format",
        "{{index .Options \"com.docker.network.bridge.enable_icc\"}}",
        &network,
    ])
    .expect("docker network inspect");
    assert_eq!(icc.trim(), "false");
    for (runtime, (cid, _)) in replicas.iter().zip(&desktops) {
        runtime.stop(cid, GRACE).await.expect("stop");
    }
}
