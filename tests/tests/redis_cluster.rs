//! The Redis Cluster harness (`vnc_tests::cluster`) on a real six-node cluster, and how
//! fred's clustered client behaves there: routing by slot, what reaches one node only,
//! sharded pub/sub, and a slot's primary changing under the client.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use fred::clients::SubscriberClient;
use fred::prelude::*;
use fred::types::scan::Scanner;
use fred::types::{ClusterHash, CustomCommand};
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
    let replicated: BTreeSet<_> = replicas
        .iter()
        .filter_map(|r| r.primary_id.clone())
        .collect();
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

/// A script reading its first key.
const GET_FIRST: &str = "return redis.call('GET', KEYS[1])";

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
        let args: Vec<Value> = vec![GET_FIRST.into(), 1.into(), key.as_str().into()];
        let got: String = client.custom(eval, args).await.unwrap();
        assert_eq!(got, "piped", "{key}");
    }

    // fred's own `eval` routes by its keys too; keys of two slots are refused (by fred
    // when on two nodes, by Redis with CROSSSLOT when on one).
    for key in keys() {
        let got: String = client
            .eval(GET_FIRST, key.as_str(), Vec::<String>::new())
            .await
            .unwrap();
        assert_eq!(got, "piped", "{key}");
    }
    let (same_node, other_node) = key_pairs(&cluster).await;
    for (k1, k2) in [&same_node, &other_node] {
        let two = vec![k1.as_str(), k2.as_str()];
        let refused: Result<String, _> = client.eval(GET_FIRST, two, Vec::<String>::new()).await;
        assert!(refused.is_err(), "EVAL over two slots ran: {k1}, {k2}");
    }

    // Keys of one hash tag share a slot, so one MULTI takes them.
    let trx = client.multi();
    let _: () = trx.set("{t}:a", "1", None, None, false).await.unwrap();
    let _: () = trx.incr("{t}:b").await.unwrap();
    let (_, b): (Value, i64) = trx.exec(true).await.unwrap();
    assert_eq!(b, 1);
    // Keys of two slots do not: fred refuses them when the slots are on two nodes,
    // Redis (CROSSSLOT) when they are on one.
    let refusals = [(same_node, "CROSSSLOT"), (other_node, "same cluster node")];
    for ((k1, k2), refusal) in refusals {
        let trx = client.multi();
        let first = trx.set(&k1, "1", None, None, false).await;
        let second: Result<(), _> = trx.set(&k2, "1", None, None, false).await;
        let exec = match (first, second) {
            (Ok(()), Ok(())) => trx.exec::<Value>(true).await.map(drop),
            (Err(e), _) | (_, Err(e)) => Err(e),
        };
        let err = exec.expect_err(&format!("a MULTI over two slots ran: {k1}, {k2}"));
        assert!(err.to_string().contains(refusal), "{k1}, {k2}: {err}");
    }
}

/// Two keys of different slots on one primary, and two keys on different primaries.
async fn key_pairs(cluster: &RedisCluster) -> ((String, String), (String, String)) {
    let mut placed = Vec::new();
    for key in keys() {
        let at = (
            cluster.primary_of(&key).await.unwrap(),
            cluster.slot_of(&key).await.unwrap(),
        );
        placed.push((key, at));
    }
    let (k0, (node0, slot0)) = placed[0].clone();
    let same = placed.iter().find(|(_, (n, s))| *n == node0 && *s != slot0);
    let other = placed.iter().find(|(_, (n, _))| *n != node0);
    let (same, other) = (
        same.expect("two slots on one node"),
        other.expect("two nodes"),
    );
    ((k0.clone(), same.0.clone()), (k0, other.0.clone()))
}

/// Two keys whose slots differ.
async fn two_keys_of_other_slots(cluster: &RedisCluster) -> (String, String) {
    key_pairs(cluster).await.1
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
        one.extend(
            page.take_results()
                .unwrap_or_default()
                .iter()
                .map(|k| k.as_str().unwrap().to_owned()),
        );
    }
    assert!(one.len() < keys().len(), "SCAN saw {} keys", one.len());
    let mut all: BTreeSet<String> = BTreeSet::new();
    let mut pages = cluster.client.scan_cluster("key:*", Some(100), None);
    while let Some(page) = pages.next().await {
        let mut page = page.unwrap();
        all.extend(
            page.take_results()
                .unwrap_or_default()
                .iter()
                .map(|k| k.as_str().unwrap().to_owned()),
        );
    }
    assert_eq!(all, keys().into_iter().collect());
    // scan_page (what control pages with) reads one node too, unless the pattern has a
    // hash tag: then it reads the tag's node, which holds all of the tag's keys.
    assert!(paged(&cluster.client, "key:*").await.len() < keys().len());
    let tagged: BTreeSet<String> = (0..8).map(|i| format!("{{t}}:{i}")).collect();
    for key in &tagged {
        cluster.set(key, "x").await;
    }
    assert_eq!(paged(&cluster.client, "{t}:*").await, tagged);

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

/// Every key matching `pattern` that SCAN pages (`scan_page`) return.
async fn paged(client: &Client, pattern: &str) -> BTreeSet<String> {
    let (mut cursor, mut found) = ("0".to_owned(), BTreeSet::new());
    loop {
        let (next, page): (String, Vec<String>) = client
            .scan_page(cursor, pattern, Some(100), None)
            .await
            .unwrap();
        found.extend(page);
        if next == "0" {
            return found;
        }
        cursor = next;
    }
}

#[tokio::test]
async fn sharded_and_plain_pubsub_deliver_across_nodes() {
    if !cluster_required() {
        return;
    }
    let cluster = start().await;
    let subscriber = cluster.subscriber(false).await.unwrap();
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

    // PUBLISH reaches a subscriber whatever node it is sent to, but counts only the
    // subscribers of that node: sent to each node in turn, it counts the one
    // subscriber once.
    subscriber.subscribe("control").await.unwrap();
    assert_eq!(cluster.subscribers("control").await, 1);
    let kick = serde_json::json!({ "type": "kick" });
    let mut counted = 0;
    for port in cluster.live_ports() {
        let reply = cluster
            .node_command(port, &["PUBLISH", "control", &kick.to_string()])
            .await
            .unwrap();
        counted += reply.trim().parse::<i64>().unwrap();
        assert_eq!(
            next_message(&mut rx).await,
            Some(("control".to_owned(), kick.to_string())),
            "published through node {port}"
        );
    }
    assert_eq!(counted, 1);
}

/// Writes `key`, moves its slot with `failover`, and checks the client still reads it
/// and writes to the new primary.
async fn the_client_follows(cluster: &RedisCluster, key: &str, new_primary: u16) {
    assert_eq!(cluster.primary_of(key).await.unwrap(), new_primary);
    assert_eq!(cluster.get(key).await.as_deref(), Some("before"));
    cluster.set(key, "after").await;
    assert_eq!(cluster.get(key).await.as_deref(), Some("after"));
    let on_new: String = {
        let direct = connect(&format!("redis-cluster://127.0.0.1:{new_primary}"))
            .await
            .unwrap();
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
    let new_id = &view
        .iter()
        .find(|v| v.port == failover.new_primary)
        .unwrap()
        .id;
    assert!(
        !me.primary && me.primary_id.as_ref() == Some(new_id),
        "{view:?}"
    );
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

/// Subscribers of `channel` that an SPUBLISH reaches, once one does (or 0 after
/// [`WAIT`]): each try publishes `message` once more.
async fn reached(cluster: &RedisCluster, channel: &str, message: &serde_json::Value) -> i64 {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let n = cluster.spublish(channel, message).await;
        if n > 0 || tokio::time::Instant::now() >= deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A shard subscription when its slot's primary hands over with CLUSTER FAILOVER: the
/// old primary drops the subscription (an unsolicited SUNSUBSCRIBE), the connection
/// stays up, and fred's subscriber neither reconnects nor subscribes again on the new
/// primary; it still lists the channel as tracked. Subscribing to it again brings it back.
/// socketioxide-redis subscribes this way (RESP3, `ssubscribe`), so a daemon whose
/// socket.io adapter runs on a cluster has to resubscribe when a slot moves.
#[tokio::test]
async fn a_shard_subscription_is_dropped_by_a_manual_failover_until_resubscribed() {
    if !cluster_required() {
        return;
    }
    let cluster = start().await;
    let subscriber: SubscriberClient = cluster.subscriber(true).await.unwrap();
    let mut rx = subscriber.message_rx();
    subscriber.ssubscribe("room:{s}").await.unwrap();
    let message = serde_json::json!({ "n": 1 });
    assert_eq!(cluster.spublish("room:{s}", &message).await, 1);
    assert!(next_message(&mut rx).await.is_some());

    cluster.failover_slot_of("room:{s}").await.unwrap();
    assert_eq!(cluster.spublish("room:{s}", &message).await, 0);
    assert!(nothing_within(&mut rx, Duration::from_millis(500)).await);
    let tracked: Vec<String> = subscriber
        .tracked_shard_channels()
        .iter()
        .map(|c| c.to_string())
        .collect();
    assert_eq!(tracked, ["room:{s}"]);

    // As the relay does (`Store::keep_shard_subscriptions`): each channel again.
    for channel in subscriber.tracked_shard_channels() {
        subscriber.ssubscribe(channel.to_string()).await.unwrap();
    }
    assert_eq!(cluster.spublish("room:{s}", &message).await, 1);
    assert_eq!(
        next_message(&mut rx).await,
        Some(("room:{s}".to_owned(), message.to_string()))
    );
}

/// A shard subscription when its slot's primary dies: the connection drops, and fred's
/// subscriber (with `manage_subscriptions`) subscribes again on the promoted replica.
#[tokio::test]
async fn a_shard_subscription_follows_a_killed_primary() {
    if !cluster_required() {
        return;
    }
    let mut cluster = start().await;
    let subscriber: SubscriberClient = cluster.subscriber(true).await.unwrap();
    let mut rx = subscriber.message_rx();
    subscriber.ssubscribe("room:{k}").await.unwrap();
    let message = serde_json::json!({ "n": 1 });
    assert_eq!(cluster.spublish("room:{k}", &message).await, 1);
    assert!(next_message(&mut rx).await.is_some());

    cluster.kill_primary_of("room:{k}").await.unwrap();
    assert_eq!(reached(&cluster, "room:{k}", &message).await, 1);
    assert_eq!(
        next_message(&mut rx).await,
        Some(("room:{k}".to_owned(), message.to_string()))
    );
}
