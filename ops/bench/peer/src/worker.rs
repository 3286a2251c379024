//! The worker contract: an apalis `Monitor` running one `WorkerBuilder` worker on the
//! platform's own consumer backend (`::worker::backend`, over `shared::queue`'s Redis
//! layout) with the completion-protocol handler, until SIGTERM.
//!
//! It is wired as the platform's worker wires it (`::worker::backend::Consumers`): one
//! registration and heartbeat for the process, woken by Redis when the queue's ready list is
//! written (`BENCH_WAKE=write`, the default; `BENCH_POLL_US` is then unused) or polling
//! every `BENCH_POLL_US` (`BENCH_WAKE=tick`), each worker named uniquely per restart and
//! restarted on backend errors.
use std::time::Duration;

use apalis::layers::retry::RetryPolicy;
use apalis::prelude::*;

use crate::clock::monotonic_ns;
use crate::job::BenchEnvelope;
use crate::protocol::Protocol;
use crate::settings::{QUEUE_PREFIX, Target, WorkerSettings};
use ::worker::backend::{Consumers, RedisQueue};

/// The handler: step 1 of the protocol (read the clock) first thing, then the rest.
async fn handle(job: BenchEnvelope, protocol: Data<Protocol>) -> Result<(), BoxDynError> {
    let t_start = monotonic_ns();
    protocol.handle(&job.args, t_start).await?;
    Ok(())
}

/// Runs the worker until SIGTERM (or Ctrl-C), then drains in-flight work.
pub async fn run(target: Target, settings: WorkerSettings) -> anyhow::Result<()> {
    let config = settings.apply(target.queue_config());
    tracing::info!(?config, ?settings, "starting");
    let stop = tokio_util::sync::CancellationToken::new();
    let mut consumers = Consumers::connect(
        &target.redis_url.as_str().into(),
        QUEUE_PREFIX,
        vec![(target.queue.clone(), vec![config.clone()])],
        target.heartbeat(),
    )
    .await?;
    let loops = consumers.spawn(&stop);
    let backend: RedisQueue<BenchEnvelope> = consumers
        .backend(0)
        .ok_or_else(|| anyhow::anyhow!("no consumer for {}", target.queue))?;
    if !settings.wake_on_write {
        // the `tick` variant: look every interval whatever Redis reports
        let signal = consumers
            .hub
            .signal(&config)
            .ok_or_else(|| anyhow::anyhow!("{} is not tracked", target.queue))?;
        let mut tick = tokio::time::interval(settings.poll_interval.max(Duration::from_millis(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::spawn(async move {
            loop {
                tick.tick().await;
                signal.notify();
            }
        });
    }

    let protocol = Protocol::new(
        shared::queue::connect(&target.redis_url).await?,
        settings.expected,
        settings.sleep,
        settings.record_latency,
    );
    let process = consumers.process.id().to_string();
    let concurrency = settings.concurrency;

    let monitor = Monitor::new();
    let monitor = if bare_stack() {
        monitor.register(move |run| {
            WorkerBuilder::new(format!("bench-{process}-{run}"))
                .backend(backend.clone())
                .concurrency(concurrency)
                .data(protocol.clone())
                .build(handle)
        })
    } else {
        // The production-shaped stack (shared/reference/apalis.md §2.2 and §10.5).
        monitor.register(move |run| {
            WorkerBuilder::new(format!("bench-{process}-{run}"))
                .backend(backend.clone())
                .concurrency(concurrency)
                .retry(RetryPolicy::retries(3))
                .timeout(Duration::from_secs(30))
                .catch_panic()
                .enable_tracing()
                .data(protocol.clone())
                .build(handle)
        })
    };
    let result = monitor
        .should_restart(|ctx, err| {
            tracing::error!(worker = ctx.name(), %err, "worker failed; restarting");
            true
        })
        .shutdown_timeout(Duration::from_secs(10))
        .run_with_signal(shutdown_signal())
        .await;
    stop.cancel();
    for handle in loops {
        let _ = handle.await;
    }
    consumers.retire().await;
    result?;
    tracing::info!("stopped cleanly");
    Ok(())
}

/// `BENCH_STACK=bare`: only concurrency, no retry/timeout/panic/tracing layers.
fn bare_stack() -> bool {
    std::env::var("BENCH_STACK").as_deref() == Ok("bare")
}

async fn shutdown_signal() -> std::io::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r,
        _ = term.recv() => Ok(()),
    }
}
