//! `Idempotency-Key` (the IETF httpapi Idempotency-Key draft, as Stripe does it): a client
//! that retries a write after a timeout gets the first answer again instead of doing the
//! write twice (or a 409 for the booking slot it took itself).
//!
//! - The first successful answer to a key is stored in the transaction that made the write
//!   (`idempotency_keys`, migration 0005): either both are there or neither is.
//! - Keys are per user: another user's key with the same text is another key.
//! - The same key with the same request (its operation and parsed body, so spacing and the
//!   order of the body's fields do not matter) answers the stored status and body, byte for
//!   byte, with `Idempotent-Replayed: true`. The same key with another request is 422
//!   `idempotency_key_reused`.
//! - While the first request with a key is running, a second is 409 `idempotency_key_in_use`:
//!   the first holds a transaction-scoped advisory lock on the key from before its first read
//!   to its commit. A failed or crashed request frees the key with its rollback, and a refused
//!   one (4xx) stores nothing: a retry runs again, and may succeed.
//! - Keys expire [`TTL_HOURS`] after their first use, by the application's clock; a user's
//!   expired keys are deleted when they record a new one.
use axum::{
    extract::OptionalFromRequestParts,
    http::{HeaderName, HeaderValue, StatusCode, header, request::Parts},
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::PgConnection;

use crate::error::{ApiError, ApiResult};

/// The request header.
pub const HEADER: HeaderName = HeaderName::from_static("idempotency-key");
/// The answer header that marks a replay (Stripe's name).
pub const REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");
/// The longest key accepted (Stripe's limit).
pub const MAX_KEY_CHARS: usize = 255;
/// How long a key's answer is kept for retries.
pub const TTL_HOURS: i64 = 24;

/// A client's idempotency key, as sent; documents itself as the optional header parameter.
#[derive(Debug, Clone, PartialEq, Eq, utoipa::IntoParams)]
#[into_params(names("Idempotency-Key"), parameter_in = Header)]
pub struct IdempotencyKey(
    /// A key of the client's choosing (a UUID, say), the same for every retry of one
    /// request: 1 to 255 printable ASCII characters, neither starting nor ending with a space.
    #[param(
        required = false,
        min_length = 1,
        max_length = 255,
        pattern = r"^[!-~]([ -~]{0,253}[!-~])?$"
    )]
    String,
);

impl IdempotencyKey {
    /// 1 to 255 printable ASCII characters, neither starting nor ending with a space (HTTP
    /// strips those anyway). The value is taken as sent: a client that follows the draft and
    /// quotes it (`"8e03978e-..."`) quotes every retry the same way.
    pub fn parse(value: &HeaderValue) -> Result<Self, ApiError> {
        let invalid = |detail: &str| ApiError::BadRequest {
            code: "invalid_idempotency_key",
            detail: format!("Idempotency-Key {detail}"),
            field: Some("Idempotency-Key".into()),
        };
        let text = std::str::from_utf8(value.as_bytes())
            .map_err(|_| invalid("must be printable ASCII"))?
            .trim_matches(' ');
        if text.is_empty() {
            return Err(invalid("must not be empty"));
        }
        if text.len() > MAX_KEY_CHARS {
            return Err(invalid(&format!(
                "must be at most {MAX_KEY_CHARS} characters"
            )));
        }
        if !text.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
            return Err(invalid("must be printable ASCII"));
        }
        Ok(IdempotencyKey(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        let mut values = parts.headers.get_all(&HEADER).iter();
        let Some(value) = values.next() else {
            return Ok(None);
        };
        if values.next().is_some() {
            return Err(ApiError::BadRequest {
                code: "invalid_idempotency_key",
                detail: "send one Idempotency-Key header".into(),
                field: Some("Idempotency-Key".into()),
            });
        }
        IdempotencyKey::parse(value).map(Some)
    }
}

/// What a retry must repeat for its key to apply: the operation and the request as parsed.
pub fn fingerprint(operation: &str, request: &impl Serialize) -> ApiResult<Vec<u8>> {
    let body = serde_json::to_vec(request)
        .map_err(|e| ApiError::Internal(format!("fingerprinting a request: {e}")))?;
    let mut hasher = Sha256::new();
    hasher.update(operation.as_bytes());
    hasher.update([0]);
    hasher.update(body);
    Ok(hasher.finalize().to_vec())
}

/// What [`claim`] found for a key.
#[derive(Debug)]
pub enum Claim {
    /// Not used yet (or expired): the request runs, and [`record`]s its answer.
    Fresh,
    /// Used before by the same request: its stored answer.
    Replay(StoredAnswer),
}

/// An answer kept for retries.
#[derive(Debug)]
pub struct StoredAnswer {
    status: StatusCode,
    body: Vec<u8>,
}

impl IntoResponse for StoredAnswer {
    fn into_response(self) -> Response {
        (
            self.status,
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                ),
                (REPLAYED, HeaderValue::from_static("true")),
            ],
            self.body,
        )
            .into_response()
    }
}

/// Takes the lock that marks `key` as in flight for the rest of `tx`; `false` when another
/// transaction holds it. Two keys share a lock only on a 64-bit hash collision, which would
/// cost a spurious 409, never a wrong replay.
pub async fn try_lock(tx: &mut PgConnection, user_id: i64, key: &str) -> sqlx::Result<bool> {
    sqlx::query_scalar!(
        r#"select pg_try_advisory_xact_lock(hashtextextended('idempotency-key:' || $1::bigint || ':' || $2::text, 0)) as "locked!""#,
        user_id,
        key
    )
    .fetch_one(&mut *tx)
    .await
}

/// Claims `key` for this request in `tx`, the transaction that will make its write: call it
/// before the request's first read, and [`record`] the answer in the same transaction.
#[tracing::instrument(skip_all, fields(user_id))]
pub async fn claim(
    tx: &mut PgConnection,
    user_id: i64,
    key: &IdempotencyKey,
    fingerprint: &[u8],
    now: DateTime<Utc>,
) -> ApiResult<Claim> {
    if !try_lock(tx, user_id, key.as_str()).await? {
        return Err(ApiError::Conflict {
            code: "idempotency_key_in_use",
            detail: "a request with this Idempotency-Key is still in progress: retry once it has finished".into(),
        });
    }
    let stored = sqlx::query!(
        "select fingerprint, response_status, response_body from idempotency_keys
         where user_id = $1 and key = $2 and created_at > $3",
        user_id,
        key.as_str(),
        now - chrono::Duration::hours(TTL_HOURS)
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(stored) = stored else {
        return Ok(Claim::Fresh);
    };
    if stored.fingerprint != fingerprint {
        return Err(ApiError::Unprocessable {
            code: "idempotency_key_reused",
            detail: "this Idempotency-Key was first used with a different request".into(),
            field: Some("Idempotency-Key".into()),
        });
    }
    let status = u16::try_from(stored.response_status)
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .ok_or_else(|| {
            ApiError::Internal(format!("stored status {} unusable", stored.response_status))
        })?;
    Ok(Claim::Replay(StoredAnswer {
        status,
        body: stored.response_body,
    }))
}

/// Stores the answer to a [`claim`]ed key in the transaction that made the write, and drops
/// the user's expired keys (this one's earlier use among them).
#[tracing::instrument(skip_all, fields(user_id))]
pub async fn record(
    tx: &mut PgConnection,
    user_id: i64,
    key: &IdempotencyKey,
    fingerprint: &[u8],
    status: StatusCode,
    body: &[u8],
    now: DateTime<Utc>,
) -> ApiResult<()> {
    sqlx::query!(
        "delete from idempotency_keys where user_id = $1 and created_at <= $2",
        user_id,
        now - chrono::Duration::hours(TTL_HOURS)
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        "insert into idempotency_keys (user_id, key, fingerprint, response_status, response_body, created_at)
         values ($1, $2, $3, $4, $5, $6)",
        user_id,
        key.as_str(),
        fingerprint,
        i16::try_from(status.as_u16()).unwrap_or(i16::MAX),
        body,
        now
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(value: &str) -> Result<IdempotencyKey, ApiError> {
        IdempotencyKey::parse(&HeaderValue::from_str(value).expect("header value"))
    }

    #[test]
    fn keys_are_printable_ascii_up_to_255_characters() {
        assert_eq!(parse("abc-123").expect("valid").as_str(), "abc-123");
        assert_eq!(
            parse("\"quoted, as the draft writes it\"")
                .expect("valid")
                .as_str(),
            "\"quoted, as the draft writes it\""
        );
        assert!(parse(&"k".repeat(255)).is_ok());
        assert!(parse(&"k".repeat(256)).is_err());
        assert!(parse("").is_err());
        assert!(parse("   ").is_err());
        assert!(parse("tab\there").is_err());
        let obs_text =
            HeaderValue::from_bytes(b"caf\xe9").expect("obs-text is a valid header value");
        assert!(IdempotencyKey::parse(&obs_text).is_err());
    }

    #[test]
    fn the_fingerprint_is_of_the_request_not_its_spelling() {
        #[derive(serde::Deserialize, Serialize)]
        struct Request {
            at: DateTime<Utc>,
            note: Option<String>,
        }
        let f = |json: &str, operation: &str| {
            let request: Request = serde_json::from_str(json).expect("json");
            fingerprint(operation, &request).expect("fingerprint")
        };
        let first = f(r#"{"at": "2030-01-01T10:00:00Z", "note": null}"#, "POST /x");
        assert_eq!(
            first,
            f(r#"{ "at":"2030-01-01T05:00:00-05:00" }"#, "POST /x")
        );
        assert_ne!(first, f(r#"{"at": "2030-01-01T10:00:01Z"}"#, "POST /x"));
        assert_ne!(
            first,
            f(r#"{"at": "2030-01-01T10:00:00Z", "note": ""}"#, "POST /x")
        );
        assert_ne!(first, f(r#"{"at": "2030-01-01T10:00:00Z"}"#, "POST /y"));
    }
}
