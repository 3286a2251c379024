//! Lesson reminders 24 hours ahead, driven by a test clock: exactly once per booking version
//! and recipient, never for a cancelled or moved time, and skipped (recorded) when late.
use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use e2e::{
    eventually,
    platform::{Options, TestApp},
};
use reqwest::Method;
use shared::clock::TestClock;

async fn app_with_clock() -> (TestApp, TestClock) {
    let clock = TestClock::at(Utc::now());
    let app = TestApp::start_with(Options {
        clock: Arc::new(clock.clone()),
        ..Options::default()
    })
    .await;
    (app, clock)
}

fn reminders(app: &TestApp) -> Vec<e2e::smtp::Received> {
    app.smtp
        .messages()
        .into_iter()
        .filter(|m| m.subject().starts_with("Reminder:"))
        .collect()
}

/// Lets the relay (200 ms poll) and the worker act on the current test time.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(1200)).await;
}

async fn reminder_statuses(app: &TestApp) -> Vec<(String, Option<String>)> {
    sqlx::query_as(
        "select status, last_error from jobs where payload->>'kind' = 'reminder' order by id",
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_booking_three_days_out_reminds_both_parties_once_at_24_hours() {
    let (app, clock) = app_with_clock().await;
    let token = app.student().await;
    let start = app.lesson_at(3, 10);
    let (status, _) = app.book(&token, start).await;
    assert_eq!(status, 201);
    eventually(Duration::from_secs(20), "confirmations", || async {
        app.smtp.count() == 2
    })
    .await;
    let due = start - chrono::Duration::hours(24);

    clock.set(due - chrono::Duration::minutes(1));
    settle().await;
    assert!(
        reminders(&app).is_empty(),
        "not earlier than 24 hours before"
    );

    clock.set(due);
    eventually(Duration::from_secs(20), "two reminders", || async {
        reminders(&app).len() == 2
    })
    .await;
    let mut to: Vec<_> = reminders(&app).iter().flat_map(|m| m.to.clone()).collect();
    to.sort();
    assert_eq!(to, ["instructor@example.com", "student@example.com"]);

    // the sweep run again and every reminder delivered again: still one each
    clock.set(due + chrono::Duration::minutes(5));
    let mut redis = shared::queue::connect(&app.config.redis_url).await.unwrap();
    let heartbeat = Duration::from_secs(1);
    worker::relay::relay_due(
        &app.db.pool,
        &mut redis,
        &app.prefix,
        heartbeat,
        1,
        &worker::jobs::registry(),
        clock_now(&clock),
    )
    .await
    .unwrap();
    sqlx::query("update jobs set status = 'pending' where payload->>'kind' = 'reminder'")
        .execute(&app.db.pool)
        .await
        .unwrap();
    eventually(Duration::from_secs(20), "duplicates handled", || async {
        reminder_statuses(&app)
            .await
            .iter()
            .all(|(s, _)| s == "done")
    })
    .await;
    settle().await;
    assert_eq!(reminders(&app).len(), 2, "exactly once per recipient");
}

fn clock_now(clock: &TestClock) -> DateTime<Utc> {
    use shared::clock::Clock;
    clock.now()
}

#[tokio::test]
async fn a_booking_cancelled_the_day_before_never_reminds() {
    let (app, clock) = app_with_clock().await;
    let token = app.student().await;
    let start = app.lesson_at(3, 11);
    let (_, booking) = app.book(&token, start).await;
    let id = booking["id"].as_i64().unwrap();
    clock.set(start - chrono::Duration::hours(30));
    let (status, _) = app
        .send(
            Method::POST,
            &format!("/api/v1/bookings/{id}/cancel"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(status, 200);

    clock.set(start - chrono::Duration::hours(23));
    settle().await;
    eventually(
        Duration::from_secs(20),
        "confirmations and cancellations",
        || async { app.smtp.count() == 4 },
    )
    .await;
    settle().await;
    assert!(reminders(&app).is_empty());
    assert!(
        reminder_statuses(&app)
            .await
            .iter()
            .all(|(s, _)| s == "skipped")
    );
}

#[tokio::test]
async fn a_rescheduled_booking_reminds_once_at_the_new_time() {
    let (app, clock) = app_with_clock().await;
    let token = app.student().await;
    let old_start = app.lesson_at(3, 9);
    let new_start = app.lesson_at(4, 16);
    let (_, booking) = app.book(&token, old_start).await;
    let id = booking["id"].as_i64().unwrap();

    let (status, moved) = app
        .send(
            Method::POST,
            &format!("/api/v1/bookings/{id}/reschedule"),
            Some(&token),
            Some(serde_json::json!({"start": new_start.to_rfc3339()})),
        )
        .await;
    assert_eq!(status, 200, "{moved}");
    assert_eq!(moved["version"], 2);
    eventually(
        Duration::from_secs(20),
        "confirmations and reschedule emails",
        || async { app.smtp.count() == 4 },
    )
    .await;
    let reschedules: Vec<_> = app
        .smtp
        .messages()
        .into_iter()
        .filter(|m| m.subject().starts_with("Booking rescheduled"))
        .collect();
    assert_eq!(reschedules.len(), 2);

    clock.set(old_start - chrono::Duration::hours(23));
    settle().await;
    assert!(reminders(&app).is_empty(), "the old time never reminds");

    clock.set(new_start - chrono::Duration::hours(24));
    eventually(
        Duration::from_secs(20),
        "reminders at the new time",
        || async { reminders(&app).len() == 2 },
    )
    .await;
    let shown = new_start
        .with_timezone(&chrono_tz::America::New_York)
        .format("%-I:%M %p")
        .to_string();
    assert!(
        reminders(&app).iter().all(|m| m.text().contains(&shown)),
        "new time {shown} in the text"
    );
    settle().await;
    assert_eq!(reminders(&app).len(), 2);
}

#[tokio::test]
async fn a_reminder_late_because_the_platform_was_down_is_sent_if_the_lesson_has_not_started() {
    let (mut app, clock) = app_with_clock().await;
    let token = app.student().await;
    let start = app.lesson_at(3, 13);
    app.book(&token, start).await;
    eventually(Duration::from_secs(20), "confirmations", || async {
        app.smtp.count() == 2
    })
    .await;
    app.stop_worker().await;

    clock.set(start - chrono::Duration::hours(2));
    app.start_worker().await;

    eventually(Duration::from_secs(20), "late reminders", || async {
        reminders(&app).len() == 2
    })
    .await;
}

#[tokio::test]
async fn a_reminder_whose_lesson_already_started_is_skipped_and_recorded() {
    let (mut app, clock) = app_with_clock().await;
    let token = app.student().await;
    let start = app.lesson_at(3, 14);
    app.book(&token, start).await;
    eventually(Duration::from_secs(20), "confirmations", || async {
        app.smtp.count() == 2
    })
    .await;
    app.stop_worker().await;

    clock.set(start + chrono::Duration::minutes(10));
    app.start_worker().await;

    eventually(Duration::from_secs(20), "reminders skipped", || async {
        let statuses = reminder_statuses(&app).await;
        statuses.len() == 2 && statuses.iter().all(|(s, _)| s == "skipped")
    })
    .await;
    let statuses = reminder_statuses(&app).await;
    assert!(
        statuses
            .iter()
            .all(|(_, reason)| reason.as_deref() == Some("lesson already started")),
        "{statuses:?}"
    );
    assert!(reminders(&app).is_empty());
}

#[tokio::test]
async fn a_booking_inside_the_lead_gets_no_reminder_and_its_confirmation_says_soon() {
    let (app, clock) = app_with_clock().await;
    let token = app.student().await;
    let start = app.lesson_at(2, 10);
    clock.set(start - chrono::Duration::hours(20));

    let (status, body) = app.book(&token, start).await;

    assert_eq!(status, 201, "{body}");
    eventually(Duration::from_secs(20), "confirmations", || async {
        app.smtp.count() == 2
    })
    .await;
    assert!(
        reminder_statuses(&app).await.is_empty(),
        "no separate reminder"
    );
    assert!(
        app.smtp
            .messages()
            .iter()
            .all(|m| m.text().contains("starts soon"))
    );
}
