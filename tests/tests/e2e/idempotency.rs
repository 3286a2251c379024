//! `Idempotency-Key` on `POST /api/v1/bookings`: a retry with the same key and request gets
//! the first 201 and its body again and books nothing more, the same key with another request
//! is 422, a key whose request is still running is 409, and keys expire after 24 hours.
use std::sync::Arc;

use chrono::Utc;
use e2e::platform::{Options, TestApp};
use reqwest::Method;
use serde_json::{Value, json};
use shared::clock::TestClock;

use crate::contract::{Answer, Body, Contract, assert_error_body, call_with};

const BOOKINGS: &str = "/api/v1/bookings";

async fn post(app: &TestApp, token: &str, key: Option<&str>, body: Body) -> Answer {
    let headers: Vec<(&str, &str)> = key.map(|k| ("idempotency-key", k)).into_iter().collect();
    call_with(app, Method::POST, BOOKINGS, Some(token), &headers, body).await
}

async fn lesson(app: &TestApp, days: i64, hour: u32) -> Value {
    json!({
        "instructor_id": app.instructor_id().await,
        "service_id": app.service_id().await,
        "start": app.lesson_at(days, hour).to_rfc3339(),
    })
}

async fn count(app: &TestApp, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(&app.db.pool)
        .await
        .expect("count")
}

fn code(answer: &Answer) -> &str {
    answer
        .json
        .as_ref()
        .and_then(|j| j["code"].as_str())
        .unwrap_or("")
}

#[tokio::test]
async fn a_retry_with_the_same_key_gets_the_first_answer_and_books_once() {
    let app = TestApp::without_worker().await;
    let mut contract = Contract::fetch(&app).await;
    let student = app.student().await;
    let body = lesson(&app, 3, 10).await;

    let first = post(&app, &student, Some("retry-1"), Body::Json(body.clone())).await;
    assert_eq!(first.status, 201, "{}", first.text);
    contract.check("POST", BOOKINGS, &first);
    assert!(first.headers.get("idempotent-replayed").is_none());
    let jobs = count(&app, "select count(*) from jobs").await;

    // the retry, spelt differently (field order, spacing, the same instant at another offset)
    let start = app
        .lesson_at(3, 10)
        .with_timezone(&chrono_tz::America::New_York);
    let respelt = format!(
        r#"{{ "start":"{}", "service_id":{}, "instructor_id":{} }}"#,
        start.to_rfc3339(),
        body["service_id"],
        body["instructor_id"]
    );
    let retry = post(
        &app,
        &student,
        Some("retry-1"),
        Body::Raw(Some("application/json"), respelt.into_bytes()),
    )
    .await;
    assert_eq!(retry.status, 201, "{}", retry.text);
    contract.check("POST", BOOKINGS, &retry);
    assert_eq!(retry.text, first.text, "the first body, byte for byte");
    assert_eq!(retry.headers["idempotent-replayed"], "true");
    assert_eq!(count(&app, "select count(*) from bookings").await, 1);
    assert_eq!(
        count(&app, "select count(*) from jobs").await,
        jobs,
        "no second set of emails"
    );

    // without the key the same request is a new one, and its slot is taken (by itself)
    let again = post(&app, &student, None, Body::Json(body.clone())).await;
    assert_eq!(again.status, 409, "{}", again.text);
    assert_eq!(code(&again), "booking_conflict");

    // the same key with another request
    let other = post(
        &app,
        &student,
        Some("retry-1"),
        Body::Json(lesson(&app, 3, 12).await),
    )
    .await;
    assert_eq!(other.status, 422, "{}", other.text);
    contract.check("POST", BOOKINGS, &other);
    assert_eq!(code(&other), "idempotency_key_reused");
    assert_eq!(
        other.json.as_ref().expect("json")["field"],
        "Idempotency-Key"
    );
    let with_notes = {
        let mut b = body.clone();
        b["notes"] = json!("bring music");
        b
    };
    let other = post(&app, &student, Some("retry-1"), Body::Json(with_notes)).await;
    assert_eq!(code(&other), "idempotency_key_reused", "{}", other.text);

    // keys are per user: another student's "retry-1" is another key
    let someone = app.other_student().await;
    let theirs = post(
        &app,
        &someone,
        Some("retry-1"),
        Body::Json(lesson(&app, 3, 14).await),
    )
    .await;
    assert_eq!(theirs.status, 201, "{}", theirs.text);
    assert_ne!(
        theirs.json.as_ref().expect("json")["id"],
        first.json.as_ref().expect("json")["id"]
    );

    // a refused request stores nothing: its key still works for a request that succeeds
    let refused = post(
        &app,
        &student,
        Some("retry-2"),
        Body::Json(lesson(&app, 3, 22).await),
    )
    .await;
    assert_eq!(code(&refused), "outside_availability", "{}", refused.text);
    let accepted = post(
        &app,
        &student,
        Some("retry-2"),
        Body::Json(lesson(&app, 3, 16).await),
    )
    .await;
    assert_eq!(accepted.status, 201, "{}", accepted.text);

    // keys the API does not take: 400, as the document says
    for key in [String::new(), "k".repeat(256), "tab\there".into()] {
        let answer = post(
            &app,
            &student,
            Some(&key),
            Body::Json(lesson(&app, 4, 10).await),
        )
        .await;
        assert_eq!(answer.status, 400, "{key:?}: {}", answer.text);
        contract.check("POST", BOOKINGS, &answer);
        assert_eq!(code(&answer), "invalid_idempotency_key");
    }
    let two_keys = app
        .http
        .post(format!("{}{BOOKINGS}", app.base))
        .bearer_auth(&student)
        .header("idempotency-key", "a")
        .header("idempotency-key", "b")
        .json(&lesson(&app, 4, 10).await)
        .send()
        .await
        .expect("request");
    assert_eq!(two_keys.status(), 400);
}

#[tokio::test]
async fn a_key_is_in_use_until_its_request_commits() {
    let app = TestApp::without_worker().await;
    let mut contract = Contract::fetch(&app).await;
    let student = app.student().await;
    let student_id = count(
        &app,
        "select id from users where email = 'student@example.com'",
    )
    .await;
    let body = lesson(&app, 3, 10).await;

    // hold the key as a request still running holds it
    let mut running = app.db.pool.begin().await.expect("transaction");
    assert!(
        api::idempotency::try_lock(&mut running, student_id, "in-flight")
            .await
            .expect("lock")
    );
    let answer = post(&app, &student, Some("in-flight"), Body::Json(body.clone())).await;
    assert_eq!(answer.status, 409, "{}", answer.text);
    contract.check("POST", BOOKINGS, &answer);
    assert_eq!(code(&answer), "idempotency_key_in_use");
    assert_eq!(count(&app, "select count(*) from bookings").await, 0);
    running.rollback().await.expect("rollback");
    let answer = post(&app, &student, Some("in-flight"), Body::Json(body)).await;
    assert_eq!(answer.status, 201, "{}", answer.text);

    // requests racing with one key: one booking; every answer is it or "in use", never a
    // conflict with itself
    let body = lesson(&app, 4, 10).await;
    let answers = futures::future::join_all(
        (0..8).map(|_| post(&app, &student, Some("race"), Body::Json(body.clone()))),
    )
    .await;
    let mut booked = None;
    for answer in &answers {
        match answer.status {
            201 => {
                let id = answer.json.as_ref().expect("json")["id"].clone();
                assert!(
                    booked.get_or_insert(id.clone()) == &id,
                    "two bookings: {answers:?}"
                );
            }
            409 => {
                assert_error_body(answer, "a racing request", "");
                assert_eq!(code(answer), "idempotency_key_in_use", "{}", answer.text);
            }
            other => panic!("{other}: {}", answer.text),
        }
    }
    assert!(booked.is_some(), "none of {answers:?} booked");
    assert_eq!(count(&app, "select count(*) from bookings").await, 2);
}

#[tokio::test]
async fn keys_expire_after_24_hours() {
    let start = Utc::now();
    let clock = TestClock::at(start);
    let app = TestApp::start_with(Options {
        clock: Arc::new(clock.clone()),
        start_worker: false,
        ..Options::default()
    })
    .await;
    let student = app.student().await;
    let ten = lesson(&app, 3, 10).await;
    let noon = lesson(&app, 3, 12).await;

    let first = post(&app, &student, Some("day-key"), Body::Json(ten.clone())).await;
    assert_eq!(first.status, 201, "{}", first.text);

    // a minute before the day is out the key is still taken
    clock.set(start + chrono::Duration::hours(24) - chrono::Duration::minutes(1));
    let answer = post(&app, &student, Some("day-key"), Body::Json(noon.clone())).await;
    assert_eq!(code(&answer), "idempotency_key_reused", "{}", answer.text);
    let answer = post(&app, &student, Some("day-key"), Body::Json(ten.clone())).await;
    assert_eq!(answer.status, 201);
    assert_eq!(answer.text, first.text);

    // past 24 hours it is forgotten: the same request runs again (and meets its own booking),
    // and another request may use the key
    clock.set(start + chrono::Duration::hours(24) + chrono::Duration::seconds(1));
    let answer = post(&app, &student, Some("day-key"), Body::Json(ten)).await;
    assert_eq!(code(&answer), "booking_conflict", "{}", answer.text);
    let answer = post(&app, &student, Some("day-key"), Body::Json(noon)).await;
    assert_eq!(answer.status, 201, "{}", answer.text);
    assert_ne!(answer.text, first.text);
    // the expired use was replaced, not kept beside the new one
    assert_eq!(
        count(&app, "select count(*) from idempotency_keys").await,
        1
    );
}
