//! Liveness, readiness and the Prometheus scrape endpoint.
use std::time::Duration;

use axum::{Json, extract::State, http::StatusCode, response::IntoResponse};
use serde_json::json;

use crate::state::AppState;

/// The process is alive.
pub async fn health() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// Postgres and Redis both answer.
pub async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    let postgres = tokio::time::timeout(
        Duration::from_secs(2),
        sqlx::query_scalar!("select 1 as one").fetch_one(&state.db),
    )
    .await
    .map(|r| r.is_ok())
    .unwrap_or(false);
    let redis = tokio::time::timeout(Duration::from_secs(2), async {
        let mut conn = state.redis.get_multiplexed_async_connection().await?;
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
    let word = |ok| if ok { "ok" } else { "unavailable" };
    (
        status,
        Json(json!({"postgres": word(postgres), "redis": word(redis)})),
    )
}

/// Prometheus text format.
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [("content-type", "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}
