//! One RFB session after accept: the handshake (under a deadline), then a reader that
//! parses and logs every client message and a writer that sends framebuffer updates,
//! either on request or, with `--flood`, back to back.
//!
//! SetDesktopSize is answered as a real server does, once the client has listed
//! ExtendedDesktopSize (-308) in SetEncodings (never in flood mode): status 0 (ok) and
//! the connection's framebuffer takes the new size when the layout has at least one
//! screen and both sides are within 1..=[`MAX_SIDE`]; status 3 (invalid layout) and
//! the size unchanged otherwise. The size belongs to the connection, not the server:
//! other clients keep theirs.
//!
//! Reader and writer are two futures of the same task joined by `select!`, so when one
//! ends (client closed, bad input, write error) the other is dropped with it.

use std::convert::Infallible;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior, interval_at, timeout};

use crate::event_log::EventLog;
use crate::framebuffer::{
    ENCODING_EXTENDED_DESKTOP_SIZE, Framebuffer, Rect, write_desktop_size, write_update,
};
use crate::handshake::{self, Outcome};
use crate::pixel::PixelFormat;
use crate::{Config, MAX_SIDE};

/// Deadline for everything from accept to ServerInit, so a silent client cannot hold a
/// connection in the handshake forever.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest ClientCutText we read (1 MiB); longer ones close the connection.
const MAX_CUT_TEXT: u32 = 1 << 20;

/// Update requests queued between reader and writer; when full, the reader waits, which
/// pushes back on the client through TCP.
const REQUEST_QUEUE: usize = 64;

/// How often flood mode logs its byte total.
const FLOOD_PROGRESS_PERIOD: Duration = Duration::from_millis(100);

/// What the reader hands the writer, in the order the client sent it.
#[derive(Debug)]
enum Request {
    /// A FramebufferUpdateRequest.
    Update { incremental: bool, rect: Rect },
    /// A ClientCutText's text, to send back (`--echo-clipboard`).
    CutText(Vec<u8>),
    /// A SetDesktopSize from a client that listed ExtendedDesktopSize.
    Resize {
        width: u16,
        height: u16,
        screens: u8,
    },
}

/// ExtendedDesktopSize statuses the fixture answers with.
const RESIZE_OK: u16 = 0;
const RESIZE_INVALID_LAYOUT: u16 = 3;

/// Runs a session to its end and returns why it ended. Errors are for unexpected
/// failures; a peer that goes away, even mid-write, is a normal close.
pub async fn run(
    conn: u64,
    stream: TcpStream,
    config: &Config,
    generation: watch::Receiver<u64>,
    log: &EventLog,
) -> anyhow::Result<String> {
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::new(rd);
    let handshake = handshake::run(conn, &mut rd, &mut wr, config, log);
    let result = match timeout(HANDSHAKE_TIMEOUT, handshake).await {
        Err(_) => return Ok("handshake timeout".into()),
        Ok(Ok(Outcome::Rejected(reason))) => return Ok(reason),
        Ok(Err(e)) => Err(e),
        Ok(Ok(Outcome::Ready)) => {
            let fb = config.framebuffer;
            // The reader publishes the client's pixel format; the writer reads the latest
            // one when it encodes an update (RFC 6143 §7.5.1).
            let (format_tx, format_rx) = watch::channel(PixelFormat::SERVER);
            if config.flood {
                let sent = AtomicU64::new(0);
                let result = tokio::select! {
                    r = read_messages(conn, &mut rd, &format_tx, None, false, log) => r,
                    r = flood(&mut wr, fb, &format_rx, &generation, &sent) => r,
                    never = flood_progress(conn, &sent, log) => match never {},
                };
                let bytes = sent.load(Ordering::Relaxed);
                log.conn(
                    conn,
                    json!({"event": "flood_progress", "bytes": bytes, "final": true}),
                );
                result
            } else {
                let (tx, rx) = mpsc::channel(REQUEST_QUEUE);
                tokio::select! {
                    r = read_messages(conn, &mut rd, &format_tx, Some(tx), config.echo_clipboard, log) => r,
                    r = serve_requests(conn, &mut wr, fb, &format_rx, generation, rx, log) => r,
                }
            }
        }
    };
    match result {
        Err(e) if peer_gone(&e) => Ok(format!("client closed ({e:#})")),
        other => other,
    }
}

/// Whether `e` only says the peer went away.
fn peer_gone(e: &anyhow::Error) -> bool {
    e.downcast_ref::<io::Error>().is_some_and(|e| {
        matches!(
            e.kind(),
            io::ErrorKind::BrokenPipe
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::UnexpectedEof
        )
    })
}

/// Reads, logs and dispatches client messages until the client closes or sends
/// something we cannot handle; returns the close reason. `requests` is `None` in flood
/// mode, where update requests are logged and otherwise ignored; `echo_clipboard` sends
/// each ClientCutText's text to the writer.
async fn read_messages<R: AsyncRead + Unpin>(
    conn: u64,
    rd: &mut R,
    format: &watch::Sender<PixelFormat>,
    requests: Option<mpsc::Sender<Request>>,
    echo_clipboard: bool,
    log: &EventLog,
) -> anyhow::Result<String> {
    // The client's last SetEncodings listed ExtendedDesktopSize.
    let mut extended_desktop_size = false;
    loop {
        let msg_type = match rd.read_u8().await {
            Ok(t) => t,
            // EOF between messages is the normal way for a client to leave.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok("client closed".into()),
            Err(e) => return Err(e).context("read message type"),
        };
        match msg_type {
            0 => {
                let mut b = [0u8; 19];
                rd.read_exact(&mut b)
                    .await
                    .context("truncated SetPixelFormat")?;
                let mut raw = [0u8; 16];
                raw.copy_from_slice(&b[3..]);
                match PixelFormat::parse(&raw) {
                    Ok(f) => {
                        let mut line = f.log_fields();
                        line["msg"] = "SetPixelFormat".into();
                        log.conn(conn, line);
                        format.send_replace(f);
                    }
                    Err(e) => {
                        let raw: Vec<u8> = raw.to_vec();
                        log.conn(
                            conn,
                            json!({"msg": "SetPixelFormat", "raw": raw, "error": e.to_string()}),
                        );
                        return Ok(format!("unsupported pixel format: {e}"));
                    }
                }
            }
            2 => {
                let mut b = [0u8; 3];
                rd.read_exact(&mut b)
                    .await
                    .context("truncated SetEncodings")?;
                let count = usize::from(u16::from_be_bytes([b[1], b[2]]));
                // At most 65535 × 4 bytes, bounded by the u16 count.
                let mut list = vec![0u8; count * 4];
                rd.read_exact(&mut list)
                    .await
                    .context("truncated SetEncodings")?;
                let encodings: Vec<i32> = list
                    .chunks_exact(4)
                    .map(|c| i32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                extended_desktop_size = encodings.contains(&ENCODING_EXTENDED_DESKTOP_SIZE);
                log.conn(conn, json!({"msg": "SetEncodings", "encodings": encodings}));
            }
            3 => {
                let mut b = [0u8; 9];
                rd.read_exact(&mut b)
                    .await
                    .context("truncated FramebufferUpdateRequest")?;
                let u16_at = |i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
                let (incremental, r) = (
                    b[0] != 0,
                    Rect {
                        x: u16_at(1),
                        y: u16_at(3),
                        width: u16_at(5),
                        height: u16_at(7),
                    },
                );
                log.conn(
                    conn,
                    json!({"msg": "FramebufferUpdateRequest", "incremental": incremental,
                           "x": r.x, "y": r.y, "width": r.width, "height": r.height}),
                );
                if let Some(tx) = &requests
                    && tx
                        .send(Request::Update {
                            incremental,
                            rect: r,
                        })
                        .await
                        .is_err()
                {
                    return Ok("writer stopped".into());
                }
            }
            4 => {
                let mut b = [0u8; 7];
                rd.read_exact(&mut b).await.context("truncated KeyEvent")?;
                let keysym = u32::from_be_bytes([b[3], b[4], b[5], b[6]]);
                log.conn(
                    conn,
                    json!({"msg": "KeyEvent", "down": b[0] != 0, "keysym": keysym}),
                );
            }
            5 => {
                let mut b = [0u8; 5];
                rd.read_exact(&mut b)
                    .await
                    .context("truncated PointerEvent")?;
                let x = u16::from_be_bytes([b[1], b[2]]);
                let y = u16::from_be_bytes([b[3], b[4]]);
                log.conn(
                    conn,
                    json!({"msg": "PointerEvent", "buttons": b[0], "x": x, "y": y}),
                );
            }
            6 => {
                let mut b = [0u8; 7];
                rd.read_exact(&mut b)
                    .await
                    .context("truncated ClientCutText")?;
                let length = u32::from_be_bytes([b[3], b[4], b[5], b[6]]);
                if length > MAX_CUT_TEXT {
                    // Also what the extended-clipboard form (negative length) looks like;
                    // we do not speak it, and will not read an unbounded amount.
                    log.conn(
                        conn,
                        json!({"msg": "ClientCutText", "length": length, "error": "too long"}),
                    );
                    return Ok(format!("ClientCutText of {length} bytes is over the limit"));
                }
                let mut text = vec![0u8; length as usize];
                rd.read_exact(&mut text)
                    .await
                    .context("truncated ClientCutText")?;
                // The text is ISO 8859-1: every byte is the code point of the same value.
                let latin1: String = text.iter().map(|&c| char::from(c)).collect();
                log.conn(
                    conn,
                    json!({"msg": "ClientCutText", "length": length, "text": latin1}),
                );
                if let Some(tx) = requests.as_ref().filter(|_| echo_clipboard)
                    && tx.send(Request::CutText(text)).await.is_err()
                {
                    return Ok("writer stopped".into());
                }
            }
            251 => {
                // SetDesktopSize: padding, width, height, screen count, padding, then
                // 16 bytes per screen. Answered by the writer (see the module doc).
                let mut b = [0u8; 7];
                rd.read_exact(&mut b)
                    .await
                    .context("truncated SetDesktopSize")?;
                let width = u16::from_be_bytes([b[1], b[2]]);
                let height = u16::from_be_bytes([b[3], b[4]]);
                let mut screens = vec![0u8; usize::from(b[5]) * 16];
                rd.read_exact(&mut screens)
                    .await
                    .context("truncated SetDesktopSize screens")?;
                log.conn(
                    conn,
                    json!({"msg": "SetDesktopSize", "width": width, "height": height, "screens": b[5]}),
                );
                let resize = Request::Resize {
                    width,
                    height,
                    screens: b[5],
                };
                if let Some(tx) = requests.as_ref().filter(|_| extended_desktop_size)
                    && tx.send(resize).await.is_err()
                {
                    return Ok("writer stopped".into());
                }
            }
            t => {
                // Never guess the length of a message we do not know.
                log.conn(conn, json!({"event": "unknown_message", "type": t}));
                return Ok(format!("unknown message type {t}"));
            }
        }
    }
}

/// Answers update requests: a non-incremental one at once with the requested rectangle,
/// an incremental one as soon as the content differs from what this client last got.
/// At most one incremental request is pending; a newer one replaces it. Answers resize
/// requests in order with them.
async fn serve_requests<W: AsyncWrite + Unpin>(
    conn: u64,
    wr: &mut W,
    mut fb: Framebuffer,
    format: &watch::Receiver<PixelFormat>,
    mut generation: watch::Receiver<u64>,
    mut requests: mpsc::Receiver<Request>,
    log: &EventLog,
) -> anyhow::Result<String> {
    let mut pending: Option<Rect> = None;
    // Generation of the last update this client got; `None` before the first.
    let mut last_sent: Option<u64> = None;
    loop {
        if let Some(rect) = pending {
            let current = *generation.borrow_and_update();
            if last_sent != Some(current) {
                pending = None;
                let pf = *format.borrow();
                write_update(wr, fb, rect, pf, current, |_| {})
                    .await
                    .context("send update")?;
                last_sent = Some(current);
                continue;
            }
        }
        tokio::select! {
            request = requests.recv() => match request {
                None => return Ok("reader stopped".into()),
                Some(Request::Update { incremental: true, rect }) => pending = Some(rect),
                Some(Request::Update { incremental: false, rect }) => {
                    let current = *generation.borrow_and_update();
                    let pf = *format.borrow();
                    write_update(wr, fb, rect, pf, current, |_| {}).await.context("send update")?;
                    last_sent = Some(current);
                }
                Some(Request::CutText(text)) => {
                    // ServerCutText: type, padding, length, the text (under MAX_CUT_TEXT).
                    let mut msg = vec![3, 0, 0, 0];
                    msg.extend_from_slice(&(text.len() as u32).to_be_bytes());
                    msg.extend_from_slice(&text);
                    wr.write_all(&msg).await.context("send cut text")?;
                    log.conn(conn, json!({"event": "cut_text_sent", "length": text.len()}));
                }
                Some(Request::Resize { width, height, screens }) => {
                    let side = 1..=MAX_SIDE;
                    let status = if screens >= 1 && side.contains(&width) && side.contains(&height) {
                        fb.width = width;
                        fb.height = height;
                        // Everything on screen is new to the client.
                        last_sent = None;
                        RESIZE_OK
                    } else {
                        RESIZE_INVALID_LAYOUT
                    };
                    write_desktop_size(wr, fb, status).await.context("send desktop size")?;
                    log.conn(
                        conn,
                        json!({"event": "desktop_size_answer", "status": status,
                               "width": fb.width, "height": fb.height}),
                    );
                }
            },
            changed = generation.changed(), if pending.is_some() => {
                if changed.is_err() {
                    return Ok("server stopped".into());
                }
            }
        }
    }
}

/// Sends full-screen updates back to back, as fast as the socket takes them, counting
/// the bytes written in `sent`. Returns only on a write error.
async fn flood<W: AsyncWrite + Unpin>(
    wr: &mut W,
    fb: Framebuffer,
    format: &watch::Receiver<PixelFormat>,
    generation: &watch::Receiver<u64>,
    sent: &AtomicU64,
) -> anyhow::Result<String> {
    loop {
        let pf = *format.borrow();
        let current = *generation.borrow();
        let count = |n: usize| {
            sent.fetch_add(n as u64, Ordering::Relaxed);
        };
        write_update(wr, fb, fb.full(), pf, current, count)
            .await
            .context("flood update")?;
    }
}

/// Logs the flood byte total every period, changed or not, so a test can watch it
/// plateau when the peer stops reading.
async fn flood_progress(conn: u64, sent: &AtomicU64, log: &EventLog) -> Infallible {
    let mut ticks = interval_at(
        Instant::now() + FLOOD_PROGRESS_PERIOD,
        FLOOD_PROGRESS_PERIOD,
    );
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let bytes = sent.load(Ordering::Relaxed);
        log.conn(conn, json!({"event": "flood_progress", "bytes": bytes}));
    }
}
