//! The daily retention sweep: deletes what is past its keep time.
use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{JobArgs, Periodic};

/// "Sweep what had expired by `slot`."
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionSweep {
    /// The instant of the slot this run is for (not when it was enqueued).
    pub slot: DateTime<Utc>,
    /// Count what would be deleted, per kind, and delete nothing (an admin's dry run).
    #[serde(default)]
    pub dry_run: bool,
}

impl JobArgs for RetentionSweep {
    const QUEUE: &'static str = "retention_sweep";

    fn dedupe_key(&self) -> String {
        // the scheduled runs' keys as before this field existed
        if self.dry_run {
            format!("retention_sweep:{}:dry", self.slot.to_rfc3339())
        } else {
            format!("retention_sweep:{}", self.slot.to_rfc3339())
        }
    }
}

impl Periodic for RetentionSweep {
    fn for_slot(_local: NaiveDateTime, at: DateTime<Utc>) -> Self {
        RetentionSweep {
            slot: at,
            dry_run: false,
        }
    }
}
