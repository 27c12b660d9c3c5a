//! Prometheus metrics of the control plane, served on the admin listener.

use metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge};
use metrics_exporter_prometheus::PrometheusHandle;

/// API requests, by route, method and status.
pub const HTTP_REQUESTS: &str = "vnc_control_http_requests_total";
/// API request duration, by route.
pub const HTTP_DURATION: &str = "vnc_control_http_request_duration_seconds";
/// API requests refused by the per-caller rate limit, by `caller` kind (`subject`,
/// `address`).
pub const RATE_LIMITED: &str = "vnc_control_http_rate_limited_total";
pub const DOCKER_ERRORS: &str = "vnc_control_docker_errors_total";
/// Kicks published on the control channel, by kind (`kick`: one session ended by an
/// owner or admin; `revoke`: the sessions of a revoked token; `share`: the sessions of
/// a revoked share link).
pub const KICKS: &str = "vnc_control_kicks_total";
/// Containers whose lost record was rebuilt from their labels, by the state adopted.
pub const CONTAINERS_ADOPTED: &str = "vnc_control_containers_adopted_total";
/// SIGHUP reloads, by result (`ok`, `refused`: the running configuration stayed).
pub const CONFIG_RELOADS: &str = "vnc_control_config_reloads_total";
/// Fetches of an OpenID Connect issuer's keys (discovery and JWKS), by result (`ok`,
/// `error`: the keys in force stayed).
pub const OIDC_KEY_FETCHES: &str = "vnc_control_oidc_key_fetches_total";
/// Files moved through the file routes, by `direction` (`upload`, `download`) and
/// `outcome` (`ok`; `refused`: a 4xx before any byte moved; `busy`: over the transfer
/// bound; `failed`: the engine or the browser failed mid-way; `aborted`: the browser
/// left a download).
pub const FILE_TRANSFERS: &str = "vnc_control_file_transfers_total";
/// Bytes moved through the file routes, by `direction` and `outcome` (`ok`, and the
/// bytes of downloads that `failed` or were `aborted` before their end).
pub const FILE_BYTES: &str = "vnc_control_file_bytes_total";
/// 1 while the Docker engine answers, else 0, by `engine` (set at every reconcile).
pub const ENGINE_UP: &str = "vnc_control_engine_up";
/// Desktops placed on the engine and not stopped or failed (`unavailable` ones
/// included), by `engine` (set at every reconcile).
pub const ENGINE_DESKTOPS: &str = "vnc_control_engine_desktops";
/// 1 while control's Redis connection is up, else 0 (set at every scrape).
pub const REDIS_CONNECTED: &str = "vnc_control_redis_connected";

/// Installs the global recorder and describes control's metrics; the series alerts
/// and the dashboard read (the runs of `job_names`, Docker errors, reloads, kicks) are
/// exported as 0 from the start.
pub fn install(job_names: &[&str]) -> PrometheusHandle {
    let (handle, installed) = vnc_shared::telemetry::install_prometheus(&[
        (
            HTTP_DURATION,
            &[
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ],
        ),
        // A job runs from a static runtime's instant answer to a container start that
        // waits up to start_timeout for its VNC server.
        (
            crate::infra::queue::JOB_DURATION,
            &[
                0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
            ],
        ),
    ]);
    if installed {
        describe_counter!(HTTP_REQUESTS, "API requests by route, method and status.");
        describe_histogram!(
            HTTP_DURATION,
            Unit::Seconds,
            "API request duration by route."
        );
        describe_counter!(
            DOCKER_ERRORS,
            "Failed container runtime calls, by operation."
        );
        describe_counter!(
            KICKS,
            "Kicks published to the relays on the control channel, by kind (kick, revoke, share)."
        );
        describe_counter!(
            CONTAINERS_ADOPTED,
            "Managed containers whose lost record was rebuilt from their labels, by state (running, failed)."
        );
        describe_counter!(
            CONFIG_RELOADS,
            "SIGHUP reloads, by result (ok, refused: the running configuration stayed)."
        );
        describe_counter!(
            OIDC_KEY_FETCHES,
            "Fetches of the OpenID Connect issuer's keys, by result (ok, error: the keys in force stayed)."
        );
        describe_counter!(
            RATE_LIMITED,
            "API requests refused by the per-caller rate limit, by caller kind (subject, address)."
        );
        describe_counter!(
            FILE_TRANSFERS,
            "Files moved through the file routes, by direction and outcome."
        );
        describe_counter!(
            FILE_BYTES,
            Unit::Bytes,
            "Bytes moved through the file routes, by direction and outcome."
        );
        describe_gauge!(
            ENGINE_UP,
            "1 while the Docker engine answered control's last reconcile, else 0, by engine."
        );
        describe_gauge!(
            ENGINE_DESKTOPS,
            "Desktops placed on the engine and not stopped or failed, by engine."
        );
        describe_gauge!(
            REDIS_CONNECTED,
            "1 while control's Redis connection is up, else 0."
        );
        crate::infra::queue::describe_metrics(job_names);
        for op in ["start", "probe", "stop"] {
            counter!(DOCKER_ERRORS, "op" => op).absolute(0);
        }
        for result in ["ok", "refused"] {
            counter!(CONFIG_RELOADS, "result" => result).absolute(0);
        }
        for kind in ["kick", "revoke", "share"] {
            counter!(KICKS, "kind" => kind).absolute(0);
        }
        for result in ["ok", "error"] {
            counter!(OIDC_KEY_FETCHES, "result" => result).absolute(0);
        }
        for direction in ["upload", "download"] {
            for outcome in ["ok", "refused", "failed"] {
                counter!(FILE_TRANSFERS, "direction" => direction, "outcome" => outcome)
                    .absolute(0);
            }
            counter!(FILE_BYTES, "direction" => direction, "outcome" => "ok").absolute(0);
        }
    }
    handle
}

/// Sets [`REDIS_CONNECTED`] (at every scrape: the connection is read on demand).
pub fn set_redis_connected(connected: bool) {
    gauge!(REDIS_CONNECTED).set(if connected { 1.0 } else { 0.0 });
}
