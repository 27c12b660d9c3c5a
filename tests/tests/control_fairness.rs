//! One tenant can't starve the others: the start rate limit's slots go to tenants in
//! turn, each tenant has a container quota that parallel creates can't pass, and each
//! caller has an API rate limit. The real vnc-control binary against a real
//! redis-server, with the static runtime: a start of a created container fails at once
//! there (the runtime manages no lifecycle), which is all these tests need: the job
//! ran, and when.
#![forbid(unsafe_code)]

use fred::prelude::*;
use serde_json::{Value, json};
use vnc_tests::WAIT;
use vnc_tests::control::{ControlProcess, Identity};
use vnc_tests::keys::TestKeys;
use vnc_tests::process::eventually;
use vnc_tests::redis::RedisServer;

/// Redis, control (static runtime, image `desk-image` allowed) started with `flags`,
/// and the identity provider of its callers.
struct Stack {
    redis: RedisServer,
    identity: Identity,
    control: ControlProcess,
    _keys: TestKeys,
}

async fn stack(flags: &[&str]) -> Stack {
    let redis = RedisServer::start().await.unwrap();
    let keys = TestKeys::new();
    let identity = Identity::new();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("control.toml");
    std::fs::write(
        &config,
        "runtime = \"static\"\n[[static_containers]]\ncid = \"desk\"\nowner = \"alice\"\ntenant = \"t0\"\nhost = \"127.0.0.1\"\nport = 5900\n",
    )
    .unwrap();
    let mut args = vec![
        "--config",
        config.to_str().unwrap(),
        "--image",
        "desk-image",
    ];
    args.extend_from_slice(flags);
    let control = ControlProcess::start(&redis.url(), &keys, &identity, &args)
        .await
        .unwrap();
    Stack {
        redis,
        identity,
        control,
        _keys: keys,
    }
}

/// POST /v1/containers; returns the status and body.
async fn create(c: &ControlProcess, bearer: &str) -> (u16, Value) {
    let body = json!({"image": "desk-image", "resources": {"cpus": 0.5, "memory_mb": 128}});
    c.call("POST", "/v1/containers", Some(bearer), Some(&body))
        .await
        .unwrap()
}

/// Creates a container that must be accepted; returns its (container id, job id).
async fn created(c: &ControlProcess, bearer: &str) -> (String, String) {
    let (status, body) = create(c, bearer).await;
    assert_eq!(status, 202, "{body}");
    (
        body["container_id"].as_str().unwrap().to_owned(),
        body["job_id"].as_str().unwrap().to_owned(),
    )
}

/// A job's time field (Unix ms, Redis clock), if set.
async fn job_ms(redis: &RedisServer, job: &str, field: &str) -> Option<u64> {
    let v: Option<String> = redis
        .client
        .hget(format!("vnc:{{jobs}}:job:{job}"), field)
        .await
        .unwrap();
    v.and_then(|v| v.parse().ok())
}

/// Waits until a job has run to its end; returns its `finished_at`.
async fn finished(redis: &RedisServer, job: &str) -> u64 {
    eventually(&format!("job {job} to finish"), WAIT, || {
        job_ms(redis, job, "finished_at")
    })
    .await
}

/// Tenant A queues 30 starts, then tenant B one: B's start takes the next slot of the
/// start rate limit (one start per 400 ms here), not the one after A's 30. Three times
/// over, with A's backlog still there each time. A stop of B's meanwhile is not held
/// back by A's starts either.
#[tokio::test]
async fn another_tenants_start_takes_the_next_slot_not_the_end_of_the_line() {
    let s = stack(&[
        "--starts-per-minute",
        "1",
        "--start-rate-window",
        "400ms",
        "--max-containers-per-tenant",
        "40",
    ])
    .await;
    let c = &s.control;
    let alice = s.identity.token("alice", "ta", false);
    let bob = s.identity.token("bob", "tb", false);

    let mut backlog = Vec::new();
    for _ in 0..30 {
        backlog.push(created(c, &alice).await.1);
    }
    for round in 0..3 {
        let (cid, job) = created(c, &bob).await;
        let queued = job_ms(&s.redis, &job, "created_at").await.unwrap();
        let ran = finished(&s.redis, &job).await;
        let mut between = 0;
        let mut waiting = 0;
        for a in &backlog {
            match job_ms(&s.redis, a, "finished_at").await {
                Some(t) if t > queued && t <= ran => between += 1,
                Some(_) => {}
                None => waiting += 1,
            }
        }
        // At most the start of A already dispatched when B's was queued.
        assert!(
            between <= 1,
            "round {round}: {between} of tenant A's starts ran between tenant B's start being queued and running"
        );
        assert!(
            waiting >= 15,
            "round {round}: A's backlog ({waiting} left) must still be waiting"
        );

        if round == 0 {
            // A stop is no start: it runs at once, whatever waits for start slots.
            let (status, body) = c
                .call("DELETE", &format!("/v1/containers/{cid}"), Some(&bob), None)
                .await
                .unwrap();
            assert_eq!(status, 202, "{body}");
            let stop = body["job_id"].as_str().unwrap().to_owned();
            finished(&s.redis, &stop).await;
            let mut left = 0;
            for a in &backlog {
                left += usize::from(job_ms(&s.redis, a, "finished_at").await.is_none());
            }
            assert!(left >= 15, "the stop waited for A's starts ({left} left)");
        }
    }
}

/// The default quota: a tenant's 11th live container is 429 with a message that says
/// what to do, another tenant still creates, a stopped container frees its place, and
/// 25 parallel creates of one tenant get exactly 10 through.
#[tokio::test]
async fn a_tenants_quota_holds_even_against_parallel_creates() {
    // One start an hour: the containers stay `creating` (live) instead of failing.
    let s = stack(&["--starts-per-minute", "1", "--start-rate-window", "1h"]).await;
    let c = &s.control;
    let warm = s.identity.token("w", "warm", false);
    let t1 = s.identity.token("alice", "t1", false);
    let t2 = s.identity.token("bob", "t2", false);
    let t3 = s.identity.token("carol", "t3", true);
    // The hour's one start goes to this container (and fails: static runtime).
    let (_, job) = created(c, &warm).await;
    finished(&s.redis, &job).await;

    let mut t1_cids = Vec::new();
    for _ in 0..10 {
        t1_cids.push(created(c, &t1).await.0);
    }
    let (status, body) = create(c, &t1).await;
    assert_eq!(status, 429, "{body}");
    let msg = body["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("tenant t1 has 10 containers, the limit is 10: stop one first"),
        "{msg}"
    );
    created(c, &t2).await;

    // A stopped container no longer counts.
    let _: () = s
        .redis
        .client
        .hset(
            format!("vnc:container:{}", t1_cids[0]),
            ("state", "stopped"),
        )
        .await
        .unwrap();
    created(c, &t1).await;
    assert_eq!(create(c, &t1).await.0, 429);

    let burst = (0..25).map(|_| create(c, &t3));
    let answers = futures_util::future::join_all(burst).await;
    let accepted = answers.iter().filter(|(s, _)| *s == 202).count();
    let refused = answers.iter().filter(|(s, _)| *s == 429).count();
    assert_eq!((accepted, refused), (10, 15), "{answers:?}");
    let (status, list) = c
        .call("GET", "/v1/containers", Some(&t3), None)
        .await
        .unwrap();
    assert_eq!((status, list["total"].as_u64()), (200, Some(10)), "{list}");
}

/// One caller past its limit (1 request/s, bursts of 5 here) gets 429 with a
/// Retry-After in seconds; another caller is unaffected; unauthenticated requests are
/// limited by their address, and health probes never are.
#[tokio::test]
async fn a_caller_past_its_rate_gets_429_with_retry_after_and_others_do_not() {
    let s = stack(&["--api-rate-limit", "1", "--api-rate-burst", "5"]).await;
    let c = &s.control;
    let alice = s.identity.token("alice", "t1", false);
    let bob = s.identity.token("bob", "t1", false);

    let mut statuses = Vec::new();
    let mut limited = None;
    for _ in 0..20 {
        let (status, head, body) = c
            .call_with_head("GET", "/v1/containers", Some(&alice), None)
            .await
            .unwrap();
        statuses.push(status);
        if status == 429 && limited.is_none() {
            limited = Some((head, body));
        }
    }
    assert_eq!(statuses[..5], [200; 5], "{statuses:?}");
    assert!(statuses.contains(&429), "{statuses:?}");
    let (head, body) = limited.unwrap();
    let retry_after: u64 = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("retry-after")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or_else(|| panic!("no Retry-After in {head}"));
    assert!((1..=2).contains(&retry_after), "{head}");
    assert_eq!(body["statusCode"], 429, "{body}");

    // Another subject from the same address has its own budget.
    let (status, body) = c
        .call("GET", "/v1/containers", Some(&bob), None)
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");

    // Without a token the address is the caller: 401 until its budget is gone, then
    // 429; alice and bob's budgets are theirs, and probes always answer.
    let mut anonymous = Vec::new();
    for _ in 0..20 {
        anonymous.push(c.call("GET", "/v1/containers", None, None).await.unwrap().0);
    }
    assert!(
        anonymous.contains(&401) && anonymous.contains(&429),
        "{anonymous:?}"
    );
    for _ in 0..10 {
        assert_eq!(c.call("GET", "/healthz", None, None).await.unwrap().0, 200);
    }
}
