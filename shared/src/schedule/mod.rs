//! Periodic work: the schedules, declared once, and the pure computation of when they fire.
//!
//! A schedule is a cron expression read in a named IANA zone. Its *slots* are the local
//! wall-clock times the expression matches; every local slot fires exactly once, at an
//! instant chosen by an explicit DST rule (ARCHITECTURE.md, principle 4 and 5):
//! - a slot in the spring-forward gap (02:30 on a day that jumps from 02:00 to 03:00) fires
//!   at the first valid instant after it: the end of the gap;
//! - a slot in the fall-back overlap (01:30 on a day that goes through 01:00-02:00 twice)
//!   fires once, at its first occurrence.
//!
//! So a daily schedule fires once on every local day, and an hourly one has 24 slots on
//! every local day, whatever its length. (On spring-forward day an hourly 02:00 and 03:00
//! resolve to the same instant; the job is keyed by that instant, so they share one run.)
//! Sub-hourly schedules are best declared in UTC, so that fall-back
//! night does not stretch them by an hour.
//!
//! Why not let a cron library do all of it: tokio-cron-scheduler 0.15 freezes a job's UTC
//! offset when the job is created, and croner 3, asked in the zone directly, returns
//! occurrences *before* its start instant when that instant lies in the second pass of an
//! overlap and fires interval schedules twice in the repeated hour. Here croner only
//! enumerates wall-clock slots (it is asked in UTC, where wall clock and instants agree), and
//! [`resolve`] maps each slot to its instant.
//!
//! Here: what a schedule is. [`slots`] holds the pure arithmetic of when it fires, [`overrides`]
//! the `SCHEDULE_<NAME>` environment overrides, [`status`] what the admin endpoint shows. The
//! platform's schedules themselves are declared where they are timed, in
//! `scheduler/src/schedules.rs`; the scheduler decides and enqueues.
use std::str::FromStr;

use chrono::{DateTime, Duration, NaiveDateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;
use serde::Serialize;

use crate::jobs::Periodic;

pub mod overrides;
pub mod slots;
pub mod status;
pub mod triggers;

pub use overrides::with_overrides;
pub use slots::resolve;
pub use status::{FireStatus, ScheduleStatus, status};

/// A late slot younger than this is on time, whatever the catch-up policy.
pub const ON_TIME: Duration = Duration::seconds(60);

/// At most this many slots older than the catch-up window are listed (the rest are counted
/// from the window's edge on): an outage of a year of a per-minute schedule stays cheap.
pub(crate) const EXPIRED_LISTED: usize = 1000;

/// Why a schedule could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error("schedule {name}: invalid cron expression {expr:?}: {reason}")]
    InvalidCron {
        name: String,
        expr: String,
        reason: String,
    },
    #[error("schedule {name}: unknown time zone {zone:?}")]
    InvalidZone { name: String, zone: String },
    #[error("{var}={value:?} names no declared schedule")]
    UnknownOverride { var: String, value: String },
    #[error("unknown schedule {0:?}")]
    UnknownSchedule(String),
    #[error("schedule {0} enqueues no job kind")]
    NoJob(String),
}

/// What happens to slots missed while no scheduler was running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum CatchUp {
    /// Missed slots are skipped; only on-time slots fire.
    Skip,
    /// One run for all missed slots within the window: the latest of them.
    Once,
    /// Every missed slot within the window fires, oldest first.
    All,
}

impl CatchUp {
    pub fn as_str(self) -> &'static str {
        match self {
            CatchUp::Skip => "skip",
            CatchUp::Once => "once",
            CatchUp::All => "all",
        }
    }
}

/// One periodic job: when it fires and what is expected of it.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// Stable name: the key of its fire ledger rows and the `schedule` of the jobs it starts.
    /// Never rename one with fires in flight.
    pub name: String,
    /// The cron expression as written (5 fields, or 6 with seconds first).
    pub expr: String,
    cron: Cron,
    pub tz: Tz,
    pub catch_up: CatchUp,
    /// Missed slots older than this are reported, never fired.
    pub window: Duration,
    /// The dead man's switch: a schedule whose last success is older than this is overdue,
    /// and a fired slot whose job has not succeeded this long after it is a miss.
    pub deadline: Duration,
    /// `false` when switched off by `SCHEDULE_<NAME>=off`.
    pub enabled: bool,
    /// The kind of job each fire enqueues (see [`Schedule::enqueues`]).
    pub job: Option<PeriodicJob>,
}

/// A local slot and the instant it fires at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Slot {
    /// The wall-clock time in the schedule's zone: the identity of the slot.
    pub local: NaiveDateTime,
    /// When it fires.
    pub at: DateTime<Utc>,
}

/// What to do with the slots that came due in an interval (see [`Schedule::due`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Due {
    /// To fire now, oldest first.
    pub fire: Vec<Slot>,
    /// Missed and within the window, not fired by the catch-up policy.
    pub skipped: Vec<Slot>,
    /// Missed and older than the window: reported, never fired (at most 1000 listed).
    pub expired: Vec<Slot>,
    /// Whether more expired slots exist than are listed.
    pub expired_truncated: bool,
}

impl Schedule {
    /// Builds a schedule from its declaration.
    pub fn new(
        name: &str,
        expr: &str,
        zone: &str,
        catch_up: CatchUp,
        window: Duration,
        deadline: Duration,
    ) -> Result<Self, ScheduleError> {
        let cron = parse_cron(name, expr)?;
        let tz = parse_zone(name, zone)?;
        Ok(Schedule {
            name: name.to_string(),
            expr: expr.trim().to_string(),
            cron,
            tz,
            catch_up,
            window: window.max(ON_TIME),
            deadline,
            enabled: true,
            job: None,
        })
    }

    /// The local wall-clock time of `instant` in this schedule's zone.
    pub fn local(&self, instant: DateTime<Utc>) -> NaiveDateTime {
        instant.with_timezone(&self.tz).naive_local()
    }

    /// Makes every fire enqueue a job of kind `A`, built from the slot.
    pub fn enqueues<A: Periodic>(mut self) -> Self {
        self.job = Some(PeriodicJob::of::<A>());
        self
    }
}

/// The kind a schedule enqueues, known by its queue and how its arguments follow from a
/// slot: the scheduler writes the record without naming the type.
#[derive(Clone, Copy)]
pub struct PeriodicJob {
    pub queue: &'static str,
    args: fn(NaiveDateTime, DateTime<Utc>) -> Result<serde_json::Value, serde_json::Error>,
}

impl PeriodicJob {
    pub fn of<A: Periodic>() -> Self {
        PeriodicJob {
            queue: A::QUEUE,
            args: |local, at| serde_json::to_value(A::for_slot(local, at)),
        }
    }

    /// The encoded arguments of the run for `slot`.
    pub fn args_for(&self, slot: &Slot) -> Result<serde_json::Value, serde_json::Error> {
        (self.args)(slot.local, slot.at)
    }
}

impl std::fmt::Debug for PeriodicJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeriodicJob")
            .field("queue", &self.queue)
            .finish()
    }
}

pub(crate) fn parse_cron(name: &str, expr: &str) -> Result<Cron, ScheduleError> {
    Cron::from_str(expr.trim()).map_err(|e| ScheduleError::InvalidCron {
        name: name.to_string(),
        expr: expr.to_string(),
        reason: e.to_string(),
    })
}

pub(crate) fn parse_zone(name: &str, zone: &str) -> Result<Tz, ScheduleError> {
    zone.trim()
        .parse::<Tz>()
        .map_err(|_| ScheduleError::InvalidZone {
            name: name.to_string(),
            zone: zone.to_string(),
        })
}

/// The time zone schedules use unless declared or overridden otherwise.
pub const DEFAULT_ZONE: &str = "America/New_York";

/// The lines of `scheduler plan`: for every enabled schedule its next `count` fires after
/// `from`, as `<name> <local RFC 3339 with offset> <UTC RFC 3339>`.
pub fn plan(schedules: &[Schedule], from: DateTime<Utc>, count: usize) -> Vec<String> {
    let mut lines = Vec::new();
    for schedule in schedules.iter().filter(|s| s.enabled) {
        for slot in schedule.fires_after(from).take(count) {
            lines.push(format!(
                "{} {} {}",
                schedule.name,
                schedule.local_rfc3339(&slot),
                slot.at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
            ));
        }
    }
    lines
}
