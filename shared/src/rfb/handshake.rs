//! The proxy handshake. The relay stands between the browser (an RFB client) and the
//! VNC server and runs the RFB handshake (RFC 6143 §7.1–7.3) with each of them, so it
//! can authenticate to the server with the container's password while the browser is
//! offered security type None: the password never reaches the browser.
//!
//! Sans-I/O, in the manner of quinn-proto: the relay feeds what it reads from each side
//! and writes out what the handshake queues for each side, until it is done.
//!
//! Order of events. Versions: the server's greeting goes to the browser (normalised to
//! 3.3, 3.7 or 3.8), the browser's answer (never above that) goes to the server, and
//! both sides then speak that version. Security: the relay settles the server's side
//! first (choosing None, or answering VNC Authentication with the password) and only
//! then offers the browser a type, so a failure upstream reaches a browser that is
//! still waiting for security types, the one place where every version can carry a
//! reason (3.3: type 0 and a reason; 3.7 and 3.8: an empty list and a reason). Without
//! a password and with a server that requires VNC Authentication, the browser is
//! offered VNC Authentication and the challenge, response and result pass through.
//! Init: ClientInit goes to the server (shared flag forced on for `view` sessions),
//! ServerInit comes back unchanged.
//!
//! This file owns the handshake's states and the messages of each; the security phase
//! (settling the server's side, offering the browser its type) and telling the browser
//! why a handshake failed are in `security.rs`, the errors in `error.rs`.

use std::fmt;

use super::auth::{VNC_AUTH_CHALLENGE_LEN, vnc_auth_response};
use super::security::{AuthMode, SECURITY_NONE};
use super::server_init::{MAX_DESKTOP_NAME_LEN, Parsed, ServerInit};
use super::version::{PROTOCOL_VERSION_LEN, Version, VersionError};
use super::wire::{take_array, take_front};
use crate::config::Secret;

mod error;
mod security;

pub use error::{HandshakeError, Reason, Side};

/// Longest failure reason accepted from the server, in bytes.
pub const MAX_REASON_LEN: u32 = 4096;

/// Most bytes from one side that may wait in the handshake, unread. The handshake's
/// own messages are far smaller (the largest is a ServerInit with a 4 KiB name); the
/// rest is data a side sent early, kept to hand back when the handshake is done. Twice
/// the relay's 64 KiB read buffer, so one full read on top of a partial message fits.
pub const MAX_HANDSHAKE_BUFFER: usize = 128 * 1024;

/// A finished handshake: what it learnt, and the bytes the data phase starts with.
#[derive(Debug)]
pub struct Established {
    pub server_init: ServerInit,
    pub version: Version,
    pub auth: AuthMode,
    /// Handshake bytes for the server not yet taken with `take_for_server`. Write them
    /// before any data-phase bytes from the browser.
    pub to_server: Vec<u8>,
    /// For the browser: handshake bytes not yet taken with `take_for_client`, then
    /// whatever the server sent after ServerInit. Write them before relaying anything
    /// else from the server.
    pub to_client: Vec<u8>,
    /// How many bytes at the end of `to_client` the server sent after ServerInit: its
    /// first data-phase messages, where a [`ServerFramer`](super::ServerFramer) starts.
    pub server_data_len: usize,
    /// Bytes the browser sent after ClientInit (a SetEncodings sent right away, say):
    /// data-phase messages, to go through the framer first.
    pub from_client: Vec<u8>,
}

/// Where the handshake is; each state waits on one side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Server's ProtocolVersion.
    ServerVersion,
    /// Browser's ProtocolVersion, after offering it `offered`.
    ClientVersion {
        offered: Version,
    },
    /// Server's security types (3.7+) or security type (3.3).
    ServerSecurity,
    /// Server's VNC Authentication challenge, answered by the relay.
    ServerChallenge,
    /// Server's SecurityResult for the relay's own security handshake.
    ServerResult,
    /// The browser's choice among the one type it was offered (3.7+).
    ClientChoice {
        offered: u8,
    },
    /// Pass-through VNC Authentication: challenge from the server.
    PassChallenge,
    /// Pass-through VNC Authentication: response from the browser.
    PassResponse,
    /// Pass-through VNC Authentication: SecurityResult from the server.
    PassResult,
    ClientInit,
    ServerInit,
    Done,
    Failed,
}

/// A SecurityResult: its length on the wire, and `Err(reason)` for a failure (only
/// 3.8 servers send a reason).
struct SecurityResult {
    len: usize,
    result: Result<(), Reason>,
}

/// The proxy handshake for one session.
///
/// ```
/// use vnc_shared::config::Secret;
/// use vnc_shared::rfb::{AuthMode, ProxyHandshake, Side};
///
/// let mut hs = ProxyHandshake::new(Some(Secret::new("password".to_owned())), false);
/// hs.feed_server(b"RFB 003.008\n")?;
/// assert_eq!(hs.take_for_client(), b"RFB 003.008\n");
/// assert_eq!(hs.waiting_for(), Some(Side::Client));
/// hs.feed_client(b"RFB 003.008\n")?;
/// assert_eq!(hs.take_for_server(), b"RFB 003.008\n");
/// hs.feed_server(&[1, 2])?; // the server requires VNC Authentication...
/// assert_eq!(hs.take_for_server(), [2]); // ...which the relay does itself
/// hs.feed_server(&[7; 16])?; // challenge
/// assert_eq!(hs.take_for_server().len(), 16); // response
/// hs.feed_server(&[0, 0, 0, 0])?; // SecurityResult: OK
/// assert_eq!(hs.take_for_client(), [1, 1]); // the browser is offered None only
/// hs.feed_client(&[1])?;
/// assert_eq!(hs.take_for_client(), [0, 0, 0, 0]);
/// hs.feed_client(&[1, 3, 0, 0, 0, 0, 0, 0, 2])?; // ClientInit and an early message
/// assert_eq!(hs.take_for_server(), [1]);
/// let mut server_init = vec![0, 8, 0, 6];
/// server_init.extend([32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0]);
/// server_init.extend([0, 0, 0, 4]);
/// server_init.extend(b"desk");
/// hs.feed_server(&server_init)?;
/// assert!(hs.is_done());
/// let done = hs.finish()?;
/// assert_eq!((done.server_init.width, done.server_init.name.as_str()), (8, "desk"));
/// assert_eq!(done.auth, AuthMode::RelayAuthenticated);
/// assert_eq!(done.to_client, server_init); // not taken yet, so handed back here
/// assert_eq!(done.from_client, [3, 0, 0, 0, 0, 0, 0, 2]); // for the framer
/// # Ok::<(), vnc_shared::rfb::HandshakeError>(())
/// ```
///
/// How the relay drives it: write out whatever is queued, then read from the side the
/// handshake waits for, until it is done. After an error, still write what is queued
/// for the browser (it may hold a failure message with a reason), then close.
///
/// ```no_run
/// use std::io::{Read, Write};
/// use std::net::TcpStream;
/// use vnc_shared::rfb::{Established, ProxyHandshake, Side};
///
/// fn handshake(
///     mut hs: ProxyHandshake,
///     browser: &mut TcpStream,
///     server: &mut TcpStream,
/// ) -> Result<Established, Box<dyn std::error::Error>> {
///     let mut buf = [0u8; 16 * 1024];
///     while let Some(side) = hs.waiting_for() {
///         server.write_all(&hs.take_for_server())?;
///         browser.write_all(&hs.take_for_client())?;
///         let stream = match side {
///             Side::Server => &mut *server,
///             Side::Client => &mut *browser,
///         };
///         let n = stream.read(&mut buf)?;
///         if n == 0 {
///             return Err(format!("the {side} closed during the handshake").into());
///         }
///         let fed = match side {
///             Side::Server => hs.feed_server(&buf[..n]),
///             Side::Client => hs.feed_client(&buf[..n]),
///         };
///         if let Err(e) = fed {
///             browser.write_all(&hs.take_for_client())?;
///             return Err(e.into());
///         }
///     }
///     let done = hs.finish()?;
///     server.write_all(&done.to_server)?;
///     browser.write_all(&done.to_client)?;
///     // Data phase: `done.from_client` first, through the framer, then the sockets.
///     Ok(done)
/// }
/// ```
pub struct ProxyHandshake {
    /// The VNC Authentication key: the first 8 password bytes, zero-padded.
    password: Option<Secret<[u8; 8]>>,
    view_only: bool,
    state: State,
    /// Negotiated once the browser's version is in.
    version: Option<Version>,
    auth: Option<AuthMode>,
    /// The browser has its version answered and waits for security types: the one
    /// point where a failure can be told to it in-band in every version.
    client_awaits_security: bool,
    from_server: Vec<u8>,
    from_client: Vec<u8>,
    to_server: Vec<u8>,
    to_client: Vec<u8>,
    server_init: Option<ServerInit>,
    error: Option<HandshakeError>,
}

impl fmt::Debug for ProxyHandshake {
    // By hand: the server-bound buffer can hold the VNC Authentication response, from
    // which the password can be brute-forced offline, so no buffer contents here.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyHandshake")
            .field("password", &self.password.as_ref().map(|_| "MASKED"))
            .field("view_only", &self.view_only)
            .field("state", &self.state)
            .field("version", &self.version)
            .field("auth", &self.auth)
            .field("to_server_len", &self.to_server.len())
            .field("to_client_len", &self.to_client.len())
            .finish_non_exhaustive()
    }
}

impl ProxyHandshake {
    /// A handshake for one session. `password` is the container's VNC password, if it
    /// has one: only its first 8 bytes count, as in every VNC implementation (an empty
    /// one is still a password, the all-zero key). `view_only` forces the shared flag
    /// on in ClientInit, so a viewer never disconnects other sessions.
    pub fn new(password: Option<Secret<String>>, view_only: bool) -> ProxyHandshake {
        let password = password.map(|p| {
            let mut key = [0u8; 8];
            for (k, b) in key.iter_mut().zip(p.expose().as_bytes()) {
                *k = *b;
            }
            Secret::new(key)
        });
        ProxyHandshake {
            password,
            view_only,
            state: State::ServerVersion,
            version: None,
            auth: None,
            client_awaits_security: false,
            from_server: Vec::new(),
            from_client: Vec::new(),
            to_server: Vec::new(),
            to_client: Vec::new(),
            server_init: None,
            error: None,
        }
    }

    /// Bytes read from the VNC server.
    pub fn feed_server(&mut self, bytes: &[u8]) -> Result<(), HandshakeError> {
        self.feed(Side::Server, bytes)
    }

    /// Bytes read from the browser.
    pub fn feed_client(&mut self, bytes: &[u8]) -> Result<(), HandshakeError> {
        self.feed(Side::Client, bytes)
    }

    /// Bytes to write to the VNC server now (empty if none).
    pub fn take_for_server(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.to_server)
    }

    /// Bytes to write to the browser now (empty if none). Also after an error.
    pub fn take_for_client(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.to_client)
    }

    /// The side whose bytes the handshake needs next; `None` once done or failed. The
    /// relay reads only from that side, so an early sender is held back by TCP.
    pub fn waiting_for(&self) -> Option<Side> {
        use State::*;
        match self.state {
            ServerVersion | ServerSecurity | ServerChallenge | ServerResult | PassChallenge
            | PassResult | ServerInit => Some(Side::Server),
            ClientVersion { .. } | ClientChoice { .. } | PassResponse | ClientInit => {
                Some(Side::Client)
            }
            Done | Failed => None,
        }
    }

    /// ServerInit has been passed on: [`finish`](Self::finish) may be called.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The version both sides speak, once the browser has answered.
    pub fn version(&self) -> Option<Version> {
        self.version
    }

    /// The ServerInit, once it has passed.
    pub fn server_init(&self) -> Option<&ServerInit> {
        self.server_init.as_ref()
    }

    /// Ends the handshake, handing back what the data phase starts with.
    pub fn finish(self) -> Result<Established, HandshakeError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let (Some(server_init), Some(version), Some(auth), State::Done) =
            (self.server_init, self.version, self.auth, self.state)
        else {
            return Err(HandshakeError::Unfinished);
        };
        let mut to_client = self.to_client;
        to_client.extend_from_slice(&self.from_server);
        let server_data_len = self.from_server.len();
        Ok(Established {
            server_init,
            version,
            auth,
            to_server: self.to_server,
            to_client,
            server_data_len,
            from_client: self.from_client,
        })
    }

    fn feed(&mut self, side: Side, bytes: &[u8]) -> Result<(), HandshakeError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        let inbox = match side {
            Side::Server => &mut self.from_server,
            Side::Client => &mut self.from_client,
        };
        let result = if inbox.len().saturating_add(bytes.len()) > MAX_HANDSHAKE_BUFFER {
            Err(HandshakeError::TooMuchData {
                side,
                max: MAX_HANDSHAKE_BUFFER,
            })
        } else {
            inbox.extend_from_slice(bytes);
            self.advance()
        };
        if let Err(e) = &result {
            self.fail(e.clone());
        }
        result
    }

    fn advance(&mut self) -> Result<(), HandshakeError> {
        while self.step()? {}
        Ok(())
    }

    /// Takes the next message if it is all there; false when waiting for bytes.
    fn step(&mut self) -> Result<bool, HandshakeError> {
        match self.state {
            State::ServerVersion => {
                let Some(greeting) = take_array(&mut self.from_server) else {
                    return Ok(false);
                };
                let offered = parse_version(Side::Server, &greeting)?;
                self.to_client.extend_from_slice(offered.greeting());
                self.state = State::ClientVersion { offered };
            }
            State::ClientVersion { offered } => {
                let Some(greeting) = take_array(&mut self.from_client) else {
                    return Ok(false);
                };
                // A client must not ask for more than it was offered; if it does, it
                // gets what was offered.
                let version = parse_version(Side::Client, &greeting)?.min(offered);
                self.version = Some(version);
                self.to_server.extend_from_slice(version.greeting());
                self.client_awaits_security = true;
                self.state = State::ServerSecurity;
            }
            State::ServerSecurity => return self.server_security(),
            State::ServerChallenge => {
                let Some(challenge) = take_array::<VNC_AUTH_CHALLENGE_LEN>(&mut self.from_server)
                else {
                    return Ok(false);
                };
                // Only reachable with a password; the zero key would merely fail.
                let key = self
                    .password
                    .as_ref()
                    .map(|p| *p.expose())
                    .unwrap_or_default();
                self.to_server
                    .extend_from_slice(&vnc_auth_response(&key, &challenge));
                self.state = State::ServerResult;
            }
            State::ServerResult => {
                let Some(SecurityResult { len, result }) = self.security_result()? else {
                    return Ok(false);
                };
                take_front(&mut self.from_server, len);
                match (result, self.auth) {
                    (Ok(()), _) => self.offer_client(SECURITY_NONE),
                    (Err(reason), Some(AuthMode::RelayAuthenticated)) => {
                        return Err(HandshakeError::UpstreamAuthFailed { reason });
                    }
                    (Err(reason), _) => return Err(HandshakeError::ServerRefused { reason }),
                }
            }
            State::ClientChoice { offered } => {
                let Some([chosen]) = take_array(&mut self.from_client) else {
                    return Ok(false);
                };
                if chosen != offered {
                    return Err(HandshakeError::UnofferedSecurityType { chosen, offered });
                }
                self.after_client_choice(chosen);
            }
            State::PassChallenge => {
                let Some(challenge) = take_array::<VNC_AUTH_CHALLENGE_LEN>(&mut self.from_server)
                else {
                    return Ok(false);
                };
                self.to_client.extend_from_slice(&challenge);
                self.state = State::PassResponse;
            }
            State::PassResponse => {
                let Some(response) = take_array::<VNC_AUTH_CHALLENGE_LEN>(&mut self.from_client)
                else {
                    return Ok(false);
                };
                self.to_server.extend_from_slice(&response);
                self.state = State::PassResult;
            }
            State::PassResult => {
                let Some(SecurityResult { len, result }) = self.security_result()? else {
                    return Ok(false);
                };
                // The browser gets the server's verdict as it was, reason included.
                self.to_client
                    .extend(take_front(&mut self.from_server, len));
                match result {
                    Ok(()) => self.state = State::ClientInit,
                    Err(reason) => return Err(HandshakeError::ClientAuthRejected { reason }),
                }
            }
            State::ClientInit => {
                let Some([shared]) = take_array(&mut self.from_client) else {
                    return Ok(false);
                };
                self.to_server.push(if self.view_only { 1 } else { shared });
                self.state = State::ServerInit;
            }
            State::ServerInit => match ServerInit::parse(&self.from_server) {
                Parsed::Incomplete => return Ok(false),
                Parsed::NameTooLong(len) => {
                    return Err(HandshakeError::TooLong {
                        side: Side::Server,
                        what: "desktop name",
                        len,
                        max: MAX_DESKTOP_NAME_LEN,
                    });
                }
                Parsed::Complete { init, len } => {
                    self.to_client
                        .extend(take_front(&mut self.from_server, len));
                    self.server_init = Some(init);
                    self.state = State::Done;
                }
            },
            State::Done | State::Failed => return Ok(false),
        }
        Ok(true)
    }

    fn negotiated(&self) -> Version {
        // Set before any state that asks; 3.8 would be the safe reading anyway.
        self.version.unwrap_or(Version::V3_8)
    }
}

fn parse_version(
    side: Side,
    greeting: &[u8; PROTOCOL_VERSION_LEN],
) -> Result<Version, HandshakeError> {
    Version::parse(greeting).map_err(|e| match e {
        VersionError::NotRfb => HandshakeError::NotRfb {
            side,
            greeting: greeting.escape_ascii().to_string(),
        },
        VersionError::TooOld { major, minor } => {
            HandshakeError::VersionTooOld { side, major, minor }
        }
    })
}

#[cfg(test)]
mod tests;
