//! The platform at rest: a worker with nothing to do sends Redis its heartbeat and nothing
//! else, and still starts a task scheduled in Redis within a second of its time.
use std::time::Duration;

use e2e::{
    eventually,
    platform::{Options, TestApp},
    redis_server::RedisServer,
};

/// INFO commandstats of a private Redis: command → calls.
async fn commandstats(conn: &mut shared::queue::ConnectionManager) -> Vec<(String, u64)> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .unwrap();
    info.lines()
        .filter_map(|line| {
            let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            Some((name.to_string(), calls))
        })
        .filter(|(name, _)| name != "info" && name != "config|resetstat")
        .collect()
}

#[tokio::test]
async fn an_idle_worker_sends_redis_its_heartbeat_and_nothing_else() {
    let redis = RedisServer::start().await;
    let _app = TestApp::start_with(Options {
        redis_url: redis.url(),
        ..Options::default()
    })
    .await;
    let mut conn = shared::queue::connect(&redis.url()).await.unwrap();
    // start-up reads every queue once (earliest scheduled task, cleanup): let it pass
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut conn)
        .await
        .unwrap();

    // HEARTBEAT_SECS=1 in tests: about four beats and at most as many looks for the dead
    tokio::time::sleep(Duration::from_secs(4)).await;
    let stats = commandstats(&mut conn).await;
    let total: u64 = stats.iter().map(|(_, n)| n).sum();
    assert!(
        stats
            .iter()
            .all(|(name, _)| name == "zadd" || name == "zrange"),
        "only heartbeats (ZADD) and looks for dead processes (ZRANGE): {stats:?}"
    );
    assert!(total <= 10, "{total} commands in 4 s: {stats:?}");
}

#[tokio::test]
async fn a_task_scheduled_in_redis_starts_within_a_second_of_its_time() {
    let mut app = TestApp::without_worker().await;
    let token = app.student().await;
    let (status, _) = app.book(&token, app.lesson_at(3, 11)).await;
    assert_eq!(status, 201);
    // the confirmations, handed to Redis by hand for later (as a backend retry is)
    let rows: Vec<(i64, serde_json::Value)> = sqlx::query_as(
        "update jobs set status = 'enqueued', pushes = 1, enqueued_at = now()
         where payload->>'kind' = 'confirmation' returning id, payload",
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 2);
    let mut conn = shared::queue::connect(&app.config.redis_url).await.unwrap();
    let config = shared::queue::queue_config(&app.prefix, "booking_email", Duration::from_secs(1));
    let due = chrono::Utc::now().timestamp() + 3;
    for (id, args) in &rows {
        let task = format!("{id}.1");
        let bytes = serde_json::to_vec(&serde_json::json!({"job_id": id, "args": args})).unwrap();
        let _: () = redis::pipe()
            .atomic()
            .hset_multiple(
                format!("{}:{task}", config.job_meta_hash()),
                &[
                    ("attempts", "1"),
                    ("max_attempts", "25"),
                    ("status", "Failed"),
                ],
            )
            .ignore()
            .hset(config.job_data_hash(), &task, bytes)
            .ignore()
            .zadd(config.scheduled_jobs_set(), &task, due)
            .ignore()
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    app.start_worker().await;

    eventually(
        Duration::from_secs(10),
        "both confirmations done",
        || async { app.jobs_in("done").await == 2 },
    )
    .await;
    let started: Vec<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("select started_at from jobs where payload->>'kind' = 'confirmation'")
            .fetch_all(&app.db.pool)
            .await
            .unwrap();
    let due = chrono::DateTime::from_timestamp(due, 0).unwrap();
    for at in started {
        let after = at - due;
        assert!(
            after >= chrono::Duration::zero() && after < chrono::Duration::seconds(1),
            "due at {due}, started at {at}"
        );
    }
}
