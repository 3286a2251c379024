//! The OpenAPI 3.1 document and `GET /api/v1/openapi.json`, which serves it.
//!
//! Each operation is generated from its handler: `#[utoipa::path]` next to the handler names
//! its method, path, parameters and answers, and the request and response types derive their
//! schemas (`ToSchema`, `IntoParams`), constraints included. `crate::router` collects them
//! with utoipa-axum's `routes!`, which registers a handler on the path and method its
//! annotation states, so the router and the document cannot disagree. What is left for this
//! module is what no handler owns: the title, the tags, the bearer scheme, and the error
//! answers every handler shares (one component each, referred to by status).
//!
//! The contract test (`tests/tests/e2e/contract.rs`) still compares the document with the
//! router both ways and validates real answers against it.
use axum::{Extension, body::Bytes, http::header, response::IntoResponse};
use utoipa::{
    Modify, OpenApi, ToResponse, ToSchema,
    openapi::{
        AllOfBuilder, ContentBuilder, ObjectBuilder, Ref, RefOr, Response, ResponseBuilder, Schema,
        Type,
        extensions::Extensions,
        header::{Header, HeaderBuilder},
        security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
    },
};

use crate::error::ErrorBody;

/// The parts of the document that no handler declares.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "InstaInstru API",
        version = "1",
        description = "The thin HTTP API of the InstaInstru job platform. Every error is a JSON body {\"detail\", \"code\", \"field\"?} with a 4xx (a 5xx other than 503 is a bug). A method a path does not have answers 405 `method_not_allowed` with an `Allow` header. Generated from the handlers (utoipa); the contract test (tests/tests/e2e/contract.rs) checks it against the router and the real answers."
    ),
    servers((url = "/")),
    tags(
        (name = "public", description = "Browsing, no token needed."),
        (name = "bookings", description = "A student's or instructor's bookings."),
        (name = "search", description = "Searches, what was done with their results, recent-search history (a user token or a guest session)."),
        (name = "privacy", description = "A user's data export and erasure (GDPR)."),
        (name = "admin", description = "Ops endpoints, admin token only."),
        (name = "ops", description = "Liveness, readiness, metrics."),
        (name = "meta", description = "This document and its Swagger UI.")
    ),
    components(
        schemas(ErrorBody),
        responses(
            BadRequest,
            Unauthorized,
            Forbidden,
            NotFound,
            Conflict,
            PayloadTooLarge,
            UnsupportedMediaType,
            Unprocessable,
            Gone,
            RateLimited,
            Unavailable
        )
    ),
    modifiers(&BearerAuth, &GuestSessionAuth, &Unlicensed)
)]
pub struct ApiDoc;

/// The workspace declares no license: without this utoipa would state an empty one.
struct Unlicensed;

impl Modify for Unlicensed {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        openapi.info.license = None;
    }
}

/// The `bearerAuth` scheme the authenticated operations name in their `security`.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearerAuth",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some("HS256 token carrying the user id (sub) and role."))
                    .build(),
            ),
        );
    }
}

/// The `guestSession` scheme of the search endpoints: who a guest is, without a token.
struct GuestSessionAuth;

impl Modify for GuestSessionAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{ApiKey, ApiKeyValue};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "guestSession",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Guest-Session",
                "An opaque guest session id chosen by the client, 1 to 64 visible ASCII \
                 characters; used when there is no bearer token (a bearer token wins).",
            ))),
        );
    }
}

/// An error answer: the `Error` schema, its `code` narrowed to `codes` when they are few
/// enough to list (else they are named in the description).
fn error_response(description: &str, codes: &[&str], retry_after: bool) -> Response {
    let error = Ref::from_schema_name("Error");
    let schema: RefOr<Schema> = if codes.is_empty() {
        error.into()
    } else {
        let code = ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(codes.iter().copied()));
        AllOfBuilder::new()
            .item(error)
            .item(ObjectBuilder::new().property("code", code))
            .into()
    };
    let mut response = ResponseBuilder::new().description(description).content(
        "application/json",
        ContentBuilder::new().schema(Some(schema)).build(),
    );
    if retry_after {
        response = response.header("Retry-After", retry_after_header());
    }
    response.build()
}

fn retry_after_header() -> Header {
    let mut header = HeaderBuilder::new()
        .schema(Some(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(1)),
        ))
        .description(Some("Seconds to wait before retrying."))
        .build();
    // OpenAPI 3.1 headers have `required`, utoipa 6's `Header` has no such field: it goes in
    // through the map the header's extensions are flattened from
    header.extensions = Some(Extensions::from_iter([("required", true)]));
    header
}

/// Declares the shared error answers: a unit type per answer whose doc comment is its
/// description, with the codes its body can carry.
macro_rules! error_responses {
    ($($(#[doc = $doc:literal])+ $name:ident { codes: [$($code:literal),* $(,)?], retry_after: $retry:literal })+) => {$(
        $(#[doc = $doc])+
        pub struct $name;

        impl<'r> ToResponse<'r> for $name {
            fn response() -> (&'r str, RefOr<Response>) {
                let description = concat!($($doc),+).trim();
                (
                    stringify!($name),
                    error_response(description, &[$($code),*], $retry).into(),
                )
            }
        }
    )+};
}

error_responses! {
    /// Malformed request: JSON syntax (malformed_json), path (invalid_path), query
    /// (invalid_query), the Idempotency-Key header (invalid_idempotency_key), the
    /// X-Guest-Session header (invalid_guest_session, missing_guest_session), or other body
    /// errors (invalid_body).
    BadRequest {
        codes: ["malformed_json", "invalid_body", "invalid_path", "invalid_query", "invalid_idempotency_key", "invalid_guest_session", "missing_guest_session"],
        retry_after: false
    }
    /// Missing, malformed, expired or wrongly signed bearer token.
    Unauthorized { codes: ["unauthorized"], retry_after: false }
    /// Authenticated, but not allowed: wrong role, or not the caller's record.
    Forbidden { codes: ["forbidden"], retry_after: false }
    /// No such record.
    NotFound { codes: ["not_found"], retry_after: false }
    /// The request conflicts with the current state: booking_conflict (overlap), duplicate,
    /// not_cancellable, not_reschedulable, already_started, invalid_state, or
    /// idempotency_key_in_use (a request with the same Idempotency-Key is still running: retry
    /// once it has finished), search_id_taken (a search_id another searcher recorded), export_in_flight (the
    /// body's `id` is the export still in progress), export_not_ready.
    Conflict { codes: [], retry_after: false }
    /// No longer available (an export past its expiry).
    Gone { codes: ["gone"], retry_after: false }
    /// Request body over 64 KiB.
    PayloadTooLarge { codes: ["payload_too_large"], retry_after: false }
    /// The body must be sent as application/json.
    UnsupportedMediaType { codes: ["unsupported_media_type"], retry_after: false }
    /// Well-formed but invalid: wrong types or unknown fields (invalid_body), or a rule
    /// (too_long, unknown_service, inactive_service, unknown_instructor, too_soon,
    /// too_far_ahead, outside_availability, unchanged, invalid_range, invalid_role,
    /// invalid_status, unknown_reference, idempotency_key_reused: the Idempotency-Key was
    /// first used with another request; for searches empty_query, invalid_characters,
    /// invalid_result_count, not_an_object, too_large, too_many, invalid_shown,
    /// invalid_position, invalid_id, unknown_search_event, missing_date, future_date); `field`
    /// names the culprit when there is one.
    Unprocessable { codes: [], retry_after: false }
    /// Over this client's quota (per authenticated user, else per peer address).
    RateLimited { codes: ["rate_limited"], retry_after: true }
    /// A dependency (Postgres) does not answer; retry shortly.
    Unavailable { codes: ["unavailable"], retry_after: true }
}

/// An OpenAPI 3.1 document; only the members every document has are spelled out.
#[derive(ToSchema)]
#[allow(dead_code)] // a schema only: the document is served as utoipa built it
pub struct OpenApiDocument {
    openapi: String,
    #[schema(value_type = Object)]
    paths: (),
}

/// The document as served, serialized once when the router is built.
#[derive(Clone)]
pub struct Document(Bytes);

impl Document {
    pub fn new(document: &utoipa::openapi::OpenApi) -> Result<Self, serde_json::Error> {
        serde_json::to_vec(document).map(|json| Document(json.into()))
    }
}

/// This document.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "meta",
    operation_id = "openapi",
    responses((status = 200, description = "The OpenAPI 3.1 document.", body = OpenApiDocument))
)]
pub async fn document(Extension(document): Extension<Document>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], document.0)
}

/// A job's status as the admin views show it: its record's status, with `running` for an
/// enqueued job whose attempt has started.
// a schema only, for the admin handlers that carry the status as a string
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum JobStatusView {
    Pending,
    Enqueued,
    Running,
    Done,
    Skipped,
    Dead,
}

/// What a retry or a discard made of a job.
// a schema only: the admin handlers answer with `json!`
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct JobStatusChange {
    id: i64,
    #[schema(inline)]
    status: JobStatusChanged,
}

/// `pending` after a retry, `skipped` after a discard.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum JobStatusChanged {
    Pending,
    Skipped,
}
