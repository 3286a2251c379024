//! End-to-end test support: a real SMTP sink, a private Redis server, a private Prometheus,
//! the platform (API and worker) started against a fresh database and its own Redis key
//! prefix, a reader of the emails it sends, and finders of personal data where none
//! belongs.
pub mod mail;
pub mod personal_data;
pub mod pg_server;
pub mod platform;
pub mod procs;
pub mod prometheus;
pub mod redis_server;
pub mod smtp;
pub mod webdriver;

use std::{future::Future, time::Duration};

/// Polls `condition` until it holds or `timeout` passes; never a fixed sleep.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if condition().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits up to five seconds for something to accept connections on `port`.
pub async fn listening(port: u16) -> bool {
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Listens for the outbox relay's wake-up (`jobs_due`) on the database behind `pool`.
pub async fn relay_wakes(pool: &sqlx::PgPool) -> sqlx::postgres::PgListener {
    let mut listener = sqlx::postgres::PgListener::connect_with(pool)
        .await
        .expect("listener");
    listener
        .listen(shared::outbox::NOTIFY_CHANNEL)
        .await
        .expect("listen");
    listener
}

/// Waits (up to 5 s) for the next relay wake-up; panics naming `after` if none comes.
pub async fn woken(listener: &mut sqlx::postgres::PgListener, after: &str) {
    tokio::time::timeout(Duration::from_secs(5), listener.recv())
        .await
        .unwrap_or_else(|_| panic!("no relay wake-up after {after}"))
        .expect("notification");
}
