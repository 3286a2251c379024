//! Emails about a booking: confirmation, cancellation, reschedule and reminder, one job per
//! recipient.
use serde::{Deserialize, Serialize};

use super::JobArgs;

/// Which email about a booking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EmailKind {
    Confirmation,
    Cancellation,
    Reschedule,
    Reminder,
}

impl EmailKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EmailKind::Confirmation => "confirmation",
            EmailKind::Cancellation => "cancellation",
            EmailKind::Reschedule => "reschedule",
            EmailKind::Reminder => "reminder",
        }
    }
}

/// Which side of the booking receives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Party {
    Student,
    Instructor,
}

impl Party {
    pub const BOTH: [Party; 2] = [Party::Student, Party::Instructor];

    pub fn as_str(self) -> &'static str {
        match self {
            Party::Student => "student",
            Party::Instructor => "instructor",
        }
    }
}

/// "Send the `kind` email for booking `booking_id` (as of `booking_version`) to its `party`."
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BookingEmail {
    pub booking_id: i64,
    pub kind: EmailKind,
    pub party: Party,
    /// The booking version the email is about; a later change makes it stale.
    pub booking_version: i32,
}

impl JobArgs for BookingEmail {
    const QUEUE: &'static str = "booking_email";

    fn dedupe_key(&self) -> String {
        format!(
            "booking_email:{}:{}:{}:v{}",
            self.booking_id,
            self.kind.as_str(),
            self.party.as_str(),
            self.booking_version
        )
    }
}

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
    let done = sqlx::query!(
        "update jobs set status = 'skipped', last_error = $2, finished_at = now()
         where queue = $3 and status = 'pending'
           and payload->>'kind' = 'reminder' and (payload->>'booking_id')::bigint = $1",
        booking_id,
        reason,
        BookingEmail::QUEUE
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}
