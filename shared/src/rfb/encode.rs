//! Encoders for the client→server messages the relay writes itself, from the
//! structured input of `vnc:input` and `vnc:resize` events. Fixed-size messages come
//! back as arrays, so encoding them allocates nothing.

use super::message::message_type as mt;

/// Length of a KeyEvent.
pub const KEY_EVENT_LEN: usize = 8;
/// Length of a PointerEvent (the plain form).
pub const POINTER_EVENT_LEN: usize = 6;
/// Length of a SetDesktopSize with one screen.
pub const SET_DESKTOP_SIZE_LEN: usize = 24;
/// Length of ClientCutText before the text.
pub const CLIENT_CUT_TEXT_HEADER_LEN: usize = 8;

/// KeyEvent: `keysym` (an X11 keysym) pressed (`down`) or released.
pub fn encode_key_event(down: bool, keysym: u32) -> [u8; KEY_EVENT_LEN] {
    let [k0, k1, k2, k3] = keysym.to_be_bytes();
    [mt::KEY_EVENT, u8::from(down), 0, 0, k0, k1, k2, k3]
}

/// PointerEvent: the pointer at (`x`, `y`) with buttons 1–8 in bits 0–7 of `buttons`.
///
/// Bit 7 is button 8 in plain RFB, but the ExtendedMouseButtons marker once the
/// browser has listed that extension ([`ClientFramer::extended_mouse_buttons`]); the
/// relay must clear it then, or the server would read a 7-byte message.
///
/// [`ClientFramer::extended_mouse_buttons`]: super::ClientFramer::extended_mouse_buttons
pub fn encode_pointer_event(x: u16, y: u16, buttons: u8) -> [u8; POINTER_EVENT_LEN] {
    let [x0, x1] = x.to_be_bytes();
    let [y0, y1] = y.to_be_bytes();
    [mt::POINTER_EVENT, buttons, x0, x1, y0, y1]
}

/// SetDesktopSize asking for `width` × `height`, laid out as one screen covering the
/// framebuffer. The screen id is 0 and the flags are 0: the relay reads only the
/// status and size of the server's ExtendedDesktopSize, not its screens, so it cannot
/// echo the id the server uses; single-screen servers (Xvnc, x11vnc with xrandr)
/// accept any id for the only screen.
/// A server that did not announce ExtendedDesktopSize must not be sent this; servers
/// answer a zero size with an error rectangle, so the relay should refuse it first.
pub fn encode_set_desktop_size(width: u16, height: u16) -> [u8; SET_DESKTOP_SIZE_LEN] {
    let [w0, w1] = width.to_be_bytes();
    let [h0, h1] = height.to_be_bytes();
    [
        mt::SET_DESKTOP_SIZE,
        0, // padding
        w0,
        w1,
        h0,
        h1,
        1, // number of screens
        0, // padding
        0, // screen id
        0,
        0,
        0,
        0, // x
        0,
        0, // y
        0,
        w0,
        w1,
        h0,
        h1,
        0, // flags
        0,
        0,
        0,
    ]
}

/// ClientCutText carrying `text` in RFB's basic clipboard encoding, ISO-8859-1 with
/// bare LF line ends (RFC 6143 §7.5.6). `\r\n` becomes `\n`. A character outside
/// Latin-1 (U+0100 and above: most scripts, emoji) cannot be sent this way and becomes
/// `?`; full Unicode needs the Extended Clipboard, which the browser's own client
/// negotiates with the server. Text is cut at `u32::MAX` bytes; the relay bounds it far
/// lower where it accepts the event.
pub fn encode_client_cut_text(text: &str) -> Vec<u8> {
    let mut message = Vec::with_capacity(CLIENT_CUT_TEXT_HEADER_LEN + text.len());
    message.extend_from_slice(&[mt::CLIENT_CUT_TEXT, 0, 0, 0, 0, 0, 0, 0]);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if message.len() - CLIENT_CUT_TEXT_HEADER_LEN == u32::MAX as usize {
            break;
        }
        if c == '\r' && chars.peek() == Some(&'\n') {
            continue;
        }
        message.push(u8::try_from(u32::from(c)).unwrap_or(b'?'));
    }
    let len = u32::try_from(message.len() - CLIENT_CUT_TEXT_HEADER_LEN).unwrap_or(u32::MAX);
    if let Some(field) = message.get_mut(4..8) {
        field.copy_from_slice(&len.to_be_bytes());
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_event_bytes() {
        assert_eq!(
            encode_key_event(true, 0xff0d),
            [4, 1, 0, 0, 0x00, 0x00, 0xff, 0x0d]
        );
        assert_eq!(encode_key_event(false, 0x61), [4, 0, 0, 0, 0, 0, 0, 0x61]);
    }

    #[test]
    fn pointer_event_bytes() {
        assert_eq!(
            encode_pointer_event(0x0102, 0x0304, 0b101),
            [5, 5, 1, 2, 3, 4]
        );
    }

    #[test]
    fn set_desktop_size_bytes() {
        let m = encode_set_desktop_size(1920, 1080);
        assert_eq!(&m[..8], [251, 0, 0x07, 0x80, 0x04, 0x38, 1, 0]);
        assert_eq!(&m[8..12], [0, 0, 0, 0], "screen id");
        assert_eq!(&m[12..16], [0, 0, 0, 0], "screen at 0,0");
        assert_eq!(&m[16..20], [0x07, 0x80, 0x04, 0x38], "screen size");
        assert_eq!(&m[20..], [0, 0, 0, 0], "flags");
    }

    #[test]
    fn cut_text_is_latin1_with_lf() {
        assert_eq!(
            encode_client_cut_text("héllo\r\nwörld"),
            [&[6, 0, 0, 0, 0, 0, 0, 11][..], b"h\xe9llo\nw\xf6rld"].concat()
        );
    }

    #[test]
    fn cut_text_replaces_what_latin1_lacks() {
        let m = encode_client_cut_text("€1 ✓ 😀\r");
        assert_eq!(&m[..8], [6, 0, 0, 0, 0, 0, 0, 7]);
        // A lone CR is kept; only CRLF pairs are folded.
        assert_eq!(&m[8..], b"?1 ? ?\r");
        assert_eq!(encode_client_cut_text(""), [6, 0, 0, 0, 0, 0, 0, 0]);
    }
}
