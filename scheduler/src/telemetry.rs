//! What the scheduler's `/metrics` serves: every metric it publishes, described once here,
//! and the counters of every schedule created at zero at start-up (a counter born at its
//! first increment hides that increment from `increase()`: the first missed slot would
//! never alert).
//!
//! Every replica publishes the dead man's switch gauges (they read Postgres), the leader
//! only the fires: dashboards and alerts take `max` or `sum` over instances.
use metrics::Unit;
use shared::schedule::Schedule;

/// Describes every metric and creates the zero series of `schedules`, and this process's
/// build information.
pub fn register(schedules: &[Schedule]) {
    shared::telemetry::build_info("scheduler");
    describe();
    metrics::counter!("scheduler_leader_changes_total").absolute(0);
    metrics::gauge!("scheduler_is_leader").set(0.0);
    for schedule in schedules {
        let name = schedule.name.clone();
        for counter in [
            "schedule_fires_total",
            "schedule_duplicate_fires_total",
            "schedule_slots_skipped_total",
            "scheduler_errors_total",
        ] {
            metrics::counter!(counter, "schedule" => name.clone()).absolute(0);
        }
        for reason in ["deadline", "expired"] {
            metrics::counter!("schedule_misses_total", "schedule" => name.clone(), "reason" => reason)
                .absolute(0);
        }
    }
}

fn describe() {
    metrics::describe_counter!(
        "schedule_fires_total",
        Unit::Count,
        "Slots fired (each a job in the outbox), counted by the replica that fired them"
    );
    metrics::describe_gauge!(
        "schedule_last_fire_timestamp_seconds",
        Unit::Seconds,
        "When the latest slot this replica fired was due (Unix time)"
    );
    metrics::describe_counter!(
        "schedule_duplicate_fires_total",
        Unit::Count,
        "Slots found already in the fire ledger (another leader fired them): nothing done"
    );
    metrics::describe_counter!(
        "schedule_slots_skipped_total",
        Unit::Count,
        "Missed slots within the catch-up window that the schedule's policy did not fire"
    );
    metrics::describe_counter!(
        "schedule_misses_total",
        Unit::Count,
        "Slots missed: reason=deadline, fired but not succeeded by the deadline; \
         reason=expired, older than the catch-up window and never fired"
    );
    metrics::describe_gauge!(
        "schedule_last_success_timestamp_seconds",
        Unit::Seconds,
        "When a run of the schedule last finished with status done (Unix time); absent until one has"
    );
    metrics::describe_gauge!(
        "schedule_deadline_seconds",
        Unit::Seconds,
        "How old the last success may get before the schedule is overdue"
    );
    metrics::describe_gauge!(
        "schedule_enabled",
        "0 when the schedule is switched off with SCHEDULE_<NAME>=off"
    );
    metrics::describe_gauge!(
        "schedule_next_fire_timestamp_seconds",
        Unit::Seconds,
        "When the schedule fires next (Unix time)"
    );
    metrics::describe_gauge!(
        "scheduler_is_leader",
        "1 on the replica holding the lease (the one that fires)"
    );
    metrics::describe_counter!(
        "scheduler_leader_changes_total",
        Unit::Count,
        "Times this replica took the lease; summed over replicas, the leader changes"
    );
    metrics::describe_counter!(
        "scheduler_errors_total",
        Unit::Count,
        "Evaluations of a schedule that failed (retried on the next tick)"
    );
}
