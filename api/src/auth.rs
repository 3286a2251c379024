//! Bearer JWT authentication (HS256): tokens carry the user id and role.
//!
//! A request's token is verified once: the first to ask (the rate limiter, else the
//! [`AuthUser`] extractor) leaves the verdict in the request's extensions, and everyone
//! after reads it there. This module needs only the keys, reached with `FromRef`, so it
//! knows nothing of the application state or the rate limiter.
use std::sync::Arc;

use axum::{
    extract::{FromRef, FromRequestParts},
    http::{HeaderMap, header, request::Parts},
};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use shared::domain::Role;
use sqlx::PgPool;

use crate::error::ApiError;

/// The signing and verification keys, built once from the configured secret.
#[derive(Clone)]
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    ttl_minutes: i64,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtKeys(<hidden>)")
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    /// The user id, as a string per RFC 7519.
    sub: String,
    role: Role,
    iat: i64,
    exp: i64,
}

/// Why a request carries no usable identity. Small and `Copy`, so the verdict can be kept in
/// the request and handed out again without verifying twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token")]
    Missing,
    #[error("malformed authorization header")]
    Malformed,
    #[error("authorization must be a Bearer token")]
    NotBearer,
    #[error("token expired")]
    Expired,
    #[error("token signature invalid")]
    BadSignature,
    #[error("token invalid")]
    Invalid,
}

impl From<AuthError> for ApiError {
    fn from(error: AuthError) -> Self {
        ApiError::Unauthorized(error.to_string())
    }
}

impl JwtKeys {
    pub fn new(secret: &str, ttl_minutes: i64) -> Self {
        Self {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            ttl_minutes,
        }
    }

    /// Issues a token for `user_id` valid from `now` for the configured lifetime.
    pub fn mint(
        &self,
        user_id: i64,
        role: Role,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<String, ApiError> {
        let claims = Claims {
            sub: user_id.to_string(),
            role,
            iat: now.timestamp(),
            exp: (now + chrono::Duration::minutes(self.ttl_minutes)).timestamp(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| ApiError::Internal(format!("signing token: {e}")))
    }

    /// Verifies `token` as a bearer token is; returns its user and when it expires (the
    /// dashboard's sign-in, whose session never outlives the token it was opened with).
    pub fn verify_expiring(
        &self,
        token: &str,
    ) -> Result<(AuthUser, chrono::DateTime<chrono::Utc>), AuthError> {
        let claims = self.decode(token)?;
        let id = claims.sub.parse().map_err(|_| AuthError::Invalid)?;
        let exp = chrono::DateTime::from_timestamp(claims.exp, 0).ok_or(AuthError::Invalid)?;
        Ok((
            AuthUser {
                id,
                role: claims.role,
            },
            exp,
        ))
    }

    fn verify(&self, token: &str) -> Result<AuthUser, AuthError> {
        self.verify_expiring(token).map(|(user, _)| user)
    }

    fn decode(&self, token: &str) -> Result<Claims, AuthError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .map(|data| data.claims)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                match e.kind() {
                    ErrorKind::ExpiredSignature => AuthError::Expired,
                    ErrorKind::InvalidSignature => AuthError::BadSignature,
                    _ => AuthError::Invalid,
                }
            })
    }
}

/// The bearer token of `headers`, unverified.
fn bearer(headers: &HeaderMap) -> Result<&str, AuthError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or(AuthError::Missing)?
        .to_str()
        .map_err(|_| AuthError::Malformed)?;
    value
        .strip_prefix("Bearer ")
        .map(str::trim)
        .ok_or(AuthError::NotBearer)
}

/// The verdict on one request's token, kept in its extensions.
#[derive(Debug, Clone, Copy)]
struct Verdict(Result<AuthUser, AuthError>);

/// Who sent the request: verifies its bearer token the first time it is asked for this
/// request, and answers from the kept verdict after that.
pub fn authenticate(parts: &mut Parts, keys: &JwtKeys) -> Result<AuthUser, AuthError> {
    if let Some(Verdict(verdict)) = parts.extensions.get::<Verdict>() {
        return *verdict;
    }
    let verdict = bearer(&parts.headers).and_then(|token| keys.verify(token));
    if let Ok(user) = &verdict {
        tracing::Span::current().record("user_id", user.id);
    }
    parts.extensions.insert(Verdict(verdict));
    verdict
}

/// The caller, proven by a valid bearer token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthUser {
    pub id: i64,
    pub role: Role,
}

impl AuthUser {
    /// The caller as the ops views and actions see it.
    pub fn actor(&self) -> crate::ops::Actor {
        crate::ops::Actor {
            user_id: self.id,
            role: self.role,
        }
    }

    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.role == role {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "requires the {} role",
                role.as_str()
            )))
        }
    }
}

/// This request's user was found not erased.
#[derive(Debug, Clone, Copy)]
struct Active;

impl<S> FromRequestParts<S> for AuthUser
where
    SharedKeys: FromRef<S>,
    PgPool: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let user = authenticate(parts, &SharedKeys::from_ref(state))?;
        if parts.extensions.get::<Active>().is_none() {
            // an erased (or deleted) user's tokens stop working at once, even those issued
            // before the erasure: one primary-key lookup per request, kept like the verdict
            let active: Option<bool> = sqlx::query_scalar!(
                r#"select erased_at is null as "active!" from users where id = $1"#,
                user.id
            )
            .fetch_optional(&PgPool::from_ref(state))
            .await?;
            if active != Some(true) {
                return Err(ApiError::Unauthorized("account closed".into()));
            }
            parts.extensions.insert(Active);
        }
        Ok(user)
    }
}

/// Shared handle type for the keys.
pub type SharedKeys = Arc<JwtKeys>;

#[cfg(test)]
mod tests {
    use axum::http::Request;

    use super::*;

    fn parts_with(token: &str) -> Parts {
        Request::builder()
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(())
            .expect("request")
            .into_parts()
            .0
    }

    #[tokio::test]
    async fn a_token_is_verified_once_per_request() {
        let keys: SharedKeys = Arc::new(JwtKeys::new("the-secret-the-token-is-signed-with", 60));
        let token = keys
            .mint(7, Role::Student, chrono::Utc::now())
            .expect("token");
        let mut parts = parts_with(&token);
        // the rate limiter asks first
        let user = authenticate(&mut parts, &keys).expect("verifies");
        assert_eq!(user.id, 7);
        // then the handler's extractor, with keys that would refuse the token: it must be
        // answered from the kept verdict, not by verifying again
        let other: SharedKeys = Arc::new(JwtKeys::new("a-secret-that-never-signed-it", 60));
        assert_eq!(authenticate(&mut parts, &other), Ok(user));
        // a fresh request with those keys is refused, as it must be
        assert_eq!(
            authenticate(&mut parts_with(&token), &other),
            Err(AuthError::BadSignature)
        );
    }

    #[tokio::test]
    async fn a_refusal_is_kept_too() {
        let keys = JwtKeys::new("the-secret-the-token-is-signed-with", 60);
        let mut parts = parts_with("not.a.jwt");
        assert_eq!(authenticate(&mut parts, &keys), Err(AuthError::Invalid));
        assert_eq!(authenticate(&mut parts, &keys), Err(AuthError::Invalid));
        let mut none = Request::builder().body(()).expect("request").into_parts().0;
        assert_eq!(authenticate(&mut none, &keys), Err(AuthError::Missing));
    }
}
