//! Fuzz target for `ServerFramer`: arbitrary server bytes must never panic, and
//! framing them in one piece or in chunks must give the same events and error.
//!
//! Input: one seed byte, then the stream. Bits 0–1 of the seed pick the pixel format
//! (32 bpp depth 24, 32 bpp depth 32, 16 bpp, 8 bpp); bit 2 switches to the next one of
//! those after the first quarter of the stream, as a client's SetPixelFormat would;
//! the seed also drives the chunk sizes.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "chunks.rs"]
mod chunks;
use chunks::chunks;

/// Largest chunk the chunked run feeds at once.
const MAX_CHUNK: usize = 64;
use vnc_shared::rfb::{PixelFormat, ServerEvent, ServerFrameError, ServerFramer};

const FORMATS: [[u8; 16]; 4] = [
    [32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0],
    [32, 32, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0],
    [16, 16, 0, 1, 0, 31, 0, 63, 0, 31, 11, 5, 0, 0, 0, 0],
    [8, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
];

/// Everything observable about a framing run.
#[derive(Debug, PartialEq, Eq)]
struct Framed {
    events: Vec<ServerEvent>,
    error: Option<ServerFrameError>,
    at_boundary: bool,
}

/// Frames the chunks of `before`, switches to `switch` if any, then frames the chunks
/// of `after`.
fn frame(
    format: PixelFormat,
    switch: Option<PixelFormat>,
    before: &[&[u8]],
    after: &[&[u8]],
) -> Framed {
    let mut framer = ServerFramer::new(format);
    let mut events = Vec::new();
    let mut error = None;
    'parts: for (i, part) in [before, after].into_iter().enumerate() {
        if i == 1
            && let Some(f) = switch
        {
            framer.set_pixel_format(f);
        }
        for chunk in part {
            let mut rest: &[u8] = chunk;
            loop {
                match framer.next_event(rest) {
                    Ok((used, event)) => {
                        assert!(used <= rest.len());
                        rest = &rest[used..];
                        match event {
                            Some(event) => events.push(event),
                            None => {
                                assert!(rest.is_empty(), "no event, yet input left");
                                break;
                            }
                        }
                    }
                    Err(e) => {
                        assert!(!framer.at_boundary());
                        error = Some(e);
                        break 'parts;
                    }
                }
            }
        }
    }
    Framed {
        events,
        error,
        at_boundary: framer.at_boundary(),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    let pick = usize::from(seed & 3);
    let format = PixelFormat::from_bytes(&FORMATS[pick]);
    let switch = (seed & 4 != 0).then(|| PixelFormat::from_bytes(&FORMATS[(pick + 1) % 4]));
    let (before, after) = stream.split_at(stream.len() / 4);
    let whole = frame(format, switch, &[before], &[after]);
    let pieces = frame(format, switch, &chunks(before, seed, MAX_CHUNK), &chunks(after, seed, MAX_CHUNK));
    assert_eq!(whole, pieces);
    // Message lengths account for every byte taken: all of them when the stream ends
    // at a boundary.
    let framed: u64 = whole
        .events
        .iter()
        .map(|e| match e {
            ServerEvent::Message { len, .. } => *len,
            _ => 0,
        })
        .sum();
    assert!(framed <= stream.len() as u64);
    if whole.error.is_none() && whole.at_boundary {
        assert_eq!(framed, stream.len() as u64);
    }
});
