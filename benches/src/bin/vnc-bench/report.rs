//! Output that scripts rely on: the `LISTENING <addr>` line of the servers and the final
//! `RESULT {json}` line of the client modes, plus rate formatting shared by the summaries.

use std::io::Write;
use std::net::SocketAddr;

use serde_json::Value;

/// Printed once the socket is bound, flushed so a parent reading our stdout sees it now.
pub fn listening(addr: SocketAddr) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "LISTENING {addr}");
    let _ = out.flush();
}

/// The machine-readable last line of every client mode.
pub fn result(value: &Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "RESULT {value}");
    let _ = out.flush();
}

/// Bytes per second as (MB/s, Gbit/s), decimal units.
pub fn rates(bytes: u64, secs: f64) -> (f64, f64) {
    if secs <= 0.0 {
        return (0.0, 0.0);
    }
    let per_s = bytes as f64 / secs;
    (per_s / 1e6, per_s * 8.0 / 1e9)
}

/// Rounds for JSON so the line stays short.
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
