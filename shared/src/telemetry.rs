//! Telemetry setup both binaries share: `tracing` to stderr, text or JSON, filtered by
//! `RUST_LOG` when set, else by the configured level; and the Prometheus recorder.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, fmt, reload};

/// Log output format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("log format must be text or json, not {other:?}")),
        }
    }
}

/// Swaps the log filter of the installed subscriber (SIGHUP reload).
static FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

/// Installs the global subscriber. `level` is an `EnvFilter` directive (`info`,
/// `vnc_relay=debug,info`); `RUST_LOG` wins when set.
pub fn init_tracing(level: &str, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    let stderr = fmt::layer().with_writer(std::io::stderr);
    // A second init (tests) is harmless: keep the first subscriber.
    let installed = match format {
        LogFormat::Text => registry.with(stderr).try_init(),
        LogFormat::Json => registry.with(stderr.json()).try_init(),
    };
    if installed.is_ok() {
        let _ = FILTER.set(handle);
    }
}

/// Replaces the log filter with `level` (unless `RUST_LOG` is set, which wins).
/// The filter a log level names, or why it names none.
pub fn log_filter(level: &str) -> Result<EnvFilter, String> {
    EnvFilter::try_new(level).map_err(|e| format!("log level {level:?}: {e}"))
}

pub fn set_log_level(level: &str) -> Result<(), String> {
    if std::env::var_os("RUST_LOG").is_some() {
        return Ok(());
    }
    let filter = log_filter(level)?;
    let handle = FILTER.get().ok_or("no subscriber installed")?;
    handle.reload(filter).map_err(|e| e.to_string())
}

/// Installs the global Prometheus recorder with histogram buckets per metric name and
/// returns its handle (for `/metrics`) and whether this call installed it (so the
/// caller describes its metrics once). A second call in one process (tests) gets a
/// working, unregistered handle.
pub fn install_prometheus(buckets: &[(&str, &[f64])]) -> (PrometheusHandle, bool) {
    let mut builder = PrometheusBuilder::new();
    for (name, b) in buckets {
        if let Ok(next) = builder.set_buckets_for_metric(Matcher::Full((*name).to_owned()), b) {
            builder = next;
        } else {
            builder = PrometheusBuilder::new();
        }
    }
    let recorder = builder.build_recorder();
    let handle = recorder.handle();
    let installed = metrics::set_global_recorder(recorder).is_ok();
    (handle, installed)
}
