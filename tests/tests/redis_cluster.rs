//! The Redis Cluster harness (`vnc_tests::cluster`) on a real six-node cluster, and how
//! fred's clustered client behaves there: routing by slot, what reaches one node only,
//! sharded pub/sub, and a slot's primary changing under the client.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use fred::clients::SubscriberClient;
use fred::prelude::*;
use fred::types::{ClusterHash, CustomCommand};
use fred::types::scan::Scanner;
use futures_util::StreamExt;
use vnc_tests::WAIT;
use vnc_tests::cluster::{RedisCluster, cluster_required, connect};

/// 32 keys without hash tags: their slots fall on every primary.
fn keys() -> Vec<String> {
    (0..32).map(|i| format!("key:{i}")).collect()
}

/// The next message on `rx`, within [`WAIT`].
async fn next_message(
    rx: &mut tokio::sync::broadcast::Receiver<fred::types::Message>,
) -> Option<(String, String)> {
    let message = tokio::time::timeout(WAIT, rx.recv()).await.ok()?.ok()?;
    Some((
        message.channel.to_string(),
        message.value.as_string().unwrap_or_default(),
    ))
}

/// Whether a message arrives on `rx` within `within`.
async fn nothing_within(
    rx: &mut tokio::sync::broadcast::Receiver<fred::types::Message>,
    within: Duration,
) -> bool {
    tokio::time::timeout(within, rx.recv()).await.is_err()
}

async fn start() -> RedisCluster {
    RedisCluster::start().await.expect("a Redis Cluster")
}

#[tokio::test]
async fn the_cluster_forms_and_a_client_from_its_url_spreads_keys_over_every_primary() {
    if !cluster_required() {
        return;
    }
    let cluster = start().await;

    let view = cluster.view(cluster.ports()[0]).await.unwrap();
    let primaries: Vec<_> = view.iter().filter(|v| v.primary).collect();
    let replicas: Vec<_> = view.iter().filter(|v| !v.primary).collect();
    assert_eq!((primaries.len(), replicas.len()), (3, 3), "{view:?}");
    let replicated: BTreeSet<_> = replicas.iter().filter_map(|r| r.primary_id.clone()).collect();
    let primary_ids: BTreeSet<_> = primaries.iter().map(|p| p.id.clone()).collect();
    assert_eq!(replicated, primary_ids, "one replica per primary: {view:?}");

    let url = cluster.url();
    assert!(url.starts_with("redis-cluster://127.0.0.1:"), "{url}");
    assert!(Config::from_url(&url).unwrap().server.is_clustered());
    // The first node alone is enough to find the rest.
    let first_only = url.split('?').next().unwrap();
    let client = connect(first_only).await.unwrap();
    let mut per_primary: BTreeMap<u16, u64> = BTreeMap::new();
    for key in keys() {
        let _: () = client
            .set(&key, format!("value of {key}"), None, None, false)
            .await
            .unwrap();
        *per_primary
            .entry(cluster.primary_of(&key).await.unwrap())
            .or_default() += 1;
    }
    assert_eq!(per_primary.len(), 3, "{per_primary:?}");
    // Each key is stored on its slot's primary, and nowhere else among the primaries.
    for (port, count) in &per_primary {
        assert_eq!(cluster.dbsize(*port).await.unwrap(), *count, "node {port}");
    }
    for key in keys() {
        assert_eq!(
            cluster.get(&key).await,
            Some(format!("value of {key}")),
            "{key}"
        );
    }
}

#[tokio::test]
async fn fred_pipelines_and_scripts_route_by_key_and_a_transaction_keeps_to_one_slot() {
    if !cluster_required() {
        return;
    }
    let cluster = start().await;
    let client = &cluster.client;

    // One pipeline, commands for every primary: each goes to its key's node.
    let pipe = client.pipeline();
    for key in keys() {
        let _: () = pipe.set(&key, "piped", None, None, false).await.unwrap();
    }
    let replies: Vec<Value> = pipe.all().await.unwrap();
    assert_eq!(replies.len(), keys().len());
    for key in keys() {
        assert_eq!(cluster.get(&key).await.as_deref(), Some("piped"), "{key}");
    }

    // EVAL routed by its first key, the way control runs its scripts.
    for key in keys() {
        let eval = CustomCommand::new_static("EVAL", ClusterHash::Offset(2), false);
        let args: Vec<Value> = vec![
            "return redis.call('GET', KEYS[1])".into(),
            1.into(),
            key.as_str().into(),
        ];
        let got: String = client.custom(eval, args).await.unwrap();
        assert_eq!(got, "piped", "{key}");
    }

    // Keys of one hash tag share a slot, so one MULTI takes them.
    let trx = client.multi();
    let _: () = trx.set("{t}:a", "1", None, None, false).await.unwrap();
    let _: () = trx.incr("{t}:b").await.unwrap();
    let (_, b): (Value, i64) = trx.exec(true).await.unwrap();
    assert_eq!(b, 1);
    // Keys of two slots do not: refused (by fred when the slots are on two nodes, by
    // Redis with CROSSSLOT when on one).
    let (k1, k2) = two_keys_of_other_slots(&cluster).await;
    let trx = client.multi();
    let first = trx.set(&k1, "1", None, None, false).await;
    let second: Result<(), _> = trx.set(&k2, "1", None, None, false).await;
    let exec = match (first, second) {
        (Ok(()), Ok(())) => trx.exec::<Value>(true).await.map(drop),
        (Err(e), _) | (_, Err(e)) => Err(e),
    };
    assert!(exec.is_err(), "a MULTI over two slots ran: {k1}, {k2}");
}

/// Two keys whose slots differ.
async fn two_keys_of_other_slots(cluster: &RedisCluster) -> (String, String) {
    let a = cluster.slot_of("key:0").await.unwrap();
    for key in keys() {
        if cluster.slot_of(&key).await.unwrap() != a {
            return ("key:0".to_owned(), key);
        }
    }
    unreachable!("32 keys in one slot")
}

#[tokio::test]
async fn flushall_and_scan_reach_one_node_and_their_cluster_forms_every_primary() {
    if !cluster_required() {
        return;
    }
    let cluster = start().await;
    for key in keys() {
        cluster.set(&key, "x").await;
    }

    // SCAN without a hash tag reads one node; scan_cluster reads every primary.
    let mut one: Vec<String> = Vec::new();
    let mut pages = cluster.client.scan("key:*", Some(100), None);
    while let Some(page) = pages.next().await {
        let mut page = page.unwrap();
        one.extend(page.take_results().unwrap_or_default().iter().map(|k| k.as_str().unwrap().to_owned()));
    }
    assert!(one.len() < keys().len(), "SCAN saw {} keys", one.len());
    let mut all: BTreeSet<String> = BTreeSet::new();
    let mut pages = cluster.client.scan_cluster("key:*", Some(100), None);
    while let Some(page) = pages.next().await {
        let mut page = page.unwrap();
        all.extend(page.take_results().unwrap_or_default().iter().map(|k| k.as_str().unwrap().to_owned()));
    }
    assert_eq!(all, keys().into_iter().collect());

    // FLUSHALL reaches one node; wipe (flushall_cluster) all of them.
    let _: () = cluster.client.flushall(false).await.unwrap();
    let mut left = 0;
    for key in keys() {
        left += u64::from(cluster.exists(&key).await);
    }
    assert!(left > 0, "a single FLUSHALL emptied the whole cluster");
    cluster.wipe().await;
    for port in cluster.live_ports() {
        assert_eq!(cluster.dbsize(port).await.unwrap(), 0, "node {port}");
    }
}

#[tokio::test]
async fn sharded_and_plain_pubsub_deliver_across_nodes() {
    if !cluster_required() {
        return;
    }
    let cluster = start().await;
    let subscriber = cluster.subscriber().await.unwrap();
    let mut rx = subscriber.message_rx();

    subscriber.ssubscribe("room:{a}").await.unwrap();
    let message = serde_json::json!({ "type": "hello" });
    assert_eq!(cluster.spublish("room:{a}", &message).await, 1);
    assert_eq!(
        next_message(&mut rx).await,
        Some(("room:{a}".to_owned(), message.to_string()))
    );

    // One SSUBSCRIBE takes the channels of one slot only.
    let (c1, c2) = two_keys_of_other_slots(&cluster).await;
    assert!(subscriber.ssubscribe(vec![c1, c2]).await.is_err());

    // PUBLISH reaches a subscriber whatever node either client talks to.
    subscriber.subscribe("control").await.unwrap();
    let kick = serde_json::json!({ "type": "kick" });
    for port in cluster.live_ports() {
        let other = connect(&format!("redis-cluster://127.0.0.1:{port}")).await.unwrap();
        let _: i64 = other.publish("control", kick.to_string()).await.unwrap();
        assert_eq!(
            next_message(&mut rx).await,
            Some(("control".to_owned(), kick.to_string())),
            "published through node {port}"
        );
    }
}

/// Writes `key`, moves its slot with `failover`, and checks the client still reads it
/// and writes to the new primary.
async fn the_client_follows(cluster: &RedisCluster, key: &str, new_primary: u16) {
    assert_eq!(cluster.primary_of(key).await.unwrap(), new_primary);
    assert_eq!(cluster.get(key).await.as_deref(), Some("before"));
    cluster.set(key, "after").await;
    assert_eq!(cluster.get(key).await.as_deref(), Some("after"));
    let on_new: String = {
        let direct = connect(&format!("redis-cluster://127.0.0.1:{new_primary}")).await.unwrap();
        direct.get(key).await.unwrap()
    };
    assert_eq!(on_new, "after");
}

#[tokio::test]
async fn a_manual_failover_moves_the_slot_and_the_client_follows() {
    if !cluster_required() {
        return;
    }
    let cluster = start().await;
    cluster.set("session:1", "before").await;
    let old = cluster.primary_of("session:1").await.unwrap();

    let failover = cluster.failover_slot_of("session:1").await.unwrap();
    assert_eq!(failover.old_primary, old);
    assert_ne!(failover.new_primary, old);
    the_client_follows(&cluster, "session:1", failover.new_primary).await;
    // The old primary is now a replica of the new one.
    let view = cluster.view(old).await.unwrap();
    let me = view.iter().find(|v| v.port == old).unwrap();
    let new_id = &view.iter().find(|v| v.port == failover.new_primary).unwrap().id;
    assert!(!me.primary && me.primary_id.as_ref() == Some(new_id), "{view:?}");
}

#[tokio::test]
async fn a_killed_primary_is_replaced_by_its_replica_and_the_client_follows() {
    if !cluster_required() {
        return;
    }
    let mut cluster = start().await;
    cluster.set("session:1", "before").await;

    let failover = cluster.kill_primary_of("session:1").await.unwrap();
    assert!(!cluster.live_ports().contains(&failover.old_primary));
    the_client_follows(&cluster, "session:1", failover.new_primary).await;
    // Keys on the other primaries are untouched.
    for key in keys() {
        cluster.set(&key, "x").await;
        assert!(cluster.exists(&key).await, "{key}");
    }
}

/// A shard subscription across a failover of its slot: after the slot moves, Redis
/// tells the subscriber it lost the channel (an unsolicited SUNSUBSCRIBE); whether
/// fred's subscriber takes the channel up again on the new primary is what this
/// records.
#[tokio::test]
async fn a_shard_subscription_after_its_slot_fails_over() {
    if !cluster_required() {
        return;
    }
    let cluster = start().await;
    let subscriber: SubscriberClient = cluster.subscriber().await.unwrap();
    let mut rx = subscriber.message_rx();
    subscriber.ssubscribe("room:{s}").await.unwrap();
    let message = serde_json::json!({ "n": 1 });
    assert_eq!(cluster.spublish("room:{s}", &message).await, 1);
    assert!(next_message(&mut rx).await.is_some());

    cluster.failover_slot_of("room:{s}").await.unwrap();
    let heard = cluster.spublish("room:{s}", &message).await;
    let arrived = !nothing_within(&mut rx, Duration::from_secs(2)).await;
    eprintln!("after failover: spublish reached {heard}, arrived {arrived}, tracked {:?}", subscriber.tracked_shard_channels());
}
