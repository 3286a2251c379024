//! What the worker's `/metrics` serves: every metric it publishes, described once here, and
//! the series created at zero at start-up for every registered queue and kind.
//!
//! Why zero series: a counter that is born at its first increment hides that increment from
//! `rate()` and `increase()` (Prometheus has no earlier sample to compare with), and an
//! `absent()` alert fires on a healthy worker that has simply had nothing to do. So every
//! series the dashboards and alert rules read exists from the first scrape.
//!
//! Labels: `queue` is a registered kind's stable queue name; `kind` is the bounded sub-kind a
//! job's arguments declare (`JobArgs::metric_kind`: the email kind of a booking email, the
//! queue name otherwise); `state` and `outcome` are fixed vocabularies. Never an id.
use metrics::Unit;
use shared::jobs::EmailKind;

use crate::jobs::Registry;

/// Counters of one job's life, labelled `queue` and `kind`.
pub const JOB_COUNTERS: &[(&str, &str)] = &[
    (
        "jobs_enqueued_total",
        "Jobs handed to Redis by the outbox relay: first pushes, retries due again, and records the reconciler sent back",
    ),
    ("jobs_started_total", "Attempts started"),
    ("jobs_succeeded_total", "Attempts that finished the job"),
    (
        "jobs_skipped_total",
        "Attempts that found nothing left to do (a cancelled booking's reminder, an erased recipient)",
    ),
    (
        "jobs_retried_total",
        "Failed attempts with a retry scheduled (a subset of jobs_failed_total)",
    ),
    (
        "jobs_deferred_total",
        "Attempts put off without spending an attempt (another delivery holds the email's claim)",
    ),
    (
        "jobs_failed_total",
        "Failed attempts: the retried ones and the ones that made a dead letter",
    ),
    (
        "jobs_dead_lettered_total",
        "Jobs that became dead letters: a permanent failure, or out of attempts",
    ),
];

/// The states of `job_records`, as the backlog sampler reads them from Postgres.
pub const RECORD_STATES: &[&str] = &["due", "scheduled", "enqueued", "running", "dead"];

/// Describes every metric and creates the zero series of `registry`'s queues and kinds, and
/// this process's build information.
pub fn register(registry: &Registry) {
    shared::telemetry::build_info("worker");
    describe();
    for kind in registry.kinds() {
        let queue = kind.queue();
        for &label in kind.metric_kinds() {
            for (name, _) in JOB_COUNTERS {
                metrics::counter!(*name, "queue" => queue, "kind" => label).absolute(0);
            }
            // registering is enough: the recorder keeps the handle and renders empty buckets
            let _ =
                metrics::histogram!("job_run_duration_seconds", "queue" => queue, "kind" => label);
            let _ =
                metrics::histogram!("job_wait_duration_seconds", "queue" => queue, "kind" => label);
        }
        metrics::counter!("outbox_relayed_total", "queue" => queue).absolute(0);
        metrics::counter!("jobs_poison_total", "queue" => queue).absolute(0);
        metrics::counter!("jobs_duplicate_deliveries_total", "queue" => queue).absolute(0);
        let _ = metrics::histogram!("outbox_relay_lag_seconds", "queue" => queue);
        for &state in RECORD_STATES {
            metrics::gauge!("job_records", "queue" => queue, "state" => state).set(0.0);
        }
        metrics::gauge!("job_oldest_waiting_age_seconds", "queue" => queue).set(0.0);
        metrics::gauge!("outbox_lag_seconds", "queue" => queue).set(0.0);
    }
    for name in [
        "jobs_unroutable_total",
        "outbox_relay_errors_total",
        "reconciler_requeued_total",
        "worker_restarts_total",
        "reminders_sent_total",
        "reminders_failed_total",
    ] {
        metrics::counter!(name).absolute(0);
    }
    // published by the booking_email handler, per email kind
    for kind in EmailKind::ALL.map(EmailKind::as_str) {
        metrics::counter!("emails_sent_total", "kind" => kind).absolute(0);
        metrics::counter!("emails_outcome_unknown_total", "kind" => kind).absolute(0);
        for permanent in ["true", "false"] {
            metrics::counter!("emails_failed_total", "kind" => kind, "permanent" => permanent)
                .absolute(0);
        }
    }
    let _ = metrics::histogram!("reminder_lag_seconds");
}

fn describe() {
    for (name, help) in JOB_COUNTERS {
        metrics::describe_counter!(*name, Unit::Count, *help);
    }
    metrics::describe_histogram!(
        "job_run_duration_seconds",
        Unit::Seconds,
        "How long one attempt ran, whatever its outcome"
    );
    metrics::describe_histogram!(
        "job_wait_duration_seconds",
        Unit::Seconds,
        "How long a job waited from due (its run_at) to the start of its attempt"
    );
    metrics::describe_gauge!(
        "job_records",
        "Unfinished job records and dead letters in Postgres (the truth), by state: due (pending, \
         waiting for the relay), scheduled (pending, due later), enqueued (in Redis, not started), \
         running, dead"
    );
    metrics::describe_gauge!(
        "job_oldest_waiting_age_seconds",
        Unit::Seconds,
        "Age since due of the oldest job that is due and not started (relayed or not); 0 when none"
    );
    metrics::describe_gauge!(
        "outbox_lag_seconds",
        Unit::Seconds,
        "Age since due of the oldest record the relay has not yet handed to Redis; 0 when none"
    );
    metrics::describe_counter!(
        "outbox_relayed_total",
        Unit::Count,
        "Records handed to Redis by this worker's relay"
    );
    metrics::describe_histogram!(
        "outbox_relay_lag_seconds",
        Unit::Seconds,
        "How long after it was due the relay handed a record to Redis"
    );
    metrics::describe_counter!(
        "outbox_relay_errors_total",
        Unit::Count,
        "Relay rounds that failed (their records stay in the outbox)"
    );
    metrics::describe_counter!(
        "jobs_unroutable_total",
        Unit::Count,
        "Due records dead-lettered because no worker registered their queue"
    );
    metrics::describe_counter!(
        "jobs_poison_total",
        Unit::Count,
        "Redis tasks without a job id, dropped to the Redis dead set"
    );
    metrics::describe_counter!(
        "jobs_duplicate_deliveries_total",
        Unit::Count,
        "Deliveries of jobs already finished: nothing done"
    );
    metrics::describe_counter!(
        "reconciler_requeued_total",
        Unit::Count,
        "Records sent back to the outbox because Redis no longer held them"
    );
    metrics::describe_counter!(
        "worker_restarts_total",
        Unit::Count,
        "apalis workers restarted after a backend error"
    );
    metrics::describe_gauge!(
        "queue_waiting",
        "Redis' view: tasks ready or scheduled in the queue"
    );
    metrics::describe_gauge!(
        "queue_in_flight",
        "Redis' view: tasks fetched by live workers"
    );
    metrics::describe_gauge!(
        "queue_workers",
        "Redis' view: workers registered on the queue"
    );
    metrics::describe_gauge!(
        "queue_stale_workers",
        "Redis' view: registered workers whose heartbeat is older than three beats"
    );
    metrics::describe_counter!(
        "emails_sent_total",
        Unit::Count,
        "Emails accepted by the SMTP server, by email kind"
    );
    metrics::describe_counter!(
        "emails_failed_total",
        Unit::Count,
        "Email attempts refused or never handed over; permanent=true makes a dead letter"
    );
    metrics::describe_counter!(
        "emails_outcome_unknown_total",
        Unit::Count,
        "Emails handed over whose verdict never came (resent with the same Message-ID after \
         EMAIL_CLAIM_TIMEOUT_SECS)"
    );
    metrics::describe_counter!("reminders_sent_total", Unit::Count, "Reminder emails sent");
    metrics::describe_counter!(
        "reminders_failed_total",
        Unit::Count,
        "Reminder email attempts that failed"
    );
    metrics::describe_counter!(
        "reminders_skipped_total",
        Unit::Count,
        "Reminders no longer wanted, by reason"
    );
    metrics::describe_histogram!(
        "reminder_lag_seconds",
        Unit::Seconds,
        "How late after its due time a reminder was sent"
    );
    metrics::describe_gauge!(
        "redis_up",
        "1 when the worker's last INFO of Redis answered"
    );
    metrics::describe_gauge!(
        "redis_memory_used_bytes",
        Unit::Bytes,
        "Redis used_memory (INFO memory)"
    );
    metrics::describe_gauge!(
        "redis_memory_max_bytes",
        Unit::Bytes,
        "Redis maxmemory; 0 means no limit (set one: see the README's production guide)"
    );
    metrics::describe_gauge!(
        "redis_connected_clients",
        "Redis connected_clients (INFO clients)"
    );
    metrics::describe_counter!(
        "redis_commands_processed_total",
        Unit::Count,
        "Redis total_commands_processed (INFO stats): its rate is Redis' ops/s"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_job_series_exists_at_zero_and_described_for_every_registered_kind() {
        let handle = shared::telemetry::init_metrics();
        let registry = crate::jobs::registry();
        register(&registry);
        let text = handle.render();
        for kind in registry.kinds() {
            for label in kind.metric_kinds() {
                let labels = format!("queue=\"{}\",kind=\"{label}\"", kind.queue());
                for (name, help) in JOB_COUNTERS {
                    assert!(
                        text.contains(&format!("{name}{{{labels}}} ")),
                        "{name}{{{labels}}}"
                    );
                    assert!(
                        text.contains(&format!("# HELP {name} {help}")),
                        "{name} help"
                    );
                }
                for histogram in ["job_run_duration_seconds", "job_wait_duration_seconds"] {
                    assert!(
                        text.contains(&format!("{histogram}_count{{{labels}}} ")),
                        "{histogram}{{{labels}}}"
                    );
                }
            }
            for state in RECORD_STATES {
                let series = format!(
                    "job_records{{queue=\"{}\",state=\"{state}\"}} ",
                    kind.queue()
                );
                assert!(text.contains(&series), "{series}");
            }
        }
        assert!(text.contains("instainstru_build_info{binary=\"worker\""));
    }
}
