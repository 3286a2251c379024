//! The Redis transport: the key layout apalis-redis 1.0 defined, which the worker's own
//! apalis backend (`worker::backend`) consumes, and what every process needs of it: push,
//! promotion, cleanup and stats. Around apalis-redis' verified defects (see
//! shared/reference/apalis.md in the steering repo):
//! - queue names are always explicit and prefixed (the default is a Rust type path);
//! - a due task is pushed straight onto the ready list; the `:scheduled` set only holds
//!   tasks due later (a backend retry), which [`promote_due`] moves in bounded chunks when
//!   the earliest is due ([`earliest_due`]) instead of on every fetch (apalis' promotion is
//!   one Lua `unpack` of every due id, which fails past ~8,000);
//! - finished tasks are deleted by [`cleanup_finished`] (the backend never deletes them);
//! - liveness is per worker *process*, not per queue: one heartbeat in [`processes_key`]
//!   and the queues a process consumes in [`process_key`], so an idle platform costs Redis
//!   a few commands a minute whatever the number of queues (apalis-redis beats and fetches
//!   per queue);
//! - apalis' stats calls are broken: [`stats`] reads the keys directly, when asked.
//!
//! Postgres stays the truth: attempts, dead letters and error history live in `jobs`.
use std::time::Duration;

mod connection;

use apalis_redis::Config as QueueConfig;
use redis::AsyncCommands;
use serde::Serialize;

pub use connection::{ConnectionManager, Target, connect, master_gone, node_connection};

/// The full Redis name of `queue` under `prefix` (its partition 0): hash-tagged, so that
/// every key of the queue (`{prefix:queue}:data`, `:active`, `:inflight:<process>`, ...)
/// lands in one slot of a Redis Cluster and each script or MULTI of ours touches one slot.
/// (Before the cluster work the name was `prefix:queue`, untagged: a rolling deploy leaves
/// tasks under the old names, which nothing reads; the reconciler finds their records
/// unheld in the new keys after `RECONCILE_AFTER_SECS` and pushes them again, Postgres
/// being the truth.)
pub fn queue_name(prefix: &str, queue: &str) -> String {
    format!("{{{prefix}:{queue}}}")
}

/// The hash slots of a Redis Cluster.
pub const SLOTS: u32 = 16384;

/// The cluster hash slot of `key` (CRC16/XMODEM of its hash tag, as Redis computes it).
pub fn key_slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let tagged = bytes.iter().position(|b| *b == b'{').and_then(|open| {
        let close = bytes[open + 1..].iter().position(|b| *b == b'}')?;
        (close > 0).then(|| &bytes[open + 1..open + 1 + close])
    });
    let mut crc: u16 = 0;
    for byte in tagged.unwrap_or(bytes) {
        crc ^= u16::from(*byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    (u32::from(crc) % SLOTS) as u16
}

/// The Redis name of partition `partition` of `partitions` of `queue`. One partition: the
/// queue's own name. Several: `{prefix:queue:p.k}`, each its own hash tag, with the
/// smallest `k` that puts partition `p` in the `p`-th of `partitions` equal ranges of
/// slots, so that the partitions spread over the shards as evenly as the shards split the
/// slots (hashing names at random puts 4 of 8 partitions on one of 3 shards half the
/// time). Deterministic: every process names a partition the same. Changing the count
/// renames the partitions; what is left under the old names is pushed again by the
/// reconciler from Postgres.
pub fn partition_name(prefix: &str, queue: &str, partition: u32, partitions: u32) -> String {
    let partitions = partitions.max(1);
    if partitions == 1 {
        return queue_name(prefix, queue);
    }
    let (lo, hi) = (
        partition * SLOTS / partitions,
        (partition + 1) * SLOTS / partitions,
    );
    // a range of SLOTS / partitions slots is hit once in `partitions` tries on average
    (0..100_000u32)
        .map(|k| format!("{prefix}:{queue}:{partition}.{k}"))
        .find(|tag| (lo..hi).contains(&u32::from(key_slot(&format!("{{{tag}}}")))))
        .map(|tag| format!("{{{tag}}}"))
        .unwrap_or_else(|| format!("{{{prefix}:{queue}:{partition}.0}}"))
}

/// The partition a job goes to, from its id: hashed (Fibonacci hashing), since a booking's
/// jobs take consecutive ids in a fixed pattern that a plain modulo would map onto a few
/// partitions only. The reconciler finds a job where the relay put it.
pub fn partition_of(job_id: i64, partitions: u32) -> u32 {
    let mixed = (job_id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
    (mixed % u64::from(partitions.max(1))) as u32
}

/// The backend configuration of partition `partition` of a queue split in `partitions`.
pub fn partition_config(
    prefix: &str,
    queue: &str,
    partition: u32,
    partitions: u32,
    heartbeat: Duration,
) -> QueueConfig {
    queue_config(prefix, queue, heartbeat)
        .queue(partition_name(prefix, queue, partition, partitions))
}

/// The backend configuration of every partition of a queue, partition 0 first.
pub fn partition_configs(
    prefix: &str,
    queue: &str,
    partitions: u32,
    heartbeat: Duration,
) -> Vec<QueueConfig> {
    (0..partitions.max(1))
        .map(|p| partition_config(prefix, queue, p, partitions, heartbeat))
        .collect()
}

/// The consumers of one queue partition (process id → when it registered): what a fetch
/// checks, in the partition's own slot, instead of the global process registry (a script
/// may not touch keys of two slots on a cluster). The reaper removes a dead process here.
pub fn consumers_key(config: &QueueConfig) -> String {
    format!("{}:consumers", config.queue)
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

/// Pushes tasks onto a queue's ready list in the key layout apalis-redis defined (data
/// hash, metadata hash with attempts / max_attempts / status), as one MULTI. Consumers learn
/// of it from the write itself (`worker::wake` tracks the ready list): nothing else to send.
///
/// Why not apalis-redis' own push: its batch Lua script costs 34-36 us of Redis CPU per
/// task, where these plain commands cost 9-18 us (ops/bench/README.md), and the script's
/// idempotency and dedupe features are not needed here: every task id is unique per push
/// and Postgres decides what runs once. Why the ready list and not apalis' `:scheduled`
/// set at now: a task due now then needs no promotion step before a fetch sees it. The
/// metadata hash is kept so that an apalis-redis worker of the previous release, during a
/// rolling deploy, can still decode what this one pushes.
pub async fn push(
    conn: &mut ConnectionManager,
    config: &QueueConfig,
    tasks: &[Outgoing],
) -> Result<(), redis::RedisError> {
    if tasks.is_empty() {
        return Ok(());
    }
    let (data, ready, meta_prefix) = (
        config.job_data_hash(),
        config.active_jobs_list(),
        config.job_meta_hash(),
    );
    let mut pipe = redis::pipe();
    pipe.atomic();
    let mut fields = Vec::with_capacity(tasks.len());
    let mut ids = Vec::with_capacity(tasks.len());
    for task in tasks {
        fields.push((task.task_id.as_str(), task.payload.as_slice()));
        ids.push(task.task_id.as_str());
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
    pipe.rpush(&ready, &ids).ignore();
    pipe.query_async(conn).await
}

/// Moves due tasks from the `:scheduled` set to the ready list, in chunks of 1,000 (a Lua
/// `unpack` fails past ~8,000), at most 20 chunks per call; returns how many it moved.
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

/// When the earliest task of the `:scheduled` set is due (unix seconds), if any: the one
/// read a promoter needs to sleep until there is something to promote.
pub async fn earliest_due(
    conn: &mut ConnectionManager,
    config: &QueueConfig,
) -> Result<Option<u64>, redis::RedisError> {
    let first: Vec<(String, f64)> = conn
        .zrange_withscores(config.scheduled_jobs_set(), 0, 0)
        .await?;
    // rounded up: a task due at 100.5 is not promoted by a look at 100
    Ok(first.first().map(|(_, due)| due.max(0.0).ceil() as u64))
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
/// batches, without blocking Redis on one huge command; on a cluster, on every primary.
pub async fn delete_namespace(
    conn: &mut ConnectionManager,
    prefix: &str,
) -> Result<u64, redis::RedisError> {
    if !conn.target().is_cluster() {
        return delete_matching(conn, prefix).await;
    }
    let mut deleted = 0;
    for node in conn.target().primaries().await? {
        let mut node = node_connection(node).await?;
        deleted += delete_matching(&mut node, prefix).await?;
    }
    Ok(deleted)
}

async fn delete_matching<C: redis::aio::ConnectionLike + Send>(
    conn: &mut C,
    prefix: &str,
) -> Result<u64, redis::RedisError> {
    let mut deleted = 0u64;
    // the queues' names (`{prefix:queue}`), the process registry's (`{prefix}:...`) and
    // anything else of the namespace (`prefix:...`: the scheduler lease, older layouts)
    for pattern in [
        format!("{{{prefix}:*"),
        format!("{{{prefix}}}:*"),
        format!("{prefix}:*"),
    ] {
        let mut cursor = 0u64;
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
                // one key per command: on a cluster node, keys of several slots in one DEL
                // are refused (CROSSSLOT)
                let mut pipe = redis::pipe();
                for key in &keys {
                    pipe.del(key);
                }
                let counts: Vec<u64> = pipe.query_async(conn).await?;
                deleted += counts.iter().sum::<u64>();
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
    Ok(deleted)
}

/// The worker processes of a prefix: process id → its last heartbeat (unix seconds).
///
/// Hash-tagged on the prefix, with [`process_key`]: the reaper claims a dead process in one
/// script over both.
pub fn processes_key(prefix: &str) -> String {
    format!("{{{prefix}}}:processes")
}

/// The queue partitions one worker process consumes: full partition name (`{prefix:queue}`,
/// `{prefix:queue:1}`, ...) → when it registered (unix seconds).
/// A process that stops beating is reaped through this: its in-flight set of each
/// queue goes back to that queue's ready list.
pub fn process_key(prefix: &str, process: &str) -> String {
    format!("{{{prefix}}}:process:{process}")
}

/// The tasks one worker process has fetched from a queue (running or prefetched).
pub fn inflight_key(config: &QueueConfig, process: &str) -> String {
    format!("{}:{process}", config.inflight_jobs_set())
}

/// A worker process whose last heartbeat is older than this many beats is stale: still
/// registered, no longer beating (stopped, stalled, partitioned). It is reaped after
/// [`DEAD_AFTER_BEATS`].
pub const STALE_AFTER_BEATS: f64 = 2.0;

/// A worker process silent for this many beats is dead: another process re-enqueues what it
/// had fetched.
pub const DEAD_AFTER_BEATS: u32 = 3;

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
    /// Registered worker processes whose heartbeat is older than two beats: connected
    /// maybe, but no longer consuming (stopped, stalled, partitioned).
    pub stale_workers: Vec<String>,
}

/// Reads [`QueueStats`] for one queue (`config` from [`queue_config`], one partition).
pub async fn stats(
    conn: &mut ConnectionManager,
    config: &QueueConfig,
) -> Result<QueueStats, redis::RedisError> {
    // `queue_config` names a queue `{<prefix>:<queue>}`; queue names have no `:`
    let full = config.queue.as_ref();
    let full = full.trim_start_matches('{').trim_end_matches('}');
    let (prefix, queue) = full.rsplit_once(':').unwrap_or(("", full));
    let mut all = stats_of(
        conn,
        prefix,
        &[queue.to_string()],
        config.heartbeat_interval,
        1,
    )
    .await?;
    Ok(all.pop().unwrap_or_default())
}

/// Reads [`QueueStats`] for each of `queues` (summed over their `partitions`) under
/// `prefix`: one round trip for the process registry and one per queue partition (each
/// its own slot on a cluster), when a metrics scrape or an admin view asks, never on a loop.
pub async fn stats_of(
    conn: &mut ConnectionManager,
    prefix: &str,
    queues: &[String],
    heartbeat: Duration,
    partitions: u32,
) -> Result<Vec<QueueStats>, redis::RedisError> {
    let beats: Vec<(String, f64)> = conn.zrange_withscores(processes_key(prefix), 0, -1).await?;
    // which processes consume which partitions (the registry's slot: one pipeline)
    let consumed: Vec<Vec<String>> = if beats.is_empty() {
        Vec::new()
    } else {
        let mut pipe = redis::pipe();
        for (process, _) in &beats {
            pipe.hkeys(process_key(prefix, process));
        }
        pipe.query_async(conn).await?
    };
    let stale_after = STALE_AFTER_BEATS * heartbeat.as_secs_f64().max(1.0);
    let now = unix_now() as f64;
    let mut all = Vec::with_capacity(queues.len());
    for queue in queues {
        let mut stats = QueueStats {
            queue: queue_name(prefix, queue),
            ..QueueStats::default()
        };
        let mut consumers = std::collections::BTreeSet::new();
        for config in partition_configs(prefix, queue, partitions, heartbeat) {
            let name: &str = config.queue.as_ref();
            let mine: Vec<usize> = (0..beats.len())
                .filter(|p| {
                    consumed
                        .get(*p)
                        .is_some_and(|qs| qs.iter().any(|q| q == name))
                })
                .collect();
            let mut pipe = redis::pipe();
            pipe.llen(config.active_jobs_list())
                .zcard(config.scheduled_jobs_set())
                .scard(config.done_jobs_set())
                .scard(config.dead_jobs_set());
            for p in &mine {
                pipe.scard(inflight_key(&config, &beats[*p].0));
            }
            let counts: Vec<u64> = pipe.query_async(conn).await?;
            let count = |i: usize| counts.get(i).copied().unwrap_or(0);
            stats.waiting += count(0) + count(1);
            stats.finished += count(2) + count(3);
            stats.in_flight += counts.iter().skip(4).sum::<u64>();
            consumers.extend(mine);
        }
        stats.workers = consumers.len() as u64;
        stats.stale_workers = consumers
            .iter()
            .map(|p| &beats[*p])
            .filter(|(_, beat)| now - beat > stale_after)
            .map(|(name, _)| name.clone())
            .collect();
        all.push(stats);
    }
    Ok(all)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_redis_own_and_partitions_spread_over_the_slot_ranges() {
        // values from `CLUSTER KEYSLOT`
        assert_eq!(key_slot("foo"), 12182);
        assert_eq!(key_slot("{user1000}.following"), key_slot("user1000"));
        assert_eq!(key_slot("somekey"), 11058);
        for partitions in [2u32, 3, 8, 16] {
            for p in 0..partitions {
                let name = partition_name("app", "email", p, partitions);
                let slot = u32::from(key_slot(&format!("{name}:active")));
                assert!(
                    (p * SLOTS / partitions..(p + 1) * SLOTS / partitions).contains(&slot),
                    "{name} in slot {slot}"
                );
            }
        }
        assert_eq!(partition_name("app", "email", 0, 1), "{app:email}");
        let mut hits = [0u32; 8];
        for id in 1..=8000 {
            hits[partition_of(id, 8) as usize] += 1;
        }
        assert!(hits.iter().all(|h| (800..1200).contains(h)), "{hits:?}");
    }

    #[tokio::test]
    async fn stats_count_the_processes_of_a_queue_and_report_those_that_stopped_beating() {
        let mut conn = connect(&crate::testing::redis_url()).await.expect("redis");
        let prefix = crate::testing::unique_name("stats");
        let config = queue_config(&prefix, "q", Duration::from_secs(1));
        let now = unix_now();
        let _: () = redis::pipe()
            .zadd(processes_key(&prefix), "alive", now)
            .zadd(processes_key(&prefix), "stalled", now - 10)
            .zadd(processes_key(&prefix), "elsewhere", now)
            .hset(process_key(&prefix, "alive"), queue_name(&prefix, "q"), now)
            .hset(
                process_key(&prefix, "stalled"),
                queue_name(&prefix, "q"),
                now,
            )
            .hset(
                process_key(&prefix, "elsewhere"),
                queue_name(&prefix, "other"),
                now,
            )
            .query_async(&mut conn)
            .await
            .expect("arrange");
        let _: () = redis::pipe()
            .sadd(inflight_key(&config, "alive"), &["1.1", "2.1"])
            .rpush(config.active_jobs_list(), "3.1")
            .query_async(&mut conn)
            .await
            .expect("arrange");
        let stats = stats(&mut conn, &config).await.expect("stats");
        delete_namespace(&mut conn, &prefix)
            .await
            .expect("clean up");
        assert_eq!(stats.workers, 2);
        assert_eq!(stats.in_flight, 2);
        assert_eq!(stats.waiting, 1);
        assert_eq!(stats.stale_workers, vec!["stalled".to_string()]);
    }
}
