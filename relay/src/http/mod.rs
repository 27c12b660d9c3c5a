//! The public listener's HTTP side: per connection after the accept loop
//! (`accept.rs`), the HTTP request, its route (the raw WebSocket endpoints, socket.io,
//! the static web client in `web.rs`), the raw WebSocket upgrade, and then the session
//! itself in the same task.
//!
//! All per-connection work (HTTP parsing, token, Redis, upstream connect) runs in the
//! connection's own task under the handshake timeout, so a slow peer never stalls the
//! accept loop. One task per session: after the upgrade the same task relays.
//!
//! A connection in its handshake counts among the pending ones (see
//! `admission/pending.rs`); it takes a session permit only once its token is verified,
//! at admission. Draining closes the pending connections at once (a request being
//! admitted finishes first).

pub mod accept;
pub mod web;

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::{Service, service_fn};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::Instrument;

use crate::admission::client::Peer;
use crate::admission::reject::Reject;
use crate::admission::{self, Admitted, auth, client};
use crate::node::Node;
use crate::session::{self, end::StopSignal};
use crate::transport::socketio::{self, Signaled, WriteSignal};
use crate::transport::websocket::WebSocket;
use crate::transport::websocket::upgrade::{self, Upgrade};
use crate::wire::io::Socket;

/// Largest HTTP request head the relay reads before the upgrade (hyper's minimum is
/// 8 KiB); a token in the URL and a few cookies fit easily.
const MAX_REQUEST_HEAD: usize = 16 * 1024;

/// A request that passed every check; its upgrade completes once the 101 is sent.
struct Accepted {
    on_upgrade: OnUpgrade,
    admitted: Admitted,
}

/// HTTP on one connection until it ends or upgrades, within what is left of the
/// handshake timeout. socket.io requests go to socketioxide, which runs its
/// WebSocket in a task of its own, with the connection's [`WriteSignal`] in the
/// extensions of a connection's first request; a raw WebSocket upgrade returns the
/// stream,
/// the bytes hyper read past the request and the admitted session.
async fn serve_http<I>(
    node: &Arc<Node>,
    stream: I,
    started: tokio::time::Instant,
    peer: Peer,
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
        let node = node.clone();
        let slot = slot.clone();
        service_fn(move |req| {
            let node = node.clone();
            let slot = slot.clone();
            let answer = Answering::start(&answering);
            async move {
                let response = handle(&node, req, &slot).await;
                drop(answer);
                Ok::<_, Infallible>(response)
            }
        })
    };
    let served = match node.socketio_layer() {
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
            serve_connection(node, stream, svc, peer, started, idle).await
        }
        None => serve_connection(node, stream, svc, peer, started, idle).await,
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
            // A copy of what the browser sent behind its request (usually nothing):
            // `read_buf` shares hyper's whole read buffer, which a session would
            // otherwise hold for its lifetime (8 KiB or more per idle session).
            Bytes::copy_from_slice(&parts.read_buf),
            accepted.admitted,
        )),
        _ => {
            tracing::debug!("upgrade did not complete");
            None
        }
    }
}

/// Serves HTTP on one connection until it ends or upgrades, until the handshake
/// timeout (counted from `started`), with the connection's [`Peer`] in every
/// request's extensions; false if it timed out or failed. Draining closes it at once
/// while it is `idle`, else after the answer under way.
async fn serve_connection<I, S, B>(
    node: &Node,
    stream: I,
    svc: S,
    peer: Peer,
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
    let timeout = node.config().limits.handshake_timeout;
    let svc = service_fn(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(peer.clone());
        svc.call(req)
    });
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
        _ = node.drain_started() => {
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

/// A raw WebSocket session on the upgraded connection.
fn run_session<B: Socket>(
    node: Arc<Node>,
    browser: B,
    leftover: Bytes,
    admitted: Admitted,
) -> impl Future<Output = ()> + Send {
    let span = session::span(&admitted, "websocket");
    let transport = WebSocket::new(browser, leftover, &node.config().limits);
    let stop = Arc::new(StopSignal::default());
    session::drive(node, admitted, stop, transport).instrument(span)
}

async fn handle(
    node: &Node,
    req: Request<Incoming>,
    slot: &Mutex<Option<Accepted>>,
) -> Response<Full<Bytes>> {
    match req.uri().path() {
        // socket.io takes its own path once started; until then, say why not.
        path if path.starts_with("/socket.io/") => {
            Reject::Unavailable("socket.io is not started yet (waiting for redis)").into_response()
        }
        "/websockify" | "/vnc/ws" => match open(node, &req).await {
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
        path => web::serve(node.config().node.web_root.as_deref(), req.method(), path)
            .await
            .unwrap_or_else(|| Reject::NotFound.into_response()),
    }
}

/// Every check a request passes before it becomes a session, cheapest first.
async fn open(node: &Node, req: &Request<Incoming>) -> Result<(Upgrade, Admitted), Reject> {
    if node.is_draining() {
        return Err(Reject::Draining);
    }
    let headers = req.headers();
    let query = req.uri().query();
    let upgrade = upgrade::check(req.method(), headers)?;
    let allowed = &node.config().node.allowed_origins;
    auth::check_origin(allowed, headers)?;
    let token = auth::request_token(allowed, query, headers)?;
    let cid = auth::query_param(query, "containerId");
    let client = client::of_request(req.extensions(), headers, &node.config().node)?;
    let name = auth::query_param(query, "name");
    let admitted = admission::admit(
        node,
        &token,
        cid.as_deref(),
        "websocket",
        client,
        name.as_deref(),
    )
    .await?;
    Ok((upgrade, admitted))
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
