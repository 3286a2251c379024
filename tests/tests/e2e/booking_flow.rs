//! Bookings to inbox: confirmations arrive once per party, in each party's time zone, and
//! survive Redis being down.
use std::time::Duration;

use e2e::{
    eventually,
    platform::{Options, TestApp},
    redis_server::RedisServer,
};

#[tokio::test]
async fn a_booking_emails_each_party_once_in_their_own_time_zone() {
    let app = TestApp::start().await;
    // the student lives in Berlin, the instructor in New York
    sqlx::query("update users set timezone = 'Europe/Berlin' where email = 'student@example.com'")
        .execute(&app.db.pool)
        .await
        .unwrap();
    let token = app.student().await;
    let start = app.lesson_at(3, 10);

    let (status, booking) = app.book(&token, start).await;

    assert_eq!(status, 201, "{booking}");
    assert_eq!(booking["status"], "confirmed");
    assert_eq!(
        booking["start"]
            .as_str()
            .map(|s| s.parse::<chrono::DateTime<chrono::Utc>>().unwrap()),
        Some(start)
    );
    eventually(Duration::from_secs(20), "two confirmations", || async {
        app.smtp.count() >= 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let messages = app.smtp.messages();
    assert_eq!(messages.len(), 2, "exactly one email per party");
    let to_student = messages
        .iter()
        .find(|m| m.to == ["student@example.com"])
        .expect("student email");
    let to_instructor = messages
        .iter()
        .find(|m| m.to == ["instructor@example.com"])
        .expect("instructor email");
    let berlin = start
        .with_timezone(&chrono_tz::Europe::Berlin)
        .format("%-I:%M %p %Z")
        .to_string();
    let new_york = start
        .with_timezone(&chrono_tz::America::New_York)
        .format("%-I:%M %p %Z")
        .to_string();
    assert!(
        to_student.text().contains(&berlin),
        "student sees {berlin}:\n{}",
        to_student.text()
    );
    assert!(
        to_instructor.text().contains(&new_york),
        "instructor sees {new_york}"
    );
    for message in [to_student, to_instructor] {
        assert!(
            message.subject().starts_with("Booking confirmed"),
            "{}",
            message.subject()
        );
        assert!(message.data.contains("multipart/alternative"));
        assert!(message.data.contains("text/plain"));
        assert!(message.data.contains("text/html"));
    }
    eventually(Duration::from_secs(5), "job records done", || async {
        app.jobs_in("done").await == 2
    })
    .await;
}

#[tokio::test]
async fn the_same_email_job_delivered_twice_sends_one_email() {
    let app = TestApp::start().await;
    let token = app.student().await;
    let (status, _) = app.book(&token, app.lesson_at(2, 9)).await;
    assert_eq!(status, 201);
    eventually(Duration::from_secs(20), "two confirmations", || async {
        app.smtp.count() == 2
    })
    .await;

    let rows: Vec<(i64, serde_json::Value)> =
        sqlx::query_as("select id, payload from jobs where payload->>'kind' = 'confirmation'")
            .fetch_all(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(rows.len(), 2);
    // reopen the records, as if the first run had crashed before recording its outcome (first:
    // a duplicate that found its record finished would do nothing, and leave it to the
    // reconciler)
    sqlx::query("update jobs set status = 'enqueued' where payload->>'kind' = 'confirmation'")
        .execute(&app.db.pool)
        .await
        .unwrap();
    // and deliver every email job again through Redis, as a duplicate delivery would
    let mut conn = shared::queue::connect(&app.config.redis_url).await.unwrap();
    let config = shared::queue::queue_config(&app.prefix, "booking_email", Duration::from_secs(1));
    for (id, args) in &rows {
        let bytes = serde_json::to_vec(&serde_json::json!({"job_id": id, "args": args})).unwrap();
        let task = apalis::prelude::TaskBuilder::new(bytes)
            .task_id(apalis::prelude::TaskId::from_string(format!("{id}.dup")))
            .build();
        apalis_redis::queries::push_tasks(&mut conn, &config, &[task])
            .await
            .unwrap();
    }
    eventually(Duration::from_secs(20), "duplicates processed", || async {
        app.jobs_in("done").await == 2
    })
    .await;

    assert_eq!(app.smtp.count(), 2, "no email sent twice");
    let ledger: i64 = sqlx::query_scalar("select count(*) from email_ledger where status = 'sent'")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(ledger, 2);
}

#[tokio::test]
async fn bookings_made_while_redis_is_down_are_emailed_when_it_returns() {
    let mut redis = RedisServer::start().await;
    let app = TestApp::start_with(Options {
        redis_url: redis.url(),
        ..Options::default()
    })
    .await;
    let token = app.student().await;
    redis.stop().await;

    for day in 1..=3 {
        let (status, body) = app.book(&token, app.lesson_at(day, 11)).await;
        assert_eq!(status, 201, "booking succeeds without redis: {body}");
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(app.smtp.count(), 0);
    let waiting: i64 = sqlx::query_scalar(
        "select count(*) from jobs where status = 'pending' and payload->>'kind' = 'confirmation'",
    )
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(waiting, 6, "the confirmations wait in the outbox");

    redis.restart().await;
    eventually(
        Duration::from_secs(60),
        "six confirmations after redis returns",
        || async { app.smtp.count() >= 6 },
    )
    .await;
    eventually(Duration::from_secs(10), "all due records done", || async {
        app.jobs_in("done").await == 6
    })
    .await;
    assert_eq!(app.smtp.count(), 6);
}

#[tokio::test]
async fn fifty_concurrent_requests_for_one_slot_make_one_booking() {
    let app = TestApp::without_worker().await;
    let token = app.student().await;
    let start = app.lesson_at(5, 14);

    let attempts = (0..50).map(|_| app.book(&token, start));
    let results = futures::future::join_all(attempts).await;

    let created = results.iter().filter(|(s, _)| *s == 201).count();
    let conflicts = results.iter().filter(|(s, _)| *s == 409).count();
    assert_eq!(created, 1, "{results:?}");
    assert_eq!(conflicts, 49, "{results:?}");
    for (status, body) in &results {
        if *status == 409 {
            assert_eq!(body["code"], "booking_conflict");
            assert!(body["detail"].is_string());
        }
    }
    let rows: i64 = sqlx::query_scalar("select count(*) from bookings")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(rows, 1);
}

#[tokio::test]
async fn cancelling_emails_both_parties() {
    let app = TestApp::start().await;
    let token = app.student().await;
    let (_, booking) = app.book(&token, app.lesson_at(4, 15)).await;
    let id = booking["id"].as_i64().unwrap();
    eventually(Duration::from_secs(20), "confirmations", || async {
        app.smtp.count() == 2
    })
    .await;

    let instructor = app.token("instructor@example.com").await;
    let (status, cancelled) = app
        .send(
            reqwest::Method::POST,
            &format!("/api/v1/bookings/{id}/cancel"),
            Some(&instructor),
            Some(serde_json::json!({"reason": "ill"})),
        )
        .await;

    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled");
    eventually(Duration::from_secs(20), "cancellations", || async {
        app.smtp.count() == 4
    })
    .await;
    let cancellations: Vec<_> = app
        .smtp
        .messages()
        .into_iter()
        .filter(|m| m.subject().starts_with("Booking cancelled"))
        .collect();
    assert_eq!(cancellations.len(), 2);
    assert!(cancellations.iter().all(|m| m.text().contains("ill")));
    // the freed time is bookable again
    let (status, _) = app.book(&token, app.lesson_at(4, 15)).await;
    assert_eq!(status, 201);
}

#[tokio::test]
async fn availability_is_free_time_minus_bookings() {
    let app = TestApp::without_worker().await;
    let token = app.student().await;
    let start = app.lesson_at(6, 12);
    app.book(&token, start).await;
    let day = start
        .with_timezone(&chrono_tz::America::New_York)
        .date_naive();
    let instructor = app.instructor_id().await;

    let (status, body) = app
        .send(
            reqwest::Method::GET,
            &format!("/api/v1/public/instructors/{instructor}/availability?start_date={day}&end_date={day}"),
            None,
            None,
        )
        .await;

    assert_eq!(status, 200, "{body}");
    let ranges = body["ranges"].as_array().unwrap();
    assert_eq!(ranges.len(), 2, "{body}");
    assert_eq!(
        ranges[0]["end"]
            .as_str()
            .unwrap()
            .parse::<chrono::DateTime<chrono::Utc>>()
            .unwrap(),
        start
    );
    assert_eq!(
        ranges[1]["start"]
            .as_str()
            .unwrap()
            .parse::<chrono::DateTime<chrono::Utc>>()
            .unwrap(),
        start + chrono::Duration::hours(1)
    );
    let (status, list) = app
        .send(reqwest::Method::GET, "/api/v1/instructors", None, None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(list[0]["services"][0]["duration_minutes"], 60);
    assert_eq!(list[0]["timezone"], "America/New_York");
}

/// The relay hears of new records from a `jobs_due` notification, not only from its
/// once-a-second poll: a booking, its cancellation and an admin's retry of a dead job each
/// wake it.
#[tokio::test]
async fn bookings_cancellations_and_retries_wake_the_relay() {
    let app = TestApp::without_worker().await;
    let mut wakes = e2e::relay_wakes(&app.db.pool).await;
    let token = app.student().await;

    let (status, booking) = app.book(&token, app.lesson_at(3, 10)).await;
    assert_eq!(status, 201, "{booking}");
    e2e::woken(&mut wakes, "the booking").await;

    let id = booking["id"].as_i64().unwrap();
    let (status, _) = app
        .send(
            reqwest::Method::POST,
            &format!("/api/v1/bookings/{id}/cancel"),
            Some(&token),
            Some(serde_json::json!({"reason": "ill"})),
        )
        .await;
    assert_eq!(status, 200);
    e2e::woken(&mut wakes, "the cancellation").await;

    let dead: i64 = sqlx::query_scalar(
        "update jobs set status = 'dead', last_error = 'test' where id = (select min(id) from jobs)
         returning id",
    )
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    let admin = app.token("admin@example.com").await;
    let (status, body) = app
        .send(
            reqwest::Method::POST,
            &format!("/api/v1/admin/jobs/{dead}/retry"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    e2e::woken(&mut wakes, "the retry").await;
}
