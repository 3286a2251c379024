//! Ops endpoints (admins only): queue depth, the dead letters with their error history, and
//! sending a dead job back or discarding it. Postgres holds the truth about every job.
use std::time::Duration;

use axum::{Json, extract::State};
use serde::{Deserialize, Serialize};
use shared::{
    domain::Role,
    queue,
    records::{self, Acted, JobState},
};

use crate::{
    auth::AuthUser,
    error::{ApiError, ApiResult},
    extract::{Path, Query},
    state::AppState,
};

#[derive(Serialize)]
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
    redis: Option<queue::QueueStats>,
}

/// `GET /api/v1/admin/queues`
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobsQuery {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    queue: Option<String>,
    #[serde(default)]
    limit: Option<i64>,
}

#[derive(Serialize)]
pub struct JobView {
    #[serde(flatten)]
    record: records::JobRecord,
    errors: Vec<records::AttemptError>,
}

/// `GET /api/v1/admin/jobs?status=dead&queue=&limit=`: jobs with their error history.
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
    for record in records::list(&state.db, job_state, query.queue.as_deref(), limit).await? {
        let errors = records::errors(&state.db, record.id).await?;
        jobs.push(JobView { record, errors });
    }
    Ok(Json(jobs))
}

/// `POST /api/v1/admin/jobs/{id}/retry`: sends a dead (or skipped) job back with fresh attempts.
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

/// `POST /api/v1/admin/jobs/{id}/discard`: gives up on a dead job for good.
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

/// `GET /api/v1/admin/schedules`: per schedule its last fire and outcome, next fire and the
/// current scheduler leader.
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
