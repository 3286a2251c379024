//! "Trigger now" asked from the dashboard. The API cannot build a schedule's job (the
//! schedules and their overrides are the scheduler's), so it records a request; the leading
//! scheduler carries it out each tick with the code of `scheduler trigger <name>` and
//! records the job it enqueued. A request survives a restart, and two leaders in turn carry
//! it out once (the row is locked and marked done in one transaction).
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};

/// A trigger request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TriggerRequest {
    pub id: i64,
    pub schedule: String,
    pub requested_by: String,
    pub requested_at: DateTime<Utc>,
    pub job_id: Option<i64>,
    pub done_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
}

/// Records a request to run `schedule` now; `None` when no scheduler published it.
pub async fn request(
    conn: &mut PgConnection,
    schedule: &str,
    by: &str,
) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar!(
        "insert into schedule_triggers (schedule, requested_by)
         select schedule, $2 from schedule_state where schedule = $1
         returning id",
        schedule,
        by
    )
    .fetch_optional(conn)
    .await
}

/// The oldest open request, locked until the caller's transaction ends (another leader
/// skips it).
pub async fn next_open(conn: &mut PgConnection) -> Result<Option<(i64, String)>, sqlx::Error> {
    sqlx::query!(
        "select id, schedule from schedule_triggers where done_at is null
         order by id limit 1 for update skip locked"
    )
    .map(|r| (r.id, r.schedule))
    .fetch_optional(conn)
    .await
}

/// Marks request `id` carried out, with the job it enqueued or why it could not.
pub async fn finish(
    conn: &mut PgConnection,
    id: i64,
    job_id: Option<i64>,
    error: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "update schedule_triggers set done_at = now(), job_id = $2, error = $3 where id = $1",
        id,
        job_id,
        error
    )
    .execute(conn)
    .await
    .map(drop)
}

/// Request `id`, to see whether (and how) it was carried out.
pub async fn get(pool: &PgPool, id: i64) -> Result<Option<TriggerRequest>, sqlx::Error> {
    sqlx::query_as!(
        TriggerRequest,
        "select id, schedule, requested_by, requested_at, job_id, done_at, error
           from schedule_triggers where id = $1",
        id
    )
    .fetch_optional(pool)
    .await
}
