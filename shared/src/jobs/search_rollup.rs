//! The search analytics rollup of one local day (in `ANALYTICS_TZ`), enqueued nightly by the
//! scheduler for the previous day and by `POST /api/v1/admin/analytics/rollups` for any day.
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{JobArgs, Periodic};

/// "Roll up the search events of local day `day`."
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchRollup {
    pub day: NaiveDate,
}

impl JobArgs for SearchRollup {
    const QUEUE: &'static str = "search_rollup";

    /// One rollup per day: a second nightly fire for the same day is a no-op. A
    /// recomputation asked for by hand is keyed by its request (`outbox::Record::keyed`).
    fn dedupe_key(&self) -> String {
        format!("search_rollup:{}", self.day)
    }
}

impl Periodic for SearchRollup {
    /// The nightly slot (02:00) rolls up the local day that just ended.
    fn for_slot(local: NaiveDateTime, _at: DateTime<Utc>) -> Self {
        SearchRollup {
            day: local.date().pred_opt().unwrap_or(local.date()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nightly_slot_rolls_up_the_day_before() {
        let local = NaiveDate::from_ymd_opt(2026, 3, 8)
            .and_then(|d| d.and_hms_opt(2, 0, 0))
            .expect("valid");
        let args = SearchRollup::for_slot(local, Utc::now());
        assert_eq!(
            args.day,
            NaiveDate::from_ymd_opt(2026, 3, 7).expect("valid")
        );
    }
}
