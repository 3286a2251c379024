//! The state every handler can reach, and its parts: with `FromRef` an extractor or a
//! middleware asks for the part it needs (the keys, the limiter) rather than for the whole.
use std::sync::Arc;

use axum::extract::FromRef;
use metrics_exporter_prometheus::PrometheusHandle;
use shared::{clock::SharedClock, config::Config};
use sqlx::PgPool;

use crate::{auth::SharedKeys, rate_limit::SharedLimiter};

/// Application state, cloned into every request.
#[derive(Clone, FromRef)]
pub struct AppState {
    pub db: PgPool,
    /// Wakes the worker's outbox relay after a commit that recorded jobs.
    pub outbox: shared::outbox::Waker,
    /// Where Redis is (one node, a cluster or a Sentinel set): the readiness probe pings it.
    /// Behind an `Arc`, as every part that would allocate when cloned: axum clones the state
    /// into each request's middleware and extractors (perf put cloning its strings at 3% of
    /// the api's CPU under search ingestion).
    pub redis: Arc<shared::queue::Target>,
    /// The queue view's Redis connection, opened on first use and reconnecting by itself.
    pub queues: Arc<tokio::sync::OnceCell<shared::queue::ConnectionManager>>,
    pub config: Arc<Config>,
    pub clock: SharedClock,
    pub keys: SharedKeys,
    pub metrics: PrometheusHandle,
    pub limiter: SharedLimiter,
    /// Writes search events in batches (`crate::search::ingest`).
    pub search: crate::search::ingest::Ingest,
    /// Hashes client addresses for search events under `SEARCH_IP_HASH_KEY`.
    pub ip_hasher: Arc<crate::search::client::IpHasher>,
    /// What finished per minute over the overview's last day.
    pub finished: Arc<crate::ops::FinishedMinutes>,
}
