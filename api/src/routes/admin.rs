//! Ops endpoints (admins only): queue depth, the dead letters with their error history, and
//! sending a dead job back or discarding it. Postgres holds the truth about every job.
use std::time::Duration;

use axum::{Json, extract::State};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shared::{domain::Role, jobs::ALL_QUEUES, queue};
use utoipa::{IntoParams, ToSchema};

use super::openapi::{
    BadRequest, Conflict, Forbidden, JobStatusChange, JobStatusView, NotFound, Unauthorized,
    Unavailable, Unprocessable,
};

use crate::{
    auth::AuthUser,
    error::{ApiError, ApiResult},
    extract::{Path, Query},
    state::AppState,
};

/// One queue: its job records by status (Postgres), outbox lag, and Redis counts.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueueView {
    queue: String,
    /// From Postgres: records by status.
    pending: i64,
    enqueued: i64,
    running: i64,
    done: i64,
    skipped: i64,
    dead: i64,
    /// Seconds the oldest due, not yet relayed record has waited.
    outbox_lag_seconds: f64,
    /// From Redis, when it answers.
    #[schema(required = true)]
    redis: Option<queue::QueueStats>,
}

/// Every queue: job records by status (Postgres), outbox lag, and Redis counts when Redis
/// answers.
#[utoipa::path(
    get,
    path = "/api/v1/admin/queues",
    tag = "admin",
    operation_id = "adminQueues",
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "One entry per queue.", body = Vec<QueueView>),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 503, response = Unavailable)
    )
)]
pub async fn queues(
    State(state): State<AppState>,
    user: AuthUser,
) -> ApiResult<Json<Vec<QueueView>>> {
    user.require(Role::Admin)?;
    let now = state.clock.now();
    let rows: Vec<(String, String, i64)> = sqlx::query!(
        // running: see `jobs`
        r#"select queue, case when status = 'enqueued' and started_at is not null then 'running'
                              else status end as "status!", count(*) as "count!"
           from jobs group by 1, 2"#
    )
    .map(|r| (r.queue, r.status, r.count))
    .fetch_all(&state.db)
    .await?;
    let lag: Vec<(String, Option<DateTime<Utc>>)> = sqlx::query!(
        "select queue, min(run_at) as oldest from jobs where status = 'pending' and run_at <= $1 group by queue",
        now
    )
    .map(|r| (r.queue, r.oldest))
    .fetch_all(&state.db)
    .await?;
    let mut redis = state
        .queues
        .get_or_try_init(|| async {
            tokio::time::timeout(
                Duration::from_secs(2),
                shared::queue::connect(&state.config.redis_url),
            )
            .await
            .map_err(|_| ())?
            .map_err(|_| ())
        })
        .await
        .ok()
        .cloned();
    let mut views = Vec::new();
    for name in ALL_QUEUES {
        let count = |status: &str| {
            rows.iter()
                .filter(|(q, s, _)| q == name && s == status)
                .map(|(_, _, n)| *n)
                .sum::<i64>()
        };
        let oldest = lag.iter().find(|(q, _)| q == name).and_then(|(_, t)| *t);
        let redis_stats = match redis.as_mut() {
            Some(conn) => {
                let config = queue::queue_config(
                    &state.config.queue_prefix,
                    name,
                    Duration::from_secs(state.config.heartbeat_secs),
                );
                // the cached connection retries on its own: bound the wait during an outage
                tokio::time::timeout(Duration::from_secs(2), queue::stats(conn, &config))
                    .await
                    .ok()
                    .and_then(Result::ok)
            }
            None => None,
        };
        views.push(QueueView {
            queue: name.to_string(),
            pending: count("pending"),
            enqueued: count("enqueued"),
            running: count("running"),
            done: count("done"),
            skipped: count("skipped"),
            dead: count("dead"),
            outbox_lag_seconds: oldest
                .map(|t| (now - t).num_milliseconds() as f64 / 1000.0)
                .unwrap_or(0.0),
            redis: redis_stats,
        });
    }
    Ok(Json(views))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct JobsQuery {
    /// Jobs in this status (default dead).
    #[serde(default)]
    #[param(inline, value_type = Option<JobStatusView>)]
    status: Option<String>,
    /// Jobs of this queue only.
    #[serde(default)]
    queue: Option<String>,
    /// At most this many (default 100); clamped to 1..=1000.
    #[serde(default)]
    limit: Option<i64>,
}

/// A job record with its error history.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobView {
    id: i64,
    queue: String,
    /// The job's arguments (ids and small values).
    payload: serde_json::Value,
    #[schema(value_type = JobStatusView)]
    status: String,
    attempts: i32,
    max_attempts: i32,
    #[schema(required = true)]
    last_error: Option<String>,
    run_at: DateTime<Utc>,
    created_at: DateTime<Utc>,
    #[schema(required = true)]
    finished_at: Option<DateTime<Utc>>,
    errors: Vec<ErrorView>,
}

/// One failed attempt.
#[derive(Serialize, ToSchema)]
#[schema(as = JobError)]
#[serde(deny_unknown_fields)]
pub struct ErrorView {
    attempt: i32,
    error: String,
    at: DateTime<Utc>,
}

const STATUSES: &[&str] = &["pending", "enqueued", "running", "done", "skipped", "dead"];

/// Jobs in one status (dead by default), newest first, with their error history.
///
/// Unknown query parameters are refused (400 invalid_query).
#[utoipa::path(
    get,
    path = "/api/v1/admin/jobs",
    tag = "admin",
    operation_id = "adminJobs",
    security(("bearerAuth" = [])),
    params(JobsQuery),
    responses(
        (status = 200, description = "The jobs.", body = Vec<JobView>),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 422, response = Unprocessable),
        (status = 503, response = Unavailable)
    )
)]
pub async fn jobs(
    State(state): State<AppState>,
    user: AuthUser,
    Query(query): Query<JobsQuery>,
) -> ApiResult<Json<Vec<JobView>>> {
    user.require(Role::Admin)?;
    let status = query.status.unwrap_or_else(|| "dead".into());
    if !STATUSES.contains(&status.as_str()) {
        return Err(ApiError::invalid(
            "invalid_status",
            "status",
            format!("one of {}", STATUSES.join(", ")),
        ));
    }
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    // the status as ops read it: an enqueued job whose attempt has started is running (the
    // record keeps `enqueued` so that starting an attempt is a cheap update)
    let mut jobs: Vec<JobView> = sqlx::query!(
        r#"select id as "id!", queue as "queue!", payload as "payload!", status_view as "status!",
                  attempts as "attempts!", max_attempts as "max_attempts!", last_error,
                  run_at as "run_at!", created_at as "created_at!", finished_at
           from (select *, case when status = 'enqueued' and started_at is not null then 'running'
                                else status end as status_view
                 from jobs) j
           where status_view = $1 and ($2::text is null or queue = $2) order by id desc limit $3"#,
        &status,
        query.queue.as_deref(),
        limit
    )
    .map(|r| JobView {
        id: r.id,
        queue: r.queue,
        payload: r.payload,
        status: r.status,
        attempts: r.attempts,
        max_attempts: r.max_attempts,
        last_error: r.last_error,
        run_at: r.run_at,
        created_at: r.created_at,
        finished_at: r.finished_at,
        errors: Vec::new(),
    })
    .fetch_all(&state.db)
    .await?;
    for job in &mut jobs {
        job.errors = sqlx::query_as!(
            ErrorView,
            "select attempt, error, at from job_errors where job_id = $1 order by id",
            job.id
        )
        .fetch_all(&state.db)
        .await?;
    }
    Ok(Json(jobs))
}

/// Send a dead or skipped job back with fresh attempts.
#[utoipa::path(
    post,
    path = "/api/v1/admin/jobs/{id}/retry",
    tag = "admin",
    operation_id = "adminRetryJob",
    security(("bearerAuth" = [])),
    params(("id" = i64, Path, description = "The job id.")),
    responses(
        (status = 200, description = "The job, pending again.", body = JobStatusChange),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 503, response = Unavailable)
    )
)]
pub async fn retry(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<i64>,
) -> ApiResult<Json<serde_json::Value>> {
    user.require(Role::Admin)?;
    let mut tx = state.db.begin().await?;
    let updated = sqlx::query!(
        "update jobs set status = 'pending', attempts = 0, run_at = $2, finished_at = null
         where id = $1 and status in ('dead', 'skipped')",
        id,
        state.clock.now()
    )
    .execute(&mut *tx)
    .await?;
    if updated.rows_affected() == 0 {
        return Err(
            missing_or_conflict(&state, id, "only dead or skipped jobs can be retried").await,
        );
    }
    tx.commit().await?;
    state.outbox.wake();
    tracing::info!(job_id = id, "dead job sent back by an admin");
    Ok(Json(serde_json::json!({"id": id, "status": "pending"})))
}

/// Give up on a dead job for good (it becomes skipped).
#[utoipa::path(
    post,
    path = "/api/v1/admin/jobs/{id}/discard",
    tag = "admin",
    operation_id = "adminDiscardJob",
    security(("bearerAuth" = [])),
    params(("id" = i64, Path, description = "The job id.")),
    responses(
        (status = 200, description = "The job, skipped.", body = JobStatusChange),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 503, response = Unavailable)
    )
)]
pub async fn discard(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<i64>,
) -> ApiResult<Json<serde_json::Value>> {
    user.require(Role::Admin)?;
    let updated = sqlx::query!(
        "update jobs set status = 'skipped', last_error = coalesce(last_error, '') || ' (discarded by an admin)'
         where id = $1 and status = 'dead'",
        id
    )
    .execute(&state.db)
    .await?;
    if updated.rows_affected() == 0 {
        return Err(missing_or_conflict(&state, id, "only dead jobs can be discarded").await);
    }
    Ok(Json(serde_json::json!({"id": id, "status": "skipped"})))
}

async fn missing_or_conflict(state: &AppState, id: i64, detail: &str) -> ApiError {
    match sqlx::query_scalar!("select id from jobs where id = $1", id)
        .fetch_optional(&state.db)
        .await
    {
        Ok(Some(_)) => ApiError::Conflict {
            code: "invalid_state",
            detail: detail.into(),
        },
        Ok(None) => ApiError::NotFound("job"),
        Err(e) => e.into(),
    }
}

/// Every schedule: definition, last fire and its outcome, last success, next fire, leader.
#[utoipa::path(
    get,
    path = "/api/v1/admin/schedules",
    tag = "admin",
    operation_id = "adminSchedules",
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "One entry per schedule, by name.", body = Vec<shared::schedule::ScheduleStatus>),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 503, response = Unavailable)
    )
)]
pub async fn schedules(
    State(state): State<AppState>,
    user: AuthUser,
) -> ApiResult<Json<Vec<shared::schedule::ScheduleStatus>>> {
    user.require(Role::Admin)?;
    let now = state.clock.now();
    shared::schedule::status(&state.db, now)
        .await
        .map(Json)
        .map_err(ApiError::from)
}
