//! Fault scenarios on real processes.
use std::time::Duration;

use e2e::{
    eventually,
    pg_server::PgServer,
    procs::{Cluster, book_lesson, record_figure, record_summary},
    redis_server::RedisServer,
};
use shared::testing::{self, TestDatabase};

use crate::tally;

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

/// Books `count` lessons through `bases` in turn, one every `every`.
pub(crate) fn stream(
    cluster: &Cluster,
    bases: Vec<String>,
    token: String,
    count: usize,
    every: Duration,
) -> impl std::future::Future<Output = Vec<i64>> + use<> {
    let pool = cluster.db.pool.clone();
    async move {
        let instructor: i64 =
            sqlx::query_scalar("select id from users where email = 'instructor@example.com'")
                .fetch_one(&pool)
                .await
                .unwrap();
        let service: i64 = sqlx::query_scalar("select id from services limit 1")
            .fetch_one(&pool)
            .await
            .unwrap();
        let http = reqwest::Client::new();
        let mut booked = Vec::new();
        for n in 0..count {
            let base = &bases[n % bases.len()];
            if let Some(id) = book_lesson(&http, base, &token, instructor, service, n).await {
                booked.push(id);
            }
            tokio::time::sleep(every).await;
        }
        booked
    }
}

pub(crate) fn base(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

pub(crate) async fn wait_for_all(cluster: &Cluster, bookings: &[i64], timeout: Duration) {
    eventually(timeout, "every confirmation delivered", || async {
        tally(&cluster.smtp, bookings).1 == 0
    })
    .await;
    // anything doubled would arrive shortly after
    tokio::time::sleep(Duration::from_secs(2)).await;
}

/// A slow SMTP server (its verdict on the final dot takes a second) and workers SIGKILLed
/// every 0.7 s for 12 s while bookings come in, with the claim timeout at its production
/// default (300 s): a claim whose worker died is taken over at once, so the last email
/// arrives within seconds of the last kill, not five minutes late.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_killed_mid_send_are_taken_over_at_once() {
    let mut cluster =
        Cluster::new(testing::redis_url(), &[("EMAIL_CLAIM_TIMEOUT_SECS", "300")]).await;
    cluster.smtp.set_delay(Duration::from_secs(1));
    let api = cluster.api().await;
    let mut workers = vec![cluster.worker().await, cluster.worker().await];
    let token = cluster.token("student@example.com").await;
    let booking = tokio::spawn(stream(
        &cluster,
        vec![base(api.port)],
        token,
        20,
        Duration::from_millis(600),
    ));

    let started = tokio::time::Instant::now();
    let mut kills = 0;
    while started.elapsed() < Duration::from_secs(12) {
        tokio::time::sleep(Duration::from_millis(700)).await;
        workers.remove(0).kill().await;
        kills += 1;
        workers.push(cluster.worker().await);
    }
    let last_kill = std::time::Instant::now();
    let bookings = booking.await.unwrap();
    assert_eq!(bookings.len(), 20);
    wait_for_all(&cluster, &bookings, Duration::from_secs(120)).await;

    let (out, lost, extra) = tally(&cluster.smtp, &bookings);
    let last_arrival = cluster
        .smtp
        .messages()
        .iter()
        .map(|m| m.received_at)
        .max()
        .expect("emails arrived");
    let after = last_arrival
        .saturating_duration_since(last_kill)
        .as_secs_f64();
    record_summary(
        "worker_sigkill_slow_smtp",
        kills,
        bookings.len() * 2,
        out,
        lost,
        extra,
    );
    record_figure(
        "worker_sigkill_slow_smtp",
        "last_email_after_last_kill_s",
        format!("{after:.1}"),
    );
    assert_eq!(lost, 0);
    // a repeat is a message the server had accepted when its sender died: at most the sends
    // in flight at each kill
    assert!(
        extra <= kills * 8,
        "{extra} repeated transmissions for {kills} kills"
    );
    assert!(
        after <= 30.0,
        "the last email came {after:.1} s after the last kill"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_killed_mid_jobs_lose_nothing() {
    let mut cluster = Cluster::new(testing::redis_url(), &[]).await;
    cluster.smtp.set_delay(Duration::from_millis(40));
    let api = cluster.api().await;
    let mut workers = vec![cluster.worker().await, cluster.worker().await];
    let token = cluster.token("student@example.com").await;
    let booking = tokio::spawn(stream(
        &cluster,
        vec![base(api.port)],
        token,
        36,
        Duration::from_millis(80),
    ));

    let mut kills = 0;
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        workers.remove(0).kill().await;
        kills += 1;
        workers.push(cluster.worker().await);
    }
    let bookings = booking.await.unwrap();
    assert_eq!(bookings.len(), 36);
    wait_for_all(&cluster, &bookings, Duration::from_secs(90)).await;
    // claims abandoned by a killed worker are taken over after EMAIL_CLAIM_TIMEOUT_SECS
    eventually(
        Duration::from_secs(30),
        "every email recorded as sent",
        || async {
            let sent: i64 = sqlx::query_scalar(
                "select count(*) from email_ledger where status = 'sent' and kind = 'confirmation'",
            )
            .fetch_one(&cluster.db.pool)
            .await
            .unwrap();
            sent as usize == bookings.len() * 2
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let (out, lost, extra) = tally(&cluster.smtp, &bookings);
    record_summary(
        "worker_sigkill",
        kills,
        bookings.len() * 2,
        out,
        lost,
        extra,
    );
    assert_eq!(lost, 0);
    assert_eq!(out, bookings.len() * 2);
    // The one window where a kill can repeat an email: the SMTP server has the whole message
    // but the worker died before recording it. The retry resends it with the same
    // Message-ID (receivers drop the copy); at most the sends in flight at each kill.
    assert!(
        extra <= kills * 8,
        "{extra} repeated transmissions for {kills} kills"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_worker_drains_in_flight_jobs_within_the_drain_time() {
    let mut cluster = Cluster::new(testing::redis_url(), &[("DRAIN_SECS", "8")]).await;
    cluster.smtp.set_delay(Duration::from_millis(1500));
    let api = cluster.api().await;
    let worker = cluster.worker().await;
    let token = cluster.token("student@example.com").await;
    let bookings = stream(
        &cluster,
        vec![base(api.port)],
        token,
        6,
        Duration::from_millis(10),
    )
    .await;
    eventually(Duration::from_secs(10), "sends in flight", || async {
        let running: i64 = sqlx::query_scalar(
            "select count(*) from jobs where status = 'enqueued' and started_at is not null",
        )
        .fetch_one(&cluster.db.pool)
        .await
        .unwrap();
        running > 0
    })
    .await;

    let exit = worker.terminate(Duration::from_secs(15)).await;

    let exit = exit.expect("the worker exits after SIGTERM");
    assert!(
        exit <= Duration::from_secs(10),
        "exited after {exit:?}, drain time 8 s"
    );
    let stuck: i64 = sqlx::query_scalar(
        "select count(*) from jobs where status = 'enqueued' and started_at is not null",
    )
    .fetch_one(&cluster.db.pool)
    .await
    .unwrap();
    assert_eq!(stuck, 0, "in-flight jobs finished or were handed back");
    cluster.smtp.set_delay(Duration::ZERO);
    let _worker = cluster.worker().await;
    wait_for_all(&cluster, &bookings, Duration::from_secs(60)).await;
    let (out, lost, extra) = tally(&cluster.smtp, &bookings);
    record_summary("worker_sigterm", 1, bookings.len() * 2, out, lost, extra);
    assert_eq!((lost, extra), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_with_its_data_gone_loses_nothing() {
    let mut redis = RedisServer::start().await;
    let mut cluster = Cluster::new(redis.url(), &[]).await;
    cluster.smtp.set_delay(Duration::from_millis(30));
    let api = cluster.api().await;
    let _workers = [cluster.worker().await, cluster.worker().await];
    let token = cluster.token("student@example.com").await;
    let booking = tokio::spawn(stream(
        &cluster,
        vec![base(api.port)],
        token,
        24,
        Duration::from_millis(100),
    ));

    tokio::time::sleep(Duration::from_millis(1000)).await;
    redis.stop().await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    redis.restart().await;
    let bookings = booking.await.unwrap();
    assert_eq!(
        bookings.len(),
        24,
        "the API takes bookings while Redis is away"
    );
    wait_for_all(&cluster, &bookings, Duration::from_secs(90)).await;

    let (out, lost, extra) = tally(&cluster.smtp, &bookings);
    record_summary("redis_restart", 1, bookings.len() * 2, out, lost, extra);
    assert_eq!((lost, extra), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_means_503s_then_recovery_and_nothing_lost() {
    let pg = PgServer::start().await;
    let db = TestDatabase::create_on(&pg.url("postgres")).await;
    let mut cluster = Cluster::with_database(db, testing::redis_url(), &[]).await;
    let api = cluster.api().await;
    let _worker = cluster.worker().await;
    let token = cluster.token("student@example.com").await;
    let (instructor, service) = ids(&cluster).await;
    let http = reqwest::Client::new();
    let mut bookings = Vec::new();
    for n in 0..4 {
        bookings.push(
            book_lesson(&http, &base(api.port), &token, instructor, service, n)
                .await
                .unwrap(),
        );
    }

    pg.stop();
    let response = http
        .get(format!("{}/api/v1/instructors", base(api.port)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 503);
    assert!(response.headers().contains_key("retry-after"));
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], "unavailable", "{body}");
    let ready = http
        .get(format!("{}/ready", base(api.port)))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status().as_u16(), 503);
    pg.restart().await;

    // the API recovers by itself; bookings made now are mailed too
    for n in 4..8 {
        bookings.push(
            book_lesson(&http, &base(api.port), &token, instructor, service, n)
                .await
                .expect("booking after recovery"),
        );
    }
    wait_for_all(&cluster, &bookings, Duration::from_secs(60)).await;
    let (out, lost, extra) = tally(&cluster.smtp, &bookings);
    record_summary("postgres_restart", 1, bookings.len() * 2, out, lost, extra);
    assert_eq!((lost, extra), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_stopped_consuming_is_reported() {
    let mut cluster = Cluster::new(testing::redis_url(), &[("HEARTBEAT_SECS", "2")]).await;
    let api = cluster.api().await;
    let stalled = cluster.worker().await;
    let _healthy = cluster.worker().await;
    let admin = cluster.token("admin@example.com").await;
    let http = reqwest::Client::new();
    // per queue: (registered worker processes, stale ones)
    let workers = || async {
        let queues: serde_json::Value = http
            .get(format!("{}/api/v1/admin/queues", base(api.port)))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        queues
            .as_array()
            .unwrap()
            .iter()
            .map(|q| {
                let redis = &q["redis"];
                let stale = redis["stale_workers"].as_array().map(Vec::len);
                (redis["workers"].as_u64().unwrap_or(0), stale.unwrap_or(0))
            })
            .collect::<Vec<_>>()
    };
    let stale = || async { workers().await.iter().map(|(_, s)| s).sum::<usize>() };
    // both registered before one is stopped (a process registers once started)
    eventually(
        Duration::from_secs(20),
        "both workers registered",
        || async { workers().await.iter().all(|(n, _)| *n == 2) },
    )
    .await;
    assert_eq!(stale().await, 0);

    stalled.signal("STOP").await;
    eventually(
        Duration::from_secs(20),
        "the stalled worker reported",
        || async { stale().await > 0 },
    )
    .await;
    stalled.signal("CONT").await;
    record_summary("worker_stalled", 1, 0, 0, 0, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaled_out_processes_share_the_load_and_do_everything_once() {
    let mut cluster = Cluster::new(
        testing::redis_url(),
        &[("SCHEDULE_RETENTION_SWEEP", "* * * * * *")],
    )
    .await;
    cluster.smtp.set_delay(Duration::from_millis(20));
    let apis = [cluster.api().await, cluster.api().await];
    let workers = [
        cluster.worker().await,
        cluster.worker().await,
        cluster.worker().await,
    ];
    let _schedulers = [cluster.scheduler().await, cluster.scheduler().await];
    let token = cluster.token("student@example.com").await;

    let bookings = stream(
        &cluster,
        apis.iter().map(|a| base(a.port)).collect(),
        token,
        48,
        Duration::from_millis(40),
    )
    .await;
    assert_eq!(bookings.len(), 48);
    wait_for_all(&cluster, &bookings, Duration::from_secs(60)).await;

    let (out, lost, extra) = tally(&cluster.smtp, &bookings);
    record_summary("scale_out", 0, bookings.len() * 2, out, lost, extra);
    assert_eq!((lost, extra), (0, 0));
    let http = reqwest::Client::new();
    for worker in &workers {
        let metrics = http
            .get(format!("{}/metrics", base(worker.port)))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let handled: f64 = metrics
            .lines()
            .filter(|l| l.starts_with("jobs_succeeded_total{") && l.contains("booking_email"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        assert!(handled > 0.0, "{} handled no jobs:\n{metrics}", worker.name);
    }
    // three relays, and no record pushed to Redis twice
    // (a retry after a recorded failure is a deliberate new push, with its error kept)
    let repushed: Vec<(i64, i32, i32, String, Option<String>)> = sqlx::query_as(
        "select id, pushes, attempts, status, last_error from jobs j
         where pushes > 1 + (select count(*) from job_errors e where e.job_id = j.id)",
    )
    .fetch_all(&cluster.db.pool)
    .await
    .unwrap();
    assert!(
        repushed.is_empty(),
        "records pushed more than once by concurrent relays: {repushed:?}\n{}",
        cluster
            .logs()
            .lines()
            .filter(|l| l.contains("re-enqueued") || l.contains("WARN"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // two schedulers, each slot once
    let (fires, slots): (i64, i64) = sqlx::query_as(
        "select count(*), count(distinct (schedule, slot_local)) from schedule_fires",
    )
    .fetch_one(&cluster.db.pool)
    .await
    .unwrap();
    assert_eq!(fires, slots);

    // nothing personal or secret in any process's log
    let logs = cluster.logs();
    assert!(!logs.is_empty());
    for needle in [
        "@example.com",
        "dev-only-secret-change-me-in-production",
        "Sam Student",
        "Ida Instructor",
    ] {
        assert!(!logs.contains(needle), "logs contain {needle}");
    }
    let ip = logs
        .lines()
        .find(|l| l.contains("127.0.0.1") || l.contains("::1"));
    assert!(ip.is_none(), "a log line carries an IP: {ip:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_scheduler_processes_fire_every_slot_once_and_survive_a_killed_leader() {
    let mut cluster = Cluster::new(
        testing::redis_url(),
        &[
            ("SCHEDULE_SEARCH_ROLLUP", "* * * * * *"),
            ("SCHEDULER_TICK_MS", "250"),
            ("SCHEDULER_LEASE_MS", "1500"),
        ],
    )
    .await;
    let mut schedulers = vec![cluster.scheduler().await, cluster.scheduler().await];
    let fires = |pool: sqlx::PgPool| async move {
        sqlx::query_scalar::<_, chrono::DateTime<chrono::Utc>>(
            "select slot_at from schedule_fires where schedule = 'search_rollup' order by slot_at",
        )
        .fetch_all(&pool)
        .await
        .unwrap()
    };
    eventually(Duration::from_secs(20), "a few slots fired", || async {
        fires(cluster.db.pool.clone()).await.len() >= 3
    })
    .await;

    let mut redis = shared::queue::connect(&cluster.redis_url).await.unwrap();
    let leader: String = redis::cmd("GET")
        .arg(format!("{}:scheduler:leader", cluster.prefix))
        .query_async(&mut redis)
        .await
        .unwrap();
    let index = schedulers
        .iter()
        .position(|s| leader.contains(&s.name))
        .expect("the leader is one of ours");
    schedulers.remove(index).kill().await;
    let killed_at = chrono::Utc::now();
    eventually(Duration::from_secs(20), "the survivor fires on", || async {
        fires(cluster.db.pool.clone())
            .await
            .last()
            .is_some_and(|last| *last > killed_at + chrono::Duration::seconds(3))
    })
    .await;

    let slots = fires(cluster.db.pool.clone()).await;
    for pair in slots.windows(2) {
        assert_eq!(
            pair[1] - pair[0],
            chrono::Duration::seconds(1),
            "a slot lost or doubled: {pair:?}"
        );
    }
    let jobs: i64 =
        sqlx::query_scalar("select count(*) from jobs where schedule = 'search_rollup'")
            .fetch_one(&cluster.db.pool)
            .await
            .unwrap();
    assert_eq!(jobs as usize, slots.len(), "one job per slot");
    record_summary(
        "scheduler_leader_killed",
        1,
        slots.len(),
        jobs as usize,
        0,
        0,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_beyond_the_lua_unpack_limit_drains() {
    // apalis-redis promotes every due task in one Lua unpack, which fails past ~8,000: the
    // worker's chunked promoter must get there first
    let cluster = Cluster::new(testing::redis_url(), &[("WORKER_CONCURRENCY", "32")]).await;
    let count: i64 = 9_000;
    sqlx::query(
        "insert into jobs (queue, payload, dedupe_key)
         select 'booking_email', jsonb_build_object('booking_id', -n, 'kind', 'confirmation', 'party', 'student', 'booking_version', 1),
                'backlog:' || n
         from generate_series(1, $1) n",
    )
    .bind(count)
    .execute(&cluster.db.pool)
    .await
    .unwrap();
    let mut redis = shared::queue::connect(&cluster.redis_url).await.unwrap();
    let relayed = worker::relay::relay_due(
        &cluster.db.pool,
        &mut redis,
        &cluster.prefix,
        Duration::from_secs(1),
        1,
        &worker::jobs::registry(),
        chrono::Utc::now(),
    )
    .await
    .unwrap();
    assert_eq!(relayed as i64, count);

    let mut cluster = cluster;
    let _worker = cluster.worker().await;
    eventually(
        Duration::from_secs(240),
        "the whole backlog handled",
        || async {
            let open: i64 = sqlx::query_scalar(
                "select count(*) from jobs where status in ('enqueued', 'running', 'pending')",
            )
            .fetch_one(&cluster.db.pool)
            .await
            .unwrap();
            open == 0
        },
    )
    .await;
    // every one of them names a booking that does not exist: a permanent failure, recorded
    let dead: i64 = sqlx::query_scalar("select count(*) from jobs where status = 'dead'")
        .fetch_one(&cluster.db.pool)
        .await
        .unwrap();
    assert_eq!(dead, count);
    record_summary(
        "redis_backlog_9000",
        0,
        count as usize,
        dead as usize,
        (count - dead) as usize,
        0,
    );
}

/// The id of the Redis connection named `name` (a worker process's wake-up connection is
/// named after its registration, `<prefix>:process:<id>`), if one is connected.
async fn connection_named(
    redis: &mut shared::queue::ConnectionManager,
    name: &str,
) -> Option<String> {
    let clients: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(redis)
        .await
        .unwrap();
    clients.lines().find_map(|line| {
        let field = |key: &str| {
            line.split(' ')
                .find_map(|f| f.strip_prefix(key))
                .map(str::to_string)
        };
        field("name=")
            .filter(|n| n.starts_with(name))
            .and_then(|_| field("id="))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wake_up_missed_while_the_connection_was_dropped_is_made_up_for() {
    // the reconciler must not re-push what this test pushes by hand: the only way to the
    // jobs is the worker noticing the push it was not told about
    let mut cluster = Cluster::new(testing::redis_url(), &[("RECONCILE_AFTER_SECS", "600")]).await;
    let api = cluster.api().await;
    let token = cluster.token("student@example.com").await;
    let (instructor, service) = ids(&cluster).await;
    let http = reqwest::Client::new();
    let booking = book_lesson(&http, &base(api.port), &token, instructor, service, 0)
        .await
        .expect("booked");
    // its confirmations, taken out of the relay's hands before any worker runs
    let jobs: Vec<(i64, serde_json::Value)> = sqlx::query_as(
        "update jobs set status = 'enqueued', pushes = 1, enqueued_at = now()
         where status = 'pending' and payload->>'kind' = 'confirmation'
         returning id, payload",
    )
    .fetch_all(&cluster.db.pool)
    .await
    .unwrap();
    assert_eq!(jobs.len(), 2, "two confirmations");
    let _worker = cluster.worker().await;
    let mut redis = shared::queue::connect(&cluster.redis_url).await.unwrap();
    let name = shared::queue::process_key(&cluster.prefix, "");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let wake = loop {
        if let Some(id) = connection_named(&mut redis, &name).await {
            break id;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no wake-up connection named {name}*"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // give its consumers time to fetch once and go to sleep on the connection
    tokio::time::sleep(Duration::from_millis(500)).await;

    // the connection killed and the jobs pushed in one step: Redis writes nothing more to a
    // connection it is closing, so the push's wake-up is lost for sure
    let config =
        shared::queue::queue_config(&cluster.prefix, "booking_email", Duration::from_secs(1));
    let mut pipe = redis::pipe();
    pipe.atomic()
        .cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(&wake)
        .ignore();
    for (id, args) in &jobs {
        let task = format!("{id}.1");
        let envelope = serde_json::to_vec(&shared::jobs::Envelope { job_id: *id, args }).unwrap();
        pipe.hset_multiple(
            format!("{}:{task}", config.job_meta_hash()),
            &[
                ("attempts", "0"),
                ("max_attempts", "25"),
                ("status", "Pending"),
            ],
        )
        .ignore()
        .hset(config.job_data_hash(), &task, envelope)
        .ignore()
        .rpush(config.active_jobs_list(), &task)
        .ignore();
    }
    let pushed = std::time::Instant::now();
    let _: () = pipe.query_async(&mut redis).await.unwrap();

    eventually(
        Duration::from_secs(10),
        "both confirmations delivered",
        || async { tally(&cluster.smtp, &[booking]).1 == 0 },
    )
    .await;
    let took = pushed.elapsed();
    let again = connection_named(&mut redis, &name).await;
    assert!(
        again.is_some_and(|id| id != wake),
        "a new wake-up connection"
    );
    let (out, lost, extra) = tally(&cluster.smtp, &[booking]);
    record_summary("wake_connection_killed", 1, 2, out, lost, extra);
    assert_eq!((lost, extra), (0, 0));
    // found at the reconnection, well inside the heartbeat-bound safety net
    assert!(took < Duration::from_secs(5), "found after {took:?}");
}
