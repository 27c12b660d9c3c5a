//! `vnc-relay replay`: plays a session recording back to noVNC at its original pace,
//! over a websockify-compatible WebSocket. Each viewer that connects gets the recorded
//! bytes from the start, as binary messages at their recorded times; what it sends
//! is read and dropped (the recording already holds the server's answers). After the
//! last record the connection stays open, so the last picture stays on screen.
//!
//! An operator's tool, not the data path: tokio-tungstenite does the WebSocket, and the
//! file is read whole (it is at most `record_max_bytes`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::HeaderValue;
use http::header::SEC_WEBSOCKET_PROTOCOL;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::{Instant, sleep, sleep_until};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::sync::CancellationToken;

use crate::http::accept::bind;
use crate::recording::format::{self, Ending, FormatError, Recording};

/// Where `replay` listens unless told: loopback, a port beside the relay's.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:6081";
/// Viewers played to at once; more are turned away.
pub const MAX_VIEWERS: usize = 16;
/// Time a viewer has to finish the WebSocket handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed accept (EMFILE and the like).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// `vnc-relay replay`'s arguments.
#[derive(clap::Args, Debug)]
pub struct ReplayArgs {
    /// The recording (a `.vncrec` file from the relay's record_dir).
    pub file: PathBuf,
    /// Where noVNC connects: ws://ADDR/websockify (any path works).
    #[arg(long, default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Playback speed factor: 2 plays twice as fast, 0.5 half as fast.
    #[arg(long, default_value = "1", value_parser = parse_speed)]
    pub speed: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Format { path: PathBuf, source: FormatError },
}

/// The `replay` command: loads the recording, says what it holds and where to point
/// noVNC (and `LISTENING public=ADDR`, for scripts), then plays it until `stop`.
pub async fn run(args: &ReplayArgs, stop: CancellationToken) -> Result<(), ReplayError> {
    let recording = load(&args.file)?;
    println!("{}", describe(&args.file, &recording, args.speed));
    let bound = |source| ReplayError::Bind {
        addr: args.listen,
        source,
    };
    let listener = bind(args.listen).map_err(bound)?;
    let addr = listener.local_addr().map_err(bound)?;
    println!(
        "open noVNC at ws://{addr}/websockify (vnc.html?host={}&port={}&path=websockify)",
        addr.ip(),
        addr.port()
    );
    println!("LISTENING public={addr}");
    serve(listener, Arc::new(recording), args.speed, stop).await;
    Ok(())
}

/// What a recording holds, and whether it ends early, in a few lines.
fn describe(file: &Path, recording: &Recording, speed: f64) -> String {
    let meta = &recording.meta;
    let mut out = format!(
        "replaying {}: session {} of container {} (user {}, started {}), {} bytes in {} records over {:.1} s, speed {}",
        file.display(),
        meta.session_id,
        meta.container_id,
        meta.user_id,
        meta.started_at,
        recording.data_len(),
        recording.records.len(),
        f64::from(recording.duration_ms()) / 1000.0,
        speed,
    );
    match recording.ending {
        Some(Ending::Complete) => {}
        Some(ending) => {
            out += &format!("\nnote: the recording stopped early ({})", ending.as_str())
        }
        None => {
            out += "\nnote: the recording has no end record (the relay stopped while writing it)"
        }
    }
    out
}

/// Reads and checks a whole recording.
pub fn load(path: &Path) -> Result<Recording, ReplayError> {
    let bytes = std::fs::read(path).map_err(|source| ReplayError::Read {
        path: path.to_owned(),
        source,
    })?;
    format::parse(Bytes::from(bytes)).map_err(|source| ReplayError::Format {
        path: path.to_owned(),
        source,
    })
}

/// `--speed`: a positive factor (2 plays twice as fast).
pub fn parse_speed(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x.is_finite() && x > 0.0 => Ok(x),
        _ => Err(format!("speed must be a positive number, not {s:?}")),
    }
}

/// Plays `recording` to every viewer that connects to `listener`, until `stop`.
pub async fn serve(
    listener: TcpListener,
    recording: Arc<Recording>,
    speed: f64,
    stop: CancellationToken,
) {
    let viewers = Arc::new(Semaphore::new(MAX_VIEWERS));
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let Ok(permit) = viewers.clone().try_acquire_owned() else {
            tracing::warn!(client.addr = %peer, "refused: {MAX_VIEWERS} viewers already");
            continue;
        };
        let recording = recording.clone();
        tokio::spawn(async move {
            let _permit = permit;
            tracing::info!(client.addr = %peer, "viewer connected");
            match play(stream, &recording, speed).await {
                Ok(()) => tracing::info!(client.addr = %peer, "viewer left"),
                Err(e) => tracing::info!(client.addr = %peer, error = %e, "viewer dropped"),
            }
        });
    }
}

/// One viewer: the handshake, then the records at their times (divided by `speed`)
/// while the viewer's own messages are read and dropped, until it leaves.
async fn play(
    stream: TcpStream,
    recording: &Recording,
    speed: f64,
) -> Result<(), tungstenite::Error> {
    let _ = stream.set_nodelay(true);
    let accept = tokio_tungstenite::accept_hdr_async(stream, websockify_subprotocol);
    let ws = tokio::time::timeout(HANDSHAKE_TIMEOUT, accept)
        .await
        .map_err(|_| tungstenite::Error::Io(std::io::ErrorKind::TimedOut.into()))??;
    let (mut to_viewer, mut from_viewer) = ws.split();
    let gone = async {
        while let Some(Ok(msg)) = from_viewer.next().await {
            if msg.is_close() {
                break;
            }
        }
    };
    let send = async {
        let start = Instant::now();
        for record in &recording.records {
            let at = Duration::from_secs_f64(f64::from(record.ms) / 1000.0 / speed);
            sleep_until(start + at).await;
            to_viewer.send(Message::Binary(record.data.clone())).await?;
        }
        tracing::info!("recording played to its end; holding the last picture");
        std::future::pending::<Result<(), tungstenite::Error>>().await
    };
    tokio::select! {
        _ = gone => Ok(()),
        sent = send => sent,
    }
}

/// websockify's rule: echo subprotocol `binary` if offered, accept none if none is
/// offered, refuse anything else. (The signature is tungstenite's handshake callback.)
#[allow(clippy::result_large_err)]
fn websockify_subprotocol(req: &Request, mut resp: Response) -> Result<Response, ErrorResponse> {
    let offered: Vec<&str> = req
        .headers()
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    if offered.contains(&"binary") {
        resp.headers_mut()
            .insert(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static("binary"));
    } else if !offered.is_empty() {
        let mut refusal = ErrorResponse::new(Some("only subprotocol binary is spoken".into()));
        *refusal.status_mut() = http::StatusCode::BAD_REQUEST;
        return Err(refusal);
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speed_must_be_positive() {
        assert_eq!(parse_speed("2"), Ok(2.0));
        assert_eq!(parse_speed("0.5"), Ok(0.5));
        for bad in ["0", "-1", "inf", "NaN", "fast"] {
            assert!(parse_speed(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_missing_or_truncated_file_says_which_and_why() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.vncrec");
        let err = load(&missing).unwrap_err().to_string();
        assert!(err.contains("none.vncrec"), "{err}");
        let cut = dir.path().join("cut.vncrec");
        let mut bytes = format::header(&format::Metadata::default());
        bytes.extend_from_slice(&format::record_header(0, 10));
        bytes.extend_from_slice(b"only5");
        std::fs::write(&cut, bytes).unwrap();
        let err = load(&cut).unwrap_err().to_string();
        assert!(
            err.contains("cut.vncrec") && err.contains("cut short"),
            "{err}"
        );
    }
}
