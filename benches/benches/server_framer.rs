//! What following the VNC server's stream costs a socket.io session: `ServerFramer`
//! over 1 MiB of server messages fed in 64 KiB chunks (the relay's read size), for
//! three shapes of stream:
//!
//! - `raw`: full-width Raw updates, the best case (one skip per chunk);
//! - `hextile`: 16 × 16 tiles with background, foreground and 8 sub-rectangles each,
//!   a byte to read every ~100 bytes;
//! - `tight_small`: Tight rectangles of 8 × 8 with a 2-colour palette, one update of
//!   many small rectangles, the most headers per byte a real server sends.
//!
//! And what the relay's clipboard filter (`CutTextFilter`, for sessions without
//! `from_desktop`) costs over the same streams, plus `raw_with_clipboard`: the Raw
//! stream with a 1 KiB ServerCutText behind every update, which the filter cuts out
//! in place (moving the bytes behind it).
#![forbid(unsafe_code)]

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use tokio::sync::watch;
use vnc_relay::session::rfb::RfbPolicy;
use vnc_relay::session::server_stream::CutTextFilter;
use vnc_shared::rfb::{PixelFormat, ServerEvent, ServerFramer, encoding};

const TOTAL: usize = 1 << 20;
const CHUNK: usize = 64 * 1024;
const RGB888: [u8; 16] = [32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0];

fn rect(out: &mut Vec<u8>, encoding: i32, width: u16, height: u16) {
    for v in [0, 0, width, height] {
        out.extend(v.to_be_bytes());
    }
    out.extend(encoding.to_be_bytes());
}

/// Updates of `rects` rectangles each, built by `one`, until `TOTAL` bytes.
fn stream(rects: u16, mut one: impl FnMut(&mut Vec<u8>)) -> Vec<u8> {
    let mut out = Vec::with_capacity(TOTAL + CHUNK);
    while out.len() < TOTAL {
        out.extend([0, 0]);
        out.extend(rects.to_be_bytes());
        for _ in 0..rects {
            one(&mut out);
        }
    }
    out
}

fn raw() -> Vec<u8> {
    stream(1, |out| {
        rect(out, encoding::RAW, 1024, 64);
        out.resize(out.len() + 1024 * 64 * 4, 7);
    })
}

fn hextile() -> Vec<u8> {
    stream(1, |out| {
        rect(out, encoding::HEXTILE, 256, 256);
        for _ in 0..256 {
            // Background, foreground, any sub-rectangles: 8 of 2 bytes.
            out.push(2 | 4 | 8);
            out.extend([1; 8]);
            out.push(8);
            out.extend([3; 16]);
        }
    })
}

fn tight_small() -> Vec<u8> {
    stream(1000, |out| {
        rect(out, encoding::TIGHT, 8, 8);
        // Basic, palette filter, 2 colours; 8 bytes of data, sent as is.
        out.extend([0x40, 1, 1, 0, 0, 0, 255, 255, 255]);
        out.extend([0x55; 8]);
    })
}

/// The Raw stream with a 1 KiB ServerCutText behind every update.
fn raw_with_clipboard() -> Vec<u8> {
    stream(1, |out| {
        rect(out, encoding::RAW, 1024, 64);
        out.resize(out.len() + 1024 * 64 * 4, 7);
        // The next "update" header is written by `stream`; the cut text goes between.
        out.extend([3, 0, 0, 0]);
        out.extend(1024u32.to_be_bytes());
        out.resize(out.len() + 1024, b'x');
    })
}

fn filter_bench(c: &mut Criterion) {
    let format = PixelFormat::from_bytes(&RGB888);
    let policy = RfbPolicy {
        password: None,
        view_only: false,
        clipboard_in: true,
        clipboard_out: false,
    };
    let mut g = c.benchmark_group("cut_text_filter");
    for (name, bytes) in [
        ("raw", raw()),
        ("hextile", hextile()),
        ("tight_small", tight_small()),
        ("raw_with_clipboard", raw_with_clipboard()),
    ] {
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.bench_function(name, |b| {
            b.iter_batched_ref(
                || bytes.clone(),
                |buf| {
                    let (_tx, rx) = watch::channel(format);
                    let mut filter = CutTextFilter::new(&policy, rx).expect("a filter");
                    let mut kept = 0;
                    for chunk in buf.chunks_mut(CHUNK) {
                        kept += filter.keep(black_box(chunk)).expect("framed");
                    }
                    kept
                },
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

fn bench(c: &mut Criterion) {
    let format = PixelFormat::from_bytes(&RGB888);
    let mut g = c.benchmark_group("server_framer");
    for (name, bytes) in [
        ("raw", raw()),
        ("hextile", hextile()),
        ("tight_small", tight_small()),
    ] {
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut framer = ServerFramer::new(format);
                let mut messages = 0u32;
                for chunk in bytes.chunks(CHUNK) {
                    for event in framer.events(black_box(chunk)) {
                        if let Ok(ServerEvent::Message { .. }) = event {
                            messages += 1;
                        }
                    }
                }
                assert!(framer.at_boundary());
                messages
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench, filter_bench);
criterion_main!(benches);
