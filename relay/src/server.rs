//! What every connection of the public listener shares ([`Relay`]) and, per
//! connection after the accept loop (`accept.rs`), the HTTP request, the checks that
//! decide whether it may become a session, and then the session itself.
//!
//! All per-connection work (HTTP parsing, token, Redis, upstream connect) runs in the
//! connection's own task under the handshake timeout, so a slow peer never stalls the
//! accept loop. One task per session: after the upgrade the same task relays.
//!
//! A connection in its handshake counts among the pending ones (see `pending.rs`); it
//! takes a session permit only once its token is verified, at admission. Draining
//! closes the pending connections at once (a request being admitted finishes first).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::{Service, service_fn};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
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
use crate::metrics::SessionMetrics;
use crate::pending::Pending;
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

/// Largest HTTP request head the relay reads before the upgrade (hyper's minimum is
/// 8 KiB); a token in the URL and a few cookies fit easily.
const MAX_REQUEST_HEAD: usize = 16 * 1024;

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
    /// One permit per session, taken at admission (see [`Relay::admit`]).
    pub(crate) sessions: Arc<Semaphore>,
    /// Connections in their handshake, bounded apart from sessions.
    pub pending: Pending,
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
    /// The session's place under `max_sessions`, held (never read) until it ends.
    pub _permit: OwnedSemaphorePermit,
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
            pending: Pending::default(),
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

    /// HTTP on one connection until it ends or upgrades, within what is left of the
    /// handshake timeout. socket.io requests go to socketioxide, which runs its
    /// WebSocket in a task of its own, with the connection's [`WriteSignal`] in the
    /// extensions of a connection's first request; a raw WebSocket upgrade returns the
    /// stream,
    /// the bytes hyper read past the request and the admitted session.
    pub(crate) async fn serve_http<I>(
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
        let answering = Arc::new(AtomicUsize::new(0));
        // Nothing to finish: no request being answered, no upgrade under way.
        let idle = {
            let (answering, slot) = (answering.clone(), slot.clone());
            move || answering.load(Ordering::Acquire) == 0 && slot.lock().is_ok_and(|s| s.is_none())
        };
        let svc = {
            let relay = self.clone();
            let slot = slot.clone();
            service_fn(move |req| {
                let relay = relay.clone();
                let slot = slot.clone();
                let answer = Answering::start(&answering);
                async move {
                    let response = relay.handle(req, &slot).await;
                    drop(answer);
                    Ok::<_, Infallible>(response)
                }
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
                self.serve_connection(stream, svc, started, idle).await
            }
            None => self.serve_connection(stream, svc, started, idle).await,
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
    /// timeout (counted from `started`); false if it timed out or failed. Draining
    /// closes it at once while it is `idle`, else after the answer under way.
    async fn serve_connection<I, S, B>(
        &self,
        stream: I,
        svc: S,
        started: tokio::time::Instant,
        idle: impl Fn() -> bool,
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
        let mut conn = std::pin::pin!(conn);
        let deadline = started + timeout;
        let served = tokio::select! {
            r = tokio::time::timeout_at(deadline, conn.as_mut()) => r,
            _ = self.draining.cancelled() => {
                if idle() {
                    tracing::debug!("closed by the drain before its request");
                    return false;
                }
                conn.as_mut().graceful_shutdown();
                tokio::time::timeout_at(deadline, conn).await
            }
        };
        match served {
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

    pub(crate) async fn run_session<B: Socket>(
        self: Arc<Self>,
        browser: B,
        leftover: Bytes,
        admitted: Admitted,
        peer: SocketAddr,
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
    /// named one), revocation (known here, then in Redis), a session permit, the
    /// container record, then the upstream connect.
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
        if self.live.revoked.contains(&claims.jti) {
            return Err(Reject::Revoked);
        }
        let permit = self.sessions.clone().try_acquire_owned();
        let permit = permit.map_err(|_| Reject::AtCapacity)?;
        let lookup = self.store.lookup(&claims.cid, &claims.jti).await?;
        if lookup.revoked {
            self.live.revoked.insert(&claims.jti, Some(claims.exp));
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
            exp: claims.exp,
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
            _permit: permit,
        })
    }
}

/// Counts one request being answered on a connection while it lives.
struct Answering(Arc<AtomicUsize>);

impl Answering {
    fn start(count: &Arc<AtomicUsize>) -> Answering {
        count.fetch_add(1, Ordering::AcqRel);
        Answering(count.clone())
    }
}

impl Drop for Answering {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}
