//! Bookings: create, read, list, cancel and reschedule. Each write is one transaction that
//! also records the emails it causes (the outbox); nothing is sent from here.
use axum::{
    Json,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shared::{
    booking_emails as booking_email,
    domain::{Booking, BookingStatus, Role},
    jobs::EmailKind,
};
use sqlx::PgConnection;
use utoipa::{IntoParams, ToSchema};

use super::openapi::{
    BadRequest, Conflict, Forbidden, NotFound, PayloadTooLarge, RateLimited, Unauthorized,
    Unavailable, Unprocessable, UnsupportedMediaType,
};
use crate::{
    auth::AuthUser,
    error::{ApiError, ApiResult},
    extract::{Json as JsonBody, Path, Query, optional_json},
    idempotency::{self, Claim, IdempotencyKey},
    search::interactions as search_conversion,
    state::AppState,
};

/// The longest note a student may attach.
const MAX_NOTES_CHARS: usize = 2000;
/// How far ahead a lesson may be booked.
const MAX_DAYS_AHEAD: i64 = 366;

/// A lesson to book. Serialized (as parsed) for the Idempotency-Key fingerprint.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBooking {
    instructor_id: i64,
    service_id: i64,
    /// RFC 3339 instant; inside the instructor's availability, at least their advance-booking
    /// hours ahead, at most 366 days ahead.
    start: DateTime<Utc>,
    #[serde(default)]
    #[schema(max_length = 2000)]
    notes: Option<String>,
    /// The search this booking came from (the id `POST /api/v1/search/events` answered): a
    /// conversion is recorded for it in the booking's transaction. It must be the student's
    /// own search (422 unknown_search_event otherwise).
    #[serde(default)]
    #[schema(minimum = 1)]
    search_event_id: Option<i64>,
}

/// Book a lesson (students).
///
/// One transaction: the booking and the emails it causes (the outbox). Overlaps are refused by
/// the database (409 booking_conflict). Rate limited per client.
///
/// With an `Idempotency-Key` (the IETF httpapi Idempotency-Key draft, as Stripe does it), a
/// retry after a timeout cannot book twice: the same key with the same request answers the
/// first 201 and its body again (`Idempotent-Replayed: true`), the same key with another
/// request is 422 idempotency_key_reused, and while the first request with a key is still
/// running a second is 409 idempotency_key_in_use. Keys are per user and expire 24 hours after
/// their first use; a refused request stores nothing, so it can be retried with its key.
#[utoipa::path(
    post,
    path = "/api/v1/bookings",
    tag = "bookings",
    operation_id = "createBooking",
    security(("bearerAuth" = [])),
    params(IdempotencyKey),
    request_body = CreateBooking,
    responses(
        (status = 201, description = "The booking.", body = Booking, headers(
            ("Idempotent-Replayed" = String, description = "`true` when this is the stored answer to an earlier request with the same Idempotency-Key.")
        )),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 409, response = Conflict),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = Unprocessable),
        (status = 429, response = RateLimited),
        (status = 503, response = Unavailable)
    )
)]
#[tracing::instrument(skip_all, fields(booking_id))]
pub async fn create(
    State(state): State<AppState>,
    user: AuthUser,
    key: Option<IdempotencyKey>,
    JsonBody(body): JsonBody<CreateBooking>,
) -> ApiResult<Response> {
    user.require(Role::Student)?;
    if body
        .notes
        .as_ref()
        .is_some_and(|n| n.chars().count() > MAX_NOTES_CHARS)
    {
        return Err(ApiError::invalid(
            "too_long",
            "notes",
            format!("at most {MAX_NOTES_CHARS} characters"),
        ));
    }
    let now = state.clock.now();
    // the reads need no transaction for their own sake (what must hold under concurrency, no
    // overlaps, is enforced by the exclusion constraints when the row is inserted), but an
    // idempotency key is held from the first read to the commit
    let mut tx = state.db.begin().await?;
    let written: ApiResult<Written> = async {
        let claimed = match &key {
            Some(key) => {
                let fingerprint = idempotency::fingerprint("POST /api/v1/bookings", &body)?;
                match idempotency::claim(&mut tx, user.id, key, &fingerprint, now).await? {
                    Claim::Replay(answer) => return Ok(Written::Replay(answer)),
                    Claim::Fresh => Some((key, fingerprint)),
                }
            }
            None => None,
        };
        let service: Option<(String, i32, i64, bool)> = sqlx::query!(
            "select name, duration_minutes, price_cents, is_active from services where id = $1 and instructor_id = $2",
            body.service_id,
            body.instructor_id
        )
        .map(|r| (r.name, r.duration_minutes, r.price_cents, r.is_active))
        .fetch_optional(&mut *tx)
        .await?;
        let Some((service_name, duration, price_cents, active)) = service else {
            return Err(ApiError::invalid(
                "unknown_service",
                "service_id",
                "this instructor offers no such service",
            ));
        };
        if !active {
            return Err(ApiError::invalid(
                "inactive_service",
                "service_id",
                "this service is no longer offered",
            ));
        }
        let end = body.start + chrono::Duration::minutes(i64::from(duration));
        check_time(&mut tx, body.instructor_id, body.start, end, now).await?;
        let search_event = match body.search_event_id {
            Some(id) => Some(search_conversion::find_for_booking(&mut tx, id, user.id).await?),
            None => None,
        };
        let booking: Booking = shared::query_booking!(
            "insert into bookings (student_id, instructor_id, service_id, starts_at, ends_at, service_name,
                               duration_minutes, price_cents, notes)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9) returning ",
            "",
            user.id,
            body.instructor_id,
            body.service_id,
            body.start,
            end,
            &service_name,
            duration,
            price_cents,
            body.notes.as_deref(),
        )
        .fetch_one(&mut *tx)
        .await?;
        tracing::Span::current().record("booking_id", booking.id);
        if let Some(event) = &search_event {
            search_conversion::record_for_booking(&mut tx, event, &booking, now).await?;
        }
        booking_email::enqueue_with_reminders(
            &mut tx,
            booking.id,
            booking.version,
            EmailKind::Confirmation,
            booking.starts_at,
            state.config.reminder_lead(),
            now,
        )
        .await?;
        // the answer is kept as sent, so that a retry gets it byte for byte
        let answer = serde_json::to_vec(&booking)
            .map_err(|e| ApiError::Internal(format!("serializing a booking: {e}")))?;
        if let Some((key, fingerprint)) = claimed {
            idempotency::record(
                &mut tx,
                user.id,
                key,
                &fingerprint,
                StatusCode::CREATED,
                &answer,
                now,
            )
            .await?;
        }
            Ok(Written::Booked(answer))
    }
    .await;
    // end the transaction before answering whatever happened: a dropped one is rolled back
    // only when the pool next uses its connection, and until then it would hold the
    // idempotency key's lock, answering the client's retry 409 idempotency_key_in_use
    let answer = match written {
        Ok(Written::Booked(answer)) => answer,
        Ok(Written::Replay(answer)) => {
            tx.rollback().await?;
            return Ok(answer.into_response());
        }
        Err(e) => {
            if let Err(rollback) = tx.rollback().await {
                tracing::warn!(error = %rollback, "rolling back a refused booking");
            }
            return Err(e);
        }
    };
    tx.commit().await?;
    state.outbox.wake();
    metrics::counter!("bookings_created_total").increment(1);
    Ok((
        StatusCode::CREATED,
        [(header::CONTENT_TYPE, "application/json")],
        answer,
    )
        .into_response())
}

/// What a booking request's transaction produced.
enum Written {
    /// A new booking, as its answer's body.
    Booked(Vec<u8>),
    /// The stored answer of the request that first used the idempotency key.
    Replay(idempotency::StoredAnswer),
}

/// Checks the rules a lesson time must meet; overlaps are left to the database's exclusion
/// constraints, which are the only check that holds under concurrency.
async fn check_time(
    conn: &mut PgConnection,
    instructor_id: i64,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    now: DateTime<Utc>,
) -> ApiResult<()> {
    if start > now + chrono::Duration::days(MAX_DAYS_AHEAD) {
        return Err(ApiError::invalid(
            "too_far_ahead",
            "start",
            format!("at most {MAX_DAYS_AHEAD} days ahead"),
        ));
    }
    // one round trip: the instructor's advance window and whether the time is available
    let rules: Option<(i32, bool)> = sqlx::query!(
        r#"select p.min_advance_booking_hours, exists(
            select 1 from availability a
            where a.instructor_id = p.user_id
              and a.date between ($2 at time zone u.timezone)::date - 1 and ($2 at time zone u.timezone)::date
              and (a.date + a.start_time) at time zone u.timezone <= $2
              and (a.date + a.end_time) at time zone u.timezone >= $3) as "inside!"
         from instructor_profiles p join users u on u.id = p.user_id
         where p.user_id = $1"#,
        instructor_id,
        start,
        end
    )
    .map(|r| (r.min_advance_booking_hours, r.inside))
    .fetch_optional(&mut *conn)
    .await?;
    let Some((advance_hours, inside)) = rules else {
        return Err(ApiError::invalid(
            "unknown_instructor",
            "instructor_id",
            "no such instructor",
        ));
    };
    if start < now + chrono::Duration::hours(i64::from(advance_hours)) {
        return Err(ApiError::invalid(
            "too_soon",
            "start",
            format!("lessons must be booked at least {advance_hours} hours ahead"),
        ));
    }
    if !inside {
        return Err(ApiError::invalid(
            "outside_availability",
            "start",
            "the instructor is not available then",
        ));
    }
    Ok(())
}

/// Loads a booking the caller takes part in (or any, for an admin), locking it when `lock`.
async fn load_own(
    conn: &mut PgConnection,
    user: &AuthUser,
    id: i64,
    lock: bool,
) -> ApiResult<Booking> {
    let booking = if lock {
        shared::query_booking!("select ", " from bookings where id = $1 for update", id)
            .fetch_optional(&mut *conn)
            .await?
    } else {
        shared::query_booking!("select ", " from bookings where id = $1", id)
            .fetch_optional(&mut *conn)
            .await?
    }
    .ok_or(ApiError::NotFound("booking"))?;
    if booking.student_id != user.id && booking.instructor_id != user.id && user.role != Role::Admin
    {
        return Err(ApiError::Forbidden("not your booking".into()));
    }
    Ok(booking)
}

/// One booking the caller takes part in (any, for an admin).
///
/// Rate limited per client.
#[utoipa::path(
    get,
    path = "/api/v1/bookings/{id}",
    tag = "bookings",
    operation_id = "getBooking",
    security(("bearerAuth" = [])),
    params(("id" = i64, Path, description = "The booking id.")),
    responses(
        (status = 200, description = "The booking.", body = Booking),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 429, response = RateLimited),
        (status = 503, response = Unavailable)
    )
)]
#[tracing::instrument(skip_all, fields(booking_id = id))]
pub async fn get(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<i64>,
) -> ApiResult<Json<Booking>> {
    let mut conn = state.db.acquire().await?;
    Ok(Json(load_own(&mut conn, &user, id, false).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only bookings where the caller is this party.
    // parsed as any role so that `admin` keeps its 422 invalid_role; documented as a party
    #[serde(default)]
    #[param(inline, value_type = Option<Party>)]
    role: Option<Role>,
    /// Only bookings in this status.
    #[serde(default)]
    status: Option<BookingStatus>,
}

/// The side of a booking a user is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum Party {
    Student,
    Instructor,
}

/// The caller's own bookings (at most 500, by start).
///
/// Unknown query parameters are refused (400 invalid_query). Rate limited per client.
#[utoipa::path(
    get,
    path = "/api/v1/bookings",
    tag = "bookings",
    operation_id = "listBookings",
    security(("bearerAuth" = [])),
    params(ListQuery),
    responses(
        (status = 200, description = "The bookings.", body = Vec<Booking>),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 422, response = Unprocessable),
        (status = 429, response = RateLimited),
        (status = 503, response = Unavailable)
    )
)]
#[tracing::instrument(skip_all)]
pub async fn list(
    State(state): State<AppState>,
    user: AuthUser,
    Query(query): Query<ListQuery>,
) -> ApiResult<Json<Vec<Booking>>> {
    let party = match query.role {
        None => None,
        Some(Role::Student) => Some(Party::Student),
        Some(Role::Instructor) => Some(Party::Instructor),
        Some(Role::Admin | Role::OpsViewer | Role::OpsOperator) => {
            return Err(ApiError::invalid(
                "invalid_role",
                "role",
                "role is student or instructor",
            ));
        }
    };
    let (as_student, as_instructor) = match party {
        None => (true, true),
        Some(Party::Student) => (true, false),
        Some(Party::Instructor) => (false, true),
    };
    let bookings: Vec<Booking> = shared::query_booking!(
        "select ",
        " from bookings
         where (($2 and student_id = $1) or ($3 and instructor_id = $1))
           and ($4::text is null or status = $4)
         order by starts_at limit 500",
        user.id,
        as_student,
        as_instructor,
        query.status as _,
    )
    .fetch_all(&state.db)
    .await?;
    Ok(Json(bookings))
}

/// Why a booking is cancelled.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelBooking {
    #[serde(default)]
    #[schema(max_length = 2000)]
    reason: Option<String>,
}

/// Cancel a confirmed booking that has not started (its student or instructor).
///
/// The body is optional: empty means no reason. Rate limited per client.
#[utoipa::path(
    post,
    path = "/api/v1/bookings/{id}/cancel",
    tag = "bookings",
    operation_id = "cancelBooking",
    security(("bearerAuth" = [])),
    params(("id" = i64, Path, description = "The booking id.")),
    request_body(content = Option<CancelBooking>, description = "Optional: an empty body is no reason."),
    responses(
        (status = 200, description = "The cancelled booking.", body = Booking),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 413, response = PayloadTooLarge),
        (status = 422, response = Unprocessable),
        (status = 429, response = RateLimited),
        (status = 503, response = Unavailable)
    )
)]
#[tracing::instrument(skip_all, fields(booking_id = id))]
pub async fn cancel(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<i64>,
    body: crate::extract::Bytes,
) -> ApiResult<Json<Booking>> {
    let reason = optional_json::<CancelBooking>(&body.0)?.reason;
    if reason
        .as_ref()
        .is_some_and(|r| r.chars().count() > MAX_NOTES_CHARS)
    {
        return Err(ApiError::invalid(
            "too_long",
            "reason",
            format!("at most {MAX_NOTES_CHARS} characters"),
        ));
    }
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    let booking = load_own(&mut tx, &user, id, true).await?;
    if booking.status != BookingStatus::Confirmed {
        return Err(ApiError::Conflict {
            code: "not_cancellable",
            detail: "only confirmed bookings can be cancelled".into(),
        });
    }
    if booking.starts_at <= now {
        return Err(ApiError::Conflict {
            code: "already_started",
            detail: "the lesson has already started".into(),
        });
    }
    let booking: Booking = shared::query_booking!(
        "update bookings set status = 'cancelled', cancellation_reason = $2, version = version + 1, updated_at = now()
         where id = $1 returning ",
        "",
        id,
        reason.as_deref(),
    )
    .fetch_one(&mut *tx)
    .await?;
    booking_email::retire_reminders(&mut tx, id, "booking cancelled").await?;
    booking_email::enqueue_for_both(&mut tx, id, booking.version, EmailKind::Cancellation, now)
        .await?;
    tx.commit().await?;
    state.outbox.wake();
    metrics::counter!("bookings_cancelled_total").increment(1);
    Ok(Json(booking))
}

/// Where a booking moves to.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RescheduleBooking {
    /// RFC 3339 instant, other than the booking's current start; under the same rules as a
    /// new booking's start.
    start: DateTime<Utc>,
}

/// Move a confirmed booking under the same rules as creation (its student or instructor).
///
/// Its reminders move with it. Rate limited per client.
#[utoipa::path(
    post,
    path = "/api/v1/bookings/{id}/reschedule",
    tag = "bookings",
    operation_id = "rescheduleBooking",
    security(("bearerAuth" = [])),
    params(("id" = i64, Path, description = "The booking id.")),
    request_body = RescheduleBooking,
    responses(
        (status = 200, description = "The moved booking (version incremented).", body = Booking),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = Unprocessable),
        (status = 429, response = RateLimited),
        (status = 503, response = Unavailable)
    )
)]
#[tracing::instrument(skip_all, fields(booking_id = id))]
pub async fn reschedule(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<i64>,
    JsonBody(body): JsonBody<RescheduleBooking>,
) -> ApiResult<Json<Booking>> {
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    let booking = load_own(&mut tx, &user, id, true).await?;
    if booking.status != BookingStatus::Confirmed {
        return Err(ApiError::Conflict {
            code: "not_reschedulable",
            detail: "only confirmed bookings can be moved".into(),
        });
    }
    if booking.starts_at <= now {
        return Err(ApiError::Conflict {
            code: "already_started",
            detail: "the lesson has already started".into(),
        });
    }
    if body.start == booking.starts_at {
        return Err(ApiError::invalid(
            "unchanged",
            "start",
            "the booking is already at that time",
        ));
    }
    let end = body.start + chrono::Duration::minutes(i64::from(booking.duration_minutes));
    check_time(&mut tx, booking.instructor_id, body.start, end, now).await?;
    let moved: Booking = shared::query_booking!(
        "update bookings set starts_at = $2, ends_at = $3, version = version + 1, updated_at = now()
         where id = $1 returning ",
        "",
        id,
        body.start,
        end,
    )
    .fetch_one(&mut *tx)
    .await?;
    // the previous time is kept for the email: it says where the lesson moved from
    sqlx::query!(
        "insert into booking_moves (booking_id, version, previous_starts_at) values ($1, $2, $3)",
        id,
        moved.version,
        booking.starts_at
    )
    .execute(&mut *tx)
    .await?;
    booking_email::retire_reminders(&mut tx, id, "booking rescheduled").await?;
    booking_email::enqueue_with_reminders(
        &mut tx,
        id,
        moved.version,
        EmailKind::Reschedule,
        moved.starts_at,
        state.config.reminder_lead(),
        now,
    )
    .await?;
    tx.commit().await?;
    state.outbox.wake();
    metrics::counter!("bookings_rescheduled_total").increment(1);
    Ok(Json(moved))
}
