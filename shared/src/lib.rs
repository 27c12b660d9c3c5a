//! What `vnc-relay` and `vnc-control` must agree on: the VNC token, the Redis key
//! schema, the RFB protocol logic, config layering and telemetry setup; plus the bits
//! of process plumbing both daemons share (the two-stage stop on signals, start-up
//! errors, systemd notifications, the first Redis connection). The protocol and token
//! code does no I/O.
#![forbid(unsafe_code)]

// `settings!` names `vnc_shared::config::opt_duration` in a serde attribute, where
// `$crate` cannot go; this makes that path work inside this crate too.
extern crate self as vnc_shared;

pub mod config;
pub mod process;
pub mod redis;
pub mod rfb;
pub mod schema;
pub mod settings;
pub mod swap;
pub mod systemd;
pub mod telemetry;
pub mod tls;
pub mod token;
