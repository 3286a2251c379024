//! The platform as real processes: the built `api`, `worker` and `scheduler` binaries,
//! started against a fresh database, real Redis under a private prefix, and the SMTP sink,
//! with their stdout and stderr captured to files under `target/test-logs/` so tests can
//! scan them, and kept after the run so the suite's logs can be scanned as a whole.
use std::{path::PathBuf, process::Stdio, time::Duration};

use shared::testing::{self, TestDatabase};
use tokio::process::{Child, Command};

use crate::{redis_server::free_port, smtp::SmtpSink};

/// Where cargo put the binaries: next to this test executable's `deps/` folder.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let deps = exe.parent().expect("deps dir");
    deps.parent().expect("profile dir").to_path_buf()
}

fn binary(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first (cargo build --bins)",
        path.display()
    );
    path
}

/// Where the process-level tests keep their processes' output: `target/test-logs/`, one
/// folder per cluster (its Redis prefix). Kept, pass or fail: `ops/test` empties it before
/// a run and scans it for personal data after.
pub fn test_logs_dir() -> PathBuf {
    let profile = bin_dir();
    profile
        .parent()
        .map(|target| target.join("test-logs"))
        .unwrap_or_else(|| profile.join("test-logs"))
}

/// One running process of the platform.
pub struct Proc {
    pub name: String,
    pub port: u16,
    pub log: PathBuf,
    child: Child,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or_default()
    }

    /// Sends `signal` (e.g. "TERM", "KILL", "STOP", "CONT") with kill(1).
    pub async fn signal(&self, signal: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .await;
    }

    /// SIGKILL and reap.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
        let _ = self.child.wait().await;
    }

    /// SIGTERM; the time until it exited, or None if it did not within `limit`.
    pub async fn terminate(mut self, limit: Duration) -> Option<Duration> {
        let started = std::time::Instant::now();
        self.signal("TERM").await;
        match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(_) => Some(started.elapsed()),
            Err(_) => {
                let _ = self.child.kill().await;
                None
            }
        }
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

/// A platform made of processes sharing one database, one Redis and one SMTP sink.
pub struct Cluster {
    pub db: TestDatabase,
    pub prefix: String,
    pub redis_url: String,
    pub smtp: SmtpSink,
    pub log_dir: PathBuf,
    pub env: Vec<(String, String)>,
    counter: usize,
}

impl Cluster {
    pub async fn new(redis_url: String, extra_env: &[(&str, &str)]) -> Cluster {
        Self::with_database(TestDatabase::create().await, redis_url, extra_env).await
    }

    /// A cluster on a database of the caller's (e.g. on a private Postgres server).
    pub async fn with_database(
        db: TestDatabase,
        redis_url: String,
        extra_env: &[(&str, &str)],
    ) -> Cluster {
        api::seed::seed(&db.pool, chrono::Utc::now())
            .await
            .expect("seed");
        let smtp = SmtpSink::start().await;
        let prefix = testing::unique_name("p");
        let log_dir = test_logs_dir().join(&prefix);
        std::fs::create_dir_all(&log_dir).expect("log dir");
        let mut env: Vec<(String, String)> = [
            ("DATABASE_URL", db.url.as_str()),
            ("REDIS_URL", redis_url.as_str()),
            ("QUEUE_PREFIX", prefix.as_str()),
            ("HEARTBEAT_SECS", "1"),
            ("RECONCILE_AFTER_SECS", "4"),
            ("EMAIL_CLAIM_TIMEOUT_SECS", "5"),
            ("DRAIN_SECS", "10"),
            ("WORKER_CONCURRENCY", "8"),
            // tests run side by side on one Postgres (max_connections 100 on CI)
            ("DATABASE_POOL_SIZE", "4"),
            ("RATE_LIMIT_PER_SEC", "100000"),
            ("RATE_LIMIT_BURST", "100000"),
            ("RUST_LOG", "info"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        env.push(("SMTP_URL".into(), smtp.url()));
        for (key, value) in extra_env {
            env.retain(|(k, _)| k != key);
            env.push((key.to_string(), value.to_string()));
        }
        Cluster {
            db,
            prefix,
            redis_url,
            smtp,
            log_dir,
            env,
            counter: 0,
        }
    }

    async fn spawn(&mut self, bin: &str, args: &[&str], port_var: &str) -> Proc {
        // a free port can be taken by another test between our probe and the bind: retry
        for _ in 0..3 {
            self.counter += 1;
            let name = format!("{bin}-{}", self.counter);
            let port = free_port();
            let log = self.log_dir.join(format!("{name}.log"));
            let file = std::fs::File::create(&log).expect("log file");
            let err = file.try_clone().expect("log file");
            let child = Command::new(binary(bin))
                .args(args)
                .envs(self.env.iter().cloned())
                .env(port_var, port.to_string())
                .env("SCHEDULER_INSTANCE", &name)
                .stdout(Stdio::from(file))
                .stderr(Stdio::from(err))
                .kill_on_drop(true)
                .spawn()
                .expect("spawn binary");
            let mut proc = Proc {
                name,
                port,
                log,
                child,
            };
            if wait_for_port(&mut proc).await {
                return proc;
            }
            let output = std::fs::read_to_string(&proc.log).unwrap_or_default();
            assert!(
                output.contains("in use"),
                "{} did not start:\n{output}",
                proc.name
            );
        }
        panic!("{bin} could not bind a port in three tries");
    }

    pub async fn api(&mut self) -> Proc {
        self.spawn("api", &[], "PORT").await
    }

    pub async fn worker(&mut self) -> Proc {
        self.spawn("worker", &[], "WORKER_PORT").await
    }

    pub async fn scheduler(&mut self) -> Proc {
        self.spawn("scheduler", &["run"], "SCHEDULER_PORT").await
    }

    /// A token for the seeded user with this email, signed like `api mint-token` does.
    pub async fn token(&self, email: &str) -> String {
        let (id, role): (i64, shared::domain::Role) =
            sqlx::query_as("select id, role from users where email = $1")
                .bind(email)
                .fetch_one(&self.db.pool)
                .await
                .expect("seeded user");
        let secret = shared::config::Config::from_vars(self.env.clone())
            .expect("config")
            .jwt_secret;
        api::auth::JwtKeys::new(&secret, 60)
            .mint(id, role, chrono::Utc::now())
            .expect("token")
    }

    /// Every line every process logged so far.
    pub fn logs(&self) -> String {
        let mut all = String::new();
        if let Ok(entries) = std::fs::read_dir(&self.log_dir) {
            for entry in entries.flatten() {
                all.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
            }
        }
        all
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("process logs kept in {}", self.log_dir.display());
        }
    }
}

/// Waits until `proc` listens on its port; false if it exited first.
async fn wait_for_port(proc: &mut Proc) -> bool {
    for _ in 0..600 {
        if tokio::net::TcpStream::connect(("127.0.0.1", proc.port))
            .await
            .is_ok()
        {
            return true;
        }
        if !proc.running() {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "{} did not listen on port {} within 30 s",
        proc.name, proc.port
    );
}

/// The benchmarks' market: `instructors` instructors with one 60-minute service and
/// 08:00-20:00 New York availability for `days` days from today (where [`lesson_slot`]
/// falls), and `students` students; `<role><n>@bench.test` each.
pub async fn seed_lesson_market(
    pool: &sqlx::PgPool,
    instructors: i64,
    students: i64,
    days: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into users (email, full_name, role) select 'instructor' || n || '@bench.test', 'Instructor ' || n, 'instructor'
         from generate_series(1, $1) n",
    )
    .bind(instructors)
    .execute(pool)
    .await?;
    sqlx::query("insert into instructor_profiles (user_id, min_advance_booking_hours) select id, 2 from users where role = 'instructor'")
        .execute(pool)
        .await?;
    sqlx::query("insert into services (instructor_id, name, duration_minutes, price_cents) select user_id, 'Piano', 60, 6500 from instructor_profiles")
        .execute(pool)
        .await?;
    sqlx::query(
        "insert into availability (instructor_id, date, start_time, end_time)
         select p.user_id, (now() at time zone 'America/New_York')::date + d, '08:00', '20:00'
         from instructor_profiles p, generate_series(0, $1::int) d",
    )
    .bind(days)
    .execute(pool)
    .await?;
    sqlx::query(
        "insert into users (email, full_name, role) select 'student' || n || '@bench.test', 'Student ' || n, 'student'
         from generate_series(1, $1) n",
    )
    .bind(students)
    .execute(pool)
    .await?;
    Ok(())
}

/// The `index`-th distinct lesson hour inside the 08:00-20:00 New York availability of
/// [`seed_lesson_market`]: twelve a day, from the day after tomorrow.
pub fn lesson_slot(index: i64) -> chrono::DateTime<chrono::Utc> {
    use chrono::TimeZone;
    let tz = chrono_tz::America::New_York;
    let day = (chrono::Utc::now().with_timezone(&tz) + chrono::Duration::days(2 + index / 12))
        .date_naive();
    let local = day
        .and_hms_opt(8 + (index % 12) as u32, 0, 0)
        .unwrap_or_default();
    // 08:00-19:00 never falls in a DST gap in New York
    tz.from_local_datetime(&local)
        .earliest()
        .map(|t| t.with_timezone(&chrono::Utc))
        .unwrap_or_default()
}

/// `POST /api/v1/bookings` for `start` with `service` of `instructor`, as a student's client
/// sends it.
pub async fn post_booking(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    instructor: i64,
    service: i64,
    start: chrono::DateTime<chrono::Utc>,
) -> reqwest::Result<reqwest::Response> {
    http.post(format!("{base}/api/v1/bookings"))
        .bearer_auth(token)
        .json(&serde_json::json!({
            "instructor_id": instructor, "service_id": service, "start": start.to_rfc3339()
        }))
        .send()
        .await
}

/// Books lesson `n` (a distinct hour on a distinct day, inside the seeded availability)
/// through the API at `base`, retrying while the API answers 503; returns the booking id.
pub async fn book_lesson(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    instructor: i64,
    service: i64,
    n: usize,
) -> Option<i64> {
    let start = lesson_slot(n as i64);
    for _ in 0..100 {
        match post_booking(http, base, token, instructor, service, start).await {
            Ok(r) if r.status().as_u16() == 201 => {
                let value: serde_json::Value = r.json().await.ok()?;
                return value["id"].as_i64();
            }
            Ok(r) if r.status().as_u16() == 503 => {}
            Ok(r) => panic!(
                "booking {n} answered {}: {}",
                r.status(),
                r.text().await.unwrap_or_default()
            ),
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

/// The line a fault scenario adds to the suite's summary.
pub fn record_summary(
    scenario: &str,
    faults: usize,
    jobs_in: usize,
    effects_out: usize,
    lost: usize,
    duplicated: usize,
) {
    let dir = bin_dir().join("fault-summary");
    let _ = std::fs::create_dir_all(&dir);
    let line = format!(
        "{scenario} faults={faults} jobs_in={jobs_in} effects_out={effects_out} lost={lost} duplicated={duplicated}\n"
    );
    let _ = std::fs::write(dir.join(format!("{scenario}.txt")), line);
}

/// Adds a measured figure (`key=value`) to a scenario's summary line.
pub fn record_figure(scenario: &str, key: &str, value: impl std::fmt::Display) {
    let path = bin_dir()
        .join("fault-summary")
        .join(format!("{scenario}.txt"));
    if let Ok(line) = std::fs::read_to_string(&path) {
        let _ = std::fs::write(&path, format!("{} {key}={value}\n", line.trim_end()));
    }
}
