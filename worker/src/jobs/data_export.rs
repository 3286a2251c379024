//! Builds a user's data export: one versioned JSON document (format `instainstru.export`,
//! version 1) with their profile and, per table that references them, their rows: bookings
//! as student and as instructor (the other party by first name only), an instructor's
//! profile, services and availability, the emails sent to them (kind, time, booking; no
//! addresses), their privacy requests, exports and the audit entries about them, and their
//! searches (history, events and the interactions with those events).
//!
//! Idempotent: the document is keyed by its request (`export_documents.request_id`) and
//! written, with the request marked done, the audit entry and the "ready" email's job, in one
//! transaction; a rerun of a done request does nothing. A failed attempt retries with the
//! default backoff; the last one marks the request failed so that a new export can be asked.
use serde_json::Value;
use shared::jobs::{DataExport, ExportReadyEmail};

use super::{Handler, JobRun};
use crate::{Deps, error::WorkerError, records::Outcome};

/// The document's format version; bump it when a field changes meaning or goes away.
pub const FORMAT_VERSION: i32 = 1;
/// The most bytes in one stored chunk: what a download holds in memory at a time.
const CHUNK_BYTES: usize = 64 * 1024;

/// `text` in pieces of at most `max` bytes (at least one character each), cut at character
/// boundaries.
fn chunks(text: &str, max: usize) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let mut end = max.min(rest.len());
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        if end == 0 {
            end = rest.chars().next().map_or(rest.len(), char::len_utf8);
        }
        let (head, tail) = rest.split_at(end);
        out.push(head);
        rest = tail;
    }
    out
}

pub struct DataExportJob;

impl Handler for DataExportJob {
    type Args = DataExport;

    fn concurrency(&self, _config: &shared::config::Config) -> usize {
        2
    }

    async fn work(
        &self,
        deps: &Deps,
        run: JobRun,
        args: DataExport,
    ) -> Result<Outcome, WorkerError> {
        match export(deps, args.request_id).await {
            Err(e) if run.attempt >= self.max_attempts() => {
                shared::audit::fail_request(&deps.pool, args.request_id, "export failed").await?;
                Ok(Outcome::Dead(e.to_string()))
            }
            other => other,
        }
    }
}

async fn export(deps: &Deps, request_id: i64) -> Result<Outcome, WorkerError> {
    let now = deps.clock.now();
    let mut tx = deps.pool.begin().await?;
    let Some(request) = sqlx::query!(
        "select user_id, requested_by, state from privacy_requests
         where id = $1 and kind = 'export' for update",
        request_id
    )
    .fetch_optional(&mut *tx)
    .await?
    else {
        return Ok(Outcome::Dead(format!(
            "export request {request_id} does not exist"
        )));
    };
    if request.state == "done" || request.state == "failed" {
        return Ok(Outcome::Done);
    }
    let erased: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar!("select erased_at from users where id = $1", request.user_id)
            .fetch_one(&mut *tx)
            .await?;
    if erased.is_some() {
        sqlx::query!(
            "update privacy_requests set state = 'failed', reason = 'user erased', finished_at = $2 where id = $1",
            request_id,
            now
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        return Ok(Outcome::Skipped("user erased".into()));
    }
    let expires_at = now + deps.config.export_ttl();
    sqlx::query!(
        "update privacy_requests set state = 'done', finished_at = $2, expires_at = $3 where id = $1",
        request_id,
        now,
        expires_at
    )
    .execute(&mut *tx)
    .await?;
    shared::audit::record(
        &mut tx,
        &request.requested_by.to_string(),
        request.user_id,
        "export",
        "done",
        serde_json::json!({ "request_id": request_id }),
    )
    .await?;
    // the document row first, so that the document lists itself among the user's exports
    sqlx::query!(
        "insert into export_documents (request_id, user_id, created_at, expires_at)
         values ($1, $2, $3, $4)
         on conflict (request_id) do update set created_at = $3, expires_at = $4",
        request_id,
        request.user_id,
        now,
        expires_at
    )
    .execute(&mut *tx)
    .await?;
    let document = build(&mut tx, request.user_id, now).await?;
    sqlx::query!(
        "delete from export_chunks where request_id = $1",
        request_id
    )
    .execute(&mut *tx)
    .await?;
    let text = document.to_string();
    let chunks = chunks(&text, CHUNK_BYTES);
    let seqs: Vec<i32> = (0..chunks.len() as i32).collect();
    sqlx::query!(
        "insert into export_chunks (request_id, seq, data)
         select $1, seq, data from unnest($2::int[], $3::text[]) as c(seq, data)",
        request_id,
        &seqs,
        &chunks as &[&str]
    )
    .execute(&mut *tx)
    .await?;
    shared::outbox::enqueue(&mut tx, &ExportReadyEmail { request_id }, now).await?;
    tx.commit().await?;
    shared::outbox::notify(&deps.pool).await;
    metrics::counter!("privacy_exports_total").increment(1);
    Ok(Outcome::Done)
}

/// The document: the profile, and under `tables` one array per table holding the user's
/// rows (named by table, so a reader, and the test, can match it to the schema).
async fn build(
    conn: &mut sqlx::PgConnection,
    user_id: i64,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Value, sqlx::Error> {
    let profile = sqlx::query_scalar!(
        r#"select jsonb_build_object('id', id, 'email', email, 'full_name', full_name, 'role', role,
                  'timezone', timezone, 'created_at', created_at) as "profile!"
           from users where id = $1"#,
        user_id
    )
    .fetch_one(&mut *conn)
    .await?;
    let instructor_profiles = sqlx::query_scalar!(
        r#"select coalesce(jsonb_agg(jsonb_build_object('bio', bio,
                  'min_advance_booking_hours', min_advance_booking_hours)), '[]') as "rows!"
           from instructor_profiles where user_id = $1"#,
        user_id
    )
    .fetch_one(&mut *conn)
    .await?;
    let services = sqlx::query_scalar!(
        r#"select coalesce(jsonb_agg(to_jsonb(s) order by s.id), '[]') as "rows!"
           from services s where instructor_id = $1"#,
        user_id
    )
    .fetch_one(&mut *conn)
    .await?;
    let availability = sqlx::query_scalar!(
        r#"select coalesce(jsonb_agg(to_jsonb(a) order by a.date, a.start_time), '[]') as "rows!"
           from availability a where instructor_id = $1"#,
        user_id
    )
    .fetch_one(&mut *conn)
    .await?;
    // the other party by first name only; a student's notes are theirs, so an instructor's
    // export leaves them out
    let bookings = sqlx::query_scalar!(
        r#"select coalesce(jsonb_agg(jsonb_build_object(
                  'id', b.id,
                  'as', case when b.student_id = $1 then 'student' else 'instructor' end,
                  'other_party_first_name', split_part(o.full_name, ' ', 1),
                  'service_id', b.service_id, 'service_name', b.service_name,
                  'start', b.starts_at, 'end', b.ends_at, 'status', b.status,
                  'duration_minutes', b.duration_minutes, 'price_cents', b.price_cents,
                  'notes', case when b.student_id = $1 then b.notes end,
                  'cancellation_reason', b.cancellation_reason,
                  'created_at', b.created_at, 'updated_at', b.updated_at) order by b.id), '[]') as "rows!"
           from bookings b
           join users o on o.id = case when b.student_id = $1 then b.instructor_id else b.student_id end
           where b.student_id = $1 or b.instructor_id = $1"#,
        user_id
    )
    .fetch_one(&mut *conn)
    .await?;
    let email_ledger = sqlx::query_scalar!(
        r#"select coalesce(jsonb_agg(jsonb_build_object('id', id, 'kind', kind,
                  'booking_id', booking_id, 'privacy_request_id', privacy_request_id,
                  'status', status, 'at', coalesce(sent_at, claimed_at)) order by id), '[]') as "rows!"
           from email_ledger where recipient_id = $1"#,
        user_id
    )
    .fetch_one(&mut *conn)
    .await?;
    let privacy_requests = sqlx::query_scalar!(
        r#"select coalesce(jsonb_agg(jsonb_build_object('id', id, 'kind', kind, 'state', state,
                  'about_you', user_id = $1, 'asked_by_you', requested_by = $1, 'reason', reason,
                  'created_at', created_at, 'finished_at', finished_at, 'expires_at', expires_at)
                  order by id), '[]') as "rows!"
           from privacy_requests where user_id = $1 or requested_by = $1"#,
        user_id
    )
    .fetch_one(&mut *conn)
    .await?;
    let export_documents = sqlx::query_scalar!(
        r#"select coalesce(jsonb_agg(jsonb_build_object('request_id', request_id,
                  'created_at', created_at, 'expires_at', expires_at) order by request_id), '[]') as "rows!"
           from export_documents where user_id = $1"#,
        user_id
    )
    .fetch_one(&mut *conn)
    .await?;
    let audit_log = sqlx::query_scalar!(
        r#"select coalesce(jsonb_agg(jsonb_build_object('id', id, 'actor', actor, 'action', action,
                  'outcome', outcome, 'detail', detail, 'at', at) order by id), '[]') as "rows!"
           from audit_log where subject_user_id = $1"#,
        user_id
    )
    .fetch_one(&mut *conn)
    .await?;
    // their own searches and what they did with them; `ip_hash` is a keyed hash that only
    // the platform can compare, so it says nothing to the reader and stays out
    let search_history = sqlx::query_scalar!(
        r#"select coalesce(jsonb_agg(jsonb_build_object('query', query, 'searched_at', searched_at)
                  order by searched_at desc, id), '[]') as "rows!"
           from search_history where user_id = $1"#,
        user_id
    )
    .fetch_one(&mut *conn)
    .await?;
    let search_events = sqlx::query_scalar!(
        r#"select coalesce(jsonb_agg(jsonb_build_object('id', id, 'search_id', search_id,
                  'searched_at', searched_at, 'query', query, 'result_count', result_count,
                  'filters', filters, 'shown', shown, 'ua_class', ua_class)
                  order by searched_at, id), '[]') as "rows!"
           from search_events where user_id = $1"#,
        user_id
    )
    .fetch_one(&mut *conn)
    .await?;
    let search_interactions = sqlx::query_scalar!(
        r#"select coalesce(jsonb_agg(jsonb_build_object('id', i.id, 'search_event_id', i.event_id,
                  'kind', i.kind, 'position', i.position, 'instructor_id', i.instructor_id,
                  'service_id', i.service_id, 'booking_id', i.booking_id,
                  'occurred_at', i.occurred_at) order by i.occurred_at, i.id), '[]') as "rows!"
           from search_interactions i
           join search_events e on e.id = i.event_id and e.searched_at = i.searched_at
           where e.user_id = $1"#,
        user_id
    )
    .fetch_one(&mut *conn)
    .await?;
    // the keys they sent with their bookings (the stored answer is our own reply to them)
    let idempotency_keys = sqlx::query_scalar!(
        r#"select coalesce(jsonb_agg(jsonb_build_object('key', key,
                  'response_status', response_status, 'created_at', created_at)
                  order by created_at, key), '[]') as "rows!"
           from idempotency_keys where user_id = $1"#,
        user_id
    )
    .fetch_one(&mut *conn)
    .await?;
    // their dashboard sign-ins: when, not the cookie's hash nor its form token (secrets)
    let ops_sessions = sqlx::query_scalar!(
        r#"select coalesce(jsonb_agg(jsonb_build_object('created_at', created_at,
                  'expires_at', expires_at) order by created_at), '[]') as "rows!"
           from ops_sessions where user_id = $1"#,
        user_id
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(serde_json::json!({
        "format": "instainstru.export",
        "version": FORMAT_VERSION,
        "generated_at": now,
        "user_id": user_id,
        "profile": profile,
        "tables": {
            "instructor_profiles": instructor_profiles,
            "services": services,
            "availability": availability,
            "bookings": bookings,
            "email_ledger": email_ledger,
            "privacy_requests": privacy_requests,
            "export_documents": export_documents,
            "audit_log": audit_log,
            "idempotency_keys": idempotency_keys,
            "ops_sessions": ops_sessions,
            "search_history": search_history,
            "search_events": search_events,
            "search_interactions": search_interactions,
        },
    }))
}

#[cfg(test)]
mod tests {
    #[test]
    fn chunks_cut_at_character_boundaries_and_lose_nothing() {
        let text = "héllo wörld ∑ done";
        for max in 1..8 {
            let parts = super::chunks(text, max);
            assert_eq!(parts.concat(), text);
            assert!(parts.iter().all(|p| !p.is_empty()));
        }
    }
}
