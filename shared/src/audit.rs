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
