//! Bad input and access: a clear 4xx with the JSON error body, never a 500.
use e2e::platform::TestApp;
use reqwest::Method;
use serde_json::{Value, json};

fn assert_error(status: u16, body: &Value, expected: u16, code: &str) {
    assert_eq!(status, expected, "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert!(
        body["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{body}"
    );
}

#[tokio::test]
async fn malformed_and_unknown_input_is_refused_clearly() {
    let app = TestApp::without_worker().await;
    let token = app.student().await;
    let url = format!("{}/api/v1/bookings", app.base);

    let response = app
        .http
        .post(&url)
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    assert_error(
        status,
        &response.json().await.unwrap(),
        400,
        "malformed_json",
    );

    let (status, body) = app
        .send(Method::POST, "/api/v1/bookings", Some(&token), Some(json!({"instructor_id": 1, "service_id": 1, "start": "2030-01-01T10:00:00Z", "hack": true})))
        .await;
    assert_error(status, &body, 422, "invalid_body");
    assert_eq!(body["field"], "hack");

    let (status, body) = app
        .send(
            Method::POST,
            "/api/v1/bookings",
            Some(&token),
            Some(json!({"instructor_id": "x", "service_id": 1, "start": "soon"})),
        )
        .await;
    assert_error(status, &body, 422, "invalid_body");

    let (status, body) = app
        .send(
            Method::POST,
            "/api/v1/bookings",
            Some(&token),
            Some(json!({"instructor_id": 1, "service_id": 1, "start": "2030-13-45T99:00:00Z"})),
        )
        .await;
    assert_error(status, &body, 422, "invalid_body");

    let (status, body) = app
        .send(Method::GET, "/api/v1/bookings/abc", Some(&token), None)
        .await;
    assert_error(status, &body, 400, "invalid_path");

    let (status, body) = app
        .send(Method::GET, "/api/v1/bookings/999999", Some(&token), None)
        .await;
    assert_error(status, &body, 404, "not_found");

    let huge = "x".repeat(200 * 1024);
    let (status, body) = app
        .send(Method::POST, "/api/v1/bookings", Some(&token), Some(json!({"instructor_id": 1, "service_id": 1, "start": "2030-01-01T10:00:00Z", "notes": huge})))
        .await;
    assert_error(status, &body, 413, "payload_too_large");

    let (status, body) = app
        .send(Method::POST, "/api/v1/bookings", Some(&token), Some(json!({"instructor_id": 1, "service_id": 1, "start": "2030-01-01T10:00:00Z", "notes": "'; drop table bookings; --"})))
        .await;
    assert!(status == 422 || status == 409, "{status} {body}");

    let (status, body) = app
        .book(&token, app.lesson_at(0, 0) - chrono::Duration::days(1))
        .await;
    assert_error(status, &body, 422, "too_soon");

    let (status, body) = app.book(&token, app.lesson_at(3, 22)).await;
    assert_error(status, &body, 422, "outside_availability");
}

#[tokio::test]
async fn access_is_refused_without_the_right_token() {
    let app = TestApp::without_worker().await;
    let student = app.student().await;
    let (status, booking) = app.book(&student, app.lesson_at(3, 9)).await;
    assert_eq!(status, 201);
    let id = booking["id"].as_i64().unwrap();

    let (status, body) = app
        .send(Method::GET, &format!("/api/v1/bookings/{id}"), None, None)
        .await;
    assert_error(status, &body, 401, "unauthorized");

    let (status, body) = app
        .send(
            Method::GET,
            &format!("/api/v1/bookings/{id}"),
            Some("not.a.token"),
            None,
        )
        .await;
    assert_error(status, &body, 401, "unauthorized");

    let forged = api::auth::JwtKeys::new("another-secret-of-enough-length", 60)
        .mint(1, shared::domain::Role::Admin, chrono::Utc::now())
        .unwrap();
    let (status, body) = app
        .send(
            Method::GET,
            &format!("/api/v1/bookings/{id}"),
            Some(&forged),
            None,
        )
        .await;
    assert_error(status, &body, 401, "unauthorized");

    let expired = api::auth::JwtKeys::new(&app.config.jwt_secret, 1)
        .mint(
            1,
            shared::domain::Role::Student,
            chrono::Utc::now() - chrono::Duration::hours(2),
        )
        .unwrap();
    let (status, body) = app
        .send(
            Method::GET,
            &format!("/api/v1/bookings/{id}"),
            Some(&expired),
            None,
        )
        .await;
    assert_error(status, &body, 401, "unauthorized");

    // another student cannot read or cancel it
    let other = app.other_student().await;
    let (status, body) = app
        .send(
            Method::GET,
            &format!("/api/v1/bookings/{id}"),
            Some(&other),
            None,
        )
        .await;
    assert_error(status, &body, 403, "forbidden");
    let (status, body) = app
        .send(
            Method::POST,
            &format!("/api/v1/bookings/{id}/cancel"),
            Some(&other),
            None,
        )
        .await;
    assert_error(status, &body, 403, "forbidden");
    let (status, list) = app
        .send(Method::GET, "/api/v1/bookings", Some(&other), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(list.as_array().map(Vec::len), Some(0));

    // an instructor cannot book, a student cannot reach admin endpoints
    let instructor = app.token("instructor@example.com").await;
    let (status, body) = app.book(&instructor, app.lesson_at(4, 9)).await;
    assert_error(status, &body, 403, "forbidden");
    let (status, body) = app
        .send(Method::GET, "/api/v1/admin/jobs", Some(&student), None)
        .await;
    assert_error(status, &body, 403, "forbidden");
    let admin = app.token("admin@example.com").await;
    let (status, _) = app
        .send(Method::GET, "/api/v1/admin/queues", Some(&admin), None)
        .await;
    assert_eq!(status, 200);

    let (status, body) = app.send(Method::GET, "/no/such/route", None, None).await;
    assert_error(status, &body, 404, "not_found");
}
