//! Admin search analytics: reading the nightly rollups, and asking for days to be computed
//! again (one rollup job per day, through the outbox). Nothing is aggregated here.
use axum::{Json, extract::State, http::StatusCode};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use shared::{
    domain::Role,
    jobs::{JobArgs, SearchRollup},
    outbox,
};

use utoipa::{IntoParams, ToSchema};

use super::openapi::{
    BadRequest, Forbidden, PayloadTooLarge, Unauthorized, Unavailable, Unprocessable,
    UnsupportedMediaType,
};
use crate::{
    auth::AuthUser,
    error::{ApiError, ApiResult},
    extract::{Json as JsonBody, Query},
    state::AppState,
};

/// The longest range read or recomputed at once, in days.
pub const MAX_RANGE_DAYS: i64 = 366;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AnalyticsQuery {
    from: NaiveDate,
    /// Not before from; at most 365 days after it (422 invalid_range).
    to: NaiveDate,
}

/// A normalized query and how often it was searched.
#[derive(ToSchema)]
#[allow(dead_code)] // a schema only: the lists are read as the rollup stored them
pub struct QueryCount {
    query: String,
    #[schema(minimum = 1)]
    count: i64,
}

/// One local day in ANALYTICS_TZ (default America/New_York; 23 or 25 hours on DST days), as
/// the rollup computed it. Bots are counted in bot_searches only and left out of everything
/// else; each rate is null when its denominator is 0.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = SearchDay)]
#[serde(deny_unknown_fields)]
pub struct DayView {
    date: NaiveDate,
    /// Search events in the day, one per search_id, bots excluded.
    searches: i32,
    bot_searches: i32,
    /// Distinct users plus distinct guest sessions.
    unique_searchers: i32,
    /// Searches with result_count 0 / searches.
    #[schema(minimum = 0, maximum = 1)]
    zero_result_rate: Option<f64>,
    /// Searches with results and at least one click / searches with at least one result.
    #[schema(minimum = 0, maximum = 1)]
    click_through_rate: Option<f64>,
    /// Searches with at least one conversion / searches.
    #[schema(minimum = 0, maximum = 1)]
    conversion_rate: Option<f64>,
    /// The 20 most frequent normalized queries, ties by query text.
    #[schema(value_type = Vec<QueryCount>, max_items = 20)]
    top_queries: serde_json::Value,
    #[schema(value_type = Vec<QueryCount>, max_items = 20)]
    top_zero_result_queries: serde_json::Value,
    /// When these numbers were computed (a rerun that finds the same numbers keeps it).
    computed_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = SearchAnalytics)]
#[serde(deny_unknown_fields)]
pub struct AnalyticsView {
    /// The rolled-up days of the range, oldest first; days not rolled up are absent.
    days: Vec<DayView>,
}

/// Refuses `from` after `to` and ranges of more than [`MAX_RANGE_DAYS`] days.
fn check_range(from: NaiveDate, to: NaiveDate) -> ApiResult<()> {
    if to < from {
        return Err(ApiError::invalid(
            "invalid_range",
            "to",
            "to is before from",
        ));
    }
    if (to - from).num_days() >= MAX_RANGE_DAYS {
        return Err(ApiError::invalid(
            "invalid_range",
            "to",
            format!("at most {MAX_RANGE_DAYS} days"),
        ));
    }
    Ok(())
}

/// The search analytics rollups of a range of local days (at most 366).
#[utoipa::path(
    get,
    path = "/api/v1/admin/analytics/search",
    tag = "admin",
    operation_id = "adminSearchAnalytics",
    security(("bearerAuth" = [])),
    params(AnalyticsQuery),
    responses(
        (status = 200, description = "The rolled-up days.", body = AnalyticsView),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 422, response = Unprocessable),
        (status = 503, response = Unavailable)
    )
)]
#[tracing::instrument(skip_all)]
pub async fn search(
    State(state): State<AppState>,
    user: AuthUser,
    Query(query): Query<AnalyticsQuery>,
) -> ApiResult<Json<AnalyticsView>> {
    user.require(Role::Admin)?;
    check_range(query.from, query.to)?;
    let days = sqlx::query_as!(
        DayView,
        "select day as date, searches, bot_searches, unique_searchers, zero_result_rate,
                click_through_rate, conversion_rate, top_queries, top_zero_result_queries,
                computed_at
         from search_rollups where day between $1 and $2 order by day",
        query.from,
        query.to
    )
    .fetch_all(&state.db)
    .await?;
    Ok(Json(AnalyticsView { days }))
}

/// Either date, or from and to (at most 366 days, none after today in ANALYTICS_TZ).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RollupRequest {
    #[serde(default)]
    date: Option<NaiveDate>,
    #[serde(default)]
    from: Option<NaiveDate>,
    #[serde(default)]
    to: Option<NaiveDate>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RollupsQueued {
    /// The days to be computed, oldest first.
    days: Vec<NaiveDate>,
    /// The job of each day, in the same order.
    job_ids: Vec<i64>,
}

/// Compute days again: one rollup job per day, through the outbox.
///
/// A day already rolled up is computed again: the jobs are keyed by this request, so the
/// nightly run's key does not swallow them.
#[utoipa::path(
    post,
    path = "/api/v1/admin/analytics/rollups",
    tag = "admin",
    operation_id = "adminRequestSearchRollups",
    security(("bearerAuth" = [])),
    request_body = RollupRequest,
    responses(
        (status = 202, description = "The jobs, one per day.", body = RollupsQueued),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = Unprocessable),
        (status = 503, response = Unavailable)
    )
)]
#[tracing::instrument(skip_all)]
pub async fn rollups(
    State(state): State<AppState>,
    user: AuthUser,
    JsonBody(body): JsonBody<RollupRequest>,
) -> ApiResult<(StatusCode, Json<RollupsQueued>)> {
    user.require(Role::Admin)?;
    let (from, to) = match (body.date, body.from, body.to) {
        (Some(date), None, None) => (date, date),
        (None, Some(from), Some(to)) => (from, to),
        (Some(_), _, _) => {
            return Err(ApiError::invalid(
                "invalid_range",
                "date",
                "send either date, or from and to",
            ));
        }
        (None, None, _) => {
            return Err(ApiError::invalid(
                "missing_date",
                "date",
                "send date, or from and to",
            ));
        }
        (None, Some(_), None) => {
            return Err(ApiError::invalid("missing_date", "to", "from needs to"));
        }
    };
    check_range(from, to)?;
    let now = state.clock.now();
    let today = now.with_timezone(&state.config.analytics_tz()).date_naive();
    if to > today {
        return Err(ApiError::invalid(
            "future_date",
            if body.date.is_some() { "date" } else { "to" },
            format!("days up to today ({today}) can be rolled up"),
        ));
    }
    let request = uuid::Uuid::new_v4().simple().to_string();
    let days: Vec<NaiveDate> = from.iter_days().take_while(|d| *d <= to).collect();
    let mut tx = state.db.begin().await?;
    let mut job_ids = Vec::with_capacity(days.len());
    for day in &days {
        let args = SearchRollup { day: *day };
        // the day's own key may be taken by its nightly run: this request's key is not
        let key = format!("{}:manual:{request}", args.dedupe_key());
        let id = outbox::enqueue_record(&mut tx, &outbox::Record::keyed(&args, key, now)?)
            .await?
            .ok_or_else(|| ApiError::Internal("a fresh rollup key was taken".into()))?;
        job_ids.push(id);
    }
    tx.commit().await?;
    state.outbox.wake();
    tracing::info!(days = days.len(), %from, %to, "search rollups requested by an admin");
    Ok((StatusCode::ACCEPTED, Json(RollupsQueued { days, job_ids })))
}
