//! vnc-control: the control plane. So far the operator commands: key generation and
//! offline token minting; the REST API and the job queue build on these.
#![forbid(unsafe_code)]

pub mod infra;
pub mod operator;
