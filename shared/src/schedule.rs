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
//! Sub-hourly schedules are best declared in UTC (reminder_sweep is), so that fall-back
//! night does not stretch them by an hour.
//!
//! Why not let a cron library do all of it: tokio-cron-scheduler 0.15 freezes a job's UTC
//! offset when the job is created, and croner 3, asked in the zone directly, returns
//! occurrences *before* its start instant when that instant lies in the second pass of an
//! overlap and fires interval schedules twice in the repeated hour. Here croner only
//! enumerates wall-clock slots (it is asked in UTC, where wall clock and instants agree), and
//! [`resolve`] maps each slot to its instant.
//!
//! The scheduler (`scheduler/`) decides and enqueues; [`status`] is what the admin endpoint
//! shows of it.
use std::str::FromStr;

use chrono::{DateTime, Duration, LocalResult, NaiveDateTime, Offset, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use croner::Cron;
use serde::Serialize;
use sqlx::PgPool;

/// A late slot younger than this is on time, whatever the catch-up policy.
pub const ON_TIME: Duration = Duration::seconds(60);

/// At most this many slots older than the catch-up window are listed (the rest are counted
/// from the window's edge on): an outage of a year of a per-minute schedule stays cheap.
const EXPIRED_LISTED: usize = 1000;

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
    /// Stable name: the `schedule` of the [`crate::jobs::ScheduledRun`] it enqueues and the
    /// key of its fire ledger rows. Never rename one with fires in flight.
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
        })
    }

    /// The local wall-clock time of `instant` in this schedule's zone.
    pub fn local(&self, instant: DateTime<Utc>) -> NaiveDateTime {
        instant.with_timezone(&self.tz).naive_local()
    }

    /// The first local slot at (or, when `inclusive` is false, strictly after) `local`.
    fn next_local(&self, local: NaiveDateTime, inclusive: bool) -> Option<NaiveDateTime> {
        // Asked in UTC, croner walks wall-clock fields with no zone in the way.
        self.cron
            .find_next_occurrence(&local.and_utc(), inclusive)
            .ok()
            .map(|t| t.naive_utc())
    }

    /// The first slot that fires strictly after `instant`.
    pub fn next_after(&self, instant: DateTime<Utc>) -> Option<Slot> {
        // No slot before local(instant) fires after `instant` (resolution is monotonic), but
        // slots after it may fire before it: in the second pass of an overlap, the repeated
        // wall-clock times already fired at their first occurrence.
        // whole seconds: croner keeps sub-second parts and then never matches exactly
        let mut local = self
            .local(instant)
            .with_nanosecond(0)
            .unwrap_or(self.local(instant));
        let mut inclusive = true;
        for _ in 0..100_000 {
            let slot = self.next_local(local, inclusive)?;
            let at = resolve(self.tz, slot);
            if at > instant {
                return Some(Slot { local: slot, at });
            }
            local = slot;
            inclusive = false;
        }
        None
    }

    /// Every slot that fires strictly after `instant`, in order. Two slots may share an
    /// instant (an hourly schedule's 02:00 and 03:00 on spring-forward day): both are yielded.
    pub fn fires_after(&self, instant: DateTime<Utc>) -> impl Iterator<Item = Slot> + '_ {
        let mut next = self.next_after(instant);
        std::iter::from_fn(move || {
            let current = next?;
            next = self.next_local(current.local, false).map(|local| Slot {
                local,
                at: resolve(self.tz, local),
            });
            Some(current)
        })
    }

    /// Decides the slots that fire in `(after, now]` by the catch-up policy: slots younger
    /// than [`ON_TIME`] always fire; older ones within the window fire as the policy says;
    /// older than the window they are only reported.
    pub fn due(&self, after: DateTime<Utc>, now: DateTime<Utc>) -> Due {
        let mut due = Due::default();
        if now <= after {
            return due;
        }
        let cutoff = now - self.window;
        let mut late = Vec::new();
        let mut on_time = Vec::new();
        let mut from = after;
        if after < cutoff {
            for slot in self.fires_after(after) {
                if slot.at >= cutoff || slot.at > now {
                    break;
                }
                if due.expired.len() == EXPIRED_LISTED {
                    due.expired_truncated = true;
                    break;
                }
                due.expired.push(slot);
            }
            // the first slot within the window is the first one at or after the cutoff
            from = cutoff - Duration::nanoseconds(1);
        }
        for slot in self.fires_after(from) {
            if slot.at > now {
                break;
            }
            if slot.at > now - ON_TIME {
                on_time.push(slot);
            } else {
                late.push(slot);
            }
        }
        match self.catch_up {
            CatchUp::All => due.fire.extend(late),
            CatchUp::Skip => due.skipped = late,
            CatchUp::Once if on_time.is_empty() => {
                if let Some(last) = late.pop() {
                    due.fire.push(last);
                }
                due.skipped = late;
            }
            CatchUp::Once => due.skipped = late,
        }
        due.fire.extend(on_time);
        due
    }

    /// The slot's wall-clock time with its offset, as RFC 3339 (`2026-03-08T03:00:00-04:00`).
    pub fn local_rfc3339(&self, slot: &Slot) -> String {
        slot.at.with_timezone(&self.tz).to_rfc3339()
    }
}

/// The instant a local slot fires at: itself when it exists once, its first occurrence when
/// it exists twice (fall back), the end of the gap when it does not exist (spring forward).
pub fn resolve(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => t.with_timezone(&Utc),
        LocalResult::Ambiguous(first, _) => first.with_timezone(&Utc),
        LocalResult::None => end_of_gap(tz, local),
    }
}

/// The transition instant of the gap `local` falls in: the first valid instant after it.
fn end_of_gap(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    let offset_at = |t: DateTime<Utc>| tz.offset_from_utc_datetime(&t.naive_utc()).fix();
    // the offsets in force a day either side: the gap is the jump between them
    let before = offset_at(local.and_utc() - Duration::days(1));
    let after = offset_at(local.and_utc() + Duration::days(1));
    let shift = |offset: chrono::FixedOffset| {
        local.and_utc() - Duration::seconds(offset.local_minus_utc().into())
    };
    // lo shows a wall clock before the gap, hi one after it: the transition lies in (lo, hi]
    let (mut lo, mut hi) = (shift(after), shift(before));
    if lo >= hi {
        // not the one simple jump forward this assumes; the old offset is a safe answer
        return hi;
    }
    // transitions fall on whole seconds: search those
    while hi - lo > Duration::seconds(1) {
        let mid = lo + Duration::seconds((hi - lo).num_seconds() / 2);
        if offset_at(mid) == before {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    hi
}

fn parse_cron(name: &str, expr: &str) -> Result<Cron, ScheduleError> {
    Cron::from_str(expr.trim()).map_err(|e| ScheduleError::InvalidCron {
        name: name.to_string(),
        expr: expr.to_string(),
        reason: e.to_string(),
    })
}

fn parse_zone(name: &str, zone: &str) -> Result<Tz, ScheduleError> {
    zone.trim()
        .parse::<Tz>()
        .map_err(|_| ScheduleError::InvalidZone {
            name: name.to_string(),
            zone: zone.to_string(),
        })
}

/// The time zone schedules use unless declared or overridden otherwise.
pub const DEFAULT_ZONE: &str = "America/New_York";

/// Every periodic job of the platform, as declared (before environment overrides).
pub fn declared() -> Vec<Schedule> {
    let hours = Duration::hours;
    let declare = |name, expr, zone, catch_up, window, deadline| {
        Schedule::new(name, expr, zone, catch_up, window, deadline)
            .unwrap_or_else(|e| panic!("declared schedule: {e}"))
    };
    vec![
        // Whatever reminders came due. In UTC: every minute of every day, with no fall-back
        // hour skipped. After an outage one sweep catches up everything due.
        declare(
            "reminder_sweep",
            "* * * * *",
            "UTC",
            CatchUp::Once,
            hours(1),
            Duration::minutes(10),
        ),
        // The previous local day's search analytics. Rollups upsert by day, so every missed
        // day within a week is rolled up, once each.
        declare(
            "search_rollup",
            "0 2 * * *",
            DEFAULT_ZONE,
            CatchUp::All,
            Duration::days(7),
            hours(26),
        ),
        // Deletes what is past retention; one run catches up any number of missed days.
        declare(
            "retention_sweep",
            "30 3 * * *",
            DEFAULT_ZONE,
            CatchUp::Once,
            Duration::days(7),
            hours(26),
        ),
    ]
}

/// Applies `SCHEDULE_<NAME>` (a cron expression, or `off`) and `SCHEDULE_<NAME>_TZ` (an IANA
/// zone) from `vars` to `schedules`. A `SCHEDULE_*` variable that names no schedule is an
/// error, so a typo does not silently leave the default running.
pub fn with_overrides(
    mut schedules: Vec<Schedule>,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<Schedule>, ScheduleError> {
    let vars: Vec<(String, String)> = vars
        .into_iter()
        .filter(|(k, _)| k.starts_with("SCHEDULE_"))
        .collect();
    for (var, value) in &vars {
        let known = schedules.iter().any(|s| {
            let upper = s.name.to_uppercase();
            *var == format!("SCHEDULE_{upper}") || *var == format!("SCHEDULE_{upper}_TZ")
        });
        if !known {
            return Err(ScheduleError::UnknownOverride {
                var: var.clone(),
                value: value.clone(),
            });
        }
    }
    let get = |key: &str| vars.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
    for schedule in &mut schedules {
        let upper = schedule.name.to_uppercase();
        if let Some(zone) = get(&format!("SCHEDULE_{upper}_TZ")) {
            schedule.tz = parse_zone(&schedule.name, zone)?;
        }
        match get(&format!("SCHEDULE_{upper}")) {
            Some(v) if v.trim().eq_ignore_ascii_case("off") => schedule.enabled = false,
            Some(expr) => {
                schedule.cron = parse_cron(&schedule.name, expr)?;
                schedule.expr = expr.trim().to_string();
            }
            None => {}
        }
    }
    Ok(schedules)
}

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

/// One schedule as the admin endpoint shows it.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
// inert for serializing; tells the OpenAPI document that an answer has no other fields (and
// `required` below: an `Option` here is always present, null when empty)
#[serde(deny_unknown_fields)]
pub struct ScheduleStatus {
    pub name: String,
    pub cron: String,
    pub timezone: String,
    #[cfg_attr(feature = "openapi", schema(value_type = CatchUp))]
    pub catch_up: String,
    pub enabled: bool,
    /// The latest slot fired, if any.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub last_fire: Option<FireStatus>,
    /// When a run of this schedule (slot or manual) last finished successfully.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub last_success_at: Option<DateTime<Utc>>,
    /// The next slot to fire, local with offset and UTC.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub next_fire_local: Option<String>,
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub next_fire_at: Option<DateTime<Utc>>,
    /// The scheduler instance holding the lease, if it is current.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub leader: Option<String>,
}

/// A fired slot and what became of its job.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct FireStatus {
    /// The local wall-clock slot (`2026-03-08T02:00:00`).
    // no offset: not an RFC 3339 date-time
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub slot_local: NaiveDateTime,
    pub slot_at: DateTime<Utc>,
    pub fired_at: DateTime<Utc>,
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub job_id: Option<i64>,
    /// The job's `status` (pending, enqueued, running, done, skipped, dead); `None` once the
    /// job record has been purged.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub outcome: Option<String>,
}

/// The state of every schedule, read from Postgres: the definitions the running scheduler
/// published (else the declared defaults), the fire ledger, the jobs and the leader.
#[tracing::instrument(skip_all)]
pub async fn status(pool: &PgPool, now: DateTime<Utc>) -> Result<Vec<ScheduleStatus>, sqlx::Error> {
    let published: Vec<(String, String, String, String, bool)> = sqlx::query!(
        "select schedule, cron, timezone, catch_up, enabled from schedule_state order by schedule"
    )
    .map(|r| (r.schedule, r.cron, r.timezone, r.catch_up, r.enabled))
    .fetch_all(pool)
    .await?;
    let mut rows: Vec<(String, String, String, String, bool)> = declared()
        .into_iter()
        .filter(|d| !published.iter().any(|p| p.0 == d.name))
        .map(|d| {
            (
                d.name,
                d.expr,
                d.tz.name().to_string(),
                d.catch_up.as_str().to_string(),
                d.enabled,
            )
        })
        .collect();
    rows.extend(published);
    rows.sort_by(|a, b| a.0.cmp(&b.0));

    let leader: Option<String> = sqlx::query_scalar!(
        "select holder from scheduler_leader where expires_at > $1",
        now
    )
    .fetch_optional(pool)
    .await?;

    let mut out = Vec::with_capacity(rows.len());
    for (name, cron, timezone, catch_up, enabled) in rows {
        let last_fire = sqlx::query_as!(
            FireStatus,
            // the job may be gone (retention): its status is nullable through the left join
            r#"select f.slot_local, f.slot_at, f.fired_at, f.job_id, j.status as "outcome?"
                 from schedule_fires f left join jobs j on j.id = f.job_id
                where f.schedule = $1
                order by f.slot_at desc, f.slot_local desc limit 1"#,
            &name
        )
        .fetch_optional(pool)
        .await?;
        let last_success_at = last_success(pool, &name).await?;
        let next = Schedule::new(
            &name,
            &cron,
            &timezone,
            CatchUp::Skip,
            ON_TIME,
            Duration::zero(),
        )
        .ok()
        .filter(|_| enabled)
        .and_then(|s| {
            s.next_after(now)
                .map(|slot| (s.local_rfc3339(&slot), slot.at))
        });
        out.push(ScheduleStatus {
            name,
            cron,
            timezone,
            catch_up,
            enabled,
            last_fire,
            last_success_at,
            next_fire_local: next.as_ref().map(|n| n.0.clone()),
            next_fire_at: next.map(|n| n.1),
            leader: leader.clone(),
        });
    }
    Ok(out)
}

/// When a run of `schedule` (a slot or a manual trigger) last finished successfully.
pub async fn last_success(
    pool: &PgPool,
    schedule: &str,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar!(
        "select max(finished_at) from jobs
          where queue = $1 and status = 'done' and payload->>'schedule' = $2",
        <crate::jobs::ScheduledRun as crate::jobs::JobArgs>::QUEUE,
        schedule
    )
    .fetch_one(pool)
    .await
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;

    use super::*;

    fn daily(expr: &str, zone: &str) -> Schedule {
        Schedule::new(
            "test",
            expr,
            zone,
            CatchUp::All,
            Duration::days(7),
            Duration::hours(26),
        )
        .expect("valid")
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("rfc3339")
            .with_timezone(&Utc)
    }

    /// The next `n` fires after `from`, as local RFC 3339 strings.
    fn fires(s: &Schedule, from: &str, n: usize) -> Vec<String> {
        s.fires_after(utc(from))
            .take(n)
            .map(|slot| s.local_rfc3339(&slot))
            .collect()
    }

    // --- America/New_York 2026: spring forward Mar 8 02:00 -> 03:00, fall back Nov 1 02:00 -> 01:00

    #[test]
    fn new_york_daily_0200_fires_once_every_day_across_spring_forward() {
        let s = daily("0 2 * * *", "America/New_York");
        assert_eq!(
            fires(&s, "2026-03-06T12:00:00Z", 4),
            [
                "2026-03-07T02:00:00-05:00",
                // 02:00 does not exist: the first valid instant after it
                "2026-03-08T03:00:00-04:00",
                "2026-03-09T02:00:00-04:00",
                "2026-03-10T02:00:00-04:00",
            ]
        );
    }

    #[test]
    fn new_york_daily_0200_fires_once_across_fall_back() {
        let s = daily("0 2 * * *", "America/New_York");
        assert_eq!(
            fires(&s, "2026-10-30T12:00:00Z", 4),
            [
                "2026-10-31T02:00:00-04:00",
                // 01:00-02:00 happens twice; 02:00 itself exists once (EST)
                "2026-11-01T02:00:00-05:00",
                "2026-11-02T02:00:00-05:00",
                "2026-11-03T02:00:00-05:00",
            ]
        );
    }

    #[test]
    fn new_york_daily_0130_fires_at_first_occurrence_on_fall_back() {
        let s = daily("30 1 * * *", "America/New_York");
        assert_eq!(
            fires(&s, "2026-10-31T00:00:00Z", 3),
            [
                "2026-10-31T01:30:00-04:00",
                "2026-11-01T01:30:00-04:00",
                "2026-11-02T01:30:00-05:00"
            ]
        );
        // asked during the second pass of the overlap, it does not fire 01:30 again
        let second_pass = utc("2026-11-01T01:10:00-05:00");
        let next = s.next_after(second_pass).expect("a next fire");
        assert_eq!(s.local_rfc3339(&next), "2026-11-02T01:30:00-05:00");
        // and just after the first occurrence the same holds
        let next = s
            .next_after(utc("2026-11-01T01:30:00-04:00"))
            .expect("a next fire");
        assert_eq!(s.local_rfc3339(&next), "2026-11-02T01:30:00-05:00");
    }

    #[test]
    fn new_york_daily_0130_unaffected_by_spring_forward() {
        let s = daily("30 1 * * *", "America/New_York");
        assert_eq!(
            fires(&s, "2026-03-07T00:00:00Z", 3),
            [
                "2026-03-07T01:30:00-05:00",
                "2026-03-08T01:30:00-05:00",
                "2026-03-09T01:30:00-04:00"
            ]
        );
    }

    #[test]
    fn new_york_daily_0230_in_the_gap_fires_at_0300() {
        let s = daily("30 2 * * *", "America/New_York");
        assert_eq!(
            fires(&s, "2026-03-07T12:00:00Z", 2),
            ["2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00"]
        );
    }

    #[test]
    fn new_york_hourly_has_24_fires_on_both_transition_days() {
        let s = daily("0 * * * *", "America/New_York");
        // spring forward: 23 hours long, 24 local slots; 02:00 fires with 03:00
        let day: Vec<Slot> = s
            .fires_after(utc("2026-03-07T23:59:00-05:00"))
            .take(24)
            .collect();
        let locals: Vec<String> = day.iter().map(|x| s.local_rfc3339(x)).collect();
        assert_eq!(
            &locals[..5],
            [
                "2026-03-08T00:00:00-05:00",
                "2026-03-08T01:00:00-05:00",
                "2026-03-08T03:00:00-04:00",
                "2026-03-08T03:00:00-04:00",
                "2026-03-08T04:00:00-04:00",
            ]
        );
        assert_eq!(
            day[2].local,
            NaiveDate::from_ymd_opt(2026, 3, 8)
                .and_then(|d| d.and_hms_opt(2, 0, 0))
                .expect("date")
        );
        assert_eq!(locals[23], "2026-03-08T23:00:00-04:00");
        // fall back: 25 hours long, still 24 local slots; the repeated 01:00 fires once
        let day: Vec<String> = fires(&s, "2026-10-31T23:59:00-04:00", 25);
        assert_eq!(
            &day[..4],
            [
                "2026-11-01T00:00:00-04:00",
                "2026-11-01T01:00:00-04:00",
                "2026-11-01T02:00:00-05:00",
                "2026-11-01T03:00:00-05:00",
            ]
        );
        assert_eq!(day[23], "2026-11-01T23:00:00-05:00");
        assert_eq!(day[24], "2026-11-02T00:00:00-05:00");
    }

    // --- Europe/Berlin 2026: spring forward Mar 29 02:00 -> 03:00, fall back Oct 25 03:00 -> 02:00

    #[test]
    fn berlin_daily_0200_across_both_transitions() {
        let s = daily("0 2 * * *", "Europe/Berlin");
        assert_eq!(
            fires(&s, "2026-03-27T12:00:00Z", 3),
            [
                "2026-03-28T02:00:00+01:00",
                "2026-03-29T03:00:00+02:00",
                "2026-03-30T02:00:00+02:00"
            ]
        );
        // 02:00-03:00 happens twice on Oct 25: first occurrence (CEST) only
        assert_eq!(
            fires(&s, "2026-10-23T12:00:00Z", 3),
            [
                "2026-10-24T02:00:00+02:00",
                "2026-10-25T02:00:00+02:00",
                "2026-10-26T02:00:00+01:00"
            ]
        );
    }

    #[test]
    fn berlin_daily_0130_is_never_ambiguous_or_missing() {
        let s = daily("30 1 * * *", "Europe/Berlin");
        assert_eq!(
            fires(&s, "2026-03-28T12:00:00Z", 2),
            ["2026-03-29T01:30:00+01:00", "2026-03-30T01:30:00+02:00"]
        );
        assert_eq!(
            fires(&s, "2026-10-24T12:00:00Z", 2),
            ["2026-10-25T01:30:00+02:00", "2026-10-26T01:30:00+01:00"]
        );
    }

    #[test]
    fn berlin_hourly_has_24_fires_on_both_transition_days() {
        let s = daily("0 * * * *", "Europe/Berlin");
        let spring = fires(&s, "2026-03-28T23:59:00+01:00", 25);
        assert_eq!(
            &spring[2..4],
            ["2026-03-29T03:00:00+02:00", "2026-03-29T03:00:00+02:00"]
        );
        assert_eq!(spring[24], "2026-03-30T00:00:00+02:00");
        let autumn = fires(&s, "2026-10-24T23:59:00+02:00", 25);
        assert_eq!(
            &autumn[1..4],
            [
                "2026-10-25T01:00:00+02:00",
                "2026-10-25T02:00:00+02:00",
                "2026-10-25T03:00:00+01:00",
            ]
        );
        assert_eq!(autumn[24], "2026-10-26T00:00:00+01:00");
    }

    #[test]
    fn a_daily_schedule_fires_once_per_local_day_all_year() {
        for zone in ["America/New_York", "Europe/Berlin"] {
            for expr in ["0 2 * * *", "30 1 * * *", "30 2 * * *"] {
                let s = daily(expr, zone);
                let slots: Vec<Slot> = s
                    .fires_after(utc("2025-12-31T12:00:00Z"))
                    .take(365)
                    .collect();
                for pair in slots.windows(2) {
                    assert_eq!(
                        pair[1].local.date(),
                        pair[0].local.date().succ_opt().expect("date"),
                        "{zone} {expr}"
                    );
                    assert!(pair[1].at > pair[0].at, "{zone} {expr}");
                    // the fire happens on the slot's own local day
                    assert_eq!(
                        s.local(pair[1].at).date(),
                        pair[1].local.date(),
                        "{zone} {expr}"
                    );
                }
            }
        }
    }

    #[test]
    fn sub_second_instants_find_whole_second_slots() {
        let s = daily("* * * * * *", "UTC");
        let next = s
            .next_after(utc("2026-03-01T12:00:00.250Z"))
            .expect("a next fire");
        assert_eq!(next.at, utc("2026-03-01T12:00:01Z"));
        let due = s.due(
            utc("2026-03-01T12:00:00.250Z"),
            utc("2026-03-01T12:00:02.5Z"),
        );
        assert_eq!(due.fire.len(), 2);
    }

    #[test]
    fn resolve_end_of_gap_is_the_transition_instant() {
        let ny: Tz = "America/New_York".parse().expect("zone");
        let gap = NaiveDate::from_ymd_opt(2026, 3, 8)
            .and_then(|d| d.and_hms_opt(2, 17, 42))
            .expect("date");
        assert_eq!(resolve(ny, gap), utc("2026-03-08T07:00:00Z"));
    }

    #[test]
    fn catch_up_all_fires_every_missed_day_within_the_window() {
        let s = daily("0 2 * * *", "America/New_York");
        let due = s.due(utc("2026-03-01T12:00:00Z"), utc("2026-03-11T12:00:00Z"));
        let days: Vec<String> = due
            .fire
            .iter()
            .map(|x| x.local.date().to_string())
            .collect();
        // the window reaches back 7 days from Mar 11 12:00Z, to Mar 4 07:00 EST
        assert_eq!(
            days,
            [
                "2026-03-05",
                "2026-03-06",
                "2026-03-07",
                "2026-03-08",
                "2026-03-09",
                "2026-03-10",
                "2026-03-11"
            ]
        );
        let expired: Vec<String> = due
            .expired
            .iter()
            .map(|x| x.local.date().to_string())
            .collect();
        assert_eq!(expired, ["2026-03-02", "2026-03-03", "2026-03-04"]);
        assert!(due.skipped.is_empty());
    }

    #[test]
    fn catch_up_once_fires_the_latest_missed_slot_only() {
        let mut s = daily("30 3 * * *", "America/New_York");
        s.catch_up = CatchUp::Once;
        let due = s.due(utc("2026-03-01T12:00:00Z"), utc("2026-03-04T12:00:00Z"));
        assert_eq!(due.fire.len(), 1);
        assert_eq!(due.fire[0].local.date().to_string(), "2026-03-04");
        assert_eq!(due.skipped.len(), 2);
    }

    #[test]
    fn catch_up_skip_fires_only_on_time_slots() {
        let mut s = daily("* * * * *", "UTC");
        s.catch_up = CatchUp::Skip;
        let due = s.due(utc("2026-03-01T12:00:00Z"), utc("2026-03-01T12:10:30Z"));
        assert_eq!(
            due.fire.iter().map(|x| x.at).collect::<Vec<_>>(),
            [utc("2026-03-01T12:10:00Z")]
        );
        assert_eq!(due.skipped.len(), 9);
        // a slot exactly at `after` was handled by the previous evaluation
        let due = s.due(utc("2026-03-01T12:10:00Z"), utc("2026-03-01T12:10:30Z"));
        assert!(due.fire.is_empty());
    }

    #[test]
    fn a_long_outage_lists_a_bounded_number_of_expired_slots() {
        let mut s = daily("* * * * *", "UTC");
        s.catch_up = CatchUp::Once;
        let due = s.due(utc("2025-03-01T12:00:00Z"), utc("2026-03-01T12:00:30Z"));
        assert_eq!(due.expired.len(), EXPIRED_LISTED);
        assert!(due.expired_truncated);
        assert_eq!(due.fire.len(), 1);
    }

    #[test]
    fn overrides_change_cron_zone_or_switch_off() {
        let vars = [
            ("SCHEDULE_RETENTION_SWEEP", "30 1 * * *"),
            ("SCHEDULE_SEARCH_ROLLUP_TZ", "Europe/Berlin"),
            ("SCHEDULE_REMINDER_SWEEP", "off"),
            ("DATABASE_URL", "postgres://x"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let s = with_overrides(declared(), vars).expect("valid overrides");
        let by_name = |n: &str| s.iter().find(|x| x.name == n).expect("declared");
        assert_eq!(by_name("retention_sweep").expr, "30 1 * * *");
        assert_eq!(by_name("search_rollup").tz, chrono_tz::Europe::Berlin);
        assert!(!by_name("reminder_sweep").enabled);
        let lines = plan(&s, utc("2026-01-01T00:00:00Z"), 1);
        assert_eq!(
            lines,
            [
                "search_rollup 2026-01-01T02:00:00+01:00 2026-01-01T01:00:00Z",
                "retention_sweep 2026-01-01T01:30:00-05:00 2026-01-01T06:30:00Z",
            ]
        );
    }

    #[test]
    fn bad_overrides_name_their_variable() {
        let bad = |k: &str, v: &str| {
            with_overrides(declared(), [(k.to_string(), v.to_string())])
                .expect_err("rejected")
                .to_string()
        };
        assert!(bad("SCHEDULE_SEARCH_ROLLUP", "every day").contains("search_rollup"));
        assert!(bad("SCHEDULE_SEARCH_ROLLUP_TZ", "Mars/Olympus").contains("Mars/Olympus"));
        assert!(bad("SCHEDULE_SEARCH_ROLUP", "0 2 * * *").contains("SCHEDULE_SEARCH_ROLUP"));
    }
}
