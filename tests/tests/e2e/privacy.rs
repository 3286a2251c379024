//! Privacy (GDPR): the data export holds every row the database has about a user (checked
//! against the schema, not a list) and nothing identifying anyone else; erasure leaves no
//! trace of the person in any text or JSON column while their bookings stay, cancels their
//! future lessons telling only the other party, silences what was queued for them and shuts
//! out their old tokens (nor does pg_dump's output hold them); a legal hold refuses erasure,
//! audited; the audit log is append-only. Through the real binaries, no Redis value and no
//! log line holds a party's email, name or client address at any point of a booking,
//! reminder, export and erasure.
use std::{collections::BTreeMap, sync::Arc, time::Duration};

use chrono::Utc;
use e2e::{
    eventually,
    platform::{Options, TestApp},
};
use reqwest::Method;
use serde_json::{Value, json};
use shared::clock::TestClock;

const STUDENT_EMAIL: &str = "student@example.com";
const STUDENT_NAME: &str = "Sam Student";

async fn user_id(app: &TestApp, email: &str) -> i64 {
    sqlx::query_scalar("select id from users where email = $1")
        .bind(email)
        .fetch_one(&app.db.pool)
        .await
        .expect("user")
}

/// Polls a privacy request (as `token`'s user) until it has ended; returns it.
async fn finished(app: &TestApp, token: &str, id: i64) -> Value {
    let path = format!("/api/v1/privacy/requests/{id}");
    eventually(
        Duration::from_secs(30),
        "the privacy request to end",
        || async {
            let (status, body) = app.send(Method::GET, &path, Some(token), None).await;
            status == 200 && matches!(body["state"].as_str(), Some("done" | "failed"))
        },
    )
    .await;
    app.send(Method::GET, &path, Some(token), None).await.1
}

/// Books `start` for the student behind `token` with `notes`.
async fn book(app: &TestApp, token: &str, start: chrono::DateTime<Utc>, notes: &str) -> i64 {
    let body = json!({
        "instructor_id": app.instructor_id().await,
        "service_id": app.service_id().await,
        "start": start.to_rfc3339(),
        "notes": notes,
    });
    let (status, booking) = app
        .send(Method::POST, "/api/v1/bookings", Some(token), Some(body))
        .await;
    assert_eq!(status, 201, "{booking}");
    booking["id"].as_i64().expect("booking id")
}

/// Every (table, columns) that references a user: by a foreign key to `users` itself or to
/// the instructor side of a user (`instructor_profiles`, keyed by the user id), or by a column
/// whose comment declares `references users(id)` (a reference its writers check instead of a
/// key: migration 0017).
async fn user_references(app: &TestApp) -> BTreeMap<String, Vec<String>> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "select c.conrelid::regclass::text, a.attname::text
         from pg_constraint c
         join pg_attribute a on a.attrelid = c.conrelid and a.attnum = any (c.conkey)
         where c.contype = 'f'
           -- a partition's copy of its parent's key: its rows are the parent's
           and c.conparentid = 0
           and c.confrelid in ('users'::regclass, 'instructor_profiles'::regclass)
         union
         select a.attrelid::regclass::text, a.attname::text
         from pg_attribute a
         join pg_class t on t.oid = a.attrelid
         where col_description(a.attrelid, a.attnum) like 'references users(id)%'
           and not t.relispartition
         order by 1, 2",
    )
    .fetch_all(&app.db.pool)
    .await
    .expect("schema query");
    let mut tables: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (table, column) in rows {
        tables.entry(table).or_default().push(column);
    }
    // a user's own row is the profile; instructor_profiles.user_id references users too
    tables.entry("instructor_profiles".into()).or_default();
    for columns in tables.values_mut() {
        if columns.is_empty() {
            columns.push("user_id".into());
        }
        columns.dedup();
    }
    tables
}

/// Exports the user behind `token` and returns the downloaded document.
async fn export(app: &TestApp, token: &str) -> (i64, Value) {
    let (status, body) = app
        .send(Method::POST, "/api/v1/privacy/export", Some(token), None)
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["kind"], "export");
    let id = body["id"].as_i64().expect("id");
    let request = finished(app, token, id).await;
    assert_eq!(request["state"], "done", "{request}");
    assert!(request["expires_at"].is_string(), "{request}");
    let url = request["download_url"].as_str().expect("download_url");
    let (status, document) = app.send(Method::GET, url, Some(token), None).await;
    assert_eq!(status, 200, "{document}");
    (id, document)
}

/// Checks that `document` holds, for every table referencing a user, exactly the rows that
/// reference `user` (but the "export ready" email of this very export, sent after it).
async fn assert_complete(app: &TestApp, document: &Value, user: i64, request: i64) {
    assert_eq!(document["format"], "instainstru.export");
    assert_eq!(document["version"], 1);
    assert_eq!(document["profile"]["id"], user);
    let references = user_references(app).await;
    for table in ["bookings", "search_events", "search_history"] {
        assert!(references.contains_key(table), "{table}: {references:?}");
    }
    for (table, columns) in &references {
        let condition = columns
            .iter()
            .map(|c| format!("{c} = $1"))
            .collect::<Vec<_>>()
            .join(" or ");
        let extra = if table == "email_ledger" {
            " and privacy_request_id is distinct from $2"
        } else {
            " and $2::bigint is not null"
        };
        let count: i64 = sqlx::query_scalar(&format!(
            "select count(*) from {table} where ({condition}){extra}"
        ))
        .bind(user)
        .bind(request)
        .fetch_one(&app.db.pool)
        .await
        .expect("count");
        let rows = document["tables"][table]
            .as_array()
            .unwrap_or_else(|| panic!("the export has no {table}: {}", document["tables"]));
        assert_eq!(rows.len() as i64, count, "{table} of user {user}");
    }
}

#[tokio::test]
async fn an_export_holds_every_row_about_the_user_and_nothing_about_anyone_else() {
    let app = TestApp::start().await;
    let student = app.student().await;
    let other = app.other_student().await;
    let instructor = app.token("instructor@example.com").await;
    book(&app, &student, app.lesson_at(3, 10), "Bring the Bach book").await;
    let cancelled = book(&app, &student, app.lesson_at(4, 10), "Scales please").await;
    book(&app, &other, app.lesson_at(5, 10), "Olive's private note").await;
    let (status, _) = app
        .send(
            Method::POST,
            &format!("/api/v1/bookings/{cancelled}/cancel"),
            Some(&student),
            Some(json!({ "reason": "Sam is travelling" })),
        )
        .await;
    assert_eq!(status, 200);
    // 3 confirmations and 1 cancellation, to both parties
    eventually(Duration::from_secs(30), "the booking emails", || async {
        app.smtp.count() == 8
    })
    .await;

    let student_id = user_id(&app, STUDENT_EMAIL).await;
    let (request, document) = export(&app, &student).await;
    assert_complete(&app, &document, student_id, request).await;
    assert_eq!(document["profile"]["email"], STUDENT_EMAIL);
    let text = document.to_string();
    assert!(text.contains("Bring the Bach book") && text.contains("Sam is travelling"));
    for foreign in [
        "instructor@example.com",
        "Ida Instructor",
        "Instructor",
        "other@example.com",
        "Olive",
        "Olive's private note",
        "admin@example.com",
        "Ada Admin",
    ] {
        assert!(
            !text.contains(foreign),
            "the student's export names {foreign:?}"
        );
    }
    assert!(text.contains("\"other_party_first_name\":\"Ida\""));

    // the instructor's: services and availability too, and their students by first name
    let instructor_id = app.instructor_id().await;
    let (request, document) = export(&app, &instructor).await;
    assert_complete(&app, &document, instructor_id, request).await;
    assert!(
        !document["tables"]["availability"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(document["tables"]["services"].as_array().unwrap().len(), 1);
    let text = document.to_string();
    for foreign in [
        STUDENT_EMAIL,
        STUDENT_NAME,
        "Student",
        "other@example.com",
        "Olive Other",
        "Bring the Bach book",
        "Olive's private note",
    ] {
        assert!(
            !text.contains(foreign),
            "the instructor's export names {foreign:?}"
        );
    }

    // the ready email, once each, through the ledger
    eventually(Duration::from_secs(30), "the export emails", || async {
        app.smtp
            .messages()
            .iter()
            .filter(|m| m.subject() == "Your InstaInstru data export is ready")
            .count()
            == 2
    })
    .await;
    let ready: Vec<_> = app
        .smtp
        .messages()
        .into_iter()
        .filter(|m| m.subject() == "Your InstaInstru data export is ready")
        .collect();
    assert!(ready.iter().any(|m| m.to == [STUDENT_EMAIL]));
    assert!(ready[0].text().contains("/download"), "{}", ready[0].text());

    // a second export while one is in flight: 409 with the first's id
    sqlx::query("update privacy_requests set state = 'running' where id = $1")
        .bind(request)
        .execute(&app.db.pool)
        .await
        .unwrap();
    let (status, body) = app
        .send(
            Method::POST,
            "/api/v1/privacy/export",
            Some(&instructor),
            None,
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["id"], request);
    // another user's export is 404 to them; the list shows one's own
    let (status, _) = app
        .send(
            Method::GET,
            &format!("/api/v1/privacy/exports/{request}/download"),
            Some(&student),
            None,
        )
        .await;
    assert_eq!(status, 404);
    let (_, list) = app
        .send(
            Method::GET,
            "/api/v1/privacy/requests",
            Some(&student),
            None,
        )
        .await;
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
}

/// Every (table, column) of text or JSON type.
async fn text_columns(app: &TestApp) -> Vec<(String, String)> {
    sqlx::query_as(
        "select table_name::text, column_name::text from information_schema.columns
         where table_schema = 'public'
           and data_type in ('text', 'character varying', 'character', 'json', 'jsonb', 'ARRAY')",
    )
    .fetch_all(&app.db.pool)
    .await
    .expect("columns")
}

/// Where `needle` occurs in any text or JSON column, as "table.column".
async fn occurrences(app: &TestApp, needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (table, column) in text_columns(app).await {
        let n: i64 = sqlx::query_scalar(&format!(
            r#"select count(*) from "{table}" where "{column}"::text ilike '%' || $1 || '%'"#
        ))
        .bind(needle)
        .fetch_one(&app.db.pool)
        .await
        .expect("scan");
        if n > 0 {
            found.push(format!("{table}.{column}"));
        }
    }
    found
}

async fn snapshot(app: &TestApp) -> (String, String, i64, i64) {
    let digest = |table: &'static str| async move {
        sqlx::query_scalar::<_, String>(&format!(
            "select coalesce(md5(string_agg(t::text, '|' order by t.id)), '') from {table} t"
        ))
        .fetch_one(&app.db.pool)
        .await
        .expect("digest")
    };
    let count = |table: &'static str| async move {
        sqlx::query_scalar::<_, i64>(&format!("select count(*) from {table}"))
            .fetch_one(&app.db.pool)
            .await
            .expect("count")
    };
    (
        digest("users").await,
        digest("bookings").await,
        count("jobs").await,
        count("audit_log").await,
    )
}

#[tokio::test]
async fn erasure_leaves_no_trace_of_the_person_and_keeps_the_business() {
    let clock = TestClock::at(Utc::now());
    let app = TestApp::start_with(Options {
        clock: Arc::new(clock.clone()),
        ..Options::default()
    })
    .await;
    let student = app.student().await;
    let admin = app.token("admin@example.com").await;
    let start = app.lesson_at(3, 10);
    let future = book(
        &app,
        &student,
        start,
        "Call me Sam Student, student@example.com",
    )
    .await;
    let past = book(&app, &student, app.lesson_at(4, 10), "Scales").await;
    app.send(
        Method::POST,
        &format!("/api/v1/bookings/{past}/cancel"),
        Some(&student),
        Some(json!({ "reason": "Sam Student is ill" })),
    )
    .await;
    eventually(Duration::from_secs(30), "the booking emails", || async {
        app.smtp.count() == 6
    })
    .await;
    let (_, document) = export(&app, &student).await;
    assert_eq!(document["profile"]["full_name"], STUDENT_NAME);
    eventually(Duration::from_secs(30), "the export email", || async {
        app.smtp.count() == 7
    })
    .await;
    let student_id = user_id(&app, STUDENT_EMAIL).await;
    let (price_total, bookings): (i64, i64) = sqlx::query_as(
        "select sum(price_cents)::bigint, count(*) from bookings where student_id = $1",
    )
    .bind(student_id)
    .fetch_one(&app.db.pool)
    .await
    .unwrap();

    let (status, body) = app
        .send(Method::POST, "/api/v1/privacy/erase", Some(&student), None)
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["kind"], "erasure");
    let request = finished(&app, &admin, body["id"].as_i64().unwrap()).await;
    assert_eq!(request["state"], "done", "{request}");

    // the old token is refused at once
    let (status, body) = app
        .send(Method::GET, "/api/v1/bookings", Some(&student), None)
        .await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["code"], "unauthorized");

    // the future lesson is cancelled; only the instructor hears of it
    let (status, reason): (String, Option<String>) =
        sqlx::query_as("select status, cancellation_reason from bookings where id = $1")
            .bind(future)
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(
        (status.as_str(), reason.as_deref()),
        ("cancelled", Some("account closed"))
    );
    eventually(
        Duration::from_secs(30),
        "the instructor's cancellation",
        || async { app.smtp.count() == 8 },
    )
    .await;
    let last = app.smtp.messages().pop().unwrap();
    assert_eq!(last.to, ["instructor@example.com"]);
    assert!(
        last.subject().starts_with("Booking cancelled"),
        "{}",
        last.subject()
    );

    // the reminders queued before the erasure: the student's skipped as erased, the
    // instructor's because the lesson is cancelled
    clock.set(start - chrono::Duration::hours(24) + chrono::Duration::minutes(1));
    eventually(Duration::from_secs(30), "the reminders to end", || async {
        let pending: i64 = sqlx::query_scalar(
            "select count(*) from jobs where payload->>'kind' = 'reminder' and status not in ('skipped', 'done', 'dead')",
        )
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
        pending == 0
    })
    .await;
    let reminders: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "select payload->>'party', status, last_error from jobs
         where payload->>'kind' = 'reminder' and (payload->>'booking_id')::bigint = $1 order by 1",
    )
    .bind(future)
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(
        reminders,
        [
            (
                "instructor".into(),
                "skipped".into(),
                Some("booking not confirmed".into())
            ),
            (
                "student".into(),
                "skipped".into(),
                Some("recipient erased".into())
            ),
        ]
    );
    // nothing more was sent, to anyone
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.smtp.count(), 8);

    // no trace of them in any text or JSON column
    assert_eq!(occurrences(&app, STUDENT_EMAIL).await, Vec::<String>::new());
    assert_eq!(occurrences(&app, STUDENT_NAME).await, Vec::<String>::new());
    // and what a backup would hold: pg_dump reads every table, partitions and all
    let dump = e2e::personal_data::pg_dump(&app.db.url).to_lowercase();
    assert!(dump.contains("copy public.bookings "), "a dump of the data");
    for needle in [STUDENT_EMAIL, STUDENT_NAME] {
        assert!(
            !dump.contains(&needle.to_lowercase()),
            "pg_dump --data-only holds {needle:?}"
        );
    }
    // their bookings, prices and dates stay
    let after: (i64, i64) = sqlx::query_as(
        "select sum(price_cents)::bigint, count(*) from bookings where student_id = $1",
    )
    .bind(student_id)
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(after, (price_total, bookings));

    // a second erasure changes nothing and answers with the first
    let before = snapshot(&app).await;
    let (status, again) = app
        .send(
            Method::POST,
            "/api/v1/admin/privacy/erase",
            Some(&admin),
            Some(json!({ "user_id": student_id })),
        )
        .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["id"], request["id"]);
    assert_eq!(snapshot(&app).await, before);
    let (status, _) = app
        .send(
            Method::POST,
            "/api/v1/admin/privacy/erase",
            Some(&admin),
            Some(json!({ "user_id": 999_999 })),
        )
        .await;
    assert_eq!(status, 404);

    // audited, with ids and counts only
    let (status, audit) = app
        .send(
            Method::GET,
            &format!("/api/v1/admin/privacy/audit?user_id={student_id}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let entries = audit.as_array().unwrap();
    assert!(
        entries.iter().any(|e| e["action"] == "erasure"
            && e["outcome"] == "done"
            && e["detail"]["bookings_cancelled"] == 1),
        "{audit}"
    );
}

#[tokio::test]
async fn a_legal_hold_refuses_erasure_and_the_refusal_is_audited() {
    let app = TestApp::start().await;
    let student = app.student().await;
    let admin = app.token("admin@example.com").await;
    let student_id = user_id(&app, STUDENT_EMAIL).await;
    let (status, body) = app
        .send(
            Method::PUT,
            &format!("/api/v1/admin/users/{student_id}/legal-hold"),
            Some(&admin),
            Some(json!({ "hold": true, "reason": "case 2026-17" })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["hold"], true);
    let (status, _) = app
        .send(
            Method::PUT,
            "/api/v1/admin/users/999999/legal-hold",
            Some(&admin),
            Some(json!({ "hold": true })),
        )
        .await;
    assert_eq!(status, 404);

    let (status, body) = app
        .send(Method::POST, "/api/v1/privacy/erase", Some(&student), None)
        .await;
    assert_eq!(status, 202, "{body}");
    let request = finished(&app, &student, body["id"].as_i64().unwrap()).await;
    assert_eq!(request["state"], "failed", "{request}");
    assert_eq!(request["reason"], "legal hold");
    // still there, still signed in
    assert!(
        occurrences(&app, STUDENT_EMAIL)
            .await
            .contains(&"users.email".to_string())
    );
    let (status, _) = app
        .send(Method::GET, "/api/v1/bookings", Some(&student), None)
        .await;
    assert_eq!(status, 200);

    let (_, audit) = app
        .send(
            Method::GET,
            &format!("/api/v1/admin/privacy/audit?user_id={student_id}"),
            Some(&admin),
            None,
        )
        .await;
    let actions: Vec<(String, String)> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_string(),
                e["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        actions.contains(&("legal_hold_set".into(), "done".into())),
        "{actions:?}"
    );
    assert!(
        actions.contains(&("erasure".into(), "refused: legal hold".into())),
        "{actions:?}"
    );
    let text = audit.to_string();
    assert!(
        !text.contains(STUDENT_EMAIL)
            && !text.contains(STUDENT_NAME)
            && !text.contains("case 2026-17")
    );
}

#[tokio::test]
async fn the_audit_log_refuses_update_delete_and_truncate() {
    let app = TestApp::without_worker().await;
    let pool = &app.db.pool;
    sqlx::query("insert into audit_log (actor, subject_user_id, action, outcome) values ('retention', null, 'test', 'done')")
        .execute(pool)
        .await
        .expect("insert is allowed");
    for statement in [
        "update audit_log set outcome = 'changed'",
        "delete from audit_log",
        "truncate audit_log",
    ] {
        let error = sqlx::query(statement)
            .execute(pool)
            .await
            .expect_err(statement);
        assert!(
            error.to_string().contains("append-only"),
            "{statement}: {error}"
        );
    }
    let n: i64 = sqlx::query_scalar("select count(*) from audit_log where outcome = 'done'")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(n, 1);
}

#[tokio::test]
async fn the_retention_sweep_deletes_expired_exports_but_held_ones_and_audits_the_counts() {
    let app = TestApp::start().await;
    let pool = &app.db.pool;
    let student_id = user_id(&app, STUDENT_EMAIL).await;
    let instructor_id = app.instructor_id().await;
    sqlx::query("update users set legal_hold = true where id = $1")
        .bind(instructor_id)
        .execute(pool)
        .await
        .unwrap();
    // an expired export each, and a live one for the student
    for (user, expires) in [
        (student_id, "now() - interval '1 hour'"),
        (instructor_id, "now() - interval '1 hour'"),
        (student_id, "now() + interval '1 day'"),
    ] {
        sqlx::query(&format!(
            "with r as (insert into privacy_requests (user_id, kind, state, requested_by, finished_at, expires_at)
                        values ($1, 'export', 'done', $1, now(), {expires}) returning id, user_id, expires_at)
             insert into export_documents (request_id, user_id, expires_at)
             select id, user_id, expires_at from r"
        ))
        .bind(user)
        .execute(pool)
        .await
        .expect("an export");
    }
    let mut tx = pool.begin().await.unwrap();
    shared::outbox::enqueue(
        &mut tx,
        &shared::jobs::RetentionSweep {
            slot: Utc::now(),
            dry_run: false,
        },
        Utc::now(),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    shared::outbox::notify(pool).await;
    eventually(Duration::from_secs(30), "the sweep", || async {
        let n: i64 = sqlx::query_scalar(
            "select count(*) from audit_log where actor = 'retention' and action = 'retention_sweep'",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        n == 1
    })
    .await;
    let left: Vec<(i64, bool)> = sqlx::query_as(
        "select user_id, expires_at > now() from export_documents order by user_id, expires_at",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut expected = vec![(student_id, true), (instructor_id, false)];
    expected.sort();
    assert_eq!(left, expected);
    let detail: Value =
        sqlx::query_scalar("select detail from audit_log where actor = 'retention'")
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(detail["counts"]["export_documents"], 1, "{detail}");
}

/// Asks for a sweep through the API and waits for its counts.
async fn sweep_via_api(app: &TestApp, admin: &str, dry_run: bool) -> Value {
    let (status, run) = app
        .send(
            Method::POST,
            "/api/v1/admin/privacy/retention/run",
            Some(admin),
            Some(json!({ "dry_run": dry_run })),
        )
        .await;
    assert_eq!(status, 202, "{run}");
    let id = run["id"].as_i64().expect("run id");
    let done = |view: &Value| {
        view["runs"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["id"] == id && r["state"] == "done")
            .map(|r| r["counts"].clone())
    };
    let read = || async {
        app.send(
            Method::GET,
            "/api/v1/admin/privacy/retention",
            Some(admin),
            None,
        )
        .await
        .1
    };
    eventually(Duration::from_secs(60), "the sweep's run", || async {
        done(&read().await).is_some()
    })
    .await;
    done(&read().await).expect("done")
}

#[tokio::test]
async fn the_sweep_deletes_exactly_the_expired_rows_keeps_held_users_and_matches_its_dry_run() {
    let app = TestApp::start().await;
    let pool = &app.db.pool;
    let admin = app.token("admin@example.com").await;
    let student_id = user_id(&app, STUDENT_EMAIL).await;
    let instructor_id = app.instructor_id().await;
    // the instructor is under legal hold: their searches stay, however old
    sqlx::query("update users set legal_hold = true where id = $1")
        .bind(instructor_id)
        .execute(pool)
        .await
        .unwrap();
    // months from 30 down to 1 ago; RETENTION_SEARCH_DAYS is 365: 18 whole months are
    // expired (one with a held user's searches), one straddles the cutoff
    let now = Utc::now();
    shared::search::ensure_partitions_between(
        pool,
        (now - chrono::Duration::days(31 * 31)).date_naive(),
        now.date_naive(),
    )
    .await
    .unwrap();
    let seed = |who: &'static str, from: &'static str, to: &'static str, step: &'static str| {
        let user = if who == "held" {
            instructor_id
        } else {
            student_id
        };
        let guest = who == "guest";
        async move {
            sqlx::query(&format!(
                "with e as (
                   insert into search_events (search_id, searched_at, user_id, guest_session, query,
                                              normalized_query, result_count, ua_class)
                   select gen_random_uuid(), t, case when $2 then null else $1 end,
                          case when $2 then 'guest-1' end, 'piano', 'piano', 3, 'desktop'
                   from generate_series(now() - interval '{from}', now() - interval '{to}', interval '{step}') t
                   returning id, search_id, searched_at),
                 i as (insert into search_ids (search_id, event_id, searched_at)
                       select search_id, id, searched_at from e)
                 insert into search_interactions (event_id, searched_at, kind, occurred_at)
                 select id, searched_at, 'click', searched_at from e"
            ))
            .bind(user)
            .bind(guest)
            .execute(pool)
            .await
            .expect("seed searches");
        }
    };
    seed("guest", "900 days", "400 days", "1 day").await; // expired
    seed("student", "380 days", "350 days", "1 day").await; // straddles the cutoff
    seed("held", "700 days", "690 days", "1 day").await; // expired, held
    seed("guest", "300 days", "1 day", "7 days").await; // live
    sqlx::query(
        "insert into search_history (guest_session, query, normalized_query, searched_at)
         values ('guest-old', 'violin', 'violin', now() - interval '31 days'),
                ('guest-new', 'violin', 'violin', now() - interval '29 days')",
    )
    .execute(pool)
    .await
    .unwrap();
    let expired = |table: &'static str| async move {
        let sql = match table {
            "search_interactions" => {
                "select count(*) from search_interactions i join search_events e
                   on e.id = i.event_id and e.searched_at = i.searched_at
                 where e.searched_at < now() - interval '365 days'
                   and e.user_id is distinct from $1"
            }
            _ => {
                "select count(*) from search_events where searched_at < now() - interval '365 days'
                   and user_id is distinct from $1"
            }
        };
        sqlx::query_scalar::<_, i64>(sql)
            .bind(instructor_id)
            .fetch_one(pool)
            .await
            .unwrap()
    };
    let total = |table: &'static str| async move {
        sqlx::query_scalar::<_, i64>(&format!("select count(*) from {table}"))
            .fetch_one(pool)
            .await
            .unwrap()
    };
    let (expired_events, expired_interactions) = (
        expired("search_events").await,
        expired("search_interactions").await,
    );
    let (events, interactions, ids) = (
        total("search_events").await,
        total("search_interactions").await,
        total("search_ids").await,
    );
    assert!(expired_events > 400, "{expired_events}");

    let dry = sweep_via_api(&app, &admin, true).await;
    assert_eq!(dry["search_events"], expired_events, "{dry}");
    assert_eq!(dry["search_interactions"], expired_interactions, "{dry}");
    assert_eq!(dry["search_ids"], expired_events, "{dry}");
    assert_eq!(dry["guest_search_history"], 1, "{dry}");
    assert!(
        dry["search_partitions_dropped"].as_i64().unwrap() >= 10,
        "{dry}"
    );
    // a dry run deletes nothing
    assert_eq!(total("search_events").await, events);
    assert_eq!(total("search_interactions").await, interactions);
    assert_eq!(total("search_ids").await, ids);

    let done = sweep_via_api(&app, &admin, false).await;
    assert_eq!(done, dry, "the sweep matches its dry run");
    assert_eq!(total("search_events").await, events - expired_events);
    assert_eq!(
        total("search_interactions").await,
        interactions - expired_interactions
    );
    assert_eq!(total("search_ids").await, ids - expired_events);
    assert_eq!(expired("search_events").await, 0);
    // the held user's old searches, and every live one, are still there
    let held: i64 = sqlx::query_scalar("select count(*) from search_events where user_id = $1")
        .bind(instructor_id)
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(held, 11);
    let history: Vec<String> =
        sqlx::query_scalar("select guest_session from search_history order by 1")
            .fetch_all(pool)
            .await
            .unwrap();
    assert_eq!(history, ["guest-new"]);
    // the counts are in the audit log, under the retention actor
    let audited: Value = sqlx::query_scalar(
        "select detail from audit_log where actor = 'retention' and action = 'retention_sweep'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(audited["counts"], done);

    // a rerun deletes nothing; two at once neither fail nor delete twice
    let again = sweep_via_api(&app, &admin, false).await;
    for (kind, n) in again.as_object().unwrap() {
        assert_eq!(n, 0, "{kind} on a rerun: {again}");
    }
    let deps = worker::Deps::from_config(app.config.clone(), app.clock.clone())
        .await
        .unwrap();
    let (a, b) = tokio::join!(
        worker::jobs::retention_sweep::sweep(&deps, Utc::now(), false),
        worker::jobs::retention_sweep::sweep(&deps, Utc::now(), false)
    );
    for counts in [a.unwrap(), b.unwrap()].into_iter().flatten() {
        assert!(counts.values().all(|n| *n == 0), "{counts:?}");
    }
}

/// The people of the process-level flow, as Redis and the logs must never show them.
const INSTRUCTOR_EMAIL: &str = "instructor@example.com";
const INSTRUCTOR_NAME: &str = "Ida Instructor";
/// The client's address as the API sees it (a loopback address of its own, so a leak
/// cannot hide among the servers' 127.0.0.1) and the one a proxy header claims.
const CLIENT_IP: &str = "127.0.0.7";
const FORWARDED_IP: &str = "203.0.113.77";

/// Asserts that no key under `prefix` holds either party's email or name, naming the point
/// of the flow; returns how many keys were read.
async fn assert_redis_clean(redis_url: &str, prefix: &str, point: &str) -> usize {
    let (leaks, keys) = e2e::personal_data::redis_leaks(
        redis_url,
        prefix,
        &[
            STUDENT_EMAIL,
            STUDENT_NAME,
            INSTRUCTOR_EMAIL,
            INSTRUCTOR_NAME,
        ],
    )
    .await;
    assert!(
        leaks.is_empty(),
        "{point}: Redis holds personal data: {leaks:?}"
    );
    keys
}

/// Booking, reminder, export and erasure through the real `api`, `worker` and `scheduler`
/// binaries: at every step no Redis value (read by type and by DUMP) holds either party's
/// email or name, and no line those processes logged holds an email address or the client's
/// address.
#[tokio::test]
async fn the_flow_through_the_binaries_keeps_personal_data_out_of_redis_and_the_logs() {
    use e2e::procs::Cluster;
    let mut cluster = Cluster::new(shared::testing::redis_url(), &[("RUST_LOG", "debug")]).await;
    let api = cluster.api().await;
    let _worker = cluster.worker().await;
    let _scheduler = cluster.scheduler().await;
    let (redis, prefix) = (cluster.redis_url.clone(), cluster.prefix.clone());
    let base = format!("http://127.0.0.1:{}", api.port);
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        "x-forwarded-for",
        FORWARDED_IP.parse().expect("header value"),
    );
    let http = reqwest::Client::builder()
        .local_address(CLIENT_IP.parse::<std::net::IpAddr>().ok())
        .default_headers(headers)
        .build()
        .expect("client");
    let send = |method: Method, path: String, token: String, body: Option<Value>| {
        let request = http
            .request(method, format!("{base}{path}"))
            .bearer_auth(token);
        let request = match body {
            Some(body) => request.json(&body),
            None => request,
        };
        async move {
            let response = request.send().await.expect("request");
            let status = response.status().as_u16();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let pool = cluster.db.pool.clone();
    let student = cluster.token(STUDENT_EMAIL).await;
    let (instructor_id, service_id): (i64, i64) =
        sqlx::query_as("select instructor_id, id from services order by id limit 1")
            .fetch_one(&pool)
            .await
            .expect("seeded service");
    // the scan finds what it looks for: a planted value, long enough for DUMP to compress it
    let mut conn = shared::queue::connect(&redis).await.expect("redis");
    let probe = format!("{prefix}:probe");
    let planted = format!("{}{STUDENT_EMAIL}", "x".repeat(200));
    let _: () = redis::cmd("HSET")
        .arg(&probe)
        .arg("to")
        .arg(&planted)
        .query_async(&mut conn)
        .await
        .expect("plant");
    let (found, _) =
        e2e::personal_data::redis_leaks(&redis, &prefix, &[&STUDENT_EMAIL.to_uppercase()]).await;
    assert_eq!(
        found,
        [format!("{probe}: {}", STUDENT_EMAIL.to_uppercase())]
    );
    let _: () = redis::cmd("DEL")
        .arg(&probe)
        .query_async(&mut conn)
        .await
        .expect("unplant");
    assert_redis_clean(&redis, &prefix, "at start").await;

    // a search (with the client's address hashed) and a booking whose notes name the student
    let (status, event) = send(
        Method::POST,
        "/api/v1/search/events".into(),
        student.clone(),
        Some(json!({"query": "piano", "result_count": 1})),
    )
    .await;
    assert_eq!(status, 201, "{event}");
    // the API saw the client's own address (the header is not trusted), stored as its hash
    let config = shared::config::Config::from_vars(cluster.env.clone()).expect("config");
    let hasher = api::search::client::IpHasher::new(config.search_ip_hash_key().expect("key"));
    let stored: Option<Vec<u8>> =
        sqlx::query_scalar("select ip_hash from search_events where id = $1")
            .bind(event["id"].as_i64())
            .fetch_one(&pool)
            .await
            .expect("the event");
    assert_eq!(
        stored,
        Some(hasher.hash(CLIENT_IP.parse().expect("an address")))
    );
    let start = e2e::procs::lesson_slot(0);
    let (status, booking) = send(
        Method::POST,
        "/api/v1/bookings".into(),
        student.clone(),
        Some(json!({
            "instructor_id": instructor_id, "service_id": service_id, "start": start.to_rfc3339(),
            "notes": format!("I am {STUDENT_NAME}, {STUDENT_EMAIL}"),
            "search_event_id": event["id"],
        })),
    )
    .await;
    assert_eq!(status, 201, "{booking}");
    let booking_id = booking["id"].as_i64().expect("booking id");
    assert_redis_clean(&redis, &prefix, "right after the booking").await;
    eventually(Duration::from_secs(30), "the confirmations", || async {
        cluster.smtp.count() == 2
    })
    .await;

    // the reminders, due now: the processes read the system clock, so their time comes to
    // them (the outbox row's run_at) instead
    let moved = sqlx::query(
        "update jobs set run_at = now() where payload->>'kind' = 'reminder'
           and (payload->>'booking_id')::bigint = $1 and status = 'pending'",
    )
    .bind(booking_id)
    .execute(&pool)
    .await
    .expect("reminders due")
    .rows_affected();
    assert_eq!(moved, 2, "a reminder for each party was queued");
    shared::outbox::notify(&pool).await;
    let keys = assert_redis_clean(&redis, &prefix, "with the reminders queued").await;
    assert!(keys > 0, "the scan read no key under {prefix}");
    eventually(Duration::from_secs(30), "the reminders", || async {
        cluster.smtp.count() == 4
    })
    .await;
    assert_redis_clean(&redis, &prefix, "after the reminders").await;

    // the export, its document downloaded and its email sent
    let (status, request) = send(
        Method::POST,
        "/api/v1/privacy/export".into(),
        student.clone(),
        None,
    )
    .await;
    assert_eq!(status, 202, "{request}");
    let path = format!("/api/v1/privacy/requests/{}", request["id"]);
    let mut url = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while url.is_none() {
        assert_redis_clean(&redis, &prefix, "while the export runs").await;
        let (_, state) = send(Method::GET, path.clone(), student.clone(), None).await;
        url = state["download_url"].as_str().map(str::to_string);
        assert!(tokio::time::Instant::now() < deadline, "no export: {state}");
    }
    let (status, document) = send(
        Method::GET,
        url.expect("download url"),
        student.clone(),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(document["profile"]["email"], STUDENT_EMAIL);
    eventually(Duration::from_secs(30), "the export email", || async {
        cluster.smtp.count() == 5
    })
    .await;
    assert_redis_clean(&redis, &prefix, "after the export").await;

    // the erasure: the future lesson is cancelled, only the instructor hears of it
    let (status, request) = send(
        Method::POST,
        "/api/v1/privacy/erase".into(),
        student.clone(),
        None,
    )
    .await;
    assert_eq!(status, 202, "{request}");
    assert_redis_clean(&redis, &prefix, "with the erasure queued").await;
    let erasure = request["id"].as_i64().expect("request id");
    eventually(Duration::from_secs(30), "the erasure", || async {
        let state: String = sqlx::query_scalar("select state from privacy_requests where id = $1")
            .bind(erasure)
            .fetch_one(&pool)
            .await
            .expect("request");
        state == "done"
    })
    .await;
    eventually(
        Duration::from_secs(30),
        "the cancellation email",
        || async { cluster.smtp.count() == 6 },
    )
    .await;
    let last = cluster.smtp.messages().pop().expect("a message");
    assert_eq!(last.to, [INSTRUCTOR_EMAIL]);
    assert_redis_clean(&redis, &prefix, "after the erasure").await;

    // what every process logged: no address of anyone, no client address
    let leaks = e2e::personal_data::log_leaks(&cluster.log_dir, &[CLIENT_IP, FORWARDED_IP]);
    assert!(
        leaks.is_empty(),
        "the processes logged personal data:\n{}",
        leaks.join("\n")
    );
    assert!(
        !cluster.logs().is_empty(),
        "no log was captured in {}",
        cluster.log_dir.display()
    );
}
