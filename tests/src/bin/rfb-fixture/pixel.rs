//! The RFB PIXEL_FORMAT structure (RFC 6143 §7.4) and conversion from the fixture's
//! internal 8-bit RGB to whatever true-colour format a client asked for.

use serde_json::{Value, json};

/// A true-colour pixel format we can encode into (validated by [`PixelFormat::parse`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PixelFormat {
    /// Bits per pixel on the wire: 8, 16 or 32.
    pub bits_per_pixel: u8,
    /// Informational only; the maxes and shifts say where the bits go.
    pub depth: u8,
    /// Byte order of multi-byte pixels.
    pub big_endian: bool,
    pub red_max: u16,
    pub green_max: u16,
    pub blue_max: u16,
    pub red_shift: u8,
    pub green_shift: u8,
    pub blue_shift: u8,
}

/// Why a client's SetPixelFormat cannot be honoured.
#[derive(Debug, PartialEq, Eq)]
pub enum PixelFormatError {
    /// Colour-map formats would need SetColourMapEntries; the fixture only does true colour.
    NotTrueColour,
    UnsupportedBitsPerPixel(u8),
    /// `max << shift` does not fit in the pixel.
    ChannelOutOfRange(&'static str),
}

impl std::fmt::Display for PixelFormatError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PixelFormatError::NotTrueColour => {
                write!(f, "colour-map pixel formats are not supported")
            }
            PixelFormatError::UnsupportedBitsPerPixel(bpp) => {
                write!(f, "bits-per-pixel {bpp} is not 8, 16 or 32")
            }
            PixelFormatError::ChannelOutOfRange(c) => {
                write!(f, "{c} max << shift does not fit in the pixel")
            }
        }
    }
}

impl PixelFormat {
    /// The server's native format: 32 bpp, depth 24, little-endian, 0x00RRGGBB.
    pub const SERVER: PixelFormat = PixelFormat {
        bits_per_pixel: 32,
        depth: 24,
        big_endian: false,
        red_max: 255,
        green_max: 255,
        blue_max: 255,
        red_shift: 16,
        green_shift: 8,
        blue_shift: 0,
    };

    /// Parses the 16-byte wire structure, rejecting formats we cannot encode.
    pub fn parse(b: &[u8; 16]) -> Result<Self, PixelFormatError> {
        let format = PixelFormat {
            bits_per_pixel: b[0],
            depth: b[1],
            big_endian: b[2] != 0,
            red_max: u16::from_be_bytes([b[4], b[5]]),
            green_max: u16::from_be_bytes([b[6], b[7]]),
            blue_max: u16::from_be_bytes([b[8], b[9]]),
            red_shift: b[10],
            green_shift: b[11],
            blue_shift: b[12],
        };
        if b[3] == 0 {
            return Err(PixelFormatError::NotTrueColour);
        }
        if !matches!(format.bits_per_pixel, 8 | 16 | 32) {
            return Err(PixelFormatError::UnsupportedBitsPerPixel(
                format.bits_per_pixel,
            ));
        }
        let limit = (1u64 << format.bits_per_pixel) - 1;
        for (name, max, shift) in [
            ("red", format.red_max, format.red_shift),
            ("green", format.green_max, format.green_shift),
            ("blue", format.blue_max, format.blue_shift),
        ] {
            let fits = u64::from(max)
                .checked_shl(u32::from(shift))
                .is_some_and(|v| v <= limit);
            if !fits {
                return Err(PixelFormatError::ChannelOutOfRange(name));
            }
        }
        Ok(format)
    }

    /// The 16-byte wire structure (padding zeroed).
    pub fn to_bytes(self) -> [u8; 16] {
        let [rh, rl] = self.red_max.to_be_bytes();
        let [gh, gl] = self.green_max.to_be_bytes();
        let [bh, bl] = self.blue_max.to_be_bytes();
        [
            self.bits_per_pixel,
            self.depth,
            u8::from(self.big_endian),
            1, // true colour
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

    /// Bytes per pixel on the wire.
    pub fn bytes_per_pixel(self) -> usize {
        usize::from(self.bits_per_pixel / 8)
    }

    /// Appends one pixel of colour `rgb` (8 bits per channel) in this format.
    pub fn encode(self, rgb: [u8; 3], out: &mut Vec<u8>) {
        // u64 so every shift `parse` accepts (< 64, even with a max of 0) is defined.
        let value = (scale(rgb[0], self.red_max) << self.red_shift)
            | (scale(rgb[1], self.green_max) << self.green_shift)
            | (scale(rgb[2], self.blue_max) << self.blue_shift);
        match (self.bits_per_pixel, self.big_endian) {
            // Validation guarantees `value` fits, so the casts drop only zero bits.
            (8, _) => out.push(value as u8),
            (16, false) => out.extend_from_slice(&(value as u16).to_le_bytes()),
            (16, true) => out.extend_from_slice(&(value as u16).to_be_bytes()),
            (_, false) => out.extend_from_slice(&(value as u32).to_le_bytes()),
            (_, true) => out.extend_from_slice(&(value as u32).to_be_bytes()),
        }
    }

    /// Fields for the SetPixelFormat log line.
    pub fn log_fields(self) -> Value {
        json!({
            "bpp": self.bits_per_pixel,
            "depth": self.depth,
            "big_endian": self.big_endian,
            "red_max": self.red_max,
            "green_max": self.green_max,
            "blue_max": self.blue_max,
            "red_shift": self.red_shift,
            "green_shift": self.green_shift,
            "blue_shift": self.blue_shift,
        })
    }
}

/// Scales an 8-bit channel to `0..=max`, rounding to nearest.
fn scale(c: u8, max: u16) -> u64 {
    (u64::from(c) * u64::from(max) + 127) / 255
}

/// Decodes one pixel of `format` back to 8-bit RGB (tests use it to read updates).
#[cfg(test)]
pub fn decode(format: PixelFormat, bytes: &[u8]) -> [u8; 3] {
    let value = match (format.bits_per_pixel, format.big_endian) {
        (8, _) => u32::from(bytes[0]),
        (16, false) => u32::from(u16::from_le_bytes([bytes[0], bytes[1]])),
        (16, true) => u32::from(u16::from_be_bytes([bytes[0], bytes[1]])),
        (_, false) => u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
        (_, true) => u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
    };
    let channel = |shift: u8, max: u16| {
        let v = (value >> shift) & u32::from(max);
        if max == 0 {
            0
        } else {
            ((v * 255 + u32::from(max) / 2) / u32::from(max)) as u8
        }
    };
    [
        channel(format.red_shift, format.red_max),
        channel(format.green_shift, format.green_max),
        channel(format.blue_shift, format.blue_max),
    ]
}

/// RGB565, the usual 16-bit format (tests use it as a client-chosen format).
#[cfg(test)]
pub fn rgb565(big_endian: bool) -> PixelFormat {
    PixelFormat {
        bits_per_pixel: 16,
        depth: 16,
        big_endian,
        red_max: 31,
        green_max: 63,
        blue_max: 31,
        red_shift: 11,
        green_shift: 5,
        blue_shift: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// BGR233, the usual 8-bit true-colour format.
    fn bgr233() -> PixelFormat {
        PixelFormat {
            bits_per_pixel: 8,
            depth: 8,
            big_endian: false,
            red_max: 7,
            green_max: 7,
            blue_max: 3,
            red_shift: 0,
            green_shift: 3,
            blue_shift: 6,
        }
    }

    fn encoded(format: PixelFormat, rgb: [u8; 3]) -> Vec<u8> {
        let mut out = Vec::new();
        format.encode(rgb, &mut out);
        out
    }

    #[test]
    fn server_format_is_little_endian_xrgb() {
        assert_eq!(
            encoded(PixelFormat::SERVER, [0x12, 0x34, 0x56]),
            [0x56, 0x34, 0x12, 0]
        );
        let bytes = PixelFormat::SERVER.to_bytes();
        assert_eq!(
            bytes,
            [32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0]
        );
        assert_eq!(PixelFormat::parse(&bytes), Ok(PixelFormat::SERVER));
    }

    #[test]
    fn converts_to_32bpp_big_endian_with_other_shifts() {
        let format = PixelFormat {
            big_endian: true,
            red_shift: 0,
            green_shift: 8,
            blue_shift: 16,
            ..PixelFormat::SERVER
        };
        assert_eq!(encoded(format, [0x12, 0x34, 0x56]), [0, 0x56, 0x34, 0x12]);
    }

    #[test]
    fn converts_to_rgb565_both_endiannesses() {
        // Pure red: 31 << 11 = 0xF800.
        assert_eq!(encoded(rgb565(false), [255, 0, 0]), [0x00, 0xF8]);
        assert_eq!(encoded(rgb565(true), [255, 0, 0]), [0xF8, 0x00]);
        // Pure green: 63 << 5 = 0x07E0; pure blue: 31.
        assert_eq!(encoded(rgb565(true), [0, 255, 0]), [0x07, 0xE0]);
        assert_eq!(encoded(rgb565(false), [0, 0, 255]), [0x1F, 0x00]);
        // Mid grey rounds to nearest: 128*31/255 = 15.56 → 16, 128*63/255 = 31.6 → 32.
        let grey = (16u16 << 11) | (32 << 5) | 16;
        assert_eq!(encoded(rgb565(true), [128, 128, 128]), grey.to_be_bytes());
    }

    #[test]
    fn converts_to_bgr233() {
        assert_eq!(encoded(bgr233(), [255, 0, 0]), [0b0000_0111]);
        assert_eq!(encoded(bgr233(), [0, 255, 0]), [0b0011_1000]);
        assert_eq!(encoded(bgr233(), [0, 0, 255]), [0b1100_0000]);
        assert_eq!(encoded(bgr233(), [255, 255, 255]), [0xFF]);
    }

    #[test]
    fn round_trips_through_decode() {
        for format in [PixelFormat::SERVER, rgb565(false), rgb565(true), bgr233()] {
            for rgb in [
                [255, 0, 0],
                [0, 255, 0],
                [0, 0, 255],
                [0, 0, 0],
                [255, 255, 255],
            ] {
                let bytes = encoded(format, rgb);
                assert_eq!(bytes.len(), format.bytes_per_pixel());
                assert_eq!(decode(format, &bytes), rgb, "{format:?}");
            }
            assert_eq!(PixelFormat::parse(&format.to_bytes()), Ok(format));
        }
    }

    #[test]
    fn rejects_formats_it_cannot_encode() {
        let mut colour_map = PixelFormat::SERVER.to_bytes();
        colour_map[3] = 0;
        assert_eq!(
            PixelFormat::parse(&colour_map),
            Err(PixelFormatError::NotTrueColour)
        );

        let mut bpp24 = PixelFormat::SERVER.to_bytes();
        bpp24[0] = 24;
        assert_eq!(
            PixelFormat::parse(&bpp24),
            Err(PixelFormatError::UnsupportedBitsPerPixel(24))
        );

        let mut overflow = rgb565(false).to_bytes();
        overflow[10] = 12; // red 31 << 12 needs 17 bits
        assert_eq!(
            PixelFormat::parse(&overflow),
            Err(PixelFormatError::ChannelOutOfRange("red"))
        );

        let mut huge_shift = PixelFormat::SERVER.to_bytes();
        huge_shift[12] = 200;
        assert_eq!(
            PixelFormat::parse(&huge_shift),
            Err(PixelFormatError::ChannelOutOfRange("blue"))
        );

        // A channel with max 0 may sit anywhere; encoding it must not overflow a shift.
        let mut empty_blue = PixelFormat::SERVER.to_bytes();
        empty_blue[8..10].copy_from_slice(&[0, 0]);
        empty_blue[12] = 63;
        let format = PixelFormat::parse(&empty_blue).expect("max 0 fits anywhere");
        assert_eq!(encoded(format, [0, 0, 255]), [0, 0, 0, 0]);
    }
}
