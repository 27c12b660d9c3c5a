//! The public listener's accept loop: binding, accepting with back-off, the bound on
//! connections still in their handshake (see `pending.rs`), the TLS handshake, and
//! handing each connection to its own task; a TLS session's socket.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tracing::Instrument;
use vnc_shared::tls::ReloadableTls;

use super::{run_session, serve_http};
use crate::admission::Admitted;
use crate::admission::client::{self, Peer};
use crate::admission::pending::{PendingGuard, Refused};
use crate::admission::reject::Reject;
use crate::metrics::{ACCEPT_ERRORS, PROXY_HEADER_ERRORS, TLS_HANDSHAKE_ERRORS};
use crate::node::Node;
use crate::wire::tls::TlsSocket;

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
        // A load balancer carries many clients: its connections count per address
        // once the client is known (the PROXY header, the forwarding headers).
        let balancer =
            limits.proxy_protocol || client::is_trusted(peer.ip(), &limits.trusted_proxies);
        let per_address = match balancer {
            true => usize::MAX,
            false => limits.max_pending_per_address,
        };
        match node
            .pending()
            .enter(peer.ip(), limits.max_pending_connections, per_address)
        {
            Ok(pending) => {
                tracker.spawn(serve(node.clone(), stream, peer, pending));
            }
            Err(Refused::Full) => {
                let tls = node.tls().map(ReloadableTls::acceptor);
                tracker.spawn(refuse_busy(tls, limits.proxy_protocol, stream));
            }
            // Closed without an answer: one address holding this many handshakes
            // open is not a browser.
            Err(Refused::AddressFull) => {
                tracing::debug!(client.addr = %peer, "too many handshakes from one address")
            }
        }
    }
}

/// One connection: its PROXY header if the listener expects one, then the rest in the
/// client's log span; all before the upgrade within the handshake timeout, counted
/// among the pending connections until then.
async fn serve(node: Arc<Node>, mut stream: TcpStream, peer: SocketAddr, pending: PendingGuard) {
    let started = tokio::time::Instant::now();
    let mut pending = Some(pending);
    let client = match node.config().node.proxy_protocol {
        true => match proxied_peer(&node, &mut stream, peer, &mut pending).await {
            Some(client) => client,
            None => return,
        },
        false => peer,
    };
    let peer = Peer {
        addr: client,
        pending: Arc::new(Mutex::new(pending)),
    };
    let span = tracing::info_span!("conn", client.addr = %client);
    serve_client(node, stream, peer, started)
        .instrument(span)
        .await
}

/// One connection past its PROXY header: the TLS handshake if the listener speaks TLS,
/// HTTP until upgrade, then the session.
async fn serve_client(
    node: Arc<Node>,
    stream: TcpStream,
    peer: Peer,
    started: tokio::time::Instant,
) {
    let _ = stream.set_nodelay(true);
    let Some(tls) = node.tls() else {
        let upgraded = serve_http(&node, stream, started, peer.clone()).await;
        peer.handshake_over();
        if let Some((browser, leftover, admitted)) = upgraded {
            let session = run_session(node.clone(), browser, leftover, admitted);
            node.tracker().spawn(session);
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
    let upgraded = serve_http(&node, stream, started, peer.clone()).await;
    peer.handshake_over();
    if let Some((tls, leftover, admitted)) = upgraded {
        let session = run_tls_session(node.clone(), tls, leftover, admitted);
        node.tracker().spawn(session);
    }
}

/// A raw WebSocket session over TLS: the session's pumps drive the rustls connection
/// on the TCP stream themselves (`wire/tls.rs`).
fn run_tls_session(
    node: Arc<Node>,
    tls: tokio_rustls::server::TlsStream<TcpStream>,
    leftover: Bytes,
    admitted: Admitted,
) -> impl Future<Output = ()> + Send {
    let (tcp, conn) = tls.into_inner();
    run_session(node, TlsSocket::new(tcp, conn), leftover, admitted)
}

/// The client a connection's PROXY header names (the peer itself for a balancer's
/// `LOCAL` health check), counted against its own per-address bound from now on;
/// `None`, and the connection is to be closed, without a valid header in time or with
/// a client over its bound.
async fn proxied_peer(
    node: &Node,
    stream: &mut TcpStream,
    peer: SocketAddr,
    pending: &mut Option<PendingGuard>,
) -> Option<SocketAddr> {
    let within = node.config().limits.handshake_timeout;
    let client = match client::read_proxy_header(stream, within).await {
        Ok(client) => client.unwrap_or(peer),
        Err(e) => {
            metrics::counter!(PROXY_HEADER_ERRORS).increment(1);
            tracing::debug!(peer.addr = %peer, error = %e, "refused: no valid PROXY header");
            return None;
        }
    };
    let per_address = node.config().node.max_pending_per_address;
    let guard = pending.as_mut()?;
    if guard.rebind(client.ip(), per_address).is_err() {
        tracing::debug!(client.addr = %client, "too many handshakes from one address");
        return None;
    }
    Some(client)
}

/// EMFILE, ENFILE, ENOBUFS, ENOMEM: the process or system is out of a resource.
fn is_resource_exhausted(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Tells a client over the session limit so (503), after its PROXY header and over
/// TLS if the listener has them, briefly: it gets at most `BUSY_TIMEOUT` of this relay's time.
async fn refuse_busy(
    tls: Option<Arc<tokio_rustls::TlsAcceptor>>,
    proxy_protocol: bool,
    mut stream: TcpStream,
) {
    let refuse = async {
        if proxy_protocol
            && client::read_proxy_header(&mut stream, BUSY_TIMEOUT)
                .await
                .is_err()
        {
            return;
        }
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
