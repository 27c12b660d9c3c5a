//! WebSocket and plain HTTP clients for tests.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Opens a WebSocket offering subprotocol `binary`, as noVNC does.
pub async fn connect(url: &str) -> Result<Ws, tungstenite::Error> {
    connect_with(url, &[]).await
}

/// [`connect`] with extra request headers (`Origin`, `Cookie`, `Authorization`).
pub async fn connect_with(
    url: &str,
    headers: &[(&'static str, &str)],
) -> Result<Ws, tungstenite::Error> {
    connect_tls(url, headers, None).await
}

/// [`connect_with`] for `wss://` URLs too, with the TLS client `tls`.
pub async fn connect_tls(
    url: &str,
    headers: &[(&'static str, &str)],
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
) -> Result<Ws, tungstenite::Error> {
    let mut req = url.into_client_request()?;
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        http::HeaderValue::from_static("binary"),
    );
    for (name, value) in headers {
        let value = http::HeaderValue::from_str(value).expect("header value");
        req.headers_mut().insert(*name, value);
    }
    let config = WebSocketConfig::default()
        .max_message_size(None)
        .max_frame_size(None);
    let (ws, _) = tokio_tungstenite::connect_async_tls_with_config(
        req,
        Some(config),
        true,
        tls.map(tokio_tungstenite::Connector::Rustls),
    )
    .await?;
    Ok(ws)
}

/// A WebSocket for `url` over a TCP connection from `source` (any 127.0.0.0/8 address
/// works on loopback) to `to` (the relay, or a proxy in front of it), with extra
/// request headers.
pub async fn connect_from(
    source: std::net::IpAddr,
    to: SocketAddr,
    url: &str,
    headers: &[(&'static str, &str)],
) -> anyhow::Result<Ws> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    let stream = socket.connect(to).await?;
    let mut req = url.into_client_request()?;
    for (name, value) in headers {
        req.headers_mut()
            .append(*name, http::HeaderValue::from_str(value)?);
    }
    let (ws, _) = tokio_tungstenite::client_async(req, MaybeTlsStream::Plain(stream)).await?;
    Ok(ws)
}

/// How many of `conns` the other end has closed (EOF or reset; open ones would block).
pub fn closed(conns: &[TcpStream]) -> usize {
    let mut sink = [0u8; 1];
    conns
        .iter()
        .filter(|c| match c.try_read(&mut sink) {
            Ok(n) => n == 0,
            Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
        })
        .count()
}

/// The HTTP status a refused WebSocket connect got, and its body.
pub async fn refused(url: &str) -> (u16, String) {
    refused_with(url, &[]).await
}

/// The status of a refused WebSocket connect, or `None` when it was not refused: for
/// polling until a change (a reload) takes effect.
pub async fn refusal_status(url: &str) -> Option<u16> {
    match connect_with(url, &[]).await {
        Err(tungstenite::Error::Http(resp)) => Some(resp.status().as_u16()),
        _ => None,
    }
}

/// [`refused`] with extra request headers.
pub async fn refused_with(url: &str, headers: &[(&'static str, &str)]) -> (u16, String) {
    match connect_with(url, headers).await {
        Ok(_) => panic!("{url} was accepted, expected a refusal"),
        Err(tungstenite::Error::Http(resp)) => {
            let body = resp
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned());
            (resp.status().as_u16(), body.unwrap_or_default())
        }
        Err(e) => panic!("{url}: expected an HTTP refusal, got {e}"),
    }
}

/// Reads until the server's Close frame (skipping data); returns its code and reason.
pub async fn expect_close(ws: &mut Ws, within: Duration) -> anyhow::Result<(u16, String)> {
    tokio::time::timeout(within, async {
        while let Some(msg) = ws.next().await {
            match msg? {
                Message::Close(Some(frame)) => {
                    return Ok((u16::from(frame.code), frame.reason.to_string()));
                }
                Message::Close(None) => bail!("close frame without a code"),
                _ => {}
            }
        }
        bail!("connection ended without a close frame")
    })
    .await
    .context("no close frame in time")?
}

/// Sends `request` as is on a fresh connection; returns the status and body.
pub async fn raw_http(addr: SocketAddr, request: &[u8]) -> anyhow::Result<(u16, String)> {
    http_over(TcpStream::connect(addr).await?, request).await
}

/// Sends `request` as is on `stream` (plain or TLS) and reads the answer to its end;
/// returns the status and body.
pub async fn http_over<S>(stream: S, request: &[u8]) -> anyhow::Result<(u16, String)>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (status, _, body) = http_exchange(stream, request).await?;
    Ok((status, body))
}

/// [`http_over`], also returning the response head (status line and headers).
pub async fn http_exchange<S>(
    mut stream: S,
    request: &[u8],
) -> anyhow::Result<(u16, String, String)>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    stream.write_all(request).await?;
    let mut out = Vec::new();
    tokio::time::timeout(crate::WAIT, stream.read_to_end(&mut out)).await??;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no HTTP status in {text:?}"))?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text.as_str(), ""));
    Ok((status, head.to_owned(), body.to_owned()))
}

/// GET `path`; returns the status and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    raw_http(addr, req.as_bytes()).await
}

/// The value of one metric line (exact name and labels) on an admin listener, if
/// present and the listener answers.
pub async fn metric_at(admin: SocketAddr, series: &str) -> Option<f64> {
    let text = http_get(admin, "/metrics").await.ok()?.1;
    text.lines().find_map(|l| metric_value(l, series))
}

/// One kept-alive HTTP connection to an admin listener, opened once and asked again
/// and again: for reading metrics when the relay could not accept a new connection.
pub struct MetricsConn(TcpStream);

impl MetricsConn {
    pub async fn open(admin: SocketAddr) -> anyhow::Result<MetricsConn> {
        Ok(MetricsConn(TcpStream::connect(admin).await?))
    }

    /// The value of one metric line (exact name and labels), asked on this connection.
    pub async fn metric(&mut self, series: &str) -> anyhow::Result<Option<f64>> {
        let req = "GET /metrics HTTP/1.1\r\nHost: admin\r\n\r\n";
        self.0.write_all(req.as_bytes()).await?;
        let mut buf = Vec::new();
        let body = tokio::time::timeout(crate::WAIT, async {
            loop {
                if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .context("no content-length")?
                        .trim()
                        .parse()?;
                    if buf.len() >= end + 4 + len {
                        return anyhow::Ok(
                            String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).into_owned(),
                        );
                    }
                }
                let mut chunk = [0u8; 16 * 1024];
                let n = self.0.read(&mut chunk).await?;
                anyhow::ensure!(n > 0, "admin listener closed the connection");
                buf.extend_from_slice(&chunk[..n]);
            }
        })
        .await??;
        Ok(body.lines().find_map(|l| metric_value(l, series)))
    }
}

fn metric_value(line: &str, series: &str) -> Option<f64> {
    line.strip_prefix(series)?
        .strip_prefix(' ')?
        .trim()
        .parse()
        .ok()
}

/// Opens a TCP connection and sends a WebSocket upgrade request for `path` (with any
/// `extra` header lines), without reading: for tests that speak raw bytes afterwards.
pub async fn raw_upgrade(addr: SocketAddr, path: &str, extra: &str) -> anyhow::Result<TcpStream> {
    let mut s = TcpStream::connect(addr).await?;
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
    );
    s.write_all(req.as_bytes()).await?;
    Ok(s)
}

/// A masked binary frame from a client, for raw clients written by hand (payload under
/// 126 bytes).
pub fn client_frame(payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mask = [0x12, 0x34, 0x56, 0x78];
    let mut frame = vec![0x82, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// Splits raw bytes read after [`raw_upgrade`] into the HTTP response head and the
/// frames behind it.
pub fn split_response(got: &[u8]) -> (String, &[u8]) {
    match got.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(at) => (
            String::from_utf8_lossy(&got[..at]).into_owned(),
            &got[at + 4..],
        ),
        None => (String::from_utf8_lossy(got).into_owned(), &[]),
    }
}

/// Server frames (unmasked, 7- or 16-bit lengths) in raw bytes: `(opcode, payload)`
/// each; stops at the first incomplete one.
pub fn server_frames(mut bytes: &[u8]) -> Vec<(u8, &[u8])> {
    let mut frames = Vec::new();
    while bytes.len() >= 2 {
        let (head, len) = match bytes[1] & 0x7F {
            126 if bytes.len() >= 4 => (4, usize::from(u16::from_be_bytes([bytes[2], bytes[3]]))),
            126 | 127 => break,
            n => (2, usize::from(n)),
        };
        let Some(payload) = bytes.get(head..head + len) else {
            break;
        };
        frames.push((bytes[0] & 0x0F, payload));
        bytes = &bytes[head + len..];
    }
    frames
}

/// The status code of the first Close among raw server frames.
pub fn close_code(frames: &[u8]) -> Option<u16> {
    server_frames(frames)
        .into_iter()
        .find(|(op, _)| *op == 0x8)
        .and_then(|(_, p)| Some(u16::from_be_bytes([*p.first()?, *p.get(1)?])))
}
