//! Keeps the Redis queues healthy where apalis-redis does not: promotes due tasks in bounded
//! chunks (its own promotion fails past ~8,000), deletes finished tasks (it never does), and
//! publishes queue depth as metrics (its stats calls are broken).
use std::time::Duration;

use apalis_redis::ConnectionManager;
use shared::{jobs::ALL_QUEUES, queue};
use tokio_util::sync::CancellationToken;

use crate::Deps;

/// One maintenance round over every queue.
pub async fn tick(
    conn: &mut ConnectionManager,
    deps: &Deps,
    cleanup: bool,
) -> Result<(), redis::RedisError> {
    let heartbeat = Duration::from_secs(deps.config.heartbeat_secs);
    for name in ALL_QUEUES {
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

/// Runs maintenance every 500 ms (cleanup every 10 s) until `stop` fires.
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
        round += 1;
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = stop.cancelled() => return,
        }
    }
}
