use proptest::prelude::*;

use super::*;
use crate::rfb::chunked::chunked;
use crate::rfb::server_message::encoding as enc;
use ServerMessageKind as K;

/// 32 bpp true colour, depth 24, 8 bits a channel: Tight's TPIXEL is 3 bytes.
const RGB888: [u8; 16] = [32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0];
/// 16 bpp true colour.
const RGB565: [u8; 16] = [16, 16, 0, 1, 0, 31, 0, 63, 0, 31, 11, 5, 0, 0, 0, 0];
/// 8 bpp colour map.
const MAPPED8: [u8; 16] = [8, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
/// 32 bpp of depth 32: TPIXEL is a whole pixel.
const RGB32: [u8; 16] = [32, 32, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0];

fn format(bytes: [u8; 16]) -> PixelFormat {
    PixelFormat::from_bytes(&bytes)
}

/// Frames `chunks` in order: the events, then the error if one ended it.
fn frame_with(
    framer: &mut ServerFramer,
    chunks: &[&[u8]],
) -> (Vec<ServerEvent>, Option<ServerFrameError>) {
    let mut events = Vec::new();
    for chunk in chunks {
        for event in framer.events(chunk) {
            match event {
                Ok(event) => events.push(event),
                Err(e) => return (events, Some(e)),
            }
        }
    }
    (events, None)
}

fn frame(chunks: &[&[u8]]) -> Result<Vec<ServerEvent>, ServerFrameError> {
    match frame_with(&mut ServerFramer::new(format(RGB888)), chunks) {
        (events, None) => Ok(events),
        (_, Some(e)) => Err(e),
    }
}

/// A whole message and the events it must give.
#[derive(Debug, Clone)]
struct Sample {
    bytes: Vec<u8>,
    events: Vec<ServerEvent>,
}

impl Sample {
    fn message(kind: ServerMessageKind, bytes: Vec<u8>) -> Sample {
        let len = bytes.len() as u64;
        Sample {
            bytes,
            events: vec![ServerEvent::Message { kind, len }],
        }
    }
}

/// One rectangle of a FramebufferUpdate: header fields, payload, and the event its
/// payload gives, if any.
#[derive(Debug, Clone)]
struct Part {
    rect: Rectangle,
    payload: Vec<u8>,
    event: Option<ServerEvent>,
}

fn part(encoding: i32, (width, height): (u16, u16), payload: Vec<u8>) -> Part {
    Part {
        rect: Rectangle {
            x: 3,
            y: 4,
            width,
            height,
            encoding,
        },
        payload,
        event: None,
    }
}

/// A FramebufferUpdate of `parts`, its count `count` (the number of parts if `None`).
fn update_counted(parts: &[Part], count: Option<u16>) -> Sample {
    let mut bytes = vec![0, 0];
    bytes.extend(count.unwrap_or(parts.len() as u16).to_be_bytes());
    let mut events = Vec::new();
    for p in parts {
        let r = p.rect;
        for v in [r.x, r.y, r.width, r.height] {
            bytes.extend(v.to_be_bytes());
        }
        bytes.extend(r.encoding.to_be_bytes());
        bytes.extend(&p.payload);
        events.push(ServerEvent::Rect(r));
        events.extend(p.event);
    }
    events.push(ServerEvent::Message {
        kind: K::FramebufferUpdate,
        len: bytes.len() as u64,
    });
    Sample { bytes, events }
}

fn update(parts: &[Part]) -> Sample {
    update_counted(parts, None)
}

/// `n` bytes of filler that never look like a JPEG marker prefix.
fn fill(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 200) as u8).collect()
}

fn with(head: &[u8], n: usize) -> Vec<u8> {
    [head, &fill(n)].concat()
}

/// A Hextile payload of a `width` × `height` rectangle at 4 bytes a pixel, tile
/// sub-encodings taken in turn from `subencodings`, each with `subrects` sub-rectangles
/// where it has any.
fn hextile(width: u16, height: u16, subencodings: &[u8], subrects: u8) -> Vec<u8> {
    let mut out = Vec::new();
    let mut next = subencodings.iter().cycle();
    for ty in (0..height).step_by(16) {
        for tx in (0..width).step_by(16) {
            let (tw, th) = ((width - tx).min(16), (height - ty).min(16));
            let &sub = next.next().unwrap();
            out.push(sub);
            if sub & 1 != 0 {
                out.extend(fill(usize::from(tw) * usize::from(th) * 4));
                continue;
            }
            let colours = usize::from(sub & 2 != 0) + usize::from(sub & 4 != 0);
            out.extend(fill(4 * colours));
            if sub & 8 != 0 {
                out.push(subrects);
                let each = if sub & 16 != 0 { 6 } else { 2 };
                out.extend(fill(usize::from(subrects) * each));
            }
        }
    }
    out
}

/// A JPEG image: SOI, an APP0 and a DQT segment, a start of scan, entropy-coded data
/// holding a stuffed 0xFF, a restart marker and fill bytes, then EOI.
fn jpeg() -> Vec<u8> {
    let mut out = vec![0xFF, 0xD8];
    out.extend([0xFF, 0xE0, 0, 16]);
    out.extend(fill(14));
    out.extend([0xFF, 0xDB, 0, 4, 1, 2]);
    out.extend([0xFF, 0xDA, 0, 8]);
    out.extend(fill(6));
    out.extend([1, 2, 0xFF, 0x00, 3, 0xFF, 0xD3, 4, 5]);
    out.extend(fill(100));
    // A second scan (progressive JPEG), then fill bytes before EOI.
    out.extend([0xFF, 0xDA, 0, 2, 9, 9, 0xFF, 0xFF, 0xFF, 0xD9]);
    out
}

/// Screens of an ExtendedDesktopSize payload.
fn screens(n: u8) -> Vec<u8> {
    with(&[n, 0, 0, 0], 16 * usize::from(n))
}

/// One sample of every encoding and message kind (and variants of their layouts), for
/// RGB888.
fn samples() -> Vec<Sample> {
    let answer = |x: u16, y: u16, event: ServerEvent| Part {
        rect: Rectangle {
            x,
            y,
            width: 800,
            height: 600,
            encoding: enc::EXTENDED_DESKTOP_SIZE,
        },
        payload: screens(1),
        event: Some(event),
    };
    let mut desktop_size = part(enc::DESKTOP_SIZE, (1024, 768), vec![]);
    desktop_size.event = Some(ServerEvent::DesktopSize {
        width: 1024,
        height: 768,
    });
    let rects = vec![
        part(enc::RAW, (3, 2), fill(24)),
        part(enc::RAW, (0, 5), vec![]),
        part(enc::COPY_RECT, (10, 10), vec![0, 1, 0, 2]),
        part(enc::RRE, (10, 10), with(&[0, 0, 0, 2], 4 + 2 * 12)),
        part(enc::CORRE, (10, 10), with(&[0, 0, 0, 1], 4 + 8)),
        part(enc::HEXTILE, (20, 18), hextile(20, 18, &[1, 14, 30, 0], 2)),
        part(enc::HEXTILE, (33, 1), hextile(33, 1, &[8, 31, 2], 0)),
        part(enc::HEXTILE, (0, 16), vec![]),
        part(enc::ZLIB, (64, 64), with(&[0, 0, 0, 5], 5)),
        part(enc::ZRLE, (64, 64), with(&[0, 0, 1, 0], 256)),
        part(enc::ZYWRLE, (64, 64), with(&[0, 0, 0, 0], 0)),
        // Tight: fill, JPEG (2-byte length), basic without filter (short, so not
        // compressed), copy filter (compressed), palettes of 2 and 5 colours, gradient,
        // a 3-byte compact length; TightPNG.
        part(enc::TIGHT, (64, 64), vec![0x80, 1, 2, 3]),
        part(enc::TIGHT, (64, 64), with(&[0x9F, 0xC8, 0x01], 200)),
        part(enc::TIGHT, (1, 2), with(&[0x00], 6)),
        part(enc::TIGHT, (4, 4), with(&[0x41, 0, 20], 20)),
        part(enc::TIGHT, (10, 3), with(&[0x50, 1, 1], 6 + 6)),
        part(
            enc::TIGHT,
            (4, 4),
            [vec![0x60, 1, 4], fill(15), vec![10], fill(10)].concat(),
        ),
        part(enc::TIGHT, (2, 2), with(&[0x70, 2, 5], 5)),
        part(
            enc::TIGHT,
            (200, 200),
            with(&[0x00, 0xA0, 0x9C, 0x01], 20000),
        ),
        part(enc::TIGHT_PNG, (8, 8), with(&[0xA0, 7], 7)),
        part(enc::TIGHT_PNG, (8, 8), vec![0x80, 9, 9, 9]),
        part(enc::JPEG, (16, 16), jpeg()),
        part(enc::H264, (64, 64), with(&[0, 0, 0, 10, 0, 0, 0, 1], 10)),
        desktop_size,
        answer(
            1,
            3,
            ServerEvent::ResizeAnswer(ResizeAnswer {
                status: ResizeStatus::INVALID_LAYOUT,
                width: 800,
                height: 600,
            }),
        ),
        answer(
            0,
            0,
            ServerEvent::DesktopSize {
                width: 800,
                height: 600,
            },
        ),
        part(enc::CURSOR, (9, 2), fill(9 * 2 * 4 + 2 * 2)),
        part(enc::X_CURSOR, (9, 2), fill(6 + 2 * 2 * 2)),
        part(enc::X_CURSOR, (0, 0), vec![]),
        part(enc::CURSOR_WITH_ALPHA, (2, 2), with(&[0, 0, 0, 0], 16)),
        part(enc::VMWARE_CURSOR, (2, 2), with(&[0, 0], 2 * 16)),
        part(enc::VMWARE_CURSOR, (2, 2), with(&[1, 0], 16)),
        part(enc::VMWARE_CURSOR_STATE, (0, 0), vec![0, 1]),
        part(enc::VMWARE_LED_STATE, (0, 0), vec![0, 0, 0, 7]),
        part(enc::QEMU_LED_STATE, (0, 0), vec![7]),
        part(enc::DESKTOP_NAME, (0, 0), with(&[0, 0, 0, 4], 4)),
    ];
    let empty = [
        enc::POINTER_POS,
        enc::QEMU_EXTENDED_KEY_EVENT,
        enc::QEMU_AUDIO,
        enc::XVP,
        enc::FENCE,
        enc::CONTINUOUS_UPDATES,
        enc::EXTENDED_MOUSE_BUTTONS,
        enc::VMWARE_CURSOR_POSITION,
    ]
    .map(|e| part(e, (1, 1), vec![]));
    let mut out: Vec<Sample> = rects
        .iter()
        .map(|p| update(std::slice::from_ref(p)))
        .collect();
    out.push(update(&empty));
    out.push(update(&rects[..6]));
    out.push(update(&[]));
    // LastRect ends an update of unknown count.
    out.push(update_counted(
        &[rects[0].clone(), part(enc::LAST_RECT, (0, 0), vec![])],
        Some(0xFFFF),
    ));
    out.extend([
        Sample::message(K::SetColourMapEntries, with(&[1, 0, 0, 0, 0, 2], 12)),
        Sample::message(K::SetColourMapEntries, vec![1, 0, 0, 9, 0, 0]),
        Sample::message(K::Bell, vec![2]),
        Sample::message(K::ServerCutText, vec![3, 0, 0, 0, 0, 0, 0, 2, b'h', b'i']),
        Sample::message(K::ServerCutText, vec![3, 0, 0, 0, 0, 0, 0, 0]),
        // Extended Clipboard: length -4, then the flags.
        Sample::message(
            K::ServerCutText,
            with(&[3, 0, 0, 0, 0xff, 0xff, 0xff, 0xfc], 4),
        ),
        Sample::message(K::EndOfContinuousUpdates, vec![150]),
        Sample::message(K::ServerFence, with(&[248, 0, 0, 0, 0x80, 0, 0, 3, 4], 4)),
        Sample::message(K::ServerFence, with(&[248, 0, 0, 0, 0, 0, 0, 0, 64], 64)),
        Sample::message(K::Xvp, vec![250, 0, 1, 1]),
        Sample::message(K::GiiVersion, vec![253, 0x81, 0, 4, 0, 1, 0, 1]),
        Sample::message(K::GiiDeviceCreation, vec![253, 2, 4, 0, 0, 0, 0, 7]),
        Sample::message(K::QemuAudio, vec![255, 1, 0, 0]),
        Sample::message(K::QemuAudio, vec![255, 1, 0, 1]),
        Sample::message(K::QemuAudio, with(&[255, 1, 0, 2, 0, 0, 0, 3], 3)),
    ]);
    out
}

#[test]
fn every_sample_frames_whole() {
    for s in samples() {
        assert_eq!(frame(&[&s.bytes]), Ok(s.events.clone()), "{:?}", s.events);
    }
}

#[test]
fn every_sample_survives_every_split() {
    for s in samples() {
        for cut in 0..=s.bytes.len() {
            let (a, b) = s.bytes.split_at(cut);
            assert_eq!(
                frame(&[a, b]),
                Ok(s.events.clone()),
                "cut {cut} {:?}",
                s.events
            );
        }
        let singles: Vec<&[u8]> = s.bytes.chunks(1).collect();
        assert_eq!(
            frame(&singles),
            Ok(s.events.clone()),
            "bytewise {:?}",
            s.events
        );
    }
}

#[test]
fn a_message_is_a_boundary_only_once_whole() {
    for s in samples() {
        let mut framer = ServerFramer::new(format(RGB888));
        for (i, byte) in s.bytes.iter().enumerate() {
            assert!(
                framer.at_boundary() == (i == 0),
                "byte {i} of {:?}",
                s.events
            );
            frame_with(&mut framer, &[&[*byte]]);
        }
        assert!(framer.at_boundary(), "{:?}", s.events);
    }
}

#[test]
fn all_samples_in_one_stream() {
    let all = samples();
    let stream: Vec<u8> = all.iter().flat_map(|s| s.bytes.clone()).collect();
    let events: Vec<ServerEvent> = all.iter().flat_map(|s| s.events.clone()).collect();
    assert_eq!(frame(&[&stream]), Ok(events.clone()));
    let chunks: Vec<&[u8]> = stream.chunks(7).collect();
    assert_eq!(frame(&chunks), Ok(events));
}

#[test]
fn pixel_sizes_follow_the_format() {
    // Raw 3 × 2 and a Tight fill, in each format: PIXEL and TPIXEL sizes.
    for (fmt, pixel, tpixel) in [
        (RGB888, 4, 3),
        (RGB32, 4, 4),
        (RGB565, 2, 2),
        (MAPPED8, 1, 1),
    ] {
        let s = update(&[
            part(enc::RAW, (3, 2), fill(6 * pixel)),
            part(enc::TIGHT, (9, 9), with(&[0x80], tpixel)),
            part(enc::HEXTILE, (4, 4), hextile_px(pixel)),
        ]);
        let mut framer = ServerFramer::new(format(fmt));
        assert_eq!(
            frame_with(&mut framer, &[&s.bytes]),
            (s.events, None),
            "{fmt:?}"
        );
        assert!(framer.at_boundary());
    }
}

/// One 4 × 4 Hextile tile, raw, at `pixel` bytes a pixel, then nothing else.
fn hextile_px(pixel: usize) -> Vec<u8> {
    with(&[1], 16 * pixel)
}

#[test]
fn a_new_pixel_format_applies_from_the_next_message() {
    let mut framer = ServerFramer::new(format(RGB888));
    let old = update(&[part(enc::RAW, (2, 1), fill(8))]);
    let new = update(&[part(enc::RAW, (2, 1), fill(4))]);
    // The format changes in the middle of an update: that update keeps the old one.
    let (events, error) = frame_with(&mut framer, &[&old.bytes[..10]]);
    assert_eq!((events.len(), error), (0, None));
    framer.set_pixel_format(format(RGB565));
    let (events, error) = frame_with(&mut framer, &[&old.bytes[10..], &new.bytes]);
    assert_eq!(error, None);
    assert_eq!(events, [old.events, new.events].concat());
    assert!(framer.at_boundary());

    // A format RFB does not allow fails at the next message, not before.
    framer.set_pixel_format(format([
        24, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0,
    ]));
    assert!(framer.at_boundary());
    assert_eq!(framer.next_event(&[]), Ok((0, None)));
    assert_eq!(
        framer.next_event(&[2]),
        Err(ServerFrameError::UnsupportedPixelFormat(24))
    );
}

#[test]
fn unknown_or_malformed_input_is_an_error() {
    use ServerFrameError::*;
    let rect = |encoding: i32, payload: &[u8]| {
        let mut m = vec![0, 0, 0, 1, 0, 0, 0, 0, 0, 4, 0, 4];
        m.extend(encoding.to_be_bytes());
        m.extend(payload);
        m
    };
    let cases: Vec<(Vec<u8>, ServerFrameError)> = vec![
        (vec![4], UnknownMessageType(4)),
        (vec![249], UnknownMessageType(249)),
        (vec![253, 3, 0, 0], UnknownGiiSubtype(3)),
        (vec![255, 0, 0, 0], UnknownQemuSubtype(0)),
        (vec![255, 1, 0, 3], UnknownQemuAudioOperation(3)),
        (vec![248, 0, 0, 0, 0, 0, 0, 0, 65], FencePayloadTooLong(65)),
        (rect(15, &[]), UnknownEncoding(15)),
        (rect(-1000, &[]), UnknownEncoding(-1000)),
        (rect(enc::HEXTILE, &[0x20]), BadHextileSubencoding(0x20)),
        (rect(enc::TIGHT, &[0xB0]), BadTightControl(0xB0)),
        (rect(enc::TIGHT, &[0x40, 3]), BadTightFilter(3)),
        (rect(enc::JPEG, &[0xFE, 0xD8]), BadJpegMarker(0xFE)),
        (
            rect(enc::JPEG, &[0xFF, 0xD8, 0xFF, 0xE0, 0, 1]),
            BadJpegLength(1),
        ),
        (
            rect(enc::CURSOR_WITH_ALPHA, &[0, 0, 0, 7]),
            BadAlphaCursorEncoding(7),
        ),
        (rect(enc::VMWARE_CURSOR, &[2, 0]), BadVmwareCursorType(2)),
    ];
    for (bytes, error) in cases {
        assert_eq!(frame(&[&bytes]), Err(error.clone()), "{bytes:?}");
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(frame(&singles), Err(error), "{bytes:?} bytewise");
    }
}

#[test]
fn errors_are_sticky() {
    let mut framer = ServerFramer::new(format(RGB888));
    assert_eq!(
        framer.next_event(&[9]),
        Err(ServerFrameError::UnknownMessageType(9))
    );
    assert_eq!(
        framer.next_event(&[2]),
        Err(ServerFrameError::UnknownMessageType(9))
    );
    assert!(!framer.at_boundary());
    let items: Vec<_> = framer.events(&[2]).collect();
    assert_eq!(items, [Err(ServerFrameError::UnknownMessageType(9))]);
}

#[test]
fn resize_status_words() {
    let words: Vec<_> = (0..5).map(|s| ResizeStatus(s).as_str()).collect();
    assert_eq!(
        words,
        [
            "ok",
            "prohibited",
            "out of resources",
            "invalid layout",
            "unknown"
        ]
    );
}

/// A random valid rectangle or message, for the properties below.
fn arb_part() -> impl Strategy<Value = Part> {
    let size = || (0u16..40, 0u16..40);
    prop_oneof![
        size().prop_map(|(w, h)| part(enc::RAW, (w, h), fill(usize::from(w) * usize::from(h) * 4))),
        (
            size(),
            prop::collection::vec(
                prop::sample::select(vec![0u8, 1, 2, 6, 8, 14, 24, 31]),
                1..4
            ),
            0u8..4
        )
            .prop_map(|((w, h), subs, n)| part(
                enc::HEXTILE,
                (w, h),
                hextile(w, h, &subs, n)
            )),
        (0u32..3, size()).prop_map(|(n, (w, h))| {
            part(
                enc::RRE,
                (w, h),
                with(&n.to_be_bytes(), 4 + 12 * n as usize),
            )
        }),
        (0u32..300).prop_map(|n| part(enc::ZRLE, (9, 9), with(&n.to_be_bytes(), n as usize))),
        (0u8..2, size(), 0usize..300).prop_map(|(filter, (w, h), zlen)| {
            // Copy or gradient filter: raw when short, else a compact length.
            let data = usize::from(w) * usize::from(h) * 3;
            let mut m = vec![0x40, filter * 2];
            if data < 12 {
                m.extend(fill(data));
            } else {
                m.extend(compact(zlen));
                m.extend(fill(zlen));
            }
            part(enc::TIGHT, (w, h), m)
        }),
        (1u16..=256, size(), 0usize..300).prop_map(|(colours, (w, h), zlen)| {
            let row = if colours <= 2 {
                usize::from(w).div_ceil(8)
            } else {
                usize::from(w)
            };
            let data = row * usize::from(h);
            let mut m = vec![0x40, 1, (colours - 1) as u8];
            m.extend(fill(3 * usize::from(colours)));
            if data < 12 {
                m.extend(fill(data));
            } else {
                m.extend(compact(zlen));
                m.extend(fill(zlen));
            }
            part(enc::TIGHT, (w, h), m)
        }),
        (0usize..20_000).prop_map(|n| {
            part(
                enc::TIGHT,
                (9, 9),
                [vec![0x90], compact(n), fill(n)].concat(),
            )
        }),
        (prop::collection::vec(any::<u8>(), 0..200)).prop_map(|scan| {
            // Entropy-coded data with every 0xFF stuffed.
            let mut m = vec![0xFF, 0xD8, 0xFF, 0xDA, 0, 2];
            for b in scan {
                m.push(b);
                if b == 0xFF {
                    m.push(0);
                }
            }
            m.extend([0xFF, 0xD9]);
            part(enc::JPEG, (8, 8), m)
        }),
        (0u16..4, 0u16..5, 0u8..3).prop_map(|(x, y, n)| {
            let event = if x == 1 {
                ServerEvent::ResizeAnswer(ResizeAnswer {
                    status: ResizeStatus(y),
                    width: 640,
                    height: 480,
                })
            } else {
                ServerEvent::DesktopSize {
                    width: 640,
                    height: 480,
                }
            };
            Part {
                rect: Rectangle {
                    x,
                    y,
                    width: 640,
                    height: 480,
                    encoding: enc::EXTENDED_DESKTOP_SIZE,
                },
                payload: screens(n),
                event: Some(event),
            }
        }),
        size().prop_map(|(w, h)| {
            let mask = usize::from(w).div_ceil(8) * usize::from(h);
            part(
                enc::CURSOR,
                (w, h),
                fill(usize::from(w) * usize::from(h) * 4 + mask),
            )
        }),
    ]
}

/// A Tight compact length.
fn compact(n: usize) -> Vec<u8> {
    let mut out = vec![(n & 0x7f) as u8];
    if n > 0x7f {
        out[0] |= 0x80;
        out.push((n >> 7 & 0x7f) as u8);
        if n > 0x3fff {
            out[1] |= 0x80;
            out.push((n >> 14) as u8);
        }
    }
    out
}

fn arb_sample() -> impl Strategy<Value = Sample> {
    prop_oneof![
        4 => prop::collection::vec(arb_part(), 0..4).prop_map(|parts| update(&parts)),
        1 => Just(Sample::message(K::Bell, vec![2])),
        1 => prop::collection::vec(any::<u8>(), 0..40).prop_map(|text| {
            let mut m = vec![3, 0, 0, 0];
            m.extend((text.len() as u32).to_be_bytes());
            m.extend(text);
            Sample::message(K::ServerCutText, m)
        }),
        1 => (0u16..5).prop_map(|n| {
            Sample::message(K::SetColourMapEntries, with(&[1, 0, 0, 0, 0, n as u8], 6 * usize::from(n)))
        }),
        1 => (0u8..=64).prop_map(|n| {
            Sample::message(K::ServerFence, with(&[248, 0, 0, 0, 0, 0, 0, 0, n], usize::from(n)))
        }),
    ]
}

proptest! {
    #[test]
    fn same_events_for_any_chunking(
        samples in prop::collection::vec(arb_sample(), 0..12),
        sizes in prop::collection::vec(1usize..64, 1..12),
    ) {
        let stream: Vec<u8> = samples.iter().flat_map(|s| s.bytes.clone()).collect();
        let events: Vec<ServerEvent> = samples.iter().flat_map(|s| s.events.clone()).collect();
        prop_assert_eq!(&frame(&[&stream]).unwrap(), &events);
        prop_assert_eq!(&frame(&chunked(&stream, &sizes)).unwrap(), &events);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_frame_consistently(
        bytes in prop::collection::vec(any::<u8>(), 0..512),
        sizes in prop::collection::vec(1usize..16, 1..8),
    ) {
        let mut whole = ServerFramer::new(format(RGB888));
        let mut pieces = ServerFramer::new(format(RGB888));
        prop_assert_eq!(
            frame_with(&mut whole, &[&bytes]),
            frame_with(&mut pieces, &chunked(&bytes, &sizes))
        );
        prop_assert_eq!(whole.at_boundary(), pieces.at_boundary());
    }
}
