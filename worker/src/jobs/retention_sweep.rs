//! The daily retention sweep: deletes finished job records past their keep time and export
//! documents past their expiry (but those of users under legal hold), in bounded batches
//! (never one huge DELETE), and records the counts per kind in the audit log (actor
//! `retention`).
//!
//! Idempotent: what is past retention at the slot is deleted, and a rerun or a concurrent
//! run finds less or nothing to delete. A failed batch retries the whole sweep with backoff;
//! the batches already committed stay deleted.
use shared::{jobs::RetentionSweep, records};

use super::{Handler, JobRun};
use crate::{Deps, error::WorkerError, records::Outcome};

/// Rows deleted per statement: short locks, never one huge DELETE.
const BATCH: i64 = 1000;
/// Finished job records are kept this long for ops and audits.
const FINISHED_JOB_KEEP_DAYS: i64 = 30;

pub struct RetentionSweepJob;

impl Handler for RetentionSweepJob {
    type Args = RetentionSweep;

    fn concurrency(&self, _config: &shared::config::Config) -> usize {
        1
    }

    async fn work(
        &self,
        deps: &Deps,
        _run: JobRun,
        args: RetentionSweep,
    ) -> Result<Outcome, WorkerError> {
        tracing::Span::current().record("schedule", "retention_sweep");
        let cutoff = deps.clock.now() - chrono::Duration::days(FINISHED_JOB_KEEP_DAYS);
        let mut deleted = 0;
        loop {
            let n = records::purge_finished(&deps.pool, cutoff, BATCH).await?;
            deleted += n;
            if n < BATCH as u64 {
                break;
            }
        }
        tracing::info!(deleted, "retention sweep: finished job records");
        let now = deps.clock.now();
        let mut exports = 0;
        loop {
            let n = sqlx::query!(
                "delete from export_documents where request_id in (
                     select d.request_id from export_documents d join users u on u.id = d.user_id
                     where d.expires_at <= $1 and not u.legal_hold
                     limit $2)",
                now,
                BATCH
            )
            .execute(&deps.pool)
            .await?
            .rows_affected();
            exports += n;
            if n < BATCH as u64 {
                break;
            }
        }
        tracing::info!(
            deleted = exports,
            "retention sweep: expired export documents"
        );
        let mut conn = deps.pool.acquire().await?;
        sqlx::query!(
            "insert into audit_log (actor, action, outcome, detail) values ('retention', 'retention_sweep', 'done', $1)",
            serde_json::json!({
                "slot": args.slot,
                "finished_job_records": deleted,
                "export_documents": exports,
            })
        )
        .execute(&mut *conn)
        .await?;
        Ok(Outcome::Done)
    }
}
