//! The nightly search-analytics rollup of one local day.
//!
//! Not built yet: every run is recorded as skipped with that reason, never as done, so the
//! schedule's dead man's switch does not report a success that did not happen.
use shared::jobs::SearchRollup;

use super::{Handler, JobRun};
use crate::{Deps, error::WorkerError, records::Outcome};

pub struct SearchRollupJob;

impl Handler for SearchRollupJob {
    type Args = SearchRollup;

    fn concurrency(&self, _config: &shared::config::Config) -> usize {
        1
    }

    async fn work(
        &self,
        _deps: &Deps,
        _run: JobRun,
        _args: SearchRollup,
    ) -> Result<Outcome, WorkerError> {
        tracing::Span::current().record("schedule", "search_rollup");
        Ok(Outcome::Skipped(
            "search analytics rollup is not built yet".into(),
        ))
    }
}
