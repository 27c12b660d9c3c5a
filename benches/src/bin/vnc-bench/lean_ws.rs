//! A lean WebSocket reader for `throughput`: a hand-made upgrade request, then the
//! server's frames parsed in place with the relay's own frame decoder and their payload
//! counted, never copied. Per byte that is the same client work as the plain TCP
//! target, so the client's cost doesn't tilt a relay/proxy/websockify comparison. Over
//! `wss://` it reads the same way from the TLS stream (rustls decrypts into it).
//!
//! Pings from the server are not answered: runs are far shorter than any server's
//! missed-pong limit. It sends only the RFB handshake's answers. Its hand-made upgrade
//! ([`upgrade`]) is the socket.io client's too.

use anyhow::{Context, Result, bail, ensure};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue, Uri};
use vnc_relay::transport::websocket::frame::{Decoded, Decoder};

use crate::recv_count::RecvCount;
use crate::sio_wire::{self, Masks};
use crate::stream::Stream;

/// Largest HTTP response head accepted.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;

pub struct LeanWs {
    stream: Stream,
    decoder: Decoder,
    /// Frame bytes that arrived with the 101 response, decoded before any read.
    pending: Vec<u8>,
    /// Mask keys of what it sends (the RFB handshake's answers).
    masks: Masks,
}

impl LeanWs {
    pub async fn connect(
        url: &str,
        mut stream: Stream,
        headers: &[(HeaderName, HeaderValue)],
    ) -> Result<LeanWs> {
        let uri: Uri = url.parse().context("target URL")?;
        let host = uri.authority().context("target URL has no host")?.as_str();
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let pending = upgrade(&mut stream, host, path, Some("binary"), headers).await?;
        let masks = Masks::new(u64::from(stream.local_addr()?.port()));
        Ok(LeanWs {
            stream,
            decoder: Decoder::server_frames(u64::MAX),
            pending,
            masks,
        })
    }

    /// Reads once (or takes the bytes left from the handshake) and counts the payload
    /// bytes and completed data frames in it; 0 bytes and 0 messages means closed.
    pub async fn recv_count(&mut self, scratch: &mut [u8]) -> Result<RecvCount> {
        let mut input = std::mem::take(&mut self.pending);
        let buf: &mut [u8] = if input.is_empty() {
            let n = self.stream.read(scratch).await.context("ws read")?;
            if n == 0 {
                return Ok(RecvCount {
                    bytes: 0,
                    messages: 0,
                });
            }
            &mut scratch[..n]
        } else {
            &mut input
        };
        let mut count = RecvCount {
            bytes: 0,
            messages: 0,
        };
        let mut at = 0;
        while at < buf.len() {
            let (used, item) = self
                .decoder
                .decode(&mut buf[at..])
                .context("server frame")?;
            match item {
                Some(Decoded::Data(range)) => {
                    count.bytes += range.len();
                    count.messages += 1;
                }
                Some(Decoded::Close(code)) => bail!("closed by peer: {code:?}"),
                Some(Decoded::Ping(_) | Decoded::Pong) | None => {}
            }
            at += used;
        }
        if count.bytes == 0 {
            // Only control frames or a partial header: report one empty message so the
            // caller keeps reading.
            count.messages = 1;
        }
        Ok(count)
    }

    /// Sends `data` as one masked binary message (the RFB handshake's answers; the
    /// counting reader sends nothing else).
    pub async fn send(&mut self, data: &[u8]) -> Result<()> {
        let mut frame = Vec::with_capacity(data.len() + 14);
        sio_wire::push_binary(&mut frame, data, &mut self.masks);
        self.stream.send_all(&frame).await?;
        Ok(())
    }

    /// Reads until data arrives and returns a copy of it (the RFB handshake); empty
    /// once closed.
    pub async fn recv_chunk(&mut self, scratch: &mut [u8]) -> Result<Vec<u8>> {
        loop {
            let mut input = std::mem::take(&mut self.pending);
            let buf: &mut [u8] = if input.is_empty() {
                let n = self.stream.read(scratch).await.context("ws read")?;
                if n == 0 {
                    return Ok(Vec::new());
                }
                &mut scratch[..n]
            } else {
                &mut input
            };
            let mut data = Vec::new();
            let mut at = 0;
            while at < buf.len() {
                let (used, item) = self
                    .decoder
                    .decode(&mut buf[at..])
                    .context("server frame")?;
                match item {
                    Some(Decoded::Data(range)) => data.extend_from_slice(&buf[at..][range]),
                    Some(Decoded::Close(code)) => bail!("closed by peer: {code:?}"),
                    Some(Decoded::Ping(_) | Decoded::Pong) | None => {}
                }
                at += used;
            }
            if !data.is_empty() {
                return Ok(data);
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.stream.shutdown().await;
    }
}

/// The client side of the WebSocket upgrade, written and checked by hand: `GET path`
/// with `subprotocol` offered if given and the extra headers, then a `101` whose
/// `Sec-WebSocket-Accept` matches. Returns the bytes that arrived after the response
/// head (the first frames).
pub async fn upgrade<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    host: &str,
    path: &str,
    subprotocol: Option<&str>,
    headers: &[(HeaderName, HeaderValue)],
) -> Result<Vec<u8>> {
    let key = generate_key();
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
    );
    if let Some(p) = subprotocol {
        request.push_str(&format!("Sec-WebSocket-Protocol: {p}\r\n"));
    }
    for (name, value) in headers {
        request.push_str(&format!(
            "{name}: {}\r\n",
            value.to_str().unwrap_or_default()
        ));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await?;
    stream.flush().await?;

    let mut head = Vec::new();
    let end = loop {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        ensure!(n > 0, "connection closed during the handshake");
        head.extend_from_slice(&chunk[..n]);
        if let Some(at) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        ensure!(head.len() < MAX_RESPONSE_HEAD, "response head too large");
    };
    let text = String::from_utf8_lossy(&head[..end]).to_ascii_lowercase();
    if !text.starts_with("http/1.1 101") {
        let body = String::from_utf8_lossy(&head[end..]);
        bail!(
            "handshake refused: {} {}",
            text.lines().next().unwrap_or_default(),
            body.chars().take(200).collect::<String>().trim()
        );
    }
    let accept = derive_accept_key(key.as_bytes()).to_ascii_lowercase();
    ensure!(
        text.contains(&format!("sec-websocket-accept: {accept}")),
        "wrong Sec-WebSocket-Accept"
    );
    Ok(head.split_off(end))
}
