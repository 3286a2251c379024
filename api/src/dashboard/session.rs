//! Dashboard sign-in: `POST /ops/login` trades a bearer token (from `api mint-token`) for a
//! session cookie, HttpOnly and SameSite=Strict, scoped to `/ops`. The cookie holds a random
//! token; Postgres holds only its SHA-256 (`ops_sessions`), with the user and the session's
//! CSRF token, which every POST form carries. The role is read from `users` on every
//! request, so a demoted or erased user loses the dashboard at once.
use axum::{
    extract::{FromRequestParts, OriginalUri},
    http::{HeaderMap, HeaderValue, Method, header, request::Parts},
};
use chrono::{DateTime, Utc};
use rand::Rng;
use sha2::{Digest, Sha256};
use shared::domain::Role;

use super::Refusal;
use crate::{error::ApiError, ops::Actor, state::AppState};

/// The cookie's name.
pub const COOKIE: &str = "ops_session";

/// A signed-in dashboard user.
#[derive(Debug, Clone)]
pub struct Session {
    pub user_id: i64,
    pub role: Role,
    /// The token each POST form of this session must carry.
    pub csrf: String,
    token_hash: String,
}

impl Session {
    pub fn actor(&self) -> Actor {
        Actor {
            user_id: self.user_id,
            role: self.role,
        }
    }

    pub fn can_act(&self) -> bool {
        self.role.can_act_ops()
    }

    /// 403 unless this session may act and `csrf` is its form token (a forged POST from
    /// another site, or from a viewer, is refused the same way).
    pub fn authorize_action(&self, csrf: Option<&str>) -> Result<Actor, ApiError> {
        self.actor().require_act()?;
        self.check_csrf(csrf)?;
        Ok(self.actor())
    }

    /// 403 unless `csrf` is this session's form token.
    pub fn check_csrf(&self, csrf: Option<&str>) -> Result<(), ApiError> {
        let given = csrf.unwrap_or_default().as_bytes();
        let expected = self.csrf.as_bytes();
        // constant time in the length of the expected token
        let same = given.len() == expected.len()
            && given
                .iter()
                .zip(expected)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if same {
            Ok(())
        } else {
            Err(ApiError::Forbidden(
                "the form's CSRF token is missing or wrong: reload the page and try again".into(),
            ))
        }
    }
}

/// 32 random bytes, hex.
fn random_token() -> String {
    let bytes: [u8; 32] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Opens a session for `user_id` until `expires_at`; returns the cookie's token.
pub async fn open(
    state: &AppState,
    user_id: i64,
    expires_at: DateTime<Utc>,
) -> Result<String, ApiError> {
    let token = random_token();
    sqlx::query!(
        "insert into ops_sessions (token_hash, user_id, csrf, expires_at) values ($1, $2, $3, $4)",
        hash(&token),
        user_id,
        random_token(),
        expires_at
    )
    .execute(&state.db)
    .await?;
    // a sign-in is a good moment to forget sessions that ended long ago
    sqlx::query!(
        "delete from ops_sessions where expires_at < $1",
        state.clock.now() - chrono::Duration::days(1)
    )
    .execute(&state.db)
    .await?;
    Ok(token)
}

/// Ends `session`.
pub async fn close(state: &AppState, session: &Session) -> Result<(), ApiError> {
    sqlx::query!(
        "delete from ops_sessions where token_hash = $1",
        session.token_hash
    )
    .execute(&state.db)
    .await?;
    Ok(())
}

/// The session of the request's cookie, if it names one that is current and whose user is
/// not erased.
pub async fn find(state: &AppState, headers: &HeaderMap) -> Result<Option<Session>, ApiError> {
    let Some(token) = cookie(headers) else {
        return Ok(None);
    };
    let token_hash = hash(token);
    let row = sqlx::query!(
        r#"select s.user_id, s.csrf, u.role as "role: Role" from ops_sessions s
             join users u on u.id = s.user_id
            where s.token_hash = $1 and s.expires_at > $2 and u.erased_at is null"#,
        token_hash,
        state.clock.now()
    )
    .fetch_optional(&state.db)
    .await?;
    Ok(row.map(|r| Session {
        user_id: r.user_id,
        role: r.role,
        csrf: r.csrf,
        token_hash,
    }))
}

/// The session token in the request's `Cookie` header.
fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
        .filter(|v| !v.is_empty() && v.len() <= 128)
}

/// The `Set-Cookie` value that stores `token` for `max_age_secs`.
pub fn set_cookie(token: &str, max_age_secs: i64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE}={token}; Path=/ops; HttpOnly; SameSite=Strict; Max-Age={max_age_secs}{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("ops_session=; Path=/ops; Max-Age=0"))
}

/// The `Set-Cookie` value that deletes the cookie.
pub fn clear_cookie(secure: bool) -> HeaderValue {
    if secure {
        HeaderValue::from_static(
            "ops_session=; Path=/ops; HttpOnly; SameSite=Strict; Max-Age=0; Secure",
        )
    } else {
        HeaderValue::from_static("ops_session=; Path=/ops; HttpOnly; SameSite=Strict; Max-Age=0")
    }
}

/// Where a request without a session goes back to after signing in: the page itself for a
/// GET; for a POST (an action whose session expired) the page the form was on.
fn came_from(parts: &Parts) -> String {
    let uri = parts
        .extensions
        .get::<OriginalUri>()
        .map(|u| u.0.clone())
        .unwrap_or_else(|| parts.uri.clone());
    if parts.method == Method::GET {
        return uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/ops".into());
    }
    parts
        .headers
        .get(header::REFERER)
        .and_then(|r| r.to_str().ok())
        .and_then(|r| r.find("/ops").map(|at| r[at..].to_string()))
        .unwrap_or_else(|| "/ops".into())
}

/// A `next` that is a dashboard page of this host, never somewhere else.
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with("/ops")
                && !n.starts_with("/ops/login")
                && !n.contains("//")
                && !n.contains('\\') =>
        {
            n.to_string()
        }
        _ => "/ops".into(),
    }
}

impl FromRequestParts<AppState> for Session {
    type Rejection = Refusal;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Refusal> {
        match find(state, &parts.headers).await {
            Ok(Some(session)) if session.role.can_view_ops() => Ok(session),
            // signed in once, but no longer an ops role (a student or instructor)
            Ok(Some(_)) => Err(Refusal::Api(ApiError::Forbidden(
                "the dashboard requires the ops_viewer, ops_operator or admin role".into(),
            ))),
            Ok(None) => Err(Refusal::SignIn {
                next: came_from(parts),
            }),
            Err(e) => Err(Refusal::Api(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_on_the_dashboard() {
        assert_eq!(
            safe_next(Some("/ops/jobs?state=dead")),
            "/ops/jobs?state=dead"
        );
        assert_eq!(safe_next(Some("https://evil.example/ops")), "/ops");
        assert_eq!(safe_next(Some("//evil.example/ops")), "/ops");
        assert_eq!(safe_next(Some("/ops//evil.example")), "/ops");
        assert_eq!(safe_next(Some("/ops/login")), "/ops");
        assert_eq!(safe_next(None), "/ops");
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=b; ops_session=abc123; c=d"),
        );
        assert_eq!(cookie(&headers), Some("abc123"));
        let flags = set_cookie("abc", 60, true);
        let flags = flags.to_str().expect("ascii");
        assert!(flags.contains("HttpOnly") && flags.contains("SameSite=Strict"));
        assert!(flags.contains("Secure"));
    }
}
