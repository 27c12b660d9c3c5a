//! The end-to-end harness: real `redis-server`, the real `vnc-relay` and `rfb-fixture`
//! binaries on free loopback ports, token minting, and small RFB/WebSocket clients.
//! Every process is killed when its handle drops.
#![forbid(unsafe_code)]

pub mod browser;
pub mod cluster;
pub mod control;
pub mod desktop;
pub mod docker;
pub mod engine;
pub mod files;
pub mod fixture;
pub mod haproxy;
pub mod keys;
pub mod openapi;
pub mod process;
pub mod prometheus;
pub mod recording;
pub mod redis;
pub mod redis_process;
pub mod relay;
pub mod rfb;
pub mod sentinel;
pub mod sio;
pub mod stack;
pub mod tls;
pub mod ws;

/// Bound on every wait in the harness: a test that waits longer has failed.
pub const WAIT: std::time::Duration = std::time::Duration::from_secs(10);
