//! The search analytics rollup of one local day (in `ANALYTICS_TZ`), enqueued nightly by the
//! scheduler for the previous day and by `POST /api/v1/admin/analytics/rollups` for any day.
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use super::JobArgs;

/// "Compute the search numbers of local day `day`."
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchRollup {
    pub day: NaiveDate,
}

impl JobArgs for SearchRollup {
    const QUEUE: &'static str = "search_rollup";

    /// One rollup per day: a second nightly fire for the same day is a no-op. A
    /// recomputation asked for by hand adds a suffix (`outbox::enqueue_with_key_suffix`).
    fn dedupe_key(&self) -> String {
        format!("search_rollup:{}", self.day)
    }
}
