//! One relayed session: the browser's WebSocket and the container's RFB socket, pumped
//! both ways inside one task until either side ends it or a limit does.
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

use std::pin::pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpStream;
use tokio::time::{Instant, MissedTickBehavior, sleep, sleep_until};

use crate::bufpool;
use crate::config::Limits;
use crate::frame::{ControlFrame, Decoded, Decoder, FrameError, PingPayload, ServerHeader, opcode};
use crate::io::{Socket, read_when_ready, try_write_vectored, write_all, write_all_vectored};
use crate::metrics::SessionMetrics;
use crate::recording::Recorder;
use crate::rfb::{self, Filter, RfbPolicy};
use crate::signal::Signal;

/// After the session is decided to end: time to finish the frame being written, send
/// Close and receive the browser's Close.
pub const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// Bytes read from the browser at once during the RFB handshake.
const HANDSHAKE_READ: usize = 16 * 1024;

/// Why the relay ends a session from outside it; the value of the session's stop
/// [`Signal`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Stop {
    Draining = 1,
    /// Control said the container stopped (room event `container.stopped`).
    ContainerStopped = 2,
    /// socket.io: the browser disconnected.
    ClientGone = 3,
    /// socket.io: the browser sent a `vnc:data` event that isn't one binary attachment.
    BadData = 4,
    /// socket.io: the browser's bytes arrive faster than the VNC server takes them.
    InputOverflow = 5,
    /// socket.io: the browser stopped answering Engine.IO pings.
    PingTimeout = 6,
    /// A kick on the control channel named this session (or its user or container).
    Kicked = 7,
    /// The session's token was revoked.
    Revoked = 8,
}

impl Stop {
    /// The session end a stop signal value stands for.
    pub fn end_for(value: u8) -> End {
        match value {
            v if v == Stop::ContainerStopped as u8 => End::ContainerStopped,
            v if v == Stop::ClientGone as u8 => End::ClientGone,
            v if v == Stop::BadData as u8 => End::BadData,
            v if v == Stop::InputOverflow as u8 => End::InputOverflow,
            v if v == Stop::PingTimeout as u8 => End::PingTimeout,
            v if v == Stop::Kicked as u8 => End::Kicked,
            v if v == Stop::Revoked as u8 => End::Revoked,
            _ => End::Draining,
        }
    }
}

/// Why a session ended. Each maps to one close code and one metrics outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// The container closed its socket.
    UpstreamClosed,
    /// Reading or writing the container failed.
    UpstreamError,
    /// The browser sent Close.
    ClientClosed,
    /// The browser's connection dropped without Close.
    ClientGone,
    /// The browser broke the WebSocket protocol.
    Protocol(FrameError),
    /// The browser stopped answering Pings.
    PingTimeout,
    Idle,
    MaxDuration,
    /// The relay is shutting down.
    Draining,
    /// The container stopped.
    ContainerStopped,
    /// socket.io: a `vnc:data` event without exactly one binary attachment.
    BadData,
    /// socket.io: the browser outran the VNC server by more than the input queue.
    InputOverflow,
    /// The RFB handshake did not finish within the handshake timeout.
    HandshakeTimeout,
    /// The browser broke the RFB handshake.
    ClientHandshake,
    /// The VNC server broke the RFB handshake, offered nothing the relay speaks, or
    /// refused the container's password.
    UpstreamHandshake,
    /// The browser sent an RFB message the relay can't frame.
    RfbProtocol,
    /// Ended by an operator (kick).
    Kicked,
    /// The token was revoked.
    Revoked,
}

impl End {
    /// Close code and reason sent to the browser.
    pub fn close(self) -> (u16, &'static str) {
        match self {
            End::UpstreamClosed => (1000, "VNC server closed the connection"),
            End::ClientClosed | End::ClientGone => (1000, "closed"),
            End::UpstreamError => (1011, "VNC server connection failed"),
            End::Protocol(FrameError::TooBig(_)) => (1009, "message too big"),
            End::Protocol(FrameError::Text) => (1008, "text frames are not supported"),
            End::Protocol(_) => (1008, "WebSocket protocol error"),
            End::PingTimeout => (1011, "browser stopped answering pings"),
            End::Idle => (4001, "idle timeout"),
            End::MaxDuration => (4002, "maximum session duration reached"),
            End::Draining => (1001, "relay is draining"),
            End::ContainerStopped => (4004, "container stopped"),
            End::BadData => (1008, "vnc:data must carry one binary attachment"),
            End::InputOverflow => (1008, "input arrives faster than the VNC server reads it"),
            End::HandshakeTimeout => (1008, "RFB handshake timed out"),
            End::ClientHandshake => (1008, "RFB handshake failed"),
            End::UpstreamHandshake => (1011, "RFB handshake with the VNC server failed"),
            End::RfbProtocol => (1008, "RFB message the relay can't accept"),
            End::Kicked => (4003, "session ended by an operator"),
            End::Revoked => (4003, "token revoked"),
        }
    }

    /// Label of `vnc_relay_sessions_total{outcome}`.
    pub fn outcome(self) -> &'static str {
        match self {
            End::UpstreamClosed => "upstream_closed",
            End::UpstreamError => "upstream_error",
            End::ClientClosed => "client_closed",
            End::ClientGone => "client_gone",
            End::Protocol(FrameError::TooBig(_)) => "message_too_big",
            End::Protocol(_) => "protocol_error",
            End::PingTimeout => "ping_timeout",
            End::Idle => "idle_timeout",
            End::MaxDuration => "max_duration",
            End::Draining => "draining",
            End::ContainerStopped => "container_stopped",
            End::BadData => "protocol_error",
            End::InputOverflow => "input_overflow",
            End::HandshakeTimeout => "handshake_timeout",
            End::ClientHandshake => "rfb_client_error",
            End::UpstreamHandshake => "rfb_upstream_error",
            End::RfbProtocol => "rfb_protocol_error",
            End::Kicked => "kicked",
            End::Revoked => "revoked",
        }
    }
}

/// Where a session reports what it relays, besides the browser: the byte counters,
/// and the recorder when the session is recorded.
pub struct Taps<'a> {
    pub metrics: &'a SessionMetrics,
    pub recorder: Option<Recorder>,
}

/// State the pumps share. Nothing here is locked per relayed message: atomics and
/// [`Signal`]s, and a mutex touched only when the browser pings.
struct Shared<'a, B> {
    browser: &'a B,
    upstream: &'a TcpStream,
    limits: &'a Limits,
    metrics: &'a SessionMetrics,
    activity: Activity,
    missed_pongs: AtomicU32,
    /// The latest Ping to answer, and the flag that tells the writer so.
    ping: Mutex<Option<PingPayload>>,
    pong_due: Signal,
    /// Set once the session's end is decided; `end` says why.
    ending: Signal,
    end: OnceLock<End>,
}

/// When a session last relayed a byte, for the idle timer; one relaxed store per
/// message.
pub struct Activity {
    started: Instant,
    /// Milliseconds after `started` of the last relayed byte.
    last_ms: AtomicU64,
}

impl Default for Activity {
    fn default() -> Activity {
        Activity {
            started: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }
}

impl Activity {
    pub fn touch(&self) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Resolves when nothing was relayed for `timeout`.
    pub async fn idle(&self, timeout: Duration) {
        loop {
            let last = self.last_ms.load(Ordering::Relaxed);
            let deadline = self.started + Duration::from_millis(last) + timeout;
            if Instant::now() >= deadline {
                return;
            }
            sleep_until(deadline).await;
        }
    }
}

impl<B: Socket> Shared<'_, B> {
    fn touch(&self) {
        self.activity.touch();
    }

    /// Records why the session ends (the first reason wins) and wakes the writer.
    fn finish(&self, end: End) -> End {
        let end = *self.end.get_or_init(|| end);
        self.ending.set(1);
        end
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
            Ok(true) => return true,
            Ok(false) => {}
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

/// Runs the RFB handshake, then relays until the session ends; returns why. `leftover`
/// holds bytes the browser sent right behind its HTTP request. Setting `stop` (a
/// [`Stop`]) ends the session from outside.
pub async fn relay<B: Socket>(
    browser: B,
    leftover: Bytes,
    upstream: TcpStream,
    limits: &Limits,
    stop: &Signal,
    taps: Taps<'_>,
    policy: &RfbPolicy,
) -> End {
    let Taps {
        metrics,
        mut recorder,
    } = taps;
    let mut decoder = Decoder::new(limits.max_message_size as u64);
    let mut raw = RawBrowser {
        stream: &browser,
        decoder: &mut decoder,
        leftover,
        recorder: recorder.as_mut(),
    };
    let handshake = tokio::select! {
        biased;
        v = stop.wait() => Err(Stop::end_for(v)),
        _ = sleep(limits.handshake_timeout) => Err(End::HandshakeTimeout),
        r = rfb::handshake(&upstream, &mut raw, policy) => r,
    };
    let established = match handshake {
        Ok(established) => established,
        Err(end) => {
            let (code, reason) = end.close();
            let close = ControlFrame::close(code, reason);
            // Close, then the browser's answer (its Close or its hang-up): a socket
            // closed with the browser's bytes unread is reset, and a reset can lose
            // the Close and the RFB reason before it on the way.
            let _ = tokio::time::timeout(CLOSE_GRACE, async {
                if write_all_vectored(&browser, &[], close.as_bytes(), 0)
                    .await
                    .is_ok()
                {
                    while rfb::Browser::recv(&mut raw).await.is_ok() {}
                }
            })
            .await;
            return end;
        }
    };
    // Handshake bytes not yet written go first.
    if write_all(&upstream, &established.to_server).await.is_err() {
        return End::UpstreamClosed;
    }
    if !established.to_client.is_empty() {
        let header = ServerHeader::new(opcode::BINARY, established.to_client.len());
        let sent = write_all_vectored(&browser, header.as_bytes(), &established.to_client, 0);
        if sent.await.is_err() {
            return End::ClientGone;
        }
        if let Some(r) = recorder.as_mut() {
            r.record_slice(&established.to_client);
        }
    }
    let filter = Filter::new(policy.view_only);
    let shared = Shared {
        browser: &browser,
        upstream: &upstream,
        limits,
        metrics,
        activity: Activity::default(),
        missed_pongs: AtomicU32::new(0),
        ping: Mutex::new(None),
        pong_due: Signal::default(),
        ending: Signal::default(),
        end: OnceLock::new(),
    };
    let mut up = pin!(up_pump(&shared, decoder, filter, established.from_client));
    let mut down = pin!(down_pump(&shared, recorder));
    let (mut up_done, mut down_done) = (false, false);
    let end = tokio::select! {
        biased;
        v = stop.wait() => Stop::end_for(v),
        _ = sleep(limits.max_session_duration) => End::MaxDuration,
        _ = shared.activity.idle(limits.idle_timeout) => End::Idle,
        e = &mut up => { up_done = true; e }
        e = &mut down => { down_done = true; e }
    };
    let end = shared.finish(end);
    // The writer finishes its frame, sends Close and returns (bounded by the grace);
    // then the browser gets the grace to answer with its own Close.
    if !down_done {
        down.await;
    }
    if !up_done {
        let _ = tokio::time::timeout(CLOSE_GRACE, up).await;
    }
    end
}

/// Container → browser, plus every control frame. Ends by writing Close. A recorded
/// session hands each buffer the browser got to `recorder` instead of the pool.
async fn down_pump<B: Socket>(shared: &Shared<'_, B>, mut recorder: Option<Recorder>) -> End {
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
                let (buf, n) = match read {
                    Ok((buf, 0)) => { bufpool::give(buf); break Some(End::UpstreamClosed) }
                    Ok(read) => read,
                    Err(_) => break Some(End::UpstreamError),
                };
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
    mut decoder: Decoder,
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
        let step = forward(shared, &mut decoder, &mut filter, &mut buf[..n]).await;
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

/// The raw WebSocket browser during the RFB handshake: handshake bytes as binary
/// frames; Pings answered at once; Close or a protocol error ends the session.
struct RawBrowser<'a, B> {
    stream: &'a B,
    decoder: &'a mut Decoder,
    /// Bytes the browser sent right behind its HTTP request.
    leftover: Bytes,
    /// The session's recorder, when it is recorded: the handshake is recorded too.
    recorder: Option<&'a mut Recorder>,
}

impl<B: Socket> rfb::Browser for RawBrowser<'_, B> {
    async fn send(&mut self, bytes: &[u8]) -> Result<(), End> {
        let header = ServerHeader::new(opcode::BINARY, bytes.len());
        write_all_vectored(self.stream, header.as_bytes(), bytes, 0)
            .await
            .map_err(|_| End::ClientGone)?;
        if let Some(r) = self.recorder.as_deref_mut() {
            r.record_slice(bytes);
        }
        Ok(())
    }

    async fn recv(&mut self) -> Result<Vec<u8>, End> {
        loop {
            let mut input = if self.leftover.is_empty() {
                let (mut buf, n) = read_when_ready(self.stream, HANDSHAKE_READ)
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
                        write_all_vectored(self.stream, &[], pong.as_bytes(), 0)
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
}
