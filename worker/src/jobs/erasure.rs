//! Erases a user (GDPR Art. 17). First their future confirmed lessons are cancelled ("account
//! closed") and the other party's cancellation email is recorded (the erased person gets
//! none); then their personal data is replaced irreversibly: name, email (a placeholder made
//! of the user id, never derived from the address), the notes they wrote as a student, the
//! cancellation reasons on their bookings, an instructor's bio, and their export documents.
//! Business records stay: bookings, prices, dates. Emails still queued for them find
//! `erased_at` set and are skipped ("recipient erased"); their tokens stop working at once
//! (`api::auth` checks `erased_at`).
//!
//! A user under legal hold is not erased: the request fails with that reason, audited.
//!
//! Idempotent: everything happens in one transaction with the request marked done; a rerun
//! of a done request, or an erasure of a user already erased, changes nothing. A failed
//! attempt retries with the default backoff; the last one marks the request failed.
use shared::{
    booking_emails,
    jobs::{EmailKind, Erasure, Party},
};

use super::{Handler, JobRun};
use crate::{Deps, error::WorkerError, records::Outcome};

/// What an erased user's name becomes.
pub const ERASED_NAME: &str = "Deleted user";
/// Why their future lessons were cancelled.
pub const CANCELLATION_REASON: &str = "account closed";

pub struct ErasureJob;

impl Handler for ErasureJob {
    type Args = Erasure;

    fn concurrency(&self, _config: &shared::config::Config) -> usize {
        2
    }

    async fn work(&self, deps: &Deps, run: JobRun, args: Erasure) -> Result<Outcome, WorkerError> {
        match erase(deps, args.request_id).await {
            Err(e) if run.attempt >= self.max_attempts() => {
                shared::audit::fail_request(&deps.pool, args.request_id, "erasure failed").await?;
                Ok(Outcome::Dead(e.to_string()))
            }
            other => other,
        }
    }
}

async fn erase(deps: &Deps, request_id: i64) -> Result<Outcome, WorkerError> {
    let now = deps.clock.now();
    let mut tx = deps.pool.begin().await?;
    let Some(request) = sqlx::query!(
        "select user_id, requested_by, state from privacy_requests
         where id = $1 and kind = 'erasure' for update",
        request_id
    )
    .fetch_optional(&mut *tx)
    .await?
    else {
        return Ok(Outcome::Dead(format!(
            "erasure request {request_id} does not exist"
        )));
    };
    if request.state == "done" || request.state == "failed" {
        return Ok(Outcome::Done);
    }
    let user_id = request.user_id;
    let actor = request.requested_by.to_string();
    let user = sqlx::query!(
        "select erased_at, legal_hold from users where id = $1 for update",
        user_id
    )
    .fetch_one(&mut *tx)
    .await?;
    if user.legal_hold {
        sqlx::query!(
            "update privacy_requests set state = 'failed', reason = 'legal hold', finished_at = $2 where id = $1",
            request_id,
            now
        )
        .execute(&mut *tx)
        .await?;
        shared::audit::record(
            &mut tx,
            &actor,
            user_id,
            "erasure",
            "refused: legal hold",
            serde_json::json!({ "request_id": request_id }),
        )
        .await?;
        tx.commit().await?;
        return Ok(Outcome::Skipped("legal hold".into()));
    }
    let mut cancelled = 0i64;
    if user.erased_at.is_none() {
        let future = sqlx::query!(
            "update bookings set status = 'cancelled', cancellation_reason = $3,
                    version = version + 1, updated_at = now()
             where (student_id = $1 or instructor_id = $1) and status = 'confirmed' and starts_at > $2
             returning id, version, student_id",
            user_id,
            now,
            CANCELLATION_REASON
        )
        .fetch_all(&mut *tx)
        .await?;
        for booking in &future {
            // the erased person's reminders and emails skip themselves ("recipient erased");
            // the other party is told
            let other = if booking.student_id == user_id {
                Party::Instructor
            } else {
                Party::Student
            };
            booking_emails::enqueue_for(
                &mut tx,
                booking.id,
                booking.version,
                EmailKind::Cancellation,
                other,
                now,
            )
            .await?;
        }
        cancelled = future.len() as i64;
    }
    // what they wrote; the reasons of the lessons just cancelled say only "account closed"
    let notes = sqlx::query!(
        "update bookings set notes = null where student_id = $1 and notes is not null",
        user_id
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let reasons = sqlx::query!(
        "update bookings set cancellation_reason = null
         where (student_id = $1 or instructor_id = $1) and cancellation_reason is not null
           and cancellation_reason <> $2",
        user_id,
        CANCELLATION_REASON
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    sqlx::query!(
        "update instructor_profiles set bio = '' where user_id = $1",
        user_id
    )
    .execute(&mut *tx)
    .await?;
    // searches are theirs alone: deleted, not anonymized (the rollups already counted them);
    // interactions go with their events (on delete cascade)
    let searches = sqlx::query!("delete from search_events where user_id = $1", user_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    let history = sqlx::query!("delete from search_history where user_id = $1", user_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    // a stored answer may quote their notes back
    sqlx::query!("delete from idempotency_keys where user_id = $1", user_id)
        .execute(&mut *tx)
        .await?;
    // a dashboard session of theirs signs nobody in any more
    sqlx::query!("delete from ops_sessions where user_id = $1", user_id)
        .execute(&mut *tx)
        .await?;
    let exports = sqlx::query!("delete from export_documents where user_id = $1", user_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    // the placeholder is made of the id (unique, like the address it replaces): nothing of
    // the old address survives, not even a hash of it
    sqlx::query!(
        "update users set email = 'erased-' || id || '@erased.invalid', full_name = $2,
                erased_at = coalesce(erased_at, $3)
         where id = $1",
        user_id,
        ERASED_NAME,
        now
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        "update privacy_requests set state = 'done', finished_at = $2 where id = $1",
        request_id,
        now
    )
    .execute(&mut *tx)
    .await?;
    shared::audit::record(
        &mut tx,
        &actor,
        user_id,
        "erasure",
        "done",
        serde_json::json!({
            "request_id": request_id,
            "bookings_cancelled": cancelled,
            "notes_removed": notes,
            "cancellation_reasons_removed": reasons,
            "exports_deleted": exports,
            "search_events_deleted": searches,
            "search_history_deleted": history,
        }),
    )
    .await?;
    tx.commit().await?;
    shared::outbox::notify(&deps.pool).await;
    metrics::counter!("privacy_erasures_total").increment(1);
    Ok(Outcome::Done)
}
