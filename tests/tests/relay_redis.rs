//! The relay and Redis failures: the relay fails closed (503, unready) while Redis is
//! away and serves once it answers, whichever came up first.
#![forbid(unsafe_code)]

use vnc_shared::token::Scope;
use vnc_tests::fixture::Fixture;
use vnc_tests::keys::TestKeys;
use vnc_tests::redis::{RedisServer, free_port};
use vnc_tests::relay::RelayProcess;
use vnc_tests::rfb::RfbClient;
use vnc_tests::ws::{http_get, refused};

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
    assert_eq!(refused(&url).await.0, 503);

    let redis = RedisServer::start_on(port).await.unwrap();
    redis
        .put_container("c1", "t1", "running", fixture.port())
        .await;
    relay.wait_ready().await;
    let mut rfb = RfbClient::connect(&url).await.unwrap();
    rfb.handshake().await.unwrap();
}
