//! Rate limiting per client on the public and write endpoints: past the burst a client gets
//! 429 with `Retry-After` and the JSON error body, other clients go on unaffected, a made-up
//! token does not buy a fresh quota, and the client is let back in once it has waited.
use std::time::{Duration, Instant};

use e2e::platform::TestApp;
use reqwest::Method;
use serde_json::json;
use tokio::sync::oneshot;

use crate::contract::{Answer, Api, Body, Contract, call};

const PER_SEC: u32 = 1;
const BURST: u32 = 3;

/// Sends `request` until it is refused with 429 (at most 20 times) and returns the refusal,
/// checking that no more than the quota were let through before it.
async fn burst_until_limited<F, Fut>(what: &str, mut request: F) -> Answer
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Answer>,
{
    let started = Instant::now();
    for allowed in 0..20u32 {
        let answer = request().await;
        if answer.status == 429 {
            // the quota: the burst plus what refilled while we were sending
            let refilled = (started.elapsed().as_secs_f64() * f64::from(PER_SEC)).ceil() as u32;
            assert!(
                allowed <= BURST + refilled,
                "{what}: {allowed} requests let through before the limit"
            );
            assert!(allowed >= 1, "{what}: refused from the first request");
            return answer;
        }
        assert_ne!(answer.status, 500, "{what}: {}", answer.text);
    }
    panic!("{what}: never rate limited after 20 requests");
}

/// A second API server on the platform's database with a tight limit. (`Options.extra_env`
/// cannot override RATE_LIMIT_*: the harness appends it after its own values and the config
/// loader refuses duplicate keys.)
struct LimitedApi {
    base: String,
    http: reqwest::Client,
    _stop: oneshot::Sender<()>,
}

impl Api for LimitedApi {
    fn base(&self) -> &str {
        &self.base
    }
    fn http(&self) -> &reqwest::Client {
        &self.http
    }
}

async fn limited_api(platform: &TestApp) -> LimitedApi {
    let mut config = platform.config.clone();
    config.rate_limit_per_sec = PER_SEC;
    config.rate_limit_burst = BURST;
    let state = api::build_state(config, platform.clock.clone())
        .await
        .expect("api state");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind api");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(api::serve(listener, state, async move {
        let _ = stopped.await;
    }));
    LimitedApi {
        base,
        http: reqwest::Client::new(),
        _stop: stop,
    }
}

#[tokio::test]
async fn bursts_are_refused_per_client_with_retry_after() {
    let platform = TestApp::without_worker().await;
    let app = limited_api(&platform).await;
    let mut contract = Contract::fetch(&app).await;
    let student = platform.student().await;
    let other = platform.other_student().await;
    let instructor_id = platform.instructor_id().await;
    let service_id = platform.service_id().await;
    let booking = |hour: u32| {
        Body::Json(json!({
            "instructor_id": instructor_id,
            "service_id": service_id,
            "start": platform.lesson_at(3, hour).to_rfc3339(),
        }))
    };

    // a write endpoint: the student bursts past the limit
    let mut hour = 8;
    let refused = burst_until_limited("student writes", || {
        hour += 1;
        call(
            &app,
            Method::POST,
            "/api/v1/bookings",
            Some(&student),
            booking(hour),
        )
    })
    .await;
    contract.check("POST", "/api/v1/bookings", &refused);
    assert_eq!(refused.json.as_ref().expect("json")["code"], "rate_limited");
    // the quota is the student's, whatever the endpoint
    let answer = call(
        &app,
        Method::GET,
        "/api/v1/bookings",
        Some(&student),
        Body::None,
    )
    .await;
    contract.check("GET", "/api/v1/bookings", &answer);
    assert_eq!(answer.status, 429);

    // another user, and the unauthenticated key, are unaffected
    let answer = call(
        &app,
        Method::POST,
        "/api/v1/bookings",
        Some(&other),
        booking(19),
    )
    .await;
    contract.check("POST", "/api/v1/bookings", &answer);
    assert_eq!(answer.status, 201, "{}", answer.text);
    let answer = call(&app, Method::GET, "/api/v1/instructors", None, Body::None).await;
    assert_eq!(answer.status, 200, "{}", answer.text);

    // a public endpoint: the anonymous client (this peer address) bursts past the limit
    let day = platform.lesson_at(3, 10).date_naive();
    let availability = format!(
        "/api/v1/public/instructors/{instructor_id}/availability?start_date={day}&end_date={day}"
    );
    let refused = burst_until_limited("anonymous reads", || {
        call(&app, Method::GET, &availability, None, Body::None)
    })
    .await;
    contract.check(
        "GET",
        "/api/v1/public/instructors/{id}/availability",
        &refused,
    );
    let answer = call(&app, Method::GET, "/api/v1/instructors", None, Body::None).await;
    contract.check("GET", "/api/v1/instructors", &answer);
    assert_eq!(answer.status, 429);

    // made-up or expired tokens do not buy a fresh quota: they count as the peer
    for fake in ["a.b.c", "made-up-1", "made-up-2"] {
        let answer = call(
            &app,
            Method::GET,
            "/api/v1/instructors",
            Some(fake),
            Body::None,
        )
        .await;
        assert_eq!(
            answer.status, 429,
            "token {fake:?} escaped the limit: {}",
            answer.text
        );
    }

    // an authenticated user is still served on the public endpoint
    let answer = call(&app, Method::GET, &availability, Some(&other), Body::None).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    // and the unlimited endpoints stay open to everyone
    let answer = call(&app, Method::GET, "/health", None, Body::None).await;
    assert_eq!(answer.status, 200);

    // once it has waited Retry-After, the client is let back in
    let wait: u64 = refused
        .retry_after
        .as_deref()
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!(
        wait <= u64::from(BURST.div_ceil(PER_SEC)) + 1,
        "Retry-After {wait} too long"
    );
    let deadline = Instant::now() + Duration::from_secs(wait + 3);
    e2e::eventually(
        Duration::from_secs(wait + 3),
        "anonymous client let back in",
        || async {
            call(&app, Method::GET, "/api/v1/instructors", None, Body::None)
                .await
                .status
                == 200
        },
    )
    .await;
    assert!(Instant::now() <= deadline);
}
