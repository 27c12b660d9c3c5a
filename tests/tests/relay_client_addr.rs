//! The browser's real address behind a load balancer, with a real HAProxy in front:
//! PROXY protocol v2 (the address in the session's registry record, control's
//! listing, the recording header and the log span; a connection without the header
//! refused; the per-address handshake bound counting each client, not the balancer),
//! and `X-Forwarded-For` honoured from a trusted proxy only.
#![forbid(unsafe_code)]

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use serde_json::json;
use tokio::net::{TcpSocket, TcpStream};
use vnc_shared::token::Scope;
use vnc_tests::control::{ControlProcess, Identity};
use vnc_tests::fixture::Fixture;
use vnc_tests::haproxy::{HaProxy, Mode, haproxy_available};
use vnc_tests::keys::TestKeys;
use vnc_tests::process::eventually;
use vnc_tests::recording::{RecordingFile, finished};
use vnc_tests::redis::RedisServer;
use vnc_tests::relay::RelayProcess;
use vnc_tests::rfb::RfbClient;
use vnc_tests::sio::{SioClient, socketio_client_available};
use vnc_tests::stack::Stack;
use vnc_tests::ws::{closed, connect_from};

const W: u16 = 64;
const H: u16 = 48;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A raw WebSocket session through `to` from `source`, past the RFB handshake.
async fn viewer_from(
    source: &str,
    to: SocketAddr,
    token: &str,
    headers: &[(&'static str, &str)],
) -> anyhow::Result<RfbClient> {
    let url = format!("ws://{to}/websockify?token={token}");
    let ws = connect_from(ip(source), to, &url, headers).await?;
    let mut rfb = RfbClient::over_ws(ws);
    rfb.handshake().await?;
    rfb.round_trip(W, H).await?;
    Ok(rfb)
}

/// The `client_addr` of each session of container `cid` in the registry, sorted.
async fn registered_addrs(redis: &RedisServer, cid: &str) -> Vec<String> {
    let mut addrs: Vec<String> = redis
        .sessions(cid)
        .await
        .into_values()
        .map(|s| s.get("client_addr").cloned().unwrap_or_default())
        .collect();
    addrs.sort();
    addrs
}

/// A relay (with `args`) whose info-level log goes to `log`.
async fn relay_logging_to(
    redis: &RedisServer,
    keys: &TestKeys,
    log: &Path,
    args: &[&str],
) -> RelayProcess {
    let launcher = format!(
        "exec env RUST_LOG=info \"$0\" \"$@\" 2>>'{}'",
        log.display()
    );
    RelayProcess::start_under(&["sh", "-c", &launcher], &redis.url(), &keys.public, args)
        .await
        .unwrap()
}

#[tokio::test]
async fn behind_haproxy_with_proxy_v2_the_browsers_address_is_in_every_record() {
    if !haproxy_available() {
        return;
    }
    let redis = RedisServer::start().await.unwrap();
    let keys = TestKeys::new();
    let identity = Identity::new();
    let fixture = Fixture::start(&[]).await.unwrap();
    let control = ControlProcess::start_static_at(
        &redis.url(),
        &keys,
        &identity,
        &[("desk", "alice", "t1", fixture.port())],
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (records, log) = (dir.path().join("rec"), dir.path().join("relay.log"));
    std::fs::create_dir(&records).unwrap();
    let relay = relay_logging_to(
        &redis,
        &keys,
        &log,
        &[
            "--proxy-protocol",
            "true",
            "--log-format",
            "json",
            "--record-scope",
            "control",
            "--record-dir",
            records.to_str().unwrap(),
        ],
    )
    .await;
    redis.wait_key("vnc:container:desk").await;
    let haproxy = HaProxy::start(relay.public, Mode::ProxyV2).await.unwrap();
    let alice = identity.token("alice", "t1", false);
    let token = &control.vnc_token(&alice, "desk").await;

    let rfb = viewer_from("127.0.0.2", haproxy.front, token, &[])
        .await
        .unwrap();
    // The registry record, and control's listing of it.
    assert_eq!(registered_addrs(&redis, "desk").await, ["127.0.0.2"]);
    let (status, listing) = control
        .call("GET", "/v1/containers/desk/sessions", Some(&alice), None)
        .await
        .unwrap();
    assert_eq!(status, 200, "{listing}");
    assert_eq!(
        listing["sessions"][0]["client_addr"], "127.0.0.2",
        "{listing}"
    );
    // The session's log span.
    let logged = std::fs::read_to_string(&log).unwrap();
    let started = logged
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["fields"]["message"] == "session started")
        .unwrap_or_else(|| panic!("no session line in:\n{logged}"));
    assert_eq!(started["span"]["client.addr"], "127.0.0.2", "{started}");
    // The recording's header, once the session ends.
    drop(rfb);
    let file = eventually("the recording to finish", vnc_tests::WAIT, || async {
        let (files, writing) = finished(&records);
        (!writing && files.len() == 1).then(|| files[0].clone())
    })
    .await;
    let recording = RecordingFile::read(&file).unwrap();
    assert_eq!(recording.meta["client_addr"], "127.0.0.2");

    // Straight to the relay, without the header: closed before any answer.
    let direct = relay.ws_url(token);
    assert!(vnc_tests::ws::connect(&direct).await.is_err());
    relay
        .wait_metric("vnc_relay_proxy_header_errors_total", 1.0)
        .await;
}

/// `n` connections through `to` from `source` that never send a byte.
async fn silent_from(source: &str, to: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(ip(source), 0)).unwrap();
        conns.push(socket.connect(to).await.unwrap());
    }
    conns
}

#[tokio::test]
async fn behind_haproxy_each_browser_has_its_own_share_of_the_handshakes() {
    if !haproxy_available() {
        return;
    }
    let args = [
        "--proxy-protocol",
        "true",
        "--max-pending-per-address",
        "4",
        "--handshake-timeout",
        "60s",
    ];
    let stack = Stack::start(&[], &args).await.unwrap();
    let haproxy = HaProxy::start(stack.relay.public, Mode::ProxyV2)
        .await
        .unwrap();

    // All through HAProxy, so all from its address: the relay counts the clients the
    // headers name. 127.0.0.2 gets 4 handshakes, the other 6 are closed.
    let flood = silent_from("127.0.0.2", haproxy.front, 10).await;
    eventually("6 connections closed", vnc_tests::WAIT, || async {
        (closed(&flood) == 6).then_some(())
    })
    .await;
    // Another browser behind the same balancer is not held up; this one is.
    let token = stack.keys.token("c1", Scope::Control);
    viewer_from("127.0.0.3", haproxy.front, &token, &[])
        .await
        .unwrap();
    let token = stack.keys.token("c1", Scope::Control);
    assert!(
        viewer_from("127.0.0.2", haproxy.front, &token, &[])
            .await
            .is_err()
    );
    assert_eq!(closed(&flood), 6);
}

#[tokio::test]
async fn forwarding_headers_count_from_a_trusted_proxy_only() {
    if !haproxy_available() || !socketio_client_available() {
        return;
    }
    let stack = Stack::start(&[], &["--trusted-proxy", "127.0.0.1/32"])
        .await
        .unwrap();
    let haproxy = HaProxy::start(stack.relay.public, Mode::ForwardFor)
        .await
        .unwrap();
    let spoofed = [
        ("X-Forwarded-For", "203.0.113.9"),
        ("Forwarded", "for=203.0.113.9"),
    ];

    // Through HAProxy from 127.0.0.2, with a forged entry: HAProxy appends what it
    // saw, the right-most address that isn't a trusted proxy is the client.
    let token = stack.keys.token("c1", Scope::Control);
    let _through = viewer_from("127.0.0.2", haproxy.front, &token, &spoofed[..1])
        .await
        .unwrap();
    // Straight from 127.0.0.3, not a trusted proxy: its headers are ignored.
    let token = stack.keys.token("c1", Scope::Control);
    let _direct = viewer_from("127.0.0.3", stack.relay.public, &token, &spoofed)
        .await
        .unwrap();
    // socket.io from 127.0.0.1, a trusted proxy: its header names the client.
    let token = stack.keys.token("c1", Scope::Control);
    let options = json!({
        "token": token,
        "containerId": "c1",
        "headers": {"X-Forwarded-For": "198.51.100.7"},
    });
    let mut sio = SioClient::start(stack.relay.public, options).await.unwrap();
    assert!(matches!(
        sio.next().await.unwrap(),
        vnc_tests::sio::SioEvent::Connect
    ));

    let addrs = eventually("three sessions registered", vnc_tests::WAIT, || async {
        let addrs = registered_addrs(&stack.redis, "c1").await;
        (addrs.len() == 3).then_some(addrs)
    })
    .await;
    assert_eq!(addrs, ["127.0.0.2", "127.0.0.3", "198.51.100.7"]);
}
