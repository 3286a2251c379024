//! Bearer JWT authentication (HS256): tokens carry the user id and role.
use std::sync::Arc;

use axum::{
    extract::{FromRef, FromRequestParts},
    http::{header, request::Parts},
};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use shared::domain::Role;

use crate::{error::ApiError, state::AppState};

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

    fn verify(&self, token: &str) -> Result<AuthUser, ApiError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        let data =
            jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation).map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                ApiError::Unauthorized(match e.kind() {
                    ErrorKind::ExpiredSignature => "token expired".into(),
                    ErrorKind::InvalidSignature => "token signature invalid".into(),
                    _ => "token invalid".into(),
                })
            })?;
        let id = data
            .claims
            .sub
            .parse()
            .map_err(|_| ApiError::Unauthorized("token invalid".into()))?;
        Ok(AuthUser {
            id,
            role: data.claims.role,
        })
    }
}

/// The caller, proven by a valid bearer token.
#[derive(Debug, Clone, Copy)]
pub struct AuthUser {
    pub id: i64,
    pub role: Role,
}

impl AuthUser {
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

impl<S> FromRequestParts<S> for AuthUser
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = AppState::from_ref(state);
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| ApiError::Unauthorized("missing bearer token".into()))?
            .to_str()
            .map_err(|_| ApiError::Unauthorized("malformed authorization header".into()))?;
        let token = header
            .strip_prefix("Bearer ")
            .ok_or_else(|| ApiError::Unauthorized("authorization must be a Bearer token".into()))?;
        let user = state.keys.verify(token.trim())?;
        // an erased (or unknown) user's tokens stop working at once, even those issued before
        // the erasure: one primary-key lookup per authenticated request
        let active: Option<bool> = sqlx::query_scalar!(
            r#"select erased_at is null as "active!" from users where id = $1"#,
            user.id
        )
        .fetch_optional(&state.db)
        .await?;
        if active != Some(true) {
            return Err(ApiError::Unauthorized("account closed".into()));
        }
        tracing::Span::current().record("user_id", user.id);
        Ok(user)
    }
}

/// Shared handle type for the keys.
pub type SharedKeys = Arc<JwtKeys>;
