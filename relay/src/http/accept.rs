//! The public listener's accept loop: binding, accepting with back-off, the bound on
//! connections still in their handshake (see `pending.rs`), the TLS handshake, and
//! handing each connection to its own task; a TLS session's bridge.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tracing::Instrument;
use vnc_shared::tls::ReloadableTls;

use super::{run_session, serve_http};
use crate::admission::Admitted;
use crate::admission::pending::{PendingGuard, Refused};
use crate::admission::reject::Reject;
use crate::metrics::{ACCEPT_ERRORS, TLS_HANDSHAKE_ERRORS};
use crate::node::Node;
use crate::session::end::CLOSE_GRACE;

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

/// Longest pause after an accept error such as EMFILE.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);
/// Time to tell a client over the session limit that the relay is full.
const BUSY_TIMEOUT: Duration = Duration::from_secs(1);

/// Bytes a TLS session's bridge moves between the TLS stream and the session at once,
/// each way: one TLS record's worth. The bridge holds both buffers for the session's
/// life.
const TLS_BRIDGE_BUFFER: usize = 16 * 1024;

/// Accepts until draining starts; each connection runs in its own tracked task.
pub async fn accept_loop(node: &Arc<Node>, listener: TcpListener) {
    let tracker = node.tracker();
    let mut backoff = Duration::from_millis(5);
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            _ = node.drain_started() => return,
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
        let limits = &node.config().node;
        let (max, per_address) = (
            limits.max_pending_connections,
            limits.max_pending_per_address,
        );
        match node.pending().enter(peer.ip(), max, per_address) {
            Ok(pending) => {
                let span = tracing::info_span!("conn", client.addr = %peer);
                tracker.spawn(serve(node.clone(), stream, peer, pending).instrument(span));
            }
            Err(Refused::Full) => {
                let tls = node.tls().map(ReloadableTls::acceptor);
                tracker.spawn(refuse_busy(tls, stream));
            }
            // Closed without an answer: one address holding this many handshakes
            // open is not a browser.
            Err(Refused::AddressFull) => {
                tracing::debug!(client.addr = %peer, "too many handshakes from one address")
            }
        }
    }
}

/// One connection: the TLS handshake if the listener speaks TLS, HTTP until
/// upgrade, then the session; all before the upgrade within the handshake timeout,
/// counted among the pending connections until then.
async fn serve(node: Arc<Node>, stream: TcpStream, peer: SocketAddr, pending: PendingGuard) {
    let _ = stream.set_nodelay(true);
    let started = tokio::time::Instant::now();
    let Some(tls) = node.tls() else {
        let upgraded = serve_http(&node, stream, started).await;
        drop(pending);
        if let Some((browser, leftover, admitted)) = upgraded {
            let session = run_session(node.clone(), browser, leftover, admitted, peer);
            node.tracker()
                .spawn(session.instrument(tracing::Span::current()));
        }
        return;
    };
    let handshake = tls.acceptor().accept(stream);
    let deadline = started + node.config().limits.handshake_timeout;
    let stream = tokio::select! {
        r = tokio::time::timeout_at(deadline, handshake) => match r {
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
        },
        _ = node.drain_started() => return,
    };
    let upgraded = serve_http(&node, stream, started).await;
    drop(pending);
    if let Some((tls, leftover, admitted)) = upgraded {
        let session = run_tls_session(node.clone(), tls, leftover, admitted, peer);
        node.tracker()
            .spawn(session.instrument(tracing::Span::current()));
    }
}

/// A raw WebSocket session over TLS: rustls encrypts in user space, so the session
/// runs on one end of a socket pair and a bridge moves bytes between the other
/// end and the TLS stream. Once the session ends, the bridge gets [`CLOSE_GRACE`]
/// to deliver the Close frame and the TLS close_notify.
async fn run_tls_session(
    node: Arc<Node>,
    mut tls: tokio_rustls::server::TlsStream<TcpStream>,
    leftover: Bytes,
    admitted: Admitted,
    peer: SocketAddr,
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
    let mut session = std::pin::pin!(run_session(node, ours, leftover, admitted, peer));
    tokio::select! {
        _ = &mut session => {
            let _ = tokio::time::timeout(CLOSE_GRACE, bridge).await;
        }
        _ = &mut bridge => session.await,
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
