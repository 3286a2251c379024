//! The platform on a Redis Cluster (3 primaries, 3 replicas) and behind Sentinel, from the
//! binaries: bookings to the inbox, the scheduler's lease and a fired schedule, queue
//! partitions spread over the shards, and no CROSSSLOT anywhere. Reminders, driven by a
//! test clock, run in-process against the cluster.
use std::{sync::Arc, time::Duration};

use e2e::{
    eventually,
    platform::{Options, TestApp},
    procs::{Cluster, bin_dir, book_lesson},
    redis_server::{RedisCluster, RedisSentinels, SENTINEL_MASTER},
};
use shared::clock::TestClock;

async fn ids(cluster: &Cluster) -> (i64, i64) {
    let instructor =
        sqlx::query_scalar("select id from users where email = 'instructor@example.com'")
            .fetch_one(&cluster.db.pool)
            .await
            .unwrap();
    let service = sqlx::query_scalar("select id from services limit 1")
        .fetch_one(&cluster.db.pool)
        .await
        .unwrap();
    (instructor, service)
}

/// Asserts that neither the platform's processes nor the Redis servers logged CROSSSLOT.
fn assert_no_crossslot(logs: &str, what: &str) {
    let hits: Vec<&str> = logs.lines().filter(|l| l.contains("CROSSSLOT")).collect();
    assert!(hits.is_empty(), "CROSSSLOT in the {what}: {hits:#?}");
}

/// Jobs due and not finished (reminders wait, pending, for their day).
async fn jobs_not_done(cluster: &Cluster) -> i64 {
    sqlx::query_scalar(
        "select count(*) from jobs
         where status in ('enqueued', 'running') or (status = 'pending' and run_at <= now())",
    )
    .fetch_one(&cluster.db.pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_bookings_reach_the_inbox_the_scheduler_leads_and_queues_spread_over_shards() {
    let redis = RedisCluster::start().await;
    let partitions: u32 = 8;
    let mut cluster = Cluster::new(
        redis.first_url(),
        &[
            ("REDIS_CLUSTER_NODES", redis.seeds().as_str()),
            ("QUEUE_PARTITIONS", &partitions.to_string()),
            ("SCHEDULER_TICK_MS", "200"),
            ("SCHEDULER_LEASE_MS", "3000"),
        ],
    )
    .await;
    let api = cluster.api().await;
    let _workers = [cluster.worker().await, cluster.worker().await];
    let scheduler = cluster.scheduler().await;
    let token = cluster.token("student@example.com").await;
    let (instructor, service) = ids(&cluster).await;
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{}", api.port);
    let mut bookings = Vec::new();
    for n in 0..12 {
        bookings.push(
            book_lesson(&http, &base, &token, instructor, service, n)
                .await
                .expect("booked"),
        );
    }
    eventually(
        Duration::from_secs(60),
        "every confirmation sent",
        || async { cluster.smtp.count() >= bookings.len() * 2 },
    )
    .await;

    // the scheduler holds its lease in the cluster, and a fired schedule runs
    let mut conn = shared::queue::connect(shared::queue::Target::Cluster(
        redis.seeds().split(',').map(String::from).collect(),
    ))
    .await
    .expect("cluster connection");
    let lease_key = format!("{}:scheduler:leader", cluster.prefix);
    eventually(
        Duration::from_secs(10),
        "the scheduler holds the lease",
        || {
            let (mut conn, key, name) = (conn.clone(), lease_key.clone(), scheduler.name.clone());
            async move {
                let holder: Option<String> = redis::cmd("GET")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await
                    .unwrap_or(None);
                holder.as_deref() == Some(name.as_str())
            }
        },
    )
    .await;
    let triggered = tokio::process::Command::new(bin_dir().join("scheduler"))
        .args(["trigger", "retention_sweep"])
        .envs(cluster.env.iter().cloned())
        .output()
        .await
        .expect("scheduler trigger");
    assert!(
        triggered.status.success(),
        "{}",
        String::from_utf8_lossy(&triggered.stderr)
    );
    eventually(Duration::from_secs(60), "every due job done", || async {
        jobs_not_done(&cluster).await == 0
    })
    .await;
    let swept: i64 = sqlx::query_scalar(
        "select count(*) from jobs where schedule = 'retention_sweep' and status = 'done'",
    )
    .fetch_one(&cluster.db.pool)
    .await
    .unwrap();
    assert!(swept >= 1, "the triggered sweep ran");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        cluster.smtp.count(),
        bookings.len() * 2,
        "exactly two emails per booking"
    );

    // the email queue's partitions live on more than one shard, each holding its consumers
    let mut owners = std::collections::BTreeSet::new();
    for p in 0..partitions {
        let name = shared::queue::partition_name(&cluster.prefix, "booking_email", p, partitions);
        let consumers = format!("{name}:consumers");
        let registered: u64 = redis::cmd("HLEN")
            .arg(&consumers)
            .query_async(&mut conn)
            .await
            .expect("HLEN");
        assert_eq!(registered, 2, "both workers consume {name}");
        owners.insert(redis.owner_of(&consumers).await);
        // every key of a partition is in the partition's slot
        assert_eq!(
            redis.owner_of(&format!("{name}:active")).await,
            redis.owner_of(&consumers).await
        );
    }
    assert!(
        owners.len() > 1,
        "the email queue's {partitions} partitions all landed on one shard"
    );
    assert_no_crossslot(&cluster.logs(), "process logs");
    assert_no_crossslot(&redis.logs(), "Redis logs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_sentinel_bookings_reach_the_inbox() {
    let redis = RedisSentinels::start().await;
    let mut cluster = Cluster::new(
        redis.primary.url(),
        &[
            ("REDIS_SENTINELS", redis.sentinels().as_str()),
            ("REDIS_SENTINEL_MASTER", SENTINEL_MASTER),
            ("QUEUE_PARTITIONS", "2"),
        ],
    )
    .await;
    let api = cluster.api().await;
    let _worker = cluster.worker().await;
    let _scheduler = cluster.scheduler().await;
    let token = cluster.token("student@example.com").await;
    let (instructor, service) = ids(&cluster).await;
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{}", api.port);
    for n in 0..4 {
        book_lesson(&http, &base, &token, instructor, service, n)
            .await
            .expect("booked");
    }
    eventually(
        Duration::from_secs(60),
        "every confirmation sent",
        || async { cluster.smtp.count() >= 8 },
    )
    .await;
    // the lease is in the master the sentinels name
    let mut master = shared::queue::connect(redis.primary.url().as_str())
        .await
        .unwrap();
    let holder: Option<String> = redis::cmd("GET")
        .arg(format!("{}:scheduler:leader", cluster.prefix))
        .query_async(&mut master)
        .await
        .unwrap();
    assert!(
        holder.is_some(),
        "the scheduler leads through the sentinels"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(cluster.smtp.count(), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_a_reminder_is_sent_once_at_24_hours() {
    let redis = RedisCluster::start().await;
    let clock = TestClock::at(chrono::Utc::now());
    let app = TestApp::start_with(Options {
        redis_url: redis.first_url(),
        clock: Arc::new(clock.clone()),
        extra_env: vec![
            ("REDIS_CLUSTER_NODES".into(), redis.seeds()),
            ("QUEUE_PARTITIONS".into(), "4".into()),
        ],
        ..Options::default()
    })
    .await;
    let token = app.student().await;
    let start = app.lesson_at(3, 10);
    let (status, _) = app.book(&token, start).await;
    assert_eq!(status, 201);
    eventually(Duration::from_secs(30), "confirmations", || async {
        app.smtp.count() == 2
    })
    .await;
    clock.set(start - chrono::Duration::hours(24) + chrono::Duration::seconds(1));
    eventually(Duration::from_secs(30), "both reminders", || async {
        app.smtp
            .messages()
            .iter()
            .filter(|m| m.subject().starts_with("Reminder:"))
            .count()
            == 2
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        app.smtp.count(),
        4,
        "two confirmations and two reminders, once each"
    );
}

/// What counts as a queue command in `INFO commandstats`: everything but the probes and
/// the bookkeeping of connections and the cluster itself.
fn is_queue_command(name: &str) -> bool {
    !matches!(
        name,
        "info"
            | "cluster|slots"
            | "cluster|info"
            | "cluster|nodes"
            | "cluster|shards"
            | "cluster|keyslot"
            | "cluster|myid"
            | "ping"
            | "hello"
            | "select"
            | "auth"
            | "readonly"
            | "echo"
    ) && !name.starts_with("client|")
        && !name.starts_with("command")
        && !name.starts_with("config|")
        && !name.starts_with("cluster|")
}

async fn queue_commands(port: u16) -> std::collections::BTreeMap<String, u64> {
    RedisCluster::commandstats(port)
        .await
        .into_iter()
        .filter(|(name, _)| is_queue_command(name))
        .collect()
}

/// Calls per command between two `queue_commands` readings, most called first.
fn delta(
    before: &std::collections::BTreeMap<String, u64>,
    after: &std::collections::BTreeMap<String, u64>,
) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = after
        .iter()
        .map(|(name, n)| (name.clone(), n - before.get(name).copied().unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .collect();
    out.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    out
}

/// The scale-out benchmark (`ops/bench/cluster-spread`, not part of the suite): 2 api, 3
/// workers and 2 schedulers on a 3-primary cluster, the email queue in 8 partitions, six
/// students booking with six instructors through both APIs. Every confirmation must
/// arrive exactly once, and each primary serve between 20% and 50% of the queue commands
/// (`INFO commandstats` deltas): on a 2-core machine throughput cannot add up, the spread
/// is what lets it on more machines.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a benchmark, run by ops/bench/cluster-spread"]
async fn cluster_spread() {
    let per_pair: usize = std::env::var("CLUSTER_SPREAD_BOOKINGS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let pairs = 6usize;
    let redis = RedisCluster::start().await;
    let mut cluster = Cluster::new(
        redis.first_url(),
        &[
            ("REDIS_CLUSTER_NODES", redis.seeds().as_str()),
            ("QUEUE_PARTITIONS", "8"),
            ("WORKER_CONCURRENCY", "16"),
            ("RECONCILE_AFTER_SECS", "60"),
        ],
    )
    .await;
    // the benchmarks' market (`e2e::procs::seed_lesson_market`), beside the demo seed the
    // cluster already has: its instructors and students, `<role><n>@bench.test`
    let days = (per_pair / 12 + 3) as i64;
    for sql in [
        "insert into users (email, full_name, role) select 'instructor' || n || '@bench.test', 'Instructor ' || n, 'instructor' from generate_series(1, $1) n",
        "insert into instructor_profiles (user_id, min_advance_booking_hours) select id, 2 from users where role = 'instructor' and email like '%@bench.test'",
        "insert into services (instructor_id, name, duration_minutes, price_cents) select u.id, 'Piano', 60, 6500 from users u where u.role = 'instructor' and u.email like '%@bench.test'",
        "insert into users (email, full_name, role) select 'student' || n || '@bench.test', 'Student ' || n, 'student' from generate_series(1, $1) n",
    ] {
        let query = sqlx::query(sql);
        let query = if sql.contains("$1") {
            query.bind(pairs as i64)
        } else {
            query
        };
        query
            .execute(&cluster.db.pool)
            .await
            .expect("seed the market");
    }
    sqlx::query(
        "insert into availability (instructor_id, date, start_time, end_time)
         select u.id, (now() at time zone 'America/New_York')::date + d, '08:00', '20:00'
         from users u, generate_series(0, $1) d where u.role = 'instructor' and u.email like '%@bench.test'",
    )
    .bind(days as i32)
    .execute(&cluster.db.pool)
    .await
    .expect("seed the availability");
    let apis = [cluster.api().await, cluster.api().await];
    let mut procs = Vec::new();
    for _ in 0..3 {
        procs.push(cluster.worker().await);
    }
    for _ in 0..2 {
        procs.push(cluster.scheduler().await);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let primaries = redis.primaries().await;
    let mut before = Vec::new();
    for port in &primaries {
        before.push(queue_commands(*port).await);
    }
    let started = std::time::Instant::now();
    let bases: Vec<String> = apis
        .iter()
        .map(|a| format!("http://127.0.0.1:{}", a.port))
        .collect();
    let mut tasks = Vec::new();
    for i in 1..=pairs {
        let token = cluster.token(&format!("student{i}@bench.test")).await;
        let instructor: i64 = sqlx::query_scalar("select id from users where email = $1")
            .bind(format!("instructor{i}@bench.test"))
            .fetch_one(&cluster.db.pool)
            .await
            .unwrap();
        let service: i64 = sqlx::query_scalar("select id from services where instructor_id = $1")
            .bind(instructor)
            .fetch_one(&cluster.db.pool)
            .await
            .unwrap();
        let bases = bases.clone();
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut ids = Vec::new();
            for n in 0..per_pair {
                let base = &bases[n % bases.len()];
                ids.push(
                    book_lesson(&http, base, &token, instructor, service, n)
                        .await
                        .expect("booked"),
                );
            }
            ids
        }));
    }
    let mut bookings = Vec::new();
    for task in tasks {
        bookings.extend(task.await.unwrap());
    }
    let booked_in = started.elapsed();
    let expected = bookings.len() * 2;
    eventually(
        Duration::from_secs(300),
        "every confirmation sent",
        || async { cluster.smtp.count() >= expected },
    )
    .await;
    let delivered_in = started.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut per_command = Vec::new();
    for (port, before) in primaries.iter().zip(&before) {
        per_command.push(delta(before, &queue_commands(*port).await));
    }
    let deltas: Vec<u64> = per_command
        .iter()
        .map(|d| d.iter().map(|(_, n)| n).sum())
        .collect();
    let messages = cluster.smtp.messages();
    let distinct: std::collections::HashSet<String> =
        messages.iter().map(|m| m.message_id()).collect();
    let total: u64 = deltas.iter().sum();
    let mut report = format!(
        "cluster-spread: 2 api, 3 workers, 2 schedulers; 3 primaries + 3 replicas; QUEUE_PARTITIONS=8\n\
         bookings={} emails_expected={expected} emails_received={} distinct={} \
         booked_in_s={:.1} delivered_in_s={:.1}\n",
        bookings.len(),
        messages.len(),
        distinct.len(),
        booked_in.as_secs_f64(),
        delivered_in.as_secs_f64(),
    );
    for p in 0..8 {
        let name = shared::queue::partition_name(&cluster.prefix, "booking_email", p, 8);
        report.push_str(&format!(
            "partition {p} {name} slot={} primary=127.0.0.1:{}\n",
            shared::queue::key_slot(&name),
            redis.owner_of(&name).await
        ));
    }
    for ((port, delta), commands) in primaries.iter().zip(&deltas).zip(&per_command) {
        let top: Vec<String> = commands
            .iter()
            .take(8)
            .map(|(name, n)| format!("{name}={n}"))
            .collect();
        report.push_str(&format!(
            "primary 127.0.0.1:{port} queue_commands={delta} share={:.1}% ({})\n",
            100.0 * *delta as f64 / total.max(1) as f64,
            top.join(" ")
        ));
    }
    println!("{report}");
    if let Ok(path) = std::env::var("CLUSTER_SPREAD_OUT") {
        std::fs::write(path, &report).expect("write the report");
    }
    assert_eq!(messages.len(), expected, "every confirmation exactly once");
    assert_eq!(distinct.len(), expected, "no confirmation twice");
    for delta in &deltas {
        let share = 100.0 * *delta as f64 / total.max(1) as f64;
        assert!(
            (20.0..=50.0).contains(&share),
            "a primary served {share:.1}% of the queue commands"
        );
    }
    assert_no_crossslot(&cluster.logs(), "process logs");
}

/// A rolling deploy onto the hash-tagged key names: what the previous release pushed under
/// the untagged names (`prefix:queue:...`) is read by nobody, and the reconciler pushes its
/// records again from Postgres, once each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_left_under_the_untagged_key_names_are_pushed_again_from_postgres() {
    let mut app = TestApp::without_worker().await;
    let token = app.student().await;
    let (status, _) = app.book(&token, app.lesson_at(3, 10)).await;
    assert_eq!(status, 201);
    // the previous release's relay: the confirmations claimed and pushed the old way
    let jobs: Vec<(i64, serde_json::Value)> = sqlx::query_as(
        "update jobs set status = 'enqueued', pushes = 1, enqueued_at = now()
         where status = 'pending' and payload->>'kind' = 'confirmation'
         returning id, payload",
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(jobs.len(), 2);
    let old = apalis_redis::Config::default().queue(format!("{}:booking_email", app.prefix));
    let mut redis = shared::queue::connect(&app.config.redis_url).await.unwrap();
    let tasks: Vec<shared::queue::Outgoing> = jobs
        .iter()
        .map(|(id, args)| shared::queue::Outgoing {
            task_id: format!("{id}.1"),
            payload: serde_json::to_vec(&shared::jobs::Envelope {
                job_id: *id,
                args: args.clone(),
            })
            .unwrap(),
        })
        .collect();
    shared::queue::push(&mut redis, &old, &tasks).await.unwrap();

    app.start_worker().await;
    eventually(Duration::from_secs(40), "both confirmations", || async {
        app.smtp.count() >= 2
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(app.smtp.count(), 2, "once each");
    let left: u64 = redis::cmd("LLEN")
        .arg(old.active_jobs_list())
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(left, 2, "the new release never reads the old names");
    let pushes: Vec<i32> = sqlx::query_scalar(
        "select pushes from jobs where payload->>'kind' = 'confirmation' order by id",
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(pushes, vec![2, 2], "pushed again by the reconciler");
}
