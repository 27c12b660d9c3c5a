//! What `vnc-relay` and `vnc-control` must agree on: the VNC token, the Redis key
//! schema, config layering and telemetry setup. Nothing here does network I/O.
#![forbid(unsafe_code)]

pub mod config;
pub mod rfb;
pub mod schema;
pub mod systemd;
pub mod telemetry;
pub mod token;
