//! The session registry across relay nodes, with two real relays on one real Redis:
//! records and heartbeats, kicks and revocations on `vnc:control` (4003 on whichever
//! node holds the session), single-use tokens, a node that dies, and a Redis that
//! loses its data.
#![forbid(unsafe_code)]

use std::time::Duration;

use serde_json::json;
use vnc_shared::token::Scope;
use vnc_tests::process::eventually;
use vnc_tests::redis::RedisServer;
use vnc_tests::relay::RelayProcess;
use vnc_tests::rfb::RfbClient;
use vnc_tests::stack::Stack;
use vnc_tests::ws::{expect_close, refused};

const W: u16 = 64;
const H: u16 = 48;
const TTL: &str = "3s";

/// The usual stack (node A, registry TTL 3 s) and a second node B on the same Redis.
async fn two_nodes(redis: RedisServer) -> (Stack, RelayProcess) {
    let stack = Stack::start_on(redis, &[], &["--session-ttl", TTL])
        .await
        .unwrap();
    let b = RelayProcess::start(
        &stack.redis.url(),
        &stack.keys.public,
        &["--session-ttl", TTL],
    )
    .await
    .unwrap();
    (stack, b)
}

async fn viewer(relay: &RelayProcess, token: &str) -> RfbClient {
    let mut rfb = RfbClient::connect(&relay.ws_url(token)).await.unwrap();
    rfb.handshake().await.unwrap();
    rfb
}

/// Kicks one session the way control does.
async fn kick(stack: &Stack, sid: &str) {
    let kick = json!({"type": "kick", "sid": sid, "reason": "kicked"});
    stack.redis.publish("vnc:control", &kick).await;
}

/// The sid of the session `node` holds for `c1` (waits for it to be registered).
async fn sid_on(stack: &Stack, node: &str) -> String {
    eventually(&format!("a session on {node}"), vnc_tests::WAIT, || async {
        stack
            .redis
            .sessions("c1")
            .await
            .into_iter()
            .find(|(_, r)| r["node"] == node)
            .map(|(sid, _)| sid)
    })
    .await
}

async fn sessions_and_nodes_are_registered_and_a_killed_node_vanishes_within_the_ttl(
    redis: RedisServer,
) {
    let (stack, b) = two_nodes(redis).await;
    let a = &stack.relay;
    let mut on_a = viewer(a, &stack.keys.token("c1", Scope::Control)).await;
    let _on_b = viewer(&b, &stack.keys.token("c1", Scope::View)).await;
    let sid_a = sid_on(&stack, &a.node_id).await;
    let sid_b = sid_on(&stack, &b.node_id).await;
    let sessions = stack.redis.sessions("c1").await;
    let record = &sessions[&sid_b];
    assert_eq!(
        (
            record["sub"].as_str(),
            record["scope"].as_str(),
            record["tenant"].as_str()
        ),
        ("u1", "view", "t1")
    );
    assert_eq!(record["transport"], "websocket");
    eventually("both node records", vnc_tests::WAIT, || async {
        let na = stack.redis.hash(&format!("vnc:node:{}", a.node_id)).await;
        let nb = stack.redis.hash(&format!("vnc:node:{}", b.node_id)).await;
        (na.get("sessions").map(String::as_str) == Some("1")
            && nb.get("sessions").map(String::as_str) == Some("1"))
        .then_some(())
    })
    .await;

    // B dies without a word: its session and node record expire within the TTL; A's
    // stay and keep relaying.
    b.proc.signal("KILL");
    eventually("B's records to expire", Duration::from_secs(8), || async {
        let gone = !stack.redis.sessions("c1").await.contains_key(&sid_b)
            && stack
                .redis
                .hash(&format!("vnc:node:{}", b.node_id))
                .await
                .is_empty();
        gone.then_some(())
    })
    .await;
    on_a.round_trip(W, H).await.unwrap();
    assert!(stack.redis.sessions("c1").await.contains_key(&sid_a));

    // A session that ends leaves the registry at once.
    drop(on_a);
    eventually("A's session to leave", vnc_tests::WAIT, || async {
        stack.redis.sessions("c1").await.is_empty().then_some(())
    })
    .await;
}

async fn a_kick_ends_the_named_session_with_4003_on_whichever_node_holds_it(redis: RedisServer) {
    let (stack, b) = two_nodes(redis).await;
    let mut on_a = viewer(&stack.relay, &stack.keys.token("c1", Scope::Control)).await;
    let mut on_b = viewer(&b, &stack.keys.token("c1", Scope::Control)).await;
    let sid_b = sid_on(&stack, &b.node_id).await;
    kick(&stack, &sid_b).await;
    let (code, reason) = expect_close(on_b.ws(), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(
        (code, reason.as_str()),
        (4003, "session ended by an operator")
    );
    on_a.round_trip(W, H).await.unwrap();
    b.wait_metric(
        "vnc_relay_sessions_total{transport=\"websocket\",outcome=\"kicked\"}",
        1.0,
    )
    .await;
}

async fn a_revoked_token_ends_its_session_and_is_refused_on_every_node(redis: RedisServer) {
    let (stack, b) = two_nodes(redis).await;
    let claims = vnc_tests::keys::TestKeys::claims("c1");
    let jti = claims["jti"].as_str().unwrap().to_owned();
    let token = stack.keys.sign(&claims);
    let mut bystander = viewer(&b, &stack.keys.token("c1", Scope::Control)).await;
    let mut revoked = viewer(&stack.relay, &token).await;
    // What control does on POST /v1/tokens/{jti}/revoke.
    stack.redis.revoke(&jti).await;
    stack
        .redis
        .publish(
            "vnc:control",
            &json!({"type": "kick", "jti": jti, "reason": "revoked"}),
        )
        .await;
    let (code, reason) = expect_close(revoked.ws(), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!((code, reason.as_str()), (4003, "token revoked"));
    assert_eq!(refused(&b.ws_url(&token)).await.0, 403);
    assert_eq!(refused(&stack.relay.ws_url(&token)).await.0, 403);
    bystander.round_trip(W, H).await.unwrap();
}

async fn a_single_use_token_holds_one_live_session_across_nodes(redis: RedisServer) {
    let (stack, b) = two_nodes(redis).await;
    let token = stack.keys.token("c1", Scope::Control);
    let first = viewer(&stack.relay, &token).await;
    let (status, body) = refused(&b.ws_url(&token)).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("single-use"), "{body}");
    assert_eq!(refused(&stack.relay.ws_url(&token)).await.0, 403);
    // Once that session ends the token may open one again (a page reconnecting after
    // a drain does this).
    drop(first);
    eventually("the token to be free again", vnc_tests::WAIT, || async {
        RfbClient::connect(&b.ws_url(&token)).await.ok()
    })
    .await;
}

async fn the_registry_is_rewritten_after_redis_loses_its_data(redis: RedisServer) {
    let stack = Stack::start_on(redis, &[], &["--session-ttl", TTL])
        .await
        .unwrap();
    let mut rfb = viewer(&stack.relay, &stack.keys.token("c1", Scope::Control)).await;
    let sid = sid_on(&stack, &stack.relay.node_id).await;
    stack.redis.wipe().await;
    assert!(stack.redis.sessions("c1").await.is_empty());
    // The live session keeps flowing, and the next heartbeat writes it back.
    rfb.round_trip(W, H).await.unwrap();
    assert_eq!(sid_on(&stack, &stack.relay.node_id).await, sid);
    rfb.round_trip(W, H).await.unwrap();
}

async fn session_limits_hold_across_nodes(redis: RedisServer) {
    let limits = [
        "--session-ttl",
        TTL,
        "--max-sessions-per-container",
        "2",
        "--max-sessions-per-user",
        "1",
    ];
    let stack = Stack::start_on(redis, &[], &limits).await.unwrap();
    let b = RelayProcess::start(&stack.redis.url(), &stack.keys.public, &limits)
        .await
        .unwrap();
    let as_user = |sub: &str| {
        let mut claims = vnc_tests::keys::TestKeys::claims("c1");
        claims["sub"] = json!(sub);
        stack.keys.sign(&claims)
    };
    // One session per user: u1's second, on the other node, is refused.
    let first = viewer(&stack.relay, &as_user("u1")).await;
    let (status, body) = refused(&b.ws_url(&as_user("u1"))).await;
    assert_eq!(status, 429, "{body}");
    assert!(body.contains("user"), "{body}");
    // Two sessions per container: u2 fits, u3 doesn't.
    let _second = viewer(&b, &as_user("u2")).await;
    let (status, body) = refused(&stack.relay.ws_url(&as_user("u3"))).await;
    assert_eq!(status, 429, "{body}");
    assert!(body.contains("container"), "{body}");
    // A session that ends makes room.
    drop(first);
    eventually("room for u3", vnc_tests::WAIT, || async {
        RfbClient::connect(&stack.relay.ws_url(&as_user("u3")))
            .await
            .ok()
    })
    .await;
}

/// A failover of the primary that serves container c1's slot (its session set, lease
/// and room channel), mid-session, on a real Redis Cluster (`CLUSTER FAILOVER` on its
/// replica): the live sessions on both nodes keep relaying, new sessions are admitted,
/// the relays take their room subscriptions again (the server dropped them with the
/// slot), so a room event and a kick still reach both nodes.
#[tokio::test]
async fn a_failover_of_a_rooms_primary_leaves_every_session_relaying() {
    if !vnc_tests::cluster::cluster_required() {
        return;
    }
    let redis = RedisServer::start_cluster().await.unwrap();
    let (stack, b) = two_nodes(redis).await;
    let room = "vnc:room:{c1}";
    let token = || stack.keys.token("c1", Scope::Control);
    let mut on_a = viewer(&stack.relay, &token()).await;
    let mut on_b = viewer(&b, &token()).await;
    let sid_b = sid_on(&stack, &b.node_id).await;
    let both_listen = || async { (stack.redis.shard_subscribers(room).await == 2).then_some(()) };
    eventually("both nodes in the room", vnc_tests::WAIT, both_listen).await;

    let cluster = stack.redis.cluster().unwrap();
    let moved = cluster.failover_slot_of(room).await.unwrap();
    assert_ne!(moved.old_primary, moved.new_primary);
    assert_eq!(cluster.primary_of(room).await.unwrap(), moved.new_primary);

    on_a.round_trip(W, H).await.unwrap();
    on_b.round_trip(W, H).await.unwrap();
    let mut after = eventually(
        "a session admitted after the failover",
        vnc_tests::WAIT,
        || async {
            let mut rfb = RfbClient::connect(&stack.relay.ws_url(&token()))
                .await
                .ok()?;
            rfb.handshake().await.ok()?;
            Some(rfb)
        },
    )
    .await;
    after.round_trip(W, H).await.unwrap();
    // The subscriptions are back on the slot's new primary (within a heartbeat).
    eventually("both nodes in the room again", vnc_tests::WAIT, both_listen).await;

    kick(&stack, &sid_b).await;
    let (code, _) = expect_close(on_b.ws(), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(code, 4003);
    stack.redis.publish_room("c1", "container.stopped").await;
    for rfb in [&mut on_a, &mut after] {
        let (code, _) = expect_close(rfb.ws(), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(code, 4004);
    }
}

vnc_tests::on_every_redis!(
    sessions_and_nodes_are_registered_and_a_killed_node_vanishes_within_the_ttl,
    a_kick_ends_the_named_session_with_4003_on_whichever_node_holds_it,
    a_revoked_token_ends_its_session_and_is_refused_on_every_node,
    a_single_use_token_holds_one_live_session_across_nodes,
    the_registry_is_rewritten_after_redis_loses_its_data,
    session_limits_hold_across_nodes,
);
