//! The job registry: a kind added with its args, its handler and one registration line is
//! relayed, run, retried and dead-lettered by its own policy, with nothing else edited; a
//! record of a queue no worker registered is dead-lettered, never pushed where nobody reads.
use std::{
    sync::{
        Arc,
        atomic::{AtomicI32, Ordering},
    },
    time::Duration,
};

use e2e::{
    eventually,
    platform::{Options, TestApp},
};
use serde::{Deserialize, Serialize};
use shared::jobs::JobArgs;
use worker::{
    Deps,
    error::WorkerError,
    jobs::{Handler, JobRun},
    records::Outcome,
};

/// The throwaway kind's args: fail the first `failures` attempts.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Flaky {
    name: String,
    failures: i32,
}

impl JobArgs for Flaky {
    const QUEUE: &'static str = "test_flaky";

    fn dedupe_key(&self) -> String {
        format!("test_flaky:{}", self.name)
    }
}

/// Its handler: three attempts, retries 50 ms apart, and a count of the work it did.
struct FlakyJob {
    runs: Arc<AtomicI32>,
}

impl Handler for FlakyJob {
    type Args = Flaky;

    fn max_attempts(&self) -> i32 {
        3
    }

    fn backoff(&self, _attempt: i32) -> chrono::Duration {
        chrono::Duration::milliseconds(50)
    }

    async fn work(&self, _deps: &Deps, run: JobRun, args: Flaky) -> Result<Outcome, WorkerError> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        Ok(if run.attempt <= args.failures {
            Outcome::Retry(format!("failure {} of {}", run.attempt, args.failures))
        } else {
            Outcome::Done
        })
    }
}

async fn app_with_flaky() -> (TestApp, Arc<AtomicI32>) {
    let runs = Arc::new(AtomicI32::new(0));
    let app = TestApp::start_with(Options {
        // the one registration line
        registry: Some(worker::jobs::registry().register(FlakyJob { runs: runs.clone() })),
        ..Options::default()
    })
    .await;
    (app, runs)
}

async fn enqueue(app: &TestApp, args: &Flaky) -> i64 {
    let mut tx = app.db.pool.begin().await.expect("begin");
    let id = shared::outbox::enqueue(&mut tx, args, chrono::Utc::now())
        .await
        .expect("enqueue")
        .expect("new job");
    tx.commit().await.expect("commit");
    shared::outbox::notify(&app.db.pool).await;
    id
}

async fn job(app: &TestApp, id: i64) -> (String, i32, i32, Option<String>) {
    sqlx::query_as("select status, attempts, max_attempts, last_error from jobs where id = $1")
        .bind(id)
        .fetch_one(&app.db.pool)
        .await
        .expect("job row")
}

#[tokio::test]
async fn a_new_kind_is_relayed_run_and_retried_by_its_own_policy() {
    let (app, runs) = app_with_flaky().await;
    let id = enqueue(
        &app,
        &Flaky {
            name: "twice".into(),
            failures: 2,
        },
    )
    .await;

    eventually(Duration::from_secs(20), "the flaky job done", || async {
        job(&app, id).await.0 == "done"
    })
    .await;

    let (_, attempts, max_attempts, _) = job(&app, id).await;
    assert_eq!((attempts, max_attempts), (3, 3));
    assert_eq!(runs.load(Ordering::SeqCst), 3);
    let errors: i64 = sqlx::query_scalar("select count(*) from job_errors where job_id = $1")
        .bind(id)
        .fetch_one(&app.db.pool)
        .await
        .expect("errors");
    assert_eq!(errors, 2, "one error per failed attempt");
    // the registry is published for the admin views
    let registered: Vec<String> = sqlx::query_scalar("select queue from job_queues order by 1")
        .fetch_all(&app.db.pool)
        .await
        .expect("registry");
    assert!(
        registered.contains(&"test_flaky".to_string()),
        "{registered:?}"
    );
}

#[tokio::test]
async fn a_new_kind_is_dead_lettered_at_its_own_attempt_cap() {
    let (app, runs) = app_with_flaky().await;
    let id = enqueue(
        &app,
        &Flaky {
            name: "always".into(),
            failures: 100,
        },
    )
    .await;

    eventually(Duration::from_secs(20), "the flaky job dead", || async {
        job(&app, id).await.0 == "dead"
    })
    .await;

    let (_, attempts, _, last_error) = job(&app, id).await;
    assert_eq!(attempts, 3, "dead at its own cap of 3, not the default 8");
    assert_eq!(last_error.as_deref(), Some("failure 3 of 100"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(runs.load(Ordering::SeqCst), 3, "nothing runs after the cap");
}

#[tokio::test]
async fn a_record_of_an_unregistered_queue_is_dead_lettered_with_the_reason() {
    let app = TestApp::start().await;
    let id: i64 = sqlx::query_scalar(
        "insert into jobs (queue, payload, dedupe_key) values ('no_such_kind', '{}', 'typo:1')
         returning id",
    )
    .fetch_one(&app.db.pool)
    .await
    .expect("insert");
    shared::outbox::notify(&app.db.pool).await;

    eventually(Duration::from_secs(10), "the record dead", || async {
        job(&app, id).await.0 == "dead"
    })
    .await;
    let (_, _, _, last_error) = job(&app, id).await;
    assert_eq!(
        last_error.as_deref(),
        Some("no handler is registered for queue no_such_kind")
    );
    // and nothing was pushed to Redis under that name
    let mut redis = shared::queue::connect(&app.config.redis_url)
        .await
        .expect("redis");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:no_such_kind*", app.prefix))
        .query_async(&mut redis)
        .await
        .expect("keys");
    assert!(keys.is_empty(), "{keys:?}");
}
