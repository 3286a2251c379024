//! Logs through `tracing` and metrics through `metrics`, set up once per process.
//!
//! Logs never carry email addresses, names or raw IPs: spans carry ids only. Metrics are
//! served in Prometheus format by each process's `/metrics`.
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// Installs the global subscriber; `format` is `text` or `json`. Safe to call twice (tests).
pub fn init_tracing(format: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new("info,sqlx=warn,apalis=warn,apalis_core=warn,apalis_redis=warn")
    });
    let registry = tracing_subscriber::registry().with(filter);
    let _ = if format == "json" {
        registry
            .with(fmt::layer().json().with_current_span(true))
            .try_init()
    } else {
        // colour codes only for a person at a terminal, never in files or collectors
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
        registry
            .with(fmt::layer().with_target(false).with_ansi(ansi))
            .try_init()
    };
}

/// Installs the global Prometheus recorder (once per process) and returns its handle.
pub fn init_metrics() -> PrometheusHandle {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                    30.0, 60.0, 300.0,
                ])
                .map(|b| b.build_recorder())
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
            let handle = recorder.handle();
            // a recorder already installed (another test in this process) keeps serving
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}
