//! The key migration against a real redis-server per test: every kind of old key moves
//! with its type, contents, TTL and (a stream's) consumer group and pending entry; share
//! sets become sorted sets scored by expiry; old session sets go; a second run changes
//! nothing; a key already in the new form keeps what it has; two runs at once move each
//! key once; `vnc-control migrate` does it from the command line, and the daemon at
//! its start; on a Redis Cluster, keys move across slots and every primary is scanned.

use std::collections::HashMap;
use std::time::Duration;

use fred::prelude::*;
use fred::types::{CustomCommand, Expiration};
use vnc_control::infra::migrate::{Report, migrate};
use vnc_tests::cluster::{RedisCluster, cluster_required};
use vnc_tests::control::{ControlProcess, Identity};
use vnc_tests::keys::TestKeys;
use vnc_tests::process::eventually;
use vnc_tests::redis::RedisServer;

/// Every key with its type, sorted: what a run may change.
async fn keyspace(c: &Client) -> Vec<(String, String)> {
    let keys: Vec<String> = matching(c, "*").await;
    let mut out = Vec::new();
    for k in keys {
        let t: String = c.r#type(&k).await.unwrap();
        out.push((k, t));
    }
    out
}

/// The keys matching `pattern` (KEYS: a test's server is small), sorted.
async fn matching(c: &Client, pattern: &str) -> Vec<String> {
    let mut keys: Vec<String> = custom(c, "KEYS", vec![pattern]).await.convert().unwrap();
    keys.sort();
    keys
}

async fn custom(c: &Client, cmd: &'static str, args: Vec<&str>) -> Value {
    c.custom(CustomCommand::new_static(cmd, None, false), args)
        .await
        .unwrap()
}

async fn exists(c: &Client, key: &str) -> bool {
    c.exists::<i64, _>(key).await.unwrap() == 1
}

async fn hash(c: &Client, key: &str) -> HashMap<String, String> {
    c.hgetall(key).await.unwrap()
}

async fn zset(c: &Client, key: &str) -> Vec<(String, f64)> {
    c.zrange(key, 0, -1, None, false, None, true).await.unwrap()
}

async fn list(c: &Client, key: &str) -> Vec<String> {
    c.lrange(key, 0, -1).await.unwrap()
}

/// The `id` field of each entry of a stream, in order.
async fn stream_ids(c: &Client, key: &str) -> Vec<String> {
    let entries: Vec<(String, HashMap<String, String>)> =
        c.xrange(key, "-", "+", None).await.unwrap();
    entries
        .into_iter()
        .map(|(_, f)| f.get("id").cloned().unwrap_or_default())
        .collect()
}

async fn xadd(c: &Client, key: &str, fields: Vec<(&str, &str)>) -> String {
    c.xadd(key, false, None::<()>, "*", fields).await.unwrap()
}

async fn share(c: &Client, id: &str, expires_at: u64) {
    let _: () = c
        .hset(
            format!("vnc:share:{id}"),
            vec![
                ("cid", "c1".to_owned()),
                ("expires_at", expires_at.to_string()),
            ],
        )
        .await
        .unwrap();
}

/// An old deployment's keys of every kind.
async fn seed_old(c: &Client) {
    // The job stream, its group, one entry delivered and pending.
    for id in ["j1", "j2", "j3"] {
        xadd(c, "vnc:jobs", vec![("id", id)]).await;
    }
    custom(c, "XGROUP", vec!["CREATE", "vnc:jobs", "workers", "0"]).await;
    custom(
        c,
        "XREADGROUP",
        vec![
            "GROUP",
            "workers",
            "control-1",
            "COUNT",
            "1",
            "STREAMS",
            "vnc:jobs",
            ">",
        ],
    )
    .await;
    // Job hashes, one with its retention TTL.
    let _: () = c
        .hset("vnc:job:j1", vec![("name", "start"), ("state", "active")])
        .await
        .unwrap();
    let _: () = c.expire("vnc:job:j1", 600, None).await.unwrap();
    let _: () = c
        .hset("vnc:job:j2", vec![("name", "stop"), ("state", "waiting")])
        .await
        .unwrap();
    // The queue's other keys.
    let _: () = c
        .zadd(
            "vnc:jobs:delayed",
            None,
            None,
            false,
            false,
            (12345.0, "j3"),
        )
        .await
        .unwrap();
    let _: () = c
        .set(
            "vnc:jobs:lock:j1",
            "control-1/abc",
            Some(Expiration::PX(60_000)),
            None,
            false,
        )
        .await
        .unwrap();
    xadd(
        c,
        "vnc:jobs:dead",
        vec![("id", "j0"), ("name", "start"), ("error", "boom")],
    )
    .await;
    let _: () = c
        .rpush("vnc:jobs:ring:start", vec!["t1", "t2"])
        .await
        .unwrap();
    let _: () = c.rpush("vnc:jobs:group:start:t1", "j4").await.unwrap();
    // Shares: two live, one id whose share is gone.
    share(c, "h1", 2_000_000_000).await;
    share(c, "h2", 2_000_000_100).await;
    let _: () = c
        .sadd("vnc:shares:c1", vec!["h1", "h2", "h3"])
        .await
        .unwrap();
    // Old session sets.
    let _: () = c.sadd("vnc:sessions:c1", "s1").await.unwrap();
    let _: () = c.sadd("vnc:user_sessions:t1:u1", "s1").await.unwrap();
    let _: () = c.sadd("vnc:share_sessions:h1", "s1").await.unwrap();
    // Keys that stay as they are.
    let _: () = c
        .hset("vnc:container:c1", ("state", "running"))
        .await
        .unwrap();
    let _: () = c.sadd("vnc:containers:t1", "c1").await.unwrap();
    let _: () = c
        .zadd("vnc:sessions:{c1}", None, None, false, false, (1.0, "s2"))
        .await
        .unwrap();
}

#[tokio::test]
async fn every_kind_moves_with_its_contents_ttl_and_group() {
    let redis = RedisServer::start().await.unwrap();
    let c = &redis.client;
    seed_old(c).await;
    let job1 = hash(c, "vnc:job:j1").await;

    let report = migrate(c, "vnc:").await.unwrap();
    assert_eq!(
        report,
        Report {
            stream: 1,
            jobs: 2,
            queue: 5,
            merged: 0,
            shares: 1,
            stale_share_ids: 1,
            sessions: 3,
        }
    );

    // The stream, with its entries, its group and the pending entry.
    let stream = "vnc:{jobs}";
    assert_eq!(c.r#type::<String, _>(stream).await.unwrap(), "stream");
    assert_eq!(stream_ids(c, stream).await, ["j1", "j2", "j3"]);
    let groups: Vec<HashMap<String, Value>> = custom(c, "XINFO", vec!["GROUPS", stream])
        .await
        .convert()
        .unwrap();
    assert_eq!(groups.len(), 1, "{groups:?}");
    assert_eq!(groups[0]["name"].as_string().as_deref(), Some("workers"));
    assert_eq!(groups[0]["pending"].as_i64(), Some(1));
    let pending: Vec<Value> = custom(c, "XPENDING", vec![stream, "workers", "-", "+", "10"])
        .await
        .convert()
        .unwrap();
    assert_eq!(pending.len(), 1, "{pending:?}");
    let entry: Vec<Value> = pending[0].clone().convert().unwrap();
    assert_eq!(entry[1].as_string().as_deref(), Some("control-1"));

    // Job hashes: same fields, the TTL kept (within a margin), none where there was none.
    assert_eq!(hash(c, "vnc:{jobs}:job:j1").await, job1);
    let ttl: i64 = c.ttl("vnc:{jobs}:job:j1").await.unwrap();
    assert!((590..=600).contains(&ttl), "ttl {ttl}");
    assert_eq!(hash(c, "vnc:{jobs}:job:j2").await["state"], "waiting");
    assert_eq!(c.ttl::<i64, _>("vnc:{jobs}:job:j2").await.unwrap(), -1);

    // The queue's other keys.
    assert_eq!(
        zset(c, "vnc:{jobs}:delayed").await,
        [("j3".to_owned(), 12345.0)]
    );
    let lock: String = c.get("vnc:{jobs}:lock:j1").await.unwrap();
    assert_eq!(lock, "control-1/abc");
    let pttl: i64 = c.pttl("vnc:{jobs}:lock:j1").await.unwrap();
    assert!((50_000..=60_000).contains(&pttl), "pttl {pttl}");
    assert_eq!(stream_ids(c, "vnc:{jobs}:dead").await, ["j0"]);
    assert_eq!(list(c, "vnc:{jobs}:ring:start").await, ["t1", "t2"]);
    assert_eq!(list(c, "vnc:{jobs}:group:start:t1").await, ["j4"]);

    // Shares: a sorted set by expiry, the stale id dropped.
    assert_eq!(
        c.r#type::<String, _>("vnc:shares:{c1}").await.unwrap(),
        "zset"
    );
    assert_eq!(
        zset(c, "vnc:shares:{c1}").await,
        [
            ("h1".to_owned(), 2_000_000_000.0),
            ("h2".to_owned(), 2_000_000_100.0)
        ]
    );

    // Every old key is gone; the rest is untouched.
    for old in [
        "vnc:jobs",
        "vnc:job:j1",
        "vnc:job:j2",
        "vnc:jobs:delayed",
        "vnc:jobs:lock:j1",
        "vnc:jobs:dead",
        "vnc:jobs:ring:start",
        "vnc:jobs:group:start:t1",
        "vnc:shares:c1",
        "vnc:sessions:c1",
        "vnc:user_sessions:t1:u1",
        "vnc:share_sessions:h1",
    ] {
        assert!(!exists(c, old).await, "{old} is still there");
    }
    for kept in [
        "vnc:container:c1",
        "vnc:containers:t1",
        "vnc:share:h1",
        "vnc:share:h2",
    ] {
        assert!(exists(c, kept).await, "{kept} is gone");
    }
    assert_eq!(zset(c, "vnc:sessions:{c1}").await, [("s2".to_owned(), 1.0)]);

    // A second run finds nothing and changes nothing.
    let before = keyspace(c).await;
    let again = migrate(c, "vnc:").await.unwrap();
    assert_eq!(again, Report::default(), "{again}");
    assert_eq!(keyspace(c).await, before);
    assert_eq!(stream_ids(c, stream).await, ["j1", "j2", "j3"]);
}

#[tokio::test]
async fn a_key_already_in_the_new_form_keeps_what_it_has() {
    let redis = RedisServer::start().await.unwrap();
    let c = &redis.client;
    // Written by this version before the migration ran.
    let _: () = c
        .hset("vnc:{jobs}:job:j1", ("state", "completed"))
        .await
        .unwrap();
    xadd(c, "vnc:{jobs}", vec![("id", "j9")]).await;
    let _: () = c
        .zadd("vnc:{jobs}:delayed", None, None, false, false, (1.0, "j5"))
        .await
        .unwrap();
    let _: () = c.rpush("vnc:{jobs}:ring:start", "t3").await.unwrap();
    let _: () = c
        .zadd("vnc:shares:{c1}", None, None, false, false, (5.0, "h1"))
        .await
        .unwrap();
    // The old deployment's.
    let _: () = c.hset("vnc:job:j1", ("state", "waiting")).await.unwrap();
    for id in ["j1", "j2"] {
        xadd(c, "vnc:jobs", vec![("id", id)]).await;
    }
    let _: () = c
        .zadd(
            "vnc:jobs:delayed",
            None,
            None,
            false,
            false,
            vec![(2.0, "j3"), (9.0, "j5")],
        )
        .await
        .unwrap();
    let _: () = c
        .rpush("vnc:jobs:ring:start", vec!["t1", "t3"])
        .await
        .unwrap();
    share(c, "h1", 2_000_000_000).await;
    share(c, "h2", 2_000_000_001).await;
    let _: () = c.sadd("vnc:shares:c1", vec!["h1", "h2"]).await.unwrap();

    let report = migrate(c, "vnc:").await.unwrap();
    assert_eq!(report.merged, 4, "{report}");

    // A hash is kept as it is.
    assert_eq!(hash(c, "vnc:{jobs}:job:j1").await["state"], "completed");
    // The stream keeps its entry and gets the old ones after it: those jobs still run.
    assert_eq!(stream_ids(c, "vnc:{jobs}").await, ["j9", "j1", "j2"]);
    // A sorted set keeps its scores and gets the members it lacked.
    assert_eq!(
        zset(c, "vnc:{jobs}:delayed").await,
        [("j5".to_owned(), 1.0), ("j3".to_owned(), 2.0)]
    );
    assert_eq!(
        zset(c, "vnc:shares:{c1}").await,
        [("h1".to_owned(), 5.0), ("h2".to_owned(), 2_000_000_001.0)]
    );
    // A list gets the elements it lacked, in front (they are older), each once.
    assert_eq!(list(c, "vnc:{jobs}:ring:start").await, ["t1", "t3"]);
    for old in [
        "vnc:job:j1",
        "vnc:jobs",
        "vnc:jobs:delayed",
        "vnc:jobs:ring:start",
        "vnc:shares:c1",
    ] {
        assert!(!exists(c, old).await, "{old} is still there");
    }

    // An old key that comes back (an old control still running) is merged again,
    // never over the new one.
    let _: () = c.hset("vnc:job:j1", ("state", "waiting")).await.unwrap();
    let report = migrate(c, "vnc:").await.unwrap();
    assert_eq!((report.jobs, report.merged), (1, 1), "{report}");
    assert_eq!(hash(c, "vnc:{jobs}:job:j1").await["state"], "completed");
    assert!(!exists(c, "vnc:job:j1").await);
}

#[tokio::test]
async fn a_run_stopped_between_restore_and_del_is_finished_without_duplicates() {
    let redis = RedisServer::start().await.unwrap();
    let c = &redis.client;
    seed_old(c).await;
    // An earlier run restored the stream and stopped before deleting the old one.
    let dump: Value = c.dump("vnc:jobs").await.unwrap();
    let _: () = c
        .restore("vnc:{jobs}", 0, dump, false, false, None, None)
        .await
        .unwrap();

    let report = migrate(c, "vnc:").await.unwrap();
    assert_eq!((report.stream, report.merged), (1, 1), "{report}");
    assert_eq!(stream_ids(c, "vnc:{jobs}").await, ["j1", "j2", "j3"]);
    let pending: Vec<Value> = custom(c, "XPENDING", vec!["vnc:{jobs}", "workers"])
        .await
        .convert()
        .unwrap();
    assert_eq!(pending[0].as_i64(), Some(1), "{pending:?}");
    assert!(!exists(c, "vnc:jobs").await);
}

#[tokio::test]
async fn two_runs_at_once_move_each_key_once() {
    const JOBS: usize = 300;
    let redis = RedisServer::start().await.unwrap();
    let c = &redis.client;
    for i in 0..JOBS {
        let _: () = c
            .hset(format!("vnc:job:j{i}"), ("state", format!("s{i}")))
            .await
            .unwrap();
    }
    let replica = || async {
        let client = Builder::from_config(Config::from_url(&redis.url()).unwrap())
            .build()
            .unwrap();
        client.init().await.unwrap();
        client
    };
    let (a, b) = (replica().await, replica().await);
    let (ra, rb) = tokio::join!(migrate(&a, "vnc:"), migrate(&b, "vnc:"));
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(ra.jobs + rb.jobs, JOBS as u64, "{ra} / {rb}");
    assert_eq!(ra.merged + rb.merged, 0, "{ra} / {rb}");
    for i in 0..JOBS {
        assert_eq!(
            hash(c, &format!("vnc:{{jobs}}:job:j{i}")).await["state"],
            format!("s{i}")
        );
    }
    let old = matching(c, "vnc:job:*").await;
    assert!(old.is_empty(), "{old:?}");
    assert!(!exists(c, "vnc:migrate:lock").await, "the lease is freed");
}

/// Other prefixes are not touched, and glob specials in the prefix are literal.
#[tokio::test]
async fn the_command_migrates_under_its_prefix_and_prints_counts() {
    let redis = RedisServer::start().await.unwrap();
    let c = &redis.client;
    let _: () = c.hset("t[1]:job:j1", ("state", "waiting")).await.unwrap();
    let _: () = c.hset("t1:job:j1", ("state", "other")).await.unwrap();
    let _: () = c.hset("vnc:job:j1", ("state", "other")).await.unwrap();
    let _: () = c.sadd("t[1]:sessions:c1", "s1").await.unwrap();

    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_vnc-control"))
        .args(["migrate", "--redis-url", &redis.url()])
        .args(["--redis-prefix", "t[1]:"])
        .env("RUST_LOG", "error")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), out)
        .await
        .expect("vnc-control migrate exits")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{:?}: {stdout} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("job hashes 1,"), "{stdout}");
    assert!(stdout.contains("old session sets deleted 1"), "{stdout}");
    assert_eq!(hash(c, "t[1]:{jobs}:job:j1").await["state"], "waiting");
    assert!(!exists(c, "t[1]:job:j1").await);
    assert!(!exists(c, "t[1]:sessions:c1").await);
    assert!(exists(c, "t1:job:j1").await);
    assert!(exists(c, "vnc:job:j1").await);
}

#[tokio::test]
async fn the_daemon_migrates_at_start() {
    let redis = RedisServer::start().await.unwrap();
    let c = &redis.client;
    let _: () = c
        .hset("vnc:job:j1", vec![("name", "stop"), ("state", "completed")])
        .await
        .unwrap();
    let _: () = c.expire("vnc:job:j1", 600, None).await.unwrap();
    share(c, "h1", 2_000_000_000).await;
    let _: () = c.sadd("vnc:shares:c1", vec!["h1", "h2"]).await.unwrap();

    let (keys, identity) = (TestKeys::new(), Identity::new());
    let _control =
        ControlProcess::start_static(&redis.url(), &keys, &identity, &[("d1", "u1", "t1")])
            .await
            .unwrap();
    eventually("the old keys moved", Duration::from_secs(15), || async {
        (exists(c, "vnc:{jobs}:job:j1").await && !exists(c, "vnc:shares:c1").await).then_some(())
    })
    .await;
    assert!(!exists(c, "vnc:job:j1").await);
    assert_eq!(hash(c, "vnc:{jobs}:job:j1").await["state"], "completed");
    let ttl: i64 = c.ttl("vnc:{jobs}:job:j1").await.unwrap();
    assert!((1..=600).contains(&ttl), "ttl {ttl}");
    assert_eq!(
        zset(c, "vnc:shares:{c1}").await,
        [("h1".to_owned(), 2_000_000_000.0)]
    );
}

#[tokio::test]
async fn on_a_cluster_keys_move_across_slots_from_every_primary() {
    const JOBS: usize = 30;
    if !cluster_required() {
        return;
    }
    let cluster = RedisCluster::start().await.unwrap();
    let c = &cluster.client;
    for i in 0..JOBS {
        let _: () = c
            .hset(format!("vnc:job:j{i}"), ("state", format!("s{i}")))
            .await
            .unwrap();
    }
    let mut per_primary = Vec::new();
    for node in cluster.view(cluster.ports()[0]).await.unwrap() {
        if node.primary {
            per_primary.push(cluster.dbsize(node.port).await.unwrap());
        }
    }
    assert!(
        per_primary.len() == 3 && per_primary.iter().all(|&n| n > 0),
        "the job hashes are spread over every primary: {per_primary:?}"
    );
    for id in ["j1", "j2"] {
        xadd(c, "vnc:jobs", vec![("id", id)]).await;
    }
    let _: Value = c
        .xgroup_create("vnc:jobs", "workers", "0", false)
        .await
        .unwrap();
    let _: Value = c
        .xreadgroup(
            "workers",
            "control-1",
            Some(1),
            None,
            false,
            "vnc:jobs",
            ">",
        )
        .await
        .unwrap();
    share(c, "h1", 2_000_000_000).await;
    let _: () = c.sadd("vnc:shares:c1", vec!["h1", "h2"]).await.unwrap();
    let _: () = c.sadd("vnc:sessions:c1", "s1").await.unwrap();
    // Old and new names live in different slots: RENAME would fail.
    let slot = |k: &str| fred::util::redis_keyslot(k.as_bytes());
    assert_ne!(slot("vnc:jobs"), slot("vnc:{jobs}"));

    let report = migrate(c, "vnc:").await.unwrap();
    assert_eq!(
        (
            report.stream,
            report.jobs,
            report.shares,
            report.stale_share_ids,
            report.sessions
        ),
        (1, JOBS as u64, 1, 1, 1),
        "{report}"
    );
    for i in 0..JOBS {
        assert_eq!(
            hash(c, &format!("vnc:{{jobs}}:job:j{i}")).await["state"],
            format!("s{i}")
        );
        assert!(!exists(c, &format!("vnc:job:j{i}")).await);
    }
    assert_eq!(stream_ids(c, "vnc:{jobs}").await, ["j1", "j2"]);
    let pending: Vec<Value> = c.xpending("vnc:{jobs}", "workers", ()).await.unwrap();
    assert_eq!(pending[0].as_i64(), Some(1), "{pending:?}");
    assert_eq!(
        zset(c, "vnc:shares:{c1}").await,
        [("h1".to_owned(), 2_000_000_000.0)]
    );
    for old in ["vnc:jobs", "vnc:shares:c1", "vnc:sessions:c1"] {
        assert!(!exists(c, old).await, "{old} is still there");
    }
    assert_eq!(migrate(c, "vnc:").await.unwrap(), Report::default());
}
