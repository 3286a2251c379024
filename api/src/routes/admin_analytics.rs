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

use crate::{
    auth::AuthUser,
    error::{ApiError, ApiResult},
    extract::{Json as JsonBody, Query},
    state::AppState,
};

/// The longest range read or recomputed at once, in days.
pub const MAX_RANGE_DAYS: i64 = 366;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalyticsQuery {
    from: NaiveDate,
    to: NaiveDate,
}

/// One rolled-up day, as the nightly job computed it.
#[derive(Debug, Serialize)]
pub struct DayView {
    date: NaiveDate,
    searches: i32,
    bot_searches: i32,
    unique_searchers: i32,
    zero_result_rate: Option<f64>,
    click_through_rate: Option<f64>,
    conversion_rate: Option<f64>,
    top_queries: serde_json::Value,
    top_zero_result_queries: serde_json::Value,
    computed_at: DateTime<Utc>,
}

#[derive(Debug, Serialize)]
pub struct AnalyticsView {
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

/// `GET /api/v1/admin/analytics/search?from=&to=`: the rolled-up days in the range (days
/// not rolled up yet are absent), oldest first.
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollupRequest {
    #[serde(default)]
    date: Option<NaiveDate>,
    #[serde(default)]
    from: Option<NaiveDate>,
    #[serde(default)]
    to: Option<NaiveDate>,
}

#[derive(Debug, Serialize)]
pub struct RollupsQueued {
    /// The days to be computed, oldest first.
    days: Vec<NaiveDate>,
    /// The job of each day, in the same order.
    job_ids: Vec<i64>,
}

/// `POST /api/v1/admin/analytics/rollups` with `{"date"}` or `{"from", "to"}`: one rollup
/// job per day, answered 202 with their ids. A day already rolled up is computed again: the
/// jobs carry a key of this request, so the nightly run's key does not swallow them.
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
