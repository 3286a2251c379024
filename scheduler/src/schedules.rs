//! The schedules this process runs: the platform's declarations
//! ([`shared::schedule::declared`], where each periodic job is timed) with the environment's
//! `SCHEDULE_<NAME>` / `SCHEDULE_<NAME>_TZ` overrides applied.
use shared::schedule::{self, Schedule, ScheduleError};

/// The declared schedules with the overrides found in `vars`.
pub fn effective(
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<Schedule>, ScheduleError> {
    schedule::with_overrides(schedule::declared(), vars)
}

/// The schedule called `name`.
pub fn find<'a>(schedules: &'a [Schedule], name: &str) -> Result<&'a Schedule, ScheduleError> {
    schedules
        .iter()
        .find(|s| s.name == name)
        .ok_or_else(|| ScheduleError::UnknownSchedule(name.to_string()))
}
