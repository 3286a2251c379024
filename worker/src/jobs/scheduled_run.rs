//! Runs one slot of a periodic schedule. The scheduler only enqueues; the work happens here.
//!
//! Idempotent per schedule: the reminder sweep only moves due records (a second run finds
//! none), retention deletes are naturally repeatable. Schedules whose work is not built yet
//! are recorded as skipped with that reason, never as done.
use shared::jobs::ScheduledRun;

use crate::{Deps, error::WorkerError, records::Outcome};

/// Rows deleted per statement by retention: never one huge DELETE.
const RETENTION_BATCH: i64 = 1000;
/// Finished job records are kept this long for ops and audits.
const FINISHED_JOB_KEEP_DAYS: i64 = 30;

pub async fn handle(deps: Deps, _job_id: i64, args: ScheduledRun) -> Result<Outcome, WorkerError> {
    tracing::Span::current().record("schedule", args.schedule.as_str());
    match args.schedule.as_str() {
        "reminder_sweep" => {
            // moves every due record (reminders included) to Redis now, whatever the relay's tick
            let mut redis = shared::queue::connect(&deps.config.redis_url).await?;
            let moved = crate::relay::relay_due(
                &deps.pool,
                &mut redis,
                &deps.config.queue_prefix,
                std::time::Duration::from_secs(deps.config.heartbeat_secs),
                deps.clock.now(),
            )
            .await?;
            tracing::info!(moved, "reminder sweep");
            Ok(Outcome::Done)
        }
        "retention_sweep" => {
            let cutoff = deps.clock.now() - chrono::Duration::days(FINISHED_JOB_KEEP_DAYS);
            let mut deleted = 0;
            loop {
                let n = sqlx::query!(
                    "delete from jobs where id in (
                        select id from jobs where status in ('done', 'skipped') and finished_at < $1 limit $2)",
                    cutoff,
                    RETENTION_BATCH
                )
                .execute(&deps.pool)
                .await?
                .rows_affected();
                deleted += n;
                if n < RETENTION_BATCH as u64 {
                    break;
                }
            }
            tracing::info!(deleted, "retention sweep: finished job records");
            Ok(Outcome::Done)
        }
        "search_rollup" => Ok(Outcome::Skipped(
            "search analytics rollup is not built yet".into(),
        )),
        other => Ok(Outcome::Dead(format!("unknown schedule {other}"))),
    }
}
