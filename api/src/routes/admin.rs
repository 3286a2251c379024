//! Ops endpoints (admins only): queue depth, the dead letters with their error history, and
//! sending a dead job back or discarding it. Postgres holds the truth about every job.
use std::time::Duration;

use axum::{Json, extract::State};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shared::{
    domain::Role,
    queue,
    records::{self, Acted, JobState},
};
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
    let counts = records::counts(&state.db).await?;
    let lag = records::oldest_due(&state.db, now).await?;
    // the registered kinds, and any queue that still holds records (a kind since removed)
    let mut names: Vec<String> = records::registered_queues(&state.db)
        .await?
        .into_iter()
        .map(|q| q.queue)
        .collect();
    for (queue, _, _) in &counts {
        if !names.contains(queue) {
            names.push(queue.clone());
        }
    }
    names.sort();
    let mut redis = state
        .queues
        .get_or_try_init(|| async {
            tokio::time::timeout(
                Duration::from_secs(2),
                shared::queue::connect(&state.config.redis()),
            )
            .await
            .map_err(|_| ())?
            .map_err(|_| ())
        })
        .await
        .ok()
        .cloned();
    let mut views = Vec::new();
    for name in &names {
        let count = |state: JobState| {
            counts
                .iter()
                .filter(|(q, s, _)| q == name && *s == state)
                .map(|(_, _, n)| *n)
                .sum::<i64>()
        };
        let oldest = lag.iter().find(|(q, _)| q == name).and_then(|(_, t)| *t);
        let redis_stats = match redis.as_mut() {
            Some(conn) => {
                // the cached connection retries on its own: bound the wait during an outage
                tokio::time::timeout(
                    Duration::from_secs(2),
                    queue::stats_of(
                        conn,
                        &state.config.queue_prefix,
                        std::slice::from_ref(name),
                        Duration::from_secs(state.config.heartbeat_secs),
                        state.config.queue_partitions,
                    ),
                )
                .await
                .ok()
                .and_then(Result::ok)
                .and_then(|mut all| all.pop())
            }
            None => None,
        };
        views.push(QueueView {
            queue: name.clone(),
            pending: count(JobState::Pending),
            enqueued: count(JobState::Enqueued),
            running: count(JobState::Running),
            done: count(JobState::Done),
            skipped: count(JobState::Skipped),
            dead: count(JobState::Dead),
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
    let state_name = query.status.unwrap_or_else(|| "dead".into());
    let Ok(job_state) = state_name.parse::<JobState>() else {
        let names: Vec<&str> = JobState::ALL.iter().map(|s| s.as_str()).collect();
        return Err(ApiError::invalid(
            "invalid_status",
            "status",
            format!("one of {}", names.join(", ")),
        ));
    };
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    let mut jobs = Vec::new();
    for r in records::list(&state.db, job_state, query.queue.as_deref(), limit).await? {
        let errors = records::errors(&state.db, r.id)
            .await?
            .into_iter()
            .map(|e| ErrorView {
                attempt: e.attempt,
                error: e.error,
                at: e.at,
            })
            .collect();
        jobs.push(JobView {
            id: r.id,
            queue: r.queue,
            payload: r.payload,
            status: r.status.as_str().to_string(),
            attempts: r.attempts,
            max_attempts: r.max_attempts,
            last_error: r.last_error,
            run_at: r.run_at,
            created_at: r.created_at,
            finished_at: r.finished_at,
            errors,
        });
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
    acted(
        records::retry(&state.db, id, state.clock.now()).await?,
        "only dead or skipped jobs can be retried",
    )?;
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
    acted(
        records::discard(&state.db, id).await?,
        "only dead jobs can be discarded",
    )?;
    Ok(Json(serde_json::json!({"id": id, "status": "skipped"})))
}

/// The answer to an action on one job that did not apply: 404, or 409 naming its state.
fn acted(acted: Acted, detail: &str) -> ApiResult<()> {
    match acted {
        Acted::Done => Ok(()),
        Acted::Refused(state) => Err(ApiError::Conflict {
            code: "invalid_state",
            detail: format!("{detail}; this job is {}", state.as_str()),
        }),
        Acted::NotFound => Err(ApiError::NotFound("job")),
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
