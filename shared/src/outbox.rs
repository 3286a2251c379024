//! The transactional outbox: the one way to enqueue work.
//!
//! A caller inserts the durable record of a job in its own transaction, next to the business
//! change that caused it. The worker's relay moves due records into Redis; the reconciler
//! pushes again what stayed unfinished too long. Redis being down delays work; Redis losing
//! its data loses nothing.
use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::jobs::JobArgs;

/// The Postgres channel the relay listens on to move new jobs within milliseconds.
pub const NOTIFY_CHANNEL: &str = "jobs_due";

/// Records `args` to run at `run_at`, unless a job with the same dedupe key exists.
/// Returns the new record's id, or `None` when it was a duplicate.
#[tracing::instrument(level = "debug", skip_all, fields(queue = A::QUEUE))]
pub async fn enqueue<A: JobArgs>(
    conn: &mut PgConnection,
    args: &A,
    run_at: DateTime<Utc>,
) -> Result<Option<i64>, sqlx::Error> {
    let payload = serde_json::to_value(args).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    let id: Option<i64> = sqlx::query_scalar(
        "insert into jobs (queue, payload, dedupe_key, run_at) values ($1, $2, $3, $4)
         on conflict (dedupe_key) do nothing returning id",
    )
    .bind(A::QUEUE)
    .bind(payload)
    .bind(args.dedupe_key())
    .bind(run_at)
    .fetch_optional(&mut *conn)
    .await?;
    // delivered at commit, so the relay never sees a record that might still roll back
    sqlx::query("select pg_notify($1, '')")
        .bind(NOTIFY_CHANNEL)
        .execute(&mut *conn)
        .await?;
    Ok(id)
}
