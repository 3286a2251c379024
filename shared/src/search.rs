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

fn first_of_month(day: NaiveDate) -> NaiveDate {
    day.with_day(1).unwrap_or(day)
}
