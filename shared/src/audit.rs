//! The audit log's one writer (the table refuses UPDATE and DELETE: entries are only ever
//! added), and the failed end of a privacy request.

/// Appends an audit entry: who (`actor`: a user id, or `retention`), for whom, what, how it
/// ended, and counts or ids in `detail`; never an email or a name.
pub async fn record(
    conn: &mut sqlx::PgConnection,
    actor: &str,
    subject_user_id: i64,
    action: &str,
    outcome: &str,
    detail: serde_json::Value,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "insert into audit_log (actor, subject_user_id, action, outcome, detail) values ($1, $2, $3, $4, $5)",
        actor,
        subject_user_id,
        action,
        outcome,
        detail
    )
    .execute(conn)
    .await
    .map(drop)
}

/// Marks a request failed with `reason`, unless it already ended.
pub async fn fail_request(
    pool: &sqlx::PgPool,
    request_id: i64,
    reason: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "update privacy_requests set state = 'failed', reason = $2, finished_at = now()
         where id = $1 and state in ('pending', 'running')",
        request_id,
        reason
    )
    .execute(pool)
    .await
    .map(drop)
}

/// Appends an entry for an ops action (issue 13): `actor` is the operator's user id, the
/// `action` starts with `ops.` (`ops.job.retry`, `ops.queue.pause`...), `detail` names what
/// was acted on (job ids, a queue, a schedule) and counts.
pub async fn record_ops(
    conn: &mut sqlx::PgConnection,
    actor: &str,
    action: &str,
    outcome: &str,
    detail: serde_json::Value,
) -> Result<(), sqlx::Error> {
    debug_assert!(action.starts_with("ops."));
    sqlx::query!(
        "insert into audit_log (actor, action, outcome, detail) values ($1, $2, $3, $4)",
        actor,
        action,
        outcome,
        detail
    )
    .execute(conn)
    .await
    .map(drop)
}

/// One entry of the ops audit log.
#[derive(Debug, Clone, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(as = OpsAuditEntry))]
#[serde(deny_unknown_fields)]
pub struct OpsEntry {
    pub id: i64,
    /// The operator's user id.
    pub actor: String,
    pub action: String,
    pub outcome: String,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub detail: serde_json::Value,
    pub at: chrono::DateTime<chrono::Utc>,
}

/// Up to `limit` ops entries, newest first, older than entry `before` when given (keyset).
pub async fn ops_entries(
    pool: &sqlx::PgPool,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<OpsEntry>, sqlx::Error> {
    sqlx::query_as!(
        OpsEntry,
        "select id, actor, action, outcome, detail, at from audit_log
          where action like 'ops.%' and ($1::bigint is null or id < $1)
          order by id desc limit $2",
        before,
        limit
    )
    .fetch_all(pool)
    .await
}
