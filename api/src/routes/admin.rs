//! The ops dashboard's JSON twin (issue 13): queue depth, the overview, jobs by filter (keyset
//! pages) with their error history, and the actions: retry or discard one job or all that
//! match a filter, pause and resume a queue, trigger or pause a schedule, and the audit log
//! of those actions. `ops_viewer` reads; `ops_operator` and `admin` act (`crate::ops` checks
//! and audits, for the dashboard too). Postgres holds the truth about every job.
use std::time::Duration;

use axum::{Json, extract::State};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shared::{
    queue,
    records::{self, BulkAction, JobFilter, JobState},
};
use utoipa::{IntoParams, ToSchema};

use super::openapi::{
    BadRequest, Conflict, Forbidden, JobStatusChange, JobStatusView, NotFound, Unauthorized,
    Unavailable, Unprocessable, UnsupportedMediaType,
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
    /// Paused by an operator: not relayed, not fetched.
    paused: bool,
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
    user.actor().require_view()?;
    let now = state.clock.now();
    let counts = records::counts(&state.db).await?;
    let paused = shared::pauses::paused_queues(&state.db).await?;
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
            paused: paused.iter().any(|p| &p.queue == name),
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
    /// Jobs whose payload has this `kind` (a booking email's `confirmation`, `reminder`...).
    #[serde(default)]
    kind: Option<String>,
    /// Jobs whose last error contains this text (case-insensitive).
    #[serde(default)]
    error: Option<String>,
    /// Jobs about this booking.
    #[serde(default)]
    booking_id: Option<i64>,
    /// Jobs about this user (their bookings and privacy requests).
    #[serde(default)]
    user_id: Option<i64>,
    /// Created at or after this instant.
    #[serde(default)]
    from: Option<DateTime<Utc>>,
    /// Created before this instant.
    #[serde(default)]
    to: Option<DateTime<Utc>>,
    /// Keyset pagination: only jobs with an id below this (the last id of the previous page).
    #[serde(default)]
    before: Option<i64>,
    /// At most this many (default 100); clamped to 1..=1000.
    #[serde(default)]
    limit: Option<i64>,
}

impl JobsQuery {
    fn filter(&self) -> ApiResult<JobFilter> {
        let state = crate::ops::parse_state(self.status.as_deref().unwrap_or("dead"), "status")?;
        Ok(JobFilter {
            state: Some(state),
            queue: self.queue.clone().filter(|q| !q.is_empty()),
            kind: self.kind.clone().filter(|k| !k.is_empty()),
            error: self.error.clone().filter(|e| !e.is_empty()),
            booking_id: self.booking_id,
            user_id: self.user_id,
            from: self.from,
            to: self.to,
        })
    }
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

/// Jobs in one status (dead by default) matching the filter, newest first, with their error
/// history. Paginated by keyset: pass the last id of a page as `before` for the next.
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
    user.actor().require_view()?;
    let filter = query.filter()?;
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    let mut jobs = Vec::new();
    for r in records::list_filtered(&state.db, &filter, query.before, limit).await? {
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
    crate::ops::act_on_job(&state, user.actor(), BulkAction::Retry, id).await?;
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
    crate::ops::act_on_job(&state, user.actor(), BulkAction::Discard, id).await?;
    Ok(Json(serde_json::json!({"id": id, "status": "skipped"})))
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
    user.actor().require_view()?;
    let now = state.clock.now();
    shared::schedule::status(&state.db, now)
        .await
        .map(Json)
        .map_err(ApiError::from)
}

/// The overview: per queue waiting, scheduled, in flight, succeeded and failed in the last
/// hour and day, dead letters and the oldest waiting age; the outbox; throughput per minute
/// over the last hour; the workers alive; Redis and this API's Postgres pool.
#[utoipa::path(
    get,
    path = "/api/v1/admin/overview",
    tag = "admin",
    operation_id = "adminOverview",
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "The overview.", body = crate::ops::Overview),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 503, response = Unavailable)
    )
)]
pub async fn overview(
    State(state): State<AppState>,
    user: AuthUser,
) -> ApiResult<Json<crate::ops::Overview>> {
    user.actor().require_view()?;
    crate::ops::overview(&state).await.map(Json)
}

/// A job with every attempt's error and its email ledger entries.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobDetailView {
    job: JobView,
    /// The email ledger entries of its booking (its kind) or privacy request.
    emails: Vec<crate::ops::EmailEntry>,
}

/// One job, whatever its state: payload (ids only), every attempt with its error, and its
/// email ledger entries.
#[utoipa::path(
    get,
    path = "/api/v1/admin/jobs/{id}",
    tag = "admin",
    operation_id = "adminJob",
    security(("bearerAuth" = [])),
    params(("id" = i64, Path, description = "The job id.")),
    responses(
        (status = 200, description = "The job.", body = JobDetailView),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 503, response = Unavailable)
    )
)]
pub async fn job(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<i64>,
) -> ApiResult<Json<JobDetailView>> {
    user.actor().require_view()?;
    let detail = crate::ops::job(&state, id).await?;
    let r = detail.job;
    Ok(Json(JobDetailView {
        job: JobView {
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
            errors: detail
                .errors
                .into_iter()
                .map(|e| ErrorView {
                    attempt: e.attempt,
                    error: e.error,
                    at: e.at,
                })
                .collect(),
        },
        emails: detail.emails,
    }))
}

/// How many jobs match a filter.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobCount {
    count: i64,
}

/// How many jobs match the filter of `GET /api/v1/admin/jobs` (`before` and `limit` are
/// ignored): what a bulk action on it would touch.
#[utoipa::path(
    get,
    path = "/api/v1/admin/jobs/count",
    tag = "admin",
    operation_id = "adminJobCount",
    security(("bearerAuth" = [])),
    params(JobsQuery),
    responses(
        (status = 200, description = "The count.", body = JobCount),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 422, response = Unprocessable),
        (status = 503, response = Unavailable)
    )
)]
pub async fn job_count(
    State(state): State<AppState>,
    user: AuthUser,
    Query(query): Query<JobsQuery>,
) -> ApiResult<Json<JobCount>> {
    user.actor().require_view()?;
    let count = records::count_filtered(&state.db, &query.filter()?).await?;
    Ok(Json(JobCount { count }))
}

/// A bulk action and the filter it applies to.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkRequest {
    #[schema(inline)]
    action: crate::ops::BulkActionView,
    /// `dead` or `skipped` for a retry, `dead` for a discard.
    #[schema(value_type = JobStatusView)]
    status: String,
    #[serde(default)]
    queue: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    booking_id: Option<i64>,
    #[serde(default)]
    user_id: Option<i64>,
    #[serde(default)]
    from: Option<DateTime<Utc>>,
    #[serde(default)]
    to: Option<DateTime<Utc>>,
    /// Required (true) when nothing but the status filters: every job in that status.
    #[serde(default)]
    all: bool,
}

/// Retry or discard every job matching a filter, in batches of 500 (one transaction and
/// one audit entry each; the relay is never blocked). With no filter but the status the
/// request must say `all: true`; otherwise it is refused (422 `filter_required`) with the
/// count it would touch in the detail. `GET /api/v1/admin/jobs/count` gives the count first.
#[utoipa::path(
    post,
    path = "/api/v1/admin/jobs/bulk",
    tag = "admin",
    operation_id = "adminBulkJobs",
    security(("bearerAuth" = [])),
    request_body = BulkRequest,
    responses(
        (status = 200, description = "What was done.", body = crate::ops::BulkOutcome),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = Unprocessable),
        (status = 503, response = Unavailable)
    )
)]
pub async fn bulk(
    State(state): State<AppState>,
    user: AuthUser,
    crate::extract::Json(request): crate::extract::Json<BulkRequest>,
) -> ApiResult<Json<crate::ops::BulkOutcome>> {
    user.actor().require_act()?;
    let action = match request.action {
        crate::ops::BulkActionView::Retry => BulkAction::Retry,
        crate::ops::BulkActionView::Discard => BulkAction::Discard,
    };
    let filter = JobFilter {
        state: Some(crate::ops::parse_state(&request.status, "status")?),
        queue: request.queue.filter(|q| !q.is_empty()),
        kind: request.kind.filter(|k| !k.is_empty()),
        error: request.error.filter(|e| !e.is_empty()),
        booking_id: request.booking_id,
        user_id: request.user_id,
        from: request.from,
        to: request.to,
    };
    crate::ops::bulk(&state, user.actor(), action, &filter, request.all)
        .await
        .map(Json)
}

/// A queue's pause state after an action.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueuePauseView {
    queue: String,
    paused: bool,
    /// Whether the action changed it (false: it already was).
    changed: bool,
}

/// Pause a queue: the relay stops moving its records to Redis and the workers stop
/// fetching from it (within a second), until it is resumed. Survives restarts.
#[utoipa::path(
    post,
    path = "/api/v1/admin/queues/{queue}/pause",
    tag = "admin",
    operation_id = "adminPauseQueue",
    security(("bearerAuth" = [])),
    params(("queue" = String, Path, description = "The queue name.")),
    responses(
        (status = 200, description = "The queue, paused.", body = QueuePauseView),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 503, response = Unavailable)
    )
)]
pub async fn pause_queue(
    State(state): State<AppState>,
    user: AuthUser,
    Path(queue): Path<String>,
) -> ApiResult<Json<QueuePauseView>> {
    let changed = crate::ops::set_queue_paused(&state, user.actor(), &queue, true).await?;
    Ok(Json(QueuePauseView {
        queue,
        paused: true,
        changed,
    }))
}

/// Resume a paused queue.
#[utoipa::path(
    post,
    path = "/api/v1/admin/queues/{queue}/resume",
    tag = "admin",
    operation_id = "adminResumeQueue",
    security(("bearerAuth" = [])),
    params(("queue" = String, Path, description = "The queue name.")),
    responses(
        (status = 200, description = "The queue, running.", body = QueuePauseView),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 503, response = Unavailable)
    )
)]
pub async fn resume_queue(
    State(state): State<AppState>,
    user: AuthUser,
    Path(queue): Path<String>,
) -> ApiResult<Json<QueuePauseView>> {
    let changed = crate::ops::set_queue_paused(&state, user.actor(), &queue, false).await?;
    Ok(Json(QueuePauseView {
        queue,
        paused: false,
        changed,
    }))
}

/// A schedule's pause state after an action.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SchedulePauseView {
    name: String,
    paused: bool,
    changed: bool,
}

/// Pause a schedule: the leader fires none of its slots until it is resumed (the slots
/// that pass meanwhile are not fired afterwards).
#[utoipa::path(
    post,
    path = "/api/v1/admin/schedules/{name}/pause",
    tag = "admin",
    operation_id = "adminPauseSchedule",
    security(("bearerAuth" = [])),
    params(("name" = String, Path, description = "The schedule name.")),
    responses(
        (status = 200, description = "The schedule, paused.", body = SchedulePauseView),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 503, response = Unavailable)
    )
)]
pub async fn pause_schedule(
    State(state): State<AppState>,
    user: AuthUser,
    Path(name): Path<String>,
) -> ApiResult<Json<SchedulePauseView>> {
    let changed = crate::ops::set_schedule_paused(&state, user.actor(), &name, true).await?;
    Ok(Json(SchedulePauseView {
        name,
        paused: true,
        changed,
    }))
}

/// Resume a paused schedule.
#[utoipa::path(
    post,
    path = "/api/v1/admin/schedules/{name}/resume",
    tag = "admin",
    operation_id = "adminResumeSchedule",
    security(("bearerAuth" = [])),
    params(("name" = String, Path, description = "The schedule name.")),
    responses(
        (status = 200, description = "The schedule, running.", body = SchedulePauseView),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 503, response = Unavailable)
    )
)]
pub async fn resume_schedule(
    State(state): State<AppState>,
    user: AuthUser,
    Path(name): Path<String>,
) -> ApiResult<Json<SchedulePauseView>> {
    let changed = crate::ops::set_schedule_paused(&state, user.actor(), &name, false).await?;
    Ok(Json(SchedulePauseView {
        name,
        paused: false,
        changed,
    }))
}

/// A trigger request.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TriggerView {
    name: String,
    /// The request's id; the leading scheduler carries it out within a tick.
    request_id: i64,
}

/// Run a schedule now, outside its slots: the leading scheduler enqueues one run with a key
/// of its own, as `scheduler trigger <name>` does.
#[utoipa::path(
    post,
    path = "/api/v1/admin/schedules/{name}/trigger",
    tag = "admin",
    operation_id = "adminTriggerSchedule",
    security(("bearerAuth" = [])),
    params(("name" = String, Path, description = "The schedule name.")),
    responses(
        (status = 202, description = "Requested.", body = TriggerView),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 503, response = Unavailable)
    )
)]
pub async fn trigger_schedule(
    State(state): State<AppState>,
    user: AuthUser,
    Path(name): Path<String>,
) -> ApiResult<(axum::http::StatusCode, Json<TriggerView>)> {
    let request_id = crate::ops::trigger_schedule(&state, user.actor(), &name).await?;
    Ok((
        axum::http::StatusCode::ACCEPTED,
        Json(TriggerView { name, request_id }),
    ))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Keyset pagination: entries with an id below this.
    #[serde(default)]
    before: Option<i64>,
    /// At most this many (default 100); clamped to 1..=1000.
    #[serde(default)]
    limit: Option<i64>,
}

/// The ops audit log: every dashboard or API action (who, what, which jobs, when), newest
/// first.
#[utoipa::path(
    get,
    path = "/api/v1/admin/audit",
    tag = "admin",
    operation_id = "adminOpsAudit",
    security(("bearerAuth" = [])),
    params(AuditQuery),
    responses(
        (status = 200, description = "The entries.", body = Vec<shared::audit::OpsEntry>),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 503, response = Unavailable)
    )
)]
pub async fn audit(
    State(state): State<AppState>,
    user: AuthUser,
    Query(query): Query<AuditQuery>,
) -> ApiResult<Json<Vec<shared::audit::OpsEntry>>> {
    user.actor().require_view()?;
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    shared::audit::ops_entries(&state.db, query.before, limit)
        .await
        .map(Json)
        .map_err(ApiError::from)
}
