//! The ops dashboard at `/ops` and its JSON twin (issue 13).
//!
//! Over HTTP (cheap, in-process platform): sign-in and its cookie, sign-out, CSRF, roles,
//! the redirect to the login with the page asked for, refusals (409 with the job's state, a
//! bulk action without a filter), keyset pages, queue pauses (relay and fetch stop, and
//! stay stopped across a worker restart), schedule pause and "run now".
//!
//! In a browser (headless Chromium against the three binaries): the operator's round trip
//! from a dead letter to a success through the audit log, the viewer's page without actions
//! and a forged POST refused, an error holding `<script>` shown as text, screenshots of the
//! overview at desktop and phone width under `target/`.
use std::{collections::BTreeMap, time::Duration};

use e2e::{
    eventually,
    platform::{Options, TestApp},
    procs::Cluster,
    smtp::Mode,
    webdriver::{self, Browser},
};
use reqwest::{StatusCode, header};
use serde_json::{Value, json};
use shared::testing;

/// A client that shows redirects instead of following them.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// A user with `role` (created, or moved to that role) and a bearer token for them.
async fn user_with_role(pool: &sqlx::PgPool, jwt_secret: &str, email: &str, role: &str) -> String {
    let (id, role): (i64, shared::domain::Role) = sqlx::query_as(
        "insert into users (email, full_name, role, timezone) values ($1, 'Ops Person', $2, 'UTC')
         on conflict (email) do update set role = excluded.role returning id, role",
    )
    .bind(email)
    .bind(role)
    .fetch_one(pool)
    .await
    .expect("user");
    api::auth::JwtKeys::new(jwt_secret, 60)
        .mint(id, role, chrono::Utc::now())
        .expect("token")
}

/// A dead job of `queue` whose last (and only) attempt failed with `error`.
async fn dead_job(pool: &sqlx::PgPool, queue: &str, error: &str) -> i64 {
    let id: i64 = sqlx::query_scalar(
        "insert into jobs (queue, payload, dedupe_key, status, attempts, last_error, finished_at)
         values ($1, '{\"probe\": true}', $2, 'dead', 1, $3, now()) returning id",
    )
    .bind(queue)
    .bind(testing::unique_name("dead"))
    .bind(error)
    .fetch_one(pool)
    .await
    .expect("dead job");
    sqlx::query("insert into job_errors (job_id, attempt, error) values ($1, 1, $2)")
        .bind(id)
        .bind(error)
        .execute(pool)
        .await
        .expect("error row");
    id
}

async fn job_status(pool: &sqlx::PgPool, id: i64) -> String {
    sqlx::query_scalar("select status from jobs where id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .expect("job status")
}

/// A signed-in dashboard session: its cookie and its form token.
struct Signed {
    cookie: String,
    csrf: String,
}

/// The value of `name="csrf"` in a page.
fn csrf_of(html: &str) -> String {
    let at = html
        .find("name=\"csrf\" value=\"")
        .unwrap_or_else(|| panic!("no csrf field in {html}"));
    let rest = &html[at + "name=\"csrf\" value=\"".len()..];
    rest[..rest.find('"').expect("end of value")].to_string()
}

async fn sign_in(base: &str, token: &str) -> Signed {
    let http = client();
    let answer = http
        .post(format!("{base}/ops/login"))
        .form(&[("token", token), ("next", "/ops")])
        .send()
        .await
        .expect("login");
    assert_eq!(answer.status(), StatusCode::SEE_OTHER, "sign-in redirects");
    let set = answer
        .headers()
        .get(header::SET_COOKIE)
        .expect("a session cookie")
        .to_str()
        .expect("ascii")
        .to_string();
    let cookie = set.split(';').next().expect("name=value").to_string();
    let page = http
        .get(format!("{base}/ops"))
        .header(header::COOKIE, &cookie)
        .send()
        .await
        .expect("overview");
    assert_eq!(page.status(), StatusCode::OK);
    let csrf = csrf_of(&page.text().await.expect("page"));
    Signed { cookie, csrf }
}

impl Signed {
    async fn get(&self, base: &str, path: &str) -> (StatusCode, String) {
        let answer = client()
            .get(format!("{base}{path}"))
            .header(header::COOKIE, &self.cookie)
            .send()
            .await
            .expect("get");
        (answer.status(), answer.text().await.unwrap_or_default())
    }

    /// POSTs a form with this session's CSRF token added.
    async fn post(&self, base: &str, path: &str, fields: &[(&str, &str)]) -> reqwest::Response {
        let mut form: Vec<(&str, &str)> = vec![("csrf", &self.csrf)];
        form.extend_from_slice(fields);
        client()
            .post(format!("{base}{path}"))
            .header(header::COOKIE, &self.cookie)
            .form(&form)
            .send()
            .await
            .expect("post")
    }
}

fn location(answer: &reqwest::Response) -> String {
    answer
        .headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn sign_in_sets_a_strict_http_only_cookie_and_sign_out_ends_the_session() {
    let app = TestApp::without_worker().await;
    let token = user_with_role(
        &app.db.pool,
        &app.config.jwt_secret,
        "viewer@ops.test",
        "ops_viewer",
    )
    .await;
    let http = client();

    let form = http
        .get(format!("{}/ops/login", app.base))
        .send()
        .await
        .expect("form");
    assert_eq!(form.status(), StatusCode::OK);
    let html = form.text().await.expect("form");
    assert!(html.contains("name=\"token\""), "{html}");

    let bad = http
        .post(format!("{}/ops/login", app.base))
        .form(&[("token", "not.a.token")])
        .send()
        .await
        .expect("bad login");
    assert_eq!(bad.status(), StatusCode::UNAUTHORIZED);
    assert!(bad.headers().get(header::SET_COOKIE).is_none());

    let answer = http
        .post(format!("{}/ops/login", app.base))
        .form(&[("token", token.as_str()), ("next", "/ops/jobs?state=dead")])
        .send()
        .await
        .expect("login");
    assert_eq!(answer.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        location(&answer),
        "/ops/jobs?state=dead",
        "back to the page asked for"
    );
    let set = answer.headers()[header::SET_COOKIE]
        .to_str()
        .expect("ascii")
        .to_string();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/ops", "Secure"] {
        assert!(set.contains(flag), "cookie lacks {flag}: {set}");
    }
    let cookie = set.split(';').next().expect("cookie").to_string();
    // only a hash of the token is stored
    let stored: String = sqlx::query_scalar("select token_hash from ops_sessions")
        .fetch_one(&app.db.pool)
        .await
        .expect("session row");
    assert!(!cookie.contains(&stored));

    let signed = Signed {
        csrf: csrf_of(
            &Signed {
                cookie: cookie.clone(),
                csrf: String::new(),
            }
            .get(&app.base, "/ops")
            .await
            .1,
        ),
        cookie,
    };
    let (status, _) = signed.get(&app.base, "/ops/jobs?state=dead").await;
    assert_eq!(status, StatusCode::OK);

    // sign-out is an action too: without the form token it is refused
    let forged = client()
        .post(format!("{}/ops/logout", app.base))
        .header(header::COOKIE, &signed.cookie)
        .form(&[("csrf", "")])
        .send()
        .await
        .expect("logout");
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    let out = signed.post(&app.base, "/ops/logout", &[]).await;
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&out), "/ops/login");
    assert!(
        out.headers()[header::SET_COOKIE]
            .to_str()
            .expect("ascii")
            .contains("Max-Age=0")
    );
    let after = client()
        .get(format!("{}/ops", app.base))
        .header(header::COOKIE, &signed.cookie)
        .send()
        .await
        .expect("after");
    assert_eq!(
        after.status(),
        StatusCode::SEE_OTHER,
        "the session ended on the server"
    );
}

#[tokio::test]
async fn without_a_session_a_page_redirects_to_the_login_with_the_page_it_came_from() {
    let app = TestApp::without_worker().await;
    let answer = client()
        .get(format!(
            "{}/ops/jobs?state=dead&queue=booking_email",
            app.base
        ))
        .send()
        .await
        .expect("page");
    assert_eq!(answer.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        location(&answer),
        "/ops/login?next=/ops/jobs%3Fstate%3Ddead%26queue%3Dbooking_email"
    );
    // an action whose session expired goes back to the page the form was on
    let post = client()
        .post(format!("{}/ops/jobs/1/retry", app.base))
        .header(header::REFERER, format!("{}/ops/jobs/1", app.base))
        .form(&[("csrf", "x")])
        .send()
        .await
        .expect("post");
    assert_eq!(post.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&post), "/ops/login?next=/ops/jobs/1");
    // an expired session is no session
    let token = user_with_role(
        &app.db.pool,
        &app.config.jwt_secret,
        "viewer@ops.test",
        "ops_viewer",
    )
    .await;
    let signed = sign_in(&app.base, &token).await;
    sqlx::query("update ops_sessions set expires_at = now() - interval '1 second'")
        .execute(&app.db.pool)
        .await
        .expect("expire");
    let answer = client()
        .get(format!("{}/ops/schedules", app.base))
        .header(header::COOKIE, &signed.cookie)
        .send()
        .await
        .expect("page");
    assert_eq!(location(&answer), "/ops/login?next=/ops/schedules");
    // and the login form keeps where to go, but never another host
    let (status, html) = (
        StatusCode::OK,
        client()
            .get(format!("{}/ops/login?next=https://evil.example/", app.base))
            .send()
            .await
            .expect("form")
            .text()
            .await
            .expect("form"),
    );
    assert_eq!(status, StatusCode::OK);
    assert!(!html.contains("evil.example"), "{html}");
}

#[tokio::test]
async fn students_and_instructors_are_refused_and_the_ops_roles_are_not() {
    let app = TestApp::without_worker().await;
    let student = app.student().await;
    let instructor = app.token("instructor@example.com").await;
    for token in [&student, &instructor] {
        let answer = client()
            .post(format!("{}/ops/login", app.base))
            .form(&[("token", token.as_str())])
            .send()
            .await
            .expect("login");
        assert_eq!(answer.status(), StatusCode::FORBIDDEN);
        assert!(answer.headers().get(header::SET_COOKIE).is_none());
        let (status, _) = app
            .send(
                reqwest::Method::GET,
                "/api/v1/admin/overview",
                Some(token),
                None,
            )
            .await;
        assert_eq!(status, 403);
    }
    // a viewer signed in, then demoted to student: refused at once
    let viewer = user_with_role(
        &app.db.pool,
        &app.config.jwt_secret,
        "viewer@ops.test",
        "ops_viewer",
    )
    .await;
    let signed = sign_in(&app.base, &viewer).await;
    sqlx::query("update users set role = 'student' where email = 'viewer@ops.test'")
        .execute(&app.db.pool)
        .await
        .expect("demote");
    assert_eq!(signed.get(&app.base, "/ops").await.0, StatusCode::FORBIDDEN);

    // the JSON twin: viewers read, operators and admins act
    let viewer = user_with_role(
        &app.db.pool,
        &app.config.jwt_secret,
        "viewer2@ops.test",
        "ops_viewer",
    )
    .await;
    let operator = user_with_role(
        &app.db.pool,
        &app.config.jwt_secret,
        "operator@ops.test",
        "ops_operator",
    )
    .await;
    let admin = app.token("admin@example.com").await;
    let dead = dead_job(&app.db.pool, "ops_test", "boom").await;
    for token in [&viewer, &operator, &admin] {
        for path in [
            "/api/v1/admin/overview",
            "/api/v1/admin/jobs",
            "/api/v1/admin/audit",
            "/api/v1/admin/queues",
        ] {
            let (status, body) = app
                .send(reqwest::Method::GET, path, Some(token), None)
                .await;
            assert_eq!(status, 200, "{path}: {body}");
        }
    }
    let retry = format!("/api/v1/admin/jobs/{dead}/retry");
    let (status, _) = app
        .send(reqwest::Method::POST, &retry, Some(&viewer), None)
        .await;
    assert_eq!(status, 403, "a viewer does not act");
    assert_eq!(job_status(&app.db.pool, dead).await, "dead");
    let (status, body) = app
        .send(reqwest::Method::POST, &retry, Some(&operator), None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(job_status(&app.db.pool, dead).await, "pending");
    let (_, audit) = app
        .send(
            reqwest::Method::GET,
            "/api/v1/admin/audit",
            Some(&viewer),
            None,
        )
        .await;
    let operator_id: i64 =
        sqlx::query_scalar("select id from users where email = 'operator@ops.test'")
            .fetch_one(&app.db.pool)
            .await
            .expect("operator id");
    let entry = &audit[0];
    assert_eq!(entry["action"], "ops.job.retry", "{audit}");
    assert_eq!(entry["actor"], operator_id.to_string());
    assert_eq!(entry["detail"]["job_ids"], json!([dead]));
}

#[tokio::test]
async fn a_viewer_sees_no_action_and_a_forged_post_is_refused() {
    let app = TestApp::without_worker().await;
    let dead = dead_job(&app.db.pool, "ops_test", "boom").await;
    let viewer = sign_in(
        &app.base,
        &user_with_role(
            &app.db.pool,
            &app.config.jwt_secret,
            "viewer@ops.test",
            "ops_viewer",
        )
        .await,
    )
    .await;
    let operator = sign_in(
        &app.base,
        &user_with_role(
            &app.db.pool,
            &app.config.jwt_secret,
            "operator@ops.test",
            "ops_operator",
        )
        .await,
    )
    .await;

    for path in [
        "/ops".to_string(),
        format!("/ops/jobs/{dead}"),
        "/ops/jobs?state=dead".into(),
        "/ops/schedules".into(),
    ] {
        let (status, html) = viewer.get(&app.base, &path).await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            !html.contains("data-action"),
            "{path} shows a viewer an action"
        );
        let (_, html) = operator.get(&app.base, &path).await;
        if path.contains("jobs") {
            assert!(
                html.contains("data-action"),
                "{path} shows an operator no action"
            );
        }
    }
    // the viewer's own form token does not make a viewer an operator
    let forged = viewer
        .post(&app.base, &format!("/ops/jobs/{dead}/retry"), &[])
        .await;
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    let forged = viewer
        .post(&app.base, "/ops/queues/booking_email/pause", &[])
        .await;
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    // an operator's session without the form token (a cross-site form) is refused too
    let cross_site = client()
        .post(format!("{}/ops/jobs/{dead}/retry", app.base))
        .header(header::COOKIE, &operator.cookie)
        .form(&[("csrf", "guessed")])
        .send()
        .await
        .expect("post");
    assert_eq!(cross_site.status(), StatusCode::FORBIDDEN);
    assert_eq!(job_status(&app.db.pool, dead).await, "dead");
    let done = operator
        .post(&app.base, &format!("/ops/jobs/{dead}/retry"), &[])
        .await;
    assert_eq!(done.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&done), format!("/ops/jobs/{dead}?notice=retried"));
    assert_eq!(job_status(&app.db.pool, dead).await, "pending");
    let (_, audit) = viewer.get(&app.base, "/ops/audit").await;
    assert!(
        audit.contains("ops.job.retry") && audit.contains(&format!("job {dead}")),
        "{audit}"
    );
}

#[tokio::test]
async fn retrying_a_done_job_is_a_409_naming_its_state_and_an_error_is_text() {
    let app = TestApp::without_worker().await;
    let done: i64 = sqlx::query_scalar(
        "insert into jobs (queue, payload, dedupe_key, status, finished_at)
         values ('ops_test', '{}', 'done-1', 'done', now()) returning id",
    )
    .fetch_one(&app.db.pool)
    .await
    .expect("done job");
    let xss = dead_job(
        &app.db.pool,
        "ops_test",
        "<script>alert('x')</script> & \"quoted\"",
    )
    .await;
    let operator_token = user_with_role(
        &app.db.pool,
        &app.config.jwt_secret,
        "operator@ops.test",
        "ops_operator",
    )
    .await;
    let operator = sign_in(&app.base, &operator_token).await;

    let answer = operator
        .post(&app.base, &format!("/ops/jobs/{done}/retry"), &[])
        .await;
    assert_eq!(answer.status(), StatusCode::CONFLICT);
    let html = answer.text().await.expect("page");
    assert!(html.contains("this job is done"), "{html}");
    let (status, body) = app
        .send(
            reqwest::Method::POST,
            &format!("/api/v1/admin/jobs/{done}/retry"),
            Some(&operator_token),
            None,
        )
        .await;
    assert_eq!(status, 409);
    assert_eq!(body["code"], "invalid_state");
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.ends_with("this job is done")),
        "{body}"
    );
    // refusals are audited too
    let refused: i64 = sqlx::query_scalar(
        "select count(*) from audit_log where action = 'ops.job.retry' and outcome = 'refused'",
    )
    .fetch_one(&app.db.pool)
    .await
    .expect("audit");
    assert_eq!(refused, 2);

    for path in [
        format!("/ops/jobs/{xss}"),
        "/ops/jobs?state=dead".to_string(),
    ] {
        let (_, html) = operator.get(&app.base, &path).await;
        assert!(
            !html.contains("<script>alert"),
            "{path} renders the error as markup"
        );
        assert!(html.contains("&lt;script&gt;alert("), "{path}: {html}");
    }
}

#[tokio::test]
async fn a_bulk_action_without_a_filter_asks_for_all_and_shows_the_count() {
    let app = TestApp::without_worker().await;
    // 1,200 dead letters: three batches of at most 500
    sqlx::query(
        "insert into jobs (queue, payload, dedupe_key, status, attempts, last_error, finished_at)
         select case when i % 4 = 0 then 'other_queue' else 'ops_test' end, '{}', 'bulk-' || i, 'dead', 1,
                'smtp 550 mailbox unavailable', now()
           from generate_series(1, 1200) i",
    )
    .execute(&app.db.pool)
    .await
    .expect("dead letters");
    let token = user_with_role(
        &app.db.pool,
        &app.config.jwt_secret,
        "operator@ops.test",
        "ops_operator",
    )
    .await;
    let operator = sign_in(&app.base, &token).await;

    // the JSON twin: no filter but the state, and no "all": refused, with the count
    let (status, body) = app
        .send(
            reqwest::Method::POST,
            "/api/v1/admin/jobs/bulk",
            Some(&token),
            Some(json!({"action": "retry", "status": "dead"})),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["code"], "filter_required");
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("all 1200 dead jobs")),
        "{body}"
    );
    let (_, count) = app
        .send(
            reqwest::Method::GET,
            "/api/v1/admin/jobs/count?status=dead&queue=other_queue",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(count["count"], 300);
    // a state the action does not apply to
    let (status, body) = app
        .send(
            reqwest::Method::POST,
            "/api/v1/admin/jobs/bulk",
            Some(&token),
            Some(json!({"action": "discard", "status": "done", "all": true})),
        )
        .await;
    assert_eq!(
        (status, body["code"].clone()),
        (422, json!("invalid_state"))
    );

    // the page: first the count, and the explicit "all"
    let answer = operator
        .post(
            &app.base,
            "/ops/jobs/bulk",
            &[("action", "retry"), ("state", "dead")],
        )
        .await;
    assert_eq!(answer.status(), StatusCode::OK);
    let html = answer.text().await.expect("page");
    assert!(
        html.contains("Retry 1200 jobs?") && html.contains("name=\"all\""),
        "{html}"
    );
    // confirming without ticking "all" is refused
    let answer = operator
        .post(
            &app.base,
            "/ops/jobs/bulk",
            &[("action", "retry"), ("state", "dead"), ("confirm", "yes")],
        )
        .await;
    assert_eq!(answer.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(app.jobs_in("dead").await, 1200);

    // a filter narrows it: no "all" needed
    let answer = operator
        .post(
            &app.base,
            "/ops/jobs/bulk",
            &[
                ("action", "discard"),
                ("state", "dead"),
                ("queue", "other_queue"),
                ("confirm", "yes"),
            ],
        )
        .await;
    assert_eq!(answer.status(), StatusCode::OK);
    let html = answer.text().await.expect("page");
    assert!(html.contains("300 of 300"), "{html}");
    assert_eq!(app.jobs_in("skipped").await, 300);

    let answer = operator
        .post(
            &app.base,
            "/ops/jobs/bulk",
            &[
                ("action", "retry"),
                ("state", "dead"),
                ("confirm", "yes"),
                ("all", "yes"),
            ],
        )
        .await;
    assert_eq!(answer.status(), StatusCode::OK);
    assert!(answer.text().await.expect("page").contains("900 of 900"));
    assert_eq!(app.jobs_in("pending").await, 900);
    assert_eq!(app.jobs_in("dead").await, 0);
    // one audit entry per batch, naming its jobs
    let batches: Vec<(i64, String)> = sqlx::query_as(
        "select jsonb_array_length(detail->'job_ids')::bigint, action from audit_log
          where action like 'ops.jobs.bulk_%' order by id",
    )
    .fetch_all(&app.db.pool)
    .await
    .expect("audit");
    assert_eq!(
        batches,
        vec![
            (300, "ops.jobs.bulk_discard".to_string()),
            (500, "ops.jobs.bulk_retry".to_string()),
            (400, "ops.jobs.bulk_retry".to_string()),
        ]
    );
}

#[tokio::test]
async fn job_lists_are_paged_by_keyset() {
    let app = TestApp::without_worker().await;
    sqlx::query(
        "insert into jobs (queue, payload, dedupe_key, status, last_error, finished_at)
         select 'ops_test', jsonb_build_object('kind', case when i % 2 = 0 then 'even' else 'odd' end),
                'page-' || i, 'dead', 'e', now()
           from generate_series(1, 120) i",
    )
    .execute(&app.db.pool)
    .await
    .expect("jobs");
    let viewer_token = user_with_role(
        &app.db.pool,
        &app.config.jwt_secret,
        "viewer@ops.test",
        "ops_viewer",
    )
    .await;
    let viewer = sign_in(&app.base, &viewer_token).await;
    let ids_of = |html: &str| -> Vec<i64> {
        html.split("data-job=\"")
            .skip(1)
            .map(|s| s[..s.find('"').expect("end")].parse().expect("id"))
            .collect()
    };
    let mut seen = Vec::new();
    let mut path = "/ops/jobs?state=dead".to_string();
    loop {
        let (status, html) = viewer.get(&app.base, &path).await;
        assert_eq!(status, StatusCode::OK);
        let ids = ids_of(&html);
        assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first");
        seen.extend(ids);
        let Some(at) = html.find("rel=\"next\" href=\"") else {
            break;
        };
        let rest = &html[at + "rel=\"next\" href=\"".len()..];
        path = rest[..rest.find('"').expect("end")].replace("&amp;", "&");
        assert!(path.contains("before="), "{path}");
    }
    assert_eq!(seen.len(), 120, "every job once");
    seen.dedup();
    assert_eq!(seen.len(), 120);

    // the JSON twin pages the same way, and filters
    let (_, first) = app
        .send(
            reqwest::Method::GET,
            "/api/v1/admin/jobs?limit=50&kind=even",
            Some(&viewer_token),
            None,
        )
        .await;
    let first = first.as_array().expect("page").clone();
    assert_eq!(first.len(), 50);
    let last = first.last().expect("last")["id"].as_i64().expect("id");
    let (_, second) = app
        .send(
            reqwest::Method::GET,
            &format!("/api/v1/admin/jobs?limit=50&kind=even&before={last}"),
            Some(&viewer_token),
            None,
        )
        .await;
    let second = second.as_array().expect("page");
    assert_eq!(second.len(), 10);
    assert!(
        second
            .iter()
            .all(|j| j["id"].as_i64() < Some(last) && j["payload"]["kind"] == "even")
    );
}

/// The booking confirmation job records (the reminders wait for their day).
async fn booking_jobs(
    pool: &sqlx::PgPool,
) -> BTreeMap<i64, (String, Option<chrono::DateTime<chrono::Utc>>)> {
    let rows: Vec<(i64, String, Option<chrono::DateTime<chrono::Utc>>)> = sqlx::query_as(
        "select id, status, started_at from jobs
              where queue = 'booking_email' and payload->>'kind' = 'confirmation'",
    )
    .fetch_all(pool)
    .await
    .expect("jobs");
    rows.into_iter().map(|(id, s, t)| (id, (s, t))).collect()
}

#[tokio::test]
async fn a_paused_queue_is_neither_relayed_nor_fetched_and_stays_paused_across_a_restart() {
    let mut app = TestApp::start_with(Options::default()).await;
    let operator = user_with_role(
        &app.db.pool,
        &app.config.jwt_secret,
        "operator@ops.test",
        "ops_operator",
    )
    .await;
    let (status, body) = app
        .send(
            reqwest::Method::POST,
            "/api/v1/admin/queues/booking_email/pause",
            Some(&operator),
            None,
        )
        .await;
    assert_eq!(
        (status, body["changed"].clone()),
        (200, json!(true)),
        "{body}"
    );

    // the relay leaves the paused queue's records in the outbox
    let student = app.student().await;
    let (status, booking) = app.book(&student, app.lesson_at(3, 10)).await;
    assert_eq!(status, 201, "{booking}");
    // the worker reads the pauses every 500 ms and the relay polls every 200 ms: two
    // seconds is many rounds of both
    tokio::time::sleep(Duration::from_secs(2)).await;
    let jobs = booking_jobs(&app.db.pool).await;
    assert_eq!(jobs.len(), 2, "{jobs:?}");
    assert!(
        jobs.values().all(|(s, _)| s == "pending"),
        "relayed while paused: {jobs:?}"
    );

    // what is already in Redis is not fetched: hand one record over as the relay would
    let (&id, _) = jobs.iter().next().expect("a job");
    let payload: Value = sqlx::query_scalar("select payload from jobs where id = $1")
        .bind(id)
        .fetch_one(&app.db.pool)
        .await
        .expect("payload");
    sqlx::query("update jobs set status = 'enqueued', enqueued_at = now(), pushes = pushes + 1 where id = $1")
        .bind(id)
        .execute(&app.db.pool)
        .await
        .expect("enqueue");
    let pushes: i32 = sqlx::query_scalar("select pushes from jobs where id = $1")
        .bind(id)
        .fetch_one(&app.db.pool)
        .await
        .expect("pushes");
    let mut redis = shared::queue::connect(&app.config.redis_url)
        .await
        .expect("redis");
    let config = shared::queue::queue_config(&app.prefix, "booking_email", Duration::from_secs(1));
    let envelope = serde_json::to_vec(&json!({"job_id": id, "args": payload})).expect("json");
    shared::queue::push(
        &mut redis,
        &config,
        &[shared::queue::Outgoing {
            task_id: format!("{id}.{pushes}"),
            payload: envelope,
        }],
    )
    .await
    .expect("push");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        booking_jobs(&app.db.pool).await[&id],
        ("enqueued".to_string(), None),
        "fetched while paused"
    );
    assert_eq!(app.smtp.count(), 0);

    // a restart of the worker: still paused (the state is in Postgres)
    app.stop_worker().await;
    app.start_worker().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let jobs = booking_jobs(&app.db.pool).await;
    assert!(
        jobs.values().all(|(s, t)| s != "done" && t.is_none()),
        "ran after a restart while paused: {jobs:?}"
    );

    let (status, body) = app
        .send(
            reqwest::Method::GET,
            "/api/v1/admin/queues",
            Some(&operator),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let view = body
        .as_array()
        .expect("queues")
        .iter()
        .find(|q| q["queue"] == "booking_email")
        .cloned()
        .expect("queue");
    assert_eq!(view["paused"], true, "{view}");

    // resume: both the relayed one and the outbox's go through, and both emails are sent
    let (status, _) = app
        .send(
            reqwest::Method::POST,
            "/api/v1/admin/queues/booking_email/resume",
            Some(&operator),
            None,
        )
        .await;
    assert_eq!(status, 200);
    eventually(
        Duration::from_secs(20),
        "both jobs done after the resume",
        || async {
            booking_jobs(&app.db.pool)
                .await
                .values()
                .all(|(s, _)| s == "done")
        },
    )
    .await;
    assert_eq!(app.smtp.count(), 2);
    let actions: Vec<String> = sqlx::query_scalar(
        "select action from audit_log where action like 'ops.queue.%' order by id",
    )
    .fetch_all(&app.db.pool)
    .await
    .expect("audit");
    assert_eq!(actions, ["ops.queue.pause", "ops.queue.resume"]);
}

#[tokio::test]
async fn a_paused_schedule_fires_nothing_and_run_now_goes_through_the_leader() {
    use chrono::TimeZone;
    let app = TestApp::without_worker().await;
    let operator = user_with_role(
        &app.db.pool,
        &app.config.jwt_secret,
        "operator@ops.test",
        "ops_operator",
    )
    .await;
    // the retention sweep every minute, in UTC
    let schedules = scheduler::schedules::effective([
        (
            "SCHEDULE_RETENTION_SWEEP".to_string(),
            "* * * * *".to_string(),
        ),
        ("SCHEDULE_RETENTION_SWEEP_TZ".to_string(), "UTC".to_string()),
    ])
    .expect("schedules");
    let settings = scheduler::Settings::from_vars(
        [
            ("SCHEDULER_TICK_MS", "100"),
            ("SCHEDULER_LEASE_MS", "5000"),
            ("SCHEDULER_INSTANCE", "ops-test"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string())),
    )
    .expect("settings");
    let redis = shared::queue::connect(&app.config.redis_url)
        .await
        .expect("redis");
    let lease = scheduler::Lease::new(redis, &app.prefix, "ops-test", settings.lease);
    let mut replica = scheduler::Scheduler::new(
        app.db.pool.clone(),
        lease,
        schedules,
        app.clock.clone(),
        &settings,
    );
    let t0 = chrono::Utc
        .with_ymd_and_hms(2030, 1, 1, 12, 0, 30)
        .single()
        .expect("t0");
    let sweeps = |pool: sqlx::PgPool| async move {
        sqlx::query_scalar::<_, i64>("select count(*) from jobs where schedule = 'retention_sweep'")
            .fetch_one(&pool)
            .await
            .expect("count")
    };
    replica.tick(t0).await;
    assert_eq!(
        sweeps(app.db.pool.clone()).await,
        0,
        "a new schedule fires no backlog"
    );

    let pause = "/api/v1/admin/schedules/retention_sweep/pause";
    let (status, body) = app
        .send(reqwest::Method::POST, pause, Some(&operator), None)
        .await;
    assert_eq!(
        (status, body["paused"].clone()),
        (200, json!(true)),
        "{body}"
    );
    let (status, _) = app
        .send(
            reqwest::Method::POST,
            "/api/v1/admin/schedules/nope/pause",
            Some(&operator),
            None,
        )
        .await;
    assert_eq!(status, 404);
    replica.tick(t0 + chrono::Duration::minutes(1)).await;
    assert_eq!(
        sweeps(app.db.pool.clone()).await,
        0,
        "a paused schedule fired its slot"
    );
    let (_, listed) = app
        .send(
            reqwest::Method::GET,
            "/api/v1/admin/schedules",
            Some(&operator),
            None,
        )
        .await;
    let sweep = listed
        .as_array()
        .expect("schedules")
        .iter()
        .find(|s| s["name"] == "retention_sweep")
        .cloned()
        .expect("sweep");
    assert_eq!(sweep["paused"], true);
    assert_eq!(sweep["next_fires"], json!([]));

    // run now, while paused: the leader carries it out on its next tick
    let (status, body) = app
        .send(
            reqwest::Method::POST,
            "/api/v1/admin/schedules/retention_sweep/trigger",
            Some(&operator),
            None,
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let request = body["request_id"].as_i64().expect("request id");
    replica.tick(t0 + chrono::Duration::seconds(70)).await;
    let done = shared::schedule::triggers::get(&app.db.pool, request)
        .await
        .expect("request")
        .expect("row");
    let job = done.job_id.expect("the leader enqueued the run");
    let (queue, schedule): (String, String) =
        sqlx::query_as("select queue, schedule from jobs where id = $1")
            .bind(job)
            .fetch_one(&app.db.pool)
            .await
            .expect("job");
    assert_eq!(
        (queue.as_str(), schedule.as_str()),
        ("retention_sweep", "retention_sweep")
    );
    // carried out once
    replica.tick(t0 + chrono::Duration::seconds(75)).await;
    assert_eq!(sweeps(app.db.pool.clone()).await, 1);

    // the pause is in Postgres: a fresh replica honours it too
    let redis = shared::queue::connect(&app.config.redis_url)
        .await
        .expect("redis");
    let lease = scheduler::Lease::new(
        redis,
        &testing::unique_name("t"),
        "ops-test-2",
        settings.lease,
    );
    let schedules = scheduler::schedules::effective([
        (
            "SCHEDULE_RETENTION_SWEEP".to_string(),
            "* * * * *".to_string(),
        ),
        ("SCHEDULE_RETENTION_SWEEP_TZ".to_string(), "UTC".to_string()),
    ])
    .expect("schedules");
    let mut fresh = scheduler::Scheduler::new(
        app.db.pool.clone(),
        lease,
        schedules,
        app.clock.clone(),
        &settings,
    );
    fresh.tick(t0 + chrono::Duration::minutes(2)).await;
    assert_eq!(
        sweeps(app.db.pool.clone()).await,
        1,
        "a restarted scheduler fired a paused schedule"
    );

    let (status, _) = app
        .send(
            reqwest::Method::POST,
            "/api/v1/admin/schedules/retention_sweep/resume",
            Some(&operator),
            None,
        )
        .await;
    assert_eq!(status, 200);
    fresh.tick(t0 + chrono::Duration::minutes(3)).await;
    assert_eq!(
        sweeps(app.db.pool.clone()).await,
        2,
        "resumed: the next slot fires (and only it)"
    );
    let actions: Vec<String> = sqlx::query_scalar(
        "select action from audit_log where action like 'ops.schedule.%' order by id",
    )
    .fetch_all(&app.db.pool)
    .await
    .expect("audit");
    assert_eq!(
        actions,
        [
            "ops.schedule.pause",
            "ops.schedule.trigger",
            "ops.schedule.resume"
        ]
    );
}

// ---- in a browser ---------------------------------------------------------------------------

/// Chromium is required in CI; elsewhere a missing browser skips the test, loudly.
fn browser_or_skip() -> bool {
    if webdriver::available() {
        return true;
    }
    let message = format!(
        "{} or {} is missing: install Debian's chromium and chromium-driver (ops/test does)",
        webdriver::CHROMIUM,
        webdriver::CHROMEDRIVER
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{message}");
    }
    eprintln!("\n!!!!! SKIPPED the dashboard browser test: {message} !!!!!\n");
    false
}

/// `api mint-token --email E --role R`, the binary, against the cluster's database.
async fn mint(cluster: &Cluster, email: &str, role: &str) -> String {
    let output = tokio::process::Command::new(e2e::procs::bin_dir().join("api"))
        .args(["mint-token", "--email", email, "--role", role])
        .envs(cluster.env.iter().cloned())
        .output()
        .await
        .expect("api mint-token");
    assert!(
        output.status.success(),
        "mint-token: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    // the token alone, so that `TOKEN=$(api mint-token ...)` works
    let token = String::from_utf8(output.stdout).expect("utf-8");
    let token = token.trim();
    assert_eq!(token.split('.').count(), 3, "not a lone JWT: {token:?}");
    token.to_string()
}

async fn browser_sign_in(browser: &Browser, base: &str, token: &str) {
    browser.goto(&format!("{base}/ops")).await;
    assert!(
        browser.url().await.contains("/ops/login?next=/ops"),
        "{}",
        browser.url().await
    );
    let field = browser.find("textarea[name=token]").await;
    browser.type_into(&field, token).await;
    let submit = browser.find("form.login button[type=submit]").await;
    browser.click(&submit).await;
    browser.find("#live").await;
}

#[tokio::test]
async fn in_a_browser_an_operator_brings_a_dead_letter_back_and_a_viewer_cannot() {
    if !browser_or_skip() {
        return;
    }
    let mut cluster = Cluster::new(testing::redis_url(), &[("OPS_COOKIE_SECURE", "false")]).await;
    let api = cluster.api().await;
    let _worker = cluster.worker().await;
    let base = format!("http://127.0.0.1:{}", api.port);
    let operator = mint(&cluster, "operator@ops.test", "ops_operator").await;
    let viewer = mint(&cluster, "viewer@ops.test", "ops_viewer").await;
    // the minted tokens sign in (over plain HTTP first: a failure here is not the browser's)
    let answer = client()
        .post(format!("{base}/ops/login"))
        .form(&[("token", operator.as_str())])
        .send()
        .await
        .expect("login");
    assert_eq!(
        answer.status(),
        StatusCode::SEE_OTHER,
        "{operator}: {:?}",
        answer.text().await
    );

    // a fault: the SMTP server refuses every message for good, so the booking's
    // confirmations fail permanently and become dead letters
    cluster.smtp.set_mode(Mode::Permanent);
    let student = cluster.token("student@example.com").await;
    let instructor_id: i64 =
        sqlx::query_scalar("select id from users where email = 'instructor@example.com'")
            .fetch_one(&cluster.db.pool)
            .await
            .expect("instructor");
    let service_id: i64 = sqlx::query_scalar("select id from services limit 1")
        .fetch_one(&cluster.db.pool)
        .await
        .expect("service");
    let start = e2e::procs::lesson_slot(0);
    let booked = client()
        .post(format!("{base}/api/v1/bookings"))
        .bearer_auth(&student)
        .json(&json!({"instructor_id": instructor_id, "service_id": service_id, "start": start.to_rfc3339()}))
        .send()
        .await
        .expect("booking");
    assert_eq!(
        booked.status(),
        StatusCode::CREATED,
        "{:?}",
        booked.text().await
    );
    let pool = cluster.db.pool.clone();
    eventually(
        Duration::from_secs(30),
        "the confirmations dead-lettered",
        || async {
            sqlx::query_scalar::<_, i64>(
                "select count(*) from jobs where queue = 'booking_email' and status = 'dead'",
            )
            .fetch_one(&pool)
            .await
            .unwrap_or(0)
                == 2
        },
    )
    .await;
    let dead: i64 = sqlx::query_scalar(
        "select min(id) from jobs where queue = 'booking_email' and status = 'dead'",
    )
    .fetch_one(&pool)
    .await
    .expect("dead id");
    let xss = dead_job(&pool, "ops_test", "<script>window.__pwned = 1</script>").await;

    let browser = Browser::start(1280, 900).await;
    browser_sign_in(&browser, &base, &operator).await;
    // the overview updates itself: the live part is replaced without a reload
    browser
        .script("window.__same_page = true; return null;", vec![])
        .await;
    let first = browser.text_of("[data-generated]").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let now = browser.text_of("[data-generated]").await;
        if now != first {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the overview did not update itself"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        browser
            .script("return window.__same_page === true;", vec![])
            .await,
        json!(true),
        "the page was reloaded"
    );
    let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
    browser
        .screenshot(&target.join("ops-overview-desktop.png"))
        .await;
    browser.resize(375, 812).await;
    browser.goto(&format!("{base}/ops")).await;
    browser.find("#live").await;
    let overflow = browser
        .script(
            "return document.documentElement.scrollWidth - window.innerWidth;",
            vec![],
        )
        .await;
    assert!(
        overflow.as_i64().is_some_and(|px| px <= 0),
        "the page scrolls sideways at 375 px by {overflow}"
    );
    browser
        .screenshot(&target.join("ops-overview-phone.png"))
        .await;
    browser.resize(1280, 900).await;

    // the dead letters, with the error text shown as text
    browser.goto(&format!("{base}/ops/jobs?state=dead")).await;
    let row = browser.find(&format!("tr[data-job='{dead}']")).await;
    assert!(browser.text(&row).await.contains("dead"));
    let xss_row = browser.find(&format!("tr[data-job='{xss}'] td.err")).await;
    assert_eq!(
        browser.text(&xss_row).await,
        "<script>window.__pwned = 1</script>"
    );
    assert_eq!(
        browser
            .script("return window.__pwned === undefined;", vec![])
            .await,
        json!(true)
    );

    // the fault is fixed; retry from the job's page and watch it succeed
    cluster.smtp.set_mode(Mode::Accept);
    browser.goto(&format!("{base}/ops/jobs/{dead}")).await;
    let retry = browser.find("button[data-action=retry]").await;
    browser.click(&retry).await;
    browser.find(".notice").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        browser.goto(&format!("{base}/ops/jobs/{dead}")).await;
        let state = browser.find("[data-state]").await;
        if browser.text(&state).await == "done" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the retried job did not succeed"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(cluster.smtp.count(), 1, "the retried confirmation was sent");
    browser.goto(&format!("{base}/ops/audit")).await;
    let entry = browser.find("tr[data-audit='ops.job.retry']").await;
    assert!(browser.text(&entry).await.contains(&format!("job {dead}")));
    let logout = browser.find("form.logout button").await;
    browser.click(&logout).await;
    browser.find("textarea[name=token]").await;

    // a viewer: no action anywhere, and a forged POST from the page is refused
    browser_sign_in(&browser, &base, &viewer).await;
    let other_dead: i64 = sqlx::query_scalar(
        "select max(id) from jobs where queue = 'booking_email' and status = 'dead'",
    )
    .fetch_one(&pool)
    .await
    .expect("second dead letter");
    for path in [
        "/ops".to_string(),
        format!("/ops/jobs/{other_dead}"),
        "/ops/jobs?state=dead".into(),
        "/ops/schedules".into(),
    ] {
        browser.goto(&format!("{base}{path}")).await;
        browser.find("main h1").await;
        assert!(
            browser.find_all("[data-action]").await.is_empty(),
            "{path} shows a viewer an action"
        );
    }
    let forged = browser
        .script_async(&format!(
            "const done = arguments[arguments.length - 1];
             const csrf = document.querySelector('input[name=csrf]').value;
             fetch('/ops/jobs/{other_dead}/retry', {{method: 'POST', redirect: 'manual',
                 headers: {{'Content-Type': 'application/x-www-form-urlencoded'}},
                 body: 'csrf=' + encodeURIComponent(csrf)}}).then(r => done(r.status));"
        ))
        .await;
    assert_eq!(forged, json!(403));
    assert_eq!(job_status(&pool, other_dead).await, "dead");
    browser.quit().await;
}

/// What finished in the last hour and day, and per minute, as SQL counts it over the same
/// windows (up to an hour past `now`, the overview's allowance for commits stamped ahead).
async fn finished_as_counted(
    pool: &sqlx::PgPool,
    now: chrono::DateTime<chrono::Utc>,
) -> (
    BTreeMap<String, (i64, i64)>,
    BTreeMap<String, (i64, i64)>,
    i64,
) {
    let mut windows = Vec::new();
    for since in [
        now - chrono::Duration::hours(1),
        now - chrono::Duration::days(1),
    ] {
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(
            "select queue, sum(done)::int8, sum(failed)::int8 from (
                 select queue, count(*) as done, 0 as failed from jobs
                  where status = 'done' and finished_at >= $1 and finished_at < $2 group by queue
                 union all
                 select j.queue, 0, count(*) from job_errors e join jobs j on j.id = e.job_id
                  where e.at >= $1 and e.at < $2 group by j.queue) t group by queue",
        )
        .bind(since)
        .bind(now + chrono::Duration::hours(1))
        .fetch_all(pool)
        .await
        .expect("counted");
        windows.push(rows.into_iter().map(|(q, d, f)| (q, (d, f))).collect());
    }
    // the chart's whole minutes of the last hour
    let charted: i64 = sqlx::query_scalar(
        "select count(*) from jobs where status = 'done'
          and finished_at >= date_trunc('minute', $1::timestamptz) - interval '59 minutes'
          and finished_at < $1::timestamptz + interval '1 hour'",
    )
    .bind(now)
    .fetch_one(pool)
    .await
    .expect("charted");
    let day = windows.pop().unwrap_or_default();
    let hour = windows.pop().unwrap_or_default();
    (hour, day, charted)
}

#[tokio::test]
async fn the_overview_keeps_settled_minutes_and_counts_what_sql_counts() {
    use chrono::SubsecRound;
    let db = testing::TestDatabase::create().await;
    let pool = &db.pool;
    let now = chrono::Utc::now().trunc_subsecs(6);
    let finish = |queue: &'static str, status: &'static str, ago_secs: i64| {
        let at = now - chrono::Duration::seconds(ago_secs);
        async move {
            let id: i64 = sqlx::query_scalar(
                "insert into jobs (queue, payload, dedupe_key, status, finished_at)
                 values ($1, '{}', gen_random_uuid()::text, $2, $3) returning id",
            )
            .bind(queue)
            .bind(status)
            .bind(at)
            .fetch_one(pool)
            .await
            .expect("record");
            id
        }
    };
    // both ends of the day and of the hour, to the second, and the unsettled last minutes
    for ago in [
        25 * 3600,
        24 * 3600 + 1,
        24 * 3600 - 1,
        23 * 3600 + 59 * 60 + 30,
        5 * 3600,
        3601,
        3599,
        59 * 60 + 30,
        600,
        90,
        5,
    ] {
        finish("q1", "done", ago).await;
        finish("q2", "done", ago + 7).await;
    }
    finish("q1", "dead", 1200).await;
    let failing = finish("q2", "dead", 7200).await;
    for ago in [7300, 3500, 30] {
        sqlx::query("insert into job_errors (job_id, attempt, error, at) values ($1, 1, 'x', $2)")
            .bind(failing)
            .bind(now - chrono::Duration::seconds(ago))
            .execute(pool)
            .await
            .expect("error");
    }
    let minutes = api::ops::FinishedMinutes::default();
    let check = |at: chrono::DateTime<chrono::Utc>| {
        let minutes = &minutes;
        async move {
            let recent = minutes.recent(pool, at).await.expect("recent");
            let seen = |f: &[shared::records::Finished]| -> BTreeMap<String, (i64, i64)> {
                f.iter()
                    .filter(|f| f.succeeded > 0 || f.failed_attempts > 0)
                    .map(|f| (f.queue.clone(), (f.succeeded, f.failed_attempts)))
                    .collect()
            };
            let (hour, day, charted) = finished_as_counted(pool, at).await;
            assert_eq!(seen(&recent.hour), hour, "the hour before {at}");
            assert_eq!(seen(&recent.day), day, "the day before {at}");
            assert_eq!(
                recent.minutes.iter().map(|m| m.1).sum::<i64>(),
                charted,
                "the chart before {at}"
            );
        }
    };
    // the first read keeps the settled minutes; the second reads only the newest
    check(now).await;
    check(now).await;
    // later: new finishes, and windows that moved past kept minutes
    finish("q1", "done", -100).await;
    finish("q2", "done", -170).await;
    check(now + chrono::Duration::minutes(3)).await;
    check(now + chrono::Duration::minutes(61)).await;
    // a clock set back reopens what was kept
    check(now - chrono::Duration::hours(2)).await;
    check(now).await;
}
