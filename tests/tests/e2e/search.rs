//! Search analytics end to end: events, interactions and history over HTTP, the rollup's
//! numbers against a small data set computed by hand (local midnights on both sides, a
//! 23-hour and a 25-hour day, guests, users, bots, a retried search_id, a conversion the
//! next day, a rerun), concurrency, privacy (no raw address stored), and the contract of
//! every search endpoint.
use std::{sync::Arc, time::Duration};

use chrono::{DateTime, NaiveDate, Utc};
use e2e::platform::{Options, TestApp};
use reqwest::Method;
use serde_json::{Value, json};
use shared::clock::TestClock;
use worker::jobs::search_rollup::rollup_day;

use crate::contract::{Answer, Body, Contract};

const DESKTOP: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
const MOBILE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1";
const TABLET: &str = "Mozilla/5.0 (iPad; CPU OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1";
const BOT: &str = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";

/// Who sends a request.
#[derive(Clone, Copy)]
struct Who<'a> {
    token: Option<&'a str>,
    guest: Option<&'a str>,
    agent: &'a str,
}

fn user(token: &str) -> Who<'_> {
    Who {
        token: Some(token),
        guest: None,
        agent: DESKTOP,
    }
}

fn guest(session: &str) -> Who<'_> {
    Who {
        token: None,
        guest: Some(session),
        agent: DESKTOP,
    }
}

impl<'a> Who<'a> {
    fn agent(self, agent: &'a str) -> Who<'a> {
        Who { agent, ..self }
    }
}

async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    who: Who<'_>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = app
        .http
        .request(method, format!("{}{path}", app.base))
        .header("user-agent", who.agent);
    if let Some(token) = who.token {
        request = request.bearer_auth(token);
    }
    if let Some(session) = who.guest {
        request = request.header("x-guest-session", session);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Records a search; returns (status, event id).
async fn search(app: &TestApp, who: Who<'_>, body: Value) -> (u16, i64) {
    let (status, answer) = send(app, Method::POST, "/api/v1/search/events", who, Some(body)).await;
    assert!(
        status == 200 || status == 201,
        "search answered {status}: {answer}"
    );
    (status, answer["id"].as_i64().expect("event id"))
}

async fn interact(app: &TestApp, who: Who<'_>, event: i64, body: Value) -> (u16, Value) {
    send(
        app,
        Method::POST,
        &format!("/api/v1/search/events/{event}/interactions"),
        who,
        Some(body),
    )
    .await
}

fn utc(s: &str) -> DateTime<Utc> {
    s.parse().expect("instant")
}

fn date(s: &str) -> NaiveDate {
    s.parse().expect("date")
}

/// A platform without a worker whose clock the test sets, with partitions for `months`.
async fn app_at(start: &str, months: &[(&str, &str)]) -> (TestApp, TestClock) {
    let clock = TestClock::at(utc(start));
    let app = TestApp::start_with(Options {
        clock: Arc::new(clock.clone()),
        start_worker: false,
        ..Options::default()
    })
    .await;
    for (first, last) in months {
        shared::search::ensure_partitions_between(&app.db.pool, date(first), date(last))
            .await
            .expect("partitions");
    }
    (app, clock)
}

async fn second_user(app: &TestApp) -> String {
    app.other_student().await
}

async fn rollup_row(app: &TestApp, day: &str) -> Value {
    sqlx::query_scalar::<_, Value>("select to_jsonb(r) from search_rollups r where day = $1::date")
        .bind(day)
        .fetch_one(&app.db.pool)
        .await
        .expect("rollup row")
}

async fn admin_days(app: &TestApp, from: &str, to: &str) -> Vec<Value> {
    let admin = app.token("admin@example.com").await;
    let (status, body) = send(
        app,
        Method::GET,
        &format!("/api/v1/admin/analytics/search?from={from}&to={to}"),
        user(&admin),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["days"].as_array().cloned().unwrap_or_default()
}

fn query_counts(list: &Value) -> Vec<(String, i64)> {
    list.as_array()
        .expect("list")
        .iter()
        .map(|e| {
            (
                e["query"].as_str().expect("query").to_string(),
                e["count"].as_i64().expect("count"),
            )
        })
        .collect()
}

fn counts(pairs: &[(&str, i64)]) -> Vec<(String, i64)> {
    pairs.iter().map(|(q, n)| (q.to_string(), *n)).collect()
}

/// The fixed data set and its numbers, computed by hand.
///
/// 2026-03-08 in New York is a 23-hour day (05:00Z to 04:00Z next day):
///   e_before  03-07 23:59:59 EST  user A   "piano lessons"   3 results  -> 03-07
///   e1        03-08 00:00:00 EST  user A   "Piano Lessons"   5 results  click
///   e2        03-08 01:30    EST  guest G1 "piano   lessons" 3 results  hover only
///   e3        03-08 03:30    EDT  user B   "Guitar"          0 results  (+ its retry: same search_id)
///   e_bot     03-08 12:00    EDT  bot      "piano lessons"   0 results  -> bot_searches
///   e8        03-08 10:00    EDT  user A   "violin"          4 results  click; conversion next morning
///   e6        03-08 23:59:59 EDT  guest G2 "ＧＵＩＴＡＲ"       0 results  (tablet)
///   e_after   03-09 00:00:00 EDT  user A   "drums"           2 results  -> 03-09
/// searches 5, bots 1, unique searchers 4 (A, B, G1, G2), zero-result 2/5, click-through
/// 2/3 (e1, e8 of e1, e2, e8), conversion 0/5 then 1/5 once the next-day conversion is in;
/// top: guitar 2, piano lessons 2 (ties by text), violin 1; top zero-result: guitar 2.
///
/// 2026-11-01 is a 25-hour day (04:00Z to 05:00Z next day):
///   f_before  10-31 23:59:59 EDT  guest G3 "cello"  -> 10-31
///   f1        11-01 00:00:00 EDT  guest G3 "Cello"  1 result
///   f2        11-01 01:30    EDT  user A   "cello"  2 results  click   (first 01:30)
///   f3        11-01 01:30    EST  user A   "CELLO"  2 results          (second 01:30)
///   f4        11-01 23:59:59 EST  user B   "flute"  0 results
///   f_after   11-02 00:00:00 EST  user B   "flute"  -> 11-02
/// searches 4, bots 0, unique 3 (G3, A, B), zero-result 1/4, click-through 1/3,
/// conversion 0/4; top: cello 3, flute 1; top zero-result: flute 1.
#[tokio::test]
async fn the_rollup_gives_the_hand_computed_numbers() {
    let (app, clock) = app_at(
        "2026-03-07T12:00:00Z",
        &[("2026-03-01", "2026-03-31"), ("2026-10-01", "2026-11-30")],
    )
    .await;
    let a = app.student().await;
    let b = second_user(&app).await;
    let ny = chrono_tz::America::New_York;
    let at = |instant: &str| clock.set(utc(instant));
    let q = |query: &str, results: i64| json!({"query": query, "result_count": results});

    at("2026-03-08T04:59:59Z");
    search(&app, user(&a), q("piano lessons", 3)).await;
    at("2026-03-08T05:00:00Z");
    let (_, e1) = search(&app, user(&a), q("Piano Lessons", 5)).await;
    at("2026-03-08T06:30:00Z");
    let (_, e2) = search(&app, guest("G1").agent(MOBILE), q("piano   lessons", 3)).await;
    at("2026-03-08T07:30:00Z");
    let retried = uuid::Uuid::new_v4();
    let e3_body = json!({"search_id": retried, "query": "Guitar", "result_count": 0});
    let (status, e3) = search(&app, user(&b), e3_body.clone()).await;
    assert_eq!(status, 201);
    at("2026-03-08T07:31:00Z");
    let (status, again) = search(&app, user(&b), e3_body).await;
    assert_eq!(
        (status, again),
        (200, e3),
        "a retried search_id is the same event"
    );
    at("2026-03-08T16:00:00Z");
    search(&app, guest("crawler").agent(BOT), q("piano lessons", 0)).await;
    at("2026-03-08T14:00:00Z");
    let (_, e8) = search(&app, user(&a), q("violin", 4)).await;
    at("2026-03-09T03:59:59Z");
    search(&app, guest("G2").agent(TABLET), q("ＧＵＩＴＡＲ", 0)).await;
    at("2026-03-09T04:00:00Z");
    search(&app, user(&a), q("drums", 2)).await;

    at("2026-03-08T15:00:00Z");
    let (status, _) = interact(
        &app,
        user(&a),
        e1,
        json!({"kind": "click", "position": 1, "instructor_id": 3}),
    )
    .await;
    assert_eq!(status, 201);
    let (status, _) = interact(
        &app,
        guest("G1").agent(MOBILE),
        e2,
        json!({"kind": "hover", "position": 2}),
    )
    .await;
    assert_eq!(status, 201);
    let (status, _) = interact(&app, user(&a), e8, json!({"kind": "click", "position": 0})).await;
    assert_eq!(status, 201);

    at("2026-03-09T07:00:00Z");
    let first = rollup_day(&app.db.pool, date("2026-03-08"), ny, clock_now(&clock))
        .await
        .expect("rollup");
    assert_eq!(
        (first.searches, first.bot_searches, first.unique_searchers),
        (5, 1, 4)
    );
    let day = &admin_days(&app, "2026-03-08", "2026-03-08").await[0];
    assert_eq!(day["date"], "2026-03-08");
    assert_eq!(day["searches"], 5);
    assert_eq!(day["bot_searches"], 1);
    assert_eq!(day["unique_searchers"], 4);
    assert_eq!(day["zero_result_rate"], 0.4);
    assert_eq!(day["click_through_rate"], 2.0 / 3.0);
    assert_eq!(day["conversion_rate"], 0.0);
    assert_eq!(
        query_counts(&day["top_queries"]),
        counts(&[("guitar", 2), ("piano lessons", 2), ("violin", 1)])
    );
    assert_eq!(
        query_counts(&day["top_zero_result_queries"]),
        counts(&[("guitar", 2)])
    );

    // a rerun over the same events leaves the same row, computed_at included
    let before = rollup_row(&app, "2026-03-08").await;
    at("2026-03-09T08:00:00Z");
    let again = rollup_day(&app.db.pool, date("2026-03-08"), ny, clock_now(&clock))
        .await
        .expect("rerun");
    assert_eq!(again, first);
    assert_eq!(rollup_row(&app, "2026-03-08").await, before);

    // the conversion arrives the next morning; it counts for the day of its search
    at("2026-03-09T14:00:00Z");
    let (status, _) = interact(
        &app,
        user(&a),
        e8,
        json!({"kind": "conversion", "instructor_id": 3}),
    )
    .await;
    assert_eq!(status, 201);
    rollup_day(&app.db.pool, date("2026-03-08"), ny, clock_now(&clock))
        .await
        .expect("recompute");
    let day = &admin_days(&app, "2026-03-08", "2026-03-08").await[0];
    assert_eq!(day["conversion_rate"], 0.2);
    assert_eq!(day["searches"], 5, "the late conversion adds no search");
    let next = rollup_day(&app.db.pool, date("2026-03-09"), ny, clock_now(&clock))
        .await
        .expect("next day");
    assert_eq!((next.searches, next.unique_searchers), (1, 1));
    let previous = rollup_day(&app.db.pool, date("2026-03-07"), ny, clock_now(&clock))
        .await
        .expect("previous day");
    assert_eq!(previous.searches, 1);

    // the 25-hour day
    at("2026-11-01T03:59:59Z");
    search(&app, guest("G3"), q("cello", 1)).await;
    at("2026-11-01T04:00:00Z");
    search(&app, guest("G3"), q("Cello", 1)).await;
    at("2026-11-01T05:30:00Z");
    let (_, f2) = search(&app, user(&a), q("cello", 2)).await;
    at("2026-11-01T06:30:00Z");
    search(&app, user(&a), q("CELLO", 2)).await;
    at("2026-11-02T04:59:59Z");
    search(&app, user(&b), q("flute", 0)).await;
    at("2026-11-02T05:00:00Z");
    search(&app, user(&b), q("flute", 0)).await;
    let (status, _) = interact(&app, user(&a), f2, json!({"kind": "click"})).await;
    assert_eq!(status, 201);
    let long = rollup_day(&app.db.pool, date("2026-11-01"), ny, clock_now(&clock))
        .await
        .expect("25-hour day");
    assert_eq!(
        (long.searches, long.bot_searches, long.unique_searchers),
        (4, 0, 3)
    );
    let day = &admin_days(&app, "2026-11-01", "2026-11-01").await[0];
    assert_eq!(day["zero_result_rate"], 0.25);
    assert_eq!(day["click_through_rate"], 1.0 / 3.0);
    assert_eq!(day["conversion_rate"], 0.0);
    assert_eq!(
        query_counts(&day["top_queries"]),
        counts(&[("cello", 3), ("flute", 1)])
    );
    assert_eq!(
        query_counts(&day["top_zero_result_queries"]),
        counts(&[("flute", 1)])
    );

    // a day without searches: zeros, and every rate null
    rollup_day(&app.db.pool, date("2026-03-20"), ny, clock_now(&clock))
        .await
        .expect("empty day");
    let days = admin_days(&app, "2026-03-01", "2026-03-31").await;
    let empty = days
        .iter()
        .find(|d| d["date"] == "2026-03-20")
        .expect("empty day listed");
    assert_eq!(empty["searches"], 0);
    assert_eq!(empty["unique_searchers"], 0);
    for rate in ["zero_result_rate", "click_through_rate", "conversion_rate"] {
        assert!(empty[rate].is_null(), "{rate} of an empty day: {empty}");
    }
    assert_eq!(empty["top_queries"], json!([]));
    let listed: Vec<&str> = days.iter().filter_map(|d| d["date"].as_str()).collect();
    assert_eq!(
        listed,
        ["2026-03-07", "2026-03-08", "2026-03-09", "2026-03-20"]
    );
}

fn clock_now(clock: &TestClock) -> DateTime<Utc> {
    use shared::clock::Clock;
    clock.now()
}

/// The top lists hold 20 queries, most frequent first, ties by query text.
#[tokio::test]
async fn top_queries_are_twenty_with_ties_by_text() {
    let (app, clock) = app_at("2026-06-10T16:00:00Z", &[]).await;
    let a = app.student().await;
    // 25 queries: "q00" once ... and "q01".."q24" with counts 1 + (n % 3)
    for n in 0..25 {
        for _ in 0..(1 + n % 3) {
            search(
                &app,
                user(&a),
                json!({"query": format!("Q{n:02}"), "result_count": 0}),
            )
            .await;
        }
    }
    let counts = rollup_day(
        &app.db.pool,
        date("2026-06-10"),
        chrono_tz::America::New_York,
        clock_now(&clock),
    )
    .await
    .expect("rollup");
    let top = query_counts(&counts.top_queries);
    let mut expected: Vec<(String, i64)> =
        (0..25).map(|n| (format!("q{n:02}"), 1 + n % 3)).collect();
    expected.sort_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(&y.0)));
    expected.truncate(20);
    assert_eq!(top, expected);
    assert_eq!(query_counts(&counts.top_zero_result_queries), expected);
}

#[tokio::test]
async fn fifty_identical_searches_at_once_make_one_history_row() {
    let app = TestApp::without_worker().await;
    let token = app.student().await;
    let requests = (0..50).map(|_| {
        search(
            &app,
            user(&token),
            json!({"query": "Piano  lessons", "result_count": 3}),
        )
    });
    let answers = futures::future::join_all(requests).await;
    assert!(answers.iter().all(|(status, _)| *status == 201));
    let (status, history) = send(
        &app,
        Method::GET,
        "/api/v1/search/history",
        user(&token),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(history.as_array().map(Vec::len), Some(1), "{history}");
    assert_eq!(history[0]["query"], "Piano  lessons");
    let rows: i64 = sqlx::query_scalar("select count(*) from search_history")
        .fetch_one(&app.db.pool)
        .await
        .expect("count");
    assert_eq!(rows, 1);
    let events: i64 = sqlx::query_scalar("select count(*) from search_events")
        .fetch_one(&app.db.pool)
        .await
        .expect("count");
    assert_eq!(events, 50);
}

/// A client retrying while its first try is still in flight: the copies share batches or
/// land in different ones, and the batch answers the ones it created from what it wrote
/// and reads back only those recorded before (migration 0018).
#[tokio::test]
async fn one_search_id_sent_twenty_times_at_once_is_recorded_once() {
    let app = TestApp::without_worker().await;
    let token = app.student().await;
    let search_id = uuid::Uuid::new_v4();
    let requests = (0..20).map(|_| {
        search(
            &app,
            user(&token),
            json!({"search_id": search_id, "query": "Cello", "result_count": 2}),
        )
    });
    let answers = futures::future::join_all(requests).await;
    let created = answers.iter().filter(|(status, _)| *status == 201).count();
    assert_eq!(created, 1, "{answers:?}");
    let first = answers[0].1;
    assert!(answers.iter().all(|(_, id)| *id == first), "{answers:?}");
    let (events, history): (i64, i64) = sqlx::query_as(
        "select (select count(*) from search_events), (select count(*) from search_history)",
    )
    .fetch_one(&app.db.pool)
    .await
    .expect("count");
    assert_eq!((events, history), (1, 1));
}

/// The batch write checks accounts itself (migration 0015): a closed account's searches are
/// refused and written nowhere, and the searches sharing their batches are recorded.
#[tokio::test]
async fn an_erased_searcher_is_refused_and_the_rest_of_the_batch_is_recorded() {
    let app = TestApp::without_worker().await;
    let pool = &app.db.pool;
    let active = app.student().await;
    let erased = app.other_student().await;
    sqlx::query(
        "insert into users (email, full_name, role, timezone)
         values ('third@example.com', 'Theo Third', 'student', 'America/New_York')",
    )
    .execute(pool)
    .await
    .expect("third student");
    let racing = app.token("third@example.com").await;
    let id_of = |email: &'static str| async move {
        sqlx::query_scalar::<_, i64>("select id from users where email = $1")
            .bind(email)
            .fetch_one(pool)
            .await
            .expect("user id")
    };
    let (erased_id, racing_id) = (
        id_of("other@example.com").await,
        id_of("third@example.com").await,
    );
    sqlx::query("update users set erased_at = now() where id = $1")
        .bind(erased_id)
        .execute(pool)
        .await
        .expect("erase");

    // sent at once, so that the batches mix the three searchers
    let body = |n: usize| json!({"query": format!("violin {n}"), "result_count": 2});
    let requests = (0..90).map(|n| {
        let who = match n % 3 {
            0 => user(&active),
            1 => user(&erased),
            _ => guest("guest-batch"),
        };
        send(
            &app,
            Method::POST,
            "/api/v1/search/events",
            who,
            Some(body(n)),
        )
    });
    let answers = futures::future::join_all(requests).await;
    for (n, (status, answer)) in answers.iter().enumerate() {
        if n % 3 == 1 {
            assert_eq!(*status, 401, "{answer}");
            assert_eq!(answer["code"], "unauthorized", "{answer}");
        } else {
            assert_eq!(*status, 201, "{answer}");
        }
    }
    let count = |sql: &'static str, id: i64| async move {
        sqlx::query_scalar::<_, i64>(sql)
            .bind(id)
            .fetch_one(pool)
            .await
            .expect("count")
    };
    let events = "select count(*) from search_events where user_id = $1";
    let history = "select count(*) from search_history where user_id = $1";
    assert_eq!(count(events, erased_id).await, 0);
    assert_eq!(count(history, erased_id).await, 0);
    let all: i64 = sqlx::query_scalar("select count(*) from search_events")
        .fetch_one(pool)
        .await
        .expect("count");
    assert_eq!(all, 60, "the others' searches are all recorded");

    // an erasure under way (it holds its user FOR UPDATE until it commits, as
    // worker::jobs::erasure does): a search of that user waits for it, then finds the account
    // closed and writes nothing, so nothing of theirs outlives the erasure
    let mut erasure = pool.begin().await.expect("begin");
    sqlx::query("select 1 from users where id = $1 for update")
        .bind(racing_id)
        .execute(&mut *erasure)
        .await
        .expect("lock the user");
    let search = send(
        &app,
        Method::POST,
        "/api/v1/search/events",
        user(&racing),
        Some(body(1000)),
    );
    let erase = async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        sqlx::query("update users set erased_at = now() where id = $1")
            .bind(racing_id)
            .execute(&mut *erasure)
            .await
            .expect("erase");
        erasure.commit().await.expect("commit");
    };
    let ((status, answer), ()) = tokio::join!(search, erase);
    assert_eq!(status, 401, "{answer}");
    assert_eq!(count(events, racing_id).await, 0);
    assert_eq!(count(history, racing_id).await, 0);
}

#[tokio::test]
async fn fifty_repeated_conversions_make_one() {
    let app = TestApp::without_worker().await;
    let token = app.student().await;
    let (_, event) = search(
        &app,
        user(&token),
        json!({"query": "piano", "result_count": 3}),
    )
    .await;
    let requests =
        (0..50).map(|_| interact(&app, user(&token), event, json!({"kind": "conversion"})));
    let answers = futures::future::join_all(requests).await;
    let created = answers.iter().filter(|(s, _)| *s == 201).count();
    let repeated = answers.iter().filter(|(s, _)| *s == 200).count();
    assert_eq!((created, repeated), (1, 49), "{answers:?}");
    let ids: std::collections::BTreeSet<i64> = answers
        .iter()
        .filter_map(|(_, b)| b["id"].as_i64())
        .collect();
    assert_eq!(ids.len(), 1, "every answer names the one conversion");
    let rows: i64 =
        sqlx::query_scalar("select count(*) from search_interactions where kind = 'conversion'")
            .fetch_one(&app.db.pool)
            .await
            .expect("count");
    assert_eq!(rows, 1);
}

#[tokio::test]
async fn history_keeps_ten_distinct_newest_first_as_last_typed() {
    let (app, clock) = app_at("2026-06-10T16:00:00Z", &[]).await;
    let token = app.student().await;
    for n in 0..12 {
        clock.set(utc("2026-06-10T16:00:00Z") + chrono::Duration::seconds(n));
        search(
            &app,
            user(&token),
            json!({"query": format!("query {n}"), "result_count": 1}),
        )
        .await;
    }
    clock.set(utc("2026-06-10T17:00:00Z"));
    search(
        &app,
        user(&token),
        json!({"query": "QUERY   5", "result_count": 1}),
    )
    .await;
    let (_, history) = send(
        &app,
        Method::GET,
        "/api/v1/search/history",
        user(&token),
        None,
    )
    .await;
    let queries: Vec<&str> = history
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|e| e["query"].as_str())
        .collect();
    assert_eq!(
        queries,
        [
            "QUERY   5",
            "query 11",
            "query 10",
            "query 9",
            "query 8",
            "query 7",
            "query 6",
            "query 4",
            "query 3",
            "query 2"
        ]
    );
    let stored: i64 = sqlx::query_scalar("select count(*) from search_history")
        .fetch_one(&app.db.pool)
        .await
        .expect("count");
    assert_eq!(stored, 10, "never more than ten kept");
}

#[tokio::test]
async fn a_guest_history_is_claimed_at_login() {
    let (app, clock) = app_at("2026-06-10T16:00:00Z", &[]).await;
    let token = app.student().await;
    let mut second = 0;
    let mut tick = || {
        second += 1;
        clock.set(utc("2026-06-10T16:00:00Z") + chrono::Duration::seconds(second));
    };
    for n in 0..8 {
        tick();
        search(
            &app,
            user(&token),
            json!({"query": format!("mine {n}"), "result_count": 1}),
        )
        .await;
    }
    for query in ["Mine 0", "guest a", "guest b", "guest c"] {
        tick();
        search(
            &app,
            guest("phone-1"),
            json!({"query": query, "result_count": 1}),
        )
        .await;
    }
    let (status, body) = send(
        &app,
        Method::POST,
        "/api/v1/search/history/claim",
        Who {
            token: Some(&token),
            guest: Some("phone-1"),
            agent: DESKTOP,
        },
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["claimed"], 4);
    let queries: Vec<&str> = body["history"]
        .as_array()
        .expect("history")
        .iter()
        .filter_map(|e| e["query"].as_str())
        .collect();
    // "mine 0" was searched again as a guest, later: it moves to the top, as typed then
    assert_eq!(
        queries,
        [
            "guest c", "guest b", "guest a", "Mine 0", "mine 7", "mine 6", "mine 5", "mine 4",
            "mine 3", "mine 2"
        ]
    );
    let (_, left) = send(
        &app,
        Method::GET,
        "/api/v1/search/history",
        guest("phone-1"),
        None,
    )
    .await;
    assert_eq!(left, json!([]), "the guest's rows are gone");
    let guest_rows: i64 =
        sqlx::query_scalar("select count(*) from search_history where guest_session is not null")
            .fetch_one(&app.db.pool)
            .await
            .expect("count");
    assert_eq!(guest_rows, 0);
    // claiming again is harmless
    let (status, body) = send(
        &app,
        Method::POST,
        "/api/v1/search/history/claim",
        Who {
            token: Some(&token),
            guest: Some("phone-1"),
            agent: DESKTOP,
        },
        None,
    )
    .await;
    assert_eq!((status, body["claimed"].as_i64()), (200, Some(0)));
}

/// An erasure that lands between a claim's authentication and its write: the claim finds
/// the account closed and moves nothing (no foreign key would have stopped it: the erased
/// user's row is kept).
#[tokio::test]
async fn a_claim_for_an_account_erased_meanwhile_moves_nothing() {
    let (app, _clock) = app_at("2026-06-10T16:00:00Z", &[]).await;
    app.student().await;
    search(
        &app,
        guest("phone-2"),
        json!({"query": "guest only", "result_count": 1}),
    )
    .await;
    let user_id: i64 = sqlx::query_scalar(
        "update users set erased_at = now() where email = 'student@example.com' returning id",
    )
    .fetch_one(&app.db.pool)
    .await
    .expect("erase");
    let moved = api::search::history::claim(&app.db.pool, user_id, "phone-2")
        .await
        .expect("claim");
    assert_eq!(moved, 0);
    let rows: Vec<(Option<i64>, Option<String>)> =
        sqlx::query_as("select user_id, guest_session from search_history")
            .fetch_all(&app.db.pool)
            .await
            .expect("history");
    assert_eq!(
        rows,
        [(None, Some("phone-2".to_string()))],
        "the guest's row stays, for the guest retention"
    );
}

#[tokio::test]
async fn one_user_cannot_read_or_delete_anothers_history() {
    let app = TestApp::without_worker().await;
    let mine = app.student().await;
    let theirs = second_user(&app).await;
    search(
        &app,
        user(&mine),
        json!({"query": "private lesson", "result_count": 1}),
    )
    .await;
    let (_, history) = send(
        &app,
        Method::GET,
        "/api/v1/search/history",
        user(&mine),
        None,
    )
    .await;
    let id = history[0]["id"].as_i64().expect("entry id");
    let (_, other_view) = send(
        &app,
        Method::GET,
        "/api/v1/search/history",
        user(&theirs),
        None,
    )
    .await;
    assert_eq!(other_view, json!([]));
    let path = format!("/api/v1/search/history/{id}");
    let (status, _) = send(&app, Method::DELETE, &path, user(&theirs), None).await;
    assert_eq!(status, 404);
    let (status, _) = send(&app, Method::DELETE, &path, guest("someone"), None).await;
    assert_eq!(status, 404);
    let (_, history) = send(
        &app,
        Method::GET,
        "/api/v1/search/history",
        user(&mine),
        None,
    )
    .await;
    assert_eq!(history.as_array().map(Vec::len), Some(1), "still there");
    let (status, body) = send(&app, Method::DELETE, &path, user(&mine), None).await;
    assert_eq!((status, body["deleted"].as_bool()), (200, Some(true)));
    let (status, _) = send(&app, Method::DELETE, &path, user(&mine), None).await;
    assert_eq!(status, 404);
    // nor record interactions on another's search
    let (_, event) = search(
        &app,
        user(&mine),
        json!({"query": "piano", "result_count": 1}),
    )
    .await;
    let (status, _) = interact(&app, user(&theirs), event, json!({"kind": "click"})).await;
    assert_eq!(status, 404);
    let (status, _) = interact(&app, guest("x"), event, json!({"kind": "click"})).await;
    assert_eq!(status, 404);
    let (status, _) = send(
        &app,
        Method::POST,
        "/api/v1/search/events",
        user(&theirs),
        Some(json!({"query": "q", "result_count": 1})),
    )
    .await;
    assert_eq!(status, 201);
}

/// A booking made from a search records its conversion in the booking's transaction.
#[tokio::test]
async fn a_booking_from_a_search_converts_it_once() {
    let app = TestApp::without_worker().await;
    let student = app.student().await;
    let other = second_user(&app).await;
    let (_, event) = search(
        &app,
        user(&student),
        json!({"query": "piano", "result_count": 2}),
    )
    .await;
    let (_, foreign) = search(
        &app,
        user(&other),
        json!({"query": "piano", "result_count": 2}),
    )
    .await;
    let (_, guest_event) = search(
        &app,
        guest("g-1"),
        json!({"query": "piano", "result_count": 2}),
    )
    .await;
    let booking = |start: DateTime<Utc>, event: i64| json!({"instructor_id": 0, "service_id": 0, "start": start.to_rfc3339(), "search_event_id": event});
    let instructor = app.instructor_id().await;
    let service = app.service_id().await;
    let with_ids = |start, event| {
        let mut body = booking(start, event);
        body["instructor_id"] = json!(instructor);
        body["service_id"] = json!(service);
        body
    };
    for (bad, what) in [
        (foreign, "another student's search"),
        (guest_event, "a guest's search"),
        (999_999, "no search"),
    ] {
        let (status, body) = send(
            &app,
            Method::POST,
            "/api/v1/bookings",
            user(&student),
            Some(with_ids(app.lesson_at(3, 10), bad)),
        )
        .await;
        assert_eq!(status, 422, "{what}: {body}");
        assert_eq!(body["field"], "search_event_id", "{what}");
    }
    let bookings: i64 = sqlx::query_scalar("select count(*) from bookings")
        .fetch_one(&app.db.pool)
        .await
        .expect("count");
    assert_eq!(bookings, 0, "nothing half-written");
    let (status, created) = send(
        &app,
        Method::POST,
        "/api/v1/bookings",
        user(&student),
        Some(with_ids(app.lesson_at(3, 10), event)),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let (status, _) = send(
        &app,
        Method::POST,
        "/api/v1/bookings",
        user(&student),
        Some(with_ids(app.lesson_at(3, 12), event)),
    )
    .await;
    assert_eq!(status, 201);
    let conversions: Vec<(i64, Option<i64>)> = sqlx::query_as(
        "select event_id, booking_id from search_interactions where kind = 'conversion'",
    )
    .fetch_all(&app.db.pool)
    .await
    .expect("conversions");
    assert_eq!(
        conversions,
        [(event, created["id"].as_i64())],
        "counted once, for the first booking"
    );
    let converted: bool = sqlx::query_scalar("select converted from search_events where id = $1")
        .bind(event)
        .fetch_one(&app.db.pool)
        .await
        .expect("flag");
    assert!(converted);
}

/// The admin asks for days again: one job per day, not swallowed by the nightly key.
#[tokio::test]
async fn an_admin_recomputation_enqueues_one_job_per_day() {
    let app = TestApp::without_worker().await;
    let admin = app.token("admin@example.com").await;
    let today = Utc::now()
        .with_timezone(&chrono_tz::America::New_York)
        .date_naive();
    let yesterday = today - chrono::Duration::days(1);
    // the nightly run of yesterday is already recorded
    let mut conn = app.db.pool.acquire().await.expect("conn");
    shared::outbox::enqueue(
        &mut conn,
        &shared::jobs::search_rollup::SearchRollup { day: yesterday },
        Utc::now(),
    )
    .await
    .expect("nightly");
    drop(conn);
    let from = today - chrono::Duration::days(2);
    let (status, body) = send(
        &app,
        Method::POST,
        "/api/v1/admin/analytics/rollups",
        user(&admin),
        Some(json!({"from": from, "to": today})),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["job_ids"].as_array().map(Vec::len), Some(3));
    assert_eq!(body["days"], json!([from, yesterday, today]));
    let (status, again) = send(
        &app,
        Method::POST,
        "/api/v1/admin/analytics/rollups",
        user(&admin),
        Some(json!({"date": yesterday})),
    )
    .await;
    assert_eq!(status, 202, "{again}");
    let payloads: Vec<Value> =
        sqlx::query_scalar("select payload from jobs where queue = 'search_rollup' order by id")
            .fetch_all(&app.db.pool)
            .await
            .expect("jobs");
    assert_eq!(payloads.len(), 5, "nightly + 3 + 1");
    assert_eq!(payloads[4], json!({"day": yesterday}));
}

/// Requests from 127.0.0.1: the address appears in no column of any search table.
#[tokio::test]
async fn no_raw_address_is_stored() {
    let app = TestApp::without_worker().await;
    let token = app.student().await;
    let (_, event) = search(&app, user(&token), json!({"query": "piano", "result_count": 1, "filters": {"near": "home"}, "shown": [{"instructor_id": 3, "position": 0}]})).await;
    search(
        &app,
        guest("g-1").agent(MOBILE),
        json!({"query": "cello", "result_count": 0}),
    )
    .await;
    interact(
        &app,
        user(&token),
        event,
        json!({"kind": "click", "position": 0}),
    )
    .await;
    let hashes: Vec<Option<Vec<u8>>> = sqlx::query_scalar("select ip_hash from search_events")
        .fetch_all(&app.db.pool)
        .await
        .expect("hashes");
    assert_eq!(hashes.len(), 2);
    assert!(
        hashes
            .iter()
            .all(|h| h.as_ref().is_some_and(|h| h.len() == 32)),
        "every event has a hash"
    );
    assert_eq!(hashes[0], hashes[1], "one client, one hash");
    let raw = [127u8, 0, 0, 1];
    assert!(
        hashes
            .iter()
            .flatten()
            .all(|h| !h.windows(4).any(|w| w == raw))
    );
    let tables: Vec<(String, String)> = sqlx::query_as(
        "select c.table_name::text, c.column_name::text from information_schema.columns c
         join information_schema.tables t using (table_schema, table_name)
         where c.table_schema = 'public' and t.table_type = 'BASE TABLE'
           and (c.table_name like 'search%')",
    )
    .fetch_all(&app.db.pool)
    .await
    .expect("columns");
    assert!(
        tables.iter().any(|(t, _)| t.starts_with("search_events_y")),
        "partitions scanned too"
    );
    for (table, column) in &tables {
        let found: i64 = sqlx::query_scalar(&format!(
            "select count(*) from \"{table}\" where \"{column}\"::text like '%127.0.0.1%'
                 or \"{column}\"::text like '%::1%' or \"{column}\"::text like '%7f000001%'"
        ))
        .fetch_one(&app.db.pool)
        .await
        .expect("scan");
        assert_eq!(found, 0, "{table}.{column} holds the client address");
    }
    let jobs: i64 =
        sqlx::query_scalar("select count(*) from jobs where payload::text like '%127.0.0.1%'")
            .fetch_one(&app.db.pool)
            .await
            .expect("jobs");
    assert_eq!(jobs, 0);
}

#[tokio::test]
async fn bad_input_names_its_field_and_writes_nothing() {
    let app = TestApp::without_worker().await;
    let token = app.student().await;
    let long = "x".repeat(201);
    let big = json!({"k": "v".repeat(2100)});
    let many: Vec<Value> = (0..101)
        .map(|n| json!({"instructor_id": 1, "position": n}))
        .collect();
    for (body, field) in [
        (json!({"query": long, "result_count": 1}), "query"),
        (json!({"query": " \t ", "result_count": 1}), "query"),
        (json!({"query": "", "result_count": 1}), "query"),
        (json!({"query": "a\u{0}b", "result_count": 1}), "query"),
        (
            json!({"query": "piano", "result_count": -1}),
            "result_count",
        ),
        (
            json!({"query": "piano", "result_count": 10_000_000_000i64}),
            "result_count",
        ),
        (
            json!({"query": "piano", "result_count": "3"}),
            "result_count",
        ),
        (
            json!({"query": "piano", "result_count": 1, "filters": [1, 2]}),
            "filters",
        ),
        (
            json!({"query": "piano", "result_count": 1, "filters": "city=nyc"}),
            "filters",
        ),
        (
            json!({"query": "piano", "result_count": 1, "filters": big}),
            "filters",
        ),
        (
            json!({"query": "piano", "result_count": 1, "filters": {"a": "\u{0}"}}),
            "filters",
        ),
        (
            json!({"query": "piano", "result_count": 1, "shown": many}),
            "shown",
        ),
        (
            json!({"query": "piano", "result_count": 1, "shown": [{"instructor_id": 1, "position": -1}]}),
            "shown",
        ),
        (
            json!({"query": "piano", "result_count": 1, "search_id": "not-a-uuid"}),
            "search_id",
        ),
        (
            json!({"query": "piano", "result_count": 1, "ip": "1.2.3.4"}),
            "ip",
        ),
        (json!({"result_count": 1}), "query"),
    ] {
        let (status, answer) = send(
            &app,
            Method::POST,
            "/api/v1/search/events",
            user(&token),
            Some(body.clone()),
        )
        .await;
        assert_eq!(status, 422, "{body}: {answer}");
        assert_eq!(answer["field"], field, "{body}: {answer}");
    }
    let (_, event) = search(
        &app,
        user(&token),
        json!({"query": "piano", "result_count": 1}),
    )
    .await;
    for (body, field) in [
        (json!({"kind": "like"}), "kind"),
        (json!({"kind": "click", "position": -3}), "position"),
        (
            json!({"kind": "click", "instructor_id": 0}),
            "instructor_id",
        ),
        (json!({"kind": "click", "when": "now"}), "when"),
    ] {
        let (status, answer) = interact(&app, user(&token), event, body.clone()).await;
        assert_eq!(status, 422, "{body}: {answer}");
        assert_eq!(answer["field"], field, "{body}: {answer}");
    }
    let admin = app.token("admin@example.com").await;
    for (query, field) in [
        ("from=2026-03-10&to=2026-03-01", "to"),
        ("from=2025-01-01&to=2026-03-01", "to"),
    ] {
        let (status, answer) = send(
            &app,
            Method::GET,
            &format!("/api/v1/admin/analytics/search?{query}"),
            user(&admin),
            None,
        )
        .await;
        assert_eq!(status, 422, "{query}: {answer}");
        assert_eq!(answer["field"], field);
    }
    for (body, field) in [
        (json!({"from": "2026-03-10", "to": "2026-03-01"}), "to"),
        (json!({}), "date"),
        (json!({"from": "2026-03-10"}), "to"),
        (
            json!({"date": "2026-03-10", "from": "2026-03-01", "to": "2026-03-02"}),
            "date",
        ),
        (json!({"date": "2999-01-01"}), "date"),
    ] {
        let (status, answer) = send(
            &app,
            Method::POST,
            "/api/v1/admin/analytics/rollups",
            user(&admin),
            Some(body.clone()),
        )
        .await;
        assert_eq!(status, 422, "{body}: {answer}");
        assert_eq!(answer["field"], field, "{body}");
    }
    for header in ["", &"g".repeat(65), "ü"] {
        let mut request = app
            .http
            .post(format!("{}/api/v1/search/events", app.base))
            .json(&json!({"query": "q", "result_count": 1}));
        request = request.header("x-guest-session", header.as_bytes());
        let response = request.send().await.expect("request");
        assert_eq!(response.status().as_u16(), 400, "guest header {header:?}");
    }
    let (status, _) = send(
        &app,
        Method::POST,
        "/api/v1/search/events",
        Who {
            token: None,
            guest: None,
            agent: DESKTOP,
        },
        Some(json!({"query": "q", "result_count": 1})),
    )
    .await;
    assert_eq!(status, 401);
    let events: i64 = sqlx::query_scalar("select count(*) from search_events")
        .fetch_one(&app.db.pool)
        .await
        .expect("count");
    assert_eq!(events, 1, "only the one valid search");
    let history: i64 = sqlx::query_scalar("select count(*) from search_history")
        .fetch_one(&app.db.pool)
        .await
        .expect("count");
    assert_eq!(history, 1);
}

/// Every documented answer of the search and analytics endpoints is provoked, and matches
/// the document.
#[tokio::test]
async fn the_search_endpoints_answer_as_documented() {
    let app = TestApp::without_worker().await;
    let mut contract = Contract::fetch(&app).await;
    let student = app.student().await;
    let other = second_user(&app).await;
    let admin = app.token("admin@example.com").await;
    let today = Utc::now()
        .with_timezone(&chrono_tz::America::New_York)
        .date_naive();

    macro_rules! expect {
        ($method:ident $template:literal, $path:expr, $who:expr, $body:expr => $status:expr) => {{
            let path: String = $path.into();
            let who: Who = $who;
            let mut request = app
                .http
                .request(Method::$method, format!("{}{}", app.base, path))
                .header("user-agent", who.agent);
            if let Some(t) = who.token {
                request = request.bearer_auth(t);
            }
            if let Some(g) = who.guest {
                request = request.header("x-guest-session", g);
            }
            let request = match $body {
                Body::None => request,
                Body::Json(v) => request.json(&v),
                Body::Raw(ct, bytes) => match ct {
                    Some(ct) => request.header("content-type", ct).body(bytes),
                    None => request.body(bytes),
                },
            };
            let response = request.send().await.expect("request");
            let status = response.status().as_u16();
            let content_type = response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let headers = response.headers().clone();
            let text = response.text().await.unwrap_or_default();
            let answer = Answer {
                status,
                content_type,
                retry_after: None,
                headers,
                json: serde_json::from_str(&text).ok(),
                text,
            };
            assert_eq!(
                answer.status,
                $status,
                "{} {}: {}",
                stringify!($method),
                path,
                answer.text
            );
            contract.check(stringify!($method), $template, &answer);
            answer
        }};
    }
    let nobody = Who {
        token: None,
        guest: None,
        agent: DESKTOP,
    };
    let body = |v: Value| Body::Json(v);

    // events
    let sid = uuid::Uuid::new_v4();
    let created = expect!(POST "/api/v1/search/events", "/api/v1/search/events", user(&student),
        body(json!({"search_id": sid, "query": "Piano", "result_count": 2, "filters": {"city": "nyc"}, "shown": [{"instructor_id": 3, "service_id": 1, "position": 0}]})) => 201);
    let event = created.json.expect("json")["id"].as_i64().expect("id");
    expect!(POST "/api/v1/search/events", "/api/v1/search/events", user(&student),
        body(json!({"search_id": sid, "query": "Piano", "result_count": 2})) => 200);
    expect!(POST "/api/v1/search/events", "/api/v1/search/events", user(&other),
        body(json!({"search_id": sid, "query": "Piano", "result_count": 2})) => 409);
    expect!(POST "/api/v1/search/events", "/api/v1/search/events", guest("g-1"),
        body(json!({"query": "cello", "result_count": 0})) => 201);
    expect!(POST "/api/v1/search/events", "/api/v1/search/events", nobody,
        body(json!({"query": "cello", "result_count": 0})) => 401);
    let long_session = "g".repeat(65);
    expect!(POST "/api/v1/search/events", "/api/v1/search/events", guest(&long_session),
        body(json!({"query": "cello", "result_count": 0})) => 400);
    expect!(POST "/api/v1/search/events", "/api/v1/search/events", user(&student),
        Body::Raw(Some("application/json"), b"{\"query\":".to_vec()) => 400);
    expect!(POST "/api/v1/search/events", "/api/v1/search/events", user(&student),
        Body::Raw(None, b"{}".to_vec()) => 415);
    expect!(POST "/api/v1/search/events", "/api/v1/search/events", user(&student),
        body(json!({"query": "x".repeat(70 * 1024), "result_count": 0})) => 413);
    expect!(POST "/api/v1/search/events", "/api/v1/search/events", user(&student),
        body(json!({"query": "x", "result_count": -1})) => 422);

    // interactions
    let interactions = format!("/api/v1/search/events/{event}/interactions");
    expect!(POST "/api/v1/search/events/{id}/interactions", interactions.clone(), user(&student),
        body(json!({"kind": "click", "position": 0, "instructor_id": 3, "service_id": 1})) => 201);
    expect!(POST "/api/v1/search/events/{id}/interactions", interactions.clone(), user(&student),
        body(json!({"kind": "conversion"})) => 201);
    expect!(POST "/api/v1/search/events/{id}/interactions", interactions.clone(), user(&student),
        body(json!({"kind": "conversion"})) => 200);
    expect!(POST "/api/v1/search/events/{id}/interactions", interactions.clone(), user(&other),
        body(json!({"kind": "click"})) => 404);
    expect!(POST "/api/v1/search/events/{id}/interactions", "/api/v1/search/events/999999/interactions", user(&student),
        body(json!({"kind": "click"})) => 404);
    expect!(POST "/api/v1/search/events/{id}/interactions", "/api/v1/search/events/abc/interactions", user(&student),
        body(json!({"kind": "click"})) => 400);
    expect!(POST "/api/v1/search/events/{id}/interactions", interactions.clone(), nobody,
        body(json!({"kind": "click"})) => 401);
    expect!(POST "/api/v1/search/events/{id}/interactions", interactions.clone(), user(&student),
        body(json!({"kind": "like"})) => 422);
    expect!(POST "/api/v1/search/events/{id}/interactions", interactions.clone(), user(&student),
        Body::Raw(Some("text/plain"), b"{}".to_vec()) => 415);
    expect!(POST "/api/v1/search/events/{id}/interactions", interactions.clone(), user(&student),
        body(json!({"kind": "click", "pad": "x".repeat(70 * 1024)})) => 413);

    // history
    let history = expect!(GET "/api/v1/search/history", "/api/v1/search/history", user(&student), Body::None => 200);
    let entry = history.json.expect("json")[0]["id"]
        .as_i64()
        .expect("entry");
    expect!(GET "/api/v1/search/history", "/api/v1/search/history", guest("g-1"), Body::None => 200);
    expect!(GET "/api/v1/search/history", "/api/v1/search/history", nobody, Body::None => 401);
    expect!(GET "/api/v1/search/history", "/api/v1/search/history", guest(""), Body::None => 400);
    expect!(DELETE "/api/v1/search/history/{id}", format!("/api/v1/search/history/{entry}"), user(&other), Body::None => 404);
    expect!(DELETE "/api/v1/search/history/{id}", format!("/api/v1/search/history/{entry}"), user(&student), Body::None => 200);
    expect!(DELETE "/api/v1/search/history/{id}", "/api/v1/search/history/x", user(&student), Body::None => 400);
    expect!(DELETE "/api/v1/search/history/{id}", "/api/v1/search/history/1", nobody, Body::None => 401);
    expect!(POST "/api/v1/search/history/claim", "/api/v1/search/history/claim",
        Who { token: Some(&student), guest: Some("g-1"), agent: DESKTOP }, Body::None => 200);
    expect!(POST "/api/v1/search/history/claim", "/api/v1/search/history/claim", user(&student), Body::None => 400);
    expect!(POST "/api/v1/search/history/claim", "/api/v1/search/history/claim", guest("g-1"), Body::None => 401);

    // admin analytics
    let range = format!(
        "/api/v1/admin/analytics/search?from={}&to={today}",
        today - chrono::Duration::days(7)
    );
    expect!(GET "/api/v1/admin/analytics/search", range.clone(), user(&admin), Body::None => 200);
    expect!(GET "/api/v1/admin/analytics/search", range.clone(), user(&student), Body::None => 403);
    expect!(GET "/api/v1/admin/analytics/search", range.clone(), nobody, Body::None => 401);
    expect!(GET "/api/v1/admin/analytics/search", "/api/v1/admin/analytics/search?from=2026-01-01", user(&admin), Body::None => 400);
    expect!(GET "/api/v1/admin/analytics/search", "/api/v1/admin/analytics/search?from=2026-01-10&to=2026-01-01", user(&admin), Body::None => 422);
    let rollups = "/api/v1/admin/analytics/rollups";
    expect!(POST "/api/v1/admin/analytics/rollups", rollups, user(&admin), body(json!({"date": today})) => 202);
    expect!(POST "/api/v1/admin/analytics/rollups", rollups, user(&admin),
        body(json!({"from": today - chrono::Duration::days(2), "to": today})) => 202);
    expect!(POST "/api/v1/admin/analytics/rollups", rollups, user(&student), body(json!({"date": today})) => 403);
    expect!(POST "/api/v1/admin/analytics/rollups", rollups, nobody, body(json!({"date": today})) => 401);
    expect!(POST "/api/v1/admin/analytics/rollups", rollups, user(&admin), body(json!({"date": "2999-01-01"})) => 422);
    expect!(POST "/api/v1/admin/analytics/rollups", rollups, user(&admin),
        Body::Raw(Some("application/json"), b"{".to_vec()) => 400);
    expect!(POST "/api/v1/admin/analytics/rollups", rollups, user(&admin),
        Body::Raw(None, b"{}".to_vec()) => 415);
    expect!(POST "/api/v1/admin/analytics/rollups", rollups, user(&admin),
        body(json!({"date": "x".repeat(70 * 1024)})) => 413);

    // every documented answer of these operations was provoked (429 and 503 need a fault)
    let mut missing = Vec::new();
    for (method, template) in &contract.operations {
        if !(template.starts_with("/api/v1/search/")
            || template.starts_with("/api/v1/admin/analytics/"))
        {
            continue;
        }
        for status in contract.doc["paths"][template][method.to_lowercase()]["responses"]
            .as_object()
            .expect("responses")
            .keys()
            .filter_map(|s| s.parse::<u16>().ok())
        {
            if ![429, 503].contains(&status)
                && !contract
                    .seen
                    .contains(&(method.clone(), template.clone(), status))
            {
                missing.push(format!("{method} {template} {status}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "documented answers never provoked: {missing:?}"
    );
}

/// The whole flow through the binaries: searches and a click over HTTP from 127.0.0.1, the
/// rollup of yesterday run by `scheduler trigger search_rollup` and of today by the admin
/// endpoint, the admin read showing the numbers; and no process logged the client address.
#[tokio::test]
async fn the_flow_through_the_binaries() {
    use e2e::procs::Cluster;
    let mut cluster = Cluster::new(shared::testing::redis_url(), &[]).await;
    let api = cluster.api().await;
    let _worker = cluster.worker().await;
    let base = format!("http://127.0.0.1:{}", api.port);
    let http = reqwest::Client::new();
    let student = cluster.token("student@example.com").await;
    let admin = cluster.token("admin@example.com").await;
    let tz = chrono_tz::America::New_York;
    let today = Utc::now().with_timezone(&tz).date_naive();
    let yesterday = today - chrono::Duration::days(1);

    // yesterday: two searches by one guest, one with no results (written as the API would)
    let (from, _) = worker::jobs::search_rollup::day_bounds(yesterday, tz);
    sqlx::query(
        "with ids as (insert into search_ids (search_id, event_id, searched_at)
                      select gen_random_uuid(), nextval('search_events_id_seq'), $1 + n * interval '1 hour'
                      from generate_series(1, 2) n returning event_id, search_id, searched_at)
         insert into search_events (id, search_id, searched_at, guest_session, query, normalized_query,
                                    result_count, ua_class)
         select event_id, search_id, searched_at, 'g-yesterday', 'Harp', 'harp',
                case when searched_at = (select min(searched_at) from ids) then 0 else 2 end, 'mobile'
         from ids",
    )
    .bind(from)
    .execute(&cluster.db.pool)
    .await
    .expect("yesterday's searches");

    // today, over HTTP
    let mut ids = Vec::new();
    for (query, results) in [("Piano", 3), ("piano", 0), ("Drums", 1)] {
        let response = http
            .post(format!("{base}/api/v1/search/events"))
            .bearer_auth(&student)
            .header("user-agent", DESKTOP)
            .json(&json!({"query": query, "result_count": results}))
            .send()
            .await
            .expect("search");
        assert_eq!(response.status().as_u16(), 201);
        let body: Value = response.json().await.expect("json");
        ids.push(body["id"].as_i64().expect("id"));
    }
    let response = http
        .post(format!(
            "{base}/api/v1/search/events/{}/interactions",
            ids[0]
        ))
        .bearer_auth(&student)
        .json(&json!({"kind": "click", "position": 0}))
        .send()
        .await
        .expect("click");
    assert_eq!(response.status().as_u16(), 201);

    let trigger = tokio::process::Command::new(e2e::procs::bin_dir().join("scheduler"))
        .args(["trigger", "search_rollup"])
        .envs(cluster.env.iter().cloned())
        .output()
        .await
        .expect("scheduler trigger");
    assert!(
        trigger.status.success(),
        "{}",
        String::from_utf8_lossy(&trigger.stderr)
    );
    let response = http
        .post(format!("{base}/api/v1/admin/analytics/rollups"))
        .bearer_auth(&admin)
        .json(&json!({"date": today}))
        .send()
        .await
        .expect("admin rollup");
    assert_eq!(response.status().as_u16(), 202);

    let read = || async {
        let response = http
            .get(format!(
                "{base}/api/v1/admin/analytics/search?from={yesterday}&to={today}"
            ))
            .bearer_auth(&admin)
            .send()
            .await
            .ok()?;
        let body: Value = response.json().await.ok()?;
        let days = body["days"].as_array()?.clone();
        (days.len() == 2).then_some(days)
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let days = loop {
        if let Some(days) = read().await {
            break days;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the two days were never rolled up"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(days[0]["date"], json!(yesterday));
    assert_eq!(days[0]["searches"], 2);
    assert_eq!(days[0]["unique_searchers"], 1);
    assert_eq!(days[0]["zero_result_rate"], 0.5);
    assert_eq!(days[1]["date"], json!(today));
    assert_eq!(days[1]["searches"], 3);
    assert_eq!(days[1]["click_through_rate"], 0.5);
    assert_eq!(
        query_counts(&days[1]["top_queries"]),
        counts(&[("piano", 2), ("drums", 1)])
    );
    let logs = cluster.logs();
    for line in logs.lines() {
        assert!(
            !line.contains("127.0.0.1")
                || line.contains("redis://")
                || line.contains("postgres://"),
            "a log line carries the client address: {line}"
        );
    }
}

/// Inserts `n` events spread evenly over `from`..`to` in one statement, as search_ids and
/// search_events rows, by users `users` and a few hundred guests, some of them bots.
async fn seed_events(pool: &sqlx::PgPool, from: &str, to: &str, n: i64, users: &[i64]) {
    sqlx::query(
        "with e as (
             select g, nextval('search_events_id_seq') as id, gen_random_uuid() as search_id,
                    $1::timestamptz + (g::float8 / $3::int8) * ($2::timestamptz - $1::timestamptz) as at
             from generate_series(0, $3::int8 - 1) g
         ), ids as (
             insert into search_ids (search_id, event_id, searched_at)
             select search_id, id, at from e
         )
         insert into search_events (id, search_id, searched_at, user_id, guest_session, query,
                                    normalized_query, result_count, ua_class, clicked, converted)
         select id, search_id, at,
                case when g % 5 <> 0 then ($4::int8[])[1 + g % cardinality($4::int8[])] end,
                case when g % 5 = 0 then 'guest-' || (g % 311) end,
                'Q' || (g * g % 37), 'q' || (g * g % 37), (g % 7) * (g % 3),
                case when g % 19 = 0 then 'bot' else 'desktop' end, g % 4 = 0, g % 23 = 0
         from e",
    )
    .bind(utc(from))
    .bind(utc(to))
    .bind(n)
    .bind(users)
    .execute(pool)
    .await
    .expect("seed events");
}

/// The per-day aggregates that the rollup reads hold exactly what a scan of the events
/// gives, after inserts, interaction flags, edits and deletes (an erasure's), on DST days
/// too; a zone adopted later covers only the days after the events already written.
#[tokio::test]
async fn the_day_aggregates_equal_a_scan_of_the_events_after_every_write() {
    use worker::jobs::search_rollup::{Source, compute, source_for};
    let (app, clock) = app_at("2026-03-10T12:00:00Z", &[("2026-03-01", "2026-04-30")]).await;
    let pool = &app.db.pool;
    let mut users = Vec::new();
    for n in 0..40 {
        let id: i64 = sqlx::query_scalar(
            "insert into users (email, full_name, role) values ($1, 'Seeded Searcher', 'student') returning id",
        )
        .bind(format!("searcher{n}@example.test"))
        .fetch_one(pool)
        .await
        .expect("user");
        users.push(id);
    }
    let ny = chrono_tz::America::New_York;
    let days = ["2026-03-07", "2026-03-08", "2026-03-09", "2026-03-10"];
    let agree = |label: &'static str| async move {
        let mut conn = pool.acquire().await.expect("conn");
        for day in days {
            let day = date(day);
            assert_eq!(
                source_for(&mut conn, day, ny).await.unwrap(),
                Source::Aggregates
            );
            let aggregates = compute(&mut conn, day, ny, Source::Aggregates)
                .await
                .unwrap();
            let events = compute(&mut conn, day, ny, Source::Events).await.unwrap();
            assert_eq!(aggregates, events, "{label}: {day}");
        }
    };

    // the 23-hour day and its neighbours, in two statements that overlap a day
    seed_events(
        pool,
        "2026-03-07T03:00:00Z",
        "2026-03-09T02:00:00Z",
        3000,
        &users,
    )
    .await;
    seed_events(
        pool,
        "2026-03-08T20:00:00Z",
        "2026-03-11T04:59:59Z",
        2000,
        &users,
    )
    .await;
    agree("inserted").await;
    let searches: i64 = sqlx::query_scalar("select sum(searches) from search_day_queries")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(searches, 5000);

    // through the API too: an event and a click on it
    let a = app.student().await;
    clock.set(utc("2026-03-09T15:00:00Z"));
    let (_, event) = search(&app, user(&a), json!({"query": "Oboe", "result_count": 2})).await;
    interact(
        &app,
        user(&a),
        event,
        json!({"kind": "click", "position": 0}),
    )
    .await;
    agree("an event and a click over HTTP").await;

    sqlx::query(
        "update search_events set clicked = not clicked, converted = id % 2 = 0 where id % 3 = 0",
    )
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "update search_events set normalized_query = 'edited', result_count = 0 where id % 11 = 0",
    )
    .execute(pool)
    .await
    .unwrap();
    agree("flags and queries edited").await;

    // an erasure: every event of some users and guests goes, and with the last of a day's
    // events its searcher leaves the day's unique count
    sqlx::query("delete from search_interactions")
        .execute(pool)
        .await
        .unwrap();
    sqlx::query(
        "delete from search_events where user_id = any($1) or guest_session like 'guest-1%'",
    )
    .bind(&users[..10])
    .execute(pool)
    .await
    .unwrap();
    agree("erased").await;
    let left_over: i64 = sqlx::query_scalar(
        "select count(*) from search_day_searchers where searches <= 0 or searcher = any(select 'u:' || unnest($1::int8[]))",
    )
    .bind(&users[..10])
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(left_over, 0, "no erased searcher, no empty row");

    // another zone: the days that already have events are rolled up from them
    let berlin = chrono_tz::Europe::Berlin;
    let covers_from = shared::search::adopt_zone(pool, berlin).await.unwrap();
    assert_eq!(covers_from, Some(date("2026-03-12")));
    assert_eq!(
        shared::search::adopt_zone(pool, berlin).await.unwrap(),
        covers_from
    );
    let mut conn = pool.acquire().await.unwrap();
    assert_eq!(
        source_for(&mut conn, date("2026-03-10"), berlin)
            .await
            .unwrap(),
        Source::Events
    );
    assert_eq!(
        source_for(&mut conn, date("2026-03-12"), ny).await.unwrap(),
        Source::Events
    );
    seed_events(
        pool,
        "2026-03-12T00:00:00Z",
        "2026-03-13T22:00:00Z",
        500,
        &users,
    )
    .await;
    for day in ["2026-03-12", "2026-03-13"] {
        let day = date(day);
        assert_eq!(
            source_for(&mut conn, day, berlin).await.unwrap(),
            Source::Aggregates
        );
        assert_eq!(
            compute(&mut conn, day, berlin, Source::Aggregates)
                .await
                .unwrap(),
            compute(&mut conn, day, berlin, Source::Events)
                .await
                .unwrap()
        );
    }
}
