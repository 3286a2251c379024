//! The platform under test, in-process: the real API router and the real worker (relay,
//! reconciler, apalis workers) against a fresh database, real Redis under a private key
//! prefix, and the SMTP sink.
use std::{sync::Arc, time::Duration};

use serde_json::Value;
use shared::{
    clock::{SharedClock, SystemClock},
    config::Config,
    domain::Role,
    testing::{self, TestDatabase},
};
use tokio::{sync::oneshot, task::JoinHandle};

use crate::smtp::SmtpSink;

/// Knobs for one platform.
pub struct Options {
    pub redis_url: String,
    pub clock: SharedClock,
    pub extra_env: Vec<(String, String)>,
    pub start_worker: bool,
    /// The worker's job kinds, when not the platform's own (`worker::jobs::registry`).
    pub registry: Option<worker::jobs::Registry>,
    /// A database prepared by the test (say, migrated only part of the way), else a new one.
    pub database: Option<TestDatabase>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            redis_url: testing::redis_url(),
            clock: Arc::new(SystemClock),
            extra_env: Vec::new(),
            start_worker: true,
            registry: None,
            database: None,
        }
    }
}

/// A running platform.
pub struct TestApp {
    pub base: String,
    pub db: TestDatabase,
    pub prefix: String,
    pub smtp: SmtpSink,
    pub config: Config,
    pub http: reqwest::Client,
    pub clock: SharedClock,
    registry: Option<worker::jobs::Registry>,
    api_stop: Option<oneshot::Sender<()>>,
    worker: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

impl TestApp {
    pub async fn start() -> TestApp {
        Self::start_with(Options::default()).await
    }

    /// The API alone: jobs stay in the outbox, nothing is sent.
    pub async fn without_worker() -> TestApp {
        Self::start_with(Options {
            start_worker: false,
            ..Options::default()
        })
        .await
    }

    pub async fn start_with(options: Options) -> TestApp {
        let db = match options.database {
            Some(db) => {
                shared::db::MIGRATOR
                    .run(&db.pool)
                    .await
                    .expect("migrate the prepared database");
                db
            }
            None => TestDatabase::create().await,
        };
        let smtp = SmtpSink::start().await;
        let prefix = testing::unique_name("t");
        let mut env = vec![
            ("DATABASE_URL".to_string(), db.url.clone()),
            ("REDIS_URL".to_string(), options.redis_url.clone()),
            ("QUEUE_PREFIX".to_string(), prefix.clone()),
            ("SMTP_URL".to_string(), smtp.url()),
            ("HEARTBEAT_SECS".to_string(), "1".to_string()),
            ("RECONCILE_AFTER_SECS".to_string(), "5".to_string()),
            ("WORKER_CONCURRENCY".to_string(), "8".to_string()),
            // tests run side by side on one Postgres (max_connections 100 on CI)
            ("DATABASE_POOL_SIZE".to_string(), "4".to_string()),
            ("RATE_LIMIT_PER_SEC".to_string(), "10000".to_string()),
            ("RATE_LIMIT_BURST".to_string(), "10000".to_string()),
        ];
        for (key, value) in options.extra_env {
            env.retain(|(k, _)| *k != key);
            env.push((key, value));
        }
        let config = Config::from_vars(env).expect("test config");
        api::seed::seed(&db.pool, options.clock.now())
            .await
            .expect("seed");

        let state = api::build_state(config.clone(), options.clock.clone())
            .await
            .expect("api state");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind api");
        let base = format!("http://{}", listener.local_addr().expect("api address"));
        let (api_stop, api_stopped) = oneshot::channel::<()>();
        tokio::spawn(api::serve(listener, state, async move {
            let _ = api_stopped.await;
        }));

        let mut app = TestApp {
            base,
            db,
            prefix,
            smtp,
            config,
            http: reqwest::Client::new(),
            clock: options.clock,
            registry: options.registry,
            api_stop: Some(api_stop),
            worker: None,
        };
        if options.start_worker {
            app.start_worker().await;
        }
        app
    }

    /// Starts the worker (relay, reconciler, consumers) in this process.
    pub async fn start_worker(&mut self) {
        let mut deps = worker::Deps::from_config(self.config.clone(), self.clock.clone())
            .await
            .expect("worker deps");
        deps.relay_poll = Duration::from_millis(200);
        if let Some(registry) = &self.registry {
            deps.registry = Arc::new(registry.clone());
        }
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(async move {
            let _ = worker::run(deps, async move {
                let _ = stopped.await;
            })
            .await;
        });
        self.worker = Some((stop, handle));
    }

    /// Stops the worker gracefully and waits for it.
    pub async fn stop_worker(&mut self) {
        if let Some((stop, handle)) = self.worker.take() {
            let _ = stop.send(());
            let _ = tokio::time::timeout(Duration::from_secs(30), handle).await;
        }
    }

    /// A bearer token for the seeded user with this email.
    pub async fn token(&self, email: &str) -> String {
        let (id, role): (i64, Role) = sqlx::query_as("select id, role from users where email = $1")
            .bind(email)
            .fetch_one(&self.db.pool)
            .await
            .expect("seeded user");
        api::auth::JwtKeys::new(&self.config.jwt_secret, 60)
            .mint(id, role, chrono::Utc::now())
            .expect("token")
    }

    pub async fn student(&self) -> String {
        self.token("student@example.com").await
    }

    /// A token of a second student, `other@example.com`, created on first use.
    pub async fn other_student(&self) -> String {
        sqlx::query(
            "insert into users (email, full_name, role, timezone)
             values ('other@example.com', 'Olive Other', 'student', 'America/New_York')
             on conflict (email) do nothing",
        )
        .execute(&self.db.pool)
        .await
        .expect("second student");
        self.token("other@example.com").await
    }

    pub async fn instructor_id(&self) -> i64 {
        sqlx::query_scalar("select id from users where email = 'instructor@example.com'")
            .fetch_one(&self.db.pool)
            .await
            .expect("instructor")
    }

    pub async fn service_id(&self) -> i64 {
        sqlx::query_scalar("select id from services limit 1")
            .fetch_one(&self.db.pool)
            .await
            .expect("service")
    }

    /// An instant `days` ahead at `hour`:00 New York time (inside the seeded availability).
    pub fn lesson_at(&self, days: i64, hour: u32) -> chrono::DateTime<chrono::Utc> {
        use chrono::TimeZone;
        let tz = chrono_tz::America::New_York;
        let date =
            (self.clock.now().with_timezone(&tz) + chrono::Duration::days(days)).date_naive();
        tz.from_local_datetime(&date.and_hms_opt(hour, 0, 0).expect("valid hour"))
            .earliest()
            .expect("not in a DST gap")
            .with_timezone(&chrono::Utc)
    }

    /// POST /api/v1/bookings for the seeded student at `start`.
    pub async fn book(&self, token: &str, start: chrono::DateTime<chrono::Utc>) -> (u16, Value) {
        let body = serde_json::json!({
            "instructor_id": self.instructor_id().await,
            "service_id": self.service_id().await,
            "start": start.to_rfc3339(),
        });
        self.send(
            reqwest::Method::POST,
            "/api/v1/bookings",
            Some(token),
            Some(body),
        )
        .await
    }

    /// Sends a request and returns the status and the JSON body (Null when there is none).
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Count of job records in `status`.
    pub async fn jobs_in(&self, status: &str) -> i64 {
        sqlx::query_scalar("select count(*) from jobs where status = $1")
            .bind(status)
            .fetch_one(&self.db.pool)
            .await
            .expect("count jobs")
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.api_stop.take() {
            let _ = stop.send(());
        }
        if let Some((stop, handle)) = self.worker.take() {
            let _ = stop.send(());
            handle.abort();
        }
    }
}
