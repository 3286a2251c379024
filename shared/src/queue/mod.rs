//! The Redis transport, built on apalis-redis 1.0 and configured around its verified
//! defects (see shared/reference/apalis.md in the steering repo):
//! - queue names are always explicit and prefixed (the default is a Rust type path);
//! - `lock_tasks(false)`: the lock costs an O(backlog) `LREM` per task;
//! - the backend promotes every due task in one Lua `unpack`, which fails past ~8,000, so
//!   [`promote_due`] moves them in bounded chunks before the backend sees them;
//! - finished tasks are never deleted by the backend: [`cleanup_finished`] does it;
//! - its stats calls are broken: [`stats`] reads the keys directly.
//!
//! Postgres stays the truth: attempts, dead letters and error history live in `jobs`.
use std::time::Duration;

pub use apalis_redis::ConnectionManager;
use apalis_redis::{Config as QueueConfig, RedisStorage};
use redis::aio::ConnectionManagerConfig;
use serde::Serialize;

/// Connects with timeouts that survive load: redis-rs' default 500 ms response timeout turns
/// a busy moment into a fatal worker error.
pub async fn connect(url: &str) -> Result<ConnectionManager, redis::RedisError> {
    let config = ConnectionManagerConfig::new()
        .set_response_timeout(Some(Duration::from_secs(5)))
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_number_of_retries(3)
        .set_max_delay(Duration::from_secs(1));
    redis::Client::open(url)?
        .get_connection_manager_with_config(config)
        .await
}

/// The full Redis name of `queue` under `prefix`.
pub fn queue_name(prefix: &str, queue: &str) -> String {
    format!("{prefix}:{queue}")
}

/// The backend configuration of one queue.
pub fn queue_config(prefix: &str, queue: &str, heartbeat: Duration) -> QueueConfig {
    QueueConfig::default()
        .queue(queue_name(prefix, queue))
        .batch_size(64)
        .heartbeat_interval(heartbeat)
        // a worker silent for six beats is dead: its in-flight tasks go back to the queue
        .missed_heartbeats(6)
        .lock_tasks(false)
        // the ack: must stay on
        .persist_results(true)
        // nothing subscribes to apalis' per-task pub/sub events; they cost 15-25% of drain
        .emit_events(false)
        .idempotency_ttl(Some(Duration::from_secs(24 * 3600)))
}

/// One task to push: its id (unique per push) and its encoded envelope.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub task_id: String,
    pub payload: Vec<u8>,
}

/// Pushes tasks onto a queue in the key layout apalis-redis consumes (data hash, metadata
/// hash with attempts / max_attempts / status, `:scheduled` set at now), as one MULTI.
///
/// Why not apalis-redis' own push: its batch Lua script costs 34-36 us of Redis CPU per
/// task, where these plain commands cost 9-18 us (ops/bench/README.md), and the script's
/// idempotency and dedupe features are not needed here: every task id is unique per push
/// and Postgres decides what runs once. The backend's own retries (a hard-coded 25, whatever
/// `max_attempts` says) only ever see a handler that could not record its outcome.
pub async fn push(
    conn: &mut ConnectionManager,
    config: &QueueConfig,
    tasks: &[Outgoing],
) -> Result<(), redis::RedisError> {
    if tasks.is_empty() {
        return Ok(());
    }
    let now = unix_now();
    let (data, scheduled, meta_prefix) = (
        config.job_data_hash(),
        config.scheduled_jobs_set(),
        config.job_meta_hash(),
    );
    let mut pipe = redis::pipe();
    pipe.atomic();
    let mut fields = Vec::with_capacity(tasks.len());
    let mut members = Vec::with_capacity(tasks.len());
    for task in tasks {
        fields.push((task.task_id.as_str(), task.payload.as_slice()));
        members.push((now, task.task_id.as_str()));
        pipe.hset_multiple(
            format!("{meta_prefix}:{}", task.task_id),
            &[
                ("attempts", "0"),
                ("max_attempts", "25"),
                ("status", "Pending"),
            ],
        )
        .ignore();
    }
    pipe.hset_multiple(&data, &fields).ignore();
    pipe.zadd_multiple(&scheduled, &members).ignore();
    pipe.query_async(conn).await
}

/// Moves every due task from the `:scheduled` set to the ready list in chunks, so that the
/// backend's own promotion never meets a backlog larger than its Lua `unpack` limit.
pub async fn promote_due(
    conn: &mut ConnectionManager,
    config: &QueueConfig,
) -> Result<u64, redis::RedisError> {
    const SCRIPT: &str = r#"
        local moved = 0
        for _ = 1, tonumber(ARGV[3]) do
          local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
          if #ids == 0 then break end
          redis.call('RPUSH', KEYS[2], unpack(ids))
          redis.call('ZREM', KEYS[1], unpack(ids))
          moved = moved + #ids
        end
        return moved"#;
    redis::Script::new(SCRIPT)
        .key(config.scheduled_jobs_set())
        .key(config.active_jobs_list())
        .arg(unix_now())
        .arg(1000)
        .arg(20)
        .invoke_async(conn)
        .await
}

/// Deletes up to `max` finished (done or dead) tasks' data and metadata. Their outcome is
/// recorded in Postgres; Redis keeps nothing it does not need.
pub async fn cleanup_finished(
    conn: &mut ConnectionManager,
    config: &QueueConfig,
    max: usize,
) -> Result<u64, redis::RedisError> {
    const SCRIPT: &str = r#"
        local removed = 0
        for _, set in ipairs({KEYS[1], KEYS[2]}) do
          local ids = redis.call('SPOP', set, tonumber(ARGV[1]))
          for _, id in ipairs(ids) do
            redis.call('HDEL', KEYS[3], id)
            redis.call('DEL', ARGV[2] .. ':' .. id)
            removed = removed + 1
          end
        end
        return removed"#;
    redis::Script::new(SCRIPT)
        .key(config.done_jobs_set())
        .key(config.dead_jobs_set())
        .key(config.job_data_hash())
        .arg(max)
        .arg(config.job_meta_hash())
        .invoke_async(conn)
        .await
}

/// Deletes every key under `prefix` (a test's or a benchmark's private namespace), in
/// batches, without blocking Redis on one huge command.
pub async fn delete_namespace(
    conn: &mut ConnectionManager,
    prefix: &str,
) -> Result<u64, redis::RedisError> {
    let pattern = format!("{prefix}:*");
    let (mut cursor, mut deleted) = (0u64, 0u64);
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await?;
        if !keys.is_empty() {
            deleted += redis::cmd("DEL")
                .arg(&keys)
                .query_async::<u64>(conn)
                .await?;
        }
        if next == 0 {
            return Ok(deleted);
        }
        cursor = next;
    }
}

/// What a queue holds right now, read from its keys.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
// inert for serializing; tells the OpenAPI document that an answer has no other fields
#[serde(deny_unknown_fields)]
pub struct QueueStats {
    pub queue: String,
    /// Waiting to be fetched: ready plus scheduled (including backend retry back-off).
    pub waiting: u64,
    /// Fetched by a live worker (running or prefetched).
    pub in_flight: u64,
    /// Finished and not yet cleaned up.
    pub finished: u64,
    pub workers: u64,
    /// Registered workers whose heartbeat is older than three beats: connected maybe, but
    /// no longer consuming (stopped, stalled, partitioned).
    pub stale_workers: Vec<String>,
}

/// Reads [`QueueStats`] for one queue.
pub async fn stats(
    conn: &mut ConnectionManager,
    config: &QueueConfig,
) -> Result<QueueStats, redis::RedisError> {
    let (ready, scheduled, done, dead, beats): (u64, u64, u64, u64, Vec<(String, f64)>) =
        redis::pipe()
            .llen(config.active_jobs_list())
            .zcard(config.scheduled_jobs_set())
            .scard(config.done_jobs_set())
            .scard(config.dead_jobs_set())
            .zrange_withscores(config.workers_set(), 0, -1)
            .query_async(conn)
            .await?;
    let stale_after = 3.0 * config.heartbeat_interval.as_secs_f64().max(1.0);
    let now = unix_now() as f64;
    let stale_workers = beats
        .iter()
        .filter(|(_, beat)| now - beat > stale_after)
        .map(|(name, _)| name.clone())
        .collect();
    let workers: Vec<String> = beats.into_iter().map(|(name, _)| name).collect();
    let mut pipe = redis::pipe();
    for worker in &workers {
        pipe.scard(format!("{}:{worker}", config.inflight_jobs_set()));
    }
    let in_flight: Vec<u64> = if workers.is_empty() {
        Vec::new()
    } else {
        pipe.query_async(conn).await?
    };
    Ok(QueueStats {
        queue: config.queue.to_string(),
        waiting: ready + scheduled,
        in_flight: in_flight.iter().sum(),
        finished: done + dead,
        workers: workers.len() as u64,
        stale_workers,
    })
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// The untyped storage of a queue: workers decode the envelope themselves, so that a payload
/// that cannot be decoded becomes a dead letter in Postgres instead of a Redis retry loop.
///
/// `batch_size` is how many tasks one fetch takes: keep it near the worker's concurrency so
/// that one worker does not hoard tasks that others could run.
pub fn storage_raw(
    conn: ConnectionManager,
    prefix: &str,
    queue: &str,
    heartbeat: Duration,
    batch_size: usize,
) -> RedisStorage<serde_json::Value> {
    RedisStorage::new(conn)
        .with_config(queue_config(prefix, queue, heartbeat).batch_size(batch_size.max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stats_report_workers_that_stopped_heartbeating() {
        let mut conn = connect(&crate::testing::redis_url()).await.expect("redis");
        let prefix = crate::testing::unique_name("stats");
        let config = queue_config(&prefix, "q", Duration::from_secs(1));
        let now = unix_now();
        let _: () = redis::cmd("ZADD")
            .arg(config.workers_set())
            .arg(now)
            .arg("alive")
            .arg(now - 10)
            .arg("stalled")
            .query_async(&mut conn)
            .await
            .expect("zadd");
        let stats = stats(&mut conn, &config).await.expect("stats");
        let _: () = redis::cmd("DEL")
            .arg(config.workers_set())
            .query_async(&mut conn)
            .await
            .expect("del");
        assert_eq!(stats.workers, 2);
        assert_eq!(stats.stale_workers, vec!["stalled".to_string()]);
    }
}
