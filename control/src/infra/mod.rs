//! Adapters to the outside world: Redis (container records, the job queue) and the
//! container runtimes (Docker through bollard, or static hosts from config).

pub mod queue;
pub mod runtime;
pub mod store;
