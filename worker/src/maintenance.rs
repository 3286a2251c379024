//! Keeps the Redis queues healthy where apalis-redis does not: promotes due tasks in bounded
//! chunks (its own promotion fails past ~8,000), deletes finished tasks (it never does), and
//! publishes queue depth as metrics (its stats calls are broken).
use std::time::Duration;

use apalis_redis::ConnectionManager;
use shared::{queue, records};
use tokio_util::sync::CancellationToken;

use crate::Deps;

/// One maintenance round over every queue.
pub async fn tick(
    conn: &mut ConnectionManager,
    deps: &Deps,
    cleanup: bool,
) -> Result<(), redis::RedisError> {
    let heartbeat = Duration::from_secs(deps.config.heartbeat_secs);
    for kind in deps.registry.kinds() {
        let name = &kind.queue();
        let config = queue::queue_config(&deps.config.queue_prefix, name, heartbeat);
        queue::promote_due(conn, &config).await?;
        if cleanup {
            queue::cleanup_finished(conn, &config, 5_000).await?;
        }
        let stats = queue::stats(conn, &config).await?;
        metrics::gauge!("queue_waiting", "queue" => *name).set(stats.waiting as f64);
        metrics::gauge!("queue_in_flight", "queue" => *name).set(stats.in_flight as f64);
        metrics::gauge!("queue_workers", "queue" => *name).set(stats.workers as f64);
        metrics::gauge!("queue_stale_workers", "queue" => *name)
            .set(stats.stale_workers.len() as f64);
        if !stats.stale_workers.is_empty() {
            tracing::warn!(queue = *name, stale = ?stats.stale_workers, "workers registered but not heartbeating");
        }
    }
    Ok(())
}

/// Publishes the kinds this worker runs to `job_queues`, or refreshes their `seen_at`.
pub async fn publish_registry(deps: &Deps) -> Result<(), sqlx::Error> {
    let instance = deps.instance.to_string();
    let now = deps.clock.now();
    let queues: Vec<records::RegisteredQueue> = deps
        .registry
        .kinds()
        .iter()
        .map(|kind| records::RegisteredQueue {
            queue: kind.queue().to_string(),
            concurrency: i32::try_from(kind.concurrency(&deps.config)).unwrap_or(i32::MAX),
            max_attempts: kind.max_attempts(),
            timeout_secs: i32::try_from(kind.timeout().as_secs()).unwrap_or(i32::MAX),
            registered_by: instance.clone(),
            seen_at: now,
        })
        .collect();
    records::register_queues(&deps.pool, &queues).await
}

/// Runs maintenance every 500 ms (cleanup every 10 s, registry refresh every minute) until
/// `stop` fires.
pub async fn run(deps: Deps, stop: CancellationToken) {
    let mut redis: Option<ConnectionManager> = None;
    let mut round: u64 = 0;
    loop {
        if redis.is_none() {
            redis = queue::connect(&deps.config.redis_url).await.ok();
        }
        if let Some(conn) = redis.as_mut()
            && let Err(e) = tick(conn, &deps, round.is_multiple_of(20)).await
        {
            tracing::warn!(error = %e, "queue maintenance failed");
            redis = None;
        }
        if round.is_multiple_of(120)
            && round > 0
            && let Err(e) = publish_registry(&deps).await
        {
            tracing::warn!(error = %e, "could not refresh the job registry");
        }
        round += 1;
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = stop.cancelled() => return,
        }
    }
}
