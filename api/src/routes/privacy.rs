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
use utoipa::{IntoParams, ToSchema};

use super::openapi::{
    BadRequest, Conflict, Forbidden, Gone, NotFound, Unauthorized, Unavailable, Unprocessable,
    UnsupportedMediaType,
};

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
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestView {
    #[schema(minimum = 1)]
    id: i64,
    #[schema(minimum = 1)]
    user_id: i64,
    #[schema(inline, value_type = RequestKind)]
    kind: String,
    #[schema(inline, value_type = RequestState)]
    state: String,
    /// Why a failed request failed (e.g. the user is under legal hold).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String)]
    reason: Option<String>,
    created_at: DateTime<Utc>,
    #[schema(required = true)]
    finished_at: Option<DateTime<Utc>>,
    /// A done export: until when it can be downloaded.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = DateTime<Utc>)]
    expires_at: Option<DateTime<Utc>>,
    /// A done export: where to download it.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String)]
    download_url: Option<String>,
}

/// What a privacy request asks for.
// a schema only: the kind is carried as the column's text
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum RequestKind {
    Export,
    Erasure,
}

/// Where a privacy request is.
// a schema only: the state is carried as the column's text
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum RequestState {
    Pending,
    Running,
    Done,
    Failed,
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

/// A request recorded; its job does the work.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Accepted {
    #[schema(minimum = 1)]
    id: i64,
    #[schema(inline, value_type = RequestKind)]
    kind: String,
    #[schema(inline, value_type = RequestState)]
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

/// Export my data.
///
/// Records an export request and its job; the document is downloadable at the request's
/// `download_url` once it is done. One export in flight per user: a second answers 409
/// export_in_flight with the first's `id`.
#[utoipa::path(
    post,
    path = "/api/v1/privacy/export",
    tag = "privacy",
    operation_id = "requestExport",
    security(("bearerAuth" = [])),
    responses(
        (status = 202, description = "The export request.", body = Accepted),
        (status = 401, response = Unauthorized),
        (status = 409, response = Conflict),
        (status = 503, response = Unavailable)
    )
)]
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

/// Erase my account.
///
/// Records an erasure request and its job. A second request while one is in flight answers
/// with the first.
#[utoipa::path(
    post,
    path = "/api/v1/privacy/erase",
    tag = "privacy",
    operation_id = "requestErasure",
    security(("bearerAuth" = [])),
    responses(
        (status = 202, description = "The erasure request.", body = Accepted),
        (status = 401, response = Unauthorized),
        (status = 503, response = Unavailable)
    )
)]
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

/// The user to erase.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminErase {
    user_id: i64,
}

/// Erase a user (admins).
///
/// An unknown user is 404; a user already erased answers 200 with the request that erased
/// them.
#[utoipa::path(
    post,
    path = "/api/v1/admin/privacy/erase",
    tag = "admin",
    operation_id = "adminErase",
    security(("bearerAuth" = [])),
    request_body = AdminErase,
    responses(
        (status = 200, description = "Already erased: the request that did it.", body = RequestView),
        (status = 202, description = "The erasure request.", body = Accepted),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 422, response = Unprocessable),
        (status = 503, response = Unavailable)
    )
)]
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

/// A privacy request (its owner, or an admin; anyone else: 404).
#[utoipa::path(
    get,
    path = "/api/v1/privacy/requests/{id}",
    tag = "privacy",
    operation_id = "getPrivacyRequest",
    security(("bearerAuth" = [])),
    params(("id" = i64, Path, description = "The request id.")),
    responses(
        (status = 200, description = "The request.", body = RequestView),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 503, response = Unavailable)
    )
)]
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

/// My privacy requests, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/privacy/requests",
    tag = "privacy",
    operation_id = "listPrivacyRequests",
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "The requests.", body = Vec<RequestView>),
        (status = 401, response = Unauthorized),
        (status = 503, response = Unavailable)
    )
)]
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

/// Download my data export.
///
/// The owner only (anyone else: 404), until it expires (then 410 gone); before it is done,
/// 409 export_not_ready. The document's format is described in the README (version 1).
#[utoipa::path(
    get,
    path = "/api/v1/privacy/exports/{id}/download",
    tag = "privacy",
    operation_id = "downloadExport",
    security(("bearerAuth" = [])),
    params(("id" = i64, Path, description = "The export request id.")),
    responses(
        (status = 200, description = "The export document (format instainstru.export).", body = ExportDocument),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 410, response = Gone),
        (status = 503, response = Unavailable)
    )
)]
pub async fn download(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<i64>,
) -> ApiResult<Response> {
    let row = sqlx::query!(
        r#"select r.state, r.expires_at, d.request_id as "document?"
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
    let (Some(_), Some(expires_at)) = (row.document, row.expires_at) else {
        return Err(ApiError::Gone("the export has expired".into()));
    };
    if expires_at <= now {
        return Err(ApiError::Gone("the export has expired".into()));
    }
    // one chunk per query, each on a connection of the pool only while it runs: the
    // document is never whole in memory, and a slow reader holds no connection
    let db = state.db.clone();
    let chunks = futures::stream::try_unfold(0i32, move |seq| {
        let db = db.clone();
        async move {
            let data: Option<String> = sqlx::query_scalar!(
                "select data from export_chunks where request_id = $1 and seq = $2",
                id,
                seq
            )
            .fetch_optional(&db)
            .await?;
            Ok::<_, sqlx::Error>(data.map(|d| (axum::body::Bytes::from(d), seq + 1)))
        }
    });
    Ok((
        [
            (header::CONTENT_TYPE, "application/json".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"instainstru-export-{id}.json\""),
            ),
        ],
        axum::body::Body::from_stream(chunks),
    )
        .into_response())
}

/// The envelope of an export document; `tables` holds one array per table that refers to
/// the user (see the README).
// a schema only: the document is passed on as stored
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ExportDocument {
    #[schema(pattern = "^instainstru\\.export$")]
    format: String,
    #[schema(minimum = 1)]
    version: i64,
    generated_at: DateTime<Utc>,
    #[schema(minimum = 1)]
    user_id: i64,
    #[schema(value_type = Object)]
    profile: (),
    #[schema(value_type = Object)]
    tables: (),
}

/// Set or lift a legal hold.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LegalHold {
    hold: bool,
    /// Why (kept on the user while the hold lasts, never in the audit log).
    #[serde(default)]
    #[schema(max_length = 500)]
    reason: Option<String>,
}

/// A user's legal hold.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LegalHoldView {
    user_id: i64,
    hold: bool,
    #[schema(required = true)]
    reason: Option<String>,
}

/// Set or lift a legal hold on a user (admins).
///
/// A user under legal hold is not erased (the erasure fails with that reason, audited), and
/// the retention sweep keeps their data. Audited; the reason is kept on the user, not in the
/// audit log.
#[utoipa::path(
    put,
    path = "/api/v1/admin/users/{id}/legal-hold",
    tag = "admin",
    operation_id = "setLegalHold",
    security(("bearerAuth" = [])),
    params(("id" = i64, Path, description = "The user id.")),
    request_body = LegalHold,
    responses(
        (status = 200, description = "The hold as set.", body = LegalHoldView),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 422, response = Unprocessable),
        (status = 503, response = Unavailable)
    )
)]
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

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Entries about this user only.
    #[serde(default)]
    user_id: Option<i64>,
    /// Entries at or after this instant (RFC 3339).
    #[serde(default)]
    from: Option<DateTime<Utc>>,
    /// Entries before this instant (RFC 3339).
    #[serde(default)]
    to: Option<DateTime<Utc>>,
}

/// One audit log entry: ids and counts, never an email or a name.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditEntry {
    id: i64,
    /// Who acted: a user id, or `retention` for the sweep.
    actor: String,
    /// For whom.
    #[schema(required = true)]
    subject_user_id: Option<i64>,
    action: String,
    outcome: String,
    #[schema(value_type = Object)]
    detail: serde_json::Value,
    at: DateTime<Utc>,
}

/// Read the privacy audit log (admins): oldest first, at most 1000 entries.
#[utoipa::path(
    get,
    path = "/api/v1/admin/privacy/audit",
    tag = "admin",
    operation_id = "privacyAudit",
    security(("bearerAuth" = [])),
    params(AuditQuery),
    responses(
        (status = 200, description = "The entries.", body = Vec<AuditEntry>),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 503, response = Unavailable)
    )
)]
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

/// One rule of the retention policy.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetentionRuleView {
    kind: String,
    /// Days kept; null is forever.
    #[schema(required = true, minimum = 1)]
    keep_days: Option<i64>,
    #[schema(inline, value_type = RetentionAction)]
    action: String,
    /// Whether a legal hold on the user keeps their rows past the rule.
    honours_legal_hold: bool,
    note: String,
}

/// What happens to a kind of data past its keep time.
// a schema only: the action is carried as text
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum RetentionAction {
    Delete,
    Keep,
    Anonymize,
}

/// One run of the retention sweep.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetentionRunView {
    #[schema(minimum = 1)]
    id: i64,
    /// The job that carries it out.
    job_id: i64,
    /// `schedule`, or the id of the admin who asked.
    requested_by: String,
    dry_run: bool,
    #[schema(inline, value_type = RequestState)]
    state: String,
    /// Per data kind: rows deleted (for a dry run, that would be), and
    /// `search_partitions_dropped`.
    #[schema(value_type = Object)]
    counts: serde_json::Value,
    created_at: DateTime<Utc>,
    #[schema(required = true)]
    started_at: Option<DateTime<Utc>>,
    #[schema(required = true)]
    finished_at: Option<DateTime<Utc>>,
}

/// The retention policy and the sweep's last runs.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetentionView {
    policy: Vec<RetentionRuleView>,
    /// The last 20 runs, newest first.
    runs: Vec<RetentionRunView>,
}

/// The retention policy and the sweep's last runs (admins).
#[utoipa::path(
    get,
    path = "/api/v1/admin/privacy/retention",
    tag = "admin",
    operation_id = "retention",
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "The policy and the last runs.", body = RetentionView),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 503, response = Unavailable)
    )
)]
pub async fn retention(
    State(state): State<AppState>,
    user: AuthUser,
) -> ApiResult<Json<RetentionView>> {
    user.require(Role::Admin)?;
    let runs = sqlx::query_as!(
        RetentionRunView,
        "select id, job_id, requested_by, dry_run, state, counts, created_at, started_at, finished_at
         from retention_runs order by created_at desc, id desc limit 20"
    )
    .fetch_all(&state.db)
    .await?;
    let policy = shared::retention::policy(&state.config)
        .into_iter()
        .map(|r| RetentionRuleView {
            kind: r.kind.into(),
            keep_days: r.keep_days,
            action: r.action.into(),
            honours_legal_hold: r.honours_legal_hold,
            note: r.note.into(),
        })
        .collect();
    Ok(Json(RetentionView { policy, runs }))
}

/// A sweep to run now.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetentionRun {
    /// Count what would be deleted, per kind, and delete nothing.
    #[serde(default)]
    dry_run: bool,
}

/// Run the retention sweep now (admins).
///
/// Records the run and its job (the outbox) in one transaction; the worker carries it out,
/// and `GET /api/v1/admin/privacy/retention` shows its counts once it is done.
#[utoipa::path(
    post,
    path = "/api/v1/admin/privacy/retention/run",
    tag = "admin",
    operation_id = "runRetention",
    security(("bearerAuth" = [])),
    request_body = RetentionRun,
    responses(
        (status = 202, description = "The run, pending.", body = RetentionRunView),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = Unprocessable),
        (status = 503, response = Unavailable)
    )
)]
#[tracing::instrument(skip_all, fields(dry_run = body.dry_run))]
pub async fn run_retention(
    State(state): State<AppState>,
    user: AuthUser,
    JsonBody(body): JsonBody<RetentionRun>,
) -> ApiResult<(StatusCode, Json<RetentionRunView>)> {
    user.require(Role::Admin)?;
    let now = state.clock.now();
    let mut tx = state.db.begin().await?;
    let job_id = shared::outbox::enqueue(
        &mut tx,
        &shared::jobs::RetentionSweep {
            slot: now,
            dry_run: body.dry_run,
        },
        now,
    )
    .await?
    .ok_or_else(|| ApiError::Conflict {
        code: "duplicate",
        detail: "a sweep was asked for at this very instant; retry".into(),
    })?;
    let run = sqlx::query_as!(
        RetentionRunView,
        "insert into retention_runs (job_id, requested_by, dry_run, created_at) values ($1, $2, $3, $4)
         returning id, job_id, requested_by, dry_run, state, counts, created_at, started_at, finished_at",
        job_id,
        user.id.to_string(),
        body.dry_run,
        now
    )
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    state.outbox.wake();
    Ok((StatusCode::ACCEPTED, Json(run)))
}
