//! The daily retention sweep: deletes what is past its keep time.
use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{JobArgs, Periodic};

/// "Sweep what had expired by `slot`."
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionSweep {
    /// The instant of the slot this run is for (not when it was enqueued).
    pub slot: DateTime<Utc>,
}

impl JobArgs for RetentionSweep {
    const QUEUE: &'static str = "retention_sweep";

    fn dedupe_key(&self) -> String {
        format!("retention_sweep:{}", self.slot.to_rfc3339())
    }
}

impl Periodic for RetentionSweep {
    fn for_slot(_local: NaiveDateTime, at: DateTime<Utc>) -> Self {
        RetentionSweep { slot: at }
    }
}
