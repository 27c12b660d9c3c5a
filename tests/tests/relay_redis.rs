//! The relay and Redis failures: the relay fails closed (503, unready) while Redis is
//! away and serves once it answers, whichever came up first; live sessions don't
//! notice a Redis restart.
#![forbid(unsafe_code)]

use std::time::Duration;

use fred::interfaces::ClientLike;

use vnc_shared::token::Scope;
use vnc_tests::fixture::Fixture;
use vnc_tests::keys::TestKeys;
use vnc_tests::process::eventually;
use vnc_tests::redis::{RedisServer, free_port};
use vnc_tests::relay::RelayProcess;
use vnc_tests::rfb::RfbClient;
use vnc_tests::stack::Stack;
use vnc_tests::ws::{expect_close, http_get, refused};

const W: u16 = 64;
const H: u16 = 48;

/// Shard channels (`PUBSUB SHARDCHANNELS`) with a subscriber, sorted: the socket.io
/// adapter's.
async fn shard_channels(redis: &RedisServer) -> Vec<String> {
    let cmd = fred::types::CustomCommand::new_static("PUBSUB", None, false);
    let mut channels: Vec<String> = redis
        .client
        .custom(cmd, vec!["SHARDCHANNELS"])
        .await
        .expect("PUBSUB SHARDCHANNELS");
    channels.sort();
    channels
}

#[tokio::test]
async fn a_relay_started_before_redis_serves_once_redis_comes_up() {
    let port = free_port();
    let keys = TestKeys::new();
    let fixture = Fixture::start(&[]).await.unwrap();
    let relay = RelayProcess::start(&format!("redis://127.0.0.1:{port}"), &keys.public, &[])
        .await
        .unwrap();
    let url = relay.ws_url(&keys.token("c1", Scope::Control));

    // No Redis: unready, and sessions are refused (the relay can't check revocation).
    let (status, body) = http_get(relay.admin, "/readyz").await.unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("redis"), "{body}");
    let (status, body) = refused(&url).await;
    assert_eq!(status, 503);
    // What failed, not Redis's own error or its address.
    assert!(body.contains("redis unreachable"), "{body}");
    assert!(!body.contains(&port.to_string()), "{body}");

    let redis = RedisServer::start_on(port).await.unwrap();
    redis
        .put_container("c1", "t1", "running", fixture.port())
        .await;
    relay.wait_ready().await;
    let mut rfb = RfbClient::connect(&url).await.unwrap();
    rfb.handshake().await.unwrap();
}

/// Redis restarts mid-session, once keeping its data and once losing it: live
/// sessions keep relaying (whole framebuffer updates parse, so nothing was lost or
/// reordered), new sessions are refused with 503 while it is away and accepted once
/// it is back, the registry is written again, and room events reach the sessions.
#[tokio::test]
async fn live_sessions_survive_a_redis_restart_and_new_ones_wait_for_it() {
    for keep_data in [true, false] {
        let mut stack = Stack::start(&[], &["--session-ttl", "3s"]).await.unwrap();
        stack.relay.wait_ready().await;
        let mut live = RfbClient::connect(&stack.url()).await.unwrap();
        live.handshake().await.unwrap();
        live.round_trip(W, H).await.unwrap();
        let adapter = shard_channels(&stack.redis).await;
        assert!(!adapter.is_empty(), "the socket.io adapter subscribed");

        stack.redis.stop(keep_data).await;
        eventually("the relay to notice", vnc_tests::WAIT, || async {
            let (status, _) = http_get(stack.relay.admin, "/readyz").await.ok()?;
            (status == 503).then_some(())
        })
        .await;
        assert_eq!(refused(&stack.url()).await.0, 503, "keep_data={keep_data}");
        for _ in 0..3 {
            live.round_trip(W, H).await.unwrap();
        }

        stack.redis.start_again().await.unwrap();
        if !keep_data {
            stack
                .redis
                .put_container("c1", "t1", "running", stack.fixture.port())
                .await;
        }
        stack.relay.wait_ready().await;
        let mut fresh = RfbClient::connect(&stack.url()).await.unwrap();
        fresh.handshake().await.unwrap();
        live.round_trip(W, H).await.unwrap();
        eventually("both sessions in the registry", vnc_tests::WAIT, || async {
            (stack.redis.sessions("c1").await.len() == 2).then_some(())
        })
        .await;
        // The room channel was subscribed again: a stop reaches both sessions.
        eventually("the room channel back", vnc_tests::WAIT, || async {
            (!stack.redis.shard_channels("vnc:room:{c1}").await.is_empty()).then_some(())
        })
        .await;
        // So did the socket.io adapter's (sharded pub/sub), on its own client.
        eventually(
            "the socket.io adapter's channels back",
            vnc_tests::WAIT,
            || async { (shard_channels(&stack.redis).await == adapter).then_some(()) },
        )
        .await;
        stack.redis.publish_room("c1", "container.stopped").await;
        for rfb in [&mut live, &mut fresh] {
            let (code, _) = expect_close(rfb.ws(), Duration::from_secs(5))
                .await
                .unwrap();
            assert_eq!(code, 4004, "keep_data={keep_data}");
        }
    }
}
