//! The API listener: accepts TCP connections up to a cap and serves HTTP/1.1 on each
//! in a task of its own (after its TLS handshake, under a timeout, when TLS is on), so
//! a client that stalls never holds up the others.
//!
//! Bounds: at most `max_connections` connections are served at once; past the cap the
//! accept loop stops accepting, and new connections wait in the kernel's listen
//! backlog until one closes (they are not refused). A client gets `header_timeout` to
//! send a request's headers, and a keep-alive connection may sit idle that long between
//! requests: a connection that sends half a request and then nothing is closed then,
//! and frees its slot.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;
use vnc_shared::tls::ReloadableTls;

use crate::api::rate::PeerAddr;

/// Time a client has to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after an accept error (EMFILE and the like) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Bounds of the API's connections.
#[derive(Clone, Copy, Debug)]
pub struct HttpLimits {
    /// Time to send a request's headers; also the idle time allowed between requests.
    pub header_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
}

/// Serves `router` on `listener` (over TLS with `tls`) until `shutdown` is cancelled,
/// then lets every open connection finish its request in flight and waits for them.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<ReloadableTls>>,
    router: Router,
    limits: HttpLimits,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let connections = TaskTracker::new();
    // Logged once each time the cap is reached, not for every waiting connection.
    let mut at_cap = false;
    loop {
        if slots.available_permits() == 0 && !at_cap {
            tracing::warn!(
                max_connections = limits.max_connections,
                "API connection cap reached: new connections wait until one closes"
            );
        }
        at_cap = slots.available_permits() == 0;
        let slot = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break, // never closed
            },
        };
        let (stream, peer) = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let tls = tls.as_ref().map(|t| t.acceptor());
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let _slot = slot;
            match tls {
                None => serve_connection(stream, peer, router, limits, &shutdown).await,
                Some(acceptor) => {
                    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream));
                    let stream = tokio::select! {
                        () = shutdown.cancelled() => return,
                        done = handshake => match done {
                            Ok(Ok(stream)) => stream,
                            Ok(Err(e)) => {
                                tracing::debug!(client.addr = %peer, error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(client.addr = %peer, "TLS handshake timed out");
                                return;
                            }
                        },
                    };
                    serve_connection(stream, peer, router, limits, &shutdown).await
                }
            }
        });
    }
    connections.close();
    connections.wait().await;
    Ok(())
}

/// HTTP/1.1 on one connection until the client or the header timeout ends it; on
/// shutdown the request in flight finishes and the connection closes. Each request
/// carries the client's address (`ConnectInfo<PeerAddr>`).
async fn serve_connection<I>(
    stream: I,
    peer: SocketAddr,
    router: Router,
    limits: HttpLimits,
    shutdown: &CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(PeerAddr(peer)));
        router.clone().oneshot(req)
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    let served = tokio::select! {
        served = conn.as_mut() => served,
        () = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = served {
        tracing::debug!(error = %e, "API connection ended");
    }
}
