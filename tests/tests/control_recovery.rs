//! vnc-control recovering from lost Redis data and from racing lifecycle requests, end
//! to end: the real binaries, a real redis-server, containers on a real Docker engine.
#![forbid(unsafe_code)]

use std::time::Duration;

use serde_json::{Value, json};
use vnc_tests::control::{ControlProcess, DockerStack, docker_args, docker_stack};
use vnc_tests::docker::{ContainerGuard, docker};
use vnc_tests::process::eventually;
use vnc_tests::relay::RelayProcess;
use vnc_tests::rfb::RfbClient;

/// Bound on a start job (the image is on the engine; the fixture answers at once).
const START_WITHIN: Duration = Duration::from_secs(60);

/// Docker's id and start time of a container, which a re-adoption must not change.
fn identity_of(name: &str) -> String {
    docker(&["inspect", "-f", "{{.Id}} {{.State.StartedAt}}", name])
        .unwrap_or_else(|e| panic!("docker inspect {name}: {e}"))
}

/// A container of the fixture image labelled as a desktop of `plane` (but started
/// by the test, not by control), removed when the guard drops.
fn labelled_container(name: &str, image: &str, labels: &[String]) -> ContainerGuard {
    let _ = docker(&["rm", "-f", name]);
    let mut args = vec!["run", "-d", "--name", name, "--network", "none"];
    for l in labels {
        args.extend(["--label", l]);
    }
    args.push(image);
    docker(&args).unwrap_or_else(|e| panic!("docker run {name}: {e}"));
    ContainerGuard { name: name.into() }
}

/// Three desktops run, the third created after the VNC password secret was rotated
/// (a new first line in the secrets file, SIGHUP); Redis loses every key (FLUSHALL).
/// Within a few reconcile intervals every record is back as it was (running, in its
/// tenant's list), a new token for each opens a session through a real relay, which
/// logs in to the container with the re-derived VNC password (the fixture demands VNC
/// authentication), and Docker shows the same containers, never restarted. A container
/// labelled for another control plane is not adopted; one of this plane without the
/// labels to rebuild a record is left alone, not removed.
#[tokio::test]
async fn desktops_survive_redis_losing_its_data() {
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
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("vnc-password.secret");
    let control = ControlProcess::start(
        &redis.url(),
        &keys,
        &identity,
        &docker_args(
            &image,
            &[
                "--relay-url",
                &relay_url,
                "--reconcile-interval",
                "500ms",
                "--vnc-password-secret-file",
                secrets.to_str().unwrap(),
            ],
        ),
    )
    .await
    .unwrap();
    let (alice, bob) = (
        identity.token("alice", "t1", false),
        identity.token("bob", "t2", false),
    );
    let mut desktops = Vec::new();
    for (user, bearer) in [("alice", &alice), ("bob", &bob), ("alice", &alice)] {
        if desktops.len() == 2 {
            let old = std::fs::read_to_string(&secrets).expect("generated secrets file");
            std::fs::write(&secrets, format!("{}\n{old}", "r".repeat(40))).unwrap();
            control.proc.signal("HUP");
            eventually("the reload", vnc_tests::WAIT, || async {
                let ok = control
                    .metric("vnc_control_config_reloads_total{result=\"ok\"}")
                    .await;
                (ok == Some(1.0)).then_some(())
            })
            .await;
        }
        let (status, created) = control.create_desktop(bearer, &image).await;
        assert_eq!(status, 202, "{created}");
        let cid = created["container_id"].as_str().unwrap().to_owned();
        let guard = ContainerGuard {
            name: format!("vnc-{cid}"),
        };
        let job = control
            .wait_job(bearer, created["job_id"].as_str().unwrap(), START_WITHIN)
            .await;
        assert_eq!(job["state"], "completed", "{user}: {job}");
        let (_, view) = control
            .call("GET", &format!("/v1/containers/{cid}"), Some(bearer), None)
            .await
            .unwrap();
        desktops.push((cid, bearer.clone(), view, identity_of(&guard.name), guard));
    }
    let key_of = |name: &str| {
        docker(&[
            "inspect",
            "-f",
            "{{index .Config.Labels \"vnc.password-key\"}}",
            name,
        ])
        .unwrap()
    };
    assert_ne!(
        key_of(&desktops[0].4.name),
        key_of(&desktops[2].4.name),
        "the desktop created after the rotation has the new secret"
    );

    let plane = format!("vnc.plane=test-{}", redis.port);
    let foreign = format!("foreign-{}", redis.port);
    let _other_plane = labelled_container(
        &format!("vnc-{foreign}"),
        &image,
        &[
            "vnc.managed=true".into(),
            format!("vnc.plane=other-{}", redis.port),
            format!("vnc.cid={foreign}"),
            "vnc.owner=alice".into(),
            "vnc.tenant=t1".into(),
            format!("vnc.image={image}"),
            "vnc.created-at=1".into(),
            "vnc.record=false".into(),
            "vnc.cpus=0.5".into(),
            "vnc.memory-mb=128".into(),
        ],
    );
    let unlabelled = format!("vnc-ghost-{}", redis.port);
    let _unlabelled = labelled_container(
        &unlabelled,
        &image,
        &[
            "vnc.managed=true".into(),
            plane.clone(),
            format!("vnc.cid=ghost-{}", redis.port),
        ],
    );

    redis.wipe().await;

    for (cid, bearer, view, _, _) in &desktops {
        let adopted = eventually(
            &format!("the record of {cid} to be re-adopted"),
            Duration::from_secs(20),
            || async {
                let (status, c) = control
                    .call("GET", &format!("/v1/containers/{cid}"), Some(bearer), None)
                    .await
                    .ok()?;
                (status == 200).then_some(c)
            },
        )
        .await;
        // The same record: owner, tenant, image, resources, labels, created_at, state.
        assert_eq!(&adopted, view);
        let (status, list) = control
            .call("GET", "/v1/containers", Some(bearer), None)
            .await
            .unwrap();
        assert_eq!(status, 200, "{list}");
        assert!(
            list["items"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["id"] == cid.as_str()),
            "back in its tenant's list: {list}"
        );
    }
    let (_, list) = control
        .call("GET", "/v1/containers", Some(&alice), None)
        .await
        .unwrap();
    assert_eq!(
        list["total"], 2,
        "alice's two, not the other plane's: {list}"
    );
    assert_eq!(
        control
            .metric("vnc_control_containers_adopted_total{state=\"running\"}")
            .await,
        Some(3.0)
    );

    for (cid, bearer, _, before, guard) in &desktops {
        let (status, tok) = control
            .call(
                "POST",
                &format!("/v1/containers/{cid}/vnc-tokens"),
                Some(bearer),
                Some(&json!({"scope": "control", "ttl_seconds": 60})),
            )
            .await
            .unwrap();
        assert_eq!(status, 200, "{tok}");
        let mut rfb = RfbClient::connect(tok["ws_url"].as_str().unwrap())
            .await
            .unwrap();
        let init = rfb
            .handshake()
            .await
            .unwrap_or_else(|e| panic!("session to re-adopted {cid}: {e}"));
        assert_eq!(init.name, "rfb-fixture");
        let rects = rfb.round_trip(init.width, init.height).await.unwrap();
        assert_eq!(rects[0].rgb(1, 1), (255, 0, 0));
        assert_eq!(
            &identity_of(&guard.name),
            before,
            "the container was replaced or restarted"
        );
    }

    // Another plane's container is not this control's to adopt.
    let (status, body) = control
        .call(
            "GET",
            &format!("/v1/containers/{foreign}"),
            Some(&alice),
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, 404, "{body}");
    // Nothing was removed, not even the container that can't be adopted.
    let left = docker(&["ps", "-aq", "--filter", &format!("label={plane}")]).unwrap();
    assert_eq!(left.lines().count(), 4, "{left}");
    assert!(!identity_of(&unlabelled).is_empty());
}

/// A DELETE while the start job is under way (the slow image's VNC server answers
/// 5 s after start, so the start job is between its state check and its outcome):
/// the stop wins. The start job fails, the record ends `stopped`, and no container of
/// it is left on the engine.
#[tokio::test]
async fn a_delete_during_a_start_wins() {
    let Some(DockerStack {
        redis,
        keys,
        identity,
    }) = docker_stack().await
    else {
        return;
    };
    let image = vnc_tests::docker::slow_fixture_image();
    let control = ControlProcess::start(
        &redis.url(),
        &keys,
        &identity,
        &[
            "--image",
            &image,
            "--stop-grace",
            "1s",
            "--start-timeout",
            "10s",
            "--job-backoff",
            "100ms",
        ],
    )
    .await
    .unwrap();
    let alice = identity.token("alice", "t1", false);
    let (status, created) = control.create_desktop(&alice, &image).await;
    assert_eq!(status, 202, "{created}");
    let cid = created["container_id"].as_str().unwrap().to_owned();
    let _guard = ContainerGuard {
        name: format!("vnc-{cid}"),
    };
    let start_job = created["job_id"].as_str().unwrap().to_owned();
    // DELETE once the start job has passed its state check.
    eventually("the start job to begin", START_WITHIN, || async {
        let (_, job) = control
            .call("GET", &format!("/v1/jobs/{start_job}"), Some(&alice), None)
            .await
            .ok()?;
        (job["progress"].as_u64() >= Some(10)).then_some(())
    })
    .await;
    let stop = control.delete_desktop(&alice, &cid, START_WITHIN).await;
    assert_eq!(stop["state"], "completed", "{stop}");
    let start = control.wait_job(&alice, &start_job, START_WITHIN).await;
    assert_eq!(start["state"], "failed", "{start}");
    assert!(
        start["error"]
            .as_str()
            .unwrap_or_default()
            .contains("deleted"),
        "{start}"
    );

    let (_, c): (u16, Value) = control
        .call("GET", &format!("/v1/containers/{cid}"), Some(&alice), None)
        .await
        .unwrap();
    assert_eq!(c["state"], "stopped", "{c}");
    let left = docker(&["ps", "-aq", "--filter", &format!("label=vnc.cid={cid}")]).unwrap();
    assert!(left.trim().is_empty(), "a deleted desktop is left: {left}");
}
