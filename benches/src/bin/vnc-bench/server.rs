//! The stand-in servers a measurement runs against:
//! - `echo`: the "container" for latency tests, echoes every byte;
//! - `source`: the "container" for throughput tests, writes as fast as the peer reads;
//! - `desktop`: the "container" for mixed load: FramebufferUpdates on a timer, and each
//!   key release answered in-band with a ServerCutText carrying its keysym;
//! - `proxy`: the baseline, a plain TCP-to-TCP proxy (what a relay costs at the least);
//! - `ws-proxy`: the least a WebSocket relay can be (tokio-tungstenite toward the
//!   client, TCP upstream, no RFB, no tokens): what WebSocket framing costs, on both
//!   ends, against the plain proxy; with `--tls-cert`/`--tls-key` the same over TLS
//!   (tokio-rustls), what TLS adds to the least WebSocket relay;
//! - `sio-proxy`: the least socket.io relay (socketioxide with its defaults, namespace
//!   `/vnc`, bytes as `vnc:data` events both ways, no RFB, no tokens): what the socket.io
//!   crate costs, against `ws-proxy`.
//!
//! Each accepts in a loop and gives every connection its own task, so one slow peer never
//! stalls the accept loop. They run until killed.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use clap::Args;
use futures_util::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use socketioxide::adapter::LocalAdapter;
use socketioxide::extract::SocketRef;
use socketioxide::handler::message::FromMessage;
use socketioxide::socket::Socket;
use socketioxide::{SendError, SocketError, SocketIo, TransportType};
use socketioxide_core::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{
    Callback, ErrorResponse, Request, Response,
};
use tokio_tungstenite::tungstenite::http::HeaderValue;

use vnc_shared::tls::{self, TlsFiles};

use crate::{report, rfb};

/// Per-connection buffer of the echo server.
const ECHO_BUF: usize = 64 * 1024;
/// Read buffer for what the source's peer sends (discarded).
const DISCARD_BUF: usize = 64 * 1024;
/// Key echoes of the `desktop` stand-in waiting for the writer (it is busy writing an
/// update); a client sends a few a second, so a full queue only slows its reader.
const ECHO_QUEUE: usize = 64;
/// Bounds on the `desktop` stand-in's flags.
const MAX_FPS: f64 = 1000.0;
const MIN_UPDATE: usize = 20;
const MAX_UPDATE: usize = 16 << 20;
/// Copy buffer of the baseline proxy, per direction.
const PROXY_BUF: usize = 256 * 1024;
/// Largest `vnc:data` event of the socket.io baseline (the relay's `MAX_DATA_EVENT`).
const SIO_EVENT: usize = 64 * 1024;
/// Client `vnc:data` payloads of one socket.io baseline session waiting for upstream.
const SIO_INPUT_QUEUE: usize = 64;
/// Pause of the socket.io baseline's reader while the socket's queue is full.
const SIO_FULL_PAUSE: Duration = Duration::from_millis(1);
/// Bound on the proxy's upstream connect.
const PROXY_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Accept queue length asked for (the kernel caps it at `net.core.somaxconn`).
const LISTEN_BACKLOG: u32 = 8192;
/// Pause after a failed accept (typically EMFILE) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

#[derive(Args, Debug)]
pub struct EchoArgs {
    /// Address to listen on (port 0 picks a free port; see the LISTENING line).
    #[arg(long)]
    pub listen: SocketAddr,
    /// Start echoing at once, without the RFB handshake (None security) that an
    /// RFB-aware relay needs first.
    #[arg(long)]
    pub no_rfb: bool,
}

#[derive(Args, Debug)]
pub struct SourceArgs {
    /// Address to listen on.
    #[arg(long)]
    pub listen: SocketAddr,
    /// Start streaming at once, without the RFB handshake (None security).
    #[arg(long)]
    pub no_rfb: bool,
    /// Size of the constant buffer written repeatedly per connection (with RFB: whole
    /// FramebufferUpdates of Raw rectangles, Bells for a short remainder).
    #[arg(long, default_value_t = 65536)]
    pub chunk: usize,
    /// Ask for VNC Authentication with this password instead of security None (what
    /// the relay's credential injection answers).
    #[arg(long)]
    pub password: Option<String>,
}

#[derive(Args, Debug)]
pub struct DesktopArgs {
    /// Address to listen on.
    #[arg(long)]
    pub listen: SocketAddr,
    /// FramebufferUpdates per second and connection.
    #[arg(long, default_value_t = 30.0)]
    pub fps: f64,
    /// Bytes per FramebufferUpdate (one Raw rectangle, as `source` writes them).
    #[arg(long, default_value_t = 40_000)]
    pub update_size: usize,
}

#[derive(Args, Debug)]
pub struct ProxyArgs {
    /// Address to listen on.
    #[arg(long)]
    pub listen: SocketAddr,
    /// TCP address every connection is forwarded to.
    #[arg(long)]
    pub upstream: String,
}

#[derive(Args, Debug)]
pub struct WsProxyArgs {
    #[command(flatten)]
    pub proxy: ProxyArgs,
    /// Serve wss:// with this certificate chain (PEM; with `--tls-key`).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

pub async fn echo(args: EchoArgs) -> Result<()> {
    let rfb = !args.no_rfb;
    serve(args.listen, move |mut sock| async move {
        if rfb {
            rfb::serve(&mut sock, None).await?;
        }
        let mut buf = vec![0u8; ECHO_BUF];
        loop {
            let n = sock.read(&mut buf).await?;
            if n == 0 {
                return Ok(());
            }
            sock.write_all(&buf[..n]).await?;
        }
    })
    .await
}

pub async fn source(args: SourceArgs) -> Result<()> {
    anyhow::ensure!(args.chunk > 0, "--chunk must be at least 1 byte");
    // One shared pattern buffer for all connections: the source costs no memory per peer
    // beyond its socket and discard buffer. After an RFB handshake it is whole server
    // messages, so the stream stays valid RFB for a relay that follows it.
    let rfb = !args.no_rfb;
    let chunk: Arc<[u8]> = if rfb {
        rfb::updates(args.chunk).into()
    } else {
        (0..args.chunk).map(|i| (i % 253) as u8).collect()
    };
    let password: Option<Arc<[u8]>> = args.password.map(|p| p.into_bytes().into());
    serve(args.listen, move |mut sock| {
        let chunk = Arc::clone(&chunk);
        let password = password.clone();
        async move {
            if rfb {
                rfb::serve(&mut sock, password.as_deref()).await?;
            }
            let (mut rd, mut wr) = sock.into_split();
            let writer = async move {
                loop {
                    if wr.write_all(&chunk).await.is_err() {
                        return;
                    }
                }
            };
            let reader = async move {
                let mut buf = vec![0u8; DISCARD_BUF];
                while matches!(rd.read(&mut buf).await, Ok(n) if n > 0) {}
            };
            // The writer ends when the peer goes away; the reader at EOF. A half-close
            // by the peer must not stop the stream it is still reading, hence join.
            tokio::join!(writer, reader);
            Ok(())
        }
    })
    .await
}

pub async fn desktop(args: DesktopArgs) -> Result<()> {
    anyhow::ensure!(
        args.fps > 0.0 && args.fps <= MAX_FPS,
        "--fps must be within 0..={MAX_FPS}"
    );
    anyhow::ensure!(
        (MIN_UPDATE..=MAX_UPDATE).contains(&args.update_size),
        "--update-size must be within {MIN_UPDATE}..={MAX_UPDATE}"
    );
    let update: Arc<[u8]> = rfb::updates(args.update_size).into();
    let period = Duration::from_secs_f64(1.0 / args.fps);
    serve(args.listen, move |mut sock| {
        let update = Arc::clone(&update);
        async move {
            rfb::serve(&mut sock, None).await?;
            let (rd, mut wr) = sock.into_split();
            let (echo_tx, mut echo_rx) = tokio::sync::mpsc::channel::<u32>(ECHO_QUEUE);
            let (start_tx, start_rx) = tokio::sync::oneshot::channel::<()>();
            let reader = async move {
                let mut rd = tokio::io::BufReader::new(rd);
                let mut start_tx = Some(start_tx);
                while let Ok(Some(msg)) = rfb::read_client_message(&mut rd).await {
                    match msg {
                        rfb::ClientMessage::UpdateRequest => {
                            if let Some(tx) = start_tx.take() {
                                let _ = tx.send(());
                            }
                        }
                        rfb::ClientMessage::Key {
                            down: false,
                            keysym,
                        } if echo_tx.send(keysym).await.is_err() => return,
                        _ => {}
                    }
                }
            };
            let writer = async move {
                // Nothing before the viewer's first request: the client's handshake
                // must not read the start of the stream.
                if start_rx.await.is_err() {
                    return;
                }
                // A random phase, so the sessions' updates don't all fall on one tick.
                let phase = period.mul_f64(rand::random::<f64>());
                let mut ticker =
                    tokio::time::interval_at(tokio::time::Instant::now() + phase, period);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    let written = tokio::select! {
                        biased;
                        keysym = echo_rx.recv() => match keysym {
                            Some(k) => wr.write_all(&rfb::key_echo(k)).await,
                            None => return,
                        },
                        _ = ticker.tick() => wr.write_all(&update).await,
                    };
                    if written.is_err() {
                        return;
                    }
                }
            };
            tokio::join!(reader, writer);
            Ok(())
        }
    })
    .await
}

pub async fn proxy(args: ProxyArgs) -> Result<()> {
    let upstream = resolve(&args.upstream).await?;
    serve(args.listen, move |mut client| async move {
        let mut server = connect_upstream(upstream).await?;
        tokio::io::copy_bidirectional_with_sizes(&mut client, &mut server, PROXY_BUF, PROXY_BUF)
            .await?;
        Ok(())
    })
    .await
}

/// The WebSocket baseline: each upstream read (up to [`PROXY_BUF`]) goes to the client
/// as one binary message, each client message's payload upstream as it is; over TLS when
/// given a certificate.
pub async fn ws_proxy(args: WsProxyArgs) -> Result<()> {
    let upstream = resolve(&args.proxy.upstream).await?;
    let tls = match (args.tls_cert, args.tls_key) {
        (Some(cert), Some(key)) => {
            let files = TlsFiles {
                cert,
                key,
                client_ca: None,
            };
            Some(TlsAcceptor::from(Arc::new(tls::server_config(&files)?)))
        }
        _ => None,
    };
    serve(args.proxy.listen, move |client| {
        let tls = tls.clone();
        async move {
            match tls {
                Some(tls) => ws_relay(tls.accept(client).await?, upstream).await,
                None => ws_relay(client, upstream).await,
            }
        }
    })
    .await
}

async fn ws_relay<S>(client: S, upstream: SocketAddr) -> Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let ws = tokio_tungstenite::accept_hdr_async(client, BinarySubprotocol).await?;
    let (mut rd, mut wr) = connect_upstream(upstream).await?.into_split();
    let (mut sink, mut stream) = ws.split();
    let down = async {
        let mut buf = vec![0; PROXY_BUF];
        loop {
            let n = rd.read(&mut buf).await?;
            if n == 0 {
                return anyhow::Ok(());
            }
            sink.send(Message::binary(Bytes::copy_from_slice(&buf[..n])))
                .await?;
        }
    };
    let up = async {
        while let Some(msg) = stream.next().await {
            if let Message::Binary(payload) = msg? {
                wr.write_all(&payload).await?;
            }
        }
        anyhow::Ok(())
    };
    tokio::select! {
        r = down => r,
        r = up => r,
    }
}

/// The socket.io baseline: each upstream read (up to [`SIO_EVENT`], the relay's largest
/// `vnc:data`) is emitted as one `vnc:data` event (waiting while the socket's queue is
/// full), each `vnc:data` from the client written upstream in order (a client that
/// outruns the upstream by [`SIO_INPUT_QUEUE`] events is disconnected). Any token is
/// accepted.
pub async fn sio_proxy(args: ProxyArgs) -> Result<()> {
    let upstream = resolve(&args.upstream).await?;
    let (svc, io) = SocketIo::builder()
        .transports([TransportType::Websocket])
        .build_svc();
    io.ns("/vnc", async move |socket: SocketRef| {
        let Ok(server) = connect_upstream(upstream).await else {
            let _ = socket.disconnect();
            return;
        };
        let (mut rd, mut wr) = server.into_split();
        let (input, mut queued) = mpsc::channel::<Bytes>(SIO_INPUT_QUEUE);
        socket.extensions.insert(input);
        socket.on("vnc:data", async |_: OrderedInput| {});
        tokio::spawn(async move {
            while let Some(payload) = queued.recv().await {
                if wr.write_all(&payload).await.is_err() {
                    return;
                }
            }
        });
        tokio::spawn(async move {
            let mut buf = vec![0; SIO_EVENT];
            while let Ok(n @ 1..) = rd.read(&mut buf).await {
                let data = Bytes::copy_from_slice(&buf[..n]);
                loop {
                    match socket.emit("vnc:data", &data) {
                        Ok(()) => break,
                        Err(SendError::Socket(SocketError::InternalChannelFull)) => {
                            tokio::time::sleep(SIO_FULL_PAUSE).await
                        }
                        Err(_) => return,
                    }
                }
            }
            let _ = socket.disconnect();
        });
    });
    serve(args.listen, move |client| {
        let svc = svc.clone();
        async move {
            hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(client), svc)
                .with_upgrades()
                .await?;
            Ok(())
        }
    })
    .await
}

/// The socket.io baseline's `vnc:data` from the client, queued for upstream as the
/// packet arrives: socketioxide runs extractors in arrival order, handlers as tasks of
/// their own in no order (key strokes would reach the desktop reordered).
struct OrderedInput;

impl FromMessage<LocalAdapter> for OrderedInput {
    type Error = Infallible;

    fn from_message(
        socket: Arc<Socket<LocalAdapter>>,
        v: Value,
        _ack: Option<i64>,
    ) -> Result<Self, Infallible> {
        let input = socket.extensions.get::<mpsc::Sender<Bytes>>();
        if let (Some(input), Value::Str(_, Some(bins))) = (input, v) {
            for payload in bins {
                if input.try_send(payload).is_err() {
                    let _ = socket.clone().disconnect();
                    break;
                }
            }
        }
        Ok(OrderedInput)
    }
}

/// Answers the WebSocket upgrade with the `binary` subprotocol the clients ask for, as
/// the relay and websockify do.
struct BinarySubprotocol;

impl Callback for BinarySubprotocol {
    fn on_request(self, _: &Request, mut answer: Response) -> Result<Response, ErrorResponse> {
        answer
            .headers_mut()
            .insert("sec-websocket-protocol", HeaderValue::from_static("binary"));
        Ok(answer)
    }
}

async fn resolve(upstream: &str) -> Result<SocketAddr> {
    tokio::net::lookup_host(upstream)
        .await
        .with_context(|| format!("resolving {upstream}"))?
        .next()
        .with_context(|| format!("{upstream} resolved to no address"))
}

async fn connect_upstream(upstream: SocketAddr) -> Result<TcpStream> {
    let server = tokio::time::timeout(PROXY_CONNECT_TIMEOUT, TcpStream::connect(upstream))
        .await
        .context("upstream connect timed out")?
        .context("upstream connect")?;
    server.set_nodelay(true)?;
    Ok(server)
}

/// Listener with a deep accept queue: a TCP connect completes in the kernel before
/// `accept`, so a client opening thousands of sessions can outrun the accept loop, and
/// tokio's default backlog (1024) then drops SYNs (seen as 1 s connect times).
fn bind(listen: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if listen.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(listen)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Binds, prints `LISTENING`, and runs `handle` in its own task for every connection
/// (with TCP_NODELAY set). Connection errors are normal disconnects here and not printed.
async fn serve<F, Fut>(listen: SocketAddr, handle: F) -> Result<()>
where
    F: Fn(TcpStream) -> Fut,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    let listener = bind(listen).with_context(|| format!("binding {listen}"))?;
    report::listening(listener.local_addr()?);
    loop {
        match listener.accept().await {
            Ok((sock, _peer)) => {
                let _ = sock.set_nodelay(true);
                let task = handle(sock);
                tokio::spawn(async move {
                    let _ = task.await;
                });
            }
            Err(e) => {
                eprintln!("accept: {e}");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}
