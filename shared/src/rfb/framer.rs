//! The client→server framer for the data phase: it splits the browser's byte stream
//! into spans, each "the next N bytes belong to a message of kind K", without copying
//! or allocating, so the relay can forward or drop each span as it is and knows where
//! message boundaries are (it may write messages of its own only there).
//!
//! Bytes may arrive in any chunking: a message split anywhere, several in one chunk.
//! The framer reads only what it needs to know each message's length (a header of at
//! most 9 bytes, plus the encodings of SetEncodings, see below). A message type it does
//! not know is an error: its length is unknowable, so the stream cannot be followed.
//!
//! ExtendedMouseButtons (pseudo-encoding -316) changes framing: once the client has
//! listed it in SetEncodings, a PointerEvent whose button mask has bit 7 set is 7 bytes
//! long. Clients that know the extension keep bit 7 clear in the 6-byte form (noVNC
//! masks it), so "listed in the last SetEncodings and bit 7 set" is exactly the rule a
//! server such as TigerVNC applies.
//!
//! This file owns the framer and the spans it hands out; what a message may declare and
//! the errors are in `limits.rs`, reading one message (its kind and length) in
//! `message.rs`.

use std::ops::Range;

use super::message::MessageKind;
use super::server_init::PixelFormat;

mod limits;
mod message;

pub use limits::{
    DEFAULT_MAX_CUT_TEXT, DEFAULT_MAX_ENCODINGS, FrameError, FramerLimits, MAX_FENCE_PAYLOAD,
};
use message::{Message, classify};

/// One span: bytes from the front of the input that all belong to one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// The message these bytes belong to.
    pub kind: MessageKind,
    /// How many bytes from the front of the input are in this span.
    pub len: usize,
    /// The span starts a message (the carried byte, if any, is its first byte).
    pub starts_message: bool,
    /// The span ends a message: after it the framer is at a boundary.
    pub ends_message: bool,
    /// The message-type byte of a QEMU or gii message whose previous input ended right
    /// after it: the kind was unknown then, so the framer held it back.
    carried: Option<u8>,
}

impl Span {
    /// Bytes the framer held back from an earlier input, to be written (or dropped)
    /// before this span's `len` input bytes. Empty except when a QEMU or gii message's
    /// type byte was the last byte of an input; at most one byte.
    pub fn carried(&self) -> &[u8] {
        self.carried.as_slice()
    }
}

/// The streaming framer over the browser's data-phase bytes. One per session; no
/// allocation, a few dozen bytes of state.
///
/// ```
/// use vnc_shared::rfb::{ClientFramer, FramerLimits, MessageKind};
///
/// let mut framer = ClientFramer::new(FramerLimits::default());
/// let view_only = true;
/// // A FramebufferUpdateRequest, a KeyEvent and the first half of a PointerEvent.
/// let chunk = [3, 1, 0, 0, 0, 0, 4, 0, 3, 0, 4, 1, 0, 0, 0, 0, 0, 0x61, 5, 0, 0];
/// let mut forwarded = Vec::new();
/// for item in framer.spans(&chunk) {
///     let (range, span) = item?;
///     if view_only && !span.kind.allowed_for_view() {
///         continue; // dropped: nothing reaches the server
///     }
///     forwarded.extend_from_slice(span.carried());
///     forwarded.extend_from_slice(&chunk[range]);
/// }
/// assert_eq!(forwarded, [3, 1, 0, 0, 0, 0, 4, 0, 3, 0]);
/// // The relay may write its own messages only between messages.
/// assert!(!framer.at_boundary());
/// let (_, rest) = framer.spans(&[10, 0, 20]).next().unwrap()?;
/// assert_eq!((rest.kind, rest.len, rest.ends_message), (MessageKind::PointerEvent, 3, true));
/// assert!(framer.at_boundary());
/// # Ok::<(), vnc_shared::rfb::FrameError>(())
/// ```
#[derive(Debug, Clone)]
pub struct ClientFramer {
    limits: FramerLimits,
    /// The message under way, if some of it was handed out.
    current: Option<Message>,
    /// A QEMU or gii type byte whose sub-type has not arrived yet.
    carried: Option<u8>,
    /// The last complete SetEncodings listed ExtendedMouseButtons.
    extended_mouse_buttons: bool,
    /// The format of the last complete SetPixelFormat.
    pixel_format: Option<PixelFormat>,
    /// Set once the stream could not be framed; every later call returns it.
    error: Option<FrameError>,
}

impl ClientFramer {
    pub fn new(limits: FramerLimits) -> ClientFramer {
        ClientFramer {
            limits,
            current: None,
            carried: None,
            extended_mouse_buttons: false,
            pixel_format: None,
            error: None,
        }
    }

    /// True when every byte handed out so far belongs to a complete message, so the
    /// relay may write a message of its own to the server now. False after an error.
    pub fn at_boundary(&self) -> bool {
        self.current.is_none() && self.error.is_none()
    }

    /// Whether the client's last SetEncodings listed ExtendedMouseButtons. While it
    /// did, a PointerEvent the relay writes must keep bit 7 of its mask clear, or the
    /// server reads it as the 7-byte form.
    pub fn extended_mouse_buttons(&self) -> bool {
        self.extended_mouse_buttons
    }

    /// The pixel format of the client's last complete SetPixelFormat, if it sent one:
    /// what the server's pixel data is in once the server has read it.
    pub fn pixel_format(&self) -> Option<PixelFormat> {
        self.pixel_format
    }

    /// The next span at the front of `input`: `Ok(None)` when `input` is empty, or
    /// when all of it (a lone QEMU or gii type byte) was held back; it comes back as
    /// the next span's [`Span::carried`]. A span never crosses a message boundary.
    pub fn next_span(&mut self, input: &[u8]) -> Result<Option<Span>, FrameError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        let result = self.frame(input);
        if let Err(e) = &result {
            self.error = Some(e.clone());
        }
        result
    }

    /// All spans of `input`, each with its byte range in `input` (for `Bytes::slice`
    /// or indexing). Stops after the first error.
    pub fn spans<'f, 'i>(&'f mut self, input: &'i [u8]) -> Spans<'f, 'i> {
        Spans {
            framer: self,
            input,
            offset: 0,
            done: false,
        }
    }

    fn frame(&mut self, input: &[u8]) -> Result<Option<Span>, FrameError> {
        let Some(&first) = input.first() else {
            return Ok(None);
        };
        let (limits, extended) = (self.limits, self.extended_mouse_buttons);
        let starts_message = self.current.is_none();
        let mut message = match self.current.take() {
            Some(message) => message,
            None => {
                let type_byte = self.carried.unwrap_or(first);
                let next = if self.carried.is_some() {
                    Some(first)
                } else {
                    input.get(1).copied()
                };
                let Some(kind) = classify(type_byte, next)? else {
                    // Only the type byte of a QEMU or gii message so far; it is all of
                    // `input` (or there would be a next byte), so all of it is taken.
                    self.carried = Some(type_byte);
                    return Ok(None);
                };
                let mut message = Message::new(kind);
                if let Some(byte) = self.carried {
                    message.push(byte, limits, extended)?;
                }
                message
            }
        };
        let used = message.consume(input, limits, extended)?;
        let (kind, ends_message) = (message.kind, message.is_complete());
        if !ends_message {
            self.current = Some(message);
        } else if kind == MessageKind::SetEncodings {
            self.extended_mouse_buttons = message.lists_extended_mouse;
        } else if kind == MessageKind::SetPixelFormat {
            self.pixel_format = Some(PixelFormat::from_bytes(&message.format));
        }
        Ok(Some(Span {
            kind,
            len: used,
            starts_message,
            ends_message,
            carried: self.carried.take(),
        }))
    }
}

impl Default for ClientFramer {
    fn default() -> Self {
        ClientFramer::new(FramerLimits::default())
    }
}

/// Iterator over the spans of one input; see [`ClientFramer::spans`].
#[derive(Debug)]
pub struct Spans<'f, 'i> {
    framer: &'f mut ClientFramer,
    input: &'i [u8],
    offset: usize,
    done: bool,
}

impl Iterator for Spans<'_, '_> {
    type Item = Result<(Range<usize>, Span), FrameError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let rest = self.input.get(self.offset..).unwrap_or_default();
        match self.framer.next_span(rest) {
            Ok(Some(span)) => {
                let range = self.offset..self.offset + span.len;
                self.offset = range.end;
                Some(Ok((range, span)))
            }
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests;
