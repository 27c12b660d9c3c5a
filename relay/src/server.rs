//! The public listener: the accept loop and, per connection, the HTTP request, the
//! checks that decide whether it may become a session, and then the session itself.
//!
//! All per-connection work (HTTP parsing, token, Redis, upstream connect) runs in the
//! connection's own task under the handshake timeout, so a slow peer never stalls the
//! accept loop. One task per session: after the upgrade the same task relays.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::{Service, service_fn};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;
use vnc_shared::schema::ContainerState;
use vnc_shared::swap::Swap;
use vnc_shared::tls::ReloadableTls;
use vnc_shared::token::{KeySet, Scope, VncClaims};

use crate::auth;
use crate::config::RelayConfig;
use crate::io::Socket;
use crate::live::{Live, LiveGuard, SessionRecord};
use crate::metrics::{ACCEPT_ERRORS, SessionMetrics, TLS_HANDSHAKE_ERRORS};
use crate::recording::{Recorder, Recordings};
use crate::reject::Reject;
use crate::rfb::RfbPolicy;
use crate::session::{self, End, Stop, Taps};
use crate::signal::Signal;
use crate::socketio::{self, Io, Signaled, WriteSignal};
use crate::store::{Admission, Store};
use crate::upgrade::{self, Upgrade};
use crate::upstream;
use crate::web;

/// Pending connections the kernel queues for the accept loop (capped by
/// `net.core.somaxconn`). A connect burst larger than the queue loses SYNs and those
/// clients wait a full second to retry, so keep it well above std's 128.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds a listener with [`LISTEN_BACKLOG`] and `SO_REUSEADDR` (a restarted relay can
/// bind while old connections linger in TIME_WAIT).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Largest HTTP request head the relay reads before the upgrade (hyper's minimum is
/// 8 KiB); a token in the URL and a few cookies fit easily.
const MAX_REQUEST_HEAD: usize = 16 * 1024;
/// Longest pause after an accept error such as EMFILE.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);
/// Time to tell a client over the session limit that the relay is full.
const BUSY_TIMEOUT: Duration = Duration::from_secs(1);

/// Bytes a TLS session's bridge moves between the TLS stream and the session at once,
/// each way: one TLS record's worth. The bridge holds both buffers for the session's
/// life.
const TLS_BRIDGE_BUFFER: usize = 16 * 1024;

/// What every connection of one relay shares.
pub struct Relay {
    /// The configuration in force; SIGHUP replaces it for what starts afterwards (live
    /// sessions keep the limits they started with).
    config: Swap<RelayConfig>,
    /// Token verification keys; SIGHUP swaps them (rotation) without touching sessions.
    keys: Swap<KeySet>,
    /// The public listener's certificate, when it speaks TLS; SIGHUP reloads it.
    pub tls: Option<ReloadableTls>,
    /// The session bound `sessions` was last sized to.
    max_sessions: Mutex<usize>,
    pub store: Store,
    /// Cancelled on SIGTERM: stop accepting, refuse new sessions, report unready.
    pub draining: CancellationToken,
    /// Cancelled at the drain deadline: close live sessions with 1001.
    pub stop: CancellationToken,
    /// One permit per session (and per connection still in its handshake).
    pub(crate) sessions: Arc<Semaphore>,
    /// This node's live sessions, by container.
    pub live: Arc<Live>,
    /// Every connection and session task, so shutdown can wait for them.
    pub tracker: TaskTracker,
    /// socket.io, once started (it needs Redis for its adapter).
    pub io: Arc<OnceLock<Io>>,
    pub(crate) socketio: OnceLock<socketio::Layer>,
    /// Where sessions are recorded; `None` records nothing.
    pub recordings: Option<Arc<Recordings>>,
}

/// A request that passed every check; its upgrade completes once the 101 is sent.
struct Accepted {
    on_upgrade: OnUpgrade,
    admitted: Admitted,
}

/// One session's bookkeeping, for both transports (see [`Relay::track`]).
pub(crate) struct Tracked<'a> {
    relay: &'a Relay,
    record: Arc<SessionRecord>,
    pub metrics: SessionMetrics,
    started: Instant,
    _live: LiveGuard,
}

impl Tracked<'_> {
    /// Counts the session's end, takes it out of the registry, tells its room and
    /// logs why it ended.
    pub async fn finish(self, end: End) {
        if let Err(e) = self.relay.store.end_session(&self.record).await {
            tracing::debug!(error = %e, "session record left to expire");
        }
        let lasted = self.started.elapsed();
        self.metrics.finish(end.outcome(), lasted);
        socketio::announce(self.relay, &self.record, "viewer.left");
        tracing::info!(
            outcome = end.outcome(),
            close.code = end.close().0,
            ?lasted,
            "session ended"
        );
    }
}

/// What a session starts from: the connected VNC server and the token's claims.
pub(crate) struct Admitted {
    pub upstream: TcpStream,
    pub claims: VncClaims,
    /// How the session speaks RFB: the password to inject, view-only.
    pub policy: RfbPolicy,
    /// The session as the registry has it (written at admission).
    pub record: Arc<SessionRecord>,
    /// The session is to be recorded (the relay records, and the container or the
    /// token's scope asks for it).
    pub recorded: bool,
}

impl Relay {
    pub fn new(
        config: RelayConfig,
        keys: KeySet,
        tls: Option<ReloadableTls>,
        store: Store,
        live: Arc<Live>,
        io: Arc<OnceLock<Io>>,
        recordings: Option<Arc<Recordings>>,
    ) -> Relay {
        let max_sessions = config.limits.max_sessions;
        Relay {
            config: Swap::new(config),
            keys: Swap::new(keys),
            tls,
            max_sessions: Mutex::new(max_sessions),
            store,
            draining: CancellationToken::new(),
            stop: CancellationToken::new(),
            sessions: Arc::new(Semaphore::new(max_sessions)),
            live,
            tracker: TaskTracker::new(),
            io,
            socketio: OnceLock::new(),
            recordings,
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<RelayConfig> {
        self.config.get()
    }

    /// The token keys in force.
    pub fn keys(&self) -> Arc<KeySet> {
        self.keys.get()
    }

    /// Puts a new configuration and key set in force for the next connections; the
    /// session bound grows at once and shrinks as sessions end.
    pub fn reconfigure(&self, config: RelayConfig, keys: KeySet) {
        let max = config.limits.max_sessions;
        self.keys.set(keys);
        self.config.set(config);
        let Ok(mut current) = self.max_sessions.lock() else {
            return;
        };
        if max > *current {
            self.sessions.add_permits(max - *current);
        } else if max < *current {
            let surplus = *current - max;
            let forgotten = self.sessions.forget_permits(surplus);
            if forgotten < surplus {
                let sessions = self.sessions.clone();
                // The rest are held by live sessions: retire them as those end.
                tokio::spawn(async move {
                    if let Ok(permits) = sessions
                        .acquire_many_owned((surplus - forgotten) as u32)
                        .await
                    {
                        permits.forget();
                    }
                });
            }
        }
        *current = max;
    }

    /// Ends every live session with `why` (and any that registers afterwards).
    pub fn stop_all(&self, why: Stop) {
        self.stop.cancel();
        self.live.stop_all(why);
    }

    /// Why the relay should not get new sessions now, if it shouldn't.
    pub fn not_ready(&self) -> Option<&'static str> {
        if self.draining.is_cancelled() {
            Some("draining")
        } else if !self.store.is_connected() {
            Some("redis unreachable")
        } else if self.keys().is_empty() {
            Some("no token keys")
        } else if self.socketio.get().is_none() {
            Some("socket.io starting")
        } else {
            None
        }
    }

    /// Accepts until draining starts; each connection runs in its own tracked task.
    pub async fn accept_loop(self: &Arc<Self>, listener: TcpListener) {
        let tracker = &self.tracker;
        let mut backoff = Duration::from_millis(5);
        loop {
            let (stream, peer) = tokio::select! {
                biased;
                _ = self.draining.cancelled() => return,
                r = listener.accept() => match r {
                    Ok(conn) => conn,
                    Err(e) => {
                        metrics::counter!(ACCEPT_ERRORS).increment(1);
                        if is_resource_exhausted(&e) {
                            // Out of file descriptors or memory: let sessions end and
                            // free some before trying again.
                            tracing::warn!(error = %e, ?backoff, "accept failed, backing off");
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
                        }
                        continue;
                    }
                },
            };
            backoff = Duration::from_millis(5);
            match self.sessions.clone().try_acquire_owned() {
                Ok(permit) => {
                    let relay = self.clone();
                    let span = tracing::info_span!("conn", client.addr = %peer);
                    tracker.spawn(relay.serve(stream, peer, permit).instrument(span));
                }
                Err(_) => {
                    let tls = self.tls.as_ref().map(ReloadableTls::acceptor);
                    tracker.spawn(refuse_busy(tls, stream));
                }
            }
        }
    }

    /// One connection: the TLS handshake if the listener speaks TLS, HTTP until
    /// upgrade, then the session; all before the upgrade within the handshake timeout.
    async fn serve(
        self: Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        permit: OwnedSemaphorePermit,
    ) {
        let _ = stream.set_nodelay(true);
        let started = tokio::time::Instant::now();
        let Some(tls) = &self.tls else {
            if let Some((browser, leftover, admitted)) = self.serve_http(stream, started).await {
                let session = self
                    .clone()
                    .run_session(browser, leftover, admitted, peer, permit);
                self.tracker
                    .spawn(session.instrument(tracing::Span::current()));
            }
            return;
        };
        let handshake = tls.acceptor().accept(stream);
        let stream = match tokio::time::timeout_at(
            started + self.config().limits.handshake_timeout,
            handshake,
        )
        .await
        {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                metrics::counter!(TLS_HANDSHAKE_ERRORS).increment(1);
                tracing::debug!(error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                metrics::counter!(TLS_HANDSHAKE_ERRORS).increment(1);
                tracing::debug!("TLS handshake timed out");
                return;
            }
        };
        if let Some((tls, leftover, admitted)) = self.serve_http(stream, started).await {
            let session = self
                .clone()
                .run_tls_session(tls, leftover, admitted, peer, permit);
            self.tracker
                .spawn(session.instrument(tracing::Span::current()));
        }
    }

    /// HTTP on one connection until it ends or upgrades, within what is left of the
    /// handshake timeout. socket.io requests go to socketioxide, which runs its
    /// WebSocket in a task of its own, with the connection's [`WriteSignal`] in the
    /// extensions of a connection's first request; a raw WebSocket upgrade returns the
    /// stream,
    /// the bytes hyper read past the request and the admitted session.
    async fn serve_http<I>(
        self: &Arc<Self>,
        stream: I,
        started: tokio::time::Instant,
    ) -> Option<(I, Bytes, Admitted)>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let slot: Arc<Mutex<Option<Accepted>>> = Arc::default();
        let written = WriteSignal::default();
        let stream = Signaled::new(stream, written.clone());
        let svc = {
            let relay = self.clone();
            let slot = slot.clone();
            service_fn(move |req| {
                let relay = relay.clone();
                let slot = slot.clone();
                async move { Ok::<_, Infallible>(relay.handle(req, &slot).await) }
            })
        };
        let served = match self.socketio.get() {
            Some(layer) => {
                let sio = tower::Layer::layer(layer, svc);
                let first = AtomicBool::new(true);
                let svc = service_fn(move |mut req: Request<Incoming>| {
                    let refusal = socketio::refuse_transport(&req);
                    // Only a connection whose first request this is can count its
                    // frames (see socketio/written.rs).
                    let is_first = first.swap(false, Ordering::Relaxed);
                    if is_first && refusal.is_none() && socketio::is_socketio(&req) {
                        written.arm();
                        req.extensions_mut().insert(written.clone());
                    }
                    let answer = refusal.is_none().then(|| sio.call(req));
                    async move {
                        match (refusal, answer) {
                            (Some(refusal), _) => Ok(refusal.map(Either::Left)),
                            (None, Some(answer)) => answer.await.map(|r| r.map(Either::Right)),
                            (None, None) => unreachable!("a request is refused or answered"),
                        }
                    }
                });
                self.serve_connection(stream, svc, started).await
            }
            None => self.serve_connection(stream, svc, started).await,
        };
        if !served {
            return None;
        }
        let accepted = slot.lock().ok().and_then(|mut s| s.take())?;
        match accepted
            .on_upgrade
            .await
            .map(|u| u.downcast::<TokioIo<Signaled<I>>>())
        {
            Ok(Ok(parts)) => Some((
                parts.io.into_inner().into_inner(),
                parts.read_buf,
                accepted.admitted,
            )),
            _ => {
                tracing::debug!("upgrade did not complete");
                None
            }
        }
    }

    /// Serves HTTP on one connection until it ends or upgrades, until the handshake
    /// timeout (counted from `started`); false if it timed out or failed.
    async fn serve_connection<I, S, B>(
        &self,
        stream: I,
        svc: S,
        started: tokio::time::Instant,
    ) -> bool
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        S: Service<Request<Incoming>, Response = Response<B>> + Send,
        S::Future: Send + 'static,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let timeout = self.config().limits.handshake_timeout;
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(timeout)
            .max_buf_size(MAX_REQUEST_HEAD)
            .serve_connection(TokioIo::new(stream), svc)
            .with_upgrades();
        match tokio::time::timeout_at(started + timeout, conn).await {
            Err(_) => {
                tracing::debug!("handshake timed out");
                false
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "http connection ended");
                false
            }
            Ok(Ok(())) => true,
        }
    }

    /// A raw WebSocket session over TLS: rustls encrypts in user space, so the session
    /// runs on one end of a socket pair and a bridge moves bytes between the other
    /// end and the TLS stream. Once the session ends, the bridge gets [`CLOSE_GRACE`]
    /// to deliver the Close frame and the TLS close_notify.
    async fn run_tls_session(
        self: Arc<Self>,
        mut tls: tokio_rustls::server::TlsStream<TcpStream>,
        leftover: Bytes,
        admitted: Admitted,
        peer: SocketAddr,
        permit: OwnedSemaphorePermit,
    ) {
        let (ours, mut theirs) = match UnixStream::pair() {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(error = %e, "no socket pair for a TLS session");
                return;
            }
        };
        // The bridge owns both of its streams: when the browser's side ends, the
        // session's end of the pair sees EOF and the session ends as ClientGone.
        let bridge = async move {
            let _ = tokio::io::copy_bidirectional_with_sizes(
                &mut tls,
                &mut theirs,
                TLS_BRIDGE_BUFFER,
                TLS_BRIDGE_BUFFER,
            )
            .await;
        };
        let mut bridge = std::pin::pin!(bridge);
        let mut session = std::pin::pin!(self.run_session(ours, leftover, admitted, peer, permit));
        tokio::select! {
            _ = &mut session => {
                let _ = tokio::time::timeout(session::CLOSE_GRACE, bridge).await;
            }
            _ = &mut bridge => session.await,
        }
    }

    async fn run_session<B: Socket>(
        self: Arc<Self>,
        browser: B,
        leftover: Bytes,
        admitted: Admitted,
        peer: SocketAddr,
        _permit: OwnedSemaphorePermit,
    ) {
        let span = tracing::info_span!(
            "session",
            session.id = %admitted.record.sid,
            container.id = %admitted.claims.cid,
            user.id = %admitted.claims.sub,
            scope = admitted.claims.scope.as_str(),
            client.addr = %peer,
        );
        async {
            let stop = Arc::new(Signal::default());
            let tracked = self.track(admitted.record.clone(), &stop);
            let config = self.config();
            let taps = Taps {
                metrics: &tracked.metrics,
                recorder: self.recorder(&admitted),
            };
            let end = session::relay(
                browser,
                leftover,
                admitted.upstream,
                &config.limits,
                &stop,
                taps,
                &admitted.policy,
            )
            .await;
            tracked.finish(end).await;
        }
        .instrument(span)
        .await;
    }

    /// The recorder of a session to be recorded.
    pub(crate) fn recorder(&self, admitted: &Admitted) -> Option<Recorder> {
        let recordings = self.recordings.as_ref().filter(|_| admitted.recorded)?;
        Some(recordings.start(&admitted.record, &self.tracker))
    }

    /// Starts one session's bookkeeping: registered for stops and its room, announced
    /// to the room, counted. [`Tracked::finish`] ends it.
    pub(crate) fn track(&self, record: Arc<SessionRecord>, stop: &Arc<Signal>) -> Tracked<'_> {
        tracing::info!("session started");
        let live = self.live.register(record.clone(), stop.clone());
        socketio::announce(self, &record, "viewer.joined");
        Tracked {
            relay: self,
            metrics: SessionMetrics::start(record.transport),
            record,
            started: Instant::now(),
            _live: live,
        }
    }

    async fn handle(
        &self,
        req: Request<Incoming>,
        slot: &Mutex<Option<Accepted>>,
    ) -> Response<Full<Bytes>> {
        match req.uri().path() {
            // socket.io takes its own path once started; until then, say why not.
            path if path.starts_with("/socket.io/") => {
                Reject::Unavailable("socket.io is not started yet (waiting for redis)")
                    .into_response()
            }
            "/websockify" | "/vnc/ws" => match self.open(&req).await {
                Ok((upgrade, admitted)) => {
                    let on_upgrade = hyper::upgrade::on(req);
                    if let Ok(mut s) = slot.lock() {
                        *s = Some(Accepted {
                            on_upgrade,
                            admitted,
                        });
                    }
                    upgrade.response()
                }
                Err(reject) => {
                    tracing::debug!(status = reject.status().as_u16(), reason = %reject, "refused");
                    reject.into_response()
                }
            },
            path => web::serve(self.config().web_root.as_deref(), req.method(), path)
                .await
                .unwrap_or_else(|| Reject::NotFound.into_response()),
        }
    }

    /// Every check a request passes before it becomes a session, cheapest first.
    async fn open(&self, req: &Request<Incoming>) -> Result<(Upgrade, Admitted), Reject> {
        if self.draining.is_cancelled() {
            return Err(Reject::Draining);
        }
        let headers = req.headers();
        let query = req.uri().query();
        let upgrade = upgrade::check(req.method(), headers)?;
        let allowed = &self.config().allowed_origins;
        auth::check_origin(allowed, headers)?;
        let token = auth::request_token(allowed, query, headers)?;
        let cid = auth::query_param(query, "containerId");
        let admitted = self.admit(&token, cid.as_deref(), "websocket").await?;
        Ok((upgrade, admitted))
    }

    /// The checks both transports share: the token (for `container_id`, if the client
    /// named one), revocation, the container record, then the upstream connect.
    pub(crate) async fn admit(
        &self,
        token: &str,
        container_id: Option<&str>,
        transport: &'static str,
    ) -> Result<Admitted, Reject> {
        let config = self.config();
        let claims = self.keys().verify(token)?;
        if container_id.is_some_and(|cid| cid != claims.cid) {
            return Err(Reject::WrongContainer);
        }
        let lookup = self.store.lookup(&claims.cid, &claims.jti).await?;
        if lookup.revoked {
            return Err(Reject::Revoked);
        }
        let target = lookup.container.ok_or(Reject::UnknownContainer)?;
        if target.tenant != claims.tenant {
            return Err(Reject::WrongContainer);
        }
        if target.state != ContainerState::Running {
            return Err(Reject::NotRunning(target.state.as_str()));
        }
        let upstream = upstream::connect(&target, config.limits.connect_timeout).await?;
        let record = Arc::new(SessionRecord {
            sid: uuid::Uuid::new_v4().to_string(),
            cid: claims.cid.clone(),
            sub: claims.sub.clone(),
            tenant: claims.tenant.clone(),
            scope: claims.scope,
            jti: claims.jti.clone(),
            started_at: vnc_shared::schema::now_ms(),
            transport,
            single_use: config.single_use_tokens,
        });
        let admission = self
            .store
            .admit_session(
                &record,
                &config.node_id,
                config.session_limits,
                config.session_ttl,
            )
            .await?;
        match admission {
            Admission::Admitted => {}
            Admission::TokenInUse => return Err(Reject::TokenInUse),
            Admission::ContainerFull => return Err(Reject::TooManySessions("container")),
            Admission::UserFull => return Err(Reject::TooManySessions("user")),
        }
        let policy = RfbPolicy {
            password: target.password,
            view_only: claims.scope == Scope::View,
        };
        let recorded = self
            .recordings
            .as_ref()
            .is_some_and(|r| r.wants(target.record, claims.scope));
        Ok(Admitted {
            upstream,
            claims,
            policy,
            record,
            recorded,
        })
    }
}

/// EMFILE, ENFILE, ENOBUFS, ENOMEM: the process or system is out of a resource.
fn is_resource_exhausted(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Tells a client over the session limit so (503), over TLS if the listener speaks
/// it, briefly: it gets at most `BUSY_TIMEOUT` of this relay's time.
async fn refuse_busy(tls: Option<Arc<tokio_rustls::TlsAcceptor>>, stream: TcpStream) {
    let refuse = async {
        match tls {
            None => answer_busy(stream).await,
            Some(acceptor) => {
                if let Ok(stream) = acceptor.accept(stream).await {
                    answer_busy(stream).await;
                }
            }
        }
    };
    let _ = tokio::time::timeout(BUSY_TIMEOUT, refuse).await;
}

async fn answer_busy<I: AsyncRead + AsyncWrite + Unpin + Send + 'static>(stream: I) {
    let svc = service_fn(|_req: Request<Incoming>| async {
        Ok::<_, Infallible>(Reject::AtCapacity.into_response())
    });
    let _ = http1::Builder::new()
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), svc)
        .await;
}
