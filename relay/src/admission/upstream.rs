//! Reaching the container's VNC server: one TCP connect under a deadline, measured.

use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use crate::metrics::{CONNECT_DURATION, UPSTREAM_ERRORS};
use crate::node::store::ContainerTarget;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connecting to {addr} timed out after {after:?}")]
    Timeout { addr: String, after: Duration },
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
}

impl UpstreamError {
    fn kind(&self) -> &'static str {
        match self {
            UpstreamError::Timeout { .. } => "connect_timeout",
            UpstreamError::Connect { source, .. }
                if source.kind() == std::io::ErrorKind::ConnectionRefused =>
            {
                "connect_refused"
            }
            UpstreamError::Connect { .. } => "connect_error",
        }
    }
}

/// Connects to the target with `TCP_NODELAY` (RFB input is small and latency-bound).
pub async fn connect(
    target: &ContainerTarget,
    within: Duration,
) -> Result<TcpStream, UpstreamError> {
    let addr = format!("{}:{}", target.host, target.port);
    let started = Instant::now();
    let result = match tokio::time::timeout(within, TcpStream::connect(&addr)).await {
        Err(_) => Err(UpstreamError::Timeout {
            addr,
            after: within,
        }),
        Ok(Err(source)) => Err(UpstreamError::Connect { addr, source }),
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            Ok(stream)
        }
    };
    match &result {
        Ok(_) => metrics::histogram!(CONNECT_DURATION).record(started.elapsed().as_secs_f64()),
        Err(e) => metrics::counter!(UPSTREAM_ERRORS, "kind" => e.kind()).increment(1),
    }
    result
}
