//! Reading, deleting and claiming a searcher's recent searches. Writing them happens with
//! the search event that causes them ([`super::ingest`]).
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use super::{
    ingest::{HISTORY_KEPT, lock_searchers, trim_history},
    searcher::Searcher,
};

/// One recent search, as last typed.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HistoryEntry {
    pub id: i64,
    pub query: String,
    pub searched_at: DateTime<Utc>,
}

/// The searcher's recent searches, newest first.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn list(pool: &PgPool, searcher: &Searcher) -> Result<Vec<HistoryEntry>, sqlx::Error> {
    // one query per kind of searcher, so each reads its own partial index
    match searcher {
        Searcher::User(id) => {
            sqlx::query_as!(
                HistoryEntry,
                "select id, query, searched_at from search_history where user_id = $1
                 order by searched_at desc, id desc limit $2",
                id,
                HISTORY_KEPT
            )
            .fetch_all(pool)
            .await
        }
        Searcher::Guest(session) => {
            sqlx::query_as!(
                HistoryEntry,
                "select id, query, searched_at from search_history where guest_session = $1
                 order by searched_at desc, id desc limit $2",
                session,
                HISTORY_KEPT
            )
            .fetch_all(pool)
            .await
        }
    }
}

/// Deletes one of the searcher's entries; `false` when the searcher has no such entry
/// (whether it does not exist or is someone else's is not told apart).
#[tracing::instrument(level = "debug", skip_all)]
pub async fn delete(pool: &PgPool, searcher: &Searcher, id: i64) -> Result<bool, sqlx::Error> {
    let deleted = match searcher {
        Searcher::User(user) => {
            sqlx::query!(
                "delete from search_history where id = $1 and user_id = $2",
                id,
                user
            )
            .execute(pool)
            .await?
        }
        Searcher::Guest(session) => {
            sqlx::query!(
                "delete from search_history where id = $1 and guest_session = $2",
                id,
                session
            )
            .execute(pool)
            .await?
        }
    };
    Ok(deleted.rows_affected() > 0)
}

/// Moves guest session `guest`'s history to user `user_id`: deduplicated on the normalized
/// query (the more recent search wins), ten at most, and the guest's rows are gone. Returns
/// how many guest entries were moved; none for a closed account, whose guest rows stay for
/// the guest retention to expire.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn claim(pool: &PgPool, user_id: i64, guest: &str) -> Result<u64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // the account first, as the batch write of search events takes it (before the searchers'
    // locks), and the same lock: an erasure that holds the row FOR UPDATE runs first, and
    // then there is nobody to claim for (no foreign key checks this: migration 0017)
    let open = sqlx::query_scalar!(
        r#"select true as "open!" from users where id = $1 and erased_at is null for key share"#,
        user_id
    )
    .fetch_optional(&mut *tx)
    .await?;
    if open.is_none() {
        return Ok(0);
    }
    let user = Searcher::User(user_id);
    let guest_searcher = Searcher::Guest(guest.to_string());
    lock_searchers(&mut tx, &[&user, &guest_searcher]).await?;
    // each normalized query appears once per guest, so no row is upserted twice
    let merged = sqlx::query!(
        "insert into search_history (user_id, query, normalized_query, searched_at)
         select $1, query, normalized_query, searched_at from search_history
         where guest_session = $2
         on conflict (user_id, normalized_query) where user_id is not null
         do update set query = excluded.query, searched_at = excluded.searched_at
         where excluded.searched_at > search_history.searched_at",
        user_id,
        guest
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let moved = sqlx::query!("delete from search_history where guest_session = $1", guest)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    trim_history(&mut tx, &[user_id], &[]).await?;
    tx.commit().await?;
    tracing::debug!(merged, moved, "guest history claimed");
    Ok(moved)
}
