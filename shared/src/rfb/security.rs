//! Security types (RFC 6143 §7.2 and the community registry): the two the relay
//! speaks, and names for the others so an error can say what a server asked for.

use std::fmt;

/// Security type None: no authentication.
pub const SECURITY_NONE: u8 = 1;
/// Security type VNC Authentication: DES challenge-response.
pub const SECURITY_VNC_AUTH: u8 = 2;

/// A readable name for a security type number.
pub fn security_type_name(security_type: u32) -> &'static str {
    match security_type {
        0 => "Invalid",
        1 => "None",
        2 => "VNC Authentication",
        5 => "RA2",
        6 => "RA2ne",
        16 => "Tight",
        17 => "Ultra",
        18 => "TLS",
        19 => "VeNCrypt",
        20 => "SASL",
        21 => "MD5",
        22 => "xvp",
        30..=35 => "Apple",
        _ => "unknown",
    }
}

/// Security types a server offered, printed as `16 (Tight), 19 (VeNCrypt)`. Numbers are
/// `u32` because 3.3 servers send the type as a 32-bit word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityTypes(pub Vec<u32>);

impl fmt::Display for SecurityTypes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("none");
        }
        for (i, t) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{t} ({})", security_type_name(*t))?;
        }
        Ok(())
    }
}

/// How the security phase was settled, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthMode {
    /// The server offered None; both sides use it.
    NoAuth,
    /// The relay answered the server's VNC Authentication with the container's
    /// password; the browser was offered None.
    RelayAuthenticated,
    /// No password was configured: the browser answered the server's VNC
    /// Authentication itself, through the relay.
    BrowserAuthenticated,
}

impl AuthMode {
    /// A stable lowercase name (`none`, `relay`, `browser`) for log fields and labels.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMode::NoAuth => "none",
            AuthMode::RelayAuthenticated => "relay",
            AuthMode::BrowserAuthenticated => "browser",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offered_types_print_with_names() {
        assert_eq!(
            SecurityTypes(vec![16, 19, 200]).to_string(),
            "16 (Tight), 19 (VeNCrypt), 200 (unknown)"
        );
        assert_eq!(SecurityTypes(vec![]).to_string(), "none");
    }
}
