//! The admin listener: `/metrics` (Prometheus text), `/healthz` (the process answers)
//! and `/readyz` (Redis reachable, keys loaded, not draining).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::Node;
use crate::admission::reject::{json, json_response};

/// Serves the admin endpoints until `stop` is cancelled.
pub async fn serve(
    listener: TcpListener,
    relay: Arc<Node>,
    prometheus: PrometheusHandle,
    stop: CancellationToken,
) {
    loop {
        let stream = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::debug!(error = %e, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let relay = relay.clone();
        let prometheus = prometheus.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let resp = route(&req, &relay, &prometheus);
                async move { Ok::<_, Infallible>(resp) }
            });
            let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
            if let Err(e) = tokio::time::timeout(std::time::Duration::from_secs(30), conn).await {
                tracing::debug!(error = %e, "admin connection timed out");
            }
        });
    }
}

fn route(
    req: &Request<Incoming>,
    relay: &Node,
    prometheus: &PrometheusHandle,
) -> Response<Full<Bytes>> {
    match req.uri().path() {
        "/metrics" => {
            crate::metrics::set_node_state(
                relay.not_ready().is_none(),
                relay.store().is_connected(),
                relay.is_draining(),
                relay.config().node.max_sessions,
            );
            let mut resp = Response::new(Full::new(Bytes::from(prometheus.render())));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            resp
        }
        "/healthz" => json(StatusCode::OK, &serde_json::json!({"alive": true})),
        "/readyz" => match relay.not_ready() {
            None => json(StatusCode::OK, &serde_json::json!({"ready": true})),
            Some(why) => json(
                StatusCode::SERVICE_UNAVAILABLE,
                &serde_json::json!({"ready": false, "reason": why}),
            ),
        },
        _ => json_response(StatusCode::NOT_FOUND, "no such endpoint"),
    }
}
