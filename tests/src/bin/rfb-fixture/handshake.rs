//! The RFB handshake, server side (RFC 6143 §7.1–7.3): ProtocolVersion, security
//! (None or VNC Authentication), SecurityResult, ClientInit and ServerInit.

use anyhow::Context as _;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::event_log::EventLog;
use crate::pixel::PixelFormat;
use crate::{AuthKind, Config, Version, auth};

const SECURITY_NONE: u8 = 1;
const SECURITY_VNC: u8 = 2;
const RESULT_OK: u32 = 0;
const RESULT_FAILED: u32 = 1;

/// How the handshake ended when no I/O error occurred.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// ServerInit was sent; normal messages follow.
    Ready,
    /// The server refused the client (and told it so where the protocol allows);
    /// the string is the close reason.
    Rejected(String),
}

/// Runs the handshake on `rd`/`wr`. I/O errors and truncated input are errors; a refused
/// client is `Ok(Outcome::Rejected)`.
pub async fn run<R, W>(
    conn: u64,
    rd: &mut R,
    wr: &mut W,
    config: &Config,
    log: &EventLog,
) -> anyhow::Result<Outcome>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    wr.write_all(config.version.banner())
        .await
        .context("send ProtocolVersion")?;
    wr.flush().await.context("send ProtocolVersion")?;
    let mut reply = [0u8; 12];
    rd.read_exact(&mut reply)
        .await
        .context("read client ProtocolVersion")?;
    let Some(version) = parse_version(&reply).filter(|v| *v <= config.version) else {
        let client = String::from_utf8_lossy(&reply).trim_end().to_string();
        log.conn(conn, json!({"event": "bad_version", "client": client}));
        let reason = "unsupported protocol version";
        // The client said something we do not understand, so answer in the format of the
        // version we offered: 3.3 sends security type 0, later versions an empty list.
        let mut msg = if config.version == Version::V3_3 {
            0u32.to_be_bytes().to_vec()
        } else {
            vec![0]
        };
        push_string(&mut msg, reason);
        wr.write_all(&msg).await.context("send version failure")?;
        return Ok(Outcome::Rejected(reason.into()));
    };
    log.conn(conn, json!({"event": "version", "version": version.as_str(), "offered": config.version.as_str()}));

    let offered = match config.auth {
        AuthKind::None => SECURITY_NONE,
        AuthKind::Vnc => SECURITY_VNC,
    };
    if version == Version::V3_3 {
        // 3.3: the server decides and says so as a u32.
        wr.write_all(&u32::from(offered).to_be_bytes())
            .await
            .context("send security type")?;
    } else {
        wr.write_all(&[1, offered])
            .await
            .context("send security types")?;
        wr.flush().await.context("send security types")?;
        let chosen = rd.read_u8().await.context("read chosen security type")?;
        log.conn(conn, json!({"event": "security", "type": chosen}));
        if chosen != offered {
            log.conn(conn, json!({"event": "bad_security_type", "type": chosen}));
            let reason = "security type not offered";
            security_result(wr, version, Err(reason)).await?;
            return Ok(Outcome::Rejected(reason.into()));
        }
    }

    match config.auth {
        AuthKind::None => {
            // 3.3 and 3.7 send no SecurityResult for None; 3.8 always does.
            if version == Version::V3_8 {
                security_result(wr, version, Ok(())).await?;
            }
        }
        AuthKind::Vnc => {
            let challenge = auth::challenge();
            wr.write_all(&challenge)
                .await
                .context("send VNC challenge")?;
            wr.flush().await.context("send VNC challenge")?;
            let mut answer = [0u8; auth::CHALLENGE_LEN];
            rd.read_exact(&mut answer)
                .await
                .context("read VNC response")?;
            // `Config::from_cli` refuses `--auth vnc` without a password; a hand-built
            // config without one gets the all-zero key rather than a panic.
            let password = config.password.as_deref().unwrap_or_default();
            if auth::verify(password.as_bytes(), &challenge, &answer) {
                log.conn(conn, json!({"event": "authenticated"}));
                security_result(wr, version, Ok(())).await?;
            } else {
                log.conn(conn, json!({"event": "auth_failed"}));
                let reason = "authentication failed";
                security_result(wr, version, Err(reason)).await?;
                return Ok(Outcome::Rejected(reason.into()));
            }
        }
    }

    let shared = rd.read_u8().await.context("read ClientInit")? != 0;
    log.conn(conn, json!({"event": "client_init", "shared": shared}));

    let fb = config.framebuffer;
    let mut init = Vec::with_capacity(24 + config.name.len());
    init.extend_from_slice(&fb.width.to_be_bytes());
    init.extend_from_slice(&fb.height.to_be_bytes());
    init.extend_from_slice(&PixelFormat::SERVER.to_bytes());
    push_string(&mut init, &config.name);
    wr.write_all(&init).await.context("send ServerInit")?;
    wr.flush().await.context("send ServerInit")?;
    log.conn(conn, json!({"event": "server_init", "width": fb.width, "height": fb.height, "name": config.name}));
    Ok(Outcome::Ready)
}

/// Parses `RFB xxx.yyy\n`, returning the versions we speak.
fn parse_version(reply: &[u8; 12]) -> Option<Version> {
    match reply {
        b"RFB 003.003\n" => Some(Version::V3_3),
        b"RFB 003.007\n" => Some(Version::V3_7),
        b"RFB 003.008\n" => Some(Version::V3_8),
        _ => None,
    }
}

/// Sends a SecurityResult; the failure reason goes on the wire only from 3.8 on.
async fn security_result<W: AsyncWrite + Unpin>(
    wr: &mut W,
    version: Version,
    result: Result<(), &str>,
) -> anyhow::Result<()> {
    let mut msg = Vec::new();
    match result {
        Ok(()) => msg.extend_from_slice(&RESULT_OK.to_be_bytes()),
        Err(reason) => {
            msg.extend_from_slice(&RESULT_FAILED.to_be_bytes());
            if version == Version::V3_8 {
                push_string(&mut msg, reason);
            }
        }
    }
    wr.write_all(&msg).await.context("send SecurityResult")?;
    wr.flush().await.context("send SecurityResult")
}

/// Appends a u32 length and the bytes of `s`.
fn push_string(out: &mut Vec<u8>, s: &str) {
    // Names and reasons are short; truncate rather than fail on absurd lengths.
    let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&s.as_bytes()[..len as usize]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_known_versions() {
        assert_eq!(parse_version(b"RFB 003.008\n"), Some(Version::V3_8));
        assert_eq!(parse_version(b"RFB 003.007\n"), Some(Version::V3_7));
        assert_eq!(parse_version(b"RFB 003.003\n"), Some(Version::V3_3));
        assert_eq!(parse_version(b"RFB 003.889\n"), None);
        assert_eq!(parse_version(b"RFB 004.001\n"), None);
        assert_eq!(parse_version(b"GET / HTTP/1"), None);
    }

    #[test]
    fn strings_are_length_prefixed() {
        let mut out = Vec::new();
        push_string(&mut out, "abc");
        assert_eq!(out, [0, 0, 0, 3, b'a', b'b', b'c']);
    }
}
