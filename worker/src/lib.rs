//! The worker process: apalis workers that execute jobs, the outbox relay that feeds them,
//! the reconciler that re-feeds what Redis lost, queue maintenance, and the metrics.
pub mod email_ledger;
pub mod error;
pub mod gauges;
pub mod jobs;
pub mod maintenance;
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
    error::WorkerError,
    wake::{OnWrite, Ticker, Wake, WriteSignal},
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
        Ok(Deps {
            pool,
            durable,
            mailer,
            config: Arc::new(config),
            clock,
            relay_poll: Duration::from_millis(1000),
            registry: Arc::new(jobs::registry()),
            instance: presence::instance_name().into(),
        })
    }
}

/// A worker name unique per process and per restart: apalis-redis refuses to register a
/// name seen within a heartbeat, and two live workers sharing one hide each other's death.
fn worker_name(queue: &str, run: usize) -> String {
    let instance = uuid::Uuid::new_v4().simple().to_string();
    format!("{queue}-{}-{}-{run}", std::process::id(), &instance[..8])
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
    // maintenance first: promote any large backlog in chunks before a fetch can choke on it
    if let Ok(mut conn) = queue::connect(&config.redis_url).await {
        let _ = maintenance::tick(&mut conn, &deps, false).await;
    }
    let loops = vec![
        tokio::spawn(relay::run(deps.clone(), stop.clone())),
        tokio::spawn(reconciler::run(deps.clone(), stop.clone())),
        tokio::spawn(maintenance::run(deps.clone(), stop.clone())),
        tokio::spawn(presence::run(deps.clone(), stop.clone())),
        tokio::spawn(gauges::run(deps.clone(), stop.clone())),
    ];

    let redis = loop {
        match queue::connect(&config.redis_url).await {
            Ok(conn) => break conn,
            Err(e) => {
                tracing::warn!(error = %e, "waiting for redis");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    let mut monitor = Monitor::new();
    for kind in deps.registry.kinds() {
        let concurrency = kind.concurrency(&config);
        let storage = queue::storage_raw(
            redis.clone(),
            &config.queue_prefix,
            kind.queue(),
            heartbeat,
            concurrency,
        );
        // woken by Redis when a queue is written (no busy polling), with a slow tick as the
        // safety net; apalis' own interval strategy stops re-arming after one slow fetch
        let signal = wake_signal(&config.redis_url, &storage).await;
        let (kind, kind_deps) = (kind.clone(), deps.clone());
        monitor = monitor.register(move |run| {
            let kind = kind.clone();
            WorkerBuilder::new(worker_name(kind.queue(), run))
                .backend(storage.clone().poll_with_strategy(wake(&signal)))
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
    for handle in loops {
        let _ = handle.await;
    }
    if let Err(e) = presence::stopped(&deps).await {
        tracing::warn!(error = %e, "could not record this worker's stop");
    }
    result.map_err(|e| WorkerError::Config(format!("monitor: {e}")))
}

/// The safety-net tick of a worker woken by writes, and the tick of one that is not.
const WAKE_TICK: Duration = Duration::from_millis(100);
const POLL_TICK: Duration = Duration::from_millis(20);

async fn wake_signal(
    redis_url: &str,
    storage: &apalis_redis::RedisStorage<serde_json::Value>,
) -> Option<Arc<WriteSignal>> {
    let key = storage.get_config().scheduled_jobs_set();
    WriteSignal::track(redis_url, &key)
        .await
        .inspect_err(|e| tracing::warn!(error = %e, "no write tracking; polling instead"))
        .ok()
}

fn wake(signal: &Option<Arc<WriteSignal>>) -> Wake {
    match signal {
        Some(signal) => Wake::OnWrite(OnWrite::new(signal.clone(), WAKE_TICK)),
        None => Wake::Tick(Ticker::new(POLL_TICK)),
    }
}

/// Serves `/metrics` and `/health` for the worker process.
pub async fn serve_metrics(
    listener: tokio::net::TcpListener,
    handle: PrometheusHandle,
) -> std::io::Result<()> {
    use axum::{Router, routing::get};
    let app = Router::new()
        .route("/metrics", get(move || std::future::ready(handle.render())))
        .route("/health", get(|| async { "ok" }));
    axum::serve(listener, app).await
}
