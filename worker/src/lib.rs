//! The worker process: apalis workers that execute jobs, the outbox relay that feeds them,
//! the reconciler that re-feeds what Redis lost, queue maintenance, and the metrics.
//!
//! At rest it sends Redis one heartbeat per process every `HEARTBEAT_SECS` (and now and
//! then a look for dead processes), nothing per queue: consumers sleep until Redis reports
//! a write to their queue ([`wake`]), maintenance until a scheduled task is due, and the
//! queue gauges are read when `/metrics` is scraped.
pub mod backend;
pub mod email_ledger;
pub mod error;
pub mod gauges;
pub mod jobs;
pub mod liveness;
pub mod maintenance;
pub mod pauses;
pub mod presence;
pub mod reconciler;
pub mod records;
pub mod relay;
pub mod telemetry;
pub mod wake;

use std::{future::Future, sync::Arc, time::Duration};

use apalis::prelude::*;
use metrics_exporter_prometheus::PrometheusHandle;
use shared::{clock::SharedClock, config::Config, email::Mailer, queue};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::{
    backend::{Consumers, RedisQueue},
    error::WorkerError,
    liveness::Process,
};

/// What every job handler and loop of the worker needs.
#[derive(Clone, Debug)]
pub struct Deps {
    /// Job bookkeeping: commits asynchronously (lost in a Postgres crash, it is redone).
    pub pool: PgPool,
    /// For what must survive a crash once done, like an email recorded as sent.
    pub durable: PgPool,
    pub mailer: Mailer,
    pub config: Arc<Config>,
    pub clock: SharedClock,
    /// How often the relay looks for records due by time when no notification arrives.
    pub relay_poll: Duration,
    /// The job kinds this worker runs ([`jobs::registry`] unless a caller adds its own).
    pub registry: Arc<jobs::Registry>,
    /// This worker process's name (unique per start): the holder its email claims name.
    pub instance: Arc<str>,
}

impl Deps {
    /// Connects to Postgres (creating and migrating it if needed) and builds the mailer.
    pub async fn from_config(config: Config, clock: SharedClock) -> Result<Self, WorkerError> {
        // job bookkeeping commits asynchronously; what must survive a crash (an email recorded
        // as sent) commits durably on its own
        let pool = shared::db::prepare_with(
            &config.database_url,
            config.database_pool_size,
            shared::db::Commit::Async,
        )
        .await?;
        let durable = shared::db::connect(&config.database_url, 4).await?;
        let mailer = Mailer::from_config(
            config.smtp_url.as_deref(),
            &config.mail_dir,
            config.worker_concurrency,
        )
        .map_err(WorkerError::Config)?;
        if let Some(longest) = mailer.longest_send()
            && longest.as_secs() > config.email_claim_timeout_secs
        {
            tracing::warn!(
                email_claim_timeout_secs = config.email_claim_timeout_secs,
                longest_send_secs = longest.as_secs(),
                "EMAIL_CLAIM_TIMEOUT_SECS is shorter than the longest SMTP send: a slow send \
                 could be taken over and the email sent twice"
            );
        }
        let registry = Arc::new(jobs::configured(&config));
        Ok(Deps {
            pool,
            durable,
            mailer,
            config: Arc::new(config),
            clock,
            relay_poll: Duration::from_millis(1000),
            registry,
            instance: presence::instance_name().into(),
        })
    }
}

/// The apalis name of one consumer run: the queue, this process and the restart count.
fn worker_name(queue: &str, process: &Process, run: usize) -> String {
    format!("{queue}-{}-{run}", process.id())
}

/// Runs the worker until `shutdown` resolves; in-flight jobs get `drain_secs` to finish,
/// after which what is left goes back to Redis (or to the reconciler).
pub async fn run(
    deps: Deps,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), WorkerError> {
    let stop = CancellationToken::new();
    let config = deps.config.clone();
    let heartbeat = Duration::from_secs(config.heartbeat_secs);
    // every series at zero (again, for the binary; first, for a worker run in-process with
    // a registry of its own)
    telemetry::register(&deps.registry);

    // alive before the first delivery: the claims it takes name it
    if let Err(e) = presence::announce(&deps).await {
        tracing::warn!(error = %e, "could not record this worker's presence");
    }
    // the kinds this worker runs, for the admin views and for other workers' relays
    if let Err(e) = maintenance::publish_registry(&deps).await {
        tracing::warn!(error = %e, "could not publish the job registry");
    }
    let kinds = deps.registry.kinds().to_vec();
    let queues: Vec<_> = kinds
        .iter()
        .map(|kind| {
            // a fetch takes about what one worker can start: keep it near the concurrency
            // so that one process does not hoard tasks others could run
            let partitions = queue::partition_configs(
                &config.queue_prefix,
                kind.queue(),
                config.queue_partitions,
                heartbeat,
            )
            .into_iter()
            .map(|p| p.batch_size(kind.concurrency(&config).max(1)))
            .collect();
            (kind.queue().to_string(), partitions)
        })
        .collect();
    let mut consumers = loop {
        match Consumers::connect(
            &config.redis(),
            &config.queue_prefix,
            queues.clone(),
            heartbeat,
        )
        .await
        {
            Ok(consumers) => break consumers,
            Err(e) => {
                tracing::warn!(error = %e, "waiting for redis");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    // a queue paused before this start stays paused: read before the first fetch
    if let Err(e) = consumers.pauses.refresh(&deps.pool).await {
        tracing::warn!(error = %e, "could not read the queue pauses; reading them again shortly");
    }
    let loops = vec![
        tokio::spawn(pauses::run(
            deps.pool.clone(),
            consumers.pauses.clone(),
            consumers.signals(),
            stop.clone(),
        )),
        tokio::spawn(relay::run(deps.clone(), stop.clone())),
        tokio::spawn(reconciler::run(deps.clone(), stop.clone())),
        tokio::spawn(maintenance::refresh_registry(deps.clone(), stop.clone())),
        tokio::spawn(presence::run(deps.clone(), stop.clone())),
        tokio::spawn(gauges::run(deps.clone(), stop.clone())),
    ];
    // heartbeat and queue maintenance go on while in-flight jobs drain: a draining process
    // that stopped beating would be presumed dead and its jobs run a second time elsewhere
    let consumers_stop = CancellationToken::new();
    let consumer_loops = consumers.spawn(&consumers_stop);

    let mut monitor = Monitor::new();
    for (i, kind) in kinds.into_iter().enumerate() {
        let concurrency = kind.concurrency(&config);
        let backend: RedisQueue = consumers.backend(i).ok_or_else(|| {
            WorkerError::Config(format!("queue {} has no consumer", kind.queue()))
        })?;
        let (kind_deps, process) = (deps.clone(), consumers.process.clone());
        monitor = monitor.register(move |run| {
            let kind = kind.clone();
            WorkerBuilder::new(worker_name(kind.queue(), &process, run))
                .backend(backend.clone())
                .data(kind_deps.clone())
                .concurrency(concurrency)
                .build(move |raw: serde_json::Value, deps: Data<Deps>| {
                    kind.clone().deliver((*deps).clone(), raw)
                })
        });
    }
    let monitor = monitor
        // a Redis hiccup is a fatal backend error to apalis; come back instead of going quiet
        .should_restart(|ctx, error| {
            tracing::warn!(worker = ctx.name(), error = %error, "worker stopped; restarting");
            metrics::counter!("worker_restarts_total").increment(1);
            true
        })
        .shutdown_timeout(Duration::from_secs(config.drain_secs));
    let stop_loops = stop.clone();
    let signal = async move {
        shutdown.await;
        tracing::info!("stopping: draining in-flight jobs");
        stop_loops.cancel();
        Ok(())
    };
    let result = monitor.run_with_signal(signal).await;
    stop.cancel();
    consumers_stop.cancel();
    for handle in loops.into_iter().chain(consumer_loops) {
        let _ = handle.await;
    }
    // what did not finish within the drain time goes back now, not after a timeout
    consumers.retire().await;
    if let Err(e) = presence::stopped(&deps).await {
        tracing::warn!(error = %e, "could not record this worker's stop");
    }
    result.map_err(|e| WorkerError::Config(format!("monitor: {e}")))
}

/// Serves `/metrics` (the queue gauges read from Redis on each scrape) and `/health` for
/// the worker process.
pub async fn serve_metrics(
    listener: tokio::net::TcpListener,
    handle: PrometheusHandle,
    gauges: maintenance::Gauges,
) -> std::io::Result<()> {
    use axum::{Router, routing::get};
    let app = Router::new()
        .route(
            "/metrics",
            get(move || async move {
                gauges.refresh().await;
                handle.render()
            }),
        )
        .route("/health", get(|| async { "ok" }));
    axum::serve(listener, app).await
}
