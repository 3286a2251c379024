//! Sends the emails about a booking: confirmation, cancellation, reschedule and reminder.
//!
//! Idempotent through the email ledger, keyed by (booking, kind, recipient, booking version):
//! the row is claimed before the SMTP exchange and marked sent after it, so a retried or
//! duplicated delivery sends nothing more. A claim younger than the in-flight window means
//! another delivery is sending right now: retry later. A claim older than
//! `EMAIL_CLAIM_TIMEOUT_SECS` means a worker died
//! mid-send: take it over and send again with the same Message-ID, the one window in which a
//! receiver can see a duplicate (and can drop it by that id).
//!
//! Reminders check the booking's current state: a cancelled, moved, started or erased
//! booking is skipped, with the reason recorded. Transient SMTP failures retry with backoff
//! (`records`); permanent ones (5xx, bad address) go straight to the dead letters.
use chrono::Utc;
use shared::{
    domain::{BOOKING_COLUMNS, Booking, BookingStatus, Recipient},
    email::{BookingEmailView, render_booking_email},
    jobs::{BookingEmail, EmailKind, Party},
};

use crate::{Deps, error::WorkerError, records::Outcome};

pub async fn handle(deps: Deps, job_id: i64, args: BookingEmail) -> Result<Outcome, WorkerError> {
    let now = deps.clock.now();
    let booking: Option<Booking> = sqlx::query_as(&format!(
        "select {BOOKING_COLUMNS} from bookings where id = $1"
    ))
    .bind(args.booking_id)
    .fetch_optional(&deps.pool)
    .await?;
    let Some(booking) = booking else {
        return Ok(Outcome::Dead(format!(
            "booking {} does not exist",
            args.booking_id
        )));
    };
    tracing::Span::current().record("booking_id", booking.id);
    let (recipient_id, other_id) = match args.party {
        Party::Student => (booking.student_id, booking.instructor_id),
        Party::Instructor => (booking.instructor_id, booking.student_id),
    };
    let (recipient, other) = load_people(&deps, recipient_id, other_id).await?;
    if recipient.erased_at.is_some() {
        return Ok(skip(args.kind, "recipient erased"));
    }
    if args.kind == EmailKind::Reminder {
        if booking.status != BookingStatus::Confirmed {
            return Ok(skip(args.kind, "booking not confirmed"));
        }
        if booking.version != args.booking_version {
            return Ok(skip(args.kind, "booking changed"));
        }
        if booking.starts_at <= now {
            return Ok(skip(args.kind, "lesson already started"));
        }
    }

    let message_id = format!(
        "<booking-{}-{}-{}-v{}@instainstru>",
        booking.id,
        args.kind.as_str(),
        args.party.as_str(),
        args.booking_version
    );
    let ledger_id = match claim(&deps, &args, recipient_id, &message_id).await? {
        Claim::Ours(id) => id,
        Claim::AlreadySent => {
            tracing::info!("email already sent: duplicate delivery ignored");
            return Ok(Outcome::Done);
        }
        Claim::InFlight => {
            return Ok(Outcome::Retry(
                "another delivery is sending this email".into(),
            ));
        }
    };

    let previous_starts_at: Option<chrono::DateTime<Utc>> = if args.kind == EmailKind::Reschedule {
        sqlx::query_scalar(
            "select previous_starts_at from booking_moves where booking_id = $1 and version = $2",
        )
        .bind(booking.id)
        .bind(args.booking_version)
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
            Ok(Outcome::Done)
        }
        Err(e) => {
            release(&deps, ledger_id).await?;
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

/// Both parties of the booking in one round trip.
async fn load_people(
    deps: &Deps,
    recipient_id: i64,
    other_id: i64,
) -> Result<(Recipient, Recipient), WorkerError> {
    let people: Vec<Recipient> = sqlx::query_as(
        "select id, email, full_name, timezone, erased_at from users where id = any($1)",
    )
    .bind([recipient_id, other_id])
    .fetch_all(&deps.pool)
    .await?;
    let find = |id: i64| {
        people
            .iter()
            .find(|p| p.id == id)
            .cloned()
            .ok_or(WorkerError::Database(sqlx::Error::RowNotFound))
    };
    Ok((find(recipient_id)?, find(other_id)?))
}

enum Claim {
    /// The ledger row (by id) is ours to send.
    Ours(i64),
    AlreadySent,
    InFlight,
}

/// Claims the ledger row of this email, or says why not, in one statement: insert it; or
/// take over a claim abandoned longer than `EMAIL_CLAIM_TIMEOUT_SECS`; or report the status.
async fn claim(
    deps: &Deps,
    args: &BookingEmail,
    recipient_id: i64,
    message_id: &str,
) -> Result<Claim, WorkerError> {
    let (id, verdict): (Option<i64>, Option<String>) = sqlx::query_as(
        "with key as (select $1::bigint as booking_id, $2::text as kind, $3::bigint as recipient_id,
                             $4::int as booking_version),
         inserted as (
            insert into email_ledger (booking_id, kind, recipient_id, booking_version, message_id)
            select booking_id, kind, recipient_id, booking_version, $5 from key
            on conflict do nothing returning id),
         existing as (
            select l.id, l.status, l.claimed_at from email_ledger l join key k using (booking_id, kind, recipient_id, booking_version)),
         taken as (
            update email_ledger l set claimed_at = now() from existing e
            where l.id = e.id and not exists (select 1 from inserted)
              and e.status = 'sending' and e.claimed_at < now() - make_interval(secs => $6)
            returning l.id)
         select coalesce((select id from inserted), (select id from taken)),
                case when exists (select 1 from inserted) or exists (select 1 from taken) then 'ours'
                     else (select status from existing) end",
    )
    .bind(args.booking_id)
    .bind(args.kind.as_str())
    .bind(recipient_id)
    .bind(args.booking_version)
    .bind(message_id)
    .bind(deps.config.email_claim_timeout_secs as f64)
    .fetch_one(&deps.pool)
    .await?;
    Ok(match (id, verdict.as_deref()) {
        (Some(id), Some("ours")) => Claim::Ours(id),
        (_, Some("sent")) => Claim::AlreadySent,
        _ => Claim::InFlight,
    })
}

/// Records that the SMTP server accepted the email, and the job as done, in one durable
/// commit. This knowledge exists only in this process until it is written, so a database
/// outage is waited out here (up to two minutes) rather than dropped: dropping it would make
/// a retry send the email again. The worker's other writes commit asynchronously
/// (`Deps::from_config`); this one waits for the disk, and its flush covers them too.
async fn mark_sent(deps: &Deps, ledger_id: i64, job_id: i64) -> Result<(), WorkerError> {
    let mut delay = std::time::Duration::from_millis(100);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        match record_sent(deps, ledger_id, job_id).await {
            Ok(()) => return Ok(()),
            Err(e) if std::time::Instant::now() < deadline => {
                tracing::warn!(error = %e, "email sent but not yet recorded; retrying the ledger");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(std::time::Duration::from_secs(5));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

async fn record_sent(deps: &Deps, ledger_id: i64, job_id: i64) -> Result<(), sqlx::Error> {
    let mut tx = deps.pool.begin().await?;
    sqlx::query("set local synchronous_commit = on")
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "with sent as (update email_ledger set status = 'sent', sent_at = now() where id = $1)
         update jobs set status = 'done', finished_at = now() where id = $2",
    )
    .bind(ledger_id)
    .bind(job_id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// Drops our claim after a failed send, so the retry can claim it again.
async fn release(deps: &Deps, ledger_id: i64) -> Result<(), WorkerError> {
    sqlx::query("delete from email_ledger where id = $1 and status = 'sending'")
        .bind(ledger_id)
        .execute(&deps.pool)
        .await?;
    Ok(())
}
