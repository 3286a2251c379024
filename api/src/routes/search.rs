//! Search endpoints: recording a search and what the searcher did with its results, and the
//! searcher's recent-search history. Handlers validate; the writes are `crate::search`'s.
use axum::{Json, extract::State, http::StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use super::openapi::{
    BadRequest, Conflict, NotFound, PayloadTooLarge, RateLimited, Unauthorized, Unavailable,
    Unprocessable, UnsupportedMediaType,
};
use crate::{
    auth::AuthUser,
    error::{ApiError, ApiResult},
    extract::{Json as JsonBody, Path},
    search::{
        self,
        client::{Client, UaClass},
        history::{self, HistoryEntry},
        ingest::{NewEvent, Recorded},
        interactions::{self, Kind, NewInteraction},
        searcher::{EventSearcher, GuestSession, Searcher},
    },
    state::AppState,
};

/// The longest query accepted, in characters as typed.
pub const MAX_QUERY_CHARS: usize = 200;
/// The largest result count believed: more than the whole catalog could ever return.
pub const MAX_RESULT_COUNT: i64 = 1_000_000;
/// The largest filters object, serialized.
pub const MAX_FILTERS_BYTES: usize = 2048;
/// The most shown results one event may list.
pub const MAX_SHOWN: usize = 100;
/// The highest result position accepted.
pub const MAX_POSITION: i32 = 10_000;

/// A search, as the client ran it.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = NewSearchEvent)]
#[serde(deny_unknown_fields)]
pub struct NewSearch {
    /// Made by the client; a retry after a timeout sends the same one and the search is
    /// recorded once. Made by the API when absent.
    #[serde(default)]
    #[schema(value_type = Option<String>, format = "uuid")]
    search_id: Option<Uuid>,
    /// As typed; not empty once normalized (NFKC, lower case, whitespace collapsed and
    /// trimmed), no NUL.
    #[schema(min_length = 1, max_length = 200)]
    query: String,
    #[schema(minimum = 0, maximum = 1_000_000)]
    result_count: i64,
    /// A JSON object of at most 2048 bytes, no NUL in its strings.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    filters: Option<Value>,
    #[serde(default)]
    #[schema(max_items = 100)]
    shown: Option<Vec<Shown>>,
}

/// One result the client showed.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[schema(as = ShownResult)]
#[serde(deny_unknown_fields)]
pub struct Shown {
    #[schema(minimum = 1)]
    instructor_id: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    service_id: Option<i64>,
    #[schema(minimum = 0, maximum = 10_000)]
    position: i32,
}

/// The recorded search.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchRecorded {
    /// The search event's id, for interactions and bookings.
    id: i64,
    #[schema(value_type = String, format = "uuid")]
    search_id: Uuid,
}

/// Record a search (a user token, or a guest session header).
///
/// Stores the query and its normalized form, the result count, filters and shown results, a
/// keyed hash (HMAC-SHA256) of the client address (never the address) and the user-agent
/// class, and upserts the searcher's history (the 10 most recent distinct queries) in the
/// same transaction. Rate limited per client.
#[utoipa::path(
    post,
    path = "/api/v1/search/events",
    tag = "search",
    operation_id = "recordSearchEvent",
    security(("bearerAuth" = []), ("guestSession" = [])),
    request_body = NewSearch,
    responses(
        (status = 201, description = "Recorded.", body = SearchRecorded),
        (status = 200, description = "This search_id was already recorded by this searcher: the original event.", body = SearchRecorded),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 409, response = Conflict),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = Unprocessable),
        (status = 429, response = RateLimited),
        (status = 503, response = Unavailable)
    )
)]
#[tracing::instrument(skip_all, fields(search_event_id))]
pub async fn record_event(
    State(state): State<AppState>,
    EventSearcher(searcher): EventSearcher,
    client: Client,
    JsonBody(body): JsonBody<NewSearch>,
) -> ApiResult<(StatusCode, Json<SearchRecorded>)> {
    if body.query.chars().count() > MAX_QUERY_CHARS {
        return Err(ApiError::invalid(
            "too_long",
            "query",
            format!("at most {MAX_QUERY_CHARS} characters"),
        ));
    }
    if body.query.contains('\0') {
        return Err(ApiError::invalid(
            "invalid_characters",
            "query",
            "the query contains a NUL character",
        ));
    }
    let normalized_query = search::normalize_query(&body.query);
    if normalized_query.is_empty() {
        return Err(ApiError::invalid(
            "empty_query",
            "query",
            "the query is empty once whitespace is removed",
        ));
    }
    if !(0..=MAX_RESULT_COUNT).contains(&body.result_count) {
        return Err(ApiError::invalid(
            "invalid_result_count",
            "result_count",
            format!("between 0 and {MAX_RESULT_COUNT}"),
        ));
    }
    let filters = match body.filters {
        None => None,
        Some(filters) => Some(check_filters(filters)?),
    };
    let shown = match body.shown {
        None => None,
        Some(shown) => Some(check_shown(shown)?),
    };
    let search_id = body.search_id.unwrap_or_else(Uuid::new_v4);
    let event = NewEvent {
        search_id,
        searcher,
        query: body.query,
        normalized_query,
        // checked against MAX_RESULT_COUNT above
        result_count: body.result_count as i32,
        filters,
        shown,
        ip_hash: client.ip.map(|ip| state.ip_hasher.hash(ip)),
        ua_class: UaClass::of(client.user_agent.as_deref()),
        searched_at: state.clock.now(),
    };
    let (status, id) = match state.search.record(event).await? {
        Recorded::Created { id } => (StatusCode::CREATED, id),
        Recorded::Repeated { id } => (StatusCode::OK, id),
        Recorded::Taken => {
            return Err(ApiError::Conflict {
                code: "search_id_taken",
                detail: "this search_id belongs to another searcher's search".into(),
            });
        }
        Recorded::Closed => return Err(ApiError::Unauthorized("account closed".into())),
    };
    tracing::Span::current().record("search_event_id", id);
    Ok((status, Json(SearchRecorded { id, search_id })))
}

fn check_filters(filters: Value) -> ApiResult<Value> {
    if !filters.is_object() {
        return Err(ApiError::invalid(
            "not_an_object",
            "filters",
            "filters must be a JSON object",
        ));
    }
    let size = serde_json::to_vec(&filters)
        .map_err(|e| ApiError::Internal(format!("serializing filters: {e}")))?
        .len();
    if size > MAX_FILTERS_BYTES {
        return Err(ApiError::invalid(
            "too_large",
            "filters",
            format!("at most {MAX_FILTERS_BYTES} bytes as JSON"),
        ));
    }
    // jsonb refuses the NUL character: answer that here rather than with a database error
    if has_nul(&filters) {
        return Err(ApiError::invalid(
            "invalid_characters",
            "filters",
            "filters contain a NUL character",
        ));
    }
    Ok(filters)
}

fn has_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

fn check_shown(shown: Vec<Shown>) -> ApiResult<Value> {
    if shown.len() > MAX_SHOWN {
        return Err(ApiError::invalid(
            "too_many",
            "shown",
            format!("at most {MAX_SHOWN} shown results"),
        ));
    }
    for (i, item) in shown.iter().enumerate() {
        let ids_ok = item.instructor_id > 0 && item.service_id.is_none_or(|id| id > 0);
        if !ids_ok || !(0..=MAX_POSITION).contains(&item.position) {
            return Err(ApiError::invalid(
                "invalid_shown",
                "shown",
                format!("shown[{i}]: ids are positive and positions between 0 and {MAX_POSITION}"),
            ));
        }
    }
    serde_json::to_value(shown).map_err(|e| ApiError::Internal(format!("serializing shown: {e}")))
}

/// What the searcher did with a result.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = NewInteraction)]
#[serde(deny_unknown_fields)]
pub struct NewInteractionBody {
    kind: Kind,
    #[serde(default)]
    #[schema(minimum = 0, maximum = 10_000)]
    position: Option<i32>,
    #[serde(default)]
    #[schema(minimum = 1)]
    instructor_id: Option<i64>,
    #[serde(default)]
    #[schema(minimum = 1)]
    service_id: Option<i64>,
}

/// A recorded interaction.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InteractionRecorded {
    id: i64,
    search_event_id: i64,
    kind: Kind,
}

/// Record a click, hover or conversion on a search, by its searcher.
///
/// Counted for the day of the search, whenever it arrives. A search that is not the caller's
/// is a 404, like an unknown one. A repeated conversion counts once: 200 with the existing
/// one. Rate limited per client.
#[utoipa::path(
    post,
    path = "/api/v1/search/events/{id}/interactions",
    tag = "search",
    operation_id = "recordSearchInteraction",
    security(("bearerAuth" = []), ("guestSession" = [])),
    params(("id" = i64, Path, description = "The search event id.")),
    request_body = NewInteractionBody,
    responses(
        (status = 201, description = "Recorded.", body = InteractionRecorded),
        (status = 200, description = "This search already has a conversion: the existing one.", body = InteractionRecorded),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = Unprocessable),
        (status = 429, response = RateLimited),
        (status = 503, response = Unavailable)
    )
)]
#[tracing::instrument(skip_all, fields(search_event_id = id))]
pub async fn record_interaction(
    State(state): State<AppState>,
    searcher: Searcher,
    Path(id): Path<i64>,
    JsonBody(body): JsonBody<NewInteractionBody>,
) -> ApiResult<(StatusCode, Json<InteractionRecorded>)> {
    if body
        .position
        .is_some_and(|p| !(0..=MAX_POSITION).contains(&p))
    {
        return Err(ApiError::invalid(
            "invalid_position",
            "position",
            format!("between 0 and {MAX_POSITION}"),
        ));
    }
    for (field, value) in [
        ("instructor_id", body.instructor_id),
        ("service_id", body.service_id),
    ] {
        if value.is_some_and(|v| v <= 0) {
            return Err(ApiError::invalid("invalid_id", field, "ids are positive"));
        }
    }
    let mut conn = state.db.acquire().await?;
    let event = interactions::find_event(&mut conn, id)
        .await?
        .filter(|e| e.made_by(&searcher))
        .ok_or(ApiError::NotFound("search event"))?;
    let (interaction, created) = interactions::record_interaction(
        &mut conn,
        &event,
        &NewInteraction {
            kind: body.kind,
            position: body.position,
            instructor_id: body.instructor_id,
            service_id: body.service_id,
            booking_id: None,
            occurred_at: state.clock.now(),
        },
    )
    .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(InteractionRecorded {
            id: interaction,
            search_event_id: id,
            kind: body.kind,
        }),
    ))
}

/// The caller's recent searches (at most 10, newest first, as last typed).
///
/// A user's with a token, a guest session's with the header. Rate limited per client.
#[utoipa::path(
    get,
    path = "/api/v1/search/history",
    tag = "search",
    operation_id = "searchHistory",
    security(("bearerAuth" = []), ("guestSession" = [])),
    responses(
        (status = 200, description = "The history.", body = Vec<HistoryEntry>),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 429, response = RateLimited),
        (status = 503, response = Unavailable)
    )
)]
#[tracing::instrument(skip_all)]
pub async fn history(
    State(state): State<AppState>,
    searcher: Searcher,
) -> ApiResult<Json<Vec<HistoryEntry>>> {
    Ok(Json(history::list(&state.db, &searcher).await?))
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HistoryDeleted {
    id: i64,
    deleted: bool,
}

/// Delete one of the caller's history entries (anyone else's is a 404).
///
/// Rate limited per client.
#[utoipa::path(
    delete,
    path = "/api/v1/search/history/{id}",
    tag = "search",
    operation_id = "deleteSearchHistoryEntry",
    security(("bearerAuth" = []), ("guestSession" = [])),
    params(("id" = i64, Path, description = "The history entry id.")),
    responses(
        (status = 200, description = "Deleted.", body = HistoryDeleted),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 429, response = RateLimited),
        (status = 503, response = Unavailable)
    )
)]
#[tracing::instrument(skip_all, fields(history_id = id))]
pub async fn delete_history(
    State(state): State<AppState>,
    searcher: Searcher,
    Path(id): Path<i64>,
) -> ApiResult<Json<HistoryDeleted>> {
    if history::delete(&state.db, &searcher, id).await? {
        Ok(Json(HistoryDeleted { id, deleted: true }))
    } else {
        Err(ApiError::NotFound("history entry"))
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HistoryClaimed {
    /// Guest entries moved to the user.
    claimed: u64,
    /// The user's history after the merge.
    history: Vec<HistoryEntry>,
}

/// Move a guest session's history to the signed-in user (at login).
///
/// Needs both the user's bearer token and the X-Guest-Session header. Merged on the
/// normalized query (the more recent search wins), 10 at most; the guest's entries are gone.
/// Rate limited per client.
#[utoipa::path(
    post,
    path = "/api/v1/search/history/claim",
    tag = "search",
    operation_id = "claimSearchHistory",
    security(("bearerAuth" = [], "guestSession" = [])),
    responses(
        (status = 200, description = "The user's history after the merge.", body = HistoryClaimed),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 429, response = RateLimited),
        (status = 503, response = Unavailable)
    )
)]
#[tracing::instrument(skip_all)]
pub async fn claim_history(
    State(state): State<AppState>,
    user: AuthUser,
    GuestSession(guest): GuestSession,
) -> ApiResult<Json<HistoryClaimed>> {
    let claimed = history::claim(&state.db, user.id, &guest).await?;
    let history = history::list(&state.db, &Searcher::User(user.id)).await?;
    Ok(Json(HistoryClaimed { claimed, history }))
}
