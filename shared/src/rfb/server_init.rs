//! ServerInit (RFC 6143 §7.3.2): framebuffer size, pixel format and desktop name, the
//! last message of the handshake.

use super::wire::{be_u16, be_u32, printable};

/// Length of ServerInit before the desktop name.
pub const SERVER_INIT_HEADER_LEN: usize = 24;

/// Longest desktop name the relay accepts, in bytes. Real servers send a few dozen
/// bytes (`user@host:1`); the cap keeps a hostile server from making the relay buffer
/// up to 4 GiB before the session starts.
pub const MAX_DESKTOP_NAME_LEN: u32 = 4096;

/// A PIXEL_FORMAT structure (RFC 6143 §7.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PixelFormat {
    pub bits_per_pixel: u8,
    pub depth: u8,
    pub big_endian: bool,
    pub true_colour: bool,
    pub red_max: u16,
    pub green_max: u16,
    pub blue_max: u16,
    pub red_shift: u8,
    pub green_shift: u8,
    pub blue_shift: u8,
}

impl PixelFormat {
    /// Length of PIXEL_FORMAT on the wire, padding included.
    pub const LEN: usize = 16;

    /// Reads the 16 wire bytes. Flags are "non-zero is true", as the RFC says.
    pub fn from_bytes(b: &[u8; Self::LEN]) -> PixelFormat {
        PixelFormat {
            bits_per_pixel: b[0],
            depth: b[1],
            big_endian: b[2] != 0,
            true_colour: b[3] != 0,
            red_max: u16::from_be_bytes([b[4], b[5]]),
            green_max: u16::from_be_bytes([b[6], b[7]]),
            blue_max: u16::from_be_bytes([b[8], b[9]]),
            red_shift: b[10],
            green_shift: b[11],
            blue_shift: b[12],
        }
    }

    /// The 16 wire bytes, padding zeroed.
    pub fn to_bytes(&self) -> [u8; Self::LEN] {
        let [rh, rl] = self.red_max.to_be_bytes();
        let [gh, gl] = self.green_max.to_be_bytes();
        let [bh, bl] = self.blue_max.to_be_bytes();
        [
            self.bits_per_pixel,
            self.depth,
            u8::from(self.big_endian),
            u8::from(self.true_colour),
            rh,
            rl,
            gh,
            gl,
            bh,
            bl,
            self.red_shift,
            self.green_shift,
            self.blue_shift,
            0,
            0,
            0,
        ]
    }
}

/// What the server said in ServerInit. The relay forwards the message unchanged; this
/// is for logs and for whoever needs the framebuffer size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInit {
    pub width: u16,
    pub height: u16,
    pub pixel_format: PixelFormat,
    /// The desktop name, made printable (lossy UTF-8, control characters as spaces).
    pub name: String,
}

/// What the front of a server buffer holds, as far as ServerInit goes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Parsed {
    /// More bytes are needed.
    Incomplete,
    /// The name length field is over [`MAX_DESKTOP_NAME_LEN`].
    NameTooLong(u32),
    /// A whole ServerInit, `len` bytes long.
    Complete { init: ServerInit, len: usize },
}

impl ServerInit {
    /// Parses a ServerInit at the start of `buf`, rejecting an oversized name as soon as
    /// its length field arrives.
    pub(crate) fn parse(buf: &[u8]) -> Parsed {
        let Some(name_len) = be_u32(buf, 20) else {
            return Parsed::Incomplete;
        };
        if name_len > MAX_DESKTOP_NAME_LEN {
            return Parsed::NameTooLong(name_len);
        }
        // Bounded by the check above, so this cannot overflow.
        let len = SERVER_INIT_HEADER_LEN + name_len as usize;
        let (Some(width), Some(height), Some(format), Some(name)) = (
            be_u16(buf, 0),
            be_u16(buf, 2),
            buf.get(4..20).and_then(|b| <&[u8; 16]>::try_from(b).ok()),
            buf.get(SERVER_INIT_HEADER_LEN..len),
        ) else {
            return Parsed::Incomplete;
        };
        let init = ServerInit {
            width,
            height,
            pixel_format: PixelFormat::from_bytes(format),
            name: printable(name),
        };
        Parsed::Complete { init, len }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 32 bpp little-endian true colour, the format most servers announce.
    const RGB888: [u8; 16] = [32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0];

    fn server_init(width: u16, height: u16, name: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend(width.to_be_bytes());
        m.extend(height.to_be_bytes());
        m.extend(RGB888);
        m.extend((name.len() as u32).to_be_bytes());
        m.extend(name);
        m
    }

    #[test]
    fn parses_whole_message() {
        let bytes = server_init(1024, 768, b"desk\x07top");
        let Parsed::Complete { init, len } = ServerInit::parse(&bytes) else {
            panic!("not parsed");
        };
        assert_eq!(len, bytes.len());
        assert_eq!((init.width, init.height), (1024, 768));
        assert_eq!(init.name, "desk top");
        assert_eq!(init.pixel_format.bits_per_pixel, 32);
        assert!(init.pixel_format.true_colour && !init.pixel_format.big_endian);
        assert_eq!(init.pixel_format.to_bytes(), RGB888);
    }

    #[test]
    fn waits_for_every_byte() {
        let bytes = server_init(800, 600, b"name");
        for cut in 0..bytes.len() {
            assert_eq!(
                ServerInit::parse(&bytes[..cut]),
                Parsed::Incomplete,
                "{cut}"
            );
        }
    }

    #[test]
    fn refuses_long_name_from_the_length_field() {
        let mut bytes = server_init(1, 1, b"");
        bytes[20..24].copy_from_slice(&(MAX_DESKTOP_NAME_LEN + 1).to_be_bytes());
        assert_eq!(
            ServerInit::parse(&bytes),
            Parsed::NameTooLong(MAX_DESKTOP_NAME_LEN + 1)
        );
    }
}
