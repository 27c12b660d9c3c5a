//! The bytes' own plumbing, below sessions and transports: readiness-based socket I/O
//! with vectored writes (`io.rs`), a TLS session's socket (`tls.rs`), the pool of read buffers (`bufpool.rs`) and the
//! one-byte signal a session's futures wake each other with (`signal.rs`).

pub mod bufpool;
pub mod io;
pub mod signal;
pub mod tls;
