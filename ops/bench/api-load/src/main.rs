//! API load benchmark: booking creation at a fixed request rate (open loop, so a slow
//! answer never delays the next request and latency is measured from when each request was
//! due), and the end-to-end latency from `POST /api/v1/bookings` to the confirmation being
//! accepted by an SMTP server.
//!
//! Why our own generator: the load tools at hand cannot do this. oha sends one fixed body
//! (every booking after the first would be a 409 conflict), wrk is closed-loop with no fixed
//! rate, and neither can time the email the request causes. This one starts the real
//! release binaries (`api`, `worker`) against a fresh database, real Redis and an SMTP sink.
use std::{
    collections::HashMap,
    path::PathBuf,
    process::Stdio,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context;
use clap::Parser;
use e2e::redis_server::free_port;
use hdrhistogram::Histogram;
use serde_json::json;

#[derive(Parser)]
struct Args {
    /// Requests per second to offer.
    #[arg(long, default_value_t = 500)]
    rate: u64,
    /// Seconds of measured load (after a 2 s warm-up at the same rate).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Where the release binaries are.
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
    /// Write the results here as JSON.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Start no worker: measures the API alone (no emails are sent).
    #[arg(long)]
    no_worker: bool,
}

const INSTRUCTORS: i64 = 100;
const STUDENTS: i64 = 500;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let db = shared::testing::TestDatabase::create().await;
    e2e::procs::seed_lesson_market(&db.pool, INSTRUCTORS, STUDENTS, 30).await?;
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
        (
            "WORKER_CONCURRENCY",
            std::env::var("WORKER_CONCURRENCY").unwrap_or_else(|_| "32".into()),
        ),
        ("RUST_LOG", "warn".into()),
    ];
    let mut children = Vec::new();
    let bins: &[&str] = if args.no_worker {
        &["api"]
    } else {
        &["api", "worker"]
    };
    for bin in bins {
        let path = args.bin_dir.join(bin);
        let child = tokio::process::Command::new(&path)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::null())
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
    let students: Vec<i64> =
        sqlx::query_scalar("select id from users where role = 'student' order by id")
            .fetch_all(&db.pool)
            .await?;
    let tokens: Vec<String> = students
        .iter()
        .map(|id| keys.mint(*id, shared::domain::Role::Student, chrono::Utc::now()))
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let instructors: Vec<(i64, i64)> =
        sqlx::query_as("select s.instructor_id, s.id from services s order by s.instructor_id")
            .fetch_all(&db.pool)
            .await?;

    let warmup = args.rate * 2;
    let total = warmup + args.rate * args.seconds;
    let interval = Duration::from_secs_f64(1.0 / args.rate as f64);
    let sent_at: Arc<Mutex<HashMap<i64, Instant>>> = Arc::default();
    let results: Arc<Mutex<Vec<(u64, u16, Duration)>>> = Arc::default();
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for n in 0..total {
        let due = started + interval * n as u32;
        tokio::time::sleep_until(due.into()).await;
        let (instructor, service) = instructors[(n as i64 % INSTRUCTORS) as usize];
        let token = tokens[(n as i64 % STUDENTS) as usize].clone();
        let start = slot(n as i64);
        let (http, base, results, sent_at) =
            (http.clone(), base.clone(), results.clone(), sent_at.clone());
        tasks.push(tokio::spawn(async move {
            let response =
                e2e::procs::post_booking(&http, &base, &token, instructor, service, start).await;
            let elapsed = due.elapsed();
            let status = match response {
                Ok(r) => {
                    let status = r.status().as_u16();
                    if status == 201
                        && let Ok(value) = r.json::<serde_json::Value>().await
                        && let Some(id) = value["id"].as_i64()
                        && let Ok(mut map) = sent_at.lock()
                    {
                        map.insert(id, due);
                    }
                    status
                }
                Err(_) => 0,
            };
            if let Ok(mut r) = results.lock() {
                r.push((n, status, elapsed));
            }
        }));
    }
    let offered_for = started.elapsed();
    for task in tasks {
        let _ = task.await;
    }
    // wait for the confirmations of every measured booking
    let measured_ids: Vec<i64> = {
        let results = results.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        let map = sent_at.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        let _ = &results;
        map.keys().copied().collect()
    };
    let deadline = Instant::now()
        + if args.no_worker {
            Duration::ZERO
        } else {
            Duration::from_secs(120)
        };
    while smtp.count() < measured_ids.len() * 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let mut http_hist = Histogram::<u64>::new(3)?;
    let mut statuses: HashMap<u16, u64> = HashMap::new();
    for (n, status, elapsed) in results
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .iter()
    {
        if *n < warmup {
            continue;
        }
        *statuses.entry(*status).or_default() += 1;
        http_hist.record(elapsed.as_micros() as u64)?;
    }
    let mut email_hist = Histogram::<u64>::new(3)?;
    let sent = sent_at
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone();
    for message in smtp.messages() {
        if let Some(id) = booking_of(&message.message_id())
            && let Some(due) = sent.get(&id)
        {
            email_hist.record(
                message
                    .received_at
                    .saturating_duration_since(*due)
                    .as_micros() as u64,
            )?;
        }
    }
    for mut child in children {
        let _ = child.kill().await;
    }
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let measured = args.rate * args.seconds;
    let postgres: String = sqlx::query_scalar("select version()")
        .fetch_one(&db.pool)
        .await?;
    let redis_version = {
        let mut conn = shared::queue::connect(&shared::testing::redis_url()).await?;
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut conn)
            .await?;
        info.lines()
            .find_map(|l| l.strip_prefix("redis_version:"))
            .unwrap_or("?")
            .to_string()
    };
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_default();
    let report = json!({
        "date": chrono::Utc::now().to_rfc3339(),
        "machine": {"cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0), "cpu": cpu},
        "versions": {"postgres": postgres, "redis": redis_version, "api": env!("CARGO_PKG_VERSION")},
        "offered_rate": args.rate,
        "seconds": args.seconds,
        "offered_in_s": offered_for.as_secs_f64(),
        "requests": measured,
        "achieved_rps": measured as f64 / (offered_for.as_secs_f64() * args.seconds as f64 / (args.seconds + 2) as f64),
        "statuses": statuses,
        "booking_create_ms": {"p50": ms(&http_hist, 0.5), "p90": ms(&http_hist, 0.9), "p99": ms(&http_hist, 0.99), "max": http_hist.max() as f64 / 1000.0},
        "booking_to_smtp_ms": {"emails": email_hist.len(), "p50": ms(&email_hist, 0.5), "p90": ms(&email_hist, 0.9), "p99": ms(&email_hist, 0.99), "max": email_hist.max() as f64 / 1000.0},
        "targets": {"booking_create_p99_ms": 25.0, "booking_to_smtp_p99_ms": 1000.0},
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    println!(
        "API load: {} req/s offered for {} s: create p50 {:.2} ms, p99 {:.2} ms (target < 25 ms); \
         booking to SMTP-accepted p50 {:.1} ms, p99 {:.1} ms over {} emails (target < 1000 ms); statuses {:?}",
        args.rate,
        args.seconds,
        ms(&http_hist, 0.5),
        ms(&http_hist, 0.99),
        ms(&email_hist, 0.5),
        ms(&email_hist, 0.99),
        email_hist.len(),
        statuses
    );
    if let Some(out) = args.out {
        std::fs::write(&out, serde_json::to_vec_pretty(&report)?)?;
    }
    db.drop_database().await?;
    let mut redis = shared::queue::connect(&shared::testing::redis_url()).await?;
    shared::queue::delete_namespace(&mut redis, &prefix).await?;
    Ok(())
}

/// The lesson slot of request `n`: instructors in turn, then the next hour, day by day.
fn slot(n: i64) -> chrono::DateTime<chrono::Utc> {
    e2e::procs::lesson_slot(n / INSTRUCTORS)
}

fn booking_of(message_id: &str) -> Option<i64> {
    message_id
        .strip_prefix("<booking-")?
        .split('-')
        .next()?
        .parse()
        .ok()
}
