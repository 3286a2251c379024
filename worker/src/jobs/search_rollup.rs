//! The search analytics rollup: the numbers of one local day, computed by Postgres from
//! `search_events` and upserted into `search_rollups`.
//!
//! The numbers, defined once (issue 11). Day D runs from local midnight in `ANALYTICS_TZ`
//! to the next local midnight, so it lasts 23 or 25 hours on DST days. Bots (`ua_class =
//! 'bot'`) are counted in `bot_searches` only and left out of everything else.
//! - searches: search events in D (one per `search_id`: `search_ids` makes a retried search
//!   one event);
//! - unique_searchers: distinct users plus distinct guest sessions with a search in D;
//! - zero_result_rate: searches with `result_count = 0` / searches;
//! - click_through_rate: searches with results and at least one click / searches with at
//!   least one result (per search, not per impression, as Algolia defines it);
//! - conversion_rate: searches with at least one conversion / searches;
//! - top_queries, top_zero_result_queries: the 20 most frequent normalized queries, ties by
//!   query text (byte order, whatever the database's collation), with counts.
//!
//! An interaction counts for the day of its search, whenever it arrives: the event's
//! `clicked` / `converted` flags are set in the interaction's transaction, so a conversion
//! the next morning is in D's numbers when D is computed again. The rates are generated
//! columns of `search_rollups`, `null` when their denominator is 0.
//!
//! The job: [`SearchRollupJob`], one per day (the nightly 02:00 New York run for the day
//! that just ended, or an admin's recomputation of any day).
//!
//! Two ways to the same numbers ([`Source`]): from the day's aggregates, which the database
//! keeps as events are written (migration 0011: `search_day_queries`, `search_day_searchers`),
//! a read of some thousands of narrow rows; or from the events themselves, a scan of the
//! day's partition, for a day the aggregates do not cover (written before its zone was
//! adopted) and as the reference the aggregates are tested and benchmarked against.
//!
//! Idempotent: one transaction computes the day (one select, which Postgres may run in
//! parallel: a statement with a data-modifying CTE may not) and upserts its row, so a rerun
//! over the same events writes the same row (and leaves it untouched, `computed_at`
//! included, when nothing changed), and a failed run leaves the previous row. Retrying is
//! always safe; a failure is a database error, retried with the handler's default back-off
//! and attempt cap.
use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use serde::Serialize;
use shared::jobs::SearchRollup;
use sqlx::PgPool;

use super::{Handler, JobRun};
use crate::{Deps, error::WorkerError, records::Outcome};

/// Rolls up its day in `ANALYTICS_TZ`, after making sure the months ahead are partitioned.
pub struct SearchRollupJob;

impl Handler for SearchRollupJob {
    type Args = SearchRollup;

    /// One day at a time: each reads a day of events, and a backfill of a year should not
    /// take the database's every core.
    fn concurrency(&self, _config: &shared::config::Config) -> usize {
        1
    }

    async fn work(
        &self,
        deps: &Deps,
        _run: JobRun,
        args: SearchRollup,
    ) -> Result<Outcome, WorkerError> {
        tracing::Span::current().record("schedule", "search_rollup");
        let now = deps.clock.now();
        maintain_partitions(&deps.pool, now).await?;
        shared::search::adopt_zone(&deps.pool, deps.config.analytics_tz()).await?;
        rollup_day(&deps.pool, args.day, deps.config.analytics_tz(), now).await?;
        Ok(Outcome::Done)
    }
}

/// What a rollup computed for its day.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RollupCounts {
    pub day: NaiveDate,
    pub searches: i32,
    pub bot_searches: i32,
    pub unique_searchers: i32,
    pub zero_result_searches: i32,
    pub searches_with_results: i32,
    pub clicked_searches: i32,
    pub converted_searches: i32,
    /// `[{"query", "count"}]`
    pub top_queries: serde_json::Value,
    pub top_zero_result_queries: serde_json::Value,
}

/// The instants local day `day` in `tz` runs between: its first instant and the next day's.
pub fn day_bounds(day: NaiveDate, tz: Tz) -> (DateTime<Utc>, DateTime<Utc>) {
    (start_of(day, tz), start_of(day + Duration::days(1), tz))
}

/// The first instant of a local day: midnight, or when midnight falls in a DST gap (some
/// zones change at 00:00), the first wall-clock time after it that exists.
fn start_of(day: NaiveDate, tz: Tz) -> DateTime<Utc> {
    let midnight = day.and_time(chrono::NaiveTime::MIN);
    (0..=24 * 4)
        .find_map(|quarter| {
            tz.from_local_datetime(&(midnight + Duration::minutes(15 * quarter)))
                .earliest()
        })
        .map(|t| t.with_timezone(&Utc))
        // no zone skips a whole day at midnight; if one did, UTC midnight is a bound
        .unwrap_or_else(|| midnight.and_utc())
}

/// The statement computing one day from its `by_query` and `searchers` (the `$sources`,
/// one of the two below), written once: `$1` is the date. A plain select (no data-modifying
/// CTE), so that Postgres may scan in parallel. Invoked as `query_as(RollupCounts,)` with no
/// prefix to run it, and as `query_scalar()` with an `explain` prefix for its plan
/// (ops/bench/search prints it).
macro_rules! rollup_statement {
    ($macro:ident($($head:tt)*), $prefix:literal, $sources:literal, $($arg:expr),* $(,)?) => {
        sqlx::$macro!($($head)* $prefix + $sources + r#",
           totals as (
               select coalesce(sum(searches) filter (where not bot), 0)::int as searches,
                      coalesce(sum(searches) filter (where bot), 0)::int as bot_searches,
                      coalesce(sum(zero) filter (where not bot), 0)::int as zero,
                      coalesce(sum(with_results) filter (where not bot), 0)::int as with_results,
                      coalesce(sum(clicked) filter (where not bot), 0)::int as clicked,
                      coalesce(sum(converted) filter (where not bot), 0)::int as converted
               from by_query
           ),
           top as (
               select coalesce(jsonb_agg(jsonb_build_object('query', normalized_query, 'count', searches)
                                         order by searches desc, normalized_query collate "C"), '[]') as list
               from (select normalized_query, searches from by_query where not bot
                     order by searches desc, normalized_query collate "C" limit 20) t
           ),
           top_zero as (
               select coalesce(jsonb_agg(jsonb_build_object('query', normalized_query, 'count', zero)
                                         order by zero desc, normalized_query collate "C"), '[]') as list
               from (select normalized_query, zero from by_query where not bot and zero > 0
                     order by zero desc, normalized_query collate "C" limit 20) t
           )
           select $1::date as "day!", t.searches as "searches!",
                  t.bot_searches as "bot_searches!", s.unique_searchers::int as "unique_searchers!",
                  t.zero as "zero_result_searches!", t.with_results as "searches_with_results!",
                  t.clicked as "clicked_searches!", t.converted as "converted_searches!",
                  top.list as "top_queries!", top_zero.list as "top_zero_result_queries!"
           from totals t, searchers s, top, top_zero"#, $($arg),*)
    };
}

/// [`rollup_statement`] over the day's events: `$2`..`$3` the day's instants.
macro_rules! from_events {
    ($macro:ident($($head:tt)*), $prefix:literal, $($arg:expr),* $(,)?) => {
        rollup_statement!($macro($($head)*), $prefix, r#"with by_query as (
               select normalized_query, ua_class = 'bot' as bot,
                      count(*) as searches,
                      count(*) filter (where result_count = 0) as zero,
                      count(*) filter (where result_count > 0) as with_results,
                      count(*) filter (where clicked and result_count > 0) as clicked,
                      count(*) filter (where converted) as converted
               from search_events
               where searched_at >= $2 and searched_at < $3
               group by 1, 2
           ),
           -- users and guest sessions apart: two narrow hash tables are cheaper than one
           -- keyed by the (user, session) pair
           searchers as (
               select (select count(*) from (select user_id from search_events
                                             where searched_at >= $2 and searched_at < $3
                                               and ua_class <> 'bot' and user_id is not null
                                             group by 1) u)
                    + (select count(*) from (select guest_session from search_events
                                             where searched_at >= $2 and searched_at < $3
                                               and ua_class <> 'bot' and guest_session is not null
                                             group by 1) g) as unique_searchers
           )"#, $($arg),*)
    };
}

/// [`rollup_statement`] over the day's aggregates (migration 0011): `$2` the zone.
macro_rules! from_aggregates {
    ($macro:ident($($head:tt)*), $prefix:literal, $($arg:expr),* $(,)?) => {
        rollup_statement!($macro($($head)*), $prefix, r#"with by_query as (
               -- a query's day is striped over up to 16 rows (migration 0013)
               select normalized_query, bot, sum(searches) as searches, sum(zero) as zero,
                      sum(with_results) as with_results, sum(clicked) as clicked,
                      sum(converted) as converted
               from search_day_queries
               where timezone = $2 and day = $1
               group by normalized_query, bot
           ),
           searchers as (
               select count(*) as unique_searchers from search_day_searchers
               where timezone = $2 and day = $1
           )"#, $($arg),*)
    };
}

/// Where a day's numbers are read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The day's aggregates, kept by the database as events are written.
    Aggregates,
    /// A scan of the day's events.
    Events,
}

/// The aggregates when they cover `day` in `tz`, else the events.
pub async fn source_for(
    conn: &mut sqlx::PgConnection,
    day: NaiveDate,
    tz: Tz,
) -> Result<Source, sqlx::Error> {
    // covers_from may be -infinity (every day), which no NaiveDate holds: compared in SQL
    let covered = sqlx::query_scalar!(
        r#"select covers_from <= $2 as "covered!" from search_analytics_zone where timezone = $1"#,
        tz.name(),
        day
    )
    .fetch_optional(&mut *conn)
    .await?;
    Ok(if covered == Some(true) {
        Source::Aggregates
    } else {
        Source::Events
    })
}

/// Computes `day` in `tz` from `source`, writing nothing.
pub async fn compute(
    conn: &mut sqlx::PgConnection,
    day: NaiveDate,
    tz: Tz,
    source: Source,
) -> Result<RollupCounts, sqlx::Error> {
    match source {
        Source::Aggregates => {
            from_aggregates!(query_as(RollupCounts,), "", day, tz.name())
                .fetch_one(&mut *conn)
                .await
        }
        Source::Events => {
            let (from, to) = day_bounds(day, tz);
            set_rollup_session(&mut *conn).await?;
            from_events!(query_as(RollupCounts,), "", day, from, to)
                .fetch_one(&mut *conn)
                .await
        }
    }
}

/// Computes local day `day` in `tz` and upserts its row, in one transaction.
#[tracing::instrument(skip(pool, now), fields(%day, %tz))]
pub async fn rollup_day(
    pool: &PgPool,
    day: NaiveDate,
    tz: Tz,
    now: DateTime<Utc>,
) -> Result<RollupCounts, WorkerError> {
    let mut tx = pool.begin().await?;
    let source = source_for(&mut tx, day, tz).await?;
    let counts = compute(&mut tx, day, tz, source).await?;
    sqlx::query!(
        "insert into search_rollups as r (day, timezone, searches, bot_searches, unique_searchers,
             zero_result_searches, searches_with_results, clicked_searches, converted_searches,
             top_queries, top_zero_result_queries, computed_at)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
         on conflict (day) do update set
             timezone = excluded.timezone, searches = excluded.searches,
             bot_searches = excluded.bot_searches, unique_searchers = excluded.unique_searchers,
             zero_result_searches = excluded.zero_result_searches,
             searches_with_results = excluded.searches_with_results,
             clicked_searches = excluded.clicked_searches,
             converted_searches = excluded.converted_searches,
             top_queries = excluded.top_queries,
             top_zero_result_queries = excluded.top_zero_result_queries,
             computed_at = excluded.computed_at
         -- the same numbers leave the row as it was: a rerun changes nothing
         where (r.timezone, r.searches, r.bot_searches, r.unique_searchers,
                r.zero_result_searches, r.searches_with_results, r.clicked_searches,
                r.converted_searches, r.top_queries, r.top_zero_result_queries)
               is distinct from
               (excluded.timezone, excluded.searches, excluded.bot_searches,
                excluded.unique_searchers, excluded.zero_result_searches,
                excluded.searches_with_results, excluded.clicked_searches,
                excluded.converted_searches, excluded.top_queries,
                excluded.top_zero_result_queries)",
        day,
        tz.name(),
        counts.searches,
        counts.bot_searches,
        counts.unique_searchers,
        counts.zero_result_searches,
        counts.searches_with_results,
        counts.clicked_searches,
        counts.converted_searches,
        counts.top_queries,
        counts.top_zero_result_queries,
        now
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    tracing::info!(
        searches = counts.searches,
        bot_searches = counts.bot_searches,
        ?source,
        "search rollup computed"
    );
    metrics::counter!("search_rollups_total").increment(1);
    Ok(counts)
}

/// The settings the rollup statement runs with, for its transaction only.
async fn set_rollup_session(tx: &mut sqlx::PgConnection) -> Result<(), sqlx::Error> {
    // the per-query and per-searcher hash tables of a busy day fit in memory; JIT compiling
    // this statement cost more than it saved when measured on a million events
    sqlx::query!("set local work_mem = '64MB'")
        .execute(&mut *tx)
        .await?;
    sqlx::query!("set local jit = off")
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// The plan of the statement computing `day` from `source`, as Postgres runs it (`explain
/// analyze`).
pub async fn explain_rollup(
    pool: &PgPool,
    day: NaiveDate,
    tz: Tz,
    source: Source,
) -> Result<Vec<String>, WorkerError> {
    let mut tx = pool.begin().await?;
    let plan = match source {
        Source::Aggregates => {
            from_aggregates!(
                query_scalar(),
                "explain (analyze, buffers, costs off) ",
                day,
                tz.name()
            )
            .fetch_all(&mut *tx)
            .await?
        }
        Source::Events => {
            let (from, to) = day_bounds(day, tz);
            set_rollup_session(&mut tx).await?;
            from_events!(
                query_scalar(),
                "explain (analyze, buffers, costs off) ",
                day,
                from,
                to
            )
            .fetch_all(&mut *tx)
            .await?
        }
    };
    tx.commit().await?;
    Ok(plan.into_iter().flatten().collect())
}

/// Keeps the months ahead partitioned; the nightly run calls it next to its rollup, so the
/// API never meets a month without a partition while the rollup keeps running.
pub async fn maintain_partitions(pool: &PgPool, now: DateTime<Utc>) -> Result<(), WorkerError> {
    shared::search::ensure_partitions(pool, now).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().expect("instant")
    }

    #[test]
    fn a_new_york_day_lasts_23_or_25_hours_across_dst() {
        let ny = chrono_tz::America::New_York;
        let day = |s: &str| s.parse::<NaiveDate>().expect("date");
        assert_eq!(
            day_bounds(day("2026-03-08"), ny),
            (utc("2026-03-08T05:00:00Z"), utc("2026-03-09T04:00:00Z"))
        );
        assert_eq!(
            day_bounds(day("2026-11-01"), ny),
            (utc("2026-11-01T04:00:00Z"), utc("2026-11-02T05:00:00Z"))
        );
        assert_eq!(
            day_bounds(day("2026-07-04"), ny),
            (utc("2026-07-04T04:00:00Z"), utc("2026-07-05T04:00:00Z"))
        );
    }

    #[test]
    fn a_day_whose_midnight_does_not_exist_starts_when_the_clock_resumes() {
        // Santiago sprang forward at 24:00 on 2022-09-10: 2022-09-11 began at 01:00 -03
        let santiago = chrono_tz::America::Santiago;
        let (from, _) = day_bounds("2022-09-11".parse().expect("date"), santiago);
        assert_eq!(from, utc("2022-09-11T04:00:00Z"));
    }
}
