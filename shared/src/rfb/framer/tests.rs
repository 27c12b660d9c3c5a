use proptest::prelude::*;

use super::*;
use crate::rfb::chunked::chunked;
use crate::rfb::encode::{
    encode_client_cut_text, encode_key_event, encode_pointer_event, encode_set_desktop_size,
};
use MessageKind::*;

/// Frames `chunks` in order and puts the messages back together (carried bytes
/// first), checking the span invariants on the way.
fn frame(
    framer: &mut ClientFramer,
    chunks: &[&[u8]],
) -> Result<Vec<(MessageKind, Vec<u8>)>, FrameError> {
    let mut messages: Vec<(MessageKind, Vec<u8>)> = Vec::new();
    let mut open = false;
    for chunk in chunks {
        let mut start = 0;
        // By hand rather than with `spans`, to look at the framer between spans.
        while let Some(span) = framer.next_span(&chunk[start..])? {
            assert!(
                span.len > 0 || !span.carried().is_empty(),
                "spans are never empty"
            );
            let range = start..start + span.len;
            start = range.end;
            assert_eq!(span.starts_message, !open, "{span:?}");
            if span.starts_message {
                messages.push((span.kind, Vec::new()));
            }
            let (kind, bytes) = messages.last_mut().expect("a message is open");
            assert_eq!(*kind, span.kind, "kind never changes within a message");
            bytes.extend_from_slice(span.carried());
            bytes.extend_from_slice(&chunk[range]);
            open = !span.ends_message;
            assert_eq!(framer.at_boundary(), span.ends_message);
        }
    }
    assert!(!open || !framer.at_boundary());
    Ok(messages)
}

fn frame_one(chunks: &[&[u8]]) -> Result<Vec<(MessageKind, Vec<u8>)>, FrameError> {
    frame(&mut ClientFramer::new(FramerLimits::default()), chunks)
}

fn set_encodings(encodings: &[i32]) -> Vec<u8> {
    let mut m = vec![2, 0];
    m.extend((encodings.len() as u16).to_be_bytes());
    for e in encodings {
        m.extend(e.to_be_bytes());
    }
    m
}

/// One sample of every kind, and of every variant of a kind's layout.
fn samples() -> Vec<(MessageKind, Vec<u8>)> {
    let mut gii_create = vec![253, 0x82, 0, 56];
    gii_create.extend(b"pen\0");
    gii_create.resize(4 + 56, 0);
    vec![
        (
            SetPixelFormat,
            [
                &[0, 0, 0, 0][..],
                &[32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0],
            ]
            .concat(),
        ),
        (SetEncodings, set_encodings(&[7, 1, 0, -223])),
        (SetEncodings, set_encodings(&[])),
        (FramebufferUpdateRequest, vec![3, 1, 0, 0, 0, 0, 4, 0, 3, 0]),
        (KeyEvent, encode_key_event(true, 0xff0d).to_vec()),
        (PointerEvent, encode_pointer_event(10, 20, 0xff).to_vec()),
        (ClientCutText, encode_client_cut_text("hello")),
        (ClientCutText, vec![6, 0, 0, 0, 0, 0, 0, 0]),
        // Extended Clipboard caps: length -4 (0xfffffffc), then 4 flag bytes.
        (
            ClientCutText,
            vec![6, 0, 0, 0, 0xff, 0xff, 0xff, 0xfc, 1, 0, 0, 1],
        ),
        (
            EnableContinuousUpdates,
            vec![150, 1, 0, 0, 0, 0, 4, 0, 3, 0],
        ),
        (
            ClientFence,
            vec![248, 0, 0, 0, 0x80, 0, 0, 3, 4, 1, 2, 3, 4],
        ),
        (ClientFence, vec![248, 0, 0, 0, 0, 0, 0, 0, 0]),
        (Xvp, vec![250, 0, 1, 2]),
        (SetDesktopSize, encode_set_desktop_size(800, 600).to_vec()),
        (
            SetDesktopSize,
            [&[251, 0, 7, 128, 2, 0, 2, 0][..], &[9; 32]].concat(),
        ),
        (GiiVersion, vec![253, 1, 2, 0, 1, 0]),
        (GiiVersion, vec![253, 0x81, 0, 2, 0, 1]),
        (
            GiiEvents,
            [
                &[253, 0x80, 0, 12][..],
                &[12, 10, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1],
            ]
            .concat(),
        ),
        (GiiDeviceCreation, gii_create),
        (GiiDeviceDestruction, vec![253, 3, 4, 0, 1, 0, 0, 0]),
        (
            QemuExtendedKeyEvent,
            vec![255, 0, 0, 1, 0, 0, 0, 0x61, 0, 0, 0, 0x1e],
        ),
        (QemuAudio, vec![255, 1, 0, 0]),
        (QemuAudio, vec![255, 1, 0, 1]),
        (QemuAudio, vec![255, 1, 0, 2, 3, 2, 0, 0, 0xac, 0x44]),
    ]
}

#[test]
fn every_kind_frames_as_one_message() {
    for (kind, bytes) in samples() {
        assert_eq!(
            frame_one(&[&bytes]),
            Ok(vec![(kind, bytes.clone())]),
            "{kind}"
        );
        assert_eq!(kind.message_type(), bytes[0]);
    }
}

#[test]
fn every_kind_survives_every_split() {
    for (kind, bytes) in samples() {
        for cut in 0..=bytes.len() {
            let (a, b) = bytes.split_at(cut);
            assert_eq!(
                frame_one(&[a, b]),
                Ok(vec![(kind, bytes.clone())]),
                "{kind} cut {cut}"
            );
        }
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(
            frame_one(&singles),
            Ok(vec![(kind, bytes.clone())]),
            "{kind} bytewise"
        );
    }
}

#[test]
fn many_messages_in_one_chunk() {
    let all = samples();
    let stream: Vec<u8> = all.iter().flat_map(|(_, b)| b.clone()).collect();
    assert_eq!(frame_one(&[&stream]), Ok(all));
}

#[test]
fn lone_qemu_type_byte_is_carried_into_the_next_span() {
    let mut framer = ClientFramer::new(FramerLimits::default());
    assert_eq!(framer.next_span(&[255]), Ok(None));
    // Nothing of the message was handed out, so the relay may still write its own.
    assert!(framer.at_boundary());
    let span = framer
        .next_span(&[0, 0, 1, 0, 0, 0, 0x61, 0, 0, 0, 0x1e, 4])
        .unwrap()
        .unwrap();
    assert_eq!(span.kind, QemuExtendedKeyEvent);
    assert_eq!(span.carried(), [255]);
    assert_eq!(span.len, 11);
    assert!(span.starts_message && span.ends_message);
    assert!(framer.at_boundary());

    // The same for gii, whose sub-type byte also holds the endianness.
    assert_eq!(framer.next_span(&[253]), Ok(None));
    let span = framer.next_span(&[0x81, 0, 2]).unwrap().unwrap();
    assert_eq!(
        (span.kind, span.len, span.carried()),
        (GiiVersion, 3, &[253][..])
    );
    assert!(!span.ends_message && !framer.at_boundary());
}

#[test]
fn empty_input_gives_nothing() {
    let mut framer = ClientFramer::new(FramerLimits::default());
    assert_eq!(framer.next_span(&[]), Ok(None));
    assert_eq!(framer.spans(&[]).count(), 0);
    assert!(framer.at_boundary());
}

#[test]
fn unknown_types_are_errors() {
    for t in [1u8, 7, 8, 9, 127, 149, 151, 249, 252, 254] {
        assert_eq!(
            frame_one(&[&[t, 0, 0, 0]]),
            Err(FrameError::UnknownMessageType(t))
        );
    }
    assert_eq!(
        frame_one(&[&[255, 2, 0, 0]]),
        Err(FrameError::UnknownQemuSubtype(2))
    );
    assert_eq!(
        frame_one(&[&[253, 0x84, 0, 0]]),
        Err(FrameError::UnknownGiiSubtype(0x84))
    );
    assert_eq!(
        frame_one(&[&[255, 1, 0, 3]]),
        Err(FrameError::UnknownQemuAudioOperation(3))
    );
    // Found after a carried type byte too.
    assert_eq!(
        frame_one(&[&[255], &[9]]),
        Err(FrameError::UnknownQemuSubtype(9))
    );
}

#[test]
fn errors_are_sticky() {
    let mut framer = ClientFramer::new(FramerLimits::default());
    let good = encode_key_event(true, 1);
    assert_eq!(
        framer.next_span(&[1]),
        Err(FrameError::UnknownMessageType(1))
    );
    assert_eq!(
        framer.next_span(&good),
        Err(FrameError::UnknownMessageType(1))
    );
    assert!(!framer.at_boundary());
    let items: Vec<_> = framer.spans(&good).collect();
    assert_eq!(items, [Err(FrameError::UnknownMessageType(1))]);
}

#[test]
fn limits_are_enforced_from_the_header() {
    let limits = FramerLimits {
        max_cut_text: 10,
        max_encodings: 2,
    };
    let frame_with = |bytes: &[u8]| frame(&mut ClientFramer::new(limits), &[bytes]);
    assert!(frame_with(&encode_client_cut_text("0123456789")).is_ok());
    // The length field alone is enough to refuse.
    assert_eq!(
        frame_with(&[6, 0, 0, 0, 0, 0, 0, 11]),
        Err(FrameError::CutTextTooLong { len: 11, max: 10 })
    );
    assert_eq!(
        frame_with(&[6, 0, 0, 0, 0x80, 0, 0, 0]),
        Err(FrameError::CutTextTooLong {
            len: 1 << 31,
            max: 10
        })
    );
    assert!(frame_with(&set_encodings(&[1, 2])).is_ok());
    assert_eq!(
        frame_with(&[2, 0, 0, 3]),
        Err(FrameError::TooManyEncodings { count: 3, max: 2 })
    );
    assert_eq!(
        frame_one(&[&[248, 0, 0, 0, 0, 0, 0, 0, 65]]),
        Err(FrameError::FencePayloadTooLong(65))
    );
    let fence64 = [&[248, 0, 0, 0, 0, 0, 0, 0, 64][..], &[0; 64]].concat();
    assert!(frame_one(&[&fence64]).is_ok());
}

#[test]
fn default_limits_allow_a_large_paste() {
    let text = "x".repeat(DEFAULT_MAX_CUT_TEXT as usize);
    let message = encode_client_cut_text(&text);
    let framed = frame_one(&[&message[..100], &message[100..]]).unwrap();
    assert_eq!(framed.len(), 1);
    assert_eq!(framed[0].1.len(), message.len());
}

#[test]
fn extended_mouse_buttons_follow_the_last_set_encodings() {
    let mut framer = ClientFramer::new(FramerLimits::default());
    let marked = [5, 0x81, 0, 1, 0, 2, 0x01];
    // Before -316, bit 7 is button 8 and the message is 6 bytes.
    let framed = frame(&mut framer, &[&marked[..6]]).unwrap();
    assert_eq!(framed, [(PointerEvent, marked[..6].to_vec())]);

    // -316 split across chunks still counts, once the message is complete.
    let enc = set_encodings(&[0, -316, 7]);
    frame(&mut framer, &[&enc[..9], &enc[9..]]).unwrap();
    assert!(framer.extended_mouse_buttons());
    let framed = frame(&mut framer, &[&marked, &[5, 0x01, 0, 1, 0, 2]]).unwrap();
    assert_eq!(
        framed,
        [
            (PointerEvent, marked.to_vec()),
            (PointerEvent, vec![5, 0x01, 0, 1, 0, 2])
        ]
    );

    // A later SetEncodings without it turns it off again.
    frame(&mut framer, &[&set_encodings(&[0, 7])]).unwrap();
    assert!(!framer.extended_mouse_buttons());
    let framed = frame(&mut framer, &[&marked[..6]]).unwrap();
    assert_eq!(framed, [(PointerEvent, marked[..6].to_vec())]);
}

#[test]
fn pixel_format_follows_the_last_complete_set_pixel_format() {
    let mut framer = ClientFramer::new(FramerLimits::default());
    assert_eq!(framer.pixel_format(), None);
    let rgb565 = [16, 16, 0, 1, 0, 31, 0, 63, 0, 31, 11, 5, 0, 0, 0, 0];
    let message = [&[0, 0, 0, 0][..], &rgb565].concat();
    for cut in 0..message.len() {
        let mut framer = ClientFramer::new(FramerLimits::default());
        framer
            .spans(&message[..cut])
            .for_each(|s| assert!(s.is_ok()));
        assert_eq!(framer.pixel_format(), None, "cut {cut}");
        framer
            .spans(&message[cut..])
            .for_each(|s| assert!(s.is_ok()));
        assert_eq!(
            framer.pixel_format(),
            Some(PixelFormat::from_bytes(&rgb565)),
            "cut {cut}"
        );
    }
    // The last one counts; other messages leave it alone.
    let rgb888 = [32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0];
    let stream = [
        &message[..],
        &[0, 1, 2, 3],
        &rgb888,
        &encode_key_event(true, 1),
    ]
    .concat();
    frame(&mut framer, &[&stream]).unwrap();
    assert_eq!(
        framer.pixel_format(),
        Some(PixelFormat::from_bytes(&rgb888))
    );
}

#[test]
fn view_filter_keeps_only_allowed_messages() {
    let all = samples();
    let stream: Vec<u8> = all.iter().flat_map(|(_, b)| b.clone()).collect();
    let mut framer = ClientFramer::new(FramerLimits::default());
    let mut forwarded = Vec::new();
    for chunk in stream.chunks(5) {
        for item in framer.spans(chunk) {
            let (range, span) = item.unwrap();
            if span.kind.allowed_for_view() {
                forwarded.extend_from_slice(span.carried());
                forwarded.extend_from_slice(&chunk[range]);
            }
        }
    }
    let expected: Vec<u8> = all
        .iter()
        .filter(|(k, _)| k.allowed_for_view())
        .flat_map(|(_, b)| b.clone())
        .collect();
    assert_eq!(forwarded, expected);
}

/// A valid client message with random contents, for the properties below.
#[derive(Debug, Clone)]
enum Gen {
    Fixed(MessageKind, Vec<u8>),
    Encodings(Vec<i32>),
    Pointer {
        mask: u8,
        x: u16,
        y: u16,
        high: u8,
    },
    CutText {
        text: Vec<u8>,
        extended: bool,
    },
    Fence(Vec<u8>),
    DesktopSize(u8),
    Gii {
        sub: u8,
        big_endian: bool,
        body: Vec<u8>,
    },
    QemuAudio(u16),
}

fn arb_gen() -> impl Strategy<Value = Gen> {
    let fixed = prop_oneof![
        Just((SetPixelFormat, 20usize)),
        Just((FramebufferUpdateRequest, 10)),
        Just((KeyEvent, 8)),
        Just((EnableContinuousUpdates, 10)),
        Just((Xvp, 4)),
        Just((QemuExtendedKeyEvent, 12)),
    ]
    .prop_flat_map(|(kind, len)| {
        prop::collection::vec(any::<u8>(), len - 1).prop_map(move |rest| Gen::Fixed(kind, rest))
    });
    let encoding = prop_oneof![Just(-316i32), any::<i32>()];
    prop_oneof![
        fixed,
        prop::collection::vec(encoding, 0..6).prop_map(Gen::Encodings),
        (any::<u8>(), any::<u16>(), any::<u16>(), any::<u8>())
            .prop_map(|(mask, x, y, high)| Gen::Pointer { mask, x, y, high }),
        (prop::collection::vec(any::<u8>(), 0..40), any::<bool>())
            .prop_map(|(text, extended)| Gen::CutText { text, extended }),
        prop::collection::vec(any::<u8>(), 0..=64).prop_map(Gen::Fence),
        (0u8..4).prop_map(Gen::DesktopSize),
        (
            0u8..4,
            any::<bool>(),
            prop::collection::vec(any::<u8>(), 0..40)
        )
            .prop_map(|(sub, big_endian, body)| Gen::Gii {
                sub,
                big_endian,
                body
            }),
        (0u16..3).prop_map(Gen::QemuAudio),
    ]
}

/// The wire bytes of `gens` and the messages a correct framer finds in them, tracking
/// ExtendedMouseButtons as a server would.
fn serialize(gens: &[Gen]) -> (Vec<u8>, Vec<(MessageKind, Vec<u8>)>) {
    let mut extended = false;
    let mut messages = Vec::new();
    for g in gens {
        let (kind, bytes) = match g {
            Gen::Fixed(kind, rest) => {
                let mut m = vec![kind.message_type()];
                if *kind == QemuExtendedKeyEvent {
                    m.push(0);
                    m.extend(&rest[1..]);
                } else {
                    m.extend(rest);
                }
                (*kind, m)
            }
            Gen::Encodings(list) => {
                extended = list.contains(&-316);
                (SetEncodings, set_encodings(list))
            }
            Gen::Pointer { mask, x, y, high } => {
                let mut m = encode_pointer_event(*x, *y, *mask).to_vec();
                if extended && mask & 0x80 != 0 {
                    m.push(*high);
                }
                (PointerEvent, m)
            }
            Gen::CutText { text, extended } => {
                let len = text.len() as i32;
                let len = if *extended { -len } else { len };
                let mut m = vec![6, 0, 0, 0];
                m.extend(len.to_be_bytes());
                m.extend(text);
                (ClientCutText, m)
            }
            Gen::Fence(payload) => {
                let mut m = vec![248, 0, 0, 0, 0, 0, 0, 1, payload.len() as u8];
                m.extend(payload);
                (ClientFence, m)
            }
            Gen::DesktopSize(screens) => {
                let mut m = vec![251, 0, 1, 0, 1, 0, *screens, 0];
                m.extend(std::iter::repeat_n(3, 16 * usize::from(*screens)));
                (SetDesktopSize, m)
            }
            Gen::Gii {
                sub,
                big_endian,
                body,
            } => {
                let len = body.len() as u16;
                let mut m = vec![253, sub | if *big_endian { 0x80 } else { 0 }];
                m.extend(if *big_endian {
                    len.to_be_bytes()
                } else {
                    len.to_le_bytes()
                });
                m.extend(body);
                let kind = [
                    GiiEvents,
                    GiiVersion,
                    GiiDeviceCreation,
                    GiiDeviceDestruction,
                ][usize::from(*sub)];
                (kind, m)
            }
            Gen::QemuAudio(op) => {
                let mut m = vec![255, 1];
                m.extend(op.to_be_bytes());
                if *op == 2 {
                    m.extend([3, 2, 0, 0, 0xac, 0x44]);
                }
                (QemuAudio, m)
            }
        };
        messages.push((kind, bytes));
    }
    let stream = messages.iter().flat_map(|(_, b)| b.clone()).collect();
    (stream, messages)
}

proptest! {
    #[test]
    fn same_messages_for_any_chunking(
        gens in prop::collection::vec(arb_gen(), 0..24),
        sizes in prop::collection::vec(1usize..24, 1..12),
    ) {
        let (stream, expected) = serialize(&gens);
        prop_assert_eq!(&frame_one(&[&stream]).unwrap(), &expected);
        prop_assert_eq!(&frame_one(&chunked(&stream, &sizes)).unwrap(), &expected);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_frame_consistently(
        bytes in prop::collection::vec(any::<u8>(), 0..256),
        sizes in prop::collection::vec(1usize..16, 1..8),
    ) {
        // Whatever the bytes, chunking must not change the outcome up to an error.
        let whole = frame_one(&[&bytes]);
        let pieces = frame_one(&chunked(&bytes, &sizes));
        match (whole, pieces) {
            (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
            (Err(a), Err(b)) => prop_assert_eq!(a, b),
            (a, b) => prop_assert!(false, "whole {:?} vs chunked {:?}", a, b),
        }
    }

    #[test]
    fn encoded_input_frames_as_its_kind(
        down in any::<bool>(),
        keysym in any::<u32>(),
        x in any::<u16>(),
        y in any::<u16>(),
        buttons in any::<u8>(),
        text in ".{0,64}",
        width in any::<u16>(),
        height in any::<u16>(),
    ) {
        let cut = encode_client_cut_text(&text);
        let expected_cut_len = 8 + text.replace("\r\n", "\n").chars().count();
        prop_assert_eq!(cut.len(), expected_cut_len);
        let key = encode_key_event(down, keysym);
        let pointer = encode_pointer_event(x, y, buttons);
        let size = encode_set_desktop_size(width, height);
        let stream = [&key[..], &pointer, &cut, &size].concat();
        let framed = frame_one(&[&stream]).unwrap();
        prop_assert_eq!(
            framed,
            vec![
                (KeyEvent, key.to_vec()),
                (PointerEvent, pointer.to_vec()),
                (ClientCutText, cut),
                (SetDesktopSize, size.to_vec()),
            ]
        );
    }
}
