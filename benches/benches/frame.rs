//! Frame writing and reading on the relay's data path.
//!
//! `write_64k/*` sends one 64 KiB binary frame over a real loopback socket whose peer
//! drains it: the relay's header + vectored write of the read buffer, against
//! tokio-tungstenite's server-side send (which copies the payload into its own
//! write buffer). `decode_unmask_64k` is the browser→container direction.
#![forbid(unsafe_code)]

use std::time::Instant;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures_util::SinkExt;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;
use vnc_relay::transport::websocket::frame::{Decoder, ServerHeader, opcode};
use vnc_relay::wire::io::write_all_vectored;

const PAYLOAD: usize = 64 * 1024;

/// A connected loopback pair whose far end is drained by a background task.
async fn drained_socket() -> TcpStream {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let client = TcpStream::connect(addr).await.expect("connect");
    let (mut server, _) = listener.accept().await.expect("accept");
    tokio::spawn(async move {
        let mut sink = vec![0u8; 256 * 1024];
        while matches!(server.read(&mut sink).await, Ok(n) if n > 0) {}
    });
    client
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let payload = vec![0xA5u8; PAYLOAD];

    let mut g = c.benchmark_group("frame");
    g.throughput(Throughput::Bytes(PAYLOAD as u64));
    g.bench_function("header_encode", |b| {
        b.iter(|| ServerHeader::new(opcode::BINARY, std::hint::black_box(PAYLOAD)))
    });

    let relay_sock = rt.block_on(drained_socket());
    g.bench_function("write_64k/relay_vectored", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let header = ServerHeader::new(opcode::BINARY, payload.len());
                    write_all_vectored(&relay_sock, header.as_bytes(), &payload, 0)
                        .await
                        .expect("write");
                }
                start.elapsed()
            })
        })
    });

    let tung_sock = rt.block_on(drained_socket());
    let mut ws = rt.block_on(WebSocketStream::from_raw_socket(
        tung_sock,
        Role::Server,
        None,
    ));
    let shared = bytes::Bytes::from(payload.clone());
    g.bench_function("write_64k/tokio_tungstenite", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    ws.send(Message::Binary(shared.clone()))
                        .await
                        .expect("send");
                }
                start.elapsed()
            })
        })
    });

    // A masked client frame, decoded and unmasked in place.
    let mask = [0x12, 0x34, 0x56, 0x78];
    let mut frame = vec![0x82, 0x80 | 127];
    frame.extend_from_slice(&(PAYLOAD as u64).to_be_bytes());
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    g.bench_function("decode_unmask_64k", |b| {
        b.iter_batched_ref(
            || frame.clone(),
            |input| {
                let mut decoder = Decoder::new(1 << 20);
                let mut at = 0;
                while at < input.len() {
                    let (used, _) = decoder.decode(&mut input[at..]).expect("valid frame");
                    at += used;
                }
            },
            criterion::BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
