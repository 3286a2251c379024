//! The thin HTTP API: validates input, writes in one transaction (recording any work it
//! causes in the outbox) and answers. It never sends email or aggregates inline.
pub mod auth;
pub mod dashboard;
pub mod error;
pub mod extract;
pub mod idempotency;
pub mod ops;
pub mod rate_limit;
pub mod routes;
pub mod search;
pub mod seed;
pub mod state;
pub mod telemetry;

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Extension, Router,
    extract::{DefaultBodyLimit, MatchedPath, Request},
    middleware,
    response::IntoResponse,
};
use shared::{clock::SharedClock, config::Config};
use tower_http::{catch_panic::CatchPanicLayer, trace::TraceLayer};
use utoipa::OpenApi;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{auth::JwtKeys, error::ApiError, rate_limit::RateLimiter, state::AppState};

/// Largest request body accepted.
pub const BODY_LIMIT_BYTES: usize = 64 * 1024;

/// Builds the state from configuration: a pool (not yet connected), the Redis client and keys.
pub async fn build_state(
    config: Config,
    clock: SharedClock,
) -> Result<AppState, shared::error::Error> {
    let db = shared::db::prepare(&config.database_url, config.database_pool_size).await?;
    let redis = Arc::new(config.redis());
    let ip_hasher = Arc::new(search::client::IpHasher::new(
        config
            .search_ip_hash_key()
            .map_err(|e| shared::error::Error::Other(e.to_string()))?,
    ));
    // the months search events are written into; the worker keeps them ahead as well
    if let Err(e) = shared::search::ensure_partitions(&db, clock.now()).await {
        tracing::warn!(error = %e, "could not check the search event partitions");
    }
    Ok(AppState {
        search: search::ingest::Ingest::start(
            db.clone(),
            (config.database_pool_size as usize / 2).clamp(1, search::ingest::Ingest::WRITERS),
        ),
        ip_hasher,
        finished: Arc::default(),
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
        metrics: telemetry::init(),
    })
}

/// Every operation, declared once: `routes!` registers each handler on the method and path
/// of its `#[utoipa::path]` and adds that description to the document, so the router and the
/// document cannot disagree.
fn operations(state: &AppState) -> OpenApiRouter<AppState> {
    use routes::{
        admin, admin_analytics, bookings, docs, health, instructors, openapi, privacy, search,
    };
    // public reads and every write are rate limited per client
    let limited = OpenApiRouter::new()
        .routes(routes!(instructors::list))
        .routes(routes!(instructors::availability))
        .routes(routes!(bookings::create, bookings::list))
        .routes(routes!(bookings::get))
        .routes(routes!(bookings::cancel))
        .routes(routes!(bookings::reschedule))
        .routes(routes!(search::record_event))
        .routes(routes!(search::record_interaction))
        .routes(routes!(search::history))
        .routes(routes!(search::delete_history))
        .routes(routes!(search::claim_history))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            rate_limit::limit,
        ));
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(limited)
        .routes(routes!(admin::queues))
        .routes(routes!(admin::overview))
        .routes(routes!(admin::jobs))
        .routes(routes!(admin::job_count))
        .routes(routes!(admin::bulk))
        .routes(routes!(admin::job))
        .routes(routes!(admin::retry))
        .routes(routes!(admin::discard))
        .routes(routes!(admin::pause_queue))
        .routes(routes!(admin::resume_queue))
        .routes(routes!(admin::schedules))
        .routes(routes!(admin::pause_schedule))
        .routes(routes!(admin::resume_schedule))
        .routes(routes!(admin::trigger_schedule))
        .routes(routes!(admin::audit))
        .routes(routes!(admin_analytics::search))
        .routes(routes!(admin_analytics::rollups))
        .routes(routes!(privacy::export))
        .routes(routes!(privacy::erase))
        .routes(routes!(privacy::list))
        .routes(routes!(privacy::get))
        .routes(routes!(privacy::download))
        .routes(routes!(privacy::admin_erase))
        .routes(routes!(privacy::audit))
        .routes(routes!(privacy::legal_hold))
        .routes(routes!(privacy::retention))
        .routes(routes!(privacy::run_retention))
        .routes(routes!(health::health))
        .routes(routes!(health::ready))
        .routes(routes!(health::metrics))
        .routes(routes!(openapi::document))
        .routes(routes!(docs::page))
        .routes(routes!(docs::asset))
}

/// All routes with their middleware.
pub fn router(state: AppState) -> Router {
    let (router, document) = operations(&state).split_for_parts();
    let document = routes::openapi::Document::new(&document)
        // start-up: the document is a tree of strings, numbers and maps with string keys
        .expect("the OpenAPI document serializes");
    router
        // the ops dashboard's browser pages: not API operations, so not in the document
        .merge(dashboard::router())
        .fallback(|| async { ApiError::NotFound("route") })
        // after every route: axum gives this fallback to the routes that exist when it is
        // set, and adds the `Allow` header listing the route's methods to its answer
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(Extension(document))
        .layer(Extension(routes::docs::SwaggerUi::new(
            "/api/v1/openapi.json",
        )))
        .layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            telemetry::record_request,
        ))
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &Request| {
                let route = request
                    .extensions()
                    .get::<MatchedPath>()
                    .map(MatchedPath::as_str);
                tracing::info_span!(
                    "request",
                    request_id = %uuid::Uuid::new_v4(),
                    method = %request.method(),
                    route = route.unwrap_or("unmatched"),
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
