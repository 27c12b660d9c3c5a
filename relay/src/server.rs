//! The public listener: the accept loop and, per connection, the HTTP request, the
//! checks that decide whether it may become a session, and then the session itself.
//!
//! All per-connection work (HTTP parsing, token, Redis, upstream connect) runs in the
//! connection's own task under the handshake timeout, so a slow peer never stalls the
//! accept loop. One task per session: after the upgrade the same task relays.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;
use vnc_shared::schema::ContainerState;
use vnc_shared::token::{KeySet, VncClaims};

use crate::auth;
use crate::config::RelayConfig;
use crate::metrics::{ACCEPT_ERRORS, SessionMetrics};
use crate::reject::Reject;
use crate::session::{self, Stop};
use crate::signal::Signal;
use crate::store::Store;
use crate::upgrade::{self, Upgrade};
use crate::upstream;

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

/// What every connection of one relay shares.
pub struct Relay {
    pub config: RelayConfig,
    pub keys: KeySet,
    pub store: Store,
    /// Cancelled on SIGTERM: stop accepting, refuse new sessions, report unready.
    pub draining: CancellationToken,
    /// Cancelled at the drain deadline: close live sessions with 1001.
    pub stop: CancellationToken,
    sessions: Arc<Semaphore>,
    /// Stop signals of this node's live sessions, by local id.
    live: Mutex<HashMap<u64, Arc<Signal>>>,
    next_id: AtomicU64,
}

/// Keeps a session in [`Relay::live`] while it runs.
struct LiveGuard<'a> {
    relay: &'a Relay,
    id: u64,
}

impl Drop for LiveGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut live) = self.relay.live.lock() {
            live.remove(&self.id);
        }
    }
}

/// A request that passed every check; its upgrade completes once the 101 is sent.
struct Accepted {
    on_upgrade: OnUpgrade,
    admitted: Admitted,
}

/// What a session starts from: the connected VNC server and the token's claims.
struct Admitted {
    upstream: TcpStream,
    claims: VncClaims,
}

impl Relay {
    pub fn new(config: RelayConfig, keys: KeySet, store: Store) -> Relay {
        let sessions = Arc::new(Semaphore::new(config.limits.max_sessions));
        Relay {
            config,
            keys,
            store,
            draining: CancellationToken::new(),
            stop: CancellationToken::new(),
            sessions,
            live: Mutex::default(),
            next_id: AtomicU64::new(0),
        }
    }

    /// Ends every live session with `why` (and any that registers afterwards).
    pub fn stop_all(&self, why: Stop) {
        self.stop.cancel();
        if let Ok(live) = self.live.lock() {
            for signal in live.values() {
                signal.set(why as u8);
            }
        }
    }

    /// Registers a session's stop signal; it is already set if the relay has stopped.
    fn register(&self) -> (Arc<Signal>, LiveGuard<'_>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let signal = Arc::new(Signal::default());
        if let Ok(mut live) = self.live.lock() {
            live.insert(id, signal.clone());
        }
        if self.stop.is_cancelled() {
            signal.set(Stop::Draining as u8);
        }
        (signal, LiveGuard { relay: self, id })
    }

    /// Why the relay should not get new sessions now, if it shouldn't.
    pub fn not_ready(&self) -> Option<&'static str> {
        if self.draining.is_cancelled() {
            Some("draining")
        } else if !self.store.is_connected() {
            Some("redis unreachable")
        } else if self.keys.is_empty() {
            Some("no token keys")
        } else {
            None
        }
    }

    /// Accepts until draining starts; each connection runs in its own tracked task.
    pub async fn accept_loop(self: &Arc<Self>, listener: TcpListener, tracker: &TaskTracker) {
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
                    tracker.spawn(
                        relay
                            .serve(stream, peer, permit, tracker.clone())
                            .instrument(span),
                    );
                }
                Err(_) => {
                    tracker.spawn(refuse_busy(stream));
                }
            }
        }
    }

    /// One connection: HTTP until upgrade (bounded), then the session.
    async fn serve(
        self: Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        permit: OwnedSemaphorePermit,
        tracker: TaskTracker,
    ) {
        let _ = stream.set_nodelay(true);
        let slot: Arc<Mutex<Option<Accepted>>> = Arc::default();
        let svc = {
            let relay = self.clone();
            let slot = slot.clone();
            service_fn(move |req| {
                let relay = relay.clone();
                let slot = slot.clone();
                async move { Ok::<_, Infallible>(relay.handle(req, &slot).await) }
            })
        };
        let limits = &self.config.limits;
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.handshake_timeout)
            .max_buf_size(MAX_REQUEST_HEAD)
            .serve_connection(TokioIo::new(stream), svc)
            .with_upgrades();
        match tokio::time::timeout(limits.handshake_timeout, conn).await {
            Err(_) => {
                tracing::debug!("handshake timed out");
                return;
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "http connection ended");
                return;
            }
            Ok(Ok(())) => {}
        }
        let accepted = slot.lock().ok().and_then(|mut s| s.take());
        let Some(accepted) = accepted else { return };
        let parts = match accepted
            .on_upgrade
            .await
            .map(|u| u.downcast::<TokioIo<TcpStream>>())
        {
            Ok(Ok(parts)) => parts,
            _ => {
                tracing::debug!("upgrade did not complete");
                return;
            }
        };
        let span = tracing::Span::current();
        let session = self.run_session(
            parts.io.into_inner(),
            parts.read_buf,
            accepted.admitted,
            peer,
            permit,
        );
        tracker.spawn(session.instrument(span));
    }

    async fn run_session(
        self: Arc<Self>,
        browser: TcpStream,
        leftover: Bytes,
        admitted: Admitted,
        peer: SocketAddr,
        _permit: OwnedSemaphorePermit,
    ) {
        let sid = uuid::Uuid::new_v4();
        let span = tracing::info_span!(
            "session",
            session.id = %sid,
            container.id = %admitted.claims.cid,
            user.id = %admitted.claims.sub,
            scope = admitted.claims.scope.as_str(),
            client.addr = %peer,
        );
        async {
            tracing::info!("session started");
            let (stop, _live) = self.register();
            let started = Instant::now();
            let metrics = SessionMetrics::start("websocket");
            let end = session::relay(
                browser,
                leftover,
                admitted.upstream,
                &self.config.limits,
                &stop,
                &metrics,
            )
            .await;
            let lasted = started.elapsed();
            metrics.finish(end.outcome(), lasted);
            tracing::info!(
                outcome = end.outcome(),
                close.code = end.close().0,
                ?lasted,
                "session ended"
            );
        }
        .instrument(span)
        .await;
    }

    async fn handle(
        &self,
        req: Request<Incoming>,
        slot: &Mutex<Option<Accepted>>,
    ) -> Response<Full<Bytes>> {
        match req.uri().path() {
            "/websockify" | "/vnc/ws" => match self.open(&req).await {
                Ok((upgrade, upstream, claims)) => {
                    let on_upgrade = hyper::upgrade::on(req);
                    if let Ok(mut s) = slot.lock() {
                        *s = Some(Accepted {
                            on_upgrade,
                            admitted: Admitted { upstream, claims },
                        });
                    }
                    upgrade.response()
                }
                Err(reject) => {
                    tracing::debug!(status = reject.status().as_u16(), reason = %reject, "refused");
                    reject.into_response()
                }
            },
            _ => Reject::NotFound.into_response(),
        }
    }

    /// Every check a request passes before it becomes a session, cheapest first.
    async fn open(
        &self,
        req: &Request<Incoming>,
    ) -> Result<(Upgrade, TcpStream, VncClaims), Reject> {
        if self.draining.is_cancelled() {
            return Err(Reject::Draining);
        }
        let headers = req.headers();
        let query = req.uri().query();
        let upgrade = upgrade::check(req.method(), headers)?;
        auth::check_origin(&self.config.allowed_origins, headers)?;
        let token = auth::token_from(query, headers).ok_or(Reject::NoToken)?;
        let claims = self.keys.verify(&token)?;
        if auth::query_param(query, "containerId").is_some_and(|cid| cid != claims.cid) {
            return Err(Reject::WrongContainer);
        }
        let lookup = self
            .store
            .lookup(&claims.cid, &claims.jti)
            .await
            .map_err(|e| Reject::Unavailable(e.to_string()))?;
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
        let upstream = upstream::connect(&target, self.config.limits.connect_timeout)
            .await
            .map_err(|e| Reject::Upstream(e.to_string()))?;
        Ok((upgrade, upstream, claims))
    }
}

/// EMFILE, ENFILE, ENOBUFS, ENOMEM: the process or system is out of a resource.
fn is_resource_exhausted(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Tells a client over the session limit so (503), briefly: it gets at most
/// `BUSY_TIMEOUT` of this relay's time.
async fn refuse_busy(stream: TcpStream) {
    let svc = service_fn(|_req: Request<Incoming>| async {
        Ok::<_, Infallible>(Reject::AtCapacity.into_response())
    });
    let conn = http1::Builder::new()
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), svc);
    let _ = tokio::time::timeout(BUSY_TIMEOUT, conn).await;
}
