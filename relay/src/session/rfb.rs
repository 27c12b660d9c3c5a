//! The RFB layer of a session, for both transports: the proxy handshake (the relay
//! authenticates to the VNC server with the container's password and offers the
//! browser None; the password never reaches the browser), then the filter every
//! browser byte goes through on its way to the VNC server (client messages framed;
//! input dropped for `view` tokens and for sessions that don't hold the driver lease;
//! anything unframeable ends the session).
//!
//! Only the small browser → server stream is parsed here. The server → browser stream
//! after ServerInit stays on the zero-copy path; socket.io sessions also follow it
//! (reading, never copying) to report resize answers (`socketio/resize.rs`), and
//! sessions that may not read the desktop's clipboard have it filtered
//! (the session's server-stream module), in the pixel format [`Filter::formats`] follows.

use std::ops::Range;
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio::sync::watch;
use vnc_shared::config::Secret;
use vnc_shared::rfb::{ClientFramer, Established, MessageKind, PixelFormat, ProxyHandshake, Side};

use super::end::End;
use super::gate::InputGate;
use crate::metrics::INPUT_DROPPED;
use crate::wire::io::write_all;

/// Bytes read from the VNC server at once during the handshake (its messages are
/// small: version, security types, challenge, result, ServerInit).
const HANDSHAKE_READ: usize = 16 * 1024;

/// What decides how a session speaks RFB.
#[derive(Clone, Debug)]
pub struct RfbPolicy {
    /// The container's VNC password, when the relay injects credentials.
    pub password: Option<Secret<String>>,
    /// `view` token: shared flag forced on, input dropped.
    pub view_only: bool,
    /// The token's `clipboard` claim lets the browser's clipboard reach the desktop
    /// (ClientCutText, plain or extended).
    pub clipboard_in: bool,
    /// The claim lets the desktop's clipboard reach the browser (ServerCutText, plain
    /// or extended); without it the server's stream goes through
    /// the server-stream clipboard filter (`CutTextFilter`).
    pub clipboard_out: bool,
}

/// The browser side of a session during the handshake.
pub trait Browser {
    /// Sends bytes to the browser.
    fn send(&mut self, bytes: &[u8]) -> impl Future<Output = Result<(), End>> + Send;
    /// The browser's next bytes (never empty).
    fn recv(&mut self) -> impl Future<Output = Result<Vec<u8>, End>> + Send;
}

/// Runs the RFB handshake between `browser` and the VNC server. On success the caller
/// writes [`Established::to_server`] and [`Established::to_client`] first, and sends
/// [`Established::from_client`] through a [`Filter`].
pub async fn handshake<B: Browser>(
    upstream: &TcpStream,
    browser: &mut B,
    policy: &RfbPolicy,
) -> Result<Established, End> {
    let mut hs = ProxyHandshake::new(policy.password.clone(), policy.view_only);
    while let Some(side) = hs.waiting_for() {
        flush(&mut hs, upstream, browser).await?;
        let fed = match side {
            Side::Server => hs.feed_server(&read_upstream(upstream).await?),
            Side::Client => hs.feed_client(&browser.recv().await?),
        };
        if let Err(e) = fed {
            // The failure in RFB terms, for the browser to show (e.g. "the relay could
            // not authenticate to the VNC server").
            let _ = browser.send(&hs.take_for_client()).await;
            tracing::info!(error = %e, "RFB handshake failed");
            return Err(match e.caused_by() {
                Side::Server => End::UpstreamHandshake,
                Side::Client => End::ClientHandshake,
            });
        }
    }
    hs.finish().map_err(|e| {
        tracing::info!(error = %e, "RFB handshake failed");
        End::ClientHandshake
    })
}

async fn flush<B: Browser>(
    hs: &mut ProxyHandshake,
    upstream: &TcpStream,
    browser: &mut B,
) -> Result<(), End> {
    let to_server = hs.take_for_server();
    if !to_server.is_empty() {
        write_all(upstream, &to_server)
            .await
            .map_err(|_| End::UpstreamClosed)?;
    }
    let to_client = hs.take_for_client();
    if !to_client.is_empty() {
        browser.send(&to_client).await?;
    }
    Ok(())
}

async fn read_upstream(upstream: &TcpStream) -> Result<Vec<u8>, End> {
    let mut buf = vec![0; HANDSHAKE_READ];
    loop {
        upstream.readable().await.map_err(|_| End::UpstreamError)?;
        match upstream.try_read(&mut buf) {
            Ok(0) => return Err(End::UpstreamClosed),
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => return Err(End::UpstreamError),
        }
    }
}

/// Why an input message is left out: a `view` session, a `control` session that
/// doesn't hold the driver lease now, or clipboard text the token's `clipboard` claim
/// keeps from the desktop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Barred {
    View,
    NotDriver,
    Clipboard,
}

impl Barred {
    /// Label of `vnc_relay_input_dropped_total{reason}`.
    pub fn as_str(self) -> &'static str {
        match self {
            Barred::View => "view",
            Barred::NotDriver => "not_driver",
            Barred::Clipboard => "clipboard",
        }
    }

    /// Whether a session may send input now, and if not why.
    pub fn check(view_only: bool, gate: &InputGate) -> Option<Barred> {
        if view_only {
            Some(Barred::View)
        } else if !gate.is_open() {
            Some(Barred::NotDriver)
        } else {
            None
        }
    }

    /// Counts one input message left out.
    pub fn count(self, kind: &'static str) {
        metrics::counter!(INPUT_DROPPED, "kind" => kind, "reason" => self.as_str()).increment(1);
    }
}

/// The browser → server filter of the data phase. Consecutive allowed bytes go out in
/// one write; input messages of a session that may not send input are left out (and
/// counted). Whether a message passes is decided at its first byte, so a message is
/// never cut when the gate moves in its middle.
pub struct Filter {
    framer: ClientFramer,
    view_only: bool,
    clipboard_in: bool,
    gate: Arc<InputGate>,
    /// The decision for the input message in progress.
    barring: Option<Barred>,
    /// The pixel format of the browser's last complete SetPixelFormat, ServerInit's
    /// until then: the format of the server's updates from then on.
    formats: watch::Sender<PixelFormat>,
    /// The server's stream is filtered (the `clipboard` claim lacks `from_desktop`), so
    /// the relay must frame it exactly: the browser sets its pixel format before it
    /// first asks for updates, never after (noVNC sets it once, before its first
    /// request), and never to one servers disagree on. A server applies a SetPixelFormat
    /// when it reads it, so a later change would leave the relay unsure which format an
    /// update in flight is in, and a hostile browser could use that to walk the filter
    /// past a ServerCutText.
    pins_format: bool,
    /// A FramebufferUpdateRequest or EnableContinuousUpdates has been framed.
    updates_asked: bool,
}

impl Filter {
    /// A filter for a session whose ServerInit announced `format`.
    pub fn new(policy: &RfbPolicy, gate: Arc<InputGate>, format: PixelFormat) -> Filter {
        Filter {
            framer: ClientFramer::default(),
            view_only: policy.view_only,
            clipboard_in: policy.clipboard_in,
            gate,
            barring: None,
            formats: watch::Sender::new(format),
            pins_format: !policy.clipboard_out,
            updates_asked: false,
        }
    }

    /// Follows the pixel format the server's messages are in, for whoever frames them.
    pub fn formats(&self) -> watch::Receiver<PixelFormat> {
        self.formats.subscribe()
    }

    /// Whether the relay may write a message of its own to the server now (not in
    /// the middle of one of the browser's).
    pub fn at_boundary(&self) -> bool {
        self.framer.at_boundary()
    }

    /// Whether pointer events the relay writes must keep button bit 7 clear (the
    /// browser enabled ExtendedMouseButtons, which gives that bit a meaning).
    pub fn extended_mouse_buttons(&self) -> bool {
        self.framer.extended_mouse_buttons()
    }

    /// Writes what of `data` may reach the VNC server; returns the bytes written.
    pub async fn forward(&mut self, upstream: &TcpStream, data: &[u8]) -> Result<usize, End> {
        let mut written = 0;
        // The run of allowed bytes not yet written.
        let mut run: Option<Range<usize>> = None;
        let mut at = 0;
        while let Some(span) = self.framer.next_span(&data[at..]).map_err(|e| {
            tracing::info!(error = %e, "browser sent an RFB message the relay can't frame");
            End::RfbProtocol
        })? {
            let range = at..at + span.len;
            at = range.end;
            if span.starts_message {
                self.check_order(span.kind)?;
            }
            if span.kind == MessageKind::SetPixelFormat && span.ends_message {
                // Before any later message is written: an update the server sends in
                // answer to it is in this format.
                self.format_set()?;
            }
            if !span.kind.allowed_for_view() {
                if span.starts_message {
                    self.barring = Barred::check(self.view_only, &self.gate).or_else(|| {
                        (span.kind == MessageKind::ClientCutText && !self.clipboard_in)
                            .then_some(Barred::Clipboard)
                    });
                    if let Some(why) = self.barring {
                        why.count(span.kind.as_str());
                    }
                }
                if self.barring.is_some() {
                    written += write_run(upstream, data, run.take()).await?;
                    continue;
                }
            }
            if !span.carried().is_empty() {
                written += write_run(upstream, data, run.take()).await?;
                write_all(upstream, span.carried())
                    .await
                    .map_err(|_| End::UpstreamClosed)?;
                written += span.carried().len();
            }
            run = Some(match run {
                Some(r) if r.end == range.start => r.start..range.end,
                Some(r) => {
                    written += write_run(upstream, data, Some(r)).await?;
                    range
                }
                None => range,
            });
        }
        written += write_run(upstream, data, run).await?;
        Ok(written)
    }

    /// A message of `kind` starts: refuses a SetPixelFormat once updates were asked
    /// for, in a session that pins its format.
    fn check_order(&mut self, kind: MessageKind) -> Result<(), End> {
        if !self.pins_format {
            return Ok(());
        }
        match kind {
            MessageKind::FramebufferUpdateRequest | MessageKind::EnableContinuousUpdates => {
                self.updates_asked = true;
            }
            MessageKind::SetPixelFormat if self.updates_asked => {
                tracing::info!(
                    "SetPixelFormat after the first update request, in a session whose server stream the relay filters"
                );
                return Err(End::RfbProtocol);
            }
            _ => {}
        }
        Ok(())
    }

    /// A SetPixelFormat is complete: its format is the one the server's next updates
    /// are in.
    fn format_set(&mut self) -> Result<(), End> {
        let Some(format) = self.framer.pixel_format() else {
            return Ok(());
        };
        if self.pins_format && tight_pixels_disputed(&format) {
            tracing::info!(
                ?format,
                "a pixel format VNC servers frame Tight differently in, in a session whose server stream the relay filters"
            );
            return Err(End::RfbProtocol);
        }
        self.formats
            .send_if_modified(|f| std::mem::replace(f, format) != format);
        Ok(())
    }
}

/// Whether VNC servers disagree on the size of a Tight pixel in `format`: 32 bpp true
/// colour of depth 24 with 8-bit channels gets 3-byte Tight pixels from LibVNCServer
/// whatever its shifts, from TigerVNC only when every shift is a whole byte.
fn tight_pixels_disputed(format: &PixelFormat) -> bool {
    format.true_colour
        && format.bits_per_pixel == 32
        && format.depth == 24
        && (format.red_max, format.green_max, format.blue_max) == (255, 255, 255)
        && [format.red_shift, format.green_shift, format.blue_shift]
            .iter()
            .any(|shift| shift % 8 != 0)
}

async fn write_run(
    upstream: &TcpStream,
    data: &[u8],
    run: Option<Range<usize>>,
) -> Result<usize, End> {
    let Some(run) = run.filter(|r| !r.is_empty()) else {
        return Ok(0);
    };
    let bytes = &data[run];
    write_all(upstream, bytes)
        .await
        .map_err(|_| End::UpstreamClosed)?;
    Ok(bytes.len())
}
