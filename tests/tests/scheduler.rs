//! The scheduler against real Postgres and Redis: each slot enqueued once by two replicas,
//! a dead leader replaced without losing a slot, and missed nightly slots caught up once each
//! after downtime. Each test owns its database and its Redis prefix.
use std::{future::Future, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use scheduler::{Lease, Scheduler, Settings, ledger};
use shared::{
    clock::{Clock, SharedClock, SystemClock, TestClock},
    jobs::RetentionSweep,
    queue,
    schedule::{self, CatchUp, Schedule},
    testing::{self, TestDatabase},
};
use sqlx::PgPool;
use tokio::{sync::oneshot, task::JoinHandle};

fn settings(instance: &str) -> Settings {
    Settings::from_vars(
        [
            ("SCHEDULER_TICK_MS", "100"),
            ("SCHEDULER_LEASE_MS", "1000"),
            ("SCHEDULER_HEALTH_MS", "60000"),
            ("SCHEDULER_INSTANCE", instance),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string())),
    )
    .expect("valid settings")
}

/// A scheduler replica running as a task, with its own pool and Redis connection, as a
/// separate process would have.
struct Replica {
    name: String,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Replica {
    async fn start(
        db: &TestDatabase,
        prefix: &str,
        name: &str,
        schedules: Vec<Schedule>,
        clock: SharedClock,
    ) -> Replica {
        let pool = shared::db::connect(&db.url, 3).await.expect("connect");
        let redis = queue::connect(&testing::redis_url()).await.expect("redis");
        let settings = settings(name);
        let lease = Lease::new(redis, prefix, name, settings.lease);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(
            Scheduler::new(pool, lease, schedules, clock, &settings).run(async move {
                let _ = stopped.await;
            }),
        );
        Replica {
            name: name.to_string(),
            stop: Some(stop),
            task,
        }
    }

    /// A clean stop: the tick in progress finishes and the lease is given up.
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = self.task.await;
    }

    /// A crash: the task dies wherever it is and its lease is left to expire.
    async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// Polls `check` until it returns `Some`, failing after `timeout`.
async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn fires(pool: &PgPool, schedule: &str) -> Vec<(DateTime<Utc>, String, Option<i64>)> {
    sqlx::query_as(
        "select slot_at, fired_by, job_id from schedule_fires where schedule = $1 order by slot_at",
    )
    .bind(schedule)
    .fetch_all(pool)
    .await
    .expect("read ledger")
}

async fn jobs_of(pool: &PgPool, schedule: &str) -> Vec<String> {
    sqlx::query_scalar("select dedupe_key from jobs where schedule = $1 order by run_at")
        .bind(schedule)
        .fetch_all(pool)
        .await
        .expect("read jobs")
}

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("rfc3339")
        .with_timezone(&Utc)
}

#[tokio::test]
async fn two_replicas_fire_each_slot_once_and_a_dead_leader_loses_no_slot() {
    // arrange: one database, one Redis prefix, two replicas of an every-second schedule
    shared::telemetry::init_tracing("text");
    let db = TestDatabase::create().await;
    let prefix = testing::unique_name("sched");
    let every_second = || {
        vec![
            Schedule::new(
                "every_second",
                "* * * * * *",
                "UTC",
                CatchUp::All,
                chrono::Duration::hours(1),
                chrono::Duration::hours(1),
            )
            .expect("valid")
            .enqueues::<RetentionSweep>(),
        ]
    };
    let a = Replica::start(
        &db,
        &prefix,
        "replica-a",
        every_second(),
        Arc::new(SystemClock),
    )
    .await;
    let b = Replica::start(
        &db,
        &prefix,
        "replica-b",
        every_second(),
        Arc::new(SystemClock),
    )
    .await;

    // act 1: several ticks with both running
    eventually("three fires", Duration::from_secs(15), || async {
        (fires(&db.pool, "every_second").await.len() >= 3).then_some(())
    })
    .await;
    let redis = queue::connect(&testing::redis_url()).await.expect("redis");
    let leader: String = sqlx::query_scalar("select holder from scheduler_leader")
        .fetch_one(&db.pool)
        .await
        .expect("a leader is recorded");
    let mut probe = Lease::new(redis.clone(), &prefix, "probe", Duration::from_secs(1));
    assert_eq!(
        probe.current().await.expect("redis").as_deref(),
        Some(leader.as_str())
    );

    // act 2: kill the leader; the other must take over within the lease time
    let (dead, survivor) = if leader == a.name { (a, b) } else { (b, a) };
    let killed_at = Utc::now();
    dead.kill().await;
    let survivor_name = survivor.name.clone();
    eventually(
        "the survivor to fire two seconds past the kill",
        Duration::from_secs(15),
        || async {
            let f = fires(&db.pool, "every_second").await;
            f.iter()
                .any(|(at, by, _)| {
                    *by == survivor_name && *at > killed_at + chrono::Duration::seconds(2)
                })
                .then_some(())
        },
    )
    .await;
    survivor.stop().await;

    // assert: every second from the first fire to the last fired exactly once, with one job each
    let f = fires(&db.pool, "every_second").await;
    let (first, last) = (f[0].0, f[f.len() - 1].0);
    assert_eq!(
        f.len() as i64,
        (last - first).num_seconds() + 1,
        "no slot lost or doubled: {f:?}"
    );
    assert!(f.iter().all(|(_, _, job)| job.is_some()));
    let jobs = jobs_of(&db.pool, "every_second").await;
    assert_eq!(jobs.len(), f.len(), "one job per slot");
    let takeover: Vec<&str> = f.iter().map(|(_, by, _)| by.as_str()).collect();
    assert!(takeover.contains(&leader.as_str()) && takeover.contains(&survivor_name.as_str()));
    // the survivor gave its lease up on a clean stop, and the admin view shows no leader
    assert_eq!(probe.current().await.expect("redis"), None);
    let status = schedule::status(&db.pool, Utc::now())
        .await
        .expect("status");
    assert!(status.iter().all(|s| s.leader.is_none()), "{status:?}");
}

#[tokio::test]
async fn two_leaders_at_once_and_a_lost_cursor_enqueue_each_slot_once() {
    shared::telemetry::init_tracing("text");
    let db = TestDatabase::create().await;
    let schedule = Schedule::new(
        "minutely",
        "* * * * *",
        "UTC",
        CatchUp::All,
        chrono::Duration::hours(2),
        chrono::Duration::hours(1),
    )
    .expect("valid")
    .enqueues::<RetentionSweep>();
    let t0 = utc("2026-06-01T12:00:30Z");
    ledger::fire_due(&db.pool, &schedule, t0, "a")
        .await
        .expect("first evaluation");

    // split brain: two leaders decide the same ten minutes concurrently
    let t1 = t0 + chrono::Duration::minutes(10);
    let (x, y) = tokio::join!(
        ledger::fire_due(&db.pool, &schedule, t1, "a"),
        ledger::fire_due(&db.pool, &schedule, t1, "b")
    );
    let (x, y) = (x.expect("a fires"), y.expect("b fires"));
    assert_eq!(x.fired.len() + y.fired.len(), 10);

    // a restart that lost its cursor decides them again: the ledger turns them into no-ops
    sqlx::query("update schedule_state set evaluated_to = $1")
        .bind(t0)
        .execute(&db.pool)
        .await
        .expect("rewind");
    let again = ledger::fire_due(&db.pool, &schedule, t1, "c")
        .await
        .expect("c fires");
    assert!(again.fired.is_empty());
    assert_eq!(again.duplicates, 10);
    assert_eq!(jobs_of(&db.pool, "minutely").await.len(), 10);
}

#[tokio::test]
async fn missed_nightly_slots_fire_once_each_after_downtime() {
    // arrange: the declared schedules, a clock we move by hand
    shared::telemetry::init_tracing("text");
    let db = TestDatabase::create().await;
    let prefix = testing::unique_name("sched");
    let clock = TestClock::at(utc("2026-03-06T12:00:00Z"));
    let declared = scheduler::schedules::declared();

    let first = Replica::start(
        &db,
        &prefix,
        "first",
        declared.clone(),
        Arc::new(clock.clone()),
    )
    .await;
    eventually(
        "the first run to publish its schedules",
        Duration::from_secs(10),
        || async {
            let n: i64 = sqlx::query_scalar("select count(*) from schedule_state")
                .fetch_one(&db.pool)
                .await
                .ok()?;
            (n == declared.len() as i64).then_some(())
        },
    )
    .await;
    first.stop().await;

    // act: down across two nightly slots (Mar 7 02:00 EST and the spring-forward Mar 8), then up
    clock.set(utc("2026-03-08T12:00:00Z"));
    let second = Replica::start(
        &db,
        &prefix,
        "second",
        declared.clone(),
        Arc::new(clock.clone()),
    )
    .await;
    eventually("both missed rollups", Duration::from_secs(10), || async {
        (fires(&db.pool, "search_rollup").await.len() >= 2).then_some(())
    })
    .await;
    // a few more ticks, then a restart at the same instant: nothing fires twice
    tokio::time::sleep(Duration::from_millis(300)).await;
    second.stop().await;
    let third = Replica::start(
        &db,
        &prefix,
        "third",
        declared.clone(),
        Arc::new(clock.clone()),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    third.stop().await;

    // assert: one rollup per missed local day
    assert_eq!(
        jobs_of(&db.pool, "search_rollup").await,
        [
            "scheduled_run:search_rollup:2026-03-07T07:00:00+00:00",
            // 02:00 does not exist on Mar 8: the first instant after it, 03:00 EDT
            "scheduled_run:search_rollup:2026-03-08T07:00:00+00:00",
        ]
    );
    // retention catches up once: its latest missed slot only
    assert_eq!(
        jobs_of(&db.pool, "retention_sweep").await,
        ["scheduled_run:retention_sweep:2026-03-08T07:30:00+00:00"]
    );

    // the admin view: last fire, its outcome and the next fire
    let now = clock.now();
    let status = schedule::status(&db.pool, now).await.expect("status");
    let rollup = status
        .iter()
        .find(|s| s.name == "search_rollup")
        .expect("listed");
    let last = rollup.last_fire.as_ref().expect("fired");
    assert_eq!(last.slot_local.to_string(), "2026-03-08 02:00:00");
    assert_eq!(last.outcome.as_deref(), Some("pending"));
    assert_eq!(
        rollup.next_fire_local.as_deref(),
        Some("2026-03-09T02:00:00-04:00")
    );
    assert_eq!(rollup.timezone, "America/New_York");

    // the dead man's switch: nothing ran them. The Mar 7 slot was past its deadline when it
    // was caught up (a replica already counted it); past Mar 8's deadline that is a miss too,
    // each counted once.
    let search_rollup = declared
        .iter()
        .find(|s| s.name == "search_rollup")
        .expect("declared");
    let later = now + chrono::Duration::hours(40);
    ledger::check_health(&db.pool, search_rollup, later)
        .await
        .expect("health");
    let missed: Vec<String> = sqlx::query_scalar(
        "select slot_local::text from schedule_fires where schedule = 'search_rollup' and missed_at is not null order by 1",
    )
    .fetch_all(&db.pool)
    .await
    .expect("read ledger");
    assert_eq!(missed, ["2026-03-07 02:00:00", "2026-03-08 02:00:00"]);
    assert!(
        ledger::check_health(&db.pool, search_rollup, later)
            .await
            .expect("health")
            .is_empty()
    );
}

/// A run triggered by hand sends the relay its wake-up, so it need not wait for the next
/// poll.
#[tokio::test]
async fn a_manual_trigger_wakes_the_relay() {
    let db = TestDatabase::create().await;
    let mut wakes = e2e::relay_wakes(&db.pool).await;
    let declared = scheduler::schedules::declared();
    let sweep = scheduler::schedules::find(&declared, "retention_sweep").expect("declared");
    let id = ledger::trigger(&db.pool, sweep, Utc::now())
        .await
        .expect("triggered");
    e2e::woken(&mut wakes, "the trigger").await;
    let status: String = sqlx::query_scalar("select status from jobs where id = $1")
        .bind(id)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(status, "pending");
}

#[tokio::test]
async fn a_renewal_never_takes_a_lease_another_replica_holds() {
    let prefix = testing::unique_name("t");
    let redis = queue::connect(&testing::redis_url()).await.expect("redis");
    let mut a = Lease::new(redis.clone(), &prefix, "a", Duration::from_secs(30));
    let mut b = Lease::new(redis.clone(), &prefix, "b", Duration::from_secs(30));
    assert!(a.hold().await.expect("redis"), "a takes the free lease");
    assert!(!b.hold().await.expect("redis"), "b cannot while a holds it");
    assert!(a.hold().await.expect("redis"), "a renews");
    // a paused past its lease: it expired and b took it
    let mut conn = redis.clone();
    let _: () = redis::cmd("DEL")
        .arg(format!("{prefix}:scheduler:leader"))
        .query_async(&mut conn)
        .await
        .expect("redis");
    assert!(b.hold().await.expect("redis"), "b takes the lapsed lease");
    assert!(
        !a.hold().await.expect("redis"),
        "a's renewal finds b's lease"
    );
    assert_eq!(a.current().await.expect("redis").as_deref(), Some("b"));
    assert!(b.hold().await.expect("redis"), "b still holds it");
    a.release().await.expect("redis");
    assert_eq!(a.current().await.expect("redis").as_deref(), Some("b"));
    b.release().await.expect("redis");
    assert_eq!(a.current().await.expect("redis"), None);
}
