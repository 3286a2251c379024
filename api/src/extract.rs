//! Extractors whose rejections answer with the API's JSON error body instead of axum's
//! plain-text defaults.
use axum::extract::{FromRequest, FromRequestParts, Request};

use crate::error::ApiError;

/// A JSON request body.
#[derive(Debug, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct Json<T>(pub T);

/// Path parameters.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);

/// Query parameters.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

/// A raw request body, buffered under the body limit; over it, a JSON 413 (axum's own
/// `Bytes` answers in plain text).
#[derive(Debug)]
pub struct Bytes(pub axum::body::Bytes);

impl<S: Send + Sync> FromRequest<S> for Bytes {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        axum::body::Bytes::from_request(request, state)
            .await
            .map(Bytes)
            .map_err(ApiError::from)
    }
}

/// Parses an optional JSON body: empty, or `null`, means `T::default()` (the document says
/// "the object, or null", which is how it writes an optional body).
pub fn optional_json<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice::<Option<T>>(body)
        .map(Option::unwrap_or_default)
        .map_err(|e| {
            if e.is_data() {
                ApiError::Unprocessable {
                    code: "invalid_body",
                    detail: e.to_string(),
                    field: None,
                }
            } else {
                ApiError::BadRequest {
                    code: "malformed_json",
                    detail: e.to_string(),
                    field: None,
                }
            }
        })
}
