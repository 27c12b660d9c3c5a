//! The raw (websockify-compatible) WebSocket transport: the browser's WebSocket and the
//! container's RFB socket, pumped both ways inside the session's task.
//!
//! The down pump (container → browser) is the only writer to the browser: data frames
//! are a stack header plus the very buffer read from the container, written with one
//! vectored write; Pongs and Pings go between data frames; the Close frame last. The
//! up pump (browser → container) decodes frames in place and writes unmasked payload
//! straight to the container. Each direction has one buffer in flight at most, taken
//! only when its socket is readable, so an idle session holds no buffer and a browser
//! that stops reading stalls the container through TCP instead of growing memory.
//! A recorded session's down pump hands each buffer, once written to the browser, to
//! its [`Recorder`] instead of the pool (no copy; see [`crate::recording`]); an
//! unrecorded one pays one branch per read for that.

pub mod frame;
pub mod upgrade;

use std::pin::pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use bytes::Bytes;
use tokio::net::TcpStream;
use tokio::time::{Instant, MissedTickBehavior, sleep};
use vnc_shared::rfb::Established;

use crate::config::Limits;
use crate::metrics::SessionMetrics;
use crate::recording::Recorder;
use crate::session::end::{CLOSE_GRACE, End};
use crate::session::rfb::Filter;
use crate::session::server_stream::CutTextFilter;
use crate::session::{Activity, Ending, Link, Transport};
use crate::wire::bufpool;
use crate::wire::io::{Socket, read_when_ready, try_write_vectored, write_all_vectored};
use crate::wire::signal::Signal;
use frame::{ControlFrame, Decoded, Decoder, PingPayload, ServerHeader, opcode};

/// Bytes read from the browser at once during the RFB handshake.
const HANDSHAKE_READ: usize = 16 * 1024;

/// The raw WebSocket transport: the upgraded connection and its frame decoder.
pub struct WebSocket<B> {
    stream: B,
    decoder: Decoder,
    /// Bytes the browser sent right behind its HTTP request.
    leftover: Bytes,
}

impl<B: Socket> WebSocket<B> {
    pub fn new(stream: B, leftover: Bytes, limits: &Limits) -> Self {
        WebSocket {
            stream,
            decoder: Decoder::new(limits.max_message_size as u64),
            leftover,
        }
    }
}

impl<B: Socket> Transport for WebSocket<B> {
    /// One binary frame.
    async fn send(&mut self, bytes: &[u8]) -> Result<(), End> {
        let header = ServerHeader::new(opcode::BINARY, bytes.len());
        write_all_vectored(&self.stream, header.as_bytes(), bytes, 0)
            .await
            .map_err(|_| End::ClientGone)
    }

    /// Binary frames' payload; Pings answered at once; Close or a protocol error ends
    /// the session.
    async fn recv(&mut self) -> Result<Vec<u8>, End> {
        loop {
            let mut input = if self.leftover.is_empty() {
                let (mut buf, n) = read_when_ready(&self.stream, HANDSHAKE_READ)
                    .await
                    .map_err(|_| End::ClientGone)?;
                if n == 0 {
                    bufpool::give(buf);
                    return Err(End::ClientGone);
                }
                buf.truncate(n);
                buf
            } else {
                std::mem::take(&mut self.leftover).to_vec()
            };
            let mut data = Vec::new();
            let mut at = 0;
            while at < input.len() {
                let (used, item) = self
                    .decoder
                    .decode(&mut input[at..])
                    .map_err(End::Protocol)?;
                match item {
                    Some(Decoded::Data(range)) => {
                        data.extend_from_slice(&input[at + range.start..at + range.end]);
                    }
                    Some(Decoded::Ping(payload)) => {
                        let pong = ControlFrame::new(opcode::PONG, payload.as_bytes());
                        write_all_vectored(&self.stream, &[], pong.as_bytes(), 0)
                            .await
                            .map_err(|_| End::ClientGone)?;
                    }
                    Some(Decoded::Close(_)) => return Err(End::ClientClosed),
                    Some(Decoded::Pong) | None => {}
                }
                at += used;
            }
            if !data.is_empty() {
                return Ok(data);
            }
        }
    }

    /// Close, then the browser's answer (its Close or its hang-up): a socket closed
    /// with the browser's bytes unread is reset, and a reset can lose the Close and
    /// the RFB reason before it on the way.
    async fn refuse(&mut self, end: End) {
        let (code, reason) = end.close();
        let close = ControlFrame::close(code, reason);
        let _ = tokio::time::timeout(CLOSE_GRACE, async {
            if write_all_vectored(&self.stream, &[], close.as_bytes(), 0)
                .await
                .is_ok()
            {
                while self.recv().await.is_ok() {}
            }
        })
        .await;
    }

    /// The two pumps; once the end is decided the writer finishes its frame, sends
    /// Close and returns (bounded by the grace), then the browser gets the grace to
    /// answer with its own Close.
    async fn relay(&mut self, link: Link<'_>, established: Established) -> End {
        let Link {
            upstream,
            limits,
            metrics,
            recorder,
            policy: _,
            activity,
            ending,
            filter,
            cut_text,
        } = link;
        let shared = Shared {
            browser: &self.stream,
            upstream,
            limits,
            metrics,
            activity,
            ending,
            missed_pongs: AtomicU32::new(0),
            ping: Mutex::new(None),
            pong_due: Signal::default(),
        };
        let decoder = &mut self.decoder;
        let mut up = pin!(up_pump(&shared, decoder, filter, established.from_client));
        let mut down = pin!(down_pump(&shared, recorder, cut_text));
        let (mut up_done, mut down_done) = (false, false);
        let end = tokio::select! {
            biased;
            end = ending.wait() => end,
            e = &mut up => { up_done = true; e }
            e = &mut down => { down_done = true; e }
        };
        let end = ending.finish(end);
        if !down_done {
            down.await;
        }
        if !up_done {
            let _ = tokio::time::timeout(CLOSE_GRACE, up).await;
        }
        end
    }

    /// The down pump sent Close already.
    async fn close(self, _end: End) {}
}

/// State the pumps share. Nothing here is locked per relayed message: atomics and
/// [`Signal`]s, and a mutex touched only when the browser pings.
struct Shared<'a, B> {
    browser: &'a B,
    upstream: &'a TcpStream,
    limits: &'a Limits,
    metrics: &'a SessionMetrics,
    activity: &'a Activity,
    /// Set once the session's end is decided.
    ending: &'a Ending,
    missed_pongs: AtomicU32,
    /// The latest Ping to answer, and the flag that tells the writer so.
    ping: Mutex<Option<PingPayload>>,
    pong_due: Signal,
}

impl<B: Socket> Shared<'_, B> {
    fn touch(&self) {
        self.activity.touch();
    }

    /// Records why the session ends (the first reason wins) and wakes the writer.
    fn finish(&self, end: End) -> End {
        self.ending.finish(end)
    }

    /// Resolves once the session has decided to end and the grace has run out.
    async fn grace_over(&self) {
        self.ending.wait().await;
        sleep(CLOSE_GRACE).await;
    }

    /// Writes to the browser; gives up once the session is ending and the grace ran out
    /// (a browser that reads nothing must not hold the session open). The common case,
    /// a socket with room, completes without building the slow path's timers.
    async fn write_browser(&self, head: &[u8], body: &[u8]) -> bool {
        let mut done = 0;
        match try_write_vectored(self.browser, head, body, &mut done) {
            Ok(true) if !self.browser.pending() => return true,
            Ok(_) => {}
            Err(_) => return false,
        }
        tokio::select! {
            biased;
            r = write_all_vectored(self.browser, head, body, done) => r.is_ok(),
            _ = self.grace_over() => false,
        }
    }

    /// Hands a Ping to the writer to answer; a newer one replaces an unanswered one.
    fn answer_ping(&self, payload: PingPayload) {
        if let Ok(mut ping) = self.ping.lock() {
            *ping = Some(payload);
        }
        self.pong_due.set(1);
    }
}

/// Container → browser, plus every control frame. Ends by writing Close. A recorded
/// session hands each buffer the browser got to `recorder` instead of the pool; a
/// session that may not read the desktop's clipboard has `cut_text` take it out of
/// each buffer first.
async fn down_pump<B: Socket>(
    shared: &Shared<'_, B>,
    mut recorder: Option<Recorder>,
    mut cut_text: Option<CutTextFilter>,
) -> End {
    let limits = shared.limits;
    let mut ping =
        tokio::time::interval_at(Instant::now() + limits.ping_interval, limits.ping_interval);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let end = loop {
        tokio::select! {
            biased;
            _ = shared.ending.wait() => break None,
            _ = shared.pong_due.wait_take() => {
                let payload = shared.ping.lock().ok().and_then(|mut p| p.take());
                if let Some(payload) = payload {
                    let pong = ControlFrame::new(opcode::PONG, payload.as_bytes());
                    if !shared.write_browser(&[], pong.as_bytes()).await {
                        break Some(End::ClientGone);
                    }
                }
            }
            _ = ping.tick() => {
                if shared.missed_pongs.fetch_add(1, Ordering::Relaxed) >= limits.max_missed_pongs {
                    break Some(End::PingTimeout);
                }
                let frame = ControlFrame::new(opcode::PING, b"");
                if !shared.write_browser(&[], frame.as_bytes()).await {
                    break Some(End::ClientGone);
                }
            }
            read = read_when_ready(shared.upstream, limits.read_buffer_size) => {
                let (mut buf, mut n) = match read {
                    Ok((buf, 0)) => { bufpool::give(buf); break Some(End::UpstreamClosed) }
                    Ok(read) => read,
                    Err(_) => break Some(End::UpstreamError),
                };
                if let Some(cut) = cut_text.as_mut() {
                    n = match cut.keep(&mut buf[..n]) {
                        Ok(0) => { bufpool::give(buf); continue }
                        Ok(kept) => kept,
                        Err(end) => { bufpool::give(buf); break Some(end) }
                    };
                }
                let header = ServerHeader::new(opcode::BINARY, n);
                if !shared.write_browser(header.as_bytes(), &buf[..n]).await {
                    bufpool::give(buf);
                    break Some(End::ClientGone);
                }
                match &mut recorder {
                    None => bufpool::give(buf),
                    Some(r) => r.record_pooled(buf, n),
                }
                shared.metrics.to_client.increment(n as u64);
                shared.touch();
            }
        }
    };
    let end = shared.finish(end.unwrap_or(End::Draining));
    if end != End::ClientGone {
        let (code, reason) = end.close();
        let close = ControlFrame::close(code, reason);
        shared.write_browser(&[], close.as_bytes()).await;
    }
    end
}

/// Browser → container. Returns when the browser closes, breaks the protocol or the
/// container stops taking bytes. `first` is what the browser sent right after
/// ClientInit (already unframed from WebSocket).
async fn up_pump<B: Socket>(
    shared: &Shared<'_, B>,
    decoder: &mut Decoder,
    mut filter: Filter,
    first: Vec<u8>,
) -> End {
    let limits = shared.limits;
    if !first.is_empty()
        && let Err(end) = send_up(shared, &mut filter, &first).await
    {
        return end;
    }
    loop {
        let (mut buf, n) = match read_when_ready(shared.browser, limits.read_buffer_size).await {
            Ok((buf, 0)) => {
                bufpool::give(buf);
                return End::ClientGone;
            }
            Ok(read) => read,
            Err(_) => return End::ClientGone,
        };
        let step = forward(shared, decoder, &mut filter, &mut buf[..n]).await;
        bufpool::give(buf);
        if let Some(end) = step {
            return end;
        }
    }
}

/// Browser bytes through the RFB filter to the container.
async fn send_up<B: Socket>(
    shared: &Shared<'_, B>,
    filter: &mut Filter,
    data: &[u8],
) -> Result<(), End> {
    let written = filter.forward(shared.upstream, data).await?;
    shared.metrics.to_upstream.increment(written as u64);
    shared.touch();
    Ok(())
}

/// Decodes one read's worth of frames and forwards their payload.
async fn forward<B: Socket>(
    shared: &Shared<'_, B>,
    decoder: &mut Decoder,
    filter: &mut Filter,
    input: &mut [u8],
) -> Option<End> {
    let mut at = 0;
    while at < input.len() {
        let (used, item) = match decoder.decode(&mut input[at..]) {
            Ok(step) => step,
            Err(e) => return Some(End::Protocol(e)),
        };
        match item {
            Some(Decoded::Data(range)) => {
                let data = &input[at + range.start..at + range.end];
                if let Err(end) = send_up(shared, filter, data).await {
                    return Some(end);
                }
            }
            Some(Decoded::Ping(payload)) => shared.answer_ping(payload),
            Some(Decoded::Pong) => shared.missed_pongs.store(0, Ordering::Relaxed),
            Some(Decoded::Close(_)) => return Some(End::ClientClosed),
            None => {}
        }
        at += used;
    }
    None
}
