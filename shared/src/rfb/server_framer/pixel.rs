//! The sizes the negotiated pixel format decides, which the framer needs to skip
//! pixel data by count.

use super::event::ServerFrameError;
use crate::rfb::server_init::PixelFormat;

/// Sizes in bytes that the pixel format decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct PixelSizes {
    /// A PIXEL: bits per pixel / 8.
    pub(super) pixel: u8,
    /// A Tight TPIXEL: 3 for 32 bpp true colour of depth 24 with 8 bits per channel,
    /// else a PIXEL.
    pub(super) tpixel: u8,
}

impl PixelSizes {
    pub(super) fn of(format: &PixelFormat) -> Result<PixelSizes, ServerFrameError> {
        let pixel = match format.bits_per_pixel {
            8 => 1,
            16 => 2,
            32 => 4,
            bits => return Err(ServerFrameError::UnsupportedPixelFormat(bits)),
        };
        let rgb888 = format.true_colour
            && format.bits_per_pixel == 32
            && format.depth == 24
            && (format.red_max, format.green_max, format.blue_max) == (255, 255, 255);
        Ok(PixelSizes {
            pixel,
            tpixel: if rgb888 { 3 } else { pixel },
        })
    }
}
