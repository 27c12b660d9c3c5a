//! Prometheus metrics of the relay: names, units and labels in one place.
//!
//! Sessions take their counter handles once at start, so relaying a message costs
//! one atomic add, never a registry lookup.

use std::time::Duration;

use metrics::{
    Counter, Gauge, Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge,
    histogram,
};
use metrics_exporter_prometheus::PrometheusHandle;

pub const SESSIONS_ACTIVE: &str = "vnc_relay_sessions_active";
pub const SESSIONS_TOTAL: &str = "vnc_relay_sessions_total";
pub const SESSION_DURATION: &str = "vnc_relay_session_duration_seconds";
pub const BYTES_TOTAL: &str = "vnc_relay_bytes_total";
pub const CONNECT_DURATION: &str = "vnc_relay_upstream_connect_duration_seconds";
pub const UPSTREAM_ERRORS: &str = "vnc_relay_upstream_errors_total";
pub const AUTH_FAILURES: &str = "vnc_relay_auth_failures_total";
pub const REJECTIONS: &str = "vnc_relay_http_rejections_total";
pub const ACCEPT_ERRORS: &str = "vnc_relay_accept_errors_total";
pub const INPUT_DROPPED: &str = "vnc_relay_input_dropped_total";
pub const OUTPUT_DROPPED: &str = "vnc_relay_output_dropped_total";
pub const DRIVER_CHANGES: &str = "vnc_relay_driver_changes_total";
pub const CONFIG_RELOADS: &str = "vnc_relay_config_reloads_total";
pub const TLS_HANDSHAKE_ERRORS: &str = "vnc_relay_tls_handshake_errors_total";
pub const PROXY_HEADER_ERRORS: &str = "vnc_relay_proxy_header_errors_total";
pub const RECORDINGS_TOTAL: &str = "vnc_relay_recordings_total";
pub const RECORDING_BYTES: &str = "vnc_relay_recording_bytes_total";
pub const RECORDINGS_DELETED: &str = "vnc_relay_recordings_deleted_total";
pub const RESIZE_ANSWERS: &str = "vnc_relay_resize_answers_total";
pub const SERVER_STREAM_UNFOLLOWED: &str = "vnc_relay_server_stream_unfollowed_total";
pub const READY: &str = "vnc_relay_ready";
pub const REDIS_CONNECTED: &str = "vnc_relay_redis_connected";
pub const DRAINING: &str = "vnc_relay_draining";
pub const MAX_SESSIONS: &str = "vnc_relay_max_sessions";

/// Installs the global Prometheus recorder and describes every metric.
pub fn install() -> PrometheusHandle {
    let (handle, installed) = vnc_shared::telemetry::install_prometheus(&[
        (
            CONNECT_DURATION,
            &[
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ],
        ),
        (
            SESSION_DURATION,
            &[
                1.0,
                10.0,
                60.0,
                300.0,
                900.0,
                1800.0,
                3600.0,
                4.0 * 3600.0,
                12.0 * 3600.0,
            ],
        ),
    ]);
    if installed {
        describe();
        register_zeros();
    }
    handle
}

/// Series that alerts and dashboards read, exported as 0 from the start rather than
/// appearing only once something is counted.
fn register_zeros() {
    for transport in ["websocket", "socketio"] {
        gauge!(SESSIONS_ACTIVE, "transport" => transport).set(0.0);
    }
    for result in ["ok", "refused"] {
        counter!(CONFIG_RELOADS, "result" => result).absolute(0);
    }
    for direction in ["upstream_to_client", "client_to_upstream"] {
        counter!(BYTES_TOTAL, "direction" => direction).absolute(0);
    }
    // Every refusal status (a small fixed set, listed in docs/operations.md).
    for status in ["400", "401", "403", "404", "429", "502", "503"] {
        counter!(REJECTIONS, "status" => status).absolute(0);
    }
    // Histograms registered without a sample are exported with empty buckets, so
    // latency panels have a series before the first session.
    let _ = histogram!(CONNECT_DURATION);
    for transport in ["websocket", "socketio"] {
        let _ = histogram!(SESSION_DURATION, "transport" => transport);
    }
    counter!(ACCEPT_ERRORS).absolute(0);
    counter!(TLS_HANDSHAKE_ERRORS).absolute(0);
    counter!(PROXY_HEADER_ERRORS).absolute(0);
    for kind in ["connect_timeout", "connect_refused", "connect_error"] {
        counter!(UPSTREAM_ERRORS, "kind" => kind).absolute(0);
    }
    // The reasons alerts watch most; the others appear at their first refusal.
    for reason in ["missing", "signature", "expired", "unknown_kid", "revoked"] {
        counter!(AUTH_FAILURES, "reason" => reason).absolute(0);
    }
    // Outcomes that mean the VNC server or the RFB exchange failed (alerted on), and
    // those of kicks.
    for transport in ["websocket", "socketio"] {
        for outcome in [
            "upstream_error",
            "rfb_client_error",
            "rfb_upstream_error",
            "rfb_protocol_error",
            // Sessions ended by a kick or a revocation (the dashboard's kicks panel).
            "kicked",
            "revoked",
        ] {
            counter!(SESSIONS_TOTAL, "transport" => transport, "outcome" => outcome).absolute(0);
        }
    }
    for result in [
        "complete",
        "truncated_max_bytes",
        "truncated_behind",
        "over_cap",
        "failed",
    ] {
        counter!(RECORDINGS_TOTAL, "result" => result).absolute(0);
    }
}

/// The node's state as `/readyz` and the session bound see it, set at every scrape
/// (they are computed on demand, not stored).
pub fn set_node_state(ready: bool, redis_connected: bool, draining: bool, max_sessions: usize) {
    let flag = |on: bool| if on { 1.0 } else { 0.0 };
    gauge!(READY).set(flag(ready));
    gauge!(REDIS_CONNECTED).set(flag(redis_connected));
    gauge!(DRAINING).set(flag(draining));
    gauge!(MAX_SESSIONS).set(max_sessions as f64);
}

fn describe() {
    describe_gauge!(
        READY,
        "1 when the relay takes new sessions (what /readyz answers 200 to), else 0."
    );
    describe_gauge!(
        REDIS_CONNECTED,
        "1 while the relay's Redis connection is up, else 0."
    );
    describe_gauge!(
        DRAINING,
        "1 once the relay drains (SIGTERM): it refuses new sessions and waits for live ones."
    );
    describe_gauge!(MAX_SESSIONS, "The session bound in force (max_sessions).");
    describe_gauge!(SESSIONS_ACTIVE, "Sessions relaying now, by transport.");
    describe_counter!(SESSIONS_TOTAL, "Sessions ended, by transport and outcome.");
    describe_histogram!(SESSION_DURATION, Unit::Seconds, "How long sessions lasted.");
    describe_counter!(BYTES_TOTAL, Unit::Bytes, "Bytes relayed, by direction.");
    describe_histogram!(
        CONNECT_DURATION,
        Unit::Seconds,
        "Time to connect to a container's VNC server."
    );
    describe_counter!(
        UPSTREAM_ERRORS,
        "Failures reaching or talking to a VNC server, by kind."
    );
    describe_counter!(AUTH_FAILURES, "Refused tokens, by reason.");
    describe_counter!(
        REJECTIONS,
        "Requests refused before the upgrade, by HTTP status."
    );
    describe_counter!(
        INPUT_DROPPED,
        "Input messages the relay dropped, by RFB message kind and reason (view: a view-only session; not_driver: a session that doesn't hold the driver lease; clipboard: the token's clipboard claim keeps it from the desktop)."
    );
    describe_counter!(
        OUTPUT_DROPPED,
        "VNC server messages the relay kept from the browser, by RFB message kind and reason (clipboard: the token's clipboard claim keeps the desktop's clipboard from the browser)."
    );
    describe_counter!(
        DRIVER_CHANGES,
        "Changes of a desktop's driver lease this node made, by how (free, request, grant, grant_any, take, release, ended, keep)."
    );
    describe_counter!(
        CONFIG_RELOADS,
        "SIGHUP reloads, by result (ok, refused: the running configuration stayed)."
    );
    describe_counter!(
        TLS_HANDSHAKE_ERRORS,
        "TLS handshakes on the public listener that failed or timed out."
    );
    describe_counter!(
        PROXY_HEADER_ERRORS,
        "Connections closed for a missing, malformed or late PROXY protocol header (with proxy_protocol on)."
    );
    describe_counter!(
        RECORDINGS_TOTAL,
        "Session recordings ended, by result (complete, truncated_max_bytes, truncated_behind, over_cap, failed)."
    );
    describe_counter!(
        RECORDING_BYTES,
        Unit::Bytes,
        "Bytes written to recording files (records and their headers)."
    );
    describe_counter!(
        RECORDINGS_DELETED,
        "Recordings deleted, oldest first, to stay within record_total_bytes."
    );
    describe_counter!(
        RESIZE_ANSWERS,
        "vnc:resized events sent to socket.io clients, by status (ok, prohibited, ..., no answer)."
    );
    describe_counter!(
        SERVER_STREAM_UNFOLLOWED,
        "socket.io sessions whose VNC server stream the relay stopped following (a message or encoding it can't frame); their vnc:resize requests get no answer."
    );
    describe_counter!(
        ACCEPT_ERRORS,
        "Errors accepting connections (EMFILE and the like)."
    );
}

/// Counter handles one session uses on its hot path.
pub struct SessionMetrics {
    pub to_client: Counter,
    pub to_upstream: Counter,
    active: Gauge,
    transport: &'static str,
}

impl SessionMetrics {
    /// Marks a session as started; [`SessionMetrics::finish`] marks it ended.
    pub fn start(transport: &'static str) -> SessionMetrics {
        let active = gauge!(SESSIONS_ACTIVE, "transport" => transport);
        active.increment(1.0);
        SessionMetrics {
            to_client: counter!(BYTES_TOTAL, "direction" => "upstream_to_client"),
            to_upstream: counter!(BYTES_TOTAL, "direction" => "client_to_upstream"),
            active,
            transport,
        }
    }

    pub fn finish(self, outcome: &'static str, lasted: Duration) {
        self.active.decrement(1.0);
        counter!(SESSIONS_TOTAL, "transport" => self.transport, "outcome" => outcome).increment(1);
        histogram!(SESSION_DURATION, "transport" => self.transport).record(lasted.as_secs_f64());
    }
}
