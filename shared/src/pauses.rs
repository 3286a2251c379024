//! What operators paused from the dashboard: queues (the relay, the reconciler and the
//! workers leave them alone) and schedules (the leader fires none of their slots). Kept in
//! Postgres, so a pause survives the restart of every process; the relay and the
//! reconciler read `queue_pauses` inside their own queries, the workers poll it
//! (`worker::pauses`), the scheduler reads `schedule_state.paused_at` in its fire
//! transaction.
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};

/// A paused queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueuePause {
    pub queue: String,
    /// The user id of the operator who paused it.
    pub paused_by: String,
    pub paused_at: DateTime<Utc>,
}

/// Pauses `queue`; false when it was paused already.
pub async fn pause_queue(
    conn: &mut PgConnection,
    queue: &str,
    by: &str,
) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query!(
        "insert into queue_pauses (queue, paused_by) values ($1, $2) on conflict (queue) do nothing",
        queue,
        by
    )
    .execute(conn)
    .await?
    .rows_affected()
        > 0)
}

/// Resumes `queue`; false when it was not paused.
pub async fn resume_queue(conn: &mut PgConnection, queue: &str) -> Result<bool, sqlx::Error> {
    Ok(
        sqlx::query!("delete from queue_pauses where queue = $1", queue)
            .execute(conn)
            .await?
            .rows_affected()
            > 0,
    )
}

/// Every paused queue, by name.
pub async fn paused_queues(pool: &PgPool) -> Result<Vec<QueuePause>, sqlx::Error> {
    sqlx::query_as!(
        QueuePause,
        "select queue, paused_by, paused_at from queue_pauses order by queue"
    )
    .fetch_all(pool)
    .await
}

/// What pausing or resuming a schedule came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScheduleChange {
    Changed,
    /// It already was (paused, or running).
    Unchanged,
    /// No scheduler has published a schedule of that name.
    Unknown,
}

/// Pauses (`paused`) or resumes schedule `name`.
pub async fn set_schedule_paused(
    conn: &mut PgConnection,
    name: &str,
    paused: bool,
    by: &str,
) -> Result<ScheduleChange, sqlx::Error> {
    let row = sqlx::query!(
        r#"with target as (select schedule, paused_at is not null as was from schedule_state
                            where schedule = $1 for update),
                changed as (
                    update schedule_state s
                       set paused_at = case when $2 then now() else null end,
                           paused_by = case when $2 then $3 else null end
                      from target t
                     where s.schedule = t.schedule and t.was <> $2
                    returning s.schedule)
           select (select count(*) from target) as "known!",
                  (select count(*) from changed) as "changed!""#,
        name,
        paused,
        by
    )
    .fetch_one(conn)
    .await?;
    Ok(match (row.known, row.changed) {
        (0, _) => ScheduleChange::Unknown,
        (_, 0) => ScheduleChange::Unchanged,
        _ => ScheduleChange::Changed,
    })
}
