//! TLS on the relay's public listener: a noVNC-style client over `wss://` with a test
//! CA, certificates that must fail, SIGHUP swapping the certificate (and limits)
//! while TLS sessions go on, and client certificates (mutual TLS) when a client CA is
//! set, and a flood through TLS to a browser that stops reading: the VNC server is
//! throttled, the relay's memory stays bounded, and the stream arrives whole after.
#![forbid(unsafe_code)]

use std::path::Path;
use std::time::Duration;

use vnc_shared::token::Scope;
use vnc_tests::fixture::Fixture;
use vnc_tests::keys::TestKeys;
use vnc_tests::redis::RedisServer;
use vnc_tests::relay::RelayProcess;
use vnc_tests::rfb::RfbClient;
use vnc_tests::tls::{CertFiles, TestCa, Validity, https_get};
use vnc_tests::ws::{connect, connect_tls, expect_close};

const W: u16 = 64;
const H: u16 = 48;

fn wss_url(relay: &RelayProcess, token: &str) -> String {
    format!(
        "wss://127.0.0.1:{}/websockify?token={token}",
        relay.public.port()
    )
}

fn tls_flags(files: &CertFiles) -> [String; 4] {
    [
        "--tls-cert".into(),
        files.cert.display().to_string(),
        "--tls-key".into(),
        files.key.display().to_string(),
    ]
}

async fn start_tls_relay(redis: &RedisServer, keys: &TestKeys, files: &CertFiles) -> RelayProcess {
    let flags = tls_flags(files);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    RelayProcess::start(&redis.url(), &keys.public, &flags)
        .await
        .unwrap()
}

/// Redis with container `c1` (tenant `t1`) served by a fixture, and the token keys.
async fn container_c1() -> (RedisServer, Fixture, TestKeys) {
    let redis = RedisServer::start().await.unwrap();
    let fixture = Fixture::start(&[]).await.unwrap();
    redis
        .put_container("c1", "t1", "running", fixture.port())
        .await;
    (redis, fixture, TestKeys::new())
}

#[tokio::test]
async fn a_novnc_style_client_relays_over_wss_and_plain_clients_get_nothing() {
    let (redis, fixture, keys) = container_c1().await;
    let ca = TestCa::new("relay-ca");
    let relay = start_tls_relay(&redis, &keys, &ca.issue("relay", Validity::Current)).await;
    let token = keys.token("c1", Scope::Control);

    let ws = connect_tls(&wss_url(&relay, &token), &[], Some(ca.client(None)))
        .await
        .unwrap();
    let mut rfb = RfbClient::over_ws(ws);
    rfb.handshake().await.unwrap();
    let rects = rfb.round_trip(W, H).await.unwrap();
    assert_eq!(rects[0].rgb(5, 5), (255, 0, 0), "the fixture's colour");
    rfb.key(true, 0x61).await.unwrap();
    fixture
        .wait_event("the key, through TLS", |e| {
            e["msg"] == "KeyEvent" && e["keysym"] == 0x61
        })
        .await;

    // The HTTP routes are served over TLS as well.
    let (status, body) = https_get(relay.public, ca.client(None), "/static/vnc-socketio.js")
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("export"), "{body}");

    // A plain ws:// client gets no session.
    let plain = format!(
        "ws://{}/websockify?token={}",
        relay.public,
        keys.token("c1", Scope::Control)
    );
    assert!(connect(&plain).await.is_err());
    relay
        .wait_metric("vnc_relay_tls_handshake_errors_total", 1.0)
        .await;

    // The TLS session ends with a Close frame, as a plain one does.
    drop(rfb);
    relay
        .wait_metric(
            "vnc_relay_sessions_total{transport=\"websocket\",outcome=\"client_gone\"}",
            1.0,
        )
        .await;
}

#[tokio::test]
async fn expired_or_untrusted_certificates_fail_the_handshake() {
    let redis = RedisServer::start().await.unwrap();
    let keys = TestKeys::new();
    let ca = TestCa::new("relay-ca");
    let token = keys.token("c1", Scope::Control);

    let expired = start_tls_relay(&redis, &keys, &ca.issue("old", Validity::Expired)).await;
    let err = connect_tls(&wss_url(&expired, &token), &[], Some(ca.client(None)))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.to_lowercase().contains("expired"), "{err}");

    let other = TestCa::new("other-ca");
    let current = start_tls_relay(&redis, &keys, &ca.issue("relay", Validity::Current)).await;
    let err = connect_tls(&wss_url(&current, &token), &[], Some(other.client(None)))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("UnknownIssuer"), "{err}");

    for relay in [&expired, &current] {
        relay
            .wait_metric("vnc_relay_tls_handshake_errors_total", 1.0)
            .await;
    }
}

/// A relay config trusting `keys`, serving `tls`, plus `extra` lines.
fn write_config(file: &Path, keys: &TestKeys, tls: &CertFiles, extra: &str) {
    std::fs::write(
        file,
        format!(
            "jwt_public_keys = [\"{}\"]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n{extra}",
            keys.public.display(),
            tls.cert.display(),
            tls.key.display()
        ),
    )
    .unwrap();
}

#[tokio::test]
async fn sighup_swaps_the_certificate_and_limits_while_tls_sessions_go_on() {
    let (redis, _fixture, keys) = container_c1().await;
    let (first_ca, second_ca) = (TestCa::new("first-ca"), TestCa::new("second-ca"));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("relay.toml");
    write_config(
        &config,
        &keys,
        &first_ca.issue("relay", Validity::Current),
        "",
    );
    let relay =
        RelayProcess::start_configured(&redis.url(), &["--config", config.to_str().unwrap()])
            .await
            .unwrap();
    let url = || wss_url(&relay, &keys.token("c1", Scope::Control));
    let ws = connect_tls(&url(), &[], Some(first_ca.client(None)))
        .await
        .unwrap();
    let mut live = RfbClient::over_ws(ws);
    live.handshake().await.unwrap();
    assert!(
        connect_tls(&url(), &[], Some(second_ca.client(None)))
            .await
            .is_err()
    );

    // A certificate from the second CA, and a 1 s idle timeout for new sessions.
    write_config(
        &config,
        &keys,
        &second_ca.issue("relay-renewed", Validity::Current),
        "idle_timeout = \"1s\"\n",
    );
    relay.proc.signal("HUP");
    relay
        .wait_metric("vnc_relay_config_reloads_total{result=\"ok\"}", 1.0)
        .await;
    assert!(
        connect_tls(&url(), &[], Some(first_ca.client(None)))
            .await
            .is_err(),
        "the old certificate is no longer served"
    );
    let ws = connect_tls(&url(), &[], Some(second_ca.client(None)))
        .await
        .unwrap();
    let mut fresh = RfbClient::over_ws(ws);
    fresh.handshake().await.unwrap();
    let (code, reason) = expect_close(fresh.ws(), Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!((code, reason.as_str()), (4001, "idle timeout"));

    // A certificate file that doesn't parse is refused; the second one stays.
    let broken = dir.path().join("broken.crt");
    std::fs::write(&broken, "-----BEGIN CERTIFICATE-----\nnot base64\n").unwrap();
    write_config(
        &config,
        &keys,
        &CertFiles {
            cert: broken,
            key: dir.path().join("missing.key"),
        },
        "",
    );
    relay.proc.signal("HUP");
    relay
        .wait_metric("vnc_relay_config_reloads_total{result=\"refused\"}", 1.0)
        .await;
    connect_tls(&url(), &[], Some(second_ca.client(None)))
        .await
        .unwrap();

    // The session opened before both reloads kept its certificate's connection and
    // its own (30 min) idle timeout: it sat idle past 1 s and still relays.
    let rects = live.round_trip(W, H).await.unwrap();
    assert_eq!(rects[0].rgb(5, 5), (255, 0, 0));
}

#[tokio::test]
async fn with_a_client_ca_only_browsers_with_its_certificates_connect_and_sighup_swaps_it() {
    let (redis, _fixture, keys) = container_c1().await;
    let servers = TestCa::new("relay-ca");
    let (clients, others) = (TestCa::new("clients-ca"), TestCa::new("other-clients-ca"));
    let (laptop, kiosk) = (
        clients.issue("laptop", Validity::Current),
        others.issue("kiosk", Validity::Current),
    );
    let serving = servers.issue("relay", Validity::Current);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("relay.toml");
    let trust = |ca: &TestCa| format!("tls_client_ca = \"{}\"\n", ca.cert.display());
    write_config(&config, &keys, &serving, &trust(&clients));
    let relay =
        RelayProcess::start_configured(&redis.url(), &["--config", config.to_str().unwrap()])
            .await
            .unwrap();
    let url = || wss_url(&relay, &keys.token("c1", Scope::Control));

    let ws = connect_tls(&url(), &[], Some(servers.client(Some(&laptop))))
        .await
        .unwrap();
    let mut live = RfbClient::over_ws(ws);
    live.handshake().await.unwrap();
    for (what, identity) in [("no certificate", None), ("another CA's", Some(&kiosk))] {
        let refused = connect_tls(&url(), &[], Some(servers.client(identity))).await;
        assert!(refused.is_err(), "{what}: {refused:?}");
    }
    relay
        .wait_metric("vnc_relay_tls_handshake_errors_total", 2.0)
        .await;

    // SIGHUP to the other CA: the kiosk's certificate works, the laptop's no longer
    // does, and the laptop's session opened before goes on.
    write_config(&config, &keys, &serving, &trust(&others));
    relay.proc.signal("HUP");
    relay
        .wait_metric("vnc_relay_config_reloads_total{result=\"ok\"}", 1.0)
        .await;
    let ws = connect_tls(&url(), &[], Some(servers.client(Some(&kiosk))))
        .await
        .unwrap();
    RfbClient::over_ws(ws).handshake().await.unwrap();
    let refused = connect_tls(&url(), &[], Some(servers.client(Some(&laptop)))).await;
    assert!(refused.is_err(), "{refused:?}");
    let rects = live.round_trip(W, H).await.unwrap();
    assert_eq!(rects[0].rgb(5, 5), (255, 0, 0));
}

/// The relay drives rustls on the browser's socket itself: TLS records the socket has
/// no room for wait in rustls (bounded), the VNC server is throttled through TCP, and
/// once the browser reads again every update arrives whole and in order.
#[tokio::test]
async fn a_slow_tls_browser_throttles_the_vnc_server_and_gets_whole_updates() {
    let redis = RedisServer::start().await.unwrap();
    let fixture = Fixture::start(&["--flood", "--width", "512", "--height", "512"])
        .await
        .unwrap();
    redis
        .put_container("c1", "t1", "running", fixture.port())
        .await;
    let keys = TestKeys::new();
    let ca = TestCa::new("relay-ca");
    let relay = start_tls_relay(&redis, &keys, &ca.issue("relay", Validity::Current)).await;
    let session = || async {
        let token = keys.token("c1", Scope::Control);
        let ws = connect_tls(&wss_url(&relay, &token), &[], Some(ca.client(None)))
            .await
            .unwrap();
        let mut rfb = RfbClient::over_ws(ws);
        rfb.handshake().await.unwrap();
        rfb
    };
    // A first session that reads, so TLS's own start-up cost is not counted below.
    let mut warm = session().await;
    for _ in 0..5 {
        warm.read_update().await.unwrap();
    }
    drop(warm);
    let rss_before = relay.proc.rss_kib();
    let mut rfb = session().await;
    // Not reading now: the flood fills the sockets and stalls.
    let stalled_at = fixture.wait_flood_stalled().await;
    let grown = relay.proc.rss_kib().saturating_sub(rss_before);
    assert!(
        grown < 4 * 1024,
        "relay RSS grew {grown} KiB while {stalled_at} bytes were pushed"
    );
    // Reading again: whole 512x512 updates, more of them than were pushed before the
    // stall, so the flood went on.
    let update = 512 * 512 * 4;
    for _ in 0..stalled_at / update + 2 {
        let rects = rfb.read_update().await.unwrap();
        assert_eq!(
            (
                rects[0].width,
                rects[0].height,
                rects[0].pixels.len() as u64
            ),
            (512, 512, update)
        );
    }
}
