//! Fuzz target for `ProxyHandshake`: arbitrary bytes from both sides must never panic,
//! and the outcome must not depend on how the bytes were chunked or interleaved.
//!
//! Input: a flags byte, then records `[header, bytes...]` where header bit 7 says the
//! side (set: VNC server, clear: browser) and bits 0–6 the length.
//! Flags: bit 0 a password is configured, bit 1 view-only, bit 2 prepend valid
//! greetings (bits 3–4 pick the server's version, bits 5–6 the browser's), so the
//! fuzzer starts past the version exchange as often as not.

#![no_main]

use libfuzzer_sys::fuzz_target;
use vnc_shared::config::Secret;
use vnc_shared::rfb::{AuthMode, HandshakeError, ProxyHandshake, ServerInit, Side, Version};

const GREETINGS: [&[u8; 12]; 4] = [
    b"RFB 003.003\n",
    b"RFB 003.007\n",
    b"RFB 003.008\n",
    b"RFB 003.889\n",
];

/// Everything observable about a handshake run.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    to_server: Vec<u8>,
    to_client: Vec<u8>,
    result: Result<(ServerInit, Version, AuthMode, Vec<u8>), HandshakeError>,
}

fn run(password: bool, view_only: bool, feeds: &[(Side, &[u8])]) -> Outcome {
    let password = password.then(|| Secret::new("password".to_owned()));
    let mut hs = ProxyHandshake::new(password, view_only);
    let mut to_server = Vec::new();
    let mut to_client = Vec::new();
    let mut error = None;
    for (side, bytes) in feeds {
        let fed = match side {
            Side::Server => hs.feed_server(bytes),
            Side::Client => hs.feed_client(bytes),
        };
        to_server.extend(hs.take_for_server());
        to_client.extend(hs.take_for_client());
        if let Err(e) = fed {
            assert_eq!(hs.waiting_for(), None);
            error = Some(e);
            break;
        }
    }
    let result = match error {
        Some(e) => Err(e),
        None => hs.finish().map(|done| {
            to_server.extend(&done.to_server);
            to_client.extend(&done.to_client);
            (done.server_init, done.version, done.auth, done.from_client)
        }),
    };
    Outcome {
        to_server,
        to_client,
        result,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, mut rest)) = data.split_first() else {
        return;
    };
    let mut feeds: Vec<(Side, &[u8])> = Vec::new();
    if flags & 4 != 0 {
        feeds.push((Side::Server, GREETINGS[usize::from(flags >> 3 & 3)]));
        feeds.push((Side::Client, GREETINGS[usize::from(flags >> 5 & 3)]));
    }
    while let Some((&header, tail)) = rest.split_first() {
        let side = if header & 0x80 != 0 {
            Side::Server
        } else {
            Side::Client
        };
        let (bytes, tail) = tail.split_at(usize::from(header & 0x7f).min(tail.len()));
        feeds.push((side, bytes));
        rest = tail;
    }
    let (password, view_only) = (flags & 1 != 0, flags & 2 != 0);
    let chunked = run(password, view_only, &feeds);

    // The same bytes, each side in one piece, the browser's first.
    let all = |want: Side| -> Vec<u8> {
        feeds
            .iter()
            .filter(|(side, _)| *side == want)
            .flat_map(|(_, b)| b.iter().copied())
            .collect()
    };
    let (server, client) = (all(Side::Server), all(Side::Client));
    let whole = run(
        password,
        view_only,
        &[(Side::Client, &client), (Side::Server, &server)],
    );
    assert_eq!(chunked, whole);

    // The password never reaches the browser (unless the server itself sent those
    // bytes, in a desktop name say).
    let contains = |hay: &[u8]| hay.windows(8).any(|w| w == b"password");
    if password && !contains(&server) {
        assert!(!contains(&chunked.to_client));
    }
});
