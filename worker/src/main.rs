//! The `worker` binary.
use std::sync::Arc;

use anyhow::Context;
use shared::{clock::SystemClock, config::Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::from_env()?;
    shared::telemetry::init_tracing(&config.log_format);
    let metrics = shared::telemetry::init_metrics();
    // every series exists before the first scrape can be answered
    worker::telemetry::register(&worker::jobs::registry());
    let addr = format!("{}:{}", config.host, config.worker_port);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    tracing::info!(
        port = listener.local_addr()?.port(),
        "worker metrics listening"
    );
    let gauges =
        worker::maintenance::Gauges::new(&config, worker::jobs::configured(&config).queues());
    tokio::spawn(worker::serve_metrics(listener, metrics, gauges));
    let deps = worker::Deps::from_config(config, Arc::new(SystemClock))
        .await
        .context("starting the worker")?;
    worker::run(deps, shared::shutdown::signal()).await?;
    tracing::info!("worker stopped");
    Ok(())
}
