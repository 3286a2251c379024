//! The retention sweep (daily from the scheduler, or now from the admin API, optionally as a
//! dry run): deletes what `shared::retention::policy` says is past its keep time, but the
//! rows of users under legal hold, and records the counts per kind in the audit log (actor
//! `retention`) and in the run's `retention_runs` row.
//!
//! Search events and their interactions older than `RETENTION_SEARCH_DAYS`: a month
//! partition that is entirely expired (its upper bound at or before the cutoff, never the
//! current or a future month) and holds no held user's row is dropped whole, interactions
//! partition first (it references the events); what is left (the month the cutoff falls in,
//! months with held users' rows, a drop that could not get its lock in time) is deleted in
//! batches of [`BATCH`] rows, walking the events' primary key. Each batch is its own short
//! transaction, and a drop waits at most [`DROP_LOCK_TIMEOUT`] for its lock, so the sweep
//! never queues the API's writes behind it for long.
//!
//! A dry run counts the same rows with the same cutoffs and deletes nothing, so its counts
//! are what a real run at the same instant deletes (partition drops count their rows).
//!
//! Idempotent: a rerun finds nothing more to delete. Two sweeps never run at once: each
//! holds a session advisory lock for its duration; one that finds the lock taken is deferred
//! for a minute (so an admin's run still happens), not failed. A failed statement retries
//! the whole sweep with backoff; the batches and drops already committed stay done.
use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use shared::{jobs::RetentionSweep, records, retention};
use sqlx::{Acquire, PgConnection};

use super::{Handler, JobRun};
use crate::{Deps, error::WorkerError, records::Outcome};

/// Rows per batch statement: short locks, never one huge DELETE.
pub const BATCH: i64 = 5000;
/// How long a partition drop waits for its lock before the month is left to the batches.
const DROP_LOCK_TIMEOUT: &str = "2s";
/// The advisory lock key of the sweep (any constant unique to it: "retn").
const LOCK_KEY: i64 = 0x7265_746e;
/// The search_ids are walked in windows of this many hours (rows arrive in time order, so a
/// window is a few block ranges of its BRIN index).
const ID_WINDOW_HOURS: i64 = 6;

/// Counts per data kind (rows deleted, or for a dry run, that would be), and partitions
/// dropped.
pub type Counts = BTreeMap<&'static str, i64>;

pub struct RetentionSweepJob;

impl Handler for RetentionSweepJob {
    type Args = RetentionSweep;

    fn concurrency(&self, _config: &shared::config::Config) -> usize {
        1
    }

    fn timeout(&self) -> std::time::Duration {
        // a backlog of months is dropped in seconds, but a first run on a large table that
        // was never partitioned by month would batch for long
        std::time::Duration::from_secs(3600)
    }

    async fn work(
        &self,
        deps: &Deps,
        run: JobRun,
        args: RetentionSweep,
    ) -> Result<Outcome, WorkerError> {
        tracing::Span::current().record("schedule", "retention_sweep");
        let now = deps.clock.now();
        // the API records an admin's run with its job; a scheduled one is recorded here
        sqlx::query!(
            "insert into retention_runs (job_id, requested_by, dry_run, state, started_at)
             values ($1, 'schedule', $2, 'running', $3)
             on conflict (job_id) do update set state = 'running', started_at = $3",
            run.id,
            args.dry_run,
            now
        )
        .execute(&deps.pool)
        .await?;
        let Some(counts) = sweep(deps, now, args.dry_run).await? else {
            sqlx::query!(
                "update retention_runs set state = 'pending' where job_id = $1",
                run.id
            )
            .execute(&deps.pool)
            .await?;
            return Ok(Outcome::Defer {
                until: now + chrono::Duration::seconds(60),
                reason: "another retention sweep is running".into(),
            });
        };
        let detail = serde_json::json!({
            "slot": args.slot,
            "dry_run": args.dry_run,
            "counts": counts,
        });
        let mut tx = deps.pool.begin().await?;
        sqlx::query!(
            "insert into audit_log (actor, action, outcome, detail) values ('retention', $1, $2, $3)",
            if args.dry_run { "retention_dry_run" } else { "retention_sweep" },
            if args.dry_run { "counted" } else { "done" },
            detail
        )
        .execute(&mut *tx)
        .await?;
        sqlx::query!(
            "update retention_runs set state = 'done', counts = $2, finished_at = $3 where job_id = $1",
            run.id,
            serde_json::json!(counts),
            deps.clock.now()
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        tracing::info!(dry_run = args.dry_run, ?counts, "retention sweep");
        Ok(Outcome::Done)
    }
}

/// Sweeps (or, with `dry_run`, counts) what had expired at `now`; `None` when another sweep
/// holds the lock.
#[tracing::instrument(skip(deps))]
pub async fn sweep(
    deps: &Deps,
    now: DateTime<Utc>,
    dry_run: bool,
) -> Result<Option<Counts>, WorkerError> {
    // a connection of its own, closed at the end: the session lock can never go back to the
    // pool still held, whatever returns early
    let mut lock = deps.pool.acquire().await?.detach();
    let locked: bool =
        sqlx::query_scalar!(r#"select pg_try_advisory_lock($1) as "locked!""#, LOCK_KEY)
            .fetch_one(&mut lock)
            .await?;
    if !locked {
        return Ok(None);
    }
    let result = sweep_locked(deps, now, dry_run).await;
    // closing the connection releases the lock too; this only says so sooner
    let _ = sqlx::query_scalar!("select pg_advisory_unlock($1)", LOCK_KEY)
        .fetch_one(&mut lock)
        .await;
    result.map(Some)
}

async fn sweep_locked(
    deps: &Deps,
    now: DateTime<Utc>,
    dry_run: bool,
) -> Result<Counts, WorkerError> {
    let search_cutoff = now - deps.config.search_retention();
    let guest_cutoff = now - chrono::Duration::days(retention::GUEST_HISTORY_KEEP_DAYS);
    let jobs_cutoff = now - chrono::Duration::days(retention::FINISHED_JOB_KEEP_DAYS);
    let held: Vec<i64> = sqlx::query_scalar!("select id from users where legal_hold")
        .fetch_all(&deps.pool)
        .await?;
    let mut counts = Counts::new();
    let mut conn = deps.pool.acquire().await?;
    // each phase's wall time, so a slow sweep says where its time went
    let mut phase = std::time::Instant::now();
    let mut lap = |name: &'static str| {
        tracing::info!(
            phase = name,
            ms = phase.elapsed().as_millis() as u64,
            "retention sweep phase"
        );
        phase = std::time::Instant::now();
    };
    // counted before the events go: deleting events empties some of these rows (the trigger
    // of migration 0011), and the count must be the same in a dry run
    counts.insert(
        "search_day_aggregates",
        day_aggregates(&mut conn, search_cutoff, true).await?,
    );
    lap("count day aggregates");
    search(&mut conn, now, search_cutoff, &held, dry_run, &mut counts).await?;
    lap("search events, interactions and ids");
    if !dry_run {
        day_aggregates(&mut conn, search_cutoff, false).await?;
        lap("delete day aggregates");
    }
    counts.insert(
        "guest_search_history",
        guest_history(&mut conn, guest_cutoff, dry_run).await?,
    );
    counts.insert(
        "export_documents",
        exports(&mut conn, now, &held, dry_run).await?,
    );
    lap("guest history and exports");
    counts.insert(
        "finished_job_records",
        if dry_run {
            records::count_purgeable(&deps.pool, jobs_cutoff).await?
        } else {
            let mut deleted = 0;
            loop {
                let n = records::purge_finished(&deps.pool, jobs_cutoff, BATCH).await?;
                deleted += n as i64;
                if n < BATCH as u64 {
                    break deleted;
                }
            }
        },
    );
    Ok(counts)
}

/// One month partition of a search table.
#[derive(Debug)]
struct Partition {
    name: String,
    lower: DateTime<Utc>,
    upper: DateTime<Utc>,
}

async fn partitions(conn: &mut PgConnection, parent: &str) -> Result<Vec<Partition>, sqlx::Error> {
    // the bounds as Postgres prints them, read back as instants
    let rows = sqlx::query!(
        r#"select c.relname::text as "name!",
                  (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'FROM \(''([^'']+)''\)'))[1]::timestamptz as "lower!",
                  (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \(''([^'']+)''\)'))[1]::timestamptz as "upper!"
           from pg_inherits i join pg_class c on c.oid = i.inhrelid
           where i.inhparent = $1::text::regclass
           order by 2"#,
        parent
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Partition {
            name: r.name,
            lower: r.lower,
            upper: r.upper,
        })
        .collect())
}

fn month_start(now: DateTime<Utc>) -> DateTime<Utc> {
    let day = NaiveDate::from_ymd_opt(now.year(), now.month(), 1).unwrap_or(now.date_naive());
    Utc.from_utc_datetime(&day.and_hms_opt(0, 0, 0).unwrap_or_default())
}

/// Search events, their interactions and their ids, older than `cutoff`.
async fn search(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    cutoff: DateTime<Utc>,
    held: &[i64],
    dry_run: bool,
    counts: &mut Counts,
) -> Result<(), WorkerError> {
    let begun = std::time::Instant::now();
    let events = partitions(conn, "search_events").await?;
    let interactions = partitions(conn, "search_interactions").await?;
    let oldest = events.first().map(|p| p.lower);
    let current = month_start(now);
    let mut dropped = 0;
    let (mut gone_events, mut gone_interactions) = (0, 0);
    if !dry_run {
        for p in events
            .iter()
            .filter(|p| p.upper <= cutoff && p.upper <= current)
        {
            let twin = interactions
                .iter()
                .find(|i| i.lower == p.lower && i.upper == p.upper);
            match drop_month(conn, p, twin, held).await {
                Ok(Some((e, i))) => {
                    dropped += 1;
                    gone_events += e;
                    gone_interactions += i;
                }
                // a held user's rows: the batches below keep them and delete the rest
                Ok(None) => {}
                // 55P03 lock_not_available: the API (or a rollup) holds it: batches instead
                Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("55P03") => {
                    tracing::warn!(partition = %p.name, "partition busy: deleting it in batches");
                }
                Err(e) => return Err(e.into()),
            }
        }
        let mut after = 0i64;
        loop {
            let b = sqlx::query!(
                r#"with doomed as (
                    select id, searched_at from search_events
                    where id > $4 and searched_at < $1 and (user_id is null or user_id <> all($2))
                    order by id limit $3),
                 gone_i as (
                    delete from search_interactions i using doomed d
                    where i.event_id = d.id and i.searched_at = d.searched_at
                      and i.searched_at < $1 returning 1),
                 gone_e as (
                    delete from search_events e using doomed d
                    where e.id = d.id and e.searched_at = d.searched_at
                      and e.searched_at < $1 returning e.id)
                 select (select count(*) from gone_e) as "events!",
                        (select count(*) from gone_i) as "interactions!",
                        (select max(id) from doomed) as last_id"#,
                cutoff,
                held,
                BATCH,
                after
            )
            .fetch_one(&mut *conn)
            .await?;
            gone_events += b.events;
            gone_interactions += b.interactions;
            match b.last_id {
                Some(last) if b.events == BATCH => after = last,
                _ => break,
            }
        }
    } else {
        let c = sqlx::query!(
            r#"select (select count(*) from search_events
                       where searched_at < $1 and (user_id is null or user_id <> all($2))) as "events!",
                      (select count(*) from search_interactions i join search_events e
                         on e.id = i.event_id and e.searched_at = i.searched_at
                       where e.searched_at < $1 and (e.user_id is null or e.user_id <> all($2))) as "interactions!""#,
            cutoff,
            held
        )
        .fetch_one(&mut *conn)
        .await?;
        gone_events = c.events;
        gone_interactions = c.interactions;
        for p in events
            .iter()
            .filter(|p| p.upper <= cutoff && p.upper <= current)
        {
            let has_held: bool = sqlx::query_scalar(&format!(
                r#"select exists (select 1 from "{}" where user_id = any($1))"#,
                p.name
            ))
            .bind(held)
            .fetch_one(&mut *conn)
            .await?;
            if !has_held {
                dropped += 1;
            }
        }
    }
    counts.insert("search_events", gone_events);
    counts.insert("search_interactions", gone_interactions);
    counts.insert("search_partitions_dropped", dropped);
    tracing::info!(
        dropped,
        events = gone_events,
        ms = begun.elapsed().as_millis() as u64,
        "retention sweep: search months dropped and batches deleted"
    );
    counts.insert(
        "search_ids",
        search_ids(conn, oldest, cutoff, held, dry_run).await?,
    );
    Ok(())
}

/// Drops one entirely expired month (its interactions first): its (events, interactions)
/// counts, or `None` when a held user has rows in it.
async fn drop_month(
    conn: &mut PgConnection,
    events: &Partition,
    interactions: Option<&Partition>,
    held: &[i64],
) -> Result<Option<(i64, i64)>, sqlx::Error> {
    let mut tx = conn.begin().await?;
    sqlx::query(&format!("set local lock_timeout = '{DROP_LOCK_TIMEOUT}'"))
        .execute(&mut *tx)
        .await?;
    // the lock first: nothing can be written into the month between the check and the drop
    sqlx::query(&format!(
        r#"lock table "{}" in access exclusive mode"#,
        events.name
    ))
    .execute(&mut *tx)
    .await?;
    let has_held: bool = sqlx::query_scalar(&format!(
        r#"select exists (select 1 from "{}" where user_id = any($1))"#,
        events.name
    ))
    .bind(held)
    .fetch_one(&mut *tx)
    .await?;
    if has_held {
        return Ok(None);
    }
    let n_events: i64 = sqlx::query_scalar(&format!(r#"select count(*) from "{}""#, events.name))
        .fetch_one(&mut *tx)
        .await?;
    let mut n_interactions = 0;
    if let Some(i) = interactions {
        n_interactions = sqlx::query_scalar(&format!(r#"select count(*) from "{}""#, i.name))
            .fetch_one(&mut *tx)
            .await?;
        sqlx::query(&format!(r#"drop table "{}""#, i.name))
            .execute(&mut *tx)
            .await?;
    }
    // a partition that the interactions' foreign key refers to is detached before it can
    // be dropped (the detach checks that nothing refers to it any more)
    sqlx::query(&format!(
        r#"alter table search_events detach partition "{}""#,
        events.name
    ))
    .execute(&mut *tx)
    .await?;
    sqlx::query(&format!(r#"drop table "{}""#, events.name))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    tracing::info!(partition = %events.name, rows = n_events, "search month dropped");
    Ok(Some((n_events, n_interactions)))
}

/// The search_ids of expired searches whose event is gone (a held user's stay), window by
/// window from the oldest month there was.
async fn search_ids(
    conn: &mut PgConnection,
    oldest: Option<DateTime<Utc>>,
    cutoff: DateTime<Utc>,
    held: &[i64],
    dry_run: bool,
) -> Result<i64, sqlx::Error> {
    if dry_run {
        return sqlx::query_scalar!(
            r#"select count(*) as "n!" from search_ids s
               where s.searched_at < $1 and not exists (
                   select 1 from search_events e
                   where e.id = s.event_id and e.searched_at = s.searched_at and e.user_id = any($2))"#,
            cutoff,
            held
        )
        .fetch_one(&mut *conn)
        .await;
    }
    let Some(mut from) = oldest else {
        return Ok(0);
    };
    // A BRIN range holds no summary until a vacuum makes one, and an unsummarized range
    // matches every window: each 6 h window read the whole table (3.7 s a window on 6 M ids
    // loaded since the last vacuum, 63 ms once summarized). Summarizing scans only the
    // ranges that lack a summary.
    sqlx::query_scalar!("select brin_summarize_new_values('search_ids_searched_at_brin')")
        .fetch_one(&mut *conn)
        .await?;
    let mut deleted = 0;
    // The window is repeated on the events so each probe prunes to the window's month: with
    // only `e.searched_at = s.searched_at` every window hashed every live event (ops/bench/
    // retention: past its 900 s limit on 5 M expired ids; a month dropped leaves no partition
    // to probe at all).
    while from < cutoff {
        let to = (from + chrono::Duration::hours(ID_WINDOW_HOURS)).min(cutoff);
        deleted += sqlx::query!(
            "delete from search_ids s
             where s.searched_at >= $1 and s.searched_at < $2
               and not exists (select 1 from search_events e
                               where e.id = s.event_id and e.searched_at = s.searched_at
                                 and e.searched_at >= $1 and e.searched_at < $2)",
            from,
            to
        )
        .execute(&mut *conn)
        .await?
        .rows_affected() as i64;
        from = to;
    }
    Ok(deleted)
}

/// The per-day search aggregates (migration 0011) of local days before `cutoff`'s, in both
/// tables: counted (`count_only`) or deleted. Their events are gone by now, most of them by a partition drop, which passes the
/// trigger that would have emptied these rows; the searcher rows name users.
async fn day_aggregates(
    conn: &mut PgConnection,
    cutoff: DateTime<Utc>,
    count_only: bool,
) -> Result<i64, sqlx::Error> {
    let mut total = 0;
    for table in ["search_day_queries", "search_day_searchers"] {
        // the table names are these two literals, never input
        let expired = format!(
            "select ctid from {table} t where t.day < (select ($1 at time zone z.timezone)::date
                                                     from search_analytics_zone z)"
        );
        if count_only {
            let n: i64 = sqlx::query_scalar(&format!("select count(*) from ({expired}) e"))
                .bind(cutoff)
                .fetch_one(&mut *conn)
                .await?;
            total += n;
            continue;
        }
        loop {
            let n = sqlx::query(&format!(
                "delete from {table} where ctid = any(array({expired} limit $2))"
            ))
            .bind(cutoff)
            .bind(BATCH)
            .execute(&mut *conn)
            .await?
            .rows_affected();
            total += n as i64;
            if n < BATCH as u64 {
                break;
            }
        }
    }
    Ok(total)
}

/// Guest search history older than `cutoff`.
async fn guest_history(
    conn: &mut PgConnection,
    cutoff: DateTime<Utc>,
    dry_run: bool,
) -> Result<i64, sqlx::Error> {
    if dry_run {
        return sqlx::query_scalar!(
            r#"select count(*) as "n!" from search_history
               where guest_session is not null and searched_at < $1"#,
            cutoff
        )
        .fetch_one(&mut *conn)
        .await;
    }
    let mut deleted = 0;
    loop {
        let n = sqlx::query!(
            "delete from search_history where id in (
                 select id from search_history
                 where guest_session is not null and searched_at < $1 limit $2)",
            cutoff,
            BATCH
        )
        .execute(&mut *conn)
        .await?
        .rows_affected();
        deleted += n as i64;
        if n < BATCH as u64 {
            return Ok(deleted);
        }
    }
}

/// Export documents past their expiry, but those of held users.
async fn exports(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    held: &[i64],
    dry_run: bool,
) -> Result<i64, sqlx::Error> {
    if dry_run {
        return sqlx::query_scalar!(
            r#"select count(*) as "n!" from export_documents
               where expires_at <= $1 and user_id <> all($2)"#,
            now,
            held
        )
        .fetch_one(&mut *conn)
        .await;
    }
    let mut deleted = 0;
    loop {
        let n = sqlx::query!(
            "delete from export_documents where request_id in (
                 select request_id from export_documents
                 where expires_at <= $1 and user_id <> all($2) limit $3)",
            now,
            held,
            BATCH
        )
        .execute(&mut *conn)
        .await?
        .rows_affected();
        deleted += n as i64;
        if n < BATCH as u64 {
            return Ok(deleted);
        }
    }
}
