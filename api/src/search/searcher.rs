//! Who is searching: a user proven by a bearer token, or a guest known only by the opaque
//! session id its client sends in `X-Guest-Session`.
use axum::{
    extract::{FromRef, FromRequestParts},
    http::{header, request::Parts},
};

use crate::{
    auth::{AuthUser, SharedKeys},
    error::ApiError,
};

/// The header a guest's client identifies its session with.
pub const GUEST_HEADER: &str = "x-guest-session";
/// The longest guest session id accepted.
pub const MAX_GUEST_SESSION_CHARS: usize = 64;

/// The owner of search events and history.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Searcher {
    User(i64),
    Guest(String),
}

impl Searcher {
    pub fn user_id(&self) -> Option<i64> {
        match self {
            Searcher::User(id) => Some(*id),
            Searcher::Guest(_) => None,
        }
    }

    pub fn guest_session(&self) -> Option<&str> {
        match self {
            Searcher::User(_) => None,
            Searcher::Guest(session) => Some(session),
        }
    }

    /// Whether the stored owner columns of a row are this searcher.
    pub fn owns(&self, user_id: Option<i64>, guest_session: Option<&str>) -> bool {
        match self {
            Searcher::User(id) => user_id == Some(*id),
            Searcher::Guest(session) => guest_session == Some(session.as_str()),
        }
    }

    /// The key of this searcher's advisory lock (`hashtextextended` in SQL): the writes of
    /// one searcher's history take it, so trimming to ten sees every concurrent upsert.
    pub fn lock_key(&self) -> String {
        match self {
            Searcher::User(id) => format!("search_history:u:{id}"),
            Searcher::Guest(session) => format!("search_history:g:{session}"),
        }
    }
}

/// The guest session of a request: `None` without the header, an error when it is not an
/// id of 1 to 64 visible ASCII characters.
pub fn guest_session(parts: &Parts) -> Result<Option<String>, ApiError> {
    let Some(value) = parts.headers.get(GUEST_HEADER) else {
        return Ok(None);
    };
    let session = value
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|s| {
            !s.is_empty()
                && s.len() <= MAX_GUEST_SESSION_CHARS
                && s.bytes().all(|b| b.is_ascii_graphic())
        })
        .ok_or_else(|| ApiError::BadRequest {
            code: "invalid_guest_session",
            detail: format!(
                "X-Guest-Session must be 1 to {MAX_GUEST_SESSION_CHARS} visible ASCII characters"
            ),
            field: Some("X-Guest-Session".into()),
        })?;
    Ok(Some(session.to_string()))
}

/// Who a request searches as. A bearer token wins over a guest header (and a bad token is
/// refused, not ignored); neither is a 401. `check_account`: whether the user's account is
/// looked up now (as [`AuthUser`] does) or left to the write that follows.
async fn searcher_of<S>(
    parts: &mut Parts,
    state: &S,
    check_account: bool,
) -> Result<Searcher, ApiError>
where
    SharedKeys: FromRef<S>,
    sqlx::PgPool: FromRef<S>,
    S: Send + Sync,
{
    if parts.headers.contains_key(header::AUTHORIZATION) {
        let user = if check_account {
            AuthUser::from_request_parts(parts, state).await?
        } else {
            crate::auth::authenticate(parts, &SharedKeys::from_ref(state))?
        };
        return Ok(Searcher::User(user.id));
    }
    match guest_session(parts)? {
        Some(session) => Ok(Searcher::Guest(session)),
        None => Err(ApiError::Unauthorized(
            "a bearer token or an X-Guest-Session header is required".into(),
        )),
    }
}

impl<S> FromRequestParts<S> for Searcher
where
    SharedKeys: FromRef<S>,
    sqlx::PgPool: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        searcher_of(parts, state, true).await
    }
}

/// The searcher of a new search event: a [`Searcher`] whose token is verified but whose
/// account is checked by the event's batch write (`search_record_events`, migration 0015),
/// which answers a closed account with nothing written. One check per batch instead of one
/// query per request: at 5,500 events/s offered the per-request lookups held ingestion to
/// 4,324 events/s, against 5,258/s without them (ops/bench/search).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventSearcher(pub Searcher);

impl<S> FromRequestParts<S> for EventSearcher
where
    SharedKeys: FromRef<S>,
    sqlx::PgPool: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        searcher_of(parts, state, false).await.map(EventSearcher)
    }
}

/// The guest session a request must carry (claiming a guest's history).
#[derive(Debug, Clone)]
pub struct GuestSession(pub String);

impl<S: Send + Sync> FromRequestParts<S> for GuestSession {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        guest_session(parts)?
            .map(GuestSession)
            .ok_or_else(|| ApiError::BadRequest {
                code: "missing_guest_session",
                detail: "the X-Guest-Session header is required".into(),
                field: Some("X-Guest-Session".into()),
            })
    }
}
