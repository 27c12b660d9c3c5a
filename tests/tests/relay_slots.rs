//! Connections that never authenticate: they wait among the pending connections
//! (bounded in total and per client address), not in the session slots, so they can't
//! keep valid clients out; and a draining relay closes them at once instead of waiting
//! out their handshake timeout, with or without Redis.
#![forbid(unsafe_code)]

use std::net::IpAddr;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use vnc_shared::token::Scope;
use vnc_tests::process::eventually;
use vnc_tests::rfb::RfbClient;
use vnc_tests::stack::Stack;
use vnc_tests::ws::{closed, http_get};

const W: u16 = 64;
const H: u16 = 48;

/// Round trips on `rfb` until the framebuffer differs from `last` (the fixture changes
/// its bottom half every 100 ms): the session is relaying fresh updates, not stuck.
async fn fresh_frame(rfb: &mut RfbClient, last: &mut Vec<u8>) {
    let deadline = tokio::time::Instant::now() + vnc_tests::WAIT;
    loop {
        let rects = rfb.round_trip(W, H).await.expect("round trip");
        let pixels: Vec<u8> = rects.into_iter().flat_map(|r| r.pixels).collect();
        if pixels != *last {
            *last = pixels;
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the framebuffer stopped changing"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `n` connections that never send a byte.
async fn silent(stack: &Stack, n: usize) -> Vec<TcpStream> {
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        conns.push(TcpStream::connect(stack.relay.public).await.unwrap());
    }
    conns
}

/// A stack whose relay (with `args`, and a handshake timeout longer than any test) has
/// one session relaying, and that session's last framebuffer.
async fn with_a_session(args: &[&str]) -> (Stack, RfbClient, Vec<u8>) {
    let args = [args, &["--handshake-timeout", "60s"]].concat();
    let stack = Stack::start(&[], &args).await.unwrap();
    stack.relay.wait_ready().await;
    let mut rfb = RfbClient::connect(&stack.url()).await.unwrap();
    rfb.handshake().await.unwrap();
    let mut last = Vec::new();
    fresh_frame(&mut rfb, &mut last).await;
    (stack, rfb, last)
}

#[tokio::test]
async fn silent_connections_do_not_take_the_session_slots() {
    let (stack, mut unrelated, mut last) =
        with_a_session(&["--max-sessions", "50", "--max-pending-per-address", "1000"]).await;

    let flood = silent(&stack, 200).await;
    fresh_frame(&mut unrelated, &mut last).await;
    // Accepted after the 200 (the accept queue is in order), admitted all the same.
    let mut valid = RfbClient::connect(&stack.url()).await.unwrap();
    valid.handshake().await.unwrap();
    valid.round_trip(W, H).await.unwrap();
    fresh_frame(&mut unrelated, &mut last).await;
    // The flood is still held, and the session bound is still there for sessions.
    assert_eq!(closed(&flood), 0);
    let mut sessions = Vec::new();
    for _ in 0..48 {
        let mut rfb = RfbClient::connect(&stack.url()).await.unwrap();
        rfb.handshake().await.unwrap();
        sessions.push(rfb);
    }
    let (status, _) = vnc_tests::ws::refused(&stack.url()).await;
    assert_eq!(status, 503);
    fresh_frame(&mut unrelated, &mut last).await;
}

#[tokio::test]
async fn one_address_holds_at_most_its_share_of_the_handshakes() {
    let (stack, mut unrelated, mut last) =
        with_a_session(&["--max-pending-per-address", "8"]).await;

    let flood = silent(&stack, 20).await;
    // The relay closes the 12 beyond the address's 8 at once and holds the 8.
    eventually("12 connections closed", vnc_tests::WAIT, || async {
        (closed(&flood) == 12).then_some(())
    })
    .await;

    // Another address is not held up; this one is, until one of its own ends.
    let other: IpAddr = "127.0.0.2".parse().unwrap();
    let token = stack.keys.token("c1", Scope::Control);
    let mut rfb = RfbClient::over_ws(stack.relay.connect_from(other, &token).await.unwrap());
    rfb.handshake().await.unwrap();
    rfb.round_trip(W, H).await.unwrap();
    let same: IpAddr = "127.0.0.1".parse().unwrap();
    let token = stack.keys.token("c1", Scope::Control);
    assert!(stack.relay.connect_from(same, &token).await.is_err());
    fresh_frame(&mut unrelated, &mut last).await;
    assert_eq!(closed(&flood), 12);
}

/// SIGTERM with one connection that never finishes its request and no session: the
/// relay exits well before the handshake timeout (30 s), with Redis up or gone.
async fn exits_at_once_despite_a_silent_handshake(redis_up: bool) {
    let mut stack = Stack::start(&[], &["--handshake-timeout", "30s"])
        .await
        .unwrap();
    stack.relay.wait_ready().await;
    if !redis_up {
        stack.redis.stop(false).await;
        eventually("the relay to notice", vnc_tests::WAIT, || async {
            let (status, _) = http_get(stack.relay.admin, "/readyz").await.ok()?;
            (status == 503).then_some(())
        })
        .await;
    }
    let mut slow = TcpStream::connect(stack.relay.public).await.unwrap();
    slow.write_all(b"GET /websockify HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // Connections are accepted in order: once a later one is answered, the relay
    // holds the slow one.
    let (status, _) = http_get(stack.relay.public, "/nothing-here").await.unwrap();
    assert_eq!(status, 404);

    let signalled = tokio::time::Instant::now();
    stack.relay.proc.signal("TERM");
    let exit = stack
        .relay
        .proc
        .wait_exit(Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(exit, Some(0));
    println!(
        "redis up: {redis_up}: exited {:?} after SIGTERM",
        signalled.elapsed()
    );
}

#[tokio::test]
async fn sigterm_closes_a_silent_handshake_at_once() {
    exits_at_once_despite_a_silent_handshake(true).await;
}

#[tokio::test]
async fn sigterm_closes_a_silent_handshake_at_once_without_redis() {
    exits_at_once_despite_a_silent_handshake(false).await;
}
