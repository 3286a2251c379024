//! Work queued before the job-registry upgrade (migration 0004) runs after it, once: records
//! of the old shape in Postgres (the generic `scheduled_run` kind, the retired `running`
//! status) and a task already in Redis.
use std::time::Duration;

use e2e::{
    eventually,
    platform::{Options, TestApp},
};
use shared::testing::{self, TestDatabase};

/// The last migration before the upgrade.
const BEFORE: i64 = 3;

async fn job(db: &TestDatabase, key: &str) -> (String, String) {
    sqlx::query_as("select queue, status from jobs where dedupe_key = $1")
        .bind(key)
        .fetch_one(&db.pool)
        .await
        .expect("job")
}

#[tokio::test]
async fn jobs_queued_before_the_upgrade_run_once_after_it() {
    // arrange: the schema as it was, a booking, and its work queued the old way
    let db = TestDatabase::create_at(BEFORE).await;
    api::seed::seed(&db.pool, chrono::Utc::now())
        .await
        .expect("seed");
    let booking: i64 = sqlx::query_scalar(
        "insert into bookings (student_id, instructor_id, service_id, starts_at, ends_at,
                               service_name, duration_minutes, price_cents)
         select s.id, i.id, sv.id, now() + interval '3 days', now() + interval '3 days 1 hour',
                sv.name, sv.duration_minutes, sv.price_cents
           from users s, users i join services sv on sv.instructor_id = i.id
          where s.email = 'student@example.com' and i.email = 'instructor@example.com'
          limit 1
         returning id",
    )
    .fetch_one(&db.pool)
    .await
    .expect("booking");
    let email = |party: &str| {
        serde_json::json!({
            "booking_id": booking, "kind": "confirmation", "party": party, "booking_version": 1
        })
    };
    let student_key = format!("booking_email:{booking}:confirmation:student:v1");
    let instructor_key = format!("booking_email:{booking}:confirmation:instructor:v1");
    let slot = "2026-03-08T07:30:00Z";
    let old = [
        // already handed to Redis by the old relay (pushed below)
        (
            "booking_email",
            email("student"),
            student_key.as_str(),
            "enqueued",
        ),
        // the stored `running` status an old attempt could leave
        (
            "booking_email",
            email("instructor"),
            instructor_key.as_str(),
            "running",
        ),
        (
            "scheduled_run",
            serde_json::json!({"schedule": "retention_sweep", "slot": slot, "manual_key": null}),
            "scheduled_run:retention_sweep:2026-03-08T07:30:00+00:00",
            "pending",
        ),
        (
            "scheduled_run",
            serde_json::json!({"schedule": "search_rollup", "slot": "2026-03-08T07:00:00Z"}),
            "scheduled_run:search_rollup:2026-03-08T07:00:00+00:00",
            "enqueued",
        ),
        (
            "scheduled_run",
            serde_json::json!({"schedule": "reminder_sweep", "slot": slot}),
            "scheduled_run:reminder_sweep:2026-03-08T07:30:00+00:00",
            "pending",
        ),
    ];
    for (queue, payload, key, status) in &old {
        sqlx::query(
            "insert into jobs (queue, payload, dedupe_key, status, run_at, pushes, enqueued_at)
             values ($1, $2, $3, $4, now() - interval '1 minute', 1,
                     case when $4 = 'pending' then null else now() - interval '1 minute' end)",
        )
        .bind(queue)
        .bind(payload)
        .bind(key)
        .bind(status)
        .execute(&db.pool)
        .await
        .expect("old record");
    }
    let student_job: i64 = sqlx::query_scalar("select id from jobs where dedupe_key = $1")
        .bind(&student_key)
        .fetch_one(&db.pool)
        .await
        .expect("id");
    let prefix = testing::unique_name("t");
    let mut redis = shared::queue::connect(&testing::redis_url())
        .await
        .expect("redis");
    let envelope = serde_json::json!({"job_id": student_job, "args": email("student")});
    shared::queue::push(
        &mut redis,
        &shared::queue::queue_config(&prefix, "booking_email", Duration::from_secs(1)),
        &[shared::queue::Outgoing {
            task_id: format!("{student_job}.1"),
            payload: serde_json::to_vec(&envelope).expect("encode"),
        }],
    )
    .await
    .expect("push");

    // act: upgrade (the rest of the migrations) and start the new worker
    let app = TestApp::start_with(Options {
        database: Some(db),
        extra_env: vec![("QUEUE_PREFIX".into(), prefix)],
        ..Options::default()
    })
    .await;

    // assert: every piece of work done once
    eventually(Duration::from_secs(30), "both confirmations", || async {
        app.smtp.count() >= 2
    })
    .await;
    eventually(
        Duration::from_secs(20),
        "the periodic work finished",
        || async {
            let sweep = job(
                &app.db,
                "scheduled_run:retention_sweep:2026-03-08T07:30:00+00:00",
            )
            .await;
            let rollup = job(
                &app.db,
                "scheduled_run:search_rollup:2026-03-08T07:00:00+00:00",
            )
            .await;
            sweep.1 == "done" && rollup.1 != "pending" && rollup.1 != "enqueued"
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut to: Vec<String> = app
        .smtp
        .messages()
        .iter()
        .flat_map(|m| m.to.clone())
        .collect();
    to.sort();
    assert_eq!(to, ["instructor@example.com", "student@example.com"]);
    for key in [&student_key, &instructor_key] {
        assert_eq!(
            job(&app.db, key).await,
            ("booking_email".into(), "done".into())
        );
    }
    let (queue, _) = job(
        &app.db,
        "scheduled_run:retention_sweep:2026-03-08T07:30:00+00:00",
    )
    .await;
    assert_eq!(queue, "retention_sweep");
    let rollup: serde_json::Value =
        sqlx::query_scalar("select payload from jobs where queue = 'search_rollup'")
            .fetch_one(&app.db.pool)
            .await
            .expect("rollup");
    // the 02:00 New York slot of Mar 8 rolls up Mar 7
    assert_eq!(rollup, serde_json::json!({"day": "2026-03-07"}));
    assert_eq!(
        job(
            &app.db,
            "scheduled_run:reminder_sweep:2026-03-08T07:30:00+00:00"
        )
        .await,
        ("scheduled_run".into(), "skipped".into())
    );
}
