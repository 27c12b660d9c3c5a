//! The fixture's framebuffer and the Raw-encoded FramebufferUpdate message.
//!
//! The content is a pure function of (x, y, generation): the top half is the solid base
//! colour (browser tests read those pixels), the bottom half is a grey background whose
//! shade changes with every generation plus a vertical bar of the inverse shade that
//! moves, so the picture really changes every update interval.

use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::pixel::PixelFormat;

/// Flush the update to the socket whenever this many bytes are buffered, so a large
/// framebuffer never needs a full-frame buffer (the per-connection memory bound).
const CHUNK_BYTES: usize = 64 * 1024;

/// FramebufferUpdate message type (server to client).
const MSG_FRAMEBUFFER_UPDATE: u8 = 0;

/// Raw encoding.
const ENCODING_RAW: i32 = 0;

/// ExtendedDesktopSize pseudo-encoding.
pub const ENCODING_EXTENDED_DESKTOP_SIZE: i32 = -308;

/// ExtendedDesktopSize x-position: the change answers this client's SetDesktopSize.
const REASON_THIS_CLIENT: u16 = 1;

/// A rectangle in framebuffer coordinates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rect {
    pub x: u16,
    pub y: u16,
    pub width: u16,
    pub height: u16,
}

impl Rect {
    pub fn is_empty(self) -> bool {
        self.width == 0 || self.height == 0
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Framebuffer {
    pub width: u16,
    pub height: u16,
    /// Colour of the top half, 8-bit RGB.
    pub base: [u8; 3],
}

impl Framebuffer {
    pub fn new(width: u16, height: u16, base: [u8; 3]) -> Self {
        Framebuffer {
            width,
            height,
            base,
        }
    }

    pub fn full(self) -> Rect {
        Rect {
            x: 0,
            y: 0,
            width: self.width,
            height: self.height,
        }
    }

    /// First row of the changing bottom half; rows above it are the base colour.
    pub fn bottom_start(self) -> u16 {
        self.height / 2
    }

    /// `rect` clipped to the framebuffer (possibly empty).
    pub fn clip(self, rect: Rect) -> Rect {
        let x = rect.x.min(self.width);
        let y = rect.y.min(self.height);
        let right = u32::from(rect.x) + u32::from(rect.width);
        let bottom = u32::from(rect.y) + u32::from(rect.height);
        // Both results are at most the framebuffer side, so they fit in u16.
        let width = right.min(u32::from(self.width)) as u16 - x;
        let height = bottom.min(u32::from(self.height)) as u16 - y;
        Rect {
            x,
            y,
            width,
            height,
        }
    }

    /// Colour of pixel (x, y) at `generation`.
    pub fn pixel(self, x: u16, y: u16, generation: u64) -> [u8; 3] {
        if y < self.bottom_start() {
            return self.base;
        }
        let bar_width = (self.width / 8).max(1);
        let step = u64::from(bar_width);
        let bar_x = (generation.wrapping_mul(step) % u64::from(self.width)) as u16;
        let in_bar = x >= bar_x && x - bar_x < bar_width;
        // Eight shades; the bar is the inverse shade, so both differ from each other and
        // change every generation, even in a framebuffer one pixel wide.
        let shade = ((generation % 8) * 32) as u8;
        let v = if in_bar { 255 - shade } else { shade };
        [v, v, v]
    }
}

/// Writes one FramebufferUpdate holding `rect` (clipped to the framebuffer) in Raw
/// encoding, or no rectangle if that is empty. Calls `on_written` with the byte count of each chunk
/// once it has been written, for flood progress accounting.
pub async fn write_update<W: AsyncWrite + Unpin>(
    out: &mut W,
    fb: Framebuffer,
    rect: Rect,
    format: PixelFormat,
    generation: u64,
    mut on_written: impl FnMut(usize),
) -> std::io::Result<()> {
    let rect = fb.clip(rect);
    let row_bytes = usize::from(fb.width) * format.bytes_per_pixel();
    let mut buf = Vec::with_capacity(CHUNK_BYTES + row_bytes);
    buf.push(MSG_FRAMEBUFFER_UPDATE);
    buf.push(0); // padding
    let rects: u16 = if rect.is_empty() { 0 } else { 1 };
    buf.extend_from_slice(&rects.to_be_bytes());
    if !rect.is_empty() {
        for v in [rect.x, rect.y, rect.width, rect.height] {
            buf.extend_from_slice(&v.to_be_bytes());
        }
        buf.extend_from_slice(&ENCODING_RAW.to_be_bytes());
        for y in rect.y..rect.y + rect.height {
            for x in rect.x..rect.x + rect.width {
                format.encode(fb.pixel(x, y, generation), &mut buf);
            }
            if buf.len() >= CHUNK_BYTES {
                out.write_all(&buf).await?;
                on_written(buf.len());
                buf.clear();
            }
        }
    }
    if !buf.is_empty() {
        out.write_all(&buf).await?;
        on_written(buf.len());
    }
    out.flush().await
}

/// Writes the answer to a SetDesktopSize: a FramebufferUpdate with one
/// ExtendedDesktopSize rectangle, x-position 1 (this client asked), y-position
/// `status`, the framebuffer's size (the new one if it changed), one screen covering
/// it.
pub async fn write_desktop_size<W: AsyncWrite + Unpin>(
    out: &mut W,
    fb: Framebuffer,
    status: u16,
) -> std::io::Result<()> {
    let mut m = vec![MSG_FRAMEBUFFER_UPDATE, 0, 0, 1];
    for v in [REASON_THIS_CLIENT, status, fb.width, fb.height] {
        m.extend_from_slice(&v.to_be_bytes());
    }
    m.extend_from_slice(&ENCODING_EXTENDED_DESKTOP_SIZE.to_be_bytes());
    // One screen, padding; then id, x, y, width, height, flags.
    m.extend_from_slice(&[1, 0, 0, 0]);
    m.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
    m.extend_from_slice(&fb.width.to_be_bytes());
    m.extend_from_slice(&fb.height.to_be_bytes());
    m.extend_from_slice(&[0, 0, 0, 0]);
    out.write_all(&m).await?;
    out.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    const FB: Framebuffer = Framebuffer {
        width: 64,
        height: 48,
        base: [255, 0, 0],
    };

    fn rect(x: u16, y: u16, width: u16, height: u16) -> Rect {
        Rect {
            x,
            y,
            width,
            height,
        }
    }

    #[test]
    fn clips_to_the_framebuffer() {
        assert_eq!(FB.clip(rect(0, 0, 64, 48)), rect(0, 0, 64, 48));
        assert_eq!(FB.clip(rect(60, 40, 100, 100)), rect(60, 40, 4, 8));
        assert_eq!(
            FB.clip(rect(65535, 65535, 65535, 65535)),
            rect(64, 48, 0, 0)
        );
        assert!(FB.clip(rect(70, 0, 10, 10)).is_empty());
    }

    #[test]
    fn top_half_is_base_colour_and_bottom_half_changes() {
        for generation in 0..20 {
            for y in 0..FB.bottom_start() {
                for x in 0..FB.width {
                    assert_eq!(FB.pixel(x, y, generation), FB.base);
                }
            }
        }
        let bottom = |g| -> Vec<[u8; 3]> {
            (FB.bottom_start()..FB.height)
                .flat_map(|y| (0..FB.width).map(move |x| FB.pixel(x, y, g)))
                .collect()
        };
        for generation in 0..20 {
            assert_ne!(bottom(generation), bottom(generation + 1));
        }
        let tiny = Framebuffer::new(1, 2, [0, 0, 255]);
        assert_ne!(tiny.pixel(0, 1, 0), tiny.pixel(0, 1, 1));
    }

    #[tokio::test]
    async fn writes_raw_update() {
        let mut out = Vec::new();
        let mut written = 0;
        let r = rect(1, 2, 3, 4);
        write_update(&mut out, FB, r, PixelFormat::SERVER, 0, |n| written += n)
            .await
            .expect("write");
        assert_eq!(out.len(), 4 + 12 + 3 * 4 * 4);
        assert_eq!(written, out.len());
        assert_eq!(&out[..4], &[0, 0, 0, 1]);
        assert_eq!(&out[4..16], &[0, 1, 0, 2, 0, 3, 0, 4, 0, 0, 0, 0]);
        assert_eq!(&out[16..20], &[0, 0, 255, 0]); // red, little-endian 0x00RRGGBB

        let mut empty = Vec::new();
        write_update(
            &mut empty,
            FB,
            rect(0, 0, 0, 5),
            PixelFormat::SERVER,
            0,
            |_| {},
        )
        .await
        .expect("write");
        assert_eq!(empty, [0, 0, 0, 0]);
    }

    #[tokio::test]
    async fn writes_desktop_size_answer() {
        let mut out = Vec::new();
        write_desktop_size(&mut out, Framebuffer::new(800, 600, [0; 3]), 3)
            .await
            .expect("write");
        assert_eq!(&out[..4], &[0, 0, 0, 1]);
        assert_eq!(
            &out[4..16],
            &[0, 1, 0, 3, 3, 32, 2, 88, 0xff, 0xff, 0xfe, 0xcc]
        );
        assert_eq!(&out[16..20], &[1, 0, 0, 0]);
        assert_eq!(
            &out[20..],
            &[0, 0, 0, 0, 0, 0, 0, 0, 3, 32, 2, 88, 0, 0, 0, 0]
        );
    }

    #[tokio::test]
    async fn large_updates_are_written_in_chunks() {
        let fb = Framebuffer::new(1024, 768, [0, 255, 0]);
        let mut out = Vec::new();
        let mut chunks = Vec::new();
        write_update(&mut out, fb, fb.full(), PixelFormat::SERVER, 3, |n| {
            chunks.push(n)
        })
        .await
        .expect("write");
        assert_eq!(out.len(), 16 + 1024 * 768 * 4);
        assert!(chunks.len() > 1);
        assert!(chunks.iter().all(|&n| n < CHUNK_BYTES + 1024 * 4));
        assert_eq!(chunks.iter().sum::<usize>(), out.len());
    }
}
