//! Which emails a booking write records, and when: the confirmation, cancellation or
//! reschedule for both parties now, their reminders a lead ahead of the lesson, and the
//! retirement of reminders a change made stale. Written in the booking's own transaction
//! (the outbox); the worker's `booking_email` handler sends them.
use crate::{
    jobs::{BookingEmail, EmailKind, JobArgs, Party},
    records,
};

/// Records the `kind` email for both parties of a booking version, due at `run_at`.
pub async fn enqueue_for_both(
    conn: &mut sqlx::PgConnection,
    booking_id: i64,
    booking_version: i32,
    kind: EmailKind,
    run_at: chrono::DateTime<chrono::Utc>,
) -> Result<(), sqlx::Error> {
    enqueue_emails(conn, booking_id, booking_version, &[(kind, run_at)]).await
}

/// Records the `kind` email for one party of a booking version, due at `run_at`: an erased
/// person's bookings tell only the other party.
pub async fn enqueue_for(
    conn: &mut sqlx::PgConnection,
    booking_id: i64,
    booking_version: i32,
    kind: EmailKind,
    party: Party,
    run_at: chrono::DateTime<chrono::Utc>,
) -> Result<(), sqlx::Error> {
    let args = BookingEmail {
        booking_id,
        kind,
        party,
        booking_version,
    };
    crate::outbox::enqueue(conn, &args, run_at).await.map(drop)
}

/// Records the emails of a booking version, each `(kind, due)` for both parties, in one
/// statement.
pub async fn enqueue_emails(
    conn: &mut sqlx::PgConnection,
    booking_id: i64,
    booking_version: i32,
    emails: &[(EmailKind, chrono::DateTime<chrono::Utc>)],
) -> Result<(), sqlx::Error> {
    let jobs: Vec<(BookingEmail, chrono::DateTime<chrono::Utc>)> = emails
        .iter()
        .flat_map(|(kind, due)| {
            Party::BOTH.map(|party| {
                (
                    BookingEmail {
                        booking_id,
                        kind: *kind,
                        party,
                        booking_version,
                    },
                    *due,
                )
            })
        })
        .collect();
    let refs: Vec<(&BookingEmail, chrono::DateTime<chrono::Utc>)> =
        jobs.iter().map(|(a, t)| (a, *t)).collect();
    crate::outbox::enqueue_all(conn, &refs).await.map(drop)
}

/// When the reminders of a lesson at `starts_at` are due, or `None` when that moment has
/// already passed (the confirmation then says the lesson is soon).
pub fn reminder_due(
    starts_at: chrono::DateTime<chrono::Utc>,
    lead: chrono::Duration,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<chrono::DateTime<chrono::Utc>> {
    let due = starts_at - lead;
    (due > now).then_some(due)
}

/// Records `kind` (due now) for both parties and, when the lesson is far enough ahead, its
/// reminders: what every booking write that confirms a time records.
pub async fn enqueue_with_reminders(
    conn: &mut sqlx::PgConnection,
    booking_id: i64,
    booking_version: i32,
    kind: EmailKind,
    starts_at: chrono::DateTime<chrono::Utc>,
    lead: chrono::Duration,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), sqlx::Error> {
    let mut emails = vec![(kind, now)];
    emails.extend(reminder_due(starts_at, lead, now).map(|due| (EmailKind::Reminder, due)));
    enqueue_emails(conn, booking_id, booking_version, &emails).await
}

/// Marks the not-yet-sent reminders of older versions of a booking as skipped. The worker
/// re-checks state anyway; this only keeps them off the queue.
pub async fn retire_reminders(
    conn: &mut sqlx::PgConnection,
    booking_id: i64,
    reason: &str,
) -> Result<u64, sqlx::Error> {
    records::skip_pending_for_booking(
        conn,
        BookingEmail::QUEUE,
        booking_id,
        &serde_json::json!({ "kind": EmailKind::Reminder }),
        reason,
    )
    .await
}
