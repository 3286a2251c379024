//! Liveness, readiness and the Prometheus scrape endpoint.
use std::time::Duration;

use axum::{Json, extract::State, http::StatusCode, response::IntoResponse};
use serde::Serialize;
use utoipa::ToSchema;

use crate::state::AppState;

/// The answer of `/health`.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Health {
    #[schema(inline)]
    status: Alive,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Alive {
    Ok,
}

/// The answer of `/ready`: each dependency's state.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Readiness {
    postgres: Dependency,
    redis: Dependency,
}

/// Whether a dependency answered.
#[derive(Serialize, ToSchema, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Dependency {
    Ok,
    Unavailable,
}

impl Dependency {
    fn from_answered(answered: bool) -> Self {
        if answered {
            Dependency::Ok
        } else {
            Dependency::Unavailable
        }
    }
}

/// The process is alive.
#[utoipa::path(
    get,
    path = "/health",
    tag = "ops",
    operation_id = "health",
    responses((status = 200, description = "Alive.", body = Health))
)]
pub async fn health() -> Json<Health> {
    Json(Health { status: Alive::Ok })
}

/// Postgres and Redis both answer.
#[utoipa::path(
    get,
    path = "/ready",
    tag = "ops",
    operation_id = "ready",
    responses(
        (status = 200, description = "Ready.", body = Readiness),
        (status = 503, description = "A dependency does not answer.", body = Readiness)
    )
)]
pub async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    let postgres = tokio::time::timeout(
        Duration::from_secs(2),
        sqlx::query_scalar!("select 1 as one").fetch_one(&state.db),
    )
    .await
    .map(|r| r.is_ok())
    .unwrap_or(false);
    let redis = tokio::time::timeout(Duration::from_secs(2), async {
        let mut conn = shared::queue::connect(&*state.redis).await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await
    })
    .await
    .map(|r| r.is_ok())
    .unwrap_or(false);
    let status = if postgres && redis {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(Readiness {
            postgres: Dependency::from_answered(postgres),
            redis: Dependency::from_answered(redis),
        }),
    )
}

/// Prometheus text exposition.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "ops",
    operation_id = "metrics",
    responses((status = 200, description = "Counters and histograms.", content_type = "text/plain", body = String))
)]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [("content-type", "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}
