//! Ops dashboard benchmark (issue 13). Two fresh databases seeded with SQL generate_series:
//! a large one (1,000,000 job records, 10,000 of them dead, the finished ones spread over
//! 30 days) and a small one (1,000 records, 10 dead, same shape). A release `api` serves
//! each; a viewer session asks each, in turn, for the overview (`GET /ops`) and the
//! dead-letter list (`GET /ops/jobs?state=dead`), so that both sizes see the same machine at
//! the same moments, and the p99s are compared (target: large ≤ 2x small). The plans of the
//! dashboard's queries on the large database are printed (each must read an index, never
//! scan `jobs`). Then an operator retries 10,000 dead letters matching a filter through
//! `POST /api/v1/admin/jobs/bulk`, while a probe runs the relay's own claim
//! (`shared::records::claim_due`, rolled back) every 20 ms: its latency before and during
//! the bulk shows whether the relay waits on it.
use std::{
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use chrono::Utc;
use clap::Parser;
use e2e::redis_server::free_port;
use hdrhistogram::Histogram;
use serde_json::json;
use sqlx::PgPool;

#[derive(Parser)]
struct Args {
    /// Job records in the large database.
    #[arg(long, default_value_t = 1_000_000)]
    rows: i64,
    /// Of which dead.
    #[arg(long, default_value_t = 10_000)]
    dead: i64,
    /// Job records in the small database (dead in the same proportion).
    #[arg(long, default_value_t = 1_000)]
    small_rows: i64,
    /// Measured requests per page and database (after 20 unmeasured).
    #[arg(long, default_value_t = 300)]
    requests: usize,
    /// Where the release binaries are.
    #[arg(long, default_value = "target/release")]
    bin_dir: std::path::PathBuf,
}

/// Days the finished records are spread over (what the retention sweep keeps, roughly).
const HISTORY_DAYS: i64 = 30;

/// Seeds `rows` job records, `dead` of them dead letters of `booking_email` failing with an
/// SMTP 550 (the bulk retry's filter), a few thousand pending (due and scheduled), a
/// hundred in flight, 1% skipped and the rest done, created and finished uniformly over
/// the last [`HISTORY_DAYS`] days; failed attempts for the dead and for 2% of the done.
async fn seed_jobs(pool: &PgPool, rows: i64, dead: i64) -> anyhow::Result<()> {
    let pending = (rows / 200).max(5);
    let in_flight = (rows / 10_000).max(2);
    sqlx::query(
        "insert into jobs (queue, payload, dedupe_key, status, run_at, attempts, last_error,
                           created_at, enqueued_at, started_at, finished_at)
         select q.queue,
                jsonb_build_object('booking_id', i, 'kind', case when i % 3 = 0 then 'reminder' else 'confirmation' end),
                'bench-' || i,
                s.status,
                case when s.status = 'pending' and i % 2 = 0 then now() + interval '1 day' else t.created end,
                case when s.status = 'dead' then 8 else 1 end,
                case when s.status = 'dead' then 'permanent send failure: SMTP 550 mailbox ' || (i % 97) || ' unavailable' end,
                t.created,
                case when s.status = 'enqueued' then t.created end,
                case when s.status = 'enqueued' and i % 2 = 0 then t.created end,
                case when s.status in ('done', 'skipped', 'dead') then t.created + interval '2 seconds' end
           from generate_series(1, $1::bigint) i
           cross join lateral (select case
                      when i % ($1::bigint / $2::bigint) = 0 then 'dead'
                      when i % ($1::bigint / $3::bigint) = 7 then 'pending'
                      when i % ($1::bigint / $5::bigint) = 11 then 'enqueued'
                      when i % 100 = 1 then 'skipped'
                      else 'done' end as status) s
           -- finished work over the whole history; unfinished work is recent (the last hour)
           cross join lateral (select case
                      when s.status in ('pending', 'enqueued') then now() - (i % 3600) * interval '1 second'
                      else now() - ($4::bigint * interval '1 day') * (($1::bigint - i)::float8 / $1::bigint)
                      end as created) t
           cross join lateral (select case
                      when s.status = 'dead' then 'booking_email'
                      when i % 10 < 7 then 'booking_email'
                      when i % 10 = 7 then 'data_export'
                      when i % 10 = 8 then 'export_ready_email'
                      else 'erasure' end as queue) q",
    )
    .bind(rows)
    .bind(dead)
    .bind(pending)
    .bind(HISTORY_DAYS)
    .bind(in_flight)
    .execute(pool)
    .await?;
    sqlx::query(
        "insert into job_errors (job_id, attempt, error, at)
         select id, attempts, coalesce(last_error, 'smtp 451 try again'), coalesce(finished_at, created_at)
           from jobs where status = 'dead' or (status = 'done' and id % 50 = 0)",
    )
    .execute(pool)
    .await?;
    for table in ["jobs", "job_errors"] {
        sqlx::query(&format!("vacuum analyze {table}"))
            .execute(pool)
            .await?;
    }
    Ok(())
}

/// A user with `role` and a token for them.
async fn user(
    pool: &PgPool,
    keys: &api::auth::JwtKeys,
    email: &str,
    role: shared::domain::Role,
) -> anyhow::Result<String> {
    let id: i64 = sqlx::query_scalar(
        "insert into users (email, full_name, role, timezone) values ($1, 'Bench Ops', $2, 'UTC') returning id",
    )
    .bind(email)
    .bind(role.as_str())
    .fetch_one(pool)
    .await?;
    keys.mint(id, role, Utc::now())
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// One platform under test: a database and the release api serving it.
struct Side {
    name: &'static str,
    db: shared::testing::TestDatabase,
    base: String,
    cookie: String,
    operator: String,
    _api: tokio::process::Child,
}

async fn start(
    name: &'static str,
    rows: i64,
    dead: i64,
    args: &Args,
    http: &reqwest::Client,
) -> anyhow::Result<Side> {
    let db = shared::testing::TestDatabase::create().await;
    api::seed::seed(&db.pool, Utc::now()).await?;
    let started = Instant::now();
    seed_jobs(&db.pool, rows, dead).await?;
    eprintln!(
        "{name}: seeded {rows} job records ({dead} dead) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let port = free_port();
    let env = [
        ("DATABASE_URL", db.url.clone()),
        ("REDIS_URL", shared::testing::redis_url()),
        ("QUEUE_PREFIX", shared::testing::unique_name("bench")),
        ("PORT", port.to_string()),
        ("RATE_LIMIT_PER_SEC", "1000000".into()),
        ("RATE_LIMIT_BURST", "1000000".into()),
        ("OPS_COOKIE_SECURE", "false".into()),
        ("RUST_LOG", "warn".into()),
    ];
    let log_dir = args.bin_dir.join("bench-logs");
    std::fs::create_dir_all(&log_dir)?;
    let log = std::fs::File::create(log_dir.join(format!("ops-{name}-api.log")))?;
    let path = args.bin_dir.join("api");
    let api = tokio::process::Command::new(&path)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", path.display()))?;
    let base = format!("http://127.0.0.1:{port}");
    for _ in 0..400 {
        if http.get(format!("{base}/health")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let config =
        shared::config::Config::from_vars(env.iter().map(|(k, v)| (k.to_string(), v.clone())))?;
    let keys = api::auth::JwtKeys::new(&config.jwt_secret, 120);
    let viewer = user(
        &db.pool,
        &keys,
        "viewer@bench.test",
        shared::domain::Role::OpsViewer,
    )
    .await?;
    let operator = user(
        &db.pool,
        &keys,
        "operator@bench.test",
        shared::domain::Role::OpsOperator,
    )
    .await?;
    let login = http
        .post(format!("{base}/ops/login"))
        .form(&[("token", viewer.as_str())])
        .send()
        .await?;
    anyhow::ensure!(
        login.status().as_u16() == 303,
        "{name}: sign-in answered {}",
        login.status()
    );
    let cookie = login
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .context("no session cookie")?
        .to_string();
    Ok(Side {
        name,
        db,
        base,
        cookie,
        operator,
        _api: api,
    })
}

/// GETs `path` as the viewer; the latency in microseconds.
async fn timed_get(http: &reqwest::Client, side: &Side, path: &str) -> anyhow::Result<u64> {
    let started = Instant::now();
    let answer = http
        .get(format!("{}{path}", side.base))
        .header("cookie", &side.cookie)
        .send()
        .await?;
    let status = answer.status();
    let body = answer.bytes().await?;
    anyhow::ensure!(status.is_success(), "{} {path}: {status}", side.name);
    anyhow::ensure!(!body.is_empty());
    Ok(started.elapsed().as_micros() as u64)
}

const FINISHED_BY_MINUTE: &str =
    "select minute, queue, sum(succeeded)::bigint, sum(dead)::bigint, sum(failed)::bigint
           from (select date_trunc('minute', finished_at) as minute, queue,
                        count(*) filter (where status = 'done') as succeeded,
                        count(*) filter (where status = 'dead') as dead, 0::bigint as failed
                   from jobs where finished_at >= $1 and finished_at < $2 group by 1, 2
                 union all
                 select date_trunc('minute', e.at), j.queue, 0, 0, count(*)
                   from job_errors e join jobs j on j.id = e.job_id
                  where e.at >= $1 and e.at < $2 group by 1, 2) t
          group by minute, queue order by minute, queue";

/// The dashboard's queries as `shared::records`, `shared::pauses`, `shared::audit` and
/// `api::ops` send them (kept in step by hand: a change there must be copied here), each
/// prepared and explained with the parameters a page sends.
const PLANS: &[(&str, &str, &str)] = &[
    (
        "overview: backlog (records::backlog)",
        "select queue, sum(due)::bigint, sum(scheduled)::bigint, sum(enqueued)::bigint,
                sum(running)::bigint, sum(dead)::bigint,
                least(min(oldest_due), min(oldest_enqueued)) as oldest_waiting,
                min(oldest_due) as oldest_due
           from (select queue, count(*) filter (where run_at <= $1) as due,
                        count(*) filter (where run_at > $1) as scheduled,
                        0::bigint as enqueued, 0::bigint as running, 0::bigint as dead,
                        min(run_at) filter (where run_at <= $1) as oldest_due,
                        null::timestamptz as oldest_enqueued
                   from jobs where status = 'pending' group by queue
                 union all
                 select queue, 0, 0, count(*) filter (where started_at is null),
                        count(*) filter (where started_at is not null), 0, null,
                        min(run_at) filter (where started_at is null)
                   from jobs where status = 'enqueued' group by queue
                 union all
                 select queue, 0, 0, 0, 0, dead, null, null
                   from job_dead_counts where dead > 0) j
          group by queue",
        "(now())",
    ),
    (
        "overview: what finished in the newest minutes, every request (records::finished_by_minute)",
        FINISHED_BY_MINUTE,
        "(date_trunc('minute', now() - interval '2 minutes'), now() + interval '1 hour')",
    ),
    (
        "overview: what finished in the last day, once per api process (records::finished_by_minute)",
        FINISHED_BY_MINUTE,
        "(now() - interval '1 day', date_trunc('minute', now() - interval '2 minutes'))",
    ),
    (
        "overview: workers alive (api::ops::workers)",
        "select id, started_at, heartbeat_at from workers
          where stopped_at is null and heartbeat_at > $1 order by id",
        "(now() - interval '30 seconds')",
    ),
    (
        "dead letters, first page (records::list_filtered)",
        LIST,
        "('dead', null, null, null, null, null, null, null, null, null, 50)",
    ),
    (
        "dead letters, a later page (keyset: before)",
        LIST,
        "('dead', null, null, null, null, null, null, null, null, 500000, 50)",
    ),
    (
        "bulk: count of the filter (records::count_filtered)",
        COUNT,
        "('dead', null, 'booking_email', null, '%SMTP 550%', null, null, null, null)",
    ),
    (
        "bulk: one batch's selection (records::bulk_batch, as a select)",
        "select id from jobs
          where status = $1 and ($2::text is null or queue = $2)
            and ($3::text is null or last_error ilike $3)
            and ($4::bigint is null or id < $4)
          order by id desc limit 500",
        "('dead', 'booking_email', '%SMTP 550%', null)",
    ),
    (
        "the relay's claim (records::claim_due, as a select)",
        "select id from jobs where status = 'pending' and run_at <= $1 and queue = any($2)
            and queue not in (select queue from queue_pauses)
          order by run_at limit 500",
        "(now(), array['booking_email', 'data_export', 'erasure', 'export_ready_email'])",
    ),
    (
        "audit log page (audit::ops_entries)",
        "select id, actor, action, outcome, detail, at from audit_log
          where action like 'ops.%' and ($1::bigint is null or id < $1)
          order by id desc limit $2",
        "(null, 100)",
    ),
];

const LIST: &str = "select id, queue, payload, status, started_at, attempts, max_attempts, last_error,
        run_at, created_at, finished_at
   from jobs
  where ($1::text is null or status = $1)
    and ($2::bool is null or (started_at is not null) = $2)
    and ($3::text is null or queue = $3)
    and ($4::text is null or payload->>'kind' = $4)
    and ($5::text is null or last_error ilike $5)
    and ($6::bigint is null or booking_id = $6)
    and ($7::bigint is null
         or booking_id in (select b.id from bookings b where b.student_id = $7 or b.instructor_id = $7)
         or (payload ? 'request_id'
             and payload->>'request_id' in (select p.id::text from privacy_requests p where p.user_id = $7)))
    and ($8::timestamptz is null or created_at >= $8)
    and ($9::timestamptz is null or created_at < $9)
    and ($10::bigint is null or id < $10)
  order by id desc limit $11";

const COUNT: &str = "select count(*) from jobs
  where ($1::text is null or status = $1)
    and ($2::bool is null or (started_at is not null) = $2)
    and ($3::text is null or queue = $3)
    and ($4::text is null or payload->>'kind' = $4)
    and ($5::text is null or last_error ilike $5)
    and ($6::bigint is null or booking_id = $6)
    and ($7::bigint is null
         or booking_id in (select b.id from bookings b where b.student_id = $7 or b.instructor_id = $7)
         or (payload ? 'request_id'
             and payload->>'request_id' in (select p.id::text from privacy_requests p where p.user_id = $7)))
    and ($8::timestamptz is null or created_at >= $8)
    and ($9::timestamptz is null or created_at < $9)";

/// Prints each plan; returns the names of those that scan a big table.
async fn explain(pool: &PgPool) -> anyhow::Result<Vec<String>> {
    let mut scans = Vec::new();
    let mut conn = pool.acquire().await?;
    for (i, (name, sql, params)) in PLANS.iter().enumerate() {
        sqlx::query(&format!("prepare dash_{i} as {sql}"))
            .execute(&mut *conn)
            .await
            .with_context(|| format!("prepare {name}"))?;
        let lines: Vec<String> = sqlx::query_scalar(&format!(
            "explain (analyze, costs off, timing off, summary off) execute dash_{i} {params}"
        ))
        .fetch_all(&mut *conn)
        .await
        .with_context(|| format!("explain {name}"))?;
        println!("\n-- {name}");
        for line in &lines {
            println!("   {line}");
        }
        if lines.iter().any(|l| {
            l.contains("Seq Scan on jobs")
                || l.contains("Seq Scan on job_errors")
                || l.contains("Seq Scan on audit_log")
        }) {
            scans.push(name.to_string());
        }
    }
    Ok(scans)
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let small_dead = (args.small_rows * args.dead / args.rows).max(1);
    let small = start("small", args.small_rows, small_dead, &args, &http).await?;
    let large = start("large", args.rows, args.dead, &args, &http).await?;

    println!(
        "== ops dashboard benchmark: {} vs {} job records",
        args.rows, args.small_rows
    );
    println!(
        "   large: {} records, {} dead; small: {} records, {} dead; finished spread over {HISTORY_DAYS} days",
        args.rows, args.dead, args.small_rows, small_dead
    );
    let pages = [
        ("overview", "/ops"),
        ("dead letters", "/ops/jobs?state=dead"),
    ];
    let mut lines = Vec::new();
    let mut worst_ratio: f64 = 0.0;
    for (page, path) in pages {
        let mut hists = [Histogram::<u64>::new(3)?, Histogram::<u64>::new(3)?];
        for i in 0..(20 + args.requests) {
            // interleaved: both sizes see the same moments of a shared machine
            for (side, hist) in [&small, &large].into_iter().zip(hists.iter_mut()) {
                let us = timed_get(&http, side, path).await?;
                if i >= 20 {
                    hist.record(us)?;
                }
            }
        }
        let ratio = ms(&hists[1], 0.99) / ms(&hists[0], 0.99);
        worst_ratio = worst_ratio.max(ratio);
        lines.push(format!(
            "{page:<13} p50 {:>6.2} / {:>6.2} ms   p99 {:>6.2} / {:>6.2} ms   p99 ratio {ratio:.2}x (target <= 2x: {})",
            ms(&hists[0], 0.5),
            ms(&hists[1], 0.5),
            ms(&hists[0], 0.99),
            ms(&hists[1], 0.99),
            if ratio <= 2.0 { "met" } else { "MISSED" }
        ));
    }
    println!(
        "\n== pages, {} sequential requests each (small / large)",
        args.requests
    );
    for line in &lines {
        println!("{line}");
    }

    println!("\n== plans on the large database");
    let scans = explain(&large.db.pool).await?;
    println!(
        "\nevery dashboard query reads an index: {}",
        if scans.is_empty() {
            "yes".to_string()
        } else {
            format!("NO: {scans:?}")
        }
    );

    // the filtered bulk retry, with the relay's claim probed throughout
    let filter =
        json!({"action": "retry", "status": "dead", "queue": "booking_email", "error": "SMTP 550"});
    let count: serde_json::Value = http
        .get(format!(
            "{}/api/v1/admin/jobs/count?status=dead&queue=booking_email&error=SMTP%20550",
            large.base
        ))
        .bearer_auth(&large.operator)
        .send()
        .await?
        .json()
        .await?;
    let queues: Vec<String> = [
        "booking_email",
        "data_export",
        "erasure",
        "export_ready_email",
    ]
    .map(String::from)
    .to_vec();
    let probing = Arc::new(AtomicBool::new(true));
    let during = Arc::new(AtomicBool::new(false));
    let probe = {
        let (pool, probing, during, queues) = (
            large.db.pool.clone(),
            probing.clone(),
            during.clone(),
            queues.clone(),
        );
        tokio::spawn(async move {
            let mut before = Histogram::<u64>::new(3).expect("histogram");
            let mut while_bulk = Histogram::<u64>::new(3).expect("histogram");
            let mut claimable_seen = Vec::new();
            while probing.load(Ordering::Acquire) {
                let started = Instant::now();
                let mut tx = pool.begin().await.expect("probe tx");
                let claimed = shared::records::claim_due(&mut tx, &queues, Utc::now(), 500)
                    .await
                    .expect("claim");
                // rolled back: the probe measures the claim, it takes nothing
                tx.rollback().await.expect("rollback");
                let us = started.elapsed().as_micros() as u64;
                if during.load(Ordering::Acquire) {
                    while_bulk.record(us).expect("record");
                    claimable_seen.push(claimed.len());
                } else {
                    before.record(us).expect("record");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (before, while_bulk, claimable_seen)
        })
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    during.store(true, Ordering::Release);
    let started = Instant::now();
    let outcome: serde_json::Value = http
        .post(format!("{}/api/v1/admin/jobs/bulk", large.base))
        .bearer_auth(&large.operator)
        .json(&filter)
        .send()
        .await?
        .json()
        .await?;
    let took = started.elapsed();
    during.store(false, Ordering::Release);
    probing.store(false, Ordering::Release);
    let (before, while_bulk, claimable) = probe.await?;
    let pending_after: i64 = sqlx::query_scalar(
        "select count(*) from jobs where status = 'pending' and run_at <= now()",
    )
    .fetch_one(&large.db.pool)
    .await?;
    println!(
        "\n== filtered bulk retry on the large database: queue booking_email, error ~ 'SMTP 550'"
    );
    println!("matching before: {}", count["count"]);
    println!("outcome: {outcome}");
    println!(
        "took {:.2} s ({:.0} jobs/s), batches of {}",
        took.as_secs_f64(),
        outcome["changed"].as_f64().unwrap_or(0.0) / took.as_secs_f64(),
        shared::records::BULK_BATCH
    );
    println!(
        "relay claim (500, skip locked) before: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} probes)",
        ms(&before, 0.5),
        ms(&before, 0.99),
        before.max() as f64 / 1000.0,
        before.len()
    );
    println!(
        "relay claim during the bulk:          p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} probes)",
        ms(&while_bulk, 0.5),
        ms(&while_bulk, 0.99),
        while_bulk.max() as f64 / 1000.0,
        while_bulk.len()
    );
    println!(
        "the probe could claim {} records at most during the bulk (limit 500: it never waited for a batch)",
        claimable.iter().max().copied().unwrap_or(0)
    );
    println!("pending and due after the bulk: {pending_after}");
    println!("\nworst page p99 ratio: {worst_ratio:.2}x");
    Ok(())
}
