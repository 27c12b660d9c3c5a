use proptest::prelude::*;

use super::error::RELAY_AUTH_FAILED;
use super::*;
use crate::rfb::security::SecurityTypes;

const PASSWORD: &str = "password";
const CHALLENGE: [u8; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];
/// `vnc_auth_response(b"password", &CHALLENGE)`, from the reference values in `auth.rs`.
const RESPONSE: [u8; 16] = [
    0xb8, 0x66, 0x92, 0x41, 0x25, 0xc8, 0xee, 0xbb, 0x9d, 0xeb, 0xc1, 0xdb, 0x61, 0xc5, 0x38, 0xe2,
];
const OK: [u8; 4] = [0, 0, 0, 0];
const FAILED: [u8; 4] = [0, 0, 0, 1];

fn server_init() -> Vec<u8> {
    let mut m = vec![0x04, 0x00, 0x03, 0x00];
    m.extend([32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0]);
    m.extend(7u32.to_be_bytes());
    m.extend(b"desktop");
    m
}

/// A length-prefixed reason string.
fn reason(text: &str) -> Vec<u8> {
    let mut m = (text.len() as u32).to_be_bytes().to_vec();
    m.extend(text.as_bytes());
    m
}

/// What the browser receives when the handshake fails before it was offered security.
fn in_band_failure(version: Version, text: &str) -> Vec<u8> {
    let mut m = if version == Version::V3_3 {
        vec![0, 0, 0, 0]
    } else {
        vec![0]
    };
    m.extend(reason(text));
    m
}

/// Security types as a server of `version` sends them (3.3: the first one, chosen).
fn security_types(version: Version, types: &[u8]) -> Vec<u8> {
    if version == Version::V3_3 {
        u32::from(types[0]).to_be_bytes().to_vec()
    } else {
        [&[types.len() as u8][..], types].concat()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    None,
    Injected,
    PassThrough,
    InjectedFails,
    PassThroughFails,
    Unsupported,
    Refused,
}

/// Both sides' complete byte streams for one case, with what each side must receive
/// and how it ends. Successful cases add data after the handshake on both sides.
#[derive(Debug, Clone)]
struct Scenario {
    password: Option<&'static str>,
    view_only: bool,
    from_server: Vec<u8>,
    from_client: Vec<u8>,
    to_server: Vec<u8>,
    to_client: Vec<u8>,
    outcome: Result<AuthMode, HandshakeError>,
}

const EARLY_CLIENT_DATA: [u8; 10] = [3, 0, 0, 0, 0, 0, 4, 0, 3, 0];
const EARLY_SERVER_DATA: [u8; 1] = [2]; // Bell

fn scenario(version: Version, case: Case, view_only: bool) -> Scenario {
    let v3_3 = version == Version::V3_3;
    let v3_8 = version == Version::V3_8;
    let password = matches!(case, Case::Injected | Case::InjectedFails).then_some(PASSWORD);
    let mut s = Scenario {
        password,
        view_only,
        from_server: version.greeting().to_vec(),
        from_client: version.greeting().to_vec(),
        to_server: version.greeting().to_vec(),
        to_client: version.greeting().to_vec(),
        outcome: Ok(AuthMode::NoAuth),
    };
    // The browser is offered None and takes it, after the relay settled the server.
    let offer_none = |s: &mut Scenario| {
        s.to_client.extend(security_types(version, &[1]));
        if !v3_3 {
            s.from_client.push(1);
        }
        if v3_8 {
            s.to_client.extend(OK);
        }
    };
    match case {
        Case::None => {
            // VNC Authentication offered too, and a password given: None still wins.
            s.password = Some(PASSWORD);
            s.from_server
                .extend(security_types(version, if v3_3 { &[1] } else { &[2, 1] }));
            if !v3_3 {
                s.to_server.push(1);
            }
            if v3_8 {
                s.from_server.extend(OK);
            }
            offer_none(&mut s);
        }
        Case::Injected | Case::InjectedFails => {
            s.from_server.extend(security_types(version, &[2]));
            if !v3_3 {
                s.to_server.push(2);
            }
            s.from_server.extend(CHALLENGE);
            s.to_server.extend(RESPONSE);
            if case == Case::Injected {
                s.from_server.extend(OK);
                offer_none(&mut s);
                s.outcome = Ok(AuthMode::RelayAuthenticated);
            } else {
                s.from_server.extend(FAILED);
                let server_reason = v3_8.then(|| "Authentication failed".to_owned());
                if v3_8 {
                    s.from_server.extend(reason("Authentication failed"));
                }
                s.to_client
                    .extend(in_band_failure(version, RELAY_AUTH_FAILED));
                s.outcome = Err(HandshakeError::UpstreamAuthFailed {
                    reason: Reason(server_reason),
                });
                return s;
            }
        }
        Case::PassThrough | Case::PassThroughFails => {
            s.from_server.extend(security_types(version, &[2]));
            s.to_client.extend(security_types(version, &[2]));
            if !v3_3 {
                s.from_client.push(2);
                s.to_server.push(2);
            }
            s.from_server.extend(CHALLENGE);
            s.to_client.extend(CHALLENGE);
            s.from_client.extend(RESPONSE);
            s.to_server.extend(RESPONSE);
            if case == Case::PassThrough {
                s.from_server.extend(OK);
                s.to_client.extend(OK);
                s.outcome = Ok(AuthMode::BrowserAuthenticated);
            } else {
                let mut result = FAILED.to_vec();
                if v3_8 {
                    result.extend(reason("Authentication failed"));
                }
                s.from_server.extend(&result);
                s.to_client.extend(&result);
                s.outcome = Err(HandshakeError::ClientAuthRejected {
                    reason: Reason(v3_8.then(|| "Authentication failed".to_owned())),
                });
                return s;
            }
        }
        Case::Unsupported => {
            s.from_server.extend(security_types(
                version,
                if v3_3 { &[16] } else { &[16, 19] },
            ));
            let offered = if v3_3 { vec![16] } else { vec![16, 19] };
            let error = HandshakeError::UnsupportedSecurity {
                offered: SecurityTypes(offered),
            };
            s.to_client
                .extend(in_band_failure(version, &error.to_string()));
            s.outcome = Err(error);
            return s;
        }
        Case::Refused => {
            s.from_server
                .extend(in_band_failure(version, "Too many connections"));
            let error = HandshakeError::ServerRefused {
                reason: Reason(Some("Too many connections".to_owned())),
            };
            s.to_client
                .extend(in_band_failure(version, &error.to_string()));
            s.outcome = Err(error);
            return s;
        }
    }
    s.from_client.push(0); // ClientInit: exclusive
    s.to_server.push(u8::from(view_only));
    s.from_client.extend(EARLY_CLIENT_DATA);
    s.from_server.extend(server_init());
    s.to_client.extend(server_init());
    s.from_server.extend(EARLY_SERVER_DATA);
    s.to_client.extend(EARLY_SERVER_DATA);
    s
}

const VERSIONS: [Version; 3] = [Version::V3_3, Version::V3_7, Version::V3_8];
const CASES: [Case; 7] = [
    Case::None,
    Case::Injected,
    Case::PassThrough,
    Case::InjectedFails,
    Case::PassThroughFails,
    Case::Unsupported,
    Case::Refused,
];

/// What a run produced: everything written to each side, and how it ended.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    to_server: Vec<u8>,
    to_client: Vec<u8>,
    result: Result<(AuthMode, Vec<u8>), HandshakeError>,
}

fn new_handshake(s: &Scenario) -> ProxyHandshake {
    ProxyHandshake::new(s.password.map(|p| Secret::new(p.to_owned())), s.view_only)
}

/// Feeds `feeds` in order, writing out what is queued after each, as the relay does.
fn run(s: &Scenario, feeds: impl IntoIterator<Item = (Side, Vec<u8>)>) -> Outcome {
    let mut hs = new_handshake(s);
    let mut to_server = Vec::new();
    let mut to_client = Vec::new();
    let mut error = None;
    for (side, bytes) in feeds {
        let fed = match side {
            Side::Server => hs.feed_server(&bytes),
            Side::Client => hs.feed_client(&bytes),
        };
        to_server.extend(hs.take_for_server());
        to_client.extend(hs.take_for_client());
        if let Err(e) = fed {
            error = Some(e);
            break;
        }
    }
    let result = match error {
        Some(e) => Err(e),
        None => hs.finish().map(|done| {
            to_server.extend(&done.to_server);
            to_client.extend(&done.to_client);
            // The data phase starts after ServerInit, with the server's early bytes.
            let data_start = done.to_client.len() - done.server_data_len;
            assert_eq!(done.to_client[data_start..], EARLY_SERVER_DATA);
            assert_eq!(done.server_init.name, "desktop");
            assert_eq!(
                (done.server_init.width, done.server_init.height),
                (1024, 768)
            );
            (done.auth, done.from_client)
        }),
    };
    Outcome {
        to_server,
        to_client,
        result,
    }
}

fn expected(s: &Scenario) -> Outcome {
    Outcome {
        to_server: s.to_server.clone(),
        to_client: s.to_client.clone(),
        result: s
            .outcome
            .clone()
            .map(|auth| (auth, EARLY_CLIENT_DATA.to_vec())),
    }
}

/// Feeds as the relay does: only the side the handshake waits for, `chunk` bytes at a
/// time.
fn run_lockstep(s: &Scenario, chunk: usize) -> Outcome {
    let mut hs = new_handshake(s);
    let (mut server, mut client) = (&s.from_server[..], &s.from_client[..]);
    let mut out = Outcome {
        to_server: Vec::new(),
        to_client: Vec::new(),
        result: Err(HandshakeError::Unfinished),
    };
    while let Some(side) = hs.waiting_for() {
        let source = match side {
            Side::Server => &mut server,
            Side::Client => &mut client,
        };
        assert!(
            !source.is_empty(),
            "waiting for the {side}, which has nothing left"
        );
        let (now, later) = source.split_at(chunk.min(source.len()));
        *source = later;
        let fed = match side {
            Side::Server => hs.feed_server(now),
            Side::Client => hs.feed_client(now),
        };
        out.to_server.extend(hs.take_for_server());
        out.to_client.extend(hs.take_for_client());
        if let Err(e) = fed {
            assert_eq!(hs.waiting_for(), None);
            out.result = Err(e);
            return out;
        }
    }
    // What was not read yet is data-phase bytes, handed over as a socket would.
    let done = hs.finish().expect("finished");
    out.to_server.extend(&done.to_server);
    out.to_client.extend(&done.to_client);
    out.to_client.extend(server);
    let mut from_client = done.from_client;
    from_client.extend(client);
    out.result = Ok((done.auth, from_client));
    out
}

#[test]
fn every_version_and_case_in_lockstep() {
    for version in VERSIONS {
        for case in CASES {
            for view_only in [false, true] {
                let s = scenario(version, case, view_only);
                for chunk in [1, 3, 12, 1000] {
                    assert_eq!(
                        run_lockstep(&s, chunk),
                        expected(&s),
                        "{version} {case:?} view={view_only} chunk={chunk}"
                    );
                }
            }
        }
    }
}

#[test]
fn every_version_and_case_fed_all_at_once() {
    for version in VERSIONS {
        for case in CASES {
            let s = scenario(version, case, false);
            // The browser's bytes first: they wait until the handshake needs them.
            let feeds = [
                (Side::Client, s.from_client.clone()),
                (Side::Server, s.from_server.clone()),
            ];
            assert_eq!(run(&s, feeds), expected(&s), "{version} {case:?}");
        }
    }
}

#[test]
fn injected_auth_step_by_step_on_3_8() {
    let mut hs = ProxyHandshake::new(Some(Secret::new(PASSWORD.to_owned())), false);
    assert_eq!(hs.waiting_for(), Some(Side::Server));
    hs.feed_server(b"RFB 003.008\n").unwrap();
    assert_eq!(hs.take_for_client(), b"RFB 003.008\n");
    assert_eq!(hs.waiting_for(), Some(Side::Client));
    hs.feed_client(b"RFB 003.008\n").unwrap();
    assert_eq!(hs.take_for_server(), b"RFB 003.008\n");
    assert_eq!(hs.version(), Some(Version::V3_8));
    hs.feed_server(&[1, 2]).unwrap();
    assert_eq!(hs.take_for_server(), [2]);
    // Nothing for the browser until the server is satisfied.
    assert!(hs.take_for_client().is_empty());
    hs.feed_server(&CHALLENGE).unwrap();
    assert_eq!(hs.take_for_server(), RESPONSE);
    hs.feed_server(&OK).unwrap();
    assert_eq!(hs.take_for_client(), [1, 1]);
    hs.feed_client(&[1]).unwrap();
    assert_eq!(hs.take_for_client(), OK);
    hs.feed_client(&[1]).unwrap();
    assert_eq!(hs.take_for_server(), [1]);
    assert!(hs.server_init().is_none());
    hs.feed_server(&server_init()).unwrap();
    assert_eq!(hs.take_for_client(), server_init());
    assert!(hs.is_done());
    assert_eq!(hs.waiting_for(), None);
    assert_eq!(hs.server_init().map(|i| i.width), Some(1024));
}

#[test]
fn password_never_reaches_the_browser() {
    for version in VERSIONS {
        let s = scenario(version, Case::Injected, false);
        let out = run_lockstep(&s, 1000);
        assert!(
            !out.to_client
                .windows(PASSWORD.len())
                .any(|w| w == PASSWORD.as_bytes())
        );
        assert!(!out.to_client.windows(16).any(|w| w == RESPONSE));
        assert!(!out.to_client.windows(16).any(|w| w == CHALLENGE));
    }
}

#[test]
fn upstream_auth_failure_tells_the_browser_why() {
    let s = scenario(Version::V3_8, Case::InjectedFails, false);
    let out = run_lockstep(&s, 1000);
    let tail = [&[0u8][..], &reason(RELAY_AUTH_FAILED)].concat();
    assert!(out.to_client.ends_with(&tail));
    let error = out.result.unwrap_err();
    assert_eq!(
        error.to_string(),
        "the relay could not authenticate to the VNC server: Authentication failed"
    );
    assert_eq!(error.caused_by(), Side::Server);
}

#[test]
fn versions_are_normalised_and_never_raised() {
    let mut hs = ProxyHandshake::new(None, false);
    hs.feed_server(b"RFB 003.889\n").unwrap();
    assert_eq!(hs.take_for_client(), b"RFB 003.008\n");
    hs.feed_client(b"RFB 003.008\n").unwrap();
    assert_eq!(hs.take_for_server(), b"RFB 003.008\n");

    // A browser asking for less gets it; the server is told the same.
    let mut hs = ProxyHandshake::new(None, false);
    hs.feed_server(b"RFB 003.008\n").unwrap();
    hs.feed_client(b"RFB 003.003\n").unwrap();
    assert_eq!(hs.take_for_server(), b"RFB 003.003\n");
    assert_eq!(hs.version(), Some(Version::V3_3));

    // A browser asking for more than offered gets what was offered.
    let mut hs = ProxyHandshake::new(None, false);
    hs.feed_server(b"RFB 003.003\n").unwrap();
    hs.feed_client(b"RFB 003.008\n").unwrap();
    assert_eq!(hs.take_for_server(), b"RFB 003.003\n");
}

#[test]
fn bad_greetings_are_errors_naming_the_side() {
    let mut hs = ProxyHandshake::new(None, false);
    let e = hs.feed_server(b"SSH-2.0-OpenSSH\r\n").unwrap_err();
    assert_eq!(
        e,
        HandshakeError::NotRfb {
            side: Side::Server,
            greeting: "SSH-2.0-Open".to_owned()
        }
    );
    assert!(hs.take_for_client().is_empty());

    let mut hs = ProxyHandshake::new(None, false);
    let e = hs.feed_server(b"RFB 003.002\n").unwrap_err();
    assert_eq!(
        e.to_string(),
        "the VNC server speaks RFB 3.2; the relay needs 3.3 or later"
    );

    let mut hs = ProxyHandshake::new(None, false);
    hs.feed_server(b"RFB 003.008\n").unwrap();
    let e = hs.feed_client(b"GET / HTTP/1.1\r\n").unwrap_err();
    assert_eq!(e.caused_by(), Side::Client);
    assert!(e.to_string().starts_with("the browser did not send"), "{e}");
}

#[test]
fn unsupported_security_names_the_offered_types() {
    let s = scenario(Version::V3_8, Case::Unsupported, false);
    let error = run_lockstep(&s, 1000).result.unwrap_err();
    assert_eq!(
        error.to_string(),
        "the VNC server offers no security type the relay supports (it offers 16 (Tight), \
         19 (VeNCrypt); the relay supports 1 (None) and 2 (VNC Authentication))"
    );
    // 3.3 servers may send a type outside u8 range; it is named, not truncated.
    let mut hs = ProxyHandshake::new(None, false);
    hs.feed_server(b"RFB 003.003\n").unwrap();
    hs.feed_client(b"RFB 003.003\n").unwrap();
    let e = hs.feed_server(&[0, 1, 0, 2]).unwrap_err();
    assert_eq!(
        e,
        HandshakeError::UnsupportedSecurity {
            offered: SecurityTypes(vec![0x0001_0002])
        }
    );
}

#[test]
fn browser_must_pick_the_offered_type() {
    let mut hs = ProxyHandshake::new(None, false);
    hs.feed_server(b"RFB 003.008\n").unwrap();
    hs.feed_client(b"RFB 003.008\n").unwrap();
    hs.feed_server(&[1, 1, 0, 0, 0, 0]).unwrap();
    assert_eq!(
        hs.take_for_client(),
        [b"RFB 003.008\n".as_slice(), &[1, 1]].concat()
    );
    let e = hs.feed_client(&[2]).unwrap_err();
    assert_eq!(
        e,
        HandshakeError::UnofferedSecurityType {
            chosen: 2,
            offered: 1
        }
    );
    // A 3.8 browser gets a failed SecurityResult that says why.
    let mut told = FAILED.to_vec();
    told.extend(reason(&e.to_string()));
    assert_eq!(hs.take_for_client(), told);
    // Errors stick.
    assert_eq!(hs.feed_client(&[1]), Err(e.clone()));
    assert_eq!(hs.feed_server(&[0]), Err(e.clone()));
    assert_eq!(hs.finish().unwrap_err(), e);
}

#[test]
fn a_3_7_browser_that_picks_an_unoffered_type_just_sees_the_close() {
    let mut hs = ProxyHandshake::new(None, false);
    hs.feed_server(b"RFB 003.007\n").unwrap();
    hs.feed_client(b"RFB 003.007\n").unwrap();
    hs.feed_server(&[1, 1]).unwrap();
    assert_eq!(
        hs.take_for_client(),
        [b"RFB 003.007\n".as_slice(), &[1, 1]].concat()
    );
    assert!(hs.feed_client(&[2]).is_err());
    assert!(hs.take_for_client().is_empty());
}

#[test]
fn none_refused_by_a_3_8_server_is_reported() {
    let mut hs = ProxyHandshake::new(None, false);
    hs.feed_server(b"RFB 003.008\n").unwrap();
    hs.feed_client(b"RFB 003.008\n").unwrap();
    hs.take_for_client();
    hs.feed_server(&[1, 1]).unwrap();
    let e = hs
        .feed_server(&[&FAILED[..], &reason("blacklisted")].concat())
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "the VNC server refused the connection: blacklisted"
    );
    assert_eq!(
        hs.take_for_client(),
        in_band_failure(Version::V3_8, &e.to_string())
    );
}

#[test]
fn view_only_forces_shared() {
    for view_only in [false, true] {
        let s = scenario(Version::V3_8, Case::None, view_only);
        let out = run_lockstep(&s, 1000);
        assert_eq!(out.to_server.last(), Some(&u8::from(view_only)));
    }
}

#[test]
fn wire_lengths_are_capped() {
    let mut hs = ProxyHandshake::new(None, false);
    hs.feed_server(b"RFB 003.008\n").unwrap();
    hs.feed_client(b"RFB 003.008\n").unwrap();
    let e = hs.feed_server(&[0, 0, 0, 0x10, 1]).unwrap_err();
    assert_eq!(
        e,
        HandshakeError::TooLong {
            side: Side::Server,
            what: "failure reason",
            len: 0x1001,
            max: MAX_REASON_LEN
        }
    );

    let mut hs = ProxyHandshake::new(None, false);
    for (side, bytes) in [
        (Side::Server, &b"RFB 003.003\n"[..]),
        (Side::Client, b"RFB 003.003\n"),
        (Side::Server, &[0, 0, 0, 1]),
        (Side::Client, &[1]),
    ] {
        match side {
            Side::Server => hs.feed_server(bytes).unwrap(),
            Side::Client => hs.feed_client(bytes).unwrap(),
        }
    }
    let mut init = server_init();
    init[20..24].copy_from_slice(&u32::MAX.to_be_bytes());
    let e = hs.feed_server(&init).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "the VNC server sent a desktop name of {} bytes, over the limit of 4096",
            u32::MAX
        )
    );
}

#[test]
fn buffered_bytes_are_capped() {
    let mut hs = ProxyHandshake::new(None, false);
    hs.feed_client(&vec![0; MAX_HANDSHAKE_BUFFER]).unwrap();
    let e = hs.feed_client(&[0]).unwrap_err();
    assert_eq!(
        e,
        HandshakeError::TooMuchData {
            side: Side::Client,
            max: MAX_HANDSHAKE_BUFFER
        }
    );
}

#[test]
fn finish_before_done_is_an_error() {
    let mut hs = ProxyHandshake::new(None, false);
    hs.feed_server(b"RFB 003.008\n").unwrap();
    assert!(!hs.is_done());
    assert_eq!(hs.finish().unwrap_err(), HandshakeError::Unfinished);
}

#[test]
fn debug_hides_the_password_and_response() {
    let mut hs = ProxyHandshake::new(Some(Secret::new("hunter2".to_owned())), false);
    hs.feed_server(b"RFB 003.008\n").unwrap();
    hs.feed_client(b"RFB 003.008\n").unwrap();
    hs.feed_server(&[1, 2]).unwrap();
    hs.feed_server(&CHALLENGE).unwrap();
    let debug = format!("{hs:?}");
    assert!(debug.contains("MASKED"), "{debug}");
    assert!(!debug.contains("hunter2"), "{debug}");
    assert!(!debug.contains("104, 117"), "{debug}"); // "hu" as bytes
}

/// Splits `bytes` into chunks whose sizes cycle through `sizes`.
fn chunks(bytes: &[u8], sizes: &[usize]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = bytes;
    for size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (a, b) = rest.split_at((*size).min(rest.len()));
        out.push(a.to_vec());
        rest = b;
    }
    out
}

proptest! {
    #[test]
    fn any_chunking_and_interleaving_gives_the_same_result(
        version in prop::sample::select(VERSIONS.to_vec()),
        case in prop::sample::select(CASES.to_vec()),
        view_only in any::<bool>(),
        server_sizes in prop::collection::vec(1usize..20, 1..8),
        client_sizes in prop::collection::vec(1usize..20, 1..8),
        order in prop::collection::vec(any::<bool>(), 0..64),
    ) {
        let s = scenario(version, case, view_only);
        let mut server = chunks(&s.from_server, &server_sizes).into_iter();
        let mut client = chunks(&s.from_client, &client_sizes).into_iter();
        let mut feeds = Vec::new();
        // Interleave as `order` says, then whatever is left.
        for from_server in order {
            let next = if from_server { server.next().map(|c| (Side::Server, c)) } else { client.next().map(|c| (Side::Client, c)) };
            feeds.extend(next);
        }
        feeds.extend(server.map(|c| (Side::Server, c)));
        feeds.extend(client.map(|c| (Side::Client, c)));
        prop_assert_eq!(run(&s, feeds), expected(&s));
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        password in any::<bool>(),
        server in prop::collection::vec(any::<u8>(), 0..128),
        client in prop::collection::vec(any::<u8>(), 0..64),
        greeting in prop::sample::select(VERSIONS.to_vec()),
    ) {
        // Valid greetings first, so the fuzzing reaches past the version exchange.
        let mut hs = ProxyHandshake::new(password.then(|| Secret::new("pw".to_owned())), false);
        let _ = hs.feed_server(&[greeting.greeting(), &server[..]].concat());
        let _ = hs.feed_client(&[greeting.greeting(), &client[..]].concat());
        let _ = hs.take_for_client();
        let _ = hs.finish();
    }
}
