//! The security phase of the proxy handshake and its failures: reading the server's
//! security types (or its refusal) and settling how to authenticate, reading a
//! SecurityResult, offering the browser its one type, and telling the browser why a
//! handshake failed wherever it can still hear it. The states that call these are in
//! `handshake.rs`.

use super::error::RELAY_AUTH_FAILED;
use super::{HandshakeError, MAX_REASON_LEN, ProxyHandshake, Reason, SecurityResult, Side, State};
use crate::rfb::security::{AuthMode, SECURITY_NONE, SECURITY_VNC_AUTH, SecurityTypes};
use crate::rfb::version::Version;
use crate::rfb::wire::{be_u32, printable, take_front};

impl ProxyHandshake {
    /// Reads the server's security types and settles how to authenticate.
    pub(super) fn server_security(&mut self) -> Result<bool, HandshakeError> {
        let version = self.negotiated();
        let offered: Vec<u32> = if version == Version::V3_3 {
            let Some(chosen) = be_u32(&self.from_server, 0) else {
                return Ok(false);
            };
            if chosen == 0 {
                return self.server_refused(4);
            }
            take_front(&mut self.from_server, 4);
            vec![chosen]
        } else {
            let Some(&count) = self.from_server.first() else {
                return Ok(false);
            };
            if count == 0 {
                return self.server_refused(1);
            }
            let end = 1 + usize::from(count);
            let Some(types) = self.from_server.get(1..end) else {
                return Ok(false);
            };
            let types = types.iter().map(|&t| u32::from(t)).collect();
            take_front(&mut self.from_server, end);
            types
        };
        let none = u32::from(SECURITY_NONE);
        let vnc_auth = u32::from(SECURITY_VNC_AUTH);
        let auth = if offered.contains(&none) {
            AuthMode::NoAuth
        } else if offered.contains(&vnc_auth) && self.password.is_some() {
            AuthMode::RelayAuthenticated
        } else if offered.contains(&vnc_auth) {
            AuthMode::BrowserAuthenticated
        } else {
            return Err(HandshakeError::UnsupportedSecurity {
                offered: SecurityTypes(offered),
            });
        };
        self.auth = Some(auth);
        // 3.3 servers chose already; 3.7+ servers are told the choice.
        let tell_server = version != Version::V3_3;
        match auth {
            AuthMode::NoAuth => {
                if tell_server {
                    self.to_server.push(SECURITY_NONE);
                }
                // Only 3.8 sends a SecurityResult after None.
                if version == Version::V3_8 {
                    self.state = State::ServerResult;
                } else {
                    self.offer_client(SECURITY_NONE);
                }
            }
            AuthMode::RelayAuthenticated => {
                if tell_server {
                    self.to_server.push(SECURITY_VNC_AUTH);
                }
                self.state = State::ServerChallenge;
            }
            // The server is told once the browser has picked the type.
            AuthMode::BrowserAuthenticated => self.offer_client(SECURITY_VNC_AUTH),
        }
        Ok(true)
    }

    /// The server sent no security types: read its reason (after `at` bytes).
    fn server_refused(&mut self, at: usize) -> Result<bool, HandshakeError> {
        match read_reason(&self.from_server, at)? {
            Some((_, reason)) => Err(HandshakeError::ServerRefused {
                reason: Reason(Some(reason)),
            }),
            None => Ok(false),
        }
    }

    /// A whole SecurityResult at the front of the server's bytes, if it is all there.
    pub(super) fn security_result(&self) -> Result<Option<SecurityResult>, HandshakeError> {
        let Some(status) = be_u32(&self.from_server, 0) else {
            return Ok(None);
        };
        if status == 0 {
            return Ok(Some(SecurityResult {
                len: 4,
                result: Ok(()),
            }));
        }
        // 1 is "failed", 2 "too many attempts" (Tight); anything else is a failure too.
        if self.negotiated() != Version::V3_8 {
            return Ok(Some(SecurityResult {
                len: 4,
                result: Err(Reason(None)),
            }));
        }
        Ok(
            read_reason(&self.from_server, 4)?.map(|(len, reason)| SecurityResult {
                len,
                result: Err(Reason(Some(reason))),
            }),
        )
    }

    /// Offers the browser one security type: 3.3 as the server's decision, 3.7+ as a
    /// list of one.
    pub(super) fn offer_client(&mut self, security_type: u8) {
        self.client_awaits_security = false;
        if self.negotiated() == Version::V3_3 {
            self.to_client
                .extend_from_slice(&u32::from(security_type).to_be_bytes());
            self.after_client_choice(security_type);
        } else {
            self.to_client.extend_from_slice(&[1, security_type]);
            self.state = State::ClientChoice {
                offered: security_type,
            };
        }
    }

    pub(super) fn after_client_choice(&mut self, security_type: u8) {
        let version = self.negotiated();
        if security_type == SECURITY_VNC_AUTH {
            if version != Version::V3_3 {
                self.to_server.push(SECURITY_VNC_AUTH);
            }
            self.state = State::PassChallenge;
        } else {
            // The relay settled the server's side already; 3.8 says so after None.
            if version == Version::V3_8 {
                self.to_client.extend_from_slice(&0u32.to_be_bytes());
            }
            self.state = State::ClientInit;
        }
    }

    /// Enters the failed state, telling the browser why if it is where it can hear it.
    pub(super) fn fail(&mut self, error: HandshakeError) {
        if let State::ClientChoice { .. } = self.state
            && self.negotiated() == Version::V3_8
        {
            // A 3.8 browser that chose a type waits for its SecurityResult, which can
            // carry the reason (3.7's carries none, so 3.7 just sees the close).
            self.to_client.extend_from_slice(&1u32.to_be_bytes());
            push_reason(&mut self.to_client, &error.to_string());
        }
        if self.client_awaits_security {
            self.client_awaits_security = false;
            let mut reason = error.to_string();
            if let HandshakeError::UpstreamAuthFailed { .. } = error {
                // The server's own words may say more than the browser needs to know.
                reason = RELAY_AUTH_FAILED.to_owned();
            }
            if self.negotiated() == Version::V3_3 {
                self.to_client.extend_from_slice(&0u32.to_be_bytes());
            } else {
                self.to_client.push(0);
            }
            push_reason(&mut self.to_client, &reason);
        }
        self.state = State::Failed;
        self.error = Some(error);
    }
}

/// A reason string as RFB sends it: its length, then its bytes.
fn push_reason(to: &mut Vec<u8>, reason: &str) {
    let len = u32::try_from(reason.len()).unwrap_or(u32::MAX);
    to.extend_from_slice(&len.to_be_bytes());
    to.extend_from_slice(reason.as_bytes());
}

/// A `U32 length, bytes` reason string at `at` in the server's bytes: the total length
/// from the front of `buf` and the printable text, or `None` while incomplete.
fn read_reason(buf: &[u8], at: usize) -> Result<Option<(usize, String)>, HandshakeError> {
    let Some(len) = be_u32(buf, at) else {
        return Ok(None);
    };
    if len > MAX_REASON_LEN {
        return Err(HandshakeError::TooLong {
            side: Side::Server,
            what: "failure reason",
            len,
            max: MAX_REASON_LEN,
        });
    }
    // Bounded by the check above.
    let end = at + 4 + len as usize;
    Ok(buf.get(at + 4..end).map(|text| (end, printable(text))))
}
