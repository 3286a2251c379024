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
    Ok(enqueue_all(conn, &[(args, run_at)])
        .await?
        .into_iter()
        .next())
}

/// Records several jobs of one kind in one statement (and one notification): the booking
/// write path records four at a time. Returns the ids of those that were not duplicates.
#[tracing::instrument(level = "debug", skip_all, fields(queue = A::QUEUE, count = jobs.len()))]
pub async fn enqueue_all<A: JobArgs>(
    conn: &mut PgConnection,
    jobs: &[(&A, DateTime<Utc>)],
) -> Result<Vec<i64>, sqlx::Error> {
    let mut payloads = Vec::with_capacity(jobs.len());
    let mut keys = Vec::with_capacity(jobs.len());
    let mut run_ats = Vec::with_capacity(jobs.len());
    for (args, run_at) in jobs {
        payloads.push(serde_json::to_value(args).map_err(|e| sqlx::Error::Encode(Box::new(e)))?);
        keys.push(args.dedupe_key());
        run_ats.push(*run_at);
    }
    // the notification is delivered at commit, so the relay never sees a record that might
    // still roll back; it is sent only when something was inserted
    sqlx::query_scalar(
        "with inserted as (
            insert into jobs (queue, payload, dedupe_key, run_at)
            select $1, p, k, r from unnest($2::jsonb[], $3::text[], $4::timestamptz[]) as t(p, k, r)
            on conflict (dedupe_key) do nothing returning id),
         notified as (select pg_notify($5, '') from (select 1) one where exists (select 1 from inserted))
         select id from inserted, (select count(*) from notified) n",
    )
    .bind(A::QUEUE)
    .bind(payloads)
    .bind(keys)
    .bind(run_ats)
    .bind(NOTIFY_CHANNEL)
    .fetch_all(&mut *conn)
    .await
}
