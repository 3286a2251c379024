//! The thin HTTP API: validates input, writes in one transaction (recording any work it
//! causes in the outbox) and answers. It never sends email or aggregates inline.
pub mod auth;
pub mod error;
pub mod extract;
pub mod rate_limit;
pub mod routes;
pub mod search;
pub mod seed;
pub mod state;

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Router,
    extract::{DefaultBodyLimit, MatchedPath, Request},
    middleware,
    response::IntoResponse,
    routing::{delete, get, post},
};
use shared::{clock::SharedClock, config::Config};
use tower_http::{catch_panic::CatchPanicLayer, trace::TraceLayer};

use crate::{auth::JwtKeys, error::ApiError, rate_limit::RateLimiter, state::AppState};

/// Largest request body accepted.
pub const BODY_LIMIT_BYTES: usize = 64 * 1024;

/// Builds the state from configuration: a pool (not yet connected), the Redis client and keys.
pub async fn build_state(
    config: Config,
    clock: SharedClock,
) -> Result<AppState, shared::error::Error> {
    let db = shared::db::prepare(&config.database_url, config.database_pool_size).await?;
    let redis = redis::Client::open(config.redis_url.as_str())?;
    let ip_hasher = search::client::IpHasher::new(
        config
            .search_ip_hash_key()
            .map_err(|e| shared::error::Error::Other(e.to_string()))?,
    );
    // the months search events are written into; the worker keeps them ahead as well
    if let Err(e) = shared::search::ensure_partitions(&db, clock.now()).await {
        tracing::warn!(error = %e, "could not check the search event partitions");
    }
    Ok(AppState {
        search: search::ingest::Ingest::start(
            db.clone(),
            (config.database_pool_size as usize / 2).clamp(1, 4),
        ),
        ip_hasher,
        outbox: shared::outbox::Waker::start(db.clone()),
        db,
        redis,
        queues: Arc::default(),
        keys: Arc::new(JwtKeys::new(&config.jwt_secret, config.jwt_ttl_minutes)),
        limiter: Arc::new(RateLimiter::new(
            config.rate_limit_per_sec,
            config.rate_limit_burst,
        )),
        config: Arc::new(config),
        clock,
        metrics: shared::telemetry::init_metrics(),
    })
}

/// All routes with their middleware.
pub fn router(state: AppState) -> Router {
    use routes::{admin, admin_analytics, bookings, health, instructors, search};
    // public reads and every write are rate limited per client
    let limited = Router::new()
        .route("/api/v1/instructors", get(instructors::list))
        .route(
            "/api/v1/public/instructors/{id}/availability",
            get(instructors::availability),
        )
        .route(
            "/api/v1/bookings",
            post(bookings::create).get(bookings::list),
        )
        .route("/api/v1/bookings/{id}", get(bookings::get))
        .route("/api/v1/bookings/{id}/cancel", post(bookings::cancel))
        .route(
            "/api/v1/bookings/{id}/reschedule",
            post(bookings::reschedule),
        )
        .route("/api/v1/search/events", post(search::record_event))
        .route(
            "/api/v1/search/events/{id}/interactions",
            post(search::record_interaction),
        )
        .route("/api/v1/search/history", get(search::history))
        .route(
            "/api/v1/search/history/{id}",
            delete(search::delete_history),
        )
        .route("/api/v1/search/history/claim", post(search::claim_history))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            rate_limit::limit,
        ));
    Router::new()
        .merge(limited)
        .route("/api/v1/admin/queues", get(admin::queues))
        .route("/api/v1/admin/jobs", get(admin::jobs))
        .route("/api/v1/admin/jobs/{id}/retry", post(admin::retry))
        .route("/api/v1/admin/jobs/{id}/discard", post(admin::discard))
        .route("/api/v1/admin/schedules", get(admin::schedules))
        .route(
            "/api/v1/admin/analytics/search",
            get(admin_analytics::search),
        )
        .route(
            "/api/v1/admin/analytics/rollups",
            post(admin_analytics::rollups),
        )
        .route("/health", get(health::health))
        .route("/ready", get(health::ready))
        .route("/metrics", get(health::metrics))
        .route("/api/v1/openapi.json", get(routes::openapi::document))
        .fallback(|| async { ApiError::NotFound("route") })
        .method_not_allowed_fallback(|| async {
            ApiError::BadRequest {
                code: "method_not_allowed",
                detail: "method not allowed".into(),
                field: None,
            }
        })
        .layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES))
        .layer(middleware::from_fn(record_request))
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &Request| {
                let route = request
                    .extensions()
                    .get::<MatchedPath>()
                    .map(|p| p.as_str().to_string());
                tracing::info_span!(
                    "request",
                    request_id = %uuid::Uuid::new_v4(),
                    method = %request.method(),
                    route = route.as_deref().unwrap_or("unmatched"),
                    user_id = tracing::field::Empty,
                    booking_id = tracing::field::Empty,
                )
            }),
        )
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::Internal("handler panicked".into()).into_response()
        }))
        .with_state(state)
}

/// Request counters and latency histograms by route and status.
async fn record_request(request: Request, next: middleware::Next) -> axum::response::Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let method = request.method().to_string();
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let labels = [
        ("route", route),
        ("method", method),
        ("status", response.status().as_u16().to_string()),
    ];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    response
}

/// Serves until `shutdown` resolves, then drains in-flight requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limiter = state.limiter.clone();
    let sweeper = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(60)).await;
            limiter.forget_idle();
        }
    });
    let result = axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await;
    sweeper.abort();
    result
}
