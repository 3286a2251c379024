//! Privacy (GDPR): a user's data export and erasure requests, the export's download, and the
//! admin's erasure, legal holds and audit log. Each request is a row in `privacy_requests`
//! written in one transaction with its job (the outbox) and an audit entry; the work is the
//! worker's (`data_export`, `erasure`).
use axum::{
    Json,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shared::{
    domain::Role,
    jobs::{DataExport, Erasure},
};
use sqlx::PgConnection;

use crate::{
    auth::AuthUser,
    error::{ApiError, ApiResult},
    extract::{Json as JsonBody, Path, Query},
    state::AppState,
};

/// The longest legal hold reason accepted.
const MAX_REASON_CHARS: usize = 500;
/// The most audit entries one read returns.
const AUDIT_LIMIT: i64 = 1000;

/// A privacy request as its owner (or an admin) sees it.
#[derive(Debug, Serialize)]
pub struct RequestView {
    id: i64,
    user_id: i64,
    kind: String,
    state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    created_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    download_url: Option<String>,
}

struct RequestRow {
    id: i64,
    user_id: i64,
    kind: String,
    state: String,
    reason: Option<String>,
    created_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
    expires_at: Option<DateTime<Utc>>,
}

impl From<RequestRow> for RequestView {
    fn from(r: RequestRow) -> Self {
        let done_export = r.kind == "export" && r.state == "done";
        RequestView {
            download_url: done_export.then(|| format!("/api/v1/privacy/exports/{}/download", r.id)),
            expires_at: r.expires_at.filter(|_| done_export),
            id: r.id,
            user_id: r.user_id,
            kind: r.kind,
            state: r.state,
            reason: r.reason,
            created_at: r.created_at,
            finished_at: r.finished_at,
        }
    }
}

async fn load(conn: &mut PgConnection, id: i64) -> Result<Option<RequestRow>, sqlx::Error> {
    sqlx::query_as!(
        RequestRow,
        "select id, user_id, kind, state, reason, created_at, finished_at, expires_at
         from privacy_requests where id = $1",
        id
    )
    .fetch_optional(conn)
    .await
}

/// What creating a request found.
enum Created {
    New(RequestRow),
    /// One of the same kind for the same user is already pending or running.
    InFlight(i64),
}

/// Records a request of `kind` for `user_id`, asked by `by`, with its job and an audit entry,
/// in one transaction; wakes the relay after the commit.
async fn create(state: &AppState, user_id: i64, by: i64, kind: &str) -> Result<Created, ApiError> {
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    let id = sqlx::query_scalar!(
        "insert into privacy_requests (user_id, kind, requested_by, created_at) values ($1, $2, $3, $4)
         on conflict (user_id, kind) where state in ('pending', 'running') do nothing
         returning id",
        user_id,
        kind,
        by,
        now
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(id) = id else {
        let first = sqlx::query_scalar!(
            "select id from privacy_requests
             where user_id = $1 and kind = $2 and state in ('pending', 'running')",
            user_id,
            kind
        )
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| ApiError::Unavailable("request finished meanwhile".into()))?;
        return Ok(Created::InFlight(first));
    };
    let job_id = if kind == "export" {
        shared::outbox::enqueue(&mut tx, &DataExport { request_id: id }, now).await?
    } else {
        shared::outbox::enqueue(&mut tx, &Erasure { request_id: id }, now).await?
    };
    sqlx::query!(
        "update privacy_requests set job_id = $2 where id = $1",
        id,
        job_id
    )
    .execute(&mut *tx)
    .await?;
    shared::audit::record(
        &mut tx,
        &by.to_string(),
        user_id,
        &format!("{kind}_requested"),
        "accepted",
        serde_json::json!({ "request_id": id }),
    )
    .await?;
    let row = load(&mut tx, id)
        .await?
        .ok_or_else(|| ApiError::Internal("request vanished".into()))?;
    tx.commit().await?;
    state.outbox.wake();
    metrics::counter!("privacy_requests_total", "kind" => kind.to_string()).increment(1);
    Ok(Created::New(row))
}

#[derive(Debug, Serialize)]
pub struct Accepted {
    id: i64,
    kind: String,
    state: String,
}

fn accepted(row: RequestRow) -> (StatusCode, Json<Accepted>) {
    (
        StatusCode::ACCEPTED,
        Json(Accepted {
            id: row.id,
            kind: row.kind,
            state: row.state,
        }),
    )
}

/// `POST /api/v1/privacy/export` (own account): one export in flight per user.
#[tracing::instrument(skip_all)]
pub async fn export(
    State(state): State<AppState>,
    user: AuthUser,
) -> ApiResult<(StatusCode, Json<Accepted>)> {
    match create(&state, user.id, user.id, "export").await? {
        Created::New(row) => Ok(accepted(row)),
        Created::InFlight(id) => Err(ApiError::ConflictWith {
            code: "export_in_flight",
            detail: format!("export request {id} is still in progress"),
            id,
        }),
    }
}

/// `POST /api/v1/privacy/erase` (own account). A second request while one is in flight
/// answers with the first.
#[tracing::instrument(skip_all)]
pub async fn erase(
    State(state): State<AppState>,
    user: AuthUser,
) -> ApiResult<(StatusCode, Json<Accepted>)> {
    erase_user(&state, user.id, user.id).await
}

async fn erase_user(
    state: &AppState,
    user_id: i64,
    by: i64,
) -> ApiResult<(StatusCode, Json<Accepted>)> {
    match create(state, user_id, by, "erasure").await? {
        Created::New(row) => Ok(accepted(row)),
        Created::InFlight(id) => {
            let mut conn = state.db.acquire().await?;
            let row = load(&mut conn, id)
                .await?
                .ok_or(ApiError::NotFound("request"))?;
            Ok(accepted(row))
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminErase {
    user_id: i64,
}

/// `POST /api/v1/admin/privacy/erase` (admins): an unknown user is 404; a user already
/// erased answers 200 with the request that erased them.
#[tracing::instrument(skip_all, fields(subject = body.user_id))]
pub async fn admin_erase(
    State(state): State<AppState>,
    user: AuthUser,
    JsonBody(body): JsonBody<AdminErase>,
) -> ApiResult<Response> {
    user.require(Role::Admin)?;
    let erased: Option<Option<DateTime<Utc>>> =
        sqlx::query_scalar!("select erased_at from users where id = $1", body.user_id)
            .fetch_optional(&state.db)
            .await?;
    match erased {
        None => Err(ApiError::NotFound("user")),
        Some(Some(_)) => {
            let earlier = sqlx::query_as!(
                RequestRow,
                "select id, user_id, kind, state, reason, created_at, finished_at, expires_at
                 from privacy_requests where user_id = $1 and kind = 'erasure' and state = 'done'
                 order by finished_at desc limit 1",
                body.user_id
            )
            .fetch_optional(&state.db)
            .await?
            .ok_or_else(|| ApiError::Conflict {
                code: "already_erased",
                detail: "the user was erased without a request".into(),
            })?;
            Ok((StatusCode::OK, Json(RequestView::from(earlier))).into_response())
        }
        Some(None) => Ok(erase_user(&state, body.user_id, user.id)
            .await?
            .into_response()),
    }
}

/// `GET /api/v1/privacy/requests/{id}` (its owner, or an admin; anyone else: 404).
pub async fn get(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<i64>,
) -> ApiResult<Json<RequestView>> {
    let mut conn = state.db.acquire().await?;
    let row = load(&mut conn, id)
        .await?
        .filter(|r| r.user_id == user.id || user.role == Role::Admin)
        .ok_or(ApiError::NotFound("request"))?;
    Ok(Json(row.into()))
}

/// `GET /api/v1/privacy/requests` (own requests, newest first).
pub async fn list(
    State(state): State<AppState>,
    user: AuthUser,
) -> ApiResult<Json<Vec<RequestView>>> {
    let rows = sqlx::query_as!(
        RequestRow,
        "select id, user_id, kind, state, reason, created_at, finished_at, expires_at
         from privacy_requests where user_id = $1 order by id desc",
        user.id
    )
    .fetch_all(&state.db)
    .await?;
    Ok(Json(rows.into_iter().map(RequestView::from).collect()))
}

/// `GET /api/v1/privacy/exports/{id}/download` (the owner only; anyone else: 404): the
/// document as stored, until it expires (then 410). Postgres renders the stored jsonb as
/// text once; the handler only passes it on.
pub async fn download(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<i64>,
) -> ApiResult<Response> {
    let row = sqlx::query!(
        r#"select r.state, r.expires_at, d.document::text as document
           from privacy_requests r left join export_documents d on d.request_id = r.id
           where r.id = $1 and r.kind = 'export' and r.user_id = $2"#,
        id,
        user.id
    )
    .fetch_optional(&state.db)
    .await?
    .ok_or(ApiError::NotFound("export"))?;
    if row.state != "done" {
        return Err(ApiError::Conflict {
            code: "export_not_ready",
            detail: format!("the export is {}", row.state),
        });
    }
    let now = state.clock.now();
    let (Some(document), Some(expires_at)) = (row.document, row.expires_at) else {
        return Err(ApiError::Gone("the export has expired".into()));
    };
    if expires_at <= now {
        return Err(ApiError::Gone("the export has expired".into()));
    }
    Ok((
        [
            (header::CONTENT_TYPE, "application/json".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"instainstru-export-{id}.json\""),
            ),
        ],
        document,
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LegalHold {
    hold: bool,
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct LegalHoldView {
    user_id: i64,
    hold: bool,
    reason: Option<String>,
}

/// `PUT /api/v1/admin/users/{id}/legal-hold` (admins): sets or lifts a legal hold, audited
/// (the reason is kept on the user, not in the audit log).
#[tracing::instrument(skip_all, fields(subject = id))]
pub async fn legal_hold(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<i64>,
    JsonBody(body): JsonBody<LegalHold>,
) -> ApiResult<Json<LegalHoldView>> {
    user.require(Role::Admin)?;
    if body
        .reason
        .as_ref()
        .is_some_and(|r| r.chars().count() > MAX_REASON_CHARS)
    {
        return Err(ApiError::invalid(
            "too_long",
            "reason",
            format!("at most {MAX_REASON_CHARS} characters"),
        ));
    }
    let reason = body.reason.filter(|_| body.hold);
    let mut tx = state.db.begin().await?;
    sqlx::query!(
        "update users set legal_hold = $2, legal_hold_reason = $3 where id = $1 returning id",
        id,
        body.hold,
        reason
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(ApiError::NotFound("user"))?;
    shared::audit::record(
        &mut tx,
        &user.id.to_string(),
        id,
        if body.hold {
            "legal_hold_set"
        } else {
            "legal_hold_lifted"
        },
        "done",
        serde_json::json!({}),
    )
    .await?;
    tx.commit().await?;
    Ok(Json(LegalHoldView {
        user_id: id,
        hold: body.hold,
        reason,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    #[serde(default)]
    user_id: Option<i64>,
    #[serde(default)]
    from: Option<DateTime<Utc>>,
    #[serde(default)]
    to: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize)]
pub struct AuditEntry {
    id: i64,
    actor: String,
    subject_user_id: Option<i64>,
    action: String,
    outcome: String,
    detail: serde_json::Value,
    at: DateTime<Utc>,
}

/// `GET /api/v1/admin/privacy/audit?user_id=&from=&to=` (admins): oldest first, at most
/// 1000 entries.
pub async fn audit(
    State(state): State<AppState>,
    user: AuthUser,
    Query(q): Query<AuditQuery>,
) -> ApiResult<Json<Vec<AuditEntry>>> {
    user.require(Role::Admin)?;
    let entries = sqlx::query_as!(
        AuditEntry,
        "select id, actor, subject_user_id, action, outcome, detail, at from audit_log
         where ($1::bigint is null or subject_user_id = $1)
           and ($2::timestamptz is null or at >= $2)
           and ($3::timestamptz is null or at < $3)
         order by at, id limit $4",
        q.user_id,
        q.from,
        q.to,
        AUDIT_LIMIT
    )
    .fetch_all(&state.db)
    .await?;
    Ok(Json(entries))
}
