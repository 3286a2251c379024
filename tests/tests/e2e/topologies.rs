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
    eventually(Duration::from_secs(60), "every confirmation sent", || async {
        cluster.smtp.count() >= bookings.len() * 2
    })
    .await;

    // the scheduler holds its lease in the cluster, and a fired schedule runs
    let mut conn = shared::queue::connect(shared::queue::Target::Cluster(
        redis.seeds().split(',').map(String::from).collect(),
    ))
    .await
    .expect("cluster connection");
    let lease_key = format!("{}:scheduler:leader", cluster.prefix);
    eventually(Duration::from_secs(10), "the scheduler holds the lease", || {
        let (mut conn, key, name) = (conn.clone(), lease_key.clone(), scheduler.name.clone());
        async move {
            let holder: Option<String> = redis::cmd("GET")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .unwrap_or(None);
            holder.as_deref() == Some(name.as_str())
        }
    })
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
    let swept: i64 =
        sqlx::query_scalar("select count(*) from jobs where schedule = 'retention_sweep' and status = 'done'")
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
    eventually(Duration::from_secs(60), "every confirmation sent", || async {
        cluster.smtp.count() >= 8
    })
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
    assert!(holder.is_some(), "the scheduler leads through the sentinels");
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
    assert_eq!(app.smtp.count(), 4, "two confirmations and two reminders, once each");
}
