//! vnc-control: the control plane. So far the operator commands: key generation and
//! offline token minting; the REST API and the job queue build on these.
#![forbid(unsafe_code)]

pub mod api;
pub mod app;
pub mod config;
pub mod domain;
pub mod infra;
pub mod listener;
pub mod metrics;
pub mod operator;
pub mod server;
