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
    for party in Party::BOTH {
        let args = BookingEmail {
            booking_id,
            kind,
            party,
            booking_version,
        };
        crate::outbox::enqueue(conn, &args, run_at).await?;
    }
    Ok(())
}

/// Schedules the reminders of a booking version `lead` before `starts_at`, unless that moment
/// has already passed (the confirmation then says the lesson is soon). Returns whether it did.
pub async fn schedule_reminders(
    conn: &mut sqlx::PgConnection,
    booking_id: i64,
    booking_version: i32,
    starts_at: chrono::DateTime<chrono::Utc>,
    lead: chrono::Duration,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<bool, sqlx::Error> {
    let due = starts_at - lead;
    if due <= now {
        return Ok(false);
    }
    enqueue_for_both(conn, booking_id, booking_version, EmailKind::Reminder, due).await?;
    Ok(true)
}

/// Marks the not-yet-sent reminders of older versions of a booking as skipped. The worker
/// re-checks state anyway; this only keeps them off the queue.
pub async fn retire_reminders(
    conn: &mut sqlx::PgConnection,
    booking_id: i64,
    reason: &str,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "update jobs set status = 'skipped', last_error = $2, finished_at = now()
         where queue = $3 and status = 'pending'
           and payload->>'kind' = 'reminder' and (payload->>'booking_id')::bigint = $1",
    )
    .bind(booking_id)
    .bind(reason)
    .bind(BookingEmail::QUEUE)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}
