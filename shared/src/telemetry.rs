//! Logs through `tracing` and metrics through `metrics`, set up once per process.
//!
//! Logs never carry email addresses, names or raw IPs: spans carry ids only. Metrics are
//! served in Prometheus format by each process's `/metrics`; every metric is described
//! (`# HELP`) where it is published, and labels take bounded values only (queues, kinds,
//! states, route templates: never an id). The metrics every process shares live here:
//! build information and the database pool. The catalogue of the rest is each binary's
//! `telemetry` module; the dashboards (`ops/grafana/`) and alert rules (`ops/alerts/`) read
//! them, and an end-to-end test checks that every series those name exists.
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use sqlx::PgPool;
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

/// Latency buckets, in seconds: requests and job runs (a job's attempt times out at 300 s).
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// Wait buckets, in seconds: a job normally starts within milliseconds of being due, but a
/// backlog or an outage makes it hours, and the histogram should still say how many.
const WAIT_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 21600.0,
];

/// The metrics whose values are waits rather than latencies.
const WAIT_HISTOGRAMS: &[&str] = &["job_wait_duration_seconds", "outbox_relay_lag_seconds"];

/// Installs the global Prometheus recorder (once per process) and returns its handle.
pub fn init_metrics() -> PrometheusHandle {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(LATENCY_BUCKETS)
                .and_then(|builder| {
                    WAIT_HISTOGRAMS.iter().try_fold(builder, |builder, name| {
                        builder
                            .set_buckets_for_metric(Matcher::Full(name.to_string()), WAIT_BUCKETS)
                    })
                })
                .map(|b| b.build_recorder())
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
            let handle = recorder.handle();
            // a recorder already installed (another test in this process) keeps serving
            let _ = metrics::set_global_recorder(recorder);
            describe();
            handle
        })
        .clone()
}

/// The `# HELP` of the metrics every process publishes.
fn describe() {
    metrics::describe_gauge!(
        "instainstru_build_info",
        "Always 1: the version, commit and build profile this process runs, and which binary"
    );
    metrics::describe_gauge!(
        "db_pool_connections",
        "Postgres connections of this process's pool, by state (idle, in_use)"
    );
    metrics::describe_gauge!(
        "db_pool_max_connections",
        "The most connections this process's pool opens (DATABASE_POOL_SIZE for the main pool)"
    );
}

/// Publishes `instainstru_build_info{binary, version, commit, profile} 1`. The commit is
/// `INSTAINSTRU_COMMIT` at build time (the Dockerfile passes it), `unknown` otherwise.
pub fn build_info(binary: &'static str) {
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    metrics::gauge!(
        "instainstru_build_info",
        "binary" => binary,
        "version" => env!("CARGO_PKG_VERSION"),
        "commit" => option_env!("INSTAINSTRU_COMMIT").unwrap_or("unknown"),
        "profile" => profile
    )
    .set(1.0);
}

/// Samples the connections of `pool` (named `name` in the `pool` label) into the pool
/// gauges. Two atomic reads: cheap enough to call on every scrape or tick.
pub fn record_pool(name: &'static str, pool: &PgPool) {
    let size = pool.size();
    let idle = u32::try_from(pool.num_idle()).unwrap_or(u32::MAX).min(size);
    metrics::gauge!("db_pool_connections", "pool" => name, "state" => "idle").set(idle);
    metrics::gauge!("db_pool_connections", "pool" => name, "state" => "in_use").set(size - idle);
    metrics::gauge!("db_pool_max_connections", "pool" => name)
        .set(pool.options().get_max_connections());
}
