//! The worker contract: an apalis `Monitor` running one `WorkerBuilder` worker on the
//! platform's `RedisStorage`, with the completion-protocol handler, until SIGTERM.
//!
//! Around the backend it does what the platform's worker must do on apalis-redis 1.0:
//! - promotes due tasks with `shared::queue::promote_due` before the first fetch and then
//!   periodically, because the backend's own promotion (one Lua `unpack` of every due id)
//!   fails on a backlog past ~8,000 and would kill every fetch of a 20,000-job drain;
//! - polls on a short interval, because a push never wakes an idle worker, with our own
//!   [`Ticker`] because apalis's interval strategy stops re-arming (see [`::worker::wake`]);
//! - names each worker uniquely per process and restart, and restarts it on backend errors.
use std::time::Duration;

use apalis::layers::retry::RetryPolicy;
use apalis::prelude::*;
use apalis_redis::{ConnectionManager, RedisStorage};

use crate::clock::monotonic_ns;
use crate::job::BenchEnvelope;
use crate::protocol::Protocol;
use crate::settings::{Target, WorkerSettings};
use ::worker::wake::{OnWrite, Ticker, Wake, WriteSignal};

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
    let mut conn = shared::queue::connect(&target.redis_url).await?;

    let moved = promote_all(&mut conn, &config).await?;
    tracing::info!(moved, "promoted the due backlog before starting");
    let promoter = tokio::spawn(promote_periodically(
        conn.clone(),
        config.clone(),
        settings.promote_every,
    ));

    let protocol = Protocol::new(
        shared::queue::connect(&target.redis_url).await?,
        settings.expected,
        settings.sleep,
        settings.record_latency,
    );
    let scheduled_key = config.scheduled_jobs_set();
    let storage: RedisStorage<BenchEnvelope> = RedisStorage::new(conn).with_config(config);
    let (host, pid) = (hostname(), std::process::id());
    let (poll, concurrency) = (settings.poll_interval, settings.concurrency);
    let signal = match settings.wake_on_write {
        true => Some(WriteSignal::track(&target.redis_url, &scheduled_key).await?),
        false => None,
    };

    let monitor = Monitor::new();
    let monitor = if bare_stack() {
        monitor.register(move |run| {
            WorkerBuilder::new(format!("bench-{host}-{pid}-{run}"))
                .backend(storage.clone().poll_with_strategy(wake(&signal, poll)))
                .concurrency(concurrency)
                .data(protocol.clone())
                .build(handle)
        })
    } else {
        // The production-shaped stack (shared/reference/apalis.md §2.2 and §10.5).
        monitor.register(move |run| {
            WorkerBuilder::new(format!("bench-{host}-{pid}-{run}"))
                .backend(storage.clone().poll_with_strategy(wake(&signal, poll)))
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
    promoter.abort();
    result?;
    tracing::info!("stopped cleanly");
    Ok(())
}

/// The poll strategy of one worker run: woken by writes (then `poll` is only the safety
/// net) or ticking every `poll`.
fn wake(signal: &Option<std::sync::Arc<WriteSignal>>, poll: Duration) -> Wake {
    match signal {
        Some(signal) => Wake::OnWrite(OnWrite::new(signal.clone(), poll)),
        None => Wake::Tick(Ticker::new(poll)),
    }
}

/// `BENCH_STACK=bare`: only concurrency, no retry/timeout/panic/tracing layers.
fn bare_stack() -> bool {
    std::env::var("BENCH_STACK").as_deref() == Ok("bare")
}

/// Promotes until nothing due is left (each call moves at most 20 chunks of 1,000).
async fn promote_all(
    conn: &mut ConnectionManager,
    config: &apalis_redis::Config,
) -> redis::RedisResult<u64> {
    let mut total = 0;
    loop {
        let moved = shared::queue::promote_due(conn, config).await?;
        total += moved;
        if moved == 0 {
            return Ok(total);
        }
    }
}

async fn promote_periodically(
    mut conn: ConnectionManager,
    config: apalis_redis::Config,
    every: Duration,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(err) = promote_all(&mut conn, &config).await {
            tracing::warn!(%err, "promote_due failed");
        }
    }
}

async fn shutdown_signal() -> std::io::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r,
        _ = term.recv() => Ok(()),
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "local".into())
}
