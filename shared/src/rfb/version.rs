//! ProtocolVersion (RFC 6143 §7.1.1): the 12-byte `RFB xxx.yyy\n` greeting, and how
//! the version numbers seen in the wild map onto the three handshakes that exist.

use std::fmt;

/// Length of a ProtocolVersion message.
pub const PROTOCOL_VERSION_LEN: usize = 12;

/// The RFB handshake a peer speaks. Only these three differ on the wire; every other
/// version number some server or client reports is one of them in disguise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Version {
    /// 3.3: the server picks the security type; no failure reasons.
    V3_3,
    /// 3.7: the client picks from a list of security types.
    V3_7,
    /// 3.8: as 3.7, plus SecurityResult after None and failure reasons.
    V3_8,
}

impl Version {
    /// The canonical greeting for this version, as the relay sends it.
    pub fn greeting(self) -> &'static [u8; PROTOCOL_VERSION_LEN] {
        match self {
            Version::V3_3 => b"RFB 003.003\n",
            Version::V3_7 => b"RFB 003.007\n",
            Version::V3_8 => b"RFB 003.008\n",
        }
    }

    /// Reads a greeting. RFC 6143 says odd 3.x numbers (3.5 from old clients, 3.6 from
    /// UltraVNC) are 3.3; anything at or above 3.8 speaks the 3.8 handshake (Apple's
    /// 3.889, RealVNC's 4.x and 5.x), as noVNC and TigerVNC treat them.
    pub(crate) fn parse(bytes: &[u8; PROTOCOL_VERSION_LEN]) -> Result<Version, VersionError> {
        let (major, minor) = numbers(bytes).ok_or(VersionError::NotRfb)?;
        match (major, minor) {
            (3, 3..=6) => Ok(Version::V3_3),
            (3, 7) => Ok(Version::V3_7),
            (3, 8..) | (4.., _) => Ok(Version::V3_8),
            _ => Err(VersionError::TooOld { major, minor }),
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Version::V3_3 => "3.3",
            Version::V3_7 => "3.7",
            Version::V3_8 => "3.8",
        })
    }
}

/// Why a greeting was refused; the handshake adds which side sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VersionError {
    NotRfb,
    TooOld { major: u16, minor: u16 },
}

/// The major and minor numbers of `RFB xxx.yyy\n`, if the bytes have that shape.
fn numbers(bytes: &[u8; PROTOCOL_VERSION_LEN]) -> Option<(u16, u16)> {
    let rest = bytes.strip_prefix(b"RFB ")?;
    let (major, rest) = rest.split_at_checked(3)?;
    let rest = rest.strip_prefix(b".")?;
    let (minor, rest) = rest.split_at_checked(3)?;
    if rest != b"\n" {
        return None;
    }
    Some((three_digits(major)?, three_digits(minor)?))
}

fn three_digits(digits: &[u8]) -> Option<u16> {
    digits.iter().try_fold(0u16, |n, &d| {
        d.is_ascii_digit().then(|| n * 10 + u16::from(d - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &[u8; 12]) -> Result<Version, VersionError> {
        Version::parse(s)
    }

    #[test]
    fn published_versions() {
        assert_eq!(parse(b"RFB 003.003\n"), Ok(Version::V3_3));
        assert_eq!(parse(b"RFB 003.007\n"), Ok(Version::V3_7));
        assert_eq!(parse(b"RFB 003.008\n"), Ok(Version::V3_8));
    }

    #[test]
    fn unusual_versions_map_to_a_real_handshake() {
        assert_eq!(parse(b"RFB 003.005\n"), Ok(Version::V3_3));
        assert_eq!(parse(b"RFB 003.006\n"), Ok(Version::V3_3));
        assert_eq!(parse(b"RFB 003.889\n"), Ok(Version::V3_8));
        assert_eq!(parse(b"RFB 004.001\n"), Ok(Version::V3_8));
        assert_eq!(parse(b"RFB 005.000\n"), Ok(Version::V3_8));
    }

    #[test]
    fn old_versions_are_refused() {
        assert_eq!(
            parse(b"RFB 003.002\n"),
            Err(VersionError::TooOld { major: 3, minor: 2 })
        );
        // UltraVNC's repeater greets with 000.000; it is not a VNC server.
        assert_eq!(
            parse(b"RFB 000.000\n"),
            Err(VersionError::TooOld { major: 0, minor: 0 })
        );
    }

    #[test]
    fn non_rfb_greetings_are_refused() {
        for bad in [
            b"SSH-2.0-Open",
            b"RFB 003.008\r",
            b"RFB 03.0008\n",
            b"RFB 003,008\n",
            b"RFB 0x3.008\n",
            b"HTTP/1.1 200",
        ] {
            assert_eq!(parse(bad), Err(VersionError::NotRfb), "{bad:?}");
        }
    }

    #[test]
    fn greetings_round_trip() {
        for v in [Version::V3_3, Version::V3_7, Version::V3_8] {
            assert_eq!(parse(v.greeting()), Ok(v));
        }
        assert!(Version::V3_3 < Version::V3_7 && Version::V3_7 < Version::V3_8);
    }
}
