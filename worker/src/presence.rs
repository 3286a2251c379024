//! The worker process's presence in Postgres: a row in `workers` under its instance name,
//! its heartbeat (every `HEARTBEAT_SECS`, at most every 5 s), and its stop. An email claim names the instance
//! that holds it (`jobs::booking_email`), so another delivery can tell a slow send (its
//! worker heartbeats: never taken over) from an abandoned one (its worker is dead or
//! stopped: taken over at once).
use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::Deps;

/// Heartbeats missed before a worker is known dead.
const MISSED_BEATS: u32 = 3;

/// Longest gap between two presence beats. The Redis heartbeat may be slow to keep Redis
/// quiet at rest (`HEARTBEAT_SECS`, 30 s by default); this one is a Postgres upsert, cheap
/// at any cadence, and bounds how long a dead sender's email waits: 3 beats of 5 s.
const MAX_INTERVAL: Duration = Duration::from_secs(5);

/// How often this worker writes its presence.
pub fn interval(heartbeat_secs: u64) -> Duration {
    Duration::from_secs(heartbeat_secs.max(1)).min(MAX_INTERVAL)
}

/// How long a worker's presence may be silent before its claims are taken over.
pub fn dead_after(heartbeat_secs: u64) -> Duration {
    (interval(heartbeat_secs) * MISSED_BEATS).max(Duration::from_secs(2))
}

/// A name unique to this start of this process.
pub fn instance_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let unique = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}-{}", std::process::id(), &unique[..8])
}

// The database's clock, not the process's: claims are judged against `now()` in SQL.
async fn beat(pool: &PgPool, instance: &str) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "insert into workers (id, started_at, heartbeat_at) values ($1, now(), now())
         on conflict (id) do update set heartbeat_at = now()",
        instance
    )
    .execute(pool)
    .await
    .map(drop)
}

/// Says this worker is alive now (call before its first delivery).
pub async fn announce(deps: &Deps) -> Result<(), sqlx::Error> {
    beat(&deps.durable, &deps.instance).await
}

/// Heartbeats until `stop` fires, on a connection of its own: a late heartbeat makes a live
/// worker look dead and its slow send be taken over, so it never queues behind job work.
pub async fn run(deps: Deps, stop: CancellationToken) {
    let every = interval(deps.config.heartbeat_secs);
    let mut pool: Option<PgPool> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => return,
        }
        if pool.is_none() {
            pool = shared::db::connect(&deps.config.database_url, 1)
                .await
                .inspect_err(|e| tracing::warn!(error = %e, "worker heartbeat cannot connect"))
                .ok();
        }
        if let Some(p) = &pool
            && let Err(e) = beat(p, &deps.instance).await
        {
            tracing::warn!(error = %e, "worker heartbeat failed");
        }
    }
}

/// Records a clean stop: the worker's in-flight work has drained, so any claim it still
/// names was abandoned.
pub async fn stopped(deps: &Deps) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "update workers set stopped_at = now() where id = $1",
        &*deps.instance
    )
    .execute(&deps.durable)
    .await
    .map(drop)
}
