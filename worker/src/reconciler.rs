//! The reconciler: finds records that were handed to Redis long ago and never finished,
//! and hands them back to the relay. This is what makes "Redis lost its data" lose nothing.
//!
//! A record still present and unfinished in Redis is left alone (its worker may just be
//! slow, or the queue long); only records Redis no longer holds are pushed again. A second
//! push is harmless anyway: every handler is idempotent.
use std::time::Duration;

use chrono::{DateTime, Utc};
use shared::queue::ConnectionManager;
use shared::{queue, records};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::{Deps, error::WorkerError};

/// Sends back to `pending` the records enqueued or running for longer than `after` that
/// Redis no longer holds. Returns how many.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn reconcile(
    pool: &PgPool,
    redis: &mut ConnectionManager,
    prefix: &str,
    heartbeat: Duration,
    partitions: u32,
    after: chrono::Duration,
    now: DateTime<Utc>,
) -> Result<u64, WorkerError> {
    let stale = records::in_flight_since(pool, now - after).await?;
    let mut lost = Vec::new();
    for records::InFlight {
        id,
        queue: queue_name,
        pushes,
    } in stale
    {
        // where the relay put it: a record pushed under another partition count (or under
        // the untagged key names of the release before the cluster work) is not found
        // here and is pushed again, which every handler allows
        let config = queue::partition_config(
            prefix,
            &queue_name,
            queue::partition_of(id, partitions),
            partitions,
            heartbeat,
        );
        let task_id = format!("{id}.{pushes}");
        let (in_data, done, dead): (bool, bool, bool) = redis::pipe()
            .hexists(config.job_data_hash(), &task_id)
            .sismember(config.done_jobs_set(), &task_id)
            .sismember(config.dead_jobs_set(), &task_id)
            .query_async(redis)
            .await?;
        if in_data && !done && !dead {
            continue;
        }
        lost.push(id);
    }
    if lost.is_empty() {
        return Ok(0);
    }
    let reset = records::requeue(pool, &lost).await?;
    shared::outbox::notify(pool).await;
    tracing::warn!(count = reset, "re-enqueued jobs that Redis no longer holds");
    metrics::counter!("reconciler_requeued_total").increment(reset);
    Ok(reset)
}

/// Runs the reconciler every few seconds until `stop` fires.
pub async fn run(deps: Deps, stop: CancellationToken) {
    let mut redis: Option<ConnectionManager> = None;
    let every =
        (deps.config.reconcile_after() / 4).clamp(Duration::from_secs(1), Duration::from_secs(30));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => return,
        }
        if redis.is_none() {
            redis = queue::connect(&deps.config.redis()).await.ok();
        }
        let Some(conn) = redis.as_mut() else { continue };
        let after = chrono::Duration::from_std(deps.config.reconcile_after())
            .unwrap_or(chrono::Duration::minutes(2));
        let heartbeat = Duration::from_secs(deps.config.heartbeat_secs);
        if let Err(e) = reconcile(
            &deps.pool,
            conn,
            &deps.config.queue_prefix,
            heartbeat,
            deps.config.queue_partitions,
            after,
            deps.clock.now(),
        )
        .await
        {
            tracing::warn!(error = %e, "reconcile round failed");
            if matches!(e, WorkerError::Redis(_)) {
                redis = None;
            }
        }
    }
}
