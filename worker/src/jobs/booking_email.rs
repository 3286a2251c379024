//! Sends the emails about a booking: confirmation, cancellation, reschedule and reminder,
//! in three steps: [`decide`] (claim the email in the ledger, or find why not to send it),
//! [`compose`] (render the message, with its calendar invitation; no I/O) and [`deliver`]
//! (the SMTP exchange and the ledger's verdict).
//!
//! Idempotent through the email ledger ([`crate::email_ledger`]), keyed by (booking, kind,
//! recipient, booking version): the row is claimed before the SMTP exchange and marked sent
//! after it, so a retried or duplicated delivery sends nothing more. What a message contains
//! (its parts, its invitation) is no part of that key. How a claim held by a dead worker or
//! one past `EMAIL_CLAIM_TIMEOUT_SECS` is taken over is the ledger module's.
//!
//! Reminders check the booking's current state: a cancelled, moved, started or erased
//! booking is skipped, with the reason recorded. Refusals release the claim: transient ones
//! (4xx, connection failures before the message) retry with backoff (`records`); permanent
//! ones (5xx, an address the server cannot take, a message that cannot be built) go straight
//! to the dead letters.
use chrono::{DateTime, Utc};
use shared::{
    config::Config,
    domain::{Booking, BookingStatus, Recipient},
    email::{self, BookingEmailView, Message, render_booking_email},
    jobs::{BookingEmail, EmailKind, Party},
};

use super::{Handler, JobRun};
use crate::{
    Deps,
    email_ledger::{self, Claim, Key, Subject, release},
    error::WorkerError,
    records::Outcome,
};

/// The booking emails' kind: as many at once as the worker's concurrency; a send may take up
/// to 260 s (`shared::email::smtp`), so an attempt is cut off only well after that.
pub struct BookingEmailJob;

impl Handler for BookingEmailJob {
    type Args = BookingEmail;

    fn concurrency(&self, config: &shared::config::Config) -> usize {
        config.worker_concurrency
    }

    fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(600)
    }

    fn work(
        &self,
        deps: &Deps,
        run: JobRun,
        args: BookingEmail,
    ) -> impl Future<Output = Result<Outcome, WorkerError>> + Send {
        handle(deps.clone(), run.id, args)
    }
}

pub async fn handle(deps: Deps, job_id: i64, args: BookingEmail) -> Result<Outcome, WorkerError> {
    let now = deps.clock.now();
    let claimed = match decide(&deps, &args, now).await? {
        Decision::Send(claimed) => claimed,
        Decision::Finished(outcome) => return Ok(outcome),
    };
    let message = match compose(&deps.config, &args, &claimed, now) {
        Ok(message) => message,
        Err(reason) => {
            release(&deps, claimed.ledger_id).await?;
            metrics::counter!("emails_failed_total", "kind" => args.kind.as_str(), "permanent" => "true")
                .increment(1);
            return Ok(Outcome::Dead(reason));
        }
    };
    deliver(&deps, job_id, &args, &claimed, &message, now).await
}

/// What [`decide`] found.
enum Decision {
    /// The email is claimed by this delivery: send it.
    Send(Box<Claimed>),
    /// Nothing to send (already sent, sent by another delivery right now, no longer wanted,
    /// no such booking): the job's outcome.
    Finished(Outcome),
}

/// An email this delivery has claimed in the ledger, with what its message shows.
struct Claimed {
    ledger_id: i64,
    message_id: String,
    booking: Booking,
    recipient: Recipient,
    other: Recipient,
    /// For a reschedule: where the lesson moved from.
    previous_starts_at: Option<DateTime<Utc>>,
}

/// Claims the email in the ledger, or says why this delivery sends nothing: the one guard
/// against sending an email twice.
async fn decide(
    deps: &Deps,
    args: &BookingEmail,
    now: DateTime<Utc>,
) -> Result<Decision, WorkerError> {
    let Some((booking, student, instructor)) = context(deps, args.booking_id).await? else {
        return Ok(Decision::Finished(Outcome::Dead(format!(
            "booking {} does not exist",
            args.booking_id
        ))));
    };
    tracing::Span::current().record("booking_id", booking.id);
    let key = Key {
        subject: Subject::Booking {
            id: booking.id,
            version: args.booking_version,
        },
        kind: args.kind.as_str(),
        recipient_id: match args.party {
            Party::Student => booking.student_id,
            Party::Instructor => booking.instructor_id,
        },
    };
    let offered = email::message_id(args, &deps.config.mail_from);
    // claiming before the skip checks costs a release in the rare case of a skip, and keeps
    // a duplicate delivery of a sent email `done` whatever became of the booking since
    let (ledger_id, message_id) = match email_ledger::claim(deps, &key, &offered).await? {
        Claim::Ours { id, message_id } => (id, message_id),
        Claim::AlreadySent => {
            tracing::info!("email already sent: duplicate delivery ignored");
            return Ok(Decision::Finished(Outcome::Done));
        }
        Claim::InFlight { claimed_at } => {
            // not a failure of this job: its claim's worker is alive, so it runs again when
            // the claim times out, without spending its attempts (should that worker die
            // first, the delivery it was running comes back and takes the claim over at once)
            return Ok(Decision::Finished(Outcome::Defer {
                until: email_ledger::look_again_at(deps, claimed_at, now),
                reason: "another delivery is sending this email".into(),
            }));
        }
    };
    let (recipient, other) = match args.party {
        Party::Student => (student, instructor),
        Party::Instructor => (instructor, student),
    };
    if let Some(reason) = skip_reason(args, &booking, &recipient, now) {
        // rare: changed bookings retire their reminders when they change
        release(deps, ledger_id).await?;
        return Ok(Decision::Finished(skip(args.kind, reason)));
    }
    let previous_starts_at: Option<DateTime<Utc>> = if args.kind == EmailKind::Reschedule {
        sqlx::query_scalar!(
            "select previous_starts_at from booking_moves where booking_id = $1 and version = $2",
            booking.id,
            args.booking_version
        )
        .fetch_optional(&deps.pool)
        .await?
    } else {
        None
    };
    Ok(Decision::Send(Box::new(Claimed {
        ledger_id,
        message_id,
        booking,
        recipient,
        other,
        previous_starts_at,
    })))
}

/// The message of a claimed email, as its recipient will read it: the booking's current
/// state, the time in the recipient's zone, and (but for reminders) the calendar invitation.
/// `Err` is a message that can never be built (a template error, an unusable address).
fn compose(
    config: &Config,
    args: &BookingEmail,
    claimed: &Claimed,
    now: DateTime<Utc>,
) -> Result<Message, String> {
    let Claimed {
        booking,
        recipient,
        other,
        ..
    } = claimed;
    let view = BookingEmailView {
        kind: args.kind,
        booking_id: booking.id,
        booking_version: args.booking_version,
        recipient_name: &recipient.full_name,
        recipient_email: &recipient.email,
        recipient_timezone: &recipient.timezone,
        to_instructor: args.party == Party::Instructor,
        other_party_name: &other.full_name,
        service_name: &booking.service_name,
        duration_minutes: booking.duration_minutes,
        price_cents: booking.price_cents,
        starts_at: booking.starts_at,
        ends_at: booking.ends_at,
        previous_starts_at: claimed.previous_starts_at,
        cancellation_reason: booking.cancellation_reason.as_deref(),
        starts_soon: booking.starts_at - now <= config.reminder_lead(),
        mail_from: &config.mail_from,
        app_url: &config.app_url,
        now,
    };
    let rendered = render_booking_email(&view).map_err(|e| format!("rendering failed: {e}"))?;
    email::compose(
        &config.mail_from,
        &recipient.full_name,
        &recipient.email,
        &claimed.message_id,
        &rendered,
    )
    .map_err(|e| e.to_string())
}

/// Hands the message to the mail server and records the verdict in the ledger: sent (with
/// the job done, in one durable commit), refused (claim released: a retry may send it), or
/// unknown (claim kept: only its timeout lets it be sent again).
async fn deliver(
    deps: &Deps,
    job_id: i64,
    args: &BookingEmail,
    claimed: &Claimed,
    message: &Message,
    now: DateTime<Utc>,
) -> Result<Outcome, WorkerError> {
    match deps.mailer.send(message).await {
        Ok(()) => {
            email_ledger::mark_sent(deps, claimed.ledger_id, job_id).await?;
            metrics::counter!("emails_sent_total", "kind" => args.kind.as_str()).increment(1);
            if args.kind == EmailKind::Reminder {
                metrics::counter!("reminders_sent_total").increment(1);
                let due = claimed.booking.starts_at - deps.config.reminder_lead();
                metrics::histogram!("reminder_lag_seconds")
                    .record((now - due).num_milliseconds().max(0) as f64 / 1000.0);
            }
            Ok(Outcome::Recorded)
        }
        Err(e) => {
            if e.may_have_been_accepted() {
                // the server may hold the message: keep the claim, so that only its timeout
                // (EMAIL_CLAIM_TIMEOUT_SECS, as after a crash mid-send) lets a retry resend it
                tracing::warn!(error = %e, "email outcome unknown; the claim is kept");
                metrics::counter!("emails_outcome_unknown_total", "kind" => args.kind.as_str())
                    .increment(1);
            } else {
                release(deps, claimed.ledger_id).await?;
            }
            metrics::counter!("emails_failed_total", "kind" => args.kind.as_str(), "permanent" => e.is_permanent().to_string())
                .increment(1);
            if args.kind == EmailKind::Reminder {
                metrics::counter!("reminders_failed_total").increment(1);
            }
            Ok(if e.is_permanent() {
                Outcome::Dead(e.to_string())
            } else {
                Outcome::Retry(e.to_string())
            })
        }
    }
}

fn skip(kind: EmailKind, reason: &str) -> Outcome {
    if kind == EmailKind::Reminder {
        metrics::counter!("reminders_skipped_total", "reason" => reason.to_string()).increment(1);
    }
    Outcome::Skipped(reason.to_string())
}

/// Why this email is no longer wanted, if it is not.
fn skip_reason(
    args: &BookingEmail,
    booking: &Booking,
    recipient: &Recipient,
    now: chrono::DateTime<Utc>,
) -> Option<&'static str> {
    if recipient.erased_at.is_some() {
        return Some("recipient erased");
    }
    if args.kind == EmailKind::Reminder {
        if booking.status != BookingStatus::Confirmed {
            return Some("booking not confirmed");
        }
        if booking.version != args.booking_version {
            return Some("booking changed");
        }
        if booking.starts_at <= now {
            return Some("lesson already started");
        }
    }
    None
}

/// The booking and both parties; `None` when the booking does not exist.
async fn context(
    deps: &Deps,
    booking_id: i64,
) -> Result<Option<(Booking, Recipient, Recipient)>, WorkerError> {
    let c = sqlx::query!(
        r#"select b.id, b.student_id, b.instructor_id, b.service_id, b.starts_at, b.ends_at,
                  b.status as "status: BookingStatus", b.service_name, b.duration_minutes,
                  b.price_cents, b.notes, b.cancellation_reason, b.version, b.created_at,
                  b.updated_at,
                  s.email as student_email, s.full_name as student_name,
                  s.timezone as student_timezone, s.erased_at as student_erased_at,
                  i.email as instructor_email, i.full_name as instructor_name,
                  i.timezone as instructor_timezone, i.erased_at as instructor_erased_at
           from bookings b join users s on s.id = b.student_id join users i on i.id = b.instructor_id
           where b.id = $1"#,
        booking_id
    )
    .fetch_optional(&deps.pool)
    .await?;
    Ok(c.map(|c| {
        let booking = Booking {
            id: c.id,
            student_id: c.student_id,
            instructor_id: c.instructor_id,
            service_id: c.service_id,
            starts_at: c.starts_at,
            ends_at: c.ends_at,
            status: c.status,
            service_name: c.service_name,
            duration_minutes: c.duration_minutes,
            price_cents: c.price_cents,
            notes: c.notes,
            cancellation_reason: c.cancellation_reason,
            version: c.version,
            created_at: c.created_at,
            updated_at: c.updated_at,
        };
        let student = Recipient {
            id: booking.student_id,
            email: c.student_email,
            full_name: c.student_name,
            timezone: c.student_timezone,
            erased_at: c.student_erased_at,
        };
        let instructor = Recipient {
            id: booking.instructor_id,
            email: c.instructor_email,
            full_name: c.instructor_name,
            timezone: c.instructor_timezone,
            erased_at: c.instructor_erased_at,
        };
        (booking, student, instructor)
    }))
}
