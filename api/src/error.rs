//! The API's one error type, mapped once to HTTP: a stable `code`, a human `detail` and the
//! offending `field` for the client; the cause chain for the log. A 500 is a bug.
use axum::{
    Json,
    extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;

/// Everything a handler can answer other than success.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{detail}")]
    BadRequest {
        code: &'static str,
        detail: String,
        field: Option<String>,
    },
    #[error("{detail}")]
    Unprocessable {
        code: &'static str,
        detail: String,
        field: Option<String>,
    },
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The route exists but has no handler for the method (axum adds the `Allow` header).
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("{detail}")]
    Conflict { code: &'static str, detail: String },
    /// A conflict with an existing resource the client may want: its `id` is in the body.
    #[error("{detail}")]
    ConflictWith {
        code: &'static str,
        detail: String,
        id: i64,
    },
    #[error("{0}")]
    Gone(String),
    #[error("request body too large")]
    PayloadTooLarge,
    #[error("unsupported media type: send application/json")]
    UnsupportedMediaType,
    #[error("too many requests")]
    RateLimited { retry_after_secs: u64 },
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

/// Every error answer (ARCHITECTURE.md, principle 6).
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Error)]
#[serde(deny_unknown_fields)]
pub struct ErrorBody<'a> {
    /// For a human; never internal error text.
    #[schema(min_length = 1)]
    detail: String,
    /// Stable, for programs.
    #[schema(pattern = "^[a-z][a-z_]*$")]
    code: &'a str,
    /// The offending input field, when one is to blame.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String)]
    field: Option<&'a str>,
    /// The existing resource a conflict is about (a 409 for a second export in flight).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = i64, minimum = 1)]
    id: Option<i64>,
}

impl ApiError {
    pub fn invalid(code: &'static str, field: &str, detail: impl Into<String>) -> Self {
        ApiError::Unprocessable {
            code,
            detail: detail.into(),
            field: Some(field.to_string()),
        }
    }

    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        self.parts().0
    }

    /// The stable code the client sees.
    pub fn code(&self) -> &str {
        self.parts().1
    }

    /// What the client may read: never internal error text (that goes to the log, here).
    pub fn public_detail(&self) -> String {
        match self {
            ApiError::Internal(cause) => {
                tracing::error!(error = %cause, "internal error");
                "internal error".to_string()
            }
            ApiError::Unavailable(cause) => {
                tracing::warn!(error = %cause, "dependency unavailable");
                "service temporarily unavailable, retry shortly".to_string()
            }
            other => other.to_string(),
        }
    }

    fn parts(&self) -> (StatusCode, &str, Option<&str>) {
        match self {
            ApiError::BadRequest { code, field, .. } => {
                (StatusCode::BAD_REQUEST, code, field.as_deref())
            }
            ApiError::Unprocessable { code, field, .. } => {
                (StatusCode::UNPROCESSABLE_ENTITY, code, field.as_deref())
            }
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized", None),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden", None),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found", None),
            ApiError::MethodNotAllowed => {
                (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", None)
            }
            ApiError::Conflict { code, .. } | ApiError::ConflictWith { code, .. } => {
                (StatusCode::CONFLICT, code, None)
            }
            ApiError::Gone(_) => (StatusCode::GONE, "gone", None),
            ApiError::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", None),
            ApiError::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                None,
            ),
            ApiError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited", None),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable", None),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal", None),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, field) = self.parts();
        // the client never sees internal error text; the log does
        let detail = self.public_detail();
        metrics::counter!("api_errors_total", "code" => code.to_string()).increment(1);
        let mut response = (
            status,
            Json(ErrorBody {
                detail,
                code,
                field,
                id: match &self {
                    ApiError::ConflictWith { id, .. } => Some(*id),
                    _ => None,
                },
            }),
        )
            .into_response();
        if let ApiError::RateLimited { retry_after_secs } = self
            && let Ok(value) = HeaderValue::from_str(&retry_after_secs.max(1).to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
        }
        response
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::Io(_)
            | sqlx::Error::PoolClosed
            | sqlx::Error::Tls(_) => ApiError::Unavailable(format!("database: {error}")),
            sqlx::Error::Database(db) => match db.code().as_deref() {
                // exclusion violation: an overlapping confirmed booking exists
                Some("23P01") => {
                    let who = match db.constraint() {
                        Some("bookings_student_no_overlap") => {
                            "you already have a lesson at that time"
                        }
                        _ => "the instructor is already booked at that time",
                    };
                    ApiError::Conflict {
                        code: "booking_conflict",
                        detail: who.to_string(),
                    }
                }
                Some("23505") => ApiError::Conflict {
                    code: "duplicate",
                    detail: "already exists".into(),
                },
                Some("23503") => ApiError::Unprocessable {
                    code: "unknown_reference",
                    detail: "a referenced record does not exist".into(),
                    field: None,
                },
                // admin shutdown, cannot connect now, crash recovery
                Some(code) if code.starts_with("57P") || code.starts_with("08") => {
                    ApiError::Unavailable(format!("database: {error}"))
                }
                _ => ApiError::Internal(error.to_string()),
            },
            _ => ApiError::Internal(error.to_string()),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::JsonDataError(e) => ApiError::Unprocessable {
                code: "invalid_body",
                detail: e.body_text(),
                field: field_from_serde_message(&e.body_text()),
            },
            JsonRejection::JsonSyntaxError(e) => ApiError::BadRequest {
                code: "malformed_json",
                detail: e.body_text(),
                field: None,
            },
            JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType,
            JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::PayloadTooLarge
            }
            other => ApiError::BadRequest {
                code: "invalid_body",
                detail: other.body_text(),
                field: None,
            },
        }
    }
}

impl From<BytesRejection> for ApiError {
    fn from(rejection: BytesRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge
        } else {
            ApiError::BadRequest {
                code: "invalid_body",
                detail: rejection.body_text(),
                field: None,
            }
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::BadRequest {
            code: "invalid_path",
            detail: rejection.body_text(),
            field: None,
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        let detail = rejection.body_text();
        ApiError::BadRequest {
            code: "invalid_query",
            field: field_from_serde_message(&detail),
            detail,
        }
    }
}

/// serde names a missing, unknown or duplicate field in backticks ("unknown field `x`"), and
/// axum prefixes other data errors with the path to the value ("start: invalid type: integer
/// `2030`, ..."); pull the field out for the `field` of the body. Backticks elsewhere quote
/// the client's *value*, which is not a field name.
fn field_from_serde_message(message: &str) -> Option<String> {
    for marker in ["unknown field `", "missing field `", "duplicate field `"] {
        if let Some(start) = message.find(marker) {
            let rest = &message[start + marker.len()..];
            if let Some(end) = rest.find('`') {
                return Some(rest[..end].to_string());
            }
        }
    }
    let after_colon = message.split_once(": ")?.1;
    let candidate = after_colon.split(':').next()?.trim();
    (!candidate.is_empty()
        && candidate
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.'))
    .then(|| candidate.to_string())
}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_field_in_serde_messages() {
        assert_eq!(
            field_from_serde_message("Failed to deserialize: unknown field `foo`, expected"),
            Some("foo".into())
        );
        assert_eq!(
            field_from_serde_message(
                "Failed to deserialize the JSON body into the target type: start: input contains invalid characters at line 1 column 20"
            ),
            Some("start".into())
        );
        assert_eq!(
            field_from_serde_message(
                "Failed to deserialize the JSON body into the target type: start: invalid type: integer `2030`, expected an RFC 3339 formatted date and time string at line 1 column 14"
            ),
            Some("start".into())
        );
        assert_eq!(
            field_from_serde_message(
                "Failed to deserialize query string: unknown variant `teacher`, expected `student`"
            ),
            None
        );
    }
}
