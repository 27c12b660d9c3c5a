//! The RFB readiness probe: a container counts as ready once its VNC server sends the
//! RFB ProtocolVersion greeting.

use std::time::Duration;

use tokio::io::AsyncReadExt as _;
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

use super::{Endpoint, RuntimeError};

/// Bound on one connect-and-read attempt, so a server that accepts but never greets
/// does not use up the whole budget in one try.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

/// Pause after the first failed attempt; doubles up to [`MAX_RETRY_PAUSE`].
const FIRST_RETRY_PAUSE: Duration = Duration::from_millis(50);

/// Longest pause between attempts.
const MAX_RETRY_PAUSE: Duration = Duration::from_millis(500);

/// Length of the ProtocolVersion message, `RFB xxx.yyy\n`.
const GREETING_LEN: usize = 12;

/// Waits until `endpoint` answers with an RFB greeting (`RFB 003.00x\n`), trying again
/// until `within` has passed. Connects to the endpoint exactly as given (the runtime
/// hands out loopback or container addresses), reads the greeting and closes without
/// answering it.
pub async fn wait_for_rfb(endpoint: &Endpoint, within: Duration) -> Result<(), RuntimeError> {
    let deadline = Instant::now() + within;
    let mut pause = FIRST_RETRY_PAUSE;
    let mut last_error = String::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match timeout(left.min(ATTEMPT_TIMEOUT), greeting(endpoint)).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => last_error = e,
            // An attempt cut short by the deadline says less than an earlier answer.
            Err(_) if !last_error.is_empty() => {}
            Err(_) => last_error = "no greeting in time".to_owned(),
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            // The address goes to the log only: the error reaches the container's
            // owner through the API.
            tracing::warn!(%endpoint, error = %last_error, "the container's VNC server gave no RFB greeting");
            return Err(RuntimeError::Failed(format!(
                "the container's VNC server gave no RFB greeting within {}: {last_error}",
                humantime::format_duration(within)
            )));
        }
        tokio::time::sleep(pause.min(left)).await;
        pause = (pause * 2).min(MAX_RETRY_PAUSE);
    }
}

/// One attempt: connect, read the 12-byte greeting, check its shape.
async fn greeting(endpoint: &Endpoint) -> Result<(), String> {
    let mut stream = TcpStream::connect((endpoint.host.as_str(), endpoint.port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut buf = [0u8; GREETING_LEN];
    stream
        .read_exact(&mut buf)
        .await
        .map_err(|e| format!("read greeting: {e}"))?;
    if is_rfb_greeting(&buf) {
        Ok(())
    } else {
        Err(format!(
            "not an RFB greeting: {:?}",
            String::from_utf8_lossy(&buf)
        ))
    }
}

/// `RFB ddd.ddd\n` (RFC 6143 §7.1.1; servers send 003.003, 003.007, 003.008 and a few
/// vendor minors such as Apple's 003.889).
fn is_rfb_greeting(buf: &[u8; GREETING_LEN]) -> bool {
    let digits = |r: std::ops::Range<usize>| buf[r].iter().all(u8::is_ascii_digit);
    buf.starts_with(b"RFB ") && digits(4..7) && buf[7] == b'.' && digits(8..11) && buf[11] == b'\n'
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt as _;
    use tokio::net::TcpListener;

    #[test]
    fn greetings() {
        assert!(is_rfb_greeting(b"RFB 003.008\n"));
        assert!(is_rfb_greeting(b"RFB 003.003\n"));
        assert!(is_rfb_greeting(b"RFB 003.889\n"));
        assert!(!is_rfb_greeting(b"HTTP/1.1 200"));
        assert!(!is_rfb_greeting(b"RFB 003.008 "));
        assert!(!is_rfb_greeting(b"RFB 0x3.008\n"));
    }

    async fn serve_once(reply: &'static [u8]) -> Endpoint {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let _ = s.write_all(reply).await;
            }
        });
        Endpoint {
            host: "127.0.0.1".into(),
            port,
        }
    }

    #[tokio::test]
    async fn ready_when_the_server_greets() {
        let endpoint = serve_once(b"RFB 003.008\n").await;
        wait_for_rfb(&endpoint, Duration::from_secs(5))
            .await
            .expect("ready");
    }

    #[tokio::test]
    async fn fails_in_time_on_a_non_rfb_server() {
        let endpoint = serve_once(b"SSH-2.0-OpenSSH_9.2\r\n").await;
        // Retried until the deadline (a starting server may answer later), and the
        // error says what was wrong rather than that time ran out.
        let started = std::time::Instant::now();
        let err = wait_for_rfb(&endpoint, Duration::from_secs(2))
            .await
            .expect_err("not rfb");
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(
            matches!(&err, RuntimeError::Failed(m) if m.contains("not an RFB greeting")),
            "{err}"
        );
        // What failed, not where: the owner sees this error.
        assert!(!err.to_string().contains("127.0.0.1"), "{err}");
    }

    #[tokio::test]
    async fn fails_in_time_when_nothing_listens() {
        // Bind then drop: the port is very likely closed for the duration of the test.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let endpoint = Endpoint {
            host: "127.0.0.1".into(),
            port,
        };
        let err = wait_for_rfb(&endpoint, Duration::from_millis(300))
            .await
            .expect_err("closed");
        assert!(
            matches!(&err, RuntimeError::Failed(m) if m.contains("connect")),
            "{err}"
        );
    }
}
