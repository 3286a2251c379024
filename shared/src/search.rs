//! Search analytics storage that more than one process relies on: the monthly partitions of
//! `search_events` and `search_interactions` (migration 0006). The API writes into them, the
//! rollup reads them and retention drops them; whoever runs first makes sure the months
//! ahead exist. The SQL function `search_ensure_partitions` does the work, so the migration,
//! the worker and the tests create partitions the same way.
use chrono::{DateTime, Datelike, Months, NaiveDate, Utc};
use sqlx::PgExecutor;

/// How many months past the current one always have their partitions.
pub const MONTHS_AHEAD: u32 = 12;

/// Creates the partitions of the previous month through [`MONTHS_AHEAD`] months after
/// `now`'s (UTC months) that are missing; returns how many tables it created.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn ensure_partitions<'c>(
    executor: impl PgExecutor<'c>,
    now: DateTime<Utc>,
) -> Result<i32, sqlx::Error> {
    let month = first_of_month(now.date_naive());
    let first = month - Months::new(1);
    let last = month + Months::new(MONTHS_AHEAD);
    ensure_partitions_between(executor, first, last).await
}

/// Creates the missing partitions of every month from `first`'s to `last`'s (included).
pub async fn ensure_partitions_between<'c>(
    executor: impl PgExecutor<'c>,
    first: NaiveDate,
    last: NaiveDate,
) -> Result<i32, sqlx::Error> {
    let created = sqlx::query_scalar!(
        r#"select search_ensure_partitions($1, $2) as "created!""#,
        first,
        last
    )
    .fetch_one(executor)
    .await?;
    if created > 0 {
        tracing::info!(created, %first, %last, "search partitions created");
    }
    Ok(created)
}

/// Makes `tz` the zone of the per-day search aggregates (migration 0011), which the rollup
/// reads for the days they cover; the zone they already use changes nothing. Returns the
/// first day they cover (`None`: every day).
#[tracing::instrument(level = "debug", skip(executor))]
pub async fn adopt_zone<'c>(
    executor: impl PgExecutor<'c>,
    tz: chrono_tz::Tz,
) -> Result<Option<NaiveDate>, sqlx::Error> {
    // -infinity (every day) has no NaiveDate: it comes back as null
    sqlx::query_scalar!(
        r#"select nullif(search_analytics_adopt_zone($1), '-infinity') as covers_from"#,
        tz.name()
    )
    .fetch_one(executor)
    .await
}

/// How long a fold may wait for the batch writes in flight. [`Fold::Background`] gives up
/// after this rather than hold the writers up: while a fold waits for the writers' lock, new
/// batches queue behind it.
pub const BACKGROUND_FOLD_WAIT: &str = "50ms";

/// Who folds, and so how long the fold may hold the writers up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fold {
    /// The api's periodic fold: waits at most [`BACKGROUND_FOLD_WAIT`] for the batches in
    /// flight, else folds nothing this time.
    Background,
    /// The rollup's: waits as long as it takes, so that every event committed before it is in
    /// the aggregates it reads.
    Complete,
}

/// Folds the search events written since the last fold into the day aggregates (migration
/// 0019: `search_fold`, which says why they are folded behind the writes and what makes it
/// exact); returns how many event ids it covered, 0 when there was nothing new or a
/// background fold found the writers busy. Runs its own transactions: `conn` must not be in
/// one.
#[tracing::instrument(level = "debug", skip(conn))]
pub async fn fold(conn: &mut sqlx::PgConnection, how: Fold) -> Result<i64, sqlx::Error> {
    let wait = match how {
        Fold::Background => BACKGROUND_FOLD_WAIT,
        Fold::Complete => "0",
    };
    let started = std::time::Instant::now();
    let folded = sqlx::query_scalar!(r#"call search_fold(null, $1)"#, wait)
        .fetch_one(&mut *conn)
        .await;
    let folded = match folded {
        Ok(n) => n.unwrap_or(0),
        // 55P03 lock_not_available: batches in flight past the wait; the next fold has them
        Err(sqlx::Error::Database(e))
            if how == Fold::Background && e.code().as_deref() == Some("55P03") =>
        {
            metrics::counter!("search_fold_busy_total").increment(1);
            return Ok(0);
        }
        Err(e) => return Err(e),
    };
    metrics::counter!("search_folded_events_total").increment(folded.max(0) as u64);
    metrics::histogram!("search_fold_seconds").record(started.elapsed().as_secs_f64());
    Ok(folded)
}

fn first_of_month(day: NaiveDate) -> NaiveDate {
    day.with_day(1).unwrap_or(day)
}
