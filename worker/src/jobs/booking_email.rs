//! Sends the emails about a booking: confirmation, cancellation, reschedule and reminder.
//!
//! Idempotent through the email ledger, keyed by (booking, kind, recipient, booking version):
//! the row is claimed before the SMTP exchange and marked sent after it, so a retried or
//! duplicated delivery sends nothing more. A claim younger than `EMAIL_CLAIM_TIMEOUT_SECS`
//! means another delivery may be sending right now: retry later. An older one means a send
//! was cut off (a worker died mid-send, or the SMTP server's verdict never came): take it
//! over and send again with the same Message-ID, the one window in which a receiver can see
//! a duplicate (and can drop it by that id).
//!
//! Reminders check the booking's current state: a cancelled, moved, started or erased
//! booking is skipped, with the reason recorded. Refusals release the claim: transient ones
//! (4xx, connection failures before the message) retry with backoff (`records`); permanent
//! ones (5xx, an address the server cannot take) go straight to the dead letters.
use chrono::Utc;
use shared::{
    domain::{Booking, BookingStatus, Recipient},
    email::{BookingEmailView, render_booking_email},
    jobs::{BookingEmail, EmailKind, Party},
};

use super::{Handler, JobRun};
use crate::{Deps, error::WorkerError, records::Outcome};

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
    let message_id = format!(
        "<booking-{}-{}-{}-v{}@instainstru>",
        args.booking_id,
        args.kind.as_str(),
        args.party.as_str(),
        args.booking_version
    );
    let Some((claim, booking, student, instructor)) =
        claim_with_context(&deps, &args, &message_id).await?
    else {
        return Ok(Outcome::Dead(format!(
            "booking {} does not exist",
            args.booking_id
        )));
    };
    tracing::Span::current().record("booking_id", booking.id);
    let ledger_id = match claim {
        Claim::Ours(id) => id,
        Claim::AlreadySent => {
            tracing::info!("email already sent: duplicate delivery ignored");
            return Ok(Outcome::Done);
        }
        Claim::InFlight { claimed_at } => {
            // not a failure of this job: it may run again once that claim can be taken over,
            // however long the claim timeout is, without spending its attempts
            let soon = now + chrono::Duration::seconds(2);
            let until = match claimed_at {
                Some(at) => (at
                    + chrono::Duration::seconds(deps.config.email_claim_timeout_secs as i64 + 1))
                .max(soon),
                // claimed at this very moment: look again shortly, when the claim is visible
                None => soon,
            };
            return Ok(Outcome::Defer {
                until,
                reason: "another delivery is sending this email".into(),
            });
        }
    };
    let (recipient, other) = match args.party {
        Party::Student => (student, instructor),
        Party::Instructor => (instructor, student),
    };
    if let Some(reason) = skip_reason(&args, &booking, &recipient, now) {
        // rare: changed bookings retire their reminders when they change
        release(&deps, ledger_id).await?;
        return Ok(skip(args.kind, reason));
    }

    let previous_starts_at: Option<chrono::DateTime<Utc>> = if args.kind == EmailKind::Reschedule {
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
    let view = BookingEmailView {
        kind: args.kind,
        recipient_name: &recipient.full_name,
        recipient_timezone: &recipient.timezone,
        to_instructor: args.party == Party::Instructor,
        other_party_name: &other.full_name,
        service_name: &booking.service_name,
        duration_minutes: booking.duration_minutes,
        price_cents: booking.price_cents,
        starts_at: booking.starts_at,
        previous_starts_at,
        cancellation_reason: booking.cancellation_reason.as_deref(),
        starts_soon: booking.starts_at - now <= deps.config.reminder_lead(),
    };
    let email = match render_booking_email(&view) {
        Ok(email) => email,
        Err(e) => {
            release(&deps, ledger_id).await?;
            return Ok(Outcome::Dead(format!("rendering failed: {e}")));
        }
    };
    let sent = deps
        .mailer
        .send(
            &deps.config.mail_from,
            &recipient.full_name,
            &recipient.email,
            &message_id,
            &email,
        )
        .await;
    match sent {
        Ok(()) => {
            mark_sent(&deps, ledger_id, job_id).await?;
            metrics::counter!("emails_sent_total", "kind" => args.kind.as_str()).increment(1);
            if args.kind == EmailKind::Reminder {
                metrics::counter!("reminders_sent_total").increment(1);
                let due = booking.starts_at - deps.config.reminder_lead();
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
                release(&deps, ledger_id).await?;
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

enum Claim {
    /// The ledger row (by id) is ours to send.
    Ours(i64),
    AlreadySent,
    /// Another delivery claimed it at `claimed_at` and has not recorded it sent; `None` when
    /// that claim was inserted concurrently with this statement (invisible to it).
    InFlight {
        claimed_at: Option<chrono::DateTime<Utc>>,
    },
}

/// Claims this email's ledger row and reads the booking and both parties, in one durable
/// round trip; `None` when the booking does not exist.
///
/// The claim: insert the row; or take over a claim abandoned longer than
/// `EMAIL_CLAIM_TIMEOUT_SECS`; or report the row's status. It is durable before the SMTP
/// exchange starts: a claim lost in a Postgres crash would let the job, reverted by the same
/// crash, send the email again. Claiming before the skip checks costs a release in the rare
/// case of a skip, and saves a round trip on every email.
async fn claim_with_context(
    deps: &Deps,
    args: &BookingEmail,
    message_id: &str,
) -> Result<Option<(Claim, Booking, Recipient, Recipient)>, WorkerError> {
    let c = sqlx::query!(
        r#"with ctx as (
            select b.*, s.email as student_email, s.full_name as student_name,
                   s.timezone as student_timezone, s.erased_at as student_erased_at,
                   i.email as instructor_email, i.full_name as instructor_name,
                   i.timezone as instructor_timezone, i.erased_at as instructor_erased_at
            from bookings b join users s on s.id = b.student_id join users i on i.id = b.instructor_id
            where b.id = $1),
         key as (
            select id as booking_id, $3::text as kind,
                   case when $2 = 'student' then student_id else instructor_id end as recipient_id,
                   $4::int as booking_version
            from ctx),
         inserted as (
            insert into email_ledger (booking_id, kind, recipient_id, booking_version, message_id)
            select booking_id, kind, recipient_id, booking_version, $5 from key
            on conflict do nothing returning id),
         existing as (
            select l.id, l.status, l.claimed_at
            from email_ledger l join key k using (booking_id, kind, recipient_id, booking_version)),
         taken as (
            update email_ledger l set claimed_at = now() from existing e
            where l.id = e.id and not exists (select 1 from inserted)
              and l.status = 'sending' and l.claimed_at < now() - make_interval(secs => $6)
            returning l.id)
         select ctx.id as "id!", ctx.student_id as "student_id!", ctx.instructor_id as "instructor_id!",
                ctx.service_id as "service_id!", ctx.starts_at as "starts_at!", ctx.ends_at as "ends_at!",
                ctx.status as "status!: BookingStatus", ctx.service_name as "service_name!",
                ctx.duration_minutes as "duration_minutes!", ctx.price_cents as "price_cents!",
                ctx.notes, ctx.cancellation_reason, ctx.version as "version!",
                ctx.created_at as "created_at!", ctx.updated_at as "updated_at!",
                ctx.student_email as "student_email!", ctx.student_name as "student_name!",
                ctx.student_timezone as "student_timezone!", ctx.student_erased_at,
                ctx.instructor_email as "instructor_email!", ctx.instructor_name as "instructor_name!",
                ctx.instructor_timezone as "instructor_timezone!", ctx.instructor_erased_at,
                coalesce((select id from inserted), (select id from taken)) as ledger_id,
                case when exists (select 1 from inserted) or exists (select 1 from taken) then 'ours'
                     else (select status from existing) end as verdict,
                (select claimed_at from existing) as claimed_at
         from ctx"#,
        args.booking_id,
        args.party.as_str(),
        args.kind.as_str(),
        args.booking_version,
        message_id,
        deps.config.email_claim_timeout_secs as f64
    )
    .fetch_optional(&deps.durable)
    .await?;
    Ok(c.map(|c| {
        let claim = match (c.ledger_id, c.verdict.as_deref()) {
            (Some(id), Some("ours")) => Claim::Ours(id),
            (_, Some("sent")) => Claim::AlreadySent,
            _ => Claim::InFlight {
                claimed_at: c.claimed_at,
            },
        };
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
        (claim, booking, student, instructor)
    }))
}

/// Records that the SMTP server accepted the email, and the job as done, in one durable
/// commit. This knowledge exists only in this process until it is written, so a database
/// outage is waited out here (up to two minutes) rather than dropped: dropping it would make
/// a retry send the email again. The worker's other writes commit asynchronously
/// (`Deps::pool`); this one goes through `Deps::durable` and waits for the disk.
async fn mark_sent(deps: &Deps, ledger_id: i64, job_id: i64) -> Result<(), WorkerError> {
    let mut delay = std::time::Duration::from_millis(100);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        match record_sent(deps, ledger_id, job_id).await {
            Ok(()) => return Ok(()),
            Err(e) if std::time::Instant::now() < deadline => {
                tracing::warn!(error = %e, "email sent but not yet recorded; retrying the ledger");
                tokio::time::sleep(delay).await;
                // short steps: once the database is back, "sent" must win the race against a
                // redelivery that would take over this claim
                delay = (delay * 2).min(std::time::Duration::from_secs(1));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

async fn record_sent(deps: &Deps, ledger_id: i64, job_id: i64) -> Result<(), sqlx::Error> {
    shared::records::done_with_email_sent(&deps.durable, job_id, ledger_id).await
}

/// Drops our claim after a failed send, so the retry can claim it again.
async fn release(deps: &Deps, ledger_id: i64) -> Result<(), WorkerError> {
    sqlx::query!(
        "delete from email_ledger where id = $1 and status = 'sending'",
        ledger_id
    )
    .execute(&deps.pool)
    .await?;
    Ok(())
}
