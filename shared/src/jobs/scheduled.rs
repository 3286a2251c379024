//! A run of a periodic schedule (the nightly rollup, the retention sweep, ...), enqueued by
//! the scheduler for one local slot.
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::JobArgs;

/// "Run schedule `schedule` for the slot that fell at `slot`."
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduledRun {
    pub schedule: String,
    /// The instant of the slot this run is for (not when it was enqueued).
    pub slot: DateTime<Utc>,
    /// Set for runs started by hand (`scheduler trigger`), which never collide with slots.
    #[serde(default)]
    pub manual_key: Option<String>,
}

impl JobArgs for ScheduledRun {
    const QUEUE: &'static str = "scheduled_run";

    fn dedupe_key(&self) -> String {
        match &self.manual_key {
            Some(key) => format!("scheduled_run:{}:manual:{key}", self.schedule),
            None => format!("scheduled_run:{}:{}", self.schedule, self.slot.to_rfc3339()),
        }
    }
}
