//! Fuzz target for `ClientFramer`: arbitrary browser bytes must never panic, and
//! framing them in one piece or in chunks must give the same messages and error.
//!
//! Input: one seed byte, then the stream. Bit 0 of the seed picks small limits (so
//! short inputs reach the limit checks); the seed also drives the chunk sizes.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "chunks.rs"]
mod chunks;
use chunks::chunks;

/// Largest chunk the chunked run feeds at once.
const MAX_CHUNK: usize = 16;
use vnc_shared::rfb::{ClientFramer, FrameError, FramerLimits, MessageKind};

/// Everything observable about a framing run.
#[derive(Debug, PartialEq, Eq)]
struct Framed {
    messages: Vec<(MessageKind, Vec<u8>)>,
    error: Option<FrameError>,
    at_boundary: bool,
    extended_mouse_buttons: bool,
}

fn frame(limits: FramerLimits, chunks: &[&[u8]]) -> Framed {
    let mut framer = ClientFramer::new(limits);
    let mut messages: Vec<(MessageKind, Vec<u8>)> = Vec::new();
    let mut open = false;
    let mut error = None;
    'chunks: for chunk in chunks {
        let mut start = 0;
        loop {
            let rest = &chunk[start..];
            match framer.next_span(rest) {
                Ok(Some(span)) => {
                    assert!(span.len <= rest.len());
                    assert!(span.carried().len() <= 1);
                    assert!(span.len > 0 || !span.carried().is_empty());
                    if span.starts_message {
                        messages.push((span.kind, Vec::new()));
                    }
                    let Some((kind, bytes)) = messages.last_mut() else {
                        panic!("a span continued a message that never started");
                    };
                    assert_eq!(*kind, span.kind);
                    bytes.extend_from_slice(span.carried());
                    bytes.extend_from_slice(&rest[..span.len]);
                    assert_eq!(framer.at_boundary(), span.ends_message);
                    open = !span.ends_message;
                    start += span.len;
                }
                Ok(None) => break,
                Err(e) => {
                    assert!(!framer.at_boundary());
                    // How much of the failing message was handed out before the error
                    // depends on the chunking (the session ends either way).
                    if open {
                        messages.pop();
                    }
                    error = Some(e);
                    break 'chunks;
                }
            }
        }
    }
    Framed {
        messages,
        error,
        at_boundary: framer.at_boundary(),
        extended_mouse_buttons: framer.extended_mouse_buttons(),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    let limits = if seed & 1 == 0 {
        FramerLimits::default()
    } else {
        FramerLimits {
            max_cut_text: 16,
            max_encodings: 4,
        }
    };
    let whole = frame(limits, &[stream]);
    let pieces = frame(limits, &chunks(stream, seed, MAX_CHUNK));
    assert_eq!(whole, pieces);
    if whole.error.is_none() {
        // Every byte belongs to a message, except a lone QEMU or gii type byte at the
        // very end, which the framer holds back until its sub-type arrives.
        let used: usize = whole.messages.iter().map(|(_, m)| m.len()).sum();
        let held = stream.len() - used;
        assert!(
            held == 0
                || (held == 1 && whole.at_boundary && matches!(stream.last(), Some(253 | 255)))
        );
    }
});
