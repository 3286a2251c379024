//! The daily retention sweep: deletes finished job records past their keep time, in bounded
//! batches (never one huge DELETE).
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
        _args: RetentionSweep,
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
        Ok(Outcome::Done)
    }
}
