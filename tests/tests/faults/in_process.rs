//! Fault scenarios that need no process control: SMTP failures and poison jobs.
use std::time::Duration;

use e2e::{eventually, platform::TestApp, procs::record_summary, smtp::Mode};
use reqwest::Method;

use crate::tally;

async fn errors_of(app: &TestApp) -> Vec<(i64, i32, chrono::DateTime<chrono::Utc>)> {
    sqlx::query_as("select job_id, attempt, at from job_errors order by id")
        .fetch_all(&app.db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn transient_smtp_failures_retry_with_growing_backoff_then_deliver_once() {
    let app = TestApp::start().await;
    app.smtp.set_mode(Mode::Transient);
    let token = app.student().await;
    let (_, booking) = app.book(&token, app.lesson_at(1, 12)).await;
    let id = booking["id"].as_i64().unwrap();

    eventually(
        Duration::from_secs(30),
        "two failed attempts per email",
        || async {
            let errors = errors_of(&app).await;
            errors
                .iter()
                .filter(|(_, attempt, _)| *attempt == 2)
                .count()
                == 2
        },
    )
    .await;
    let errors = errors_of(&app).await;
    let job = errors[0].0;
    let times: Vec<_> = errors
        .iter()
        .filter(|(j, _, _)| *j == job)
        .map(|(_, _, at)| *at)
        .collect();
    let gap = times[1] - times[0];
    assert!(
        gap >= chrono::Duration::milliseconds(1500),
        "backoff before the second attempt: {gap}"
    );
    let pending: Vec<(String, chrono::DateTime<chrono::Utc>)> =
        sqlx::query_as("select status, run_at from jobs where id = $1")
            .bind(job)
            .fetch_all(&app.db.pool)
            .await
            .unwrap();
    assert!(
        // the second back-off (4 s ± 20%) counts from the second failure
        pending[0].1 - times[1] >= chrono::Duration::milliseconds(3000),
        "third attempt waits longer: {pending:?}"
    );

    app.smtp.set_mode(Mode::Accept);
    eventually(
        Duration::from_secs(30),
        "delivered after recovery",
        || async { tally(&app.smtp, &[id]).1 == 0 },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (out, lost, extra) = tally(&app.smtp, &[id]);
    record_summary("smtp_transient", 4, 2, out, lost, extra);
    assert_eq!((out, lost, extra), (2, 0, 0));
}

#[tokio::test]
async fn permanent_smtp_failures_are_dead_letters_that_ops_can_send_back() {
    let app = TestApp::start().await;
    app.smtp.set_mode(Mode::Permanent);
    let token = app.student().await;
    let (_, booking) = app.book(&token, app.lesson_at(1, 13)).await;
    let id = booking["id"].as_i64().unwrap();

    eventually(Duration::from_secs(20), "both emails dead", || async {
        sqlx::query_scalar::<_, i64>("select count(*) from jobs where status = 'dead'")
            .fetch_one(&app.db.pool)
            .await
            .unwrap()
            == 2
    })
    .await;
    assert_eq!(
        errors_of(&app).await.len(),
        2,
        "no retry for a permanent failure"
    );
    let admin = app.token("admin@example.com").await;
    let (status, dead) = app
        .send(
            Method::GET,
            "/api/v1/admin/jobs?status=dead",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let dead = dead.as_array().unwrap().clone();
    assert_eq!(dead.len(), 2);
    assert!(
        dead[0]["last_error"].as_str().unwrap().contains("550"),
        "{dead:?}"
    );
    assert_eq!(
        dead[0]["errors"].as_array().unwrap().len(),
        1,
        "the error history is kept"
    );

    app.smtp.set_mode(Mode::Accept);
    for job in &dead {
        let path = format!("/api/v1/admin/jobs/{}/retry", job["id"]);
        let (status, body) = app.send(Method::POST, &path, Some(&admin), None).await;
        assert_eq!(status, 200, "{body}");
    }
    eventually(Duration::from_secs(20), "sent after the retry", || async {
        tally(&app.smtp, &[id]).1 == 0
    })
    .await;
    let (out, lost, extra) = tally(&app.smtp, &[id]);
    record_summary("smtp_permanent", 2, 2, out, lost, extra);
    assert_eq!((out, lost, extra), (2, 0, 0));
}

#[tokio::test]
async fn poison_jobs_become_dead_letters_and_the_worker_keeps_running() {
    let app = TestApp::start().await;
    // a payload that decodes as no job at all, straight into the Redis queue
    let mut redis = shared::queue::connect(&app.config.redis_url).await.unwrap();
    let config = shared::queue::queue_config(&app.prefix, "booking_email", Duration::from_secs(1));
    let garbage = apalis::prelude::TaskBuilder::new(b"{\"not\": \"an envelope\"}".to_vec())
        .task_id(apalis::prelude::TaskId::from_string("garbage-1"))
        .build();
    apalis_redis::queries::push_tasks(&mut redis, &config, &[garbage])
        .await
        .unwrap();
    // and a durable record whose arguments cannot be decoded
    let bad: i64 = sqlx::query_scalar(
        "insert into jobs (queue, payload, dedupe_key) values ('booking_email', '{\"booking_id\": \"x\"}', 'poison') returning id",
    )
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    sqlx::query("select pg_notify('jobs_due', '')")
        .execute(&app.db.pool)
        .await
        .unwrap();

    eventually(
        Duration::from_secs(20),
        "the poison record is dead",
        || async {
            sqlx::query_scalar::<_, String>("select status from jobs where id = $1")
                .bind(bad)
                .fetch_one(&app.db.pool)
                .await
                .unwrap()
                == "dead"
        },
    )
    .await;
    let error: String = sqlx::query_scalar("select last_error from jobs where id = $1")
        .bind(bad)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert!(error.contains("undecodable"), "{error}");

    // the worker still works
    let token = app.student().await;
    let (_, booking) = app.book(&token, app.lesson_at(1, 14)).await;
    let id = booking["id"].as_i64().unwrap();
    eventually(
        Duration::from_secs(20),
        "a normal booking still mails",
        || async { tally(&app.smtp, &[id]).1 == 0 },
    )
    .await;
    let (out, lost, extra) = tally(&app.smtp, &[id]);
    record_summary("poison_jobs", 2, 2, out, lost, extra);
    assert_eq!((lost, extra), (0, 0));
}

/// The SMTP server takes the message and the connection drops before its verdict: the
/// worker cannot know whether it was accepted. It keeps the ledger claim, so no retry resends
/// the email until the claim times out (`EMAIL_CLAIM_TIMEOUT_SECS`, as after a crash
/// mid-send); then it is sent once more with the same Message-ID, which receivers drop.
#[tokio::test]
async fn an_unknown_smtp_outcome_keeps_the_claim_until_it_times_out() {
    let app = TestApp::start_with(e2e::platform::Options {
        extra_env: vec![("EMAIL_CLAIM_TIMEOUT_SECS".into(), "10".into())],
        ..Default::default()
    })
    .await;
    app.smtp.set_mode(Mode::AcceptThenHangUp);
    let token = app.student().await;
    let (_, booking) = app.book(&token, app.lesson_at(1, 12)).await;
    let id = booking["id"].as_i64().unwrap();

    eventually(
        Duration::from_secs(20),
        "both emails handed over once",
        || async { app.smtp.count() == 2 },
    )
    .await;
    app.smtp.set_mode(Mode::Accept);
    // the retry (after about 2 s) finds the claims young: it resends nothing, gets its
    // attempt back, and is deferred to when the claims expire (not a 2-4 s back-off)
    eventually(
        Duration::from_secs(20),
        "both retries deferred to the claims' expiry",
        || async {
            let deferred: Vec<(i32, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
                "select attempts, run_at from jobs
                 where status = 'pending' and last_error = 'another delivery is sending this email'",
            )
            .fetch_all(&app.db.pool)
            .await
            .unwrap();
            let claims: Vec<(String, chrono::DateTime<chrono::Utc>)> =
                sqlx::query_as("select status, claimed_at from email_ledger")
                    .fetch_all(&app.db.pool)
                    .await
                    .unwrap();
            let Some(first_claim) = claims.iter().map(|(_, at)| *at).min() else {
                return false;
            };
            claims.len() == 2
                && claims.iter().all(|(status, _)| status == "sending")
                && deferred.len() == 2
                && deferred.iter().all(|(attempts, run_at)| {
                    *attempts == 1 && *run_at >= first_claim + chrono::Duration::seconds(10)
                })
        },
    )
    .await;
    assert_eq!(
        app.smtp.count(),
        2,
        "nothing resent while the claims are young"
    );

    eventually(
        Duration::from_secs(60),
        "resent after the claim timeout",
        || async {
            let sent: i64 =
                sqlx::query_scalar("select count(*) from email_ledger where status = 'sent'")
                    .fetch_one(&app.db.pool)
                    .await
                    .unwrap();
            sent == 2
        },
    )
    .await;
    let (out, lost, extra) = tally(&app.smtp, &[id]);
    record_summary("smtp_unknown_outcome", 2, 2, out, lost, extra);
    assert_eq!((out, lost), (2, 0));
    assert_eq!(extra, 2, "each resent exactly once, with its Message-ID");
    // no copy came before its claim timed out (10 s after the claim, just before the first)
    let messages = app.smtp.messages();
    for first in &messages[..2] {
        let again = messages[2..]
            .iter()
            .find(|m| m.message_id() == first.message_id())
            .expect("a second copy");
        let gap = again.received_at.duration_since(first.received_at);
        assert!(gap >= Duration::from_secs(9), "resent after only {gap:?}");
    }
}

/// A send cut off before an upgrade that renamed Message-IDs (they were `@instainstru`, they
/// are now on `MAIL_FROM`'s domain) is taken over after it with the id the ledger recorded:
/// a receiver that got the first copy still drops the second.
#[tokio::test]
async fn a_claim_taken_over_resends_with_the_message_id_it_recorded() {
    let mut app = TestApp::without_worker().await;
    let token = app.student().await;
    let (status, booking) = app.book(&token, app.lesson_at(2, 12)).await;
    assert_eq!(status, 201, "{booking}");
    let id = booking["id"].as_i64().unwrap();
    // both confirmations claimed an hour ago, by a worker that died mid-send
    sqlx::query(
        "insert into email_ledger (booking_id, kind, recipient_id, booking_version, message_id, claimed_at)
         select b.id, 'confirmation', r.id, 1,
                '<booking-' || b.id || '-confirmation-' || r.party || '-v1@instainstru>',
                now() - interval '1 hour'
         from bookings b
         cross join lateral (values (b.student_id, 'student'), (b.instructor_id, 'instructor')) r(id, party)
         where b.id = $1",
    )
    .bind(id)
    .execute(&app.db.pool)
    .await
    .unwrap();

    app.start_worker().await;

    eventually(
        Duration::from_secs(20),
        "both taken over and sent",
        || async { app.smtp.count() == 2 },
    )
    .await;
    let mut ids: Vec<String> = app.smtp.messages().iter().map(|m| m.message_id()).collect();
    ids.sort();
    assert_eq!(
        ids,
        [
            format!("<booking-{id}-confirmation-instructor-v1@instainstru>"),
            format!("<booking-{id}-confirmation-student-v1@instainstru>"),
        ]
    );
}
