//! Per-client rate limiting on the public and write endpoints, with `Retry-After`.
//!
//! governor's keyed GCRA limiter does the arithmetic; the client key is the authenticated
//! user when there is one, otherwise the peer address.
use std::{net::SocketAddr, num::NonZeroU32, sync::Arc};

use axum::{
    extract::{ConnectInfo, Request, State},
    http::header,
    middleware::Next,
    response::{IntoResponse, Response},
};
use governor::{DefaultKeyedRateLimiter, Quota, clock::Clock as _};

use crate::{error::ApiError, state::AppState};

/// The keyed limiter.
pub struct RateLimiter {
    inner: DefaultKeyedRateLimiter<String>,
}

impl RateLimiter {
    pub fn new(per_second: u32, burst: u32) -> Self {
        let per_second = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(burst).unwrap_or(per_second);
        Self {
            inner: DefaultKeyedRateLimiter::keyed(Quota::per_second(per_second).allow_burst(burst)),
        }
    }

    /// `Err(seconds to wait)` when `key` is over its quota.
    pub fn check(&self, key: &str) -> Result<(), u64> {
        self.inner.check_key(&key.to_string()).map_err(|not_until| {
            let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
            wait.as_secs() + 1
        })
    }

    pub fn forget_idle(&self) {
        self.inner.retain_recent();
    }
}

/// Middleware: limits by bearer token (its hash) or by peer address.
pub async fn limit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let key = match request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        // the token itself identifies the client; keep only a short digest in memory
        Some(token) => format!("t:{:x}", fxhash(token)),
        None => request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| format!("ip:{}", c.0.ip()))
            .unwrap_or_else(|| "anonymous".to_string()),
    };
    match state.limiter.check(&key) {
        Ok(()) => next.run(request).await,
        Err(retry_after_secs) => ApiError::RateLimited { retry_after_secs }.into_response(),
    }
}

fn fxhash(s: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    s.hash(&mut h);
    h.finish()
}

pub type SharedLimiter = Arc<RateLimiter>;
