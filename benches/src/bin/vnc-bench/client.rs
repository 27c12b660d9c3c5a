//! One client connection, plain TCP, WebSocket or socket.io (the last two over TCP or
//! TLS), behind the three operations the measurements need: send bytes, receive exactly
//! n bytes (an echo), count whatever arrives (throughput / idle watch).
//!
//! WebSocket: the handshake offers subprotocol `binary` (websockify and the relay accept
//! `binary` or nothing), sends binary messages, and accepts any message size because the
//! server decides how it frames the byte stream. A single task owns the stream and does
//! send-then-read, so it is not split: nothing is gained from two halves when there is
//! only ever one operation in flight, and the split would add a lock per call.

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::error::{Error as WsError, ProtocolError, SubProtocolError};
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue, header};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::endpoint::Target;
use crate::lean_ws::LeanWs;
use crate::recv_count::RecvCount;
use crate::sio_client::SioConn;
use crate::stream::Stream;

/// Read buffer of a socket.io connection whose mode asks for the lean reader
/// (throughput): large, so one read drains a full socket buffer's worth.
const SIO_LEAN_READ_BUF: usize = 256 * 1024;

/// The only subprotocol offered. websockify 0.13 matches the offered list exactly after
/// splitting on `,` (without trimming), so offer exactly one token.
const SUBPROTOCOL: &str = "binary";

pub enum Conn {
    Tcp(TcpStream),
    /// Boxed: the WebSocket state is several times larger than a `TcpStream`.
    Ws(Box<WebSocketStream<Stream>>),
    /// Counting-only WebSocket reader for throughput runs (boxed: its decoder state).
    Lean(Box<LeanWs>),
    /// socket.io (namespace `/vnc`) through the bench's own lean client, in every mode.
    Sio(Box<SioConn>),
}

/// How a ws target is read: full tungstenite client, or the lean counting reader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WsClient {
    Tungstenite { read_buffer: usize },
    Lean,
}

/// Opens `target`: TCP connect with TCP_NODELAY, the TLS handshake for `wss`/`sios`,
/// then for ws the handshake carrying the subprotocol and the extra headers. The caller
/// bounds it with a timeout.
///
/// This connects the socket itself and calls `client_async_with_config` rather than
/// `connect_async_with_config(req, cfg, true)`: same handshake and nodelay, but it uses
/// the address resolved once at load time (and the `--ca` TLS client).
pub async fn connect(
    target: &Target,
    headers: &[(HeaderName, HeaderValue)],
    client: WsClient,
) -> Result<Conn> {
    match target {
        Target::Tcp { addr } => {
            let stream = TcpStream::connect(addr)
                .await
                .with_context(|| format!("tcp connect {addr}"))?;
            stream.set_nodelay(true)?;
            Ok(Conn::Tcp(stream))
        }
        Target::Ws { url, addr, tls } => {
            let stream = Stream::connect(*addr, tls.as_ref()).await?;
            let ws_read_buffer = match client {
                WsClient::Lean => {
                    return Ok(Conn::Lean(Box::new(
                        LeanWs::connect(url, stream, headers).await?,
                    )));
                }
                WsClient::Tungstenite { read_buffer } => read_buffer,
            };
            let mut request = url.as_str().into_client_request()?;
            let h = request.headers_mut();
            h.insert(
                header::SEC_WEBSOCKET_PROTOCOL,
                HeaderValue::from_static(SUBPROTOCOL),
            );
            for (name, value) in headers {
                h.insert(name.clone(), value.clone());
            }
            let config = WebSocketConfig::default()
                .read_buffer_size(ws_read_buffer)
                // Writes are flushed per message anyway (`SinkExt::send`); a small target
                // keeps the per-session buffer small.
                .write_buffer_size(0)
                .max_message_size(None)
                .max_frame_size(None);
            let (ws, _response) =
                tokio_tungstenite::client_async_with_config(request, stream, Some(config))
                    .await
                    .map_err(describe_handshake_error)?;
            Ok(Conn::Ws(Box::new(ws)))
        }
        Target::Sio { target, addr, tls } => {
            let stream = Stream::connect(*addr, tls.as_ref()).await?;
            // The mode's ws read buffer size suits socket.io as well (small for many
            // sessions); "lean" is what throughput asks for.
            let read_buffer = match client {
                WsClient::Lean => SIO_LEAN_READ_BUF,
                WsClient::Tungstenite { read_buffer } => read_buffer,
            };
            let conn = SioConn::connect(target, stream, headers, read_buffer).await?;
            Ok(Conn::Sio(Box::new(conn)))
        }
    }
}

fn describe_handshake_error(err: WsError) -> anyhow::Error {
    match err {
        WsError::Http(resp) => {
            let body = resp
                .body()
                .as_deref()
                .map(|b| String::from_utf8_lossy(&b[..b.len().min(200)]).into_owned())
                .unwrap_or_default();
            anyhow::anyhow!("handshake refused: HTTP {} {}", resp.status(), body.trim())
        }
        WsError::Protocol(ProtocolError::SecWebSocketSubProtocolError(
            SubProtocolError::NoSubProtocol,
        )) => anyhow::anyhow!("server accepted the upgrade without echoing subprotocol `binary`"),
        other => anyhow::Error::new(other).context("websocket handshake"),
    }
}

impl Conn {
    pub async fn send(&mut self, data: &[u8]) -> Result<()> {
        match self {
            Conn::Tcp(s) => s.write_all(data).await?,
            Conn::Lean(lean) => lean.send(data).await?,
            Conn::Sio(sio) => sio.send(data).await?,
            // `send` = feed + flush: the frame is on the wire when this returns.
            Conn::Ws(ws) => {
                ws.send(Message::Binary(Bytes::copy_from_slice(data)))
                    .await?
            }
        }
        Ok(())
    }

    /// Fills `buf` completely. A ws server may split the bytes over several messages;
    /// more bytes than asked for is an error (the caller only ever has `buf.len()` in
    /// flight, so extra bytes mean a broken echo).
    pub async fn recv_exact(&mut self, buf: &mut [u8]) -> Result<()> {
        match self {
            Conn::Tcp(s) => {
                s.read_exact(buf).await.context("tcp read")?;
            }
            Conn::Lean(_) => bail!("the lean ws reader only counts what arrives"),
            Conn::Sio(sio) => sio.recv_exact(buf).await?,
            Conn::Ws(ws) => {
                let mut filled = 0;
                while filled < buf.len() {
                    let Some(data) = next_data(ws).await? else {
                        bail!(
                            "websocket closed by peer after {filled} of {} bytes",
                            buf.len()
                        );
                    };
                    let end = filled + data.len();
                    if end > buf.len() {
                        bail!("received {end} bytes, expected {}", buf.len());
                    }
                    buf[filled..end].copy_from_slice(&data);
                    filled = end;
                }
            }
        }
        Ok(())
    }

    /// Receives whatever comes next and returns its length; 0 means the peer closed.
    /// `scratch` is the TCP read buffer (ws messages arrive in tungstenite's own buffer).
    /// Cancel-safe, so it can sit in a `select!` against a deadline.
    pub async fn recv_count(&mut self, scratch: &mut [u8]) -> Result<RecvCount> {
        match self {
            Conn::Tcp(s) => {
                let n = s.read(scratch).await.context("tcp read")?;
                Ok(RecvCount {
                    bytes: n,
                    messages: usize::from(n > 0),
                })
            }
            Conn::Ws(ws) => match next_data(ws).await? {
                Some(data) => Ok(RecvCount {
                    bytes: data.len(),
                    messages: 1,
                }),
                None => Ok(RecvCount {
                    bytes: 0,
                    messages: 0,
                }),
            },
            Conn::Lean(lean) => lean.recv_count(scratch).await,
            // Reads into its own buffer: a partial frame must stay there between calls.
            Conn::Sio(sio) => sio.recv_count().await,
        }
    }

    /// [`recv_count`](Self::recv_count), handing what arrived to `sink` (TCP: after a
    /// read into `scratch`) before returning. Cancel-safe: bytes reach `sink` before any
    /// later await, so state kept by `sink` stays in step with the stream.
    pub async fn recv_with(
        &mut self,
        scratch: &mut [u8],
        mut sink: impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<RecvCount> {
        match self {
            Conn::Tcp(s) => {
                let n = s.read(scratch).await.context("tcp read")?;
                sink(&scratch[..n])?;
                Ok(RecvCount {
                    bytes: n,
                    messages: usize::from(n > 0),
                })
            }
            Conn::Ws(ws) => match next_data(ws).await? {
                Some(data) => {
                    sink(&data)?;
                    Ok(RecvCount {
                        bytes: data.len(),
                        messages: 1,
                    })
                }
                None => Ok(RecvCount {
                    bytes: 0,
                    messages: 0,
                }),
            },
            Conn::Lean(_) => bail!("the lean ws reader only counts what arrives"),
            Conn::Sio(sio) => sio.recv_with(sink).await,
        }
    }

    /// The next bytes that arrive, whatever their framing; empty once the peer closed.
    /// For handshakes, not measurements: it allocates.
    pub async fn recv_chunk(&mut self, scratch: &mut [u8]) -> Result<Vec<u8>> {
        match self {
            Conn::Tcp(s) => {
                let n = s.read(scratch).await.context("tcp read")?;
                Ok(scratch[..n].to_vec())
            }
            Conn::Ws(ws) => Ok(next_data(ws).await?.map(Vec::from).unwrap_or_default()),
            Conn::Lean(lean) => lean.recv_chunk(scratch).await,
            Conn::Sio(sio) => sio.recv_chunk().await,
        }
    }

    /// Polite close: FIN for TCP, a close handshake for ws. Callers bound it in time.
    pub async fn close(self) {
        match self {
            Conn::Tcp(mut s) => {
                let _ = s.shutdown().await;
            }
            Conn::Lean(lean) => (*lean).close().await,
            Conn::Sio(sio) => (*sio).close().await,
            Conn::Ws(mut ws) => {
                if ws.as_mut().close(None).await.is_ok() {
                    // Wait for the peer's close frame (or EOF), discarding data in flight.
                    while let Some(Ok(_)) = ws.next().await {}
                }
            }
        }
    }
}

/// Next data-bearing message; `None` once the peer closed. Pings are answered by
/// tungstenite itself while reading.
async fn next_data(ws: &mut WebSocketStream<Stream>) -> Result<Option<Bytes>> {
    loop {
        match ws.next().await {
            None => return Ok(None),
            Some(Ok(Message::Binary(b))) => return Ok(Some(b)),
            Some(Ok(Message::Text(t))) => return Ok(Some(Bytes::from(t))),
            Some(Ok(Message::Close(frame))) => {
                if let Some(f) = frame
                    && u16::from(f.code) != 1000
                {
                    bail!(
                        "websocket closed by peer: {} {}",
                        u16::from(f.code),
                        f.reason
                    );
                }
                return Ok(None);
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
            Some(Err(tungstenite::Error::ConnectionClosed)) => return Ok(None),
            Some(Err(e)) => return Err(anyhow::Error::new(e).context("websocket read")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::net::TcpListener;
    use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

    use crate::stream::test_pki::{self, TestPki};
    use crate::target::{TargetArgs, Targets};

    /// A ws server that answers the handshake (echoing `binary` if `echo_protocol`), then
    /// sends a ping and echoes each message back one byte per message.
    // The callback's `Result<Response, ErrorResponse>` is tungstenite's signature.
    #[allow(clippy::result_large_err)]
    async fn split_echo_server(echo_protocol: bool) -> Target {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (sock, _) = listener.accept().await.unwrap();
            let callback = move |req: &Request, mut resp: Response| {
                let offered = req.headers().get(header::SEC_WEBSOCKET_PROTOCOL).cloned();
                if echo_protocol && let Some(p) = offered {
                    resp.headers_mut().insert(header::SEC_WEBSOCKET_PROTOCOL, p);
                }
                Ok(resp)
            };
            let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(sock, callback).await else {
                return;
            };
            while let Some(Ok(msg)) = ws.next().await {
                if let Message::Binary(data) = msg {
                    ws.send(Message::Ping(Bytes::new())).await.unwrap();
                    for b in data.iter() {
                        ws.send(Message::binary(vec![*b])).await.unwrap();
                    }
                }
            }
        });
        Target::Ws {
            url: format!("ws://{addr}/websockify?token=t"),
            addr,
            tls: None,
        }
    }

    #[tokio::test]
    async fn ws_echo_split_over_messages_is_reassembled() {
        let target = split_echo_server(true).await;
        let mut conn = connect(&target, &[], WsClient::Tungstenite { read_buffer: 4096 })
            .await
            .unwrap();
        let sent: Vec<u8> = (1..=16).collect();
        conn.send(&sent).await.unwrap();
        let mut got = vec![0u8; sent.len()];
        conn.recv_exact(&mut got).await.unwrap();
        assert_eq!(got, sent);
    }

    #[tokio::test]
    async fn ws_server_without_subprotocol_is_reported() {
        let target = split_echo_server(false).await;
        let Err(err) = connect(&target, &[], WsClient::Tungstenite { read_buffer: 4096 }).await
        else {
            panic!("handshake without the subprotocol must fail");
        };
        assert!(format!("{err:#}").contains("subprotocol"), "{err:#}");
    }

    /// Messages and sizes the TLS source sends: more than one TLS record (16 KiB) each,
    /// so records are split and joined on the way.
    const TLS_MESSAGES: usize = 8;
    const TLS_MESSAGE: usize = 40_000;

    /// A wss server with a certificate for `names`: answers the handshake with
    /// subprotocol `binary`, then either sends [`TLS_MESSAGES`] messages and waits for
    /// the client to leave (`source`), or echoes each message back (not `source`).
    // The callback's `Result<Response, ErrorResponse>` is tungstenite's signature.
    #[allow(clippy::result_large_err)]
    async fn tls_ws_server(names: &[&str], source: bool) -> (TestPki, std::net::SocketAddr) {
        let pki = test_pki::new(names);
        let acceptor = pki.acceptor.clone();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (sock, _) = listener.accept().await.unwrap();
            let Ok(tls) = acceptor.accept(sock).await else {
                return;
            };
            let callback = |_: &Request, mut resp: Response| {
                resp.headers_mut().insert(
                    header::SEC_WEBSOCKET_PROTOCOL,
                    HeaderValue::from_static(SUBPROTOCOL),
                );
                Ok(resp)
            };
            let mut ws = tokio_tungstenite::accept_hdr_async(tls, callback)
                .await
                .unwrap();
            if source {
                for i in 0..TLS_MESSAGES {
                    let msg = vec![i as u8; TLS_MESSAGE];
                    ws.send(Message::binary(msg)).await.unwrap();
                }
            }
            while let Some(Ok(msg)) = ws.next().await {
                if !source && let Message::Binary(data) = msg {
                    ws.send(Message::Binary(data)).await.unwrap();
                }
            }
        });
        (pki, addr)
    }

    async fn load(url: String, ca: Option<std::path::PathBuf>) -> anyhow::Result<Targets> {
        Targets::load(&TargetArgs {
            target: Some(url),
            url_file: None,
            ca,
            headers: Vec::new(),
            connect_timeout: Duration::from_secs(5),
            no_rfb: true,
        })
        .await
    }

    #[tokio::test]
    async fn wss_target_is_counted_by_the_lean_reader() {
        let (pki, addr) = tls_ws_server(&["127.0.0.1"], true).await;
        let targets = load(
            format!("wss://{addr}/websockify?token=t"),
            Some(pki.ca.clone()),
        )
        .await
        .unwrap();
        let mut conn = targets.connect(0, WsClient::Lean).await.unwrap();
        assert!(matches!(conn, Conn::Lean(_)));
        let mut scratch = vec![0u8; 64 * 1024];
        let mut bytes = 0;
        // The server sends exactly this much and then nothing: a short count waits here
        // until the timeout, a long one fails the assert.
        while bytes < TLS_MESSAGES * TLS_MESSAGE {
            let got = tokio::time::timeout(Duration::from_secs(5), conn.recv_count(&mut scratch))
                .await
                .expect("the server's bytes arrive")
                .unwrap();
            assert!(
                got.bytes > 0 || got.messages > 0,
                "closed after {bytes} bytes"
            );
            bytes += got.bytes;
        }
        assert_eq!(bytes, TLS_MESSAGES * TLS_MESSAGE);
        conn.close().await;
    }

    #[tokio::test]
    async fn wss_target_echoes_through_tungstenite() {
        // `localhost` in the URL, so the certificate is checked against a DNS name.
        let (pki, addr) = tls_ws_server(&["localhost"], false).await;
        let url = format!("wss://localhost:{}/websockify?token=t", addr.port());
        let targets = load(url, Some(pki.ca.clone())).await.unwrap();
        let mut conn = targets
            .connect(0, WsClient::Tungstenite { read_buffer: 4096 })
            .await
            .unwrap();
        let sent: Vec<u8> = (0..TLS_MESSAGE).map(|i| i as u8).collect();
        conn.send(&sent).await.unwrap();
        let mut got = vec![0u8; sent.len()];
        conn.recv_exact(&mut got).await.unwrap();
        assert_eq!(got, sent);
    }

    #[tokio::test]
    async fn wss_target_refuses_a_certificate_for_another_name() {
        let (pki, addr) = tls_ws_server(&["localhost"], true).await;
        let targets = load(format!("wss://{addr}/"), Some(pki.ca.clone()))
            .await
            .unwrap();
        let Err(err) = targets.connect(0, WsClient::Lean).await else {
            panic!("a certificate for localhost must not pass for 127.0.0.1");
        };
        let err = format!("{err:#}");
        assert!(err.contains("TLS handshake"), "{err}");
        assert!(err.contains("certificate"), "{err}");
    }

    #[tokio::test]
    async fn wss_and_sios_targets_need_a_ca() {
        for url in [
            "wss://127.0.0.1:1/",
            "sios://127.0.0.1:1?containerId=c&token=t",
        ] {
            let Err(err) = load(url.to_owned(), None).await else {
                panic!("{url} without --ca must be refused");
            };
            assert!(format!("{err:#}").contains("needs --ca"), "{err:#}");
        }
    }
}
