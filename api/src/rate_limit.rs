//! Per-client rate limiting on the public and write endpoints, with `Retry-After`.
//!
//! governor's keyed GCRA limiter does the arithmetic; the client key is the authenticated
//! user when the bearer token verifies, otherwise the peer address. Keying by the raw token
//! would let a client escape its quota by sending a fresh made-up token with every request.
//! The verdict on the token stays with the request, so the handler does not verify it again.
use std::{net::SocketAddr, num::NonZeroU32, sync::Arc};

use axum::{
    extract::{ConnectInfo, Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};
use governor::{DefaultKeyedRateLimiter, Quota, clock::Clock as _};

use crate::{
    auth::{self, SharedKeys},
    error::ApiError,
};

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
            // whole seconds, rounded up, never 0
            (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
        })
    }

    pub fn forget_idle(&self) {
        self.inner.retain_recent();
    }
}

/// Shared handle type for the limiter.
pub type SharedLimiter = Arc<RateLimiter>;

/// Middleware: limits by verified user, else by peer address.
pub async fn limit(
    State(limiter): State<SharedLimiter>,
    State(keys): State<SharedKeys>,
    request: Request,
    next: Next,
) -> Response {
    let (mut parts, body) = request.into_parts();
    let key = match auth::authenticate(&mut parts, &keys) {
        Ok(user) => format!("u:{}", user.id),
        // no token, or one that does not verify: the handler will refuse it, but the
        // attempt still counts against the peer's quota
        Err(_) => parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| format!("ip:{}", c.0.ip()))
            .unwrap_or_else(|| "anonymous".to_string()),
    };
    match limiter.check(&key) {
        Ok(()) => next.run(Request::from_parts(parts, body)).await,
        Err(retry_after_secs) => ApiError::RateLimited { retry_after_secs }.into_response(),
    }
}
