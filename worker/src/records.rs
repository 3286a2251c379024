//! The lifecycle of a job's durable record in Postgres: an attempt begins, and ends done,
//! skipped, to be retried later, or dead. Retries are durable too: a transient failure puts
//! the record back to `pending` with an exponential, jittered `run_at`, and the relay pushes
//! it again when due. Redis never retries on its own (its hard-coded 25 attempts are never
//! reached) and the dead letters, with their error history, live here.
use chrono::{DateTime, Utc};
use rand::Rng;
use sqlx::PgPool;

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Done,
    /// Done, and already recorded by the handler together with its effect.
    Recorded,
    /// Nothing to do any more (a cancelled booking's reminder, an erased recipient).
    Skipped(String),
    /// A transient failure: try again later, unless the attempts are exhausted.
    Retry(String),
    /// Not this job's failure: something else holds what it needs (another delivery's email
    /// claim) until `until`. Run again then, without spending an attempt.
    Defer {
        until: DateTime<Utc>,
        reason: String,
    },
    /// A permanent failure: straight to the dead letters.
    Dead(String),
}

impl Outcome {
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Done | Outcome::Recorded => "done",
            Outcome::Skipped(_) => "skipped",
            Outcome::Retry(_) => "retry",
            Outcome::Defer { .. } => "deferred",
            Outcome::Dead(_) => "dead",
        }
    }
}

/// A started attempt.
#[derive(Debug, Clone, Copy)]
pub struct Attempt {
    pub number: i32,
    pub max: i32,
}

/// Starts an attempt of record `job_id`. The status stays `enqueued` (with `started_at`
/// set, that is a running job): an update of unindexed columns only is cheap (HOT). `None` when the record is already finished: this
/// delivery is a duplicate and must do nothing.
pub async fn begin(pool: &PgPool, job_id: i64) -> Result<Option<Attempt>, sqlx::Error> {
    let row = sqlx::query!(
        "update jobs set attempts = attempts + 1, started_at = now()
         where id = $1 and status in ('pending', 'enqueued', 'running')
         returning attempts, max_attempts",
        job_id
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| Attempt {
        number: r.attempts,
        max: r.max_attempts,
    }))
}

/// The delay before retry number `attempt` (1-based): 2 s doubling to at most 10 min, ±20%.
pub fn backoff(attempt: i32) -> chrono::Duration {
    let exponent = attempt.clamp(1, 20) as u32 - 1;
    let base_ms = (2_000u64.saturating_mul(1 << exponent)).min(600_000) as f64;
    let jitter = rand::rng().random_range(0.8..1.2);
    chrono::Duration::milliseconds((base_ms * jitter) as i64)
}

/// Records how attempt `attempt` of `job_id` ended.
pub async fn finish(
    pool: &PgPool,
    job_id: i64,
    attempt: Attempt,
    outcome: &Outcome,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    match outcome {
        // one statement each: no transaction needed
        Outcome::Recorded => {}
        Outcome::Done => {
            // a concurrent delivery of the same job may have finished it first
            sqlx::query!(
                "update jobs set status = 'done', finished_at = now() where id = $1 and status <> 'done'",
                job_id
            )
            .execute(pool)
            .await?;
        }
        Outcome::Skipped(reason) => {
            sqlx::query!(
                "update jobs set status = 'skipped', last_error = $2, finished_at = now() where id = $1",
                job_id,
                reason
            )
            .execute(pool)
            .await?;
        }
        Outcome::Defer { until, reason } => {
            // the attempt begun for this delivery is given back
            sqlx::query!(
                // only while this delivery's attempt is the latest word: a concurrent delivery
                // that finished (or scheduled its own retry) meanwhile is not overwritten
                "update jobs set status = 'pending', attempts = greatest(attempts - 1, 0),
                                 last_error = $2, run_at = $3
                 where id = $1 and status in ('enqueued', 'running')",
                job_id,
                reason,
                until
            )
            .execute(pool)
            .await?;
        }
        Outcome::Retry(error) if attempt.number < attempt.max => {
            let mut tx = pool.begin().await?;
            record_error(&mut tx, job_id, attempt, error).await?;
            sqlx::query!(
                "update jobs set status = 'pending', last_error = $2, run_at = $3 where id = $1",
                job_id,
                error,
                now + backoff(attempt.number)
            )
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        }
        Outcome::Retry(error) | Outcome::Dead(error) => {
            let mut tx = pool.begin().await?;
            record_error(&mut tx, job_id, attempt, error).await?;
            sqlx::query!(
                "update jobs set status = 'dead', last_error = $2, finished_at = now() where id = $1",
                job_id,
                error
            )
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        }
    }
    Ok(())
}

async fn record_error(
    conn: &mut sqlx::PgConnection,
    job_id: i64,
    attempt: Attempt,
    error: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "insert into job_errors (job_id, attempt, error) values ($1, $2, $3)",
        job_id,
        attempt.number,
        error
    )
    .execute(conn)
    .await
    .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_exponentially_with_jitter_and_a_cap() {
        for _ in 0..50 {
            let first = backoff(1).num_milliseconds();
            assert!((1_600..=2_400).contains(&first), "{first}");
            let third = backoff(3).num_milliseconds();
            assert!((6_400..=9_600).contains(&third), "{third}");
            let late = backoff(30).num_milliseconds();
            assert!(late <= 720_000, "{late}");
        }
    }
}
