//! Public browsing: instructors with their active services, and their free time.
use std::collections::BTreeMap;

use axum::{Json, extract::State};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::openapi::{BadRequest, NotFound, RateLimited, Unavailable, Unprocessable};
use crate::{
    error::{ApiError, ApiResult},
    extract::{Path, Query},
    state::AppState,
};

/// A lesson an instructor offers.
#[derive(Serialize, ToSchema)]
#[schema(as = Service)]
#[serde(deny_unknown_fields)]
pub struct ServiceView {
    id: i64,
    name: String,
    duration_minutes: i32,
    price_cents: i64,
}

/// An instructor with their active services.
#[derive(Serialize, ToSchema)]
#[schema(as = Instructor)]
#[serde(deny_unknown_fields)]
pub struct InstructorView {
    id: i64,
    name: String,
    /// IANA zone.
    timezone: String,
    services: Vec<ServiceView>,
}

/// One instructor joined with one of their services (none when they offer nothing).
struct InstructorServiceRow {
    id: i64,
    name: String,
    timezone: String,
    service_id: Option<i64>,
    service_name: Option<String>,
    duration: Option<i32>,
    price: Option<i64>,
}

/// Instructors with their active services.
///
/// Public; rate limited per client.
#[utoipa::path(
    get,
    path = "/api/v1/instructors",
    tag = "public",
    operation_id = "listInstructors",
    responses(
        (status = 200, description = "Every instructor, by id.", body = Vec<InstructorView>),
        (status = 429, response = RateLimited),
        (status = 503, response = Unavailable)
    )
)]
#[tracing::instrument(skip_all)]
pub async fn list(State(state): State<AppState>) -> ApiResult<Json<Vec<InstructorView>>> {
    // the left join makes every service column nullable: said explicitly with `?`
    let rows: Vec<InstructorServiceRow> = sqlx::query_as!(
        InstructorServiceRow,
        r#"select u.id, u.full_name as name, u.timezone, s.id as "service_id?",
                  s.name as "service_name?", s.duration_minutes as "duration?", s.price_cents as "price?"
           from instructor_profiles p
           join users u on u.id = p.user_id and u.erased_at is null
           left join services s on s.instructor_id = p.user_id and s.is_active
           order by u.id, s.id"#
    )
    .fetch_all(&state.db)
    .await?;
    let mut by_id: BTreeMap<i64, InstructorView> = BTreeMap::new();
    for InstructorServiceRow {
        id,
        name,
        timezone,
        service_id,
        service_name,
        duration,
        price,
    } in rows
    {
        let entry = by_id.entry(id).or_insert_with(|| InstructorView {
            id,
            name,
            timezone,
            services: Vec::new(),
        });
        if let (Some(id), Some(name), Some(duration_minutes), Some(price_cents)) =
            (service_id, service_name, duration, price)
        {
            entry.services.push(ServiceView {
                id,
                name,
                duration_minutes,
                price_cents,
            });
        }
    }
    Ok(Json(by_id.into_values().collect()))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AvailabilityQuery {
    /// First local day (YYYY-MM-DD).
    start_date: NaiveDate,
    /// Last local day (YYYY-MM-DD), inclusive: not before start_date, and fewer than 62 days
    /// after it.
    end_date: NaiveDate,
}

/// A free interval.
#[derive(Serialize, ToSchema, Debug, PartialEq, Eq, Clone, Copy)]
#[serde(deny_unknown_fields)]
pub struct Range {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

/// An instructor's free time.
#[derive(Serialize, ToSchema)]
#[schema(as = Availability)]
#[serde(deny_unknown_fields)]
pub struct AvailabilityView {
    instructor_id: i64,
    ranges: Vec<Range>,
}

/// The longest window one availability request may cover.
const MAX_AVAILABILITY_DAYS: i64 = 62;

/// An instructor's free time: availability minus confirmed bookings, from the advance-booking
/// limit on.
///
/// Public; rate limited per client. Dates are the instructor's local days; at most 62 days
/// per request (end_date before start_date, or too long a range: 422 invalid_range). Unknown
/// query parameters are refused (400 invalid_query).
#[utoipa::path(
    get,
    path = "/api/v1/public/instructors/{id}/availability",
    tag = "public",
    operation_id = "instructorAvailability",
    params(("id" = i64, Path, description = "The instructor id."), AvailabilityQuery),
    responses(
        (status = 200, description = "Free ranges, in order.", body = AvailabilityView),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
        (status = 422, response = Unprocessable),
        (status = 429, response = RateLimited),
        (status = 503, response = Unavailable)
    )
)]
#[tracing::instrument(skip_all, fields(instructor_id = id))]
pub async fn availability(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    Query(query): Query<AvailabilityQuery>,
) -> ApiResult<Json<AvailabilityView>> {
    if query.end_date < query.start_date {
        return Err(ApiError::invalid(
            "invalid_range",
            "end_date",
            "end_date is before start_date",
        ));
    }
    if (query.end_date - query.start_date).num_days() >= MAX_AVAILABILITY_DAYS {
        return Err(ApiError::invalid(
            "invalid_range",
            "end_date",
            format!("at most {MAX_AVAILABILITY_DAYS} days per request"),
        ));
    }
    let exists: Option<i32> = sqlx::query_scalar!(
        "select p.min_advance_booking_hours from instructor_profiles p join users u on u.id = p.user_id
         where p.user_id = $1 and u.erased_at is null",
        id
    )
    .fetch_optional(&state.db)
    .await?;
    let Some(min_advance_hours) = exists else {
        return Err(ApiError::NotFound("instructor"));
    };
    // local wall-clock ranges become instants in the instructor's zone, as the booking check does
    let open: Vec<(DateTime<Utc>, DateTime<Utc>)> = sqlx::query!(
        r#"select (a.date + a.start_time) at time zone u.timezone as "opens!",
                  (a.date + a.end_time) at time zone u.timezone as "closes!"
           from availability a join users u on u.id = a.instructor_id
           where a.instructor_id = $1 and a.date between $2 and $3 order by 1"#,
        id,
        query.start_date,
        query.end_date
    )
    .map(|r| (r.opens, r.closes))
    .fetch_all(&state.db)
    .await?;
    let busy: Vec<(DateTime<Utc>, DateTime<Utc>)> = sqlx::query!(
        "select starts_at, ends_at from bookings
         where instructor_id = $1 and status = 'confirmed' and ends_at > $2 and starts_at < $3 order by starts_at",
        id,
        open.first().map(|r| r.0).unwrap_or_else(Utc::now),
        open.last().map(|r| r.1).unwrap_or_else(Utc::now)
    )
    .map(|r| (r.starts_at, r.ends_at))
    .fetch_all(&state.db)
    .await?;
    let earliest = state.clock.now() + chrono::Duration::hours(i64::from(min_advance_hours));
    Ok(Json(AvailabilityView {
        instructor_id: id,
        ranges: free_ranges(&open, &busy, earliest),
    }))
}

/// Open ranges minus busy ranges, clipped to start no earlier than `earliest`.
pub fn free_ranges(
    open: &[(DateTime<Utc>, DateTime<Utc>)],
    busy: &[(DateTime<Utc>, DateTime<Utc>)],
    earliest: DateTime<Utc>,
) -> Vec<Range> {
    let mut free = Vec::new();
    for &(open_start, open_end) in open {
        let mut cursor = open_start.max(earliest);
        for &(busy_start, busy_end) in busy {
            if busy_end <= cursor || busy_start >= open_end {
                continue;
            }
            if busy_start > cursor {
                free.push(Range {
                    start: cursor,
                    end: busy_start,
                });
            }
            cursor = cursor.max(busy_end);
        }
        if cursor < open_end {
            free.push(Range {
                start: cursor,
                end: open_end,
            });
        }
    }
    free
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn at(h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 5, 1, h, 0, 0)
            .single()
            .expect("test value")
    }

    #[test]
    fn bookings_cut_holes_in_availability() {
        let free = free_ranges(
            &[(at(8), at(20))],
            &[(at(10), at(11)), (at(11), at(12)), (at(15), at(16))],
            at(0),
        );
        assert_eq!(
            free,
            vec![
                Range {
                    start: at(8),
                    end: at(10)
                },
                Range {
                    start: at(12),
                    end: at(15)
                },
                Range {
                    start: at(16),
                    end: at(20)
                }
            ]
        );
    }

    #[test]
    fn the_past_and_the_advance_window_are_not_free() {
        assert_eq!(
            free_ranges(&[(at(8), at(20))], &[], at(19)),
            vec![Range {
                start: at(19),
                end: at(20)
            }]
        );
        assert!(free_ranges(&[(at(8), at(20))], &[], at(21)).is_empty());
    }
}
