//! SIGHUP reloads the relay's token keys (rotation with overlap) without dropping a
//! session; a configuration that doesn't load is refused and the running one stays.
#![forbid(unsafe_code)]

use std::path::Path;

use vnc_shared::token::Scope;
use vnc_tests::fixture::Fixture;
use vnc_tests::keys::TestKeys;
use vnc_tests::process::eventually;
use vnc_tests::redis::RedisServer;
use vnc_tests::relay::RelayProcess;
use vnc_tests::rfb::RfbClient;
use vnc_tests::ws::{connect, refusal_status, refused};

/// Writes a relay config trusting `keys` (kid `name=path`).
fn write_config(file: &Path, keys: &[(&str, &Path)]) {
    let list: Vec<String> = keys
        .iter()
        .map(|(kid, path)| format!("\"{kid}={}\"", path.display()))
        .collect();
    std::fs::write(file, format!("jwt_public_keys = [{}]\n", list.join(", "))).unwrap();
}

#[tokio::test]
async fn sighup_rotates_token_keys_without_dropping_sessions_and_refuses_a_bad_config() {
    let redis = RedisServer::start().await.unwrap();
    let fixture = Fixture::start(&[]).await.unwrap();
    redis
        .put_container("c1", "t1", "running", fixture.port())
        .await;
    let (old, new) = (TestKeys::with_kid("old"), TestKeys::with_kid("new"));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("relay.toml");
    write_config(&config, &[("old", &old.public)]);
    let relay =
        RelayProcess::start_configured(&redis.url(), &["--config", config.to_str().unwrap()])
            .await
            .unwrap();
    let url = |keys: &TestKeys| relay.ws_url(&keys.token("c1", Scope::Control));
    let mut live = RfbClient::connect(&url(&old)).await.unwrap();
    live.handshake().await.unwrap();
    assert_eq!(refused(&url(&new)).await.0, 401);

    // Overlap: both keys are valid.
    write_config(&config, &[("old", &old.public), ("new", &new.public)]);
    relay.proc.signal("HUP");
    relay
        .wait_metric("vnc_relay_config_reloads_total{result=\"ok\"}", 1.0)
        .await;
    connect(&url(&new)).await.unwrap();
    connect(&url(&old)).await.unwrap();

    // The old key is removed: its tokens are refused, the new ones still open.
    write_config(&config, &[("new", &new.public)]);
    relay.proc.signal("HUP");
    eventually("the old key retired", vnc_tests::WAIT, || async {
        (refusal_status(&url(&old)).await == Some(401)).then_some(())
    })
    .await;
    connect(&url(&new)).await.unwrap();

    // A config naming a key file that doesn't exist is refused as a whole.
    write_config(&config, &[("gone", &dir.path().join("missing.pem"))]);
    relay.proc.signal("HUP");
    relay
        .wait_metric("vnc_relay_config_reloads_total{result=\"refused\"}", 1.0)
        .await;
    connect(&url(&new)).await.unwrap();

    // The session opened with the old key lived through all of it.
    live.round_trip(64, 48).await.unwrap();
}
