//! Revocations are never lost: a kick the relay's subscriber missed still ends the
//! session (the node checks its sessions' tokens against Redis after every resubscribe
//! and every heartbeat), and a revoked token stays refused on every node after Redis
//! lost its data (the nodes remember revocations until the token's exp and write them
//! back).
#![forbid(unsafe_code)]

use std::time::Duration;

use fred::interfaces::KeysInterface;
use serde_json::json;
use vnc_shared::token::Scope;
use vnc_tests::fixture::Fixture;
use vnc_tests::keys::TestKeys;
use vnc_tests::process::eventually;
use vnc_tests::redis::RedisServer;
use vnc_tests::relay::RelayProcess;
use vnc_tests::rfb::RfbClient;
use vnc_tests::stack::Stack;
use vnc_tests::ws::{expect_close, refused};

const W: u16 = 64;
const H: u16 = 48;
/// Registry TTL of the relays here: a heartbeat every second.
const SESSION_TTL: &str = "3s";

#[tokio::test]
async fn a_revocation_published_while_the_subscriber_is_away_ends_the_session() {
    let stack = Stack::start(&[], &["--session-ttl", SESSION_TTL])
        .await
        .unwrap();
    stack.relay.wait_ready().await;
    let minted = stack.keys.mint("c1", Scope::Control);
    let mut rfb = RfbClient::connect(&stack.relay.ws_url(&minted.token))
        .await
        .unwrap();
    rfb.handshake().await.unwrap();
    rfb.round_trip(W, H).await.unwrap();
    let bystander_url = stack.url();
    let mut bystander = RfbClient::connect(&bystander_url).await.unwrap();
    bystander.handshake().await.unwrap();
    eventually("the relay subscribed to kicks", vnc_tests::WAIT, || async {
        (stack.redis.subscribers("vnc:control").await == 1).then_some(())
    })
    .await;

    let heard = stack
        .redis
        .revoke_unheard(&minted.claims.jti, minted.claims.exp)
        .await;
    assert_eq!(
        heard, 0,
        "the kick must go unheard for this test to mean anything"
    );

    // Within one heartbeat (a second here; the resubscribe checks sooner).
    let (code, reason) = expect_close(rfb.ws(), Duration::from_secs(3))
        .await
        .unwrap();
    assert_eq!((code, reason.as_str()), (4003, "token revoked"));
    bystander.round_trip(W, H).await.unwrap();
    assert_eq!(refused(&stack.relay.ws_url(&minted.token)).await.0, 403);
}

#[tokio::test]
async fn a_revoked_token_stays_refused_on_every_node_after_redis_lost_its_data() {
    let redis = RedisServer::start().await.unwrap();
    let keys = TestKeys::new();
    let fixture = Fixture::start(&[]).await.unwrap();
    redis
        .put_container("c1", "t1", "running", fixture.port())
        .await;
    let mut nodes = Vec::new();
    for _ in 0..2 {
        let ttl = ["--session-ttl", SESSION_TTL];
        let relay = RelayProcess::start(&redis.url(), &keys.public, &ttl)
            .await
            .unwrap();
        relay.wait_ready().await;
        nodes.push(relay);
    }
    eventually(
        "both relays subscribed to kicks",
        vnc_tests::WAIT,
        || async { (redis.subscribers("vnc:control").await == 2).then_some(()) },
    )
    .await;
    let minted = keys.mint("c1", Scope::Control);
    let jti = &minted.claims.jti;
    let mut on_a = RfbClient::connect(&nodes[0].ws_url(&minted.token))
        .await
        .unwrap();
    on_a.handshake().await.unwrap();

    // Revoked as control revokes: the flag, then the kick with the token's exp.
    redis.revoke(jti).await;
    let kick = json!({ "type": "kick", "jti": jti, "exp": minted.claims.exp, "reason": "revoked" });
    redis.publish("vnc:control", &kick).await;
    let (code, _) = expect_close(on_a.ws(), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(code, 4003);

    // Redis loses everything; the container record comes back (control rewrites it),
    // the revocation does not come from control.
    redis.wipe().await;
    redis
        .put_container("c1", "t1", "running", fixture.port())
        .await;
    for relay in &nodes {
        let (status, body) = refused(&relay.ws_url(&minted.token)).await;
        assert_eq!(status, 403, "node {}: {body}", relay.node_id);
    }
    // The nodes write it back, expiring with the token (plus the relays' leeway).
    let key = format!("vnc:revoked:{jti}");
    redis.wait_key(&key).await;
    let expires_at: i64 = redis.client.expire_time(&key).await.unwrap();
    let exp = minted.claims.exp as i64;
    assert!(
        (exp..=exp + 5).contains(&expires_at),
        "{key} expires at {expires_at}, token exp {exp}"
    );
    // Other tokens still open sessions on both nodes.
    for relay in &nodes {
        let mut rfb = RfbClient::connect(&relay.ws_url(&keys.token("c1", Scope::Control)))
            .await
            .unwrap();
        rfb.handshake().await.unwrap();
        rfb.round_trip(W, H).await.unwrap();
    }
}
