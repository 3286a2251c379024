//! `GET /api/v1/openapi.json`: the OpenAPI 3.1 description of every endpoint.
//!
//! The document is hand-written (`api/openapi.json`) rather than derived with utoipa: the
//! response types live partly in `shared` (`Booking`, `QueueStats`, `ScheduleStatus`) and the
//! handlers use our own rejection-mapping extractors, so deriving it would mean annotating
//! every handler and domain type across crates. What keeps the file honest is the contract
//! test (`tests/tests/e2e/contract.rs`): it fails when the router and the document disagree
//! on a route, and validates real answers against the document's schemas.
use axum::{http::header, response::IntoResponse};

/// The document, as served.
pub const DOCUMENT: &str = include_str!("../../openapi.json");

/// `GET /api/v1/openapi.json`
pub async fn document() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT)
}

#[cfg(test)]
mod tests {
    use super::DOCUMENT;

    #[test]
    fn the_document_is_openapi_3_1_json() {
        let doc: serde_json::Value = serde_json::from_str(DOCUMENT).expect("valid JSON");
        assert_eq!(doc["openapi"], "3.1.0");
        assert!(doc["paths"].as_object().is_some_and(|p| !p.is_empty()));
    }
}
