//! vnc-control: the control plane. A REST API (`/v1`) through which callers create,
//! start, stop and delete desktop containers, get short-lived, JWT-scoped VNC tokens
//! for the relays, list, kick and revoke the relays' sessions and tokens; a durable job queue on Redis Streams that runs the container
//! lifecycle on Docker (or on static hosts from config), shared by every replica; a
//! reconciler that keeps Redis true to what the runtime runs; and the operator
//! commands that need no running service (key generation, offline token minting).
//!
//! The layers point one way: [`api`] (HTTP) → [`app`] (commands and queries) →
//! [`domain`] (rules, no I/O) ← [`infra`] (Redis, the job queue, the runtimes).
//! [`config`] reads the settings, [`startup`] loads what they name, [`server`] wires
//! the layers together and serves until shutdown, and [`daemon`] runs that as a
//! systemd service (listeners, readiness, reload on SIGHUP) for the binary, which only
//! parses flags and sets up logging and the stop signals. The design of record is
//! `docs/architecture.md`.
#![forbid(unsafe_code)]

pub mod api;
pub mod app;
pub mod config;
pub mod daemon;
pub mod domain;
pub mod infra;
pub mod listener;
pub mod metrics;
pub mod operator;
pub mod server;
pub mod startup;
