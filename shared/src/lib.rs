//! What `vnc-relay` and `vnc-control` must agree on: the VNC token, the Redis key
//! schema, the RFB protocol logic, config layering and telemetry setup; plus the bits
//! of process plumbing both daemons share (the two-stage stop on signals, start-up
//! errors, systemd notifications, the first Redis connection). The protocol and token
//! code does no I/O.
#![forbid(unsafe_code)]

pub mod config;
pub mod process;
pub mod redis;
pub mod rfb;
pub mod schema;
pub mod swap;
pub mod systemd;
pub mod telemetry;
pub mod tls;
pub mod token;
