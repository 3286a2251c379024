//! Retention sweep benchmark (issue 12): millions of expired search events swept while the
//! booking API takes bookings at a fixed rate. Seeds a fresh database with SQL
//! generate_series (expired events over whole months, which the sweep drops as partitions,
//! and over the part of the cutoff's month before the cutoff, which it deletes in batches;
//! live events after the cutoff), starts the release `api` and `worker`, offers bookings
//! open loop (latency from when each request was due, as `api-load` does), asks for a sweep
//! through the admin API after a measured stretch, and compares the booking p99 during the
//! sweep with the one before it.
use std::{
    process::Stdio,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use chrono::{DateTime, Datelike, TimeZone, Utc};
use clap::Parser;
use e2e::redis_server::free_port;
use hdrhistogram::Histogram;
use serde_json::json;

#[derive(Parser)]
struct Args {
    /// Expired search events to seed.
    #[arg(long, default_value_t = 5_000_000)]
    expired: i64,
    /// Live search events to seed (kept by the sweep).
    #[arg(long, default_value_t = 1_000_000)]
    live: i64,
    /// Share of the expired events in the cutoff's own month (deleted in batches); the rest
    /// fall in whole expired months (dropped as partitions).
    #[arg(long, default_value_t = 0.1)]
    partial_share: f64,
    /// Whole expired months the rest are spread over.
    #[arg(long, default_value_t = 6)]
    months: u32,
    /// Booking requests per second to offer.
    #[arg(long, default_value_t = 200)]
    rate: u64,
    /// Measured seconds of load before the sweep is asked for (after a 2 s warm-up).
    #[arg(long, default_value_t = 30)]
    before_seconds: u64,
    /// Seconds of load after the sweep finished.
    #[arg(long, default_value_t = 5)]
    after_seconds: u64,
    /// Give up on the sweep after this long.
    #[arg(long, default_value_t = 900)]
    sweep_timeout_seconds: u64,
    /// Where the release binaries are.
    #[arg(long, default_value = "target/release")]
    bin_dir: std::path::PathBuf,
    /// Write the results here as JSON.
    #[arg(long)]
    out: Option<std::path::PathBuf>,
}

/// A retention_runs row: state, started_at, finished_at, counts.
type RunRow = (
    String,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    serde_json::Value,
);

/// The default RETENTION_SEARCH_DAYS, which the worker runs with here.
const RETENTION_DAYS: i64 = 365;
/// Instructors, each with a 08:00-20:00 day for 45 days: 12 distinct slots a day each, so
/// the bookings never run out of free slots (400 × 12 × 45 at 200/s is 18 minutes).
const INSTRUCTORS: i64 = 400;
const STUDENTS: i64 = 500;
/// Rows per seeding statement: the day aggregates' statement trigger reads each
/// statement's transition table, which this keeps to a sane size.
const SEED_CHUNK: i64 = 500_000;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let db = shared::testing::TestDatabase::create().await;
    seed_bookings(&db.pool).await?;
    let now = Utc::now();
    let seeded = seed_searches(&db.pool, &args, now).await?;
    eprintln!("seeded: {seeded}");

    let smtp = e2e::smtp::SmtpSink::start().await;
    let prefix = shared::testing::unique_name("bench");
    let api_port = free_port();
    let env = [
        ("DATABASE_URL", db.url.clone()),
        ("REDIS_URL", shared::testing::redis_url()),
        ("QUEUE_PREFIX", prefix.clone()),
        ("SMTP_URL", smtp.url()),
        ("PORT", api_port.to_string()),
        ("WORKER_PORT", free_port().to_string()),
        ("RATE_LIMIT_PER_SEC", "1000000".into()),
        ("RATE_LIMIT_BURST", "1000000".into()),
        ("RETENTION_SEARCH_DAYS", RETENTION_DAYS.to_string()),
        // the sweep's own lines (each partition dropped) go to the worker's log
        ("RUST_LOG", "warn,worker::jobs::retention_sweep=info".into()),
    ];
    let mut children = Vec::new();
    let log_dir = args.bin_dir.join("bench-logs");
    std::fs::create_dir_all(&log_dir)?;
    for bin in ["api", "worker"] {
        let path = args.bin_dir.join(bin);
        let log = std::fs::File::create(log_dir.join(format!("retention-{bin}.log")))?;
        let child = tokio::process::Command::new(&path)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", path.display()))?;
        children.push(child);
    }
    let base = format!("http://127.0.0.1:{api_port}");
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()?;
    for _ in 0..200 {
        if http.get(format!("{base}/health")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let config =
        shared::config::Config::from_vars(env.iter().map(|(k, v)| (k.to_string(), v.clone())))?;
    let keys = api::auth::JwtKeys::new(&config.jwt_secret, 120);
    let mint = |id: i64, role| {
        keys.mint(id, role, Utc::now())
            .map_err(|e| anyhow::anyhow!("{e}"))
    };
    let students: Vec<i64> =
        sqlx::query_scalar("select id from users where role = 'student' order by id")
            .fetch_all(&db.pool)
            .await?;
    let tokens: Vec<String> = students
        .iter()
        .map(|id| mint(*id, shared::domain::Role::Student))
        .collect::<Result<_, _>>()?;
    let admin: i64 = sqlx::query_scalar("select id from users where role = 'admin' limit 1")
        .fetch_one(&db.pool)
        .await?;
    let admin = mint(admin, shared::domain::Role::Admin)?;
    let instructors: Vec<(i64, i64)> =
        sqlx::query_as("select s.instructor_id, s.id from services s order by s.instructor_id")
            .fetch_all(&db.pool)
            .await?;

    // the load: open loop until told to stop; each result is (due, status, latency)
    let stop = Arc::new(AtomicBool::new(false));
    let results: Arc<Mutex<Vec<(Instant, u16, Duration)>>> = Arc::default();
    let started = Instant::now();
    let started_utc = Utc::now();
    let load = {
        let (stop, results, http, base) =
            (stop.clone(), results.clone(), http.clone(), base.clone());
        let interval = Duration::from_secs_f64(1.0 / args.rate as f64);
        tokio::spawn(async move {
            let mut tasks = Vec::new();
            let mut n: u64 = 0;
            while !stop.load(Ordering::Relaxed) {
                let due = started + interval * n as u32;
                tokio::time::sleep_until(due.into()).await;
                let (instructor, service) = instructors[(n as i64 % INSTRUCTORS) as usize];
                let token = tokens[(n as i64 % STUDENTS) as usize].clone();
                let start = e2e::procs::lesson_slot(n as i64 / INSTRUCTORS);
                let (http, base, results) = (http.clone(), base.clone(), results.clone());
                tasks.push(tokio::spawn(async move {
                    let response =
                        e2e::procs::post_booking(&http, &base, &token, instructor, service, start)
                            .await;
                    let elapsed = due.elapsed();
                    let status = response.map(|r| r.status().as_u16()).unwrap_or(0);
                    if let Ok(mut r) = results.lock() {
                        r.push((due, status, elapsed));
                    }
                }));
                n += 1;
            }
            for task in tasks {
                let _ = task.await;
            }
        })
    };
    let warmup_end = started + Duration::from_secs(2);
    tokio::time::sleep_until((warmup_end + Duration::from_secs(args.before_seconds)).into()).await;

    let asked = Instant::now();
    let response = http
        .post(format!("{base}/api/v1/admin/privacy/retention/run"))
        .bearer_auth(&admin)
        .json(&json!({"dry_run": false}))
        .send()
        .await?;
    anyhow::ensure!(
        response.status().as_u16() == 202,
        "the sweep was not accepted: {}",
        response.text().await.unwrap_or_default()
    );
    let deadline = Instant::now() + Duration::from_secs(args.sweep_timeout_seconds);
    let run = loop {
        let row: Option<RunRow> = sqlx::query_as(
            "select state, started_at, finished_at, counts from retention_runs
                 order by id desc limit 1",
        )
        .fetch_optional(&db.pool)
        .await?;
        if let Some((state, Some(from), Some(to), counts)) = row
            && state == "done"
        {
            break (from, to, counts);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the sweep did not finish in time"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let finished = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.after_seconds)).await;
    stop.store(true, Ordering::Relaxed);
    load.await?;

    // the sweep's own instants (the database's clock, this machine's) on the load's timeline
    let (sweep_from, sweep_to, counts) = run;
    let at = |t: DateTime<Utc>| started + (t - started_utc).to_std().unwrap_or_default();
    let (during_from, during_to) = (at(sweep_from), at(sweep_to));
    let mut before = Histogram::<u64>::new(3)?;
    let mut during = Histogram::<u64>::new(3)?;
    let (mut failed_before, mut failed_during, mut failed_total, mut total) = (0, 0, 0, 0);
    for (due, status, elapsed) in results
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .iter()
    {
        if *due < warmup_end {
            continue;
        }
        total += 1;
        let failed = *status != 201;
        failed_total += u64::from(failed);
        let micros = elapsed.as_micros() as u64;
        if *due < asked {
            before.record(micros)?;
            failed_before += u64::from(failed);
        } else if *due >= during_from && *due <= during_to {
            during.record(micros)?;
            failed_during += u64::from(failed);
        }
    }
    for mut child in children {
        let _ = child.kill().await;
    }

    let seconds = (sweep_to - sweep_from).num_milliseconds() as f64 / 1000.0;
    let count = |kind: &str| counts[kind].as_i64().unwrap_or(0);
    let rows: i64 = counts
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| !k.ends_with("_dropped"))
                .filter_map(|(_, v)| v.as_i64())
                .sum()
        })
        .unwrap_or(0);
    let events = count("search_events");
    let events_per_s = events as f64 / seconds.max(0.001);
    let rows_per_s = rows as f64 / seconds.max(0.001);
    let left: i64 = sqlx::query_scalar(
        "select count(*) from search_events where searched_at < now() - make_interval(days => $1)",
    )
    .bind(RETENTION_DAYS as i32)
    .fetch_one(&db.pool)
    .await?;
    let live: i64 = sqlx::query_scalar("select count(*) from search_events")
        .fetch_one(&db.pool)
        .await?;
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let (p99_before, p99_during) = (ms(&before, 0.99), ms(&during, 0.99));
    let ratio = p99_during / p99_before.max(0.001);
    let pass = |ok: bool| if ok { "ok" } else { "MISSED" };
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_default();
    let load_avg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let report = json!({
        "date": Utc::now().to_rfc3339(),
        "machine": {
            "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "cpu": cpu,
            "loadavg_at_end": load_avg.trim(),
        },
        "seeded": seeded,
        "offered_rate": args.rate,
        "bookings": {
            "measured": total,
            "failed": failed_total,
            "failed_before": failed_before,
            "failed_during": failed_during,
            "before": {"requests": before.len(), "p50_ms": ms(&before, 0.5), "p99_ms": p99_before, "max_ms": before.max() as f64 / 1000.0},
            "during": {"requests": during.len(), "p50_ms": ms(&during, 0.5), "p99_ms": p99_during, "max_ms": during.max() as f64 / 1000.0},
            "p99_ratio": ratio,
        },
        "sweep": {
            "seconds": seconds,
            "asked_to_done_seconds": (finished - asked).as_secs_f64(),
            "counts": counts,
            "rows": rows,
            "rows_per_s": rows_per_s,
            "search_events_per_s": events_per_s,
            "expired_left": left,
            "search_events_left": live,
        },
        "targets": {"p99_ratio_max": 1.5, "failed_bookings": 0, "rows_per_s_min": 100_000},
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    println!(
        "Retention sweep: {events} search events ({rows} rows of every kind, partitions dropped: {}) in {seconds:.2} s: \
         {rows_per_s:.0} rows/s (target >= 100000 rows/s, the rows of dropped partitions counted: {}), \
         the search events alone {events_per_s:.0}/s; expired left {left} (crossed the cutoff after the sweep took it)",
        count("search_partitions_dropped"),
        pass(rows_per_s >= 100_000.0),
    );
    println!(
        "Bookings at {} req/s: p99 before {p99_before:.2} ms ({} requests), during the sweep {p99_during:.2} ms ({} requests), \
         {ratio:.2}x (target <= 1.5x: {}); failed {failed_total} of {total} (target 0: {})",
        args.rate,
        before.len(),
        during.len(),
        pass(ratio <= 1.5),
        pass(failed_total == 0),
    );
    if let Some(out) = args.out {
        std::fs::write(&out, serde_json::to_vec_pretty(&report)?)?;
    }
    db.drop_database().await?;
    let mut redis = shared::queue::connect(&shared::testing::redis_url()).await?;
    shared::queue::delete_namespace(&mut redis, &prefix).await?;
    Ok(())
}

/// The first instant of the month `months` before the one `t` is in (UTC).
fn month_start(t: DateTime<Utc>, months: u32) -> DateTime<Utc> {
    let index = t.year() * 12 + t.month0() as i32 - months as i32;
    Utc.with_ymd_and_hms(
        index.div_euclid(12),
        index.rem_euclid(12) as u32 + 1,
        1,
        0,
        0,
        0,
    )
    .single()
    .unwrap_or(t)
}

/// Expired and live search events (with their search_ids, as the API writes them), guests
/// only, evenly spread over their windows; returns what was seeded where.
async fn seed_searches(
    pool: &sqlx::PgPool,
    args: &Args,
    now: DateTime<Utc>,
) -> anyhow::Result<serde_json::Value> {
    let cutoff = now - chrono::Duration::days(RETENTION_DAYS);
    // the cutoff's month is deleted in batches (its expired part), the months before it
    // dropped whole
    let partial_from = month_start(cutoff, 0);
    let whole_from = month_start(cutoff, args.months);
    let partial = (args.expired as f64 * args.partial_share) as i64;
    let windows = [
        (
            "whole expired months",
            whole_from,
            partial_from,
            args.expired - partial,
        ),
        (
            "expired part of the cutoff month",
            partial_from,
            cutoff - chrono::Duration::seconds(60),
            partial,
        ),
        (
            "live",
            cutoff + chrono::Duration::seconds(60),
            now - chrono::Duration::seconds(60),
            args.live,
        ),
    ];
    shared::search::ensure_partitions_between(pool, whole_from.date_naive(), now.date_naive())
        .await?;
    let begun = Instant::now();
    for (_, from, to, n) in windows {
        let mut first = 0;
        while first < n {
            let last = (first + SEED_CHUNK).min(n);
            sqlx::query(
                "with e as (
                   insert into search_events (search_id, searched_at, guest_session, query,
                                              normalized_query, result_count, ua_class)
                   select gen_random_uuid(), $1 + ($2 - $1) * (k::float8 / $4),
                          'guest-' || (k % 5000), 'piano lessons', 'piano lessons', 3, 'desktop'
                   from generate_series($3, $5 - 1) k
                   returning id, search_id, searched_at)
                 insert into search_ids (search_id, event_id, searched_at)
                 select search_id, id, searched_at from e",
            )
            .bind(from)
            .bind(to)
            .bind(first)
            .bind(n as f64)
            .bind(last)
            .execute(pool)
            .await
            .context("seeding search events")?;
            first = last;
        }
    }
    sqlx::query("analyze").execute(pool).await?;
    Ok(json!({
        "cutoff": cutoff,
        "windows": windows.iter().map(|(what, from, to, n)| json!({"what": what, "from": from, "to": to, "events": n})).collect::<Vec<_>>(),
        "seed_seconds": begun.elapsed().as_secs_f64(),
    }))
}

/// The booking market of [`e2e::procs::seed_lesson_market`] for 45 days, and an admin.
async fn seed_bookings(pool: &sqlx::PgPool) -> Result<(), sqlx::Error> {
    e2e::procs::seed_lesson_market(pool, INSTRUCTORS, STUDENTS, 45).await?;
    sqlx::query(
        "insert into users (email, full_name, role) values ('admin@bench.test', 'Bench Admin', 'admin')",
    )
    .execute(pool)
    .await?;
    Ok(())
}
