//! The VNC server's stream after ServerInit, where a session follows it: the framer
//! with the pixel format in force ([`Follower`]), and the filter that takes the
//! desktop's clipboard (ServerCutText, plain or extended) out of it for sessions whose
//! token's `clipboard` claim lacks `from_desktop` ([`CutTextFilter`]).
//!
//! Sessions that may read the desktop's clipboard keep the zero-copy path: nothing here
//! runs for them. For the others every byte the server sends is framed (header bytes
//! read, bodies skipped by count) and a ServerCutText is cut out of the read buffer in
//! place: the bytes behind it move up, the only copy, and only in a read that held one.
//! Dropping every ServerCutText also drops the server's Extended Clipboard
//! capabilities, so the browser never turns the extended clipboard on and speaks the
//! plain one (ClientCutText), which `to_desktop` governs. A stream the framer can't
//! follow ends such a session ([`End::UpstreamUnfiltered`]): the relay could no longer
//! tell what it lets through.

use tokio::sync::watch;
use vnc_shared::rfb::{PixelFormat, ServerFramer, ServerMessageKind};

use super::end::End;
use super::rfb::RfbPolicy;
use crate::metrics::OUTPUT_DROPPED;

/// The server's stream, framed in the pixel format in force: ServerInit's, then the
/// browser's last SetPixelFormat once it has reached the server (from
/// [`super::rfb::Filter::formats`]).
#[derive(Debug)]
pub struct Follower {
    framer: ServerFramer,
    formats: watch::Receiver<PixelFormat>,
}

impl Follower {
    pub fn new(mut formats: watch::Receiver<PixelFormat>) -> Follower {
        let format = *formats.borrow_and_update();
        Follower {
            framer: ServerFramer::new(format),
            formats,
        }
    }

    /// The framer, told of a format the browser set since the last call (it applies
    /// from the server's next message on).
    pub fn framer(&mut self) -> &mut ServerFramer {
        if self.formats.has_changed().unwrap_or(false) {
            self.framer
                .set_pixel_format(*self.formats.borrow_and_update());
        }
        &mut self.framer
    }
}

/// Removes ServerCutText messages from the server's stream, whatever their chunking.
#[derive(Debug)]
pub struct CutTextFilter {
    follower: Follower,
    /// The message under way is a ServerCutText: its bytes are left out.
    dropping: bool,
}

impl CutTextFilter {
    /// The filter a session with `policy` needs: none when it may read the desktop's
    /// clipboard.
    pub fn new(policy: &RfbPolicy, formats: watch::Receiver<PixelFormat>) -> Option<Self> {
        (!policy.clipboard_out).then(|| CutTextFilter {
            follower: Follower::new(formats),
            dropping: false,
        })
    }

    /// Takes the next bytes the server sent, in order, and moves what the browser may
    /// see to the front of `buf`; returns its length.
    pub fn keep(&mut self, buf: &mut [u8]) -> Result<usize, End> {
        let cut_text = ServerMessageKind::ServerCutText.message_type();
        let (mut at, mut kept) = (0, 0);
        let framer = self.follower.framer();
        while at < buf.len() {
            if framer.at_boundary() {
                self.dropping = buf[at] == cut_text;
                if self.dropping {
                    metrics::counter!(OUTPUT_DROPPED, "kind" => ServerMessageKind::ServerCutText.as_str(), "reason" => "clipboard")
                        .increment(1);
                }
            }
            let (used, _) = framer.next_event(&buf[at..]).map_err(|e| {
                tracing::info!(error = %e, "the VNC server's stream can't be filtered for this session's clipboard policy");
                End::UpstreamUnfiltered
            })?;
            if !self.dropping {
                if kept != at {
                    buf.copy_within(at..at + used, kept);
                }
                kept += used;
            }
            at += used;
        }
        Ok(kept)
    }

    /// [`CutTextFilter::keep`] over `bytes[from..]`, shortening `bytes` to what is kept.
    pub fn keep_tail(&mut self, bytes: &mut Vec<u8>, from: usize) -> Result<(), End> {
        let kept = self.keep(bytes.get_mut(from..).unwrap_or_default())?;
        bytes.truncate(from + kept);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use vnc_shared::rfb::encode_client_cut_text;

    use super::*;

    const RGB888: [u8; 16] = [32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0];

    fn filter() -> (CutTextFilter, watch::Sender<PixelFormat>) {
        let (tx, rx) = watch::channel(PixelFormat::from_bytes(&RGB888));
        let policy = RfbPolicy {
            password: None,
            view_only: false,
            clipboard_in: true,
            clipboard_out: false,
        };
        (CutTextFilter::new(&policy, rx).expect("a filter"), tx)
    }

    /// A FramebufferUpdate of one 1 × 1 Raw rectangle of `pixel`.
    fn update(pixel: &[u8]) -> Vec<u8> {
        let mut m = vec![0, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0];
        m.extend(pixel);
        m
    }

    /// A ServerCutText: the same layout as ClientCutText, type 3.
    fn cut_text(text: &str) -> Vec<u8> {
        let mut m = encode_client_cut_text(text);
        m[0] = ServerMessageKind::ServerCutText.message_type();
        m
    }

    /// An Extended Clipboard ServerCutText (negative length) of `body`.
    fn extended_cut_text(body: &[u8]) -> Vec<u8> {
        let mut m = vec![3, 0, 0, 0];
        m.extend((-(body.len() as i32)).to_be_bytes());
        m.extend(body);
        m
    }

    fn run(filter: &mut CutTextFilter, stream: &[u8], cuts: &[usize]) -> Result<Vec<u8>, End> {
        let mut out = Vec::new();
        let mut start = 0;
        for &end in cuts.iter().chain([&stream.len()]) {
            let mut chunk = stream[start..end].to_vec();
            let kept = filter.keep(&mut chunk)?;
            out.extend_from_slice(&chunk[..kept]);
            start = end;
        }
        Ok(out)
    }

    #[test]
    fn cut_text_is_removed_and_everything_else_passes_unchanged() {
        let (mut f, _tx) = filter();
        let mut stream = update(&[1, 2, 3, 4]);
        stream.extend(cut_text("secret from the desktop"));
        stream.push(2); // Bell
        stream.extend(extended_cut_text(&[0, 0, 0, 1, 0xaa, 0xbb]));
        stream.extend(update(&[5, 6, 7, 8]));
        let mut want = update(&[1, 2, 3, 4]);
        want.push(2);
        want.extend(update(&[5, 6, 7, 8]));
        assert_eq!(run(&mut f, &stream, &[]), Ok(want));
    }

    #[test]
    fn the_format_the_browser_set_decides_pixel_sizes() {
        let (mut f, tx) = filter();
        let rgb565 = [16, 16, 0, 1, 0, 31, 0, 63, 0, 31, 11, 5, 0, 0, 0, 0];
        tx.send_replace(PixelFormat::from_bytes(&rgb565));
        // Two-byte pixels now: a cut text right behind stays recognised.
        let mut stream = update(&[1, 2]);
        stream.extend(cut_text("x"));
        assert_eq!(run(&mut f, &stream, &[]), Ok(update(&[1, 2])));
    }

    #[test]
    fn an_unframeable_stream_ends_the_session() {
        let (mut f, _tx) = filter();
        assert_eq!(run(&mut f, &[77], &[]), Err(End::UpstreamUnfiltered));
    }

    #[test]
    fn sessions_that_may_read_the_clipboard_get_no_filter() {
        let (_tx, rx) = watch::channel(PixelFormat::from_bytes(&RGB888));
        let policy = RfbPolicy {
            password: None,
            view_only: true,
            clipboard_in: false,
            clipboard_out: true,
        };
        assert!(CutTextFilter::new(&policy, rx).is_none());
    }

    #[test]
    fn keep_tail_leaves_the_head_alone() {
        let (mut f, _tx) = filter();
        let mut bytes = b"handshake".to_vec();
        bytes.extend(cut_text("gone"));
        bytes.push(2);
        f.keep_tail(&mut bytes, 9).expect("framed");
        assert_eq!(bytes, b"handshake\x02");
    }

    proptest! {
        #[test]
        fn any_chunking_removes_the_same_bytes(
            texts in prop::collection::vec(".{0,40}", 1..5),
            cuts in prop::collection::vec(0usize..400, 0..8),
        ) {
            let mut stream = Vec::new();
            let mut want = Vec::new();
            for text in &texts {
                stream.extend(update(&[9, 9, 9, 9]));
                want.extend(update(&[9, 9, 9, 9]));
                stream.extend(cut_text(text));
                stream.extend(extended_cut_text(text.as_bytes()));
            }
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(stream.len())).collect();
            cuts.sort_unstable();
            let (mut f, _tx) = filter();
            prop_assert_eq!(run(&mut f, &stream, &cuts), Ok(want));
        }
    }
}
