//! FramebufferUpdate rectangles: how long each encoding's payload is, from the few
//! bytes of it that say so. Pixel data, compressed streams and images are skipped by
//! count.

use super::event::answers_this_client;
use super::{
    RectState, ResizeAnswer, ResizeStatus, ServerEvent, ServerFrameError, ServerFramer, State,
};
use crate::rfb::server_message::encoding as enc;
use crate::rfb::wire::{be_u16, be_u32};

/// Side of a Hextile tile.
const HEXTILE_TILE: u32 = 16;
/// Hextile sub-encoding bits.
const HEXTILE_RAW: u8 = 1;
const HEXTILE_BACKGROUND: u8 = 2;
const HEXTILE_FOREGROUND: u8 = 4;
const HEXTILE_ANY_SUBRECTS: u8 = 8;
const HEXTILE_SUBRECTS_COLOURED: u8 = 16;

/// Tight: below this many bytes, data is sent as is, without a length or zlib.
const TIGHT_MIN_TO_COMPRESS: u64 = 12;
/// Tight compression control, high nibble.
const TIGHT_FILL: u8 = 0x8;
const TIGHT_JPEG: u8 = 0x9;
const TIGHT_PNG: u8 = 0xA;
/// Tight basic compression: a filter id follows.
const TIGHT_EXPLICIT_FILTER: u8 = 0x4;
/// Tight filters.
const TIGHT_FILTER_COPY: u8 = 0;
const TIGHT_FILTER_PALETTE: u8 = 1;
const TIGHT_FILTER_GRADIENT: u8 = 2;

/// JPEG markers.
const JPEG_PREFIX: u8 = 0xFF;
const JPEG_START_OF_SCAN: u8 = 0xDA;
const JPEG_END_OF_IMAGE: u8 = 0xD9;
/// Markers without a length: TEM, the restart markers RST0–7 and SOI.
const JPEG_TEM: u8 = 0x01;
const JPEG_RST0: u8 = 0xD0;
const JPEG_RST7: u8 = 0xD7;
const JPEG_START_OF_IMAGE: u8 = 0xD8;

/// VMware cursor types.
const VMWARE_CURSOR_CLASSIC: u8 = 0;
const VMWARE_CURSOR_ALPHA: u8 = 1;

/// What a rectangle's payload is, as its header tells.
enum Body {
    /// This many bytes, skipped whole.
    Skip(u64),
    /// Something to read first.
    Read(RectState),
    /// No payload, and the update ends (LastRect).
    EndUpdate,
}

impl ServerFramer {
    pub(super) fn rect_need(&self, r: RectState) -> usize {
        match r {
            RectState::LengthPrefixed => 4,
            RectState::RreHeader { .. } => 4 + usize::from(self.sizes.pixel),
            RectState::HextileTile
            | RectState::HextileSubrects { .. }
            | RectState::TightControl
            | RectState::TightFilter
            | RectState::TightPalette
            | RectState::TightLength { .. } => 1,
            RectState::JpegMarker | RectState::JpegLength { .. } => 2,
            // Not gathered: scanned byte by byte in `jpeg_scan`.
            RectState::JpegScan { .. } => 0,
            RectState::H264Header => 8,
            RectState::ExtendedDesktopSize => 4,
            RectState::DesktopSize => 0,
            RectState::AlphaCursor => 4,
            RectState::VmwareCursor => 2,
        }
    }

    /// Width × height of the rectangle under way.
    fn area(&self) -> u64 {
        u64::from(self.rect.width) * u64::from(self.rect.height)
    }

    /// Bytes of a 1-bit-per-pixel mask of the rectangle, rows padded to a byte.
    fn mask_len(&self) -> u64 {
        u64::from(self.rect.width).div_ceil(8) * u64::from(self.rect.height)
    }

    fn pixels(&self, count: u64) -> u64 {
        count * u64::from(self.sizes.pixel)
    }

    fn tpixels(&self, count: u64) -> u64 {
        count * u64::from(self.sizes.tpixel)
    }

    /// Sets up the payload of the rectangle whose header was just read.
    pub(super) fn start_rect(&mut self) -> Result<(), ServerFrameError> {
        let area = self.area();
        let body = match self.rect.encoding {
            enc::RAW => Body::Skip(self.pixels(area)),
            enc::COPY_RECT => Body::Skip(4),
            enc::RRE => Body::Read(RectState::RreHeader { geometry: 8 }),
            enc::CORRE => Body::Read(RectState::RreHeader { geometry: 4 }),
            enc::HEXTILE => {
                (self.tile_x, self.tile_y) = (0, 0);
                if area == 0 {
                    Body::Skip(0)
                } else {
                    Body::Read(RectState::HextileTile)
                }
            }
            enc::ZLIB | enc::ZRLE | enc::ZYWRLE | enc::DESKTOP_NAME => {
                Body::Read(RectState::LengthPrefixed)
            }
            enc::TIGHT | enc::TIGHT_PNG => Body::Read(RectState::TightControl),
            enc::JPEG => Body::Read(RectState::JpegMarker),
            enc::H264 => Body::Read(RectState::H264Header),
            enc::EXTENDED_DESKTOP_SIZE => Body::Read(RectState::ExtendedDesktopSize),
            enc::DESKTOP_SIZE => Body::Read(RectState::DesktopSize),
            // Ends the update whatever its rectangle count said.
            enc::LAST_RECT => Body::EndUpdate,
            enc::CURSOR => Body::Skip(self.pixels(area) + self.mask_len()),
            // Foreground and background RGB, then bitmap and mask; nothing for an empty
            // cursor.
            enc::X_CURSOR if area == 0 => Body::Skip(0),
            enc::X_CURSOR => Body::Skip(6 + 2 * self.mask_len()),
            enc::CURSOR_WITH_ALPHA => Body::Read(RectState::AlphaCursor),
            enc::VMWARE_CURSOR => Body::Read(RectState::VmwareCursor),
            enc::QEMU_LED_STATE => Body::Skip(1),
            enc::VMWARE_CURSOR_STATE => Body::Skip(2),
            enc::VMWARE_LED_STATE => Body::Skip(4),
            // Announcements and acknowledgements without a payload.
            enc::POINTER_POS
            | enc::QEMU_EXTENDED_KEY_EVENT
            | enc::QEMU_AUDIO
            | enc::XVP
            | enc::FENCE
            | enc::CONTINUOUS_UPDATES
            | enc::EXTENDED_MOUSE_BUTTONS
            | enc::VMWARE_CURSOR_POSITION => Body::Skip(0),
            other => return Err(ServerFrameError::UnknownEncoding(other)),
        };
        match body {
            Body::Skip(len) => self.end_rect_after(len),
            Body::Read(r) => self.state = State::Rect(r),
            Body::EndUpdate => self.state = State::MessageDone,
        }
        Ok(())
    }

    pub(super) fn advance_rect(
        &mut self,
        r: RectState,
        head: &[u8],
    ) -> Result<Option<ServerEvent>, ServerFrameError> {
        let byte = head.first().copied().unwrap_or_default();
        let u32_at = |at| be_u32(head, at).unwrap_or_default();
        match r {
            RectState::LengthPrefixed => self.end_rect_after(u64::from(u32_at(0))),
            RectState::RreHeader { geometry } => {
                // The count, then the background pixel (already read).
                let count = u64::from(u32_at(0));
                let each = u64::from(self.sizes.pixel) + u64::from(geometry);
                self.end_rect_after(count * each);
            }
            RectState::HextileTile => {
                if byte > 0x1f {
                    return Err(ServerFrameError::BadHextileSubencoding(byte));
                }
                if byte & HEXTILE_RAW != 0 {
                    // Raw bit: the tile's pixels, nothing else.
                    let (w, h) = self.tile_size();
                    self.skip = self.pixels(w * h);
                    self.next_tile();
                    return Ok(None);
                }
                let colours = u64::from(byte & HEXTILE_BACKGROUND != 0)
                    + u64::from(byte & HEXTILE_FOREGROUND != 0);
                self.skip = self.pixels(colours);
                if byte & HEXTILE_ANY_SUBRECTS != 0 {
                    let coloured = byte & HEXTILE_SUBRECTS_COLOURED != 0;
                    self.state = State::Rect(RectState::HextileSubrects { coloured });
                } else {
                    self.next_tile();
                }
            }
            RectState::HextileSubrects { coloured } => {
                // Each: a pixel if coloured, then x-y and w-h packed in two bytes.
                let each = if coloured { self.pixels(1) + 2 } else { 2 };
                self.skip = u64::from(byte) * each;
                self.next_tile();
            }
            RectState::TightControl => {
                // Low nibble: zlib streams to reset.
                match byte >> 4 {
                    TIGHT_FILL => self.end_rect_after(u64::from(self.sizes.tpixel)),
                    TIGHT_JPEG | TIGHT_PNG => self.tight_length(),
                    basic if basic & TIGHT_FILL == 0 => {
                        if basic & TIGHT_EXPLICIT_FILTER != 0 {
                            self.state = State::Rect(RectState::TightFilter);
                        } else {
                            self.tight_data(self.tpixels(self.area()));
                        }
                    }
                    _ => return Err(ServerFrameError::BadTightControl(byte)),
                }
            }
            RectState::TightFilter => match byte {
                TIGHT_FILTER_COPY | TIGHT_FILTER_GRADIENT => {
                    self.tight_data(self.tpixels(self.area()))
                }
                TIGHT_FILTER_PALETTE => self.state = State::Rect(RectState::TightPalette),
                other => return Err(ServerFrameError::BadTightFilter(other)),
            },
            RectState::TightPalette => {
                let colours = u64::from(byte) + 1;
                // Two colours or fewer: a bit per pixel, rows padded to a byte; more:
                // a byte per pixel.
                let data = if colours <= 2 {
                    self.mask_len()
                } else {
                    self.area()
                };
                self.skip = self.tpixels(colours);
                self.tight_data(data);
            }
            RectState::TightLength { index, value } => {
                // 7 bits per byte, high bit "more follows"; the third byte has 8.
                let value = if index < 2 {
                    value | u32::from(byte & 0x7f) << (7 * index)
                } else {
                    value | u32::from(byte) << 14
                };
                if index < 2 && byte & 0x80 != 0 {
                    self.state = State::Rect(RectState::TightLength {
                        index: index + 1,
                        value,
                    });
                } else {
                    self.end_rect_after(u64::from(value));
                }
            }
            RectState::JpegMarker => {
                if byte != JPEG_PREFIX {
                    return Err(ServerFrameError::BadJpegMarker(byte));
                }
                self.jpeg_marker(head.get(1).copied().unwrap_or_default());
            }
            RectState::JpegLength { marker } => {
                let len = be_u16(head, 0).unwrap_or_default();
                if len < 2 {
                    return Err(ServerFrameError::BadJpegLength(len));
                }
                self.skip = u64::from(len - 2);
                self.state = State::Rect(if marker == JPEG_START_OF_SCAN {
                    RectState::JpegScan { ff: false }
                } else {
                    RectState::JpegMarker
                });
            }
            // Handled by `jpeg_scan`, never gathered.
            RectState::JpegScan { .. } => {}
            RectState::H264Header => self.end_rect_after(u64::from(u32_at(0))),
            RectState::ExtendedDesktopSize => {
                // Screen count, 3 bytes padding, then 16 bytes per screen.
                self.end_rect_after(16 * u64::from(byte));
                let (status, width, height) = (self.rect.y, self.rect.width, self.rect.height);
                return Ok(Some(if answers_this_client(&self.rect) {
                    ServerEvent::ResizeAnswer(ResizeAnswer {
                        status: ResizeStatus(status),
                        width,
                        height,
                    })
                } else {
                    ServerEvent::DesktopSize { width, height }
                }));
            }
            RectState::DesktopSize => {
                self.end_rect_after(0);
                return Ok(Some(ServerEvent::DesktopSize {
                    width: self.rect.width,
                    height: self.rect.height,
                }));
            }
            RectState::AlphaCursor => {
                let encoding = u32_at(0) as i32;
                if encoding != enc::RAW {
                    return Err(ServerFrameError::BadAlphaCursorEncoding(encoding));
                }
                // RGBA, 4 bytes a pixel whatever the pixel format.
                self.end_rect_after(4 * self.area());
            }
            RectState::VmwareCursor => match byte {
                // AND mask, then XOR mask, in the pixel format.
                VMWARE_CURSOR_CLASSIC => self.end_rect_after(2 * self.pixels(self.area())),
                VMWARE_CURSOR_ALPHA => self.end_rect_after(4 * self.area()),
                other => return Err(ServerFrameError::BadVmwareCursorType(other)),
            },
        }
        Ok(None)
    }

    /// Size of the Hextile tile under way: 16 × 16 but at the right and bottom edges.
    fn tile_size(&self) -> (u64, u64) {
        let w = (u32::from(self.rect.width) - self.tile_x).min(HEXTILE_TILE);
        let h = (u32::from(self.rect.height) - self.tile_y).min(HEXTILE_TILE);
        (u64::from(w), u64::from(h))
    }

    /// Moves to the next Hextile tile (left to right, then top to bottom), or ends the
    /// rectangle after the last one.
    fn next_tile(&mut self) {
        self.tile_x += HEXTILE_TILE;
        if self.tile_x >= u32::from(self.rect.width) {
            self.tile_x = 0;
            self.tile_y += HEXTILE_TILE;
        }
        self.state = if self.tile_y >= u32::from(self.rect.height) {
            State::RectDone
        } else {
            State::Rect(RectState::HextileTile)
        };
    }

    /// Tight data of `len` bytes before compression: as is when short, else a compact
    /// length and that many zlib bytes.
    fn tight_data(&mut self, len: u64) {
        if len < TIGHT_MIN_TO_COMPRESS {
            self.end_rect_after(len);
        } else {
            self.tight_length();
        }
    }

    fn tight_length(&mut self) {
        self.state = State::Rect(RectState::TightLength { index: 0, value: 0 });
    }

    /// After 0xFF and marker type `marker`: a marker without a length, the end of the
    /// image, or a segment length.
    fn jpeg_marker(&mut self, marker: u8) {
        self.state = match marker {
            JPEG_END_OF_IMAGE => State::RectDone,
            JPEG_TEM | JPEG_RST0..=JPEG_RST7 | JPEG_START_OF_IMAGE => {
                State::Rect(RectState::JpegMarker)
            }
            marker => State::Rect(RectState::JpegLength { marker }),
        };
    }

    /// Entropy-coded data: runs to the next 0xFF that is followed by neither a stuffed
    /// zero, a restart marker nor another 0xFF (fill). Returns the bytes taken of
    /// `input` (not empty).
    pub(super) fn jpeg_scan(&mut self, ff: bool, input: &[u8]) -> usize {
        if ff {
            let Some(&byte) = input.first() else {
                return 0;
            };
            match byte {
                0x00 | JPEG_RST0..=JPEG_RST7 => {
                    self.state = State::Rect(RectState::JpegScan { ff: false })
                }
                JPEG_PREFIX => {}
                marker => self.jpeg_marker(marker),
            }
            return 1;
        }
        match input.iter().position(|&b| b == JPEG_PREFIX) {
            Some(at) => {
                self.state = State::Rect(RectState::JpegScan { ff: true });
                at + 1
            }
            None => input.len(),
        }
    }
}
