//! The platform's periodic work, timed: each schedule with its cron expression, zone,
//! catch-up policy, deadline and the job kind each fire enqueues; and the schedules this
//! process runs (the declarations with the `SCHEDULE_<NAME>` / `SCHEDULE_<NAME>_TZ`
//! overrides applied).
use chrono::Duration;
use shared::{
    jobs::{RetentionSweep, SearchRollup},
    schedule::{self, CatchUp, DEFAULT_ZONE, Schedule, ScheduleError},
};

/// Schedules that existed once. Their override variables are still accepted (and change
/// nothing), so a deployment that sets one keeps starting. `reminder_sweep` only repeated
/// the relay's own scan of due records (every second, woken on commit).
pub const RETIRED: &[&str] = &["reminder_sweep"];

/// Every periodic job of the platform, as declared (before environment overrides).
pub fn declared() -> Vec<Schedule> {
    let hours = Duration::hours;
    let declare = |name, expr, zone, catch_up, window, deadline| {
        Schedule::new(name, expr, zone, catch_up, window, deadline)
            .unwrap_or_else(|e| panic!("declared schedule: {e}"))
    };
    vec![
        // The previous local day's search analytics. Rollups upsert by day, so every missed
        // day within a week is rolled up, once each.
        declare(
            "search_rollup",
            "0 2 * * *",
            DEFAULT_ZONE,
            CatchUp::All,
            Duration::days(7),
            hours(26),
        )
        .enqueues::<SearchRollup>(),
        // Deletes what is past retention; one run catches up any number of missed days.
        declare(
            "retention_sweep",
            "30 3 * * *",
            DEFAULT_ZONE,
            CatchUp::Once,
            Duration::days(7),
            hours(26),
        )
        .enqueues::<RetentionSweep>(),
    ]
}

/// The declared schedules with the overrides found in `vars`.
pub fn effective(
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<Schedule>, ScheduleError> {
    schedule::with_overrides(declared(), RETIRED, vars)
}

/// The schedule called `name`.
pub fn find<'a>(schedules: &'a [Schedule], name: &str) -> Result<&'a Schedule, ScheduleError> {
    schedules
        .iter()
        .find(|s| s.name == name)
        .ok_or_else(|| ScheduleError::UnknownSchedule(name.to_string()))
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};
    use shared::schedule::plan;

    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("rfc3339")
            .with_timezone(&Utc)
    }

    #[test]
    fn every_declared_schedule_enqueues_a_kind() {
        for s in declared() {
            assert!(s.job.is_some(), "{} enqueues nothing", s.name);
        }
    }

    #[test]
    fn overrides_change_cron_zone_or_switch_off() {
        let vars = [
            ("SCHEDULE_RETENTION_SWEEP", "30 1 * * *"),
            ("SCHEDULE_SEARCH_ROLLUP_TZ", "Europe/Berlin"),
            // retired, still accepted
            ("SCHEDULE_REMINDER_SWEEP", "off"),
            ("DATABASE_URL", "postgres://x"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let s = effective(vars).expect("valid overrides");
        let by_name = |n: &str| s.iter().find(|x| x.name == n).expect("declared");
        assert_eq!(by_name("retention_sweep").expr, "30 1 * * *");
        assert_eq!(by_name("search_rollup").tz, chrono_tz::Europe::Berlin);
        assert!(s.iter().all(|x| x.name != "reminder_sweep"));
        let off = effective([("SCHEDULE_RETENTION_SWEEP".to_string(), "off".to_string())])
            .expect("valid");
        assert!(!find(&off, "retention_sweep").expect("declared").enabled);
        let lines = plan(&s, utc("2026-01-01T00:00:00Z"), 1);
        assert_eq!(
            lines,
            [
                "search_rollup 2026-01-01T02:00:00+01:00 2026-01-01T01:00:00Z",
                "retention_sweep 2026-01-01T01:30:00-05:00 2026-01-01T06:30:00Z",
            ]
        );
    }

    /// Issue 12: the sweep runs at 03:30 New York time on every local day. 03:30 is outside
    /// both DST transitions (the spring gap is 02:00-03:00, the autumn overlap 01:00-02:00),
    /// so it fires once a day at 03:30 local, its UTC instant moving with the offset; the
    /// zone is the schedule's own, never the process's TZ.
    #[test]
    fn the_retention_sweep_fires_at_0330_new_york_on_every_local_day() {
        let schedules = declared();
        let sweep = find(&schedules, "retention_sweep").expect("declared");
        assert_eq!(sweep.expr, "30 3 * * *");
        assert_eq!(sweep.tz, chrono_tz::America::New_York);
        assert_eq!(sweep.catch_up, CatchUp::Once);
        let fires = |from: &str| {
            sweep
                .fires_after(utc(from))
                .take(3)
                .map(|slot| {
                    format!(
                        "{} {}",
                        sweep.local_rfc3339(&slot),
                        slot.at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
                    )
                })
                .collect::<Vec<_>>()
        };
        // spring forward on Sunday 8 March 2026
        assert_eq!(
            fires("2026-03-07T00:00:00Z"),
            [
                "2026-03-07T03:30:00-05:00 2026-03-07T08:30:00Z",
                "2026-03-08T03:30:00-04:00 2026-03-08T07:30:00Z",
                "2026-03-09T03:30:00-04:00 2026-03-09T07:30:00Z",
            ]
        );
        // fall back on Sunday 1 November 2026
        assert_eq!(
            fires("2026-10-31T00:00:00Z"),
            [
                "2026-10-31T03:30:00-04:00 2026-10-31T07:30:00Z",
                "2026-11-01T03:30:00-05:00 2026-11-01T08:30:00Z",
                "2026-11-02T03:30:00-05:00 2026-11-02T08:30:00Z",
            ]
        );
        // what `scheduler plan` prints with no overrides
        assert_eq!(
            plan(&schedules, utc("2026-01-01T00:00:00Z"), 1),
            [
                "search_rollup 2026-01-01T02:00:00-05:00 2026-01-01T07:00:00Z",
                "retention_sweep 2026-01-01T03:30:00-05:00 2026-01-01T08:30:00Z",
            ]
        );
    }

    #[test]
    fn bad_overrides_name_their_variable() {
        let bad = |k: &str, v: &str| {
            effective([(k.to_string(), v.to_string())])
                .expect_err("rejected")
                .to_string()
        };
        assert!(bad("SCHEDULE_SEARCH_ROLLUP", "every day").contains("search_rollup"));
        assert!(bad("SCHEDULE_SEARCH_ROLLUP_TZ", "Mars/Olympus").contains("Mars/Olympus"));
        assert!(bad("SCHEDULE_SEARCH_ROLUP", "0 2 * * *").contains("SCHEDULE_SEARCH_ROLUP"));
    }
}
