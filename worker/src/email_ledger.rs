//! The email ledger's claim, release and "sent" verdict: the one guard against sending an
//! email twice, for every email the worker sends (booking emails and the privacy emails).
//!
//! A ledger row is about a booking (keyed by booking, kind, recipient and booking version) or
//! about a privacy request (keyed by request, kind and recipient; migration 0008). A claim
//! names the worker process holding it: while that worker heartbeats and the claim is younger
//! than `EMAIL_CLAIM_TIMEOUT_SECS`, another delivery may be sending right now: look again
//! later. A claim whose worker is dead (no heartbeat for [`crate::presence::dead_after`], or
//! stopped) is taken over at once, and one older than the timeout (longer than any send can
//! take, so a live worker's send is never doubled: what outlives it is a send whose verdict
//! never came) too, keeping the Message-ID it recorded: the one window in which a receiver
//! can see a duplicate (and can drop it by that id).
use chrono::{DateTime, Utc};

use crate::{Deps, error::WorkerError};

/// What a ledger row is about.
#[derive(Debug, Clone, Copy)]
pub enum Subject {
    Booking { id: i64, version: i32 },
    PrivacyRequest(i64),
}

/// The identity of one email: what it is about, its kind and its recipient.
#[derive(Debug, Clone, Copy)]
pub struct Key<'a> {
    pub subject: Subject,
    pub kind: &'a str,
    pub recipient_id: i64,
}

/// What claiming an email found.
#[derive(Debug)]
pub enum Claim {
    /// The ledger row (by id) is ours to send, with the Message-ID to send it under: the one
    /// we offered for a fresh claim, the one first recorded for a claim taken over.
    Ours {
        id: i64,
        message_id: String,
    },
    AlreadySent,
    /// Another delivery claimed it at `claimed_at` and has not recorded it sent; `None` when
    /// that claim was inserted concurrently with this statement (invisible to it).
    InFlight {
        claimed_at: Option<DateTime<Utc>>,
    },
}

/// Claims the email `key` for this worker, offering `message_id` for a fresh claim.
///
/// Durable before the SMTP exchange starts: a claim lost in a Postgres crash would let the
/// job, reverted by the same crash, send the email again.
#[tracing::instrument(skip_all, fields(kind = key.kind))]
pub async fn claim(deps: &Deps, key: &Key<'_>, message_id: &str) -> Result<Claim, WorkerError> {
    let (booking_id, booking_version, request_id) = match key.subject {
        Subject::Booking { id, version } => (Some(id), Some(version), None),
        Subject::PrivacyRequest(id) => (None, None, Some(id)),
    };
    // one statement: the insert covers both keys' unique constraints (`on conflict do
    // nothing` without a target); the lookup names the key of the subject given
    let c = sqlx::query!(
        r#"with inserted as (
            insert into email_ledger
                (booking_id, booking_version, privacy_request_id, kind, recipient_id, message_id, claimed_by)
            values ($1, $2, $3, $4, $5, $6, $7)
            on conflict do nothing returning id),
         existing as (
            select l.id, l.status, l.claimed_at, l.message_id from email_ledger l
            where l.kind = $4 and l.recipient_id = $5
              and (($1::bigint is not null and l.booking_id = $1 and l.booking_version = $2)
                   or ($3::bigint is not null and l.privacy_request_id = $3))),
         taken as (
            update email_ledger l set claimed_at = now(), claimed_by = $7 from existing e
            where l.id = e.id and not exists (select 1 from inserted) and l.status = 'sending'
              and (l.claimed_at < now() - make_interval(secs => $8)
                   or (l.claimed_by is not null and not exists (
                         select 1 from workers w
                          where w.id = l.claimed_by and w.stopped_at is null
                            and w.heartbeat_at > now() - make_interval(secs => $9))))
            returning l.id)
         select coalesce((select id from inserted), (select id from taken)) as ledger_id,
                case when exists (select 1 from inserted) or exists (select 1 from taken) then 'ours'
                     else (select status from existing) end as verdict,
                (select claimed_at from existing) as claimed_at,
                (select message_id from existing) as recorded_message_id"#,
        booking_id,
        booking_version,
        request_id,
        key.kind,
        key.recipient_id,
        message_id,
        &*deps.instance,
        deps.config.email_claim_timeout_secs as f64,
        crate::presence::dead_after(deps.config.heartbeat_secs)
            .as_secs_f64()
    )
    .fetch_one(&deps.durable)
    .await?;
    Ok(match (c.ledger_id, c.verdict.as_deref()) {
        (Some(id), Some("ours")) => Claim::Ours {
            id,
            message_id: c
                .recorded_message_id
                .unwrap_or_else(|| message_id.to_string()),
        },
        (_, Some("sent")) => Claim::AlreadySent,
        _ => Claim::InFlight {
            claimed_at: c.claimed_at,
        },
    })
}

/// When to look again at an email another delivery holds: once its claim can time out, and
/// not before two seconds (a claim made this very moment becomes visible by then).
pub fn look_again_at(
    deps: &Deps,
    claimed_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> DateTime<Utc> {
    let soon = now + chrono::Duration::seconds(2);
    match claimed_at {
        Some(at) => (at
            + chrono::Duration::seconds(deps.config.email_claim_timeout_secs as i64 + 1))
        .max(soon),
        None => soon,
    }
}

/// Records that the SMTP server accepted the email, and the job as done, in one durable
/// commit. This knowledge exists only in this process until it is written, so a database
/// outage is waited out here (up to two minutes) rather than dropped: dropping it would make
/// a retry send the email again. The worker's other writes commit asynchronously
/// (`Deps::pool`); this one goes through `Deps::durable` and waits for the disk.
pub async fn mark_sent(deps: &Deps, ledger_id: i64, job_id: i64) -> Result<(), WorkerError> {
    let mut delay = std::time::Duration::from_millis(100);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        match shared::records::done_with_email_sent(&deps.durable, job_id, ledger_id).await {
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

/// Drops our claim after a failed send (or a skip), so a retry can claim it again.
pub async fn release(deps: &Deps, ledger_id: i64) -> Result<(), WorkerError> {
    sqlx::query!(
        "delete from email_ledger where id = $1 and status = 'sending'",
        ledger_id
    )
    .execute(&deps.pool)
    .await?;
    Ok(())
}
