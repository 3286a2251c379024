//! When a schedule fires: the pure arithmetic from a cron expression read in a zone to the
//! instants its local slots fire at, with the DST rules of the module above, and the
//! catch-up decision over an interval. No I/O: a function of (schedule, instant).
use chrono::{DateTime, Duration, LocalResult, NaiveDateTime, Offset, TimeZone, Timelike, Utc};
use chrono_tz::Tz;

use super::{CatchUp, Due, EXPIRED_LISTED, ON_TIME, Schedule, Slot};

impl Schedule {
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
}
