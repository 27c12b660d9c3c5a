//! One session, for both transports: the RFB handshake under the stop signal and the
//! handshake timeout, the handshake's first bytes each way, then the transport's
//! pumps under the session's timers (maximum duration, idle) until either side or the
//! relay ends it; and the bookkeeping around it (registry, live sessions, room
//! announcements, metrics, recording).
//!
//! A transport ([`Transport`]) says how bytes reach the browser and come back from it:
//! the raw WebSocket (`transport/websocket`) and socket.io (`transport/socketio`). The
//! driver here decides *when* a session ends; the transport decides *how* its pumps
//! wind down and what the browser is told.

pub mod end;
pub mod gate;
pub mod record;
pub mod rfb;
pub mod server_stream;

use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tokio::time::{sleep, sleep_until};
use vnc_shared::rfb::Established;

use crate::admission::Admitted;
use crate::config::Limits;
use crate::metrics::SessionMetrics;
use crate::node::live::LiveGuard;
use crate::node::{Node, driver};
use crate::recording::Recorder;
use crate::transport::socketio::room::announce;
use crate::wire::io::write_all;
use crate::wire::signal::Signal;
use end::{End, StopSignal};
use gate::InputGate;
use record::SessionRecord;
use rfb::{Filter, RfbPolicy};
use server_stream::CutTextFilter;

/// How a session reaches its browser. The handshake phase sends and receives whole
/// RFB byte runs; the data phase is the transport's own pumps.
pub trait Transport: Send {
    /// Sends RFB bytes to the browser (handshake, and the server's first bytes).
    fn send(&mut self, bytes: &[u8]) -> impl Future<Output = Result<(), End>> + Send;
    /// The browser's next RFB bytes during the handshake (never empty).
    fn recv(&mut self) -> impl Future<Output = Result<Vec<u8>, End>> + Send;
    /// The handshake failed with `end`: what the browser is told at once.
    fn refuse(&mut self, end: End) -> impl Future<Output = ()> + Send;
    /// Relays both ways until the session ends; returns why. Once [`Link::ending`] is
    /// set it winds down within [`end::CLOSE_GRACE`] and returns.
    fn relay(
        &mut self,
        link: Link<'_>,
        established: Established,
    ) -> impl Future<Output = End> + Send;
    /// After the session's bookkeeping: what the browser is told last.
    fn close(self, end: End) -> impl Future<Output = ()> + Send;
}

/// What a transport's pumps get from the driver.
pub struct Link<'a> {
    pub upstream: &'a TcpStream,
    pub limits: &'a Limits,
    pub metrics: &'a SessionMetrics,
    /// The session's recorder, when it is recorded.
    pub recorder: Option<Recorder>,
    pub policy: &'a RfbPolicy,
    /// Touched by the pumps on every relayed message, for the idle timer.
    pub activity: &'a Activity,
    /// Set once the session's end is decided.
    pub ending: &'a Ending,
    /// Every browser byte goes through it on its way to the VNC server.
    pub filter: Filter,
    /// For a session that may not read the desktop's clipboard: every server byte goes
    /// through it on its way to the browser.
    pub cut_text: Option<CutTextFilter>,
}

/// Runs one admitted session over `transport` to its end, with its bookkeeping.
/// Setting `stop` ends it from outside.
///
/// Not an `async fn`: what the session doesn't keep of `admitted` (its claims) is
/// dropped before the session's future is made, so the future, which an idle session
/// holds for its whole life, carries only what it uses.
pub fn drive<T: Transport>(
    node: Arc<Node>,
    admitted: Admitted,
    stop: Arc<StopSignal>,
    mut transport: T,
) -> impl Future<Output = ()> + Send {
    let Admitted {
        upstream,
        policy,
        record,
        recorded,
        permit,
        gate,
        ..
    } = admitted;
    async move {
        let node = &*node;
        let tracked = track(node, record.clone(), &stop, gate.clone());
        let config = node.config();
        let recorder = node
            .recordings()
            .filter(|_| recorded)
            .map(|r| r.start(&record, node.tracker()));
        let session = Session {
            limits: &config.limits,
            stop: &stop,
            metrics: &tracked.metrics,
            policy: &policy,
            gate: &gate,
        };
        // The room learns of the session, and a privileged one takes a free lease
        // before its first input can arrive. That and the bookkeeping at the end wait
        // on Redis commands, whose futures are large (9 KiB): boxed, they take memory
        // only while they run, not in every session's task for its whole life.
        Box::pin(driver::joined(node, &record)).await;
        let end = run(&mut transport, upstream, session, recorder).await;
        Box::pin(tracked.finish(end)).await;
        drop(permit);
        transport.close(end).await;
    }
}

/// What [`run`] needs of the session beside its two ends.
struct Session<'a> {
    limits: &'a Limits,
    stop: &'a StopSignal,
    metrics: &'a SessionMetrics,
    policy: &'a RfbPolicy,
    gate: &'a Arc<InputGate>,
}

/// The handshake, then the pumps under the timers; returns why the session ended.
async fn run<T: Transport>(
    transport: &mut T,
    upstream: TcpStream,
    session: Session<'_>,
    mut recorder: Option<Recorder>,
) -> End {
    let Session {
        limits,
        stop,
        metrics,
        policy,
        gate,
    } = session;
    let handshake = {
        let mut browser = Recorded {
            transport: &mut *transport,
            recorder: recorder.as_mut(),
        };
        tokio::select! {
            biased;
            why = stop.wait() => Err(why.end()),
            _ = sleep(limits.handshake_timeout) => Err(End::HandshakeTimeout),
            r = rfb::handshake(&upstream, &mut browser, policy) => r,
        }
    };
    let mut established = match handshake {
        Ok(established) => established,
        Err(end) => {
            transport.refuse(end).await;
            return end;
        }
    };
    let filter = Filter::new(policy, gate.clone(), established.server_init.pixel_format);
    let mut cut_text = CutTextFilter::new(policy, filter.formats());
    if let Some(cut) = cut_text.as_mut() {
        // The server's first messages came with the handshake's last bytes.
        let from = established.to_client.len() - established.server_data_len;
        if let Err(end) = cut.keep_tail(&mut established.to_client, from) {
            transport.refuse(end).await;
            return end;
        }
        established.server_data_len = established.to_client.len() - from;
    }
    // Handshake bytes not yet written go first.
    if write_all(&upstream, &established.to_server).await.is_err() {
        return End::UpstreamClosed;
    }
    if !established.to_client.is_empty() {
        let mut browser = Recorded {
            transport: &mut *transport,
            recorder: recorder.as_mut(),
        };
        if let Err(end) = rfb::Browser::send(&mut browser, &established.to_client).await {
            return end;
        }
    }
    let activity = Activity::default();
    let ending = Ending::default();
    let link = Link {
        upstream: &upstream,
        limits,
        metrics,
        recorder,
        policy,
        activity: &activity,
        ending: &ending,
        filter,
        cut_text,
    };
    let mut pumps = pin!(transport.relay(link, established));
    let mut pumps_done = false;
    let end = tokio::select! {
        biased;
        why = stop.wait() => why.end(),
        _ = sleep(limits.max_session_duration) => End::MaxDuration,
        _ = activity.idle(limits.idle_timeout) => End::Idle,
        e = &mut pumps => { pumps_done = true; e }
    };
    let end = ending.finish(end);
    if !pumps_done {
        pumps.await;
    }
    end
}

/// A transport during the handshake, recording what the browser is sent when the
/// session is recorded.
struct Recorded<'a, T> {
    transport: &'a mut T,
    recorder: Option<&'a mut Recorder>,
}

impl<T: Transport> rfb::Browser for Recorded<'_, T> {
    async fn send(&mut self, bytes: &[u8]) -> Result<(), End> {
        self.transport.send(bytes).await?;
        if let Some(r) = self.recorder.as_deref_mut() {
            r.record_slice(bytes);
        }
        Ok(())
    }

    async fn recv(&mut self) -> Result<Vec<u8>, End> {
        self.transport.recv().await
    }
}

/// The session's decided end: the first reason wins; the pumps wait on it to wind down.
#[derive(Default)]
pub struct Ending {
    decided: Signal,
    end: OnceLock<End>,
}

impl Ending {
    /// Records why the session ends (the first reason wins) and wakes the pumps.
    pub fn finish(&self, end: End) -> End {
        let end = *self.end.get_or_init(|| end);
        self.decided.set(1);
        end
    }

    /// Resolves once the end is decided, with it.
    pub async fn wait(&self) -> End {
        self.decided.wait().await;
        self.end.get().copied().unwrap_or(End::Draining)
    }
}

/// When a session last relayed a byte, for the idle timer; one relaxed store per
/// message.
pub struct Activity {
    started: tokio::time::Instant,
    /// Milliseconds after `started` of the last relayed byte.
    last_ms: AtomicU64,
}

impl Default for Activity {
    fn default() -> Activity {
        Activity {
            started: tokio::time::Instant::now(),
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
            if tokio::time::Instant::now() >= deadline {
                return;
            }
            sleep_until(deadline).await;
        }
    }
}

/// A session's log span: a root span, so the connection's span (HTTP and the
/// handshakes) is freed once the session starts; it names the client too.
pub fn span(admitted: &Admitted, transport: &'static str) -> tracing::Span {
    let claims = &admitted.claims;
    tracing::info_span!(
        parent: None,
        "session",
        session.id = %admitted.record.sid,
        container.id = %claims.cid,
        user.id = %claims.sub,
        scope = claims.scope.as_str(),
        transport,
        client.addr = %admitted.record.client_addr,
    )
}

/// One session's bookkeeping (see [`track`]).
struct Tracked<'a> {
    node: &'a Node,
    record: Arc<SessionRecord>,
    metrics: SessionMetrics,
    started: Instant,
    _live: LiveGuard,
}

/// Starts one session's bookkeeping: registered for stops and its room, announced to
/// the room, counted. [`Tracked::finish`] ends it.
fn track<'a>(
    node: &'a Node,
    record: Arc<SessionRecord>,
    stop: &Arc<StopSignal>,
    gate: Arc<InputGate>,
) -> Tracked<'a> {
    tracing::info!("session started");
    let live = node.live().register(record.clone(), stop.clone(), gate);
    announce(node.socketio(), &record, "viewer.joined");
    Tracked {
        node,
        metrics: SessionMetrics::start(record.transport),
        record,
        started: Instant::now(),
        _live: live,
    }
}

impl Tracked<'_> {
    /// Counts the session's end, takes it out of the registry, tells its room and
    /// logs why it ended.
    async fn finish(self, end: End) {
        let Tracked {
            node,
            record,
            metrics,
            started,
            _live: live,
        } = self;
        // Out of the node's live sessions first: the lease it may free must not come
        // back to it, nor a heartbeat write it back to the registry.
        drop(live);
        if let Err(e) = node.store().end_session(&record).await {
            tracing::debug!(error = %e, "session record left to expire");
        }
        driver::left(node, &record).await;
        let lasted = started.elapsed();
        metrics.finish(end.outcome(), lasted);
        announce(node.socketio(), &record, "viewer.left");
        tracing::info!(
            outcome = end.outcome(),
            close.code = end.close().0,
            ?lasted,
            "session ended"
        );
    }
}
