//! Which worker processes are alive, and what happens to the work of one that is not.
//!
//! One heartbeat per *process*, whatever the number of queues it consumes (apalis-redis
//! beats and scans for orphans once per worker, i.e. per queue and process): the process
//! registers in `{<prefix>}:processes` (id → last beat) with the queue partitions it
//! consumes in `{<prefix>}:process:<id>` and in each partition's `:consumers`, and beats every `HEARTBEAT_SECS`. A process silent for
//! [`DEAD_AFTER_BEATS`] beats is dead: any other process moves what it had fetched (its
//! in-flight set of every queue) back to the ready lists, which wakes the consumers, and
//! deletes its registration. One that was only paused finds itself reaped at its next beat
//! and registers again; what it was running may run twice, which every handler allows.
//!
//! Cost at rest: one `ZADD` per beat, sent on the wake-up connection so that it also proves
//! that connection alive ([`crate::wake`]), plus one `ZRANGE` of the registry to look for
//! the dead, every `max(2, processes)` beats on average (jittered): the processes share the
//! looking, so ten workers do not look ten times as often. With the default 30 s beat:
//! 4,320 commands a day for one worker, about 3,200 each for ten.
use std::{sync::Arc, time::Duration};

use redis::AsyncCommands;
use shared::queue::{self, ConnectionManager, DEAD_AFTER_BEATS};
use tokio_util::sync::CancellationToken;

use crate::wake::Hub;

/// Claims a dead process, unless it beat again meanwhile (or another process claimed it
/// first): deletes its registration and returns the queue partitions it consumed, after a
/// leading 1 (a leading 0: nothing to reap). Both keys share the `{prefix}` hash tag; the
/// partitions' keys are each in their own slot, so their in-flight sets are handed back
/// one partition at a time ([`RETURN`]). A reaper that dies between the two leaves those
/// tasks in flight under a process nobody will reap: the reconciler pushes their records
/// again (Postgres is the truth).
const CLAIM: &str = r#"
    -- KEYS[1] the process registry, KEYS[2] the process's partitions
    -- ARGV[1] process id, ARGV[2] beats at or before this are dead
    local beat = redis.call('ZSCORE', KEYS[1], ARGV[1])
    if not beat or tonumber(beat) > tonumber(ARGV[2]) then return {0} end
    local queues = redis.call('HKEYS', KEYS[2])
    redis.call('DEL', KEYS[2])
    redis.call('ZREM', KEYS[1], ARGV[1])
    table.insert(queues, 1, 1)
    return queues"#;

/// Hands a claimed process's in-flight tasks of one partition back to its ready list and
/// removes it from the partition's consumers (its fetches fail from then on).
const RETURN: &str = r#"
    -- KEYS[1] its in-flight set, KEYS[2] the ready list, KEYS[3] the consumers;
    -- ARGV[1] process id
    redis.call('HDEL', KEYS[3], ARGV[1])
    local moved = 0
    while true do
      local ids = redis.call('SPOP', KEYS[1], 1000)
      if #ids == 0 then break end
      redis.call('RPUSH', KEYS[2], unpack(ids))
      moved = moved + #ids
    end
    return moved"#;

/// This worker process, as the other processes see it.
#[derive(Debug)]
pub struct Process {
    id: String,
    prefix: String,
    queues: Vec<String>,
    heartbeat: Duration,
}

impl Process {
    /// A process consuming `queues` under `prefix`, beating every `heartbeat`; its id is
    /// unique per start (host, pid and a random part), so a restart never meets its past.
    pub fn new(prefix: &str, queues: Vec<String>, heartbeat: Duration) -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "local".into());
        let random = uuid::Uuid::new_v4().simple().to_string();
        Process {
            id: format!("{host}-{}-{}", std::process::id(), &random[..8]),
            prefix: prefix.to_string(),
            queues,
            heartbeat: heartbeat.max(Duration::from_secs(1)),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn heartbeat(&self) -> Duration {
        self.heartbeat
    }

    /// How long a process may be silent before its work is taken back.
    pub fn dead_after(&self) -> Duration {
        self.heartbeat * DEAD_AFTER_BEATS
    }

    /// Registers the process and the queue partitions it consumes (again, after being
    /// reaped): in the registry, then as a consumer of each partition (one command each:
    /// each partition is its own slot on a cluster).
    pub async fn register(&self, conn: &mut ConnectionManager) -> redis::RedisResult<()> {
        self.enroll(conn).await?;
        let now = unix_now();
        for q in &self.queues {
            let _: () = conn.hset(format!("{q}:consumers"), &self.id, now).await?;
        }
        Ok(())
    }

    /// Registers the process and its partitions in the registry only (a consumer's start
    /// then registers itself in each of its partitions).
    pub async fn enroll(&self, conn: &mut ConnectionManager) -> redis::RedisResult<()> {
        let now = unix_now();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .zadd(queue::processes_key(&self.prefix), &self.id, now)
            .ignore();
        for q in &self.queues {
            pipe.hset(queue::process_key(&self.prefix, &self.id), q, now)
                .ignore();
        }
        pipe.query_async(conn).await
    }

    /// One beat, on the wake-up connection; `false` when the process had been reaped.
    async fn beat(&self, hub: &Hub, conn: &mut ConnectionManager) -> redis::RedisResult<bool> {
        let mut pipe = redis::pipe();
        // XX: a reaped process must register its queues again, not just a heartbeat
        pipe.cmd("ZADD")
            .arg(queue::processes_key(&self.prefix))
            .arg("XX")
            .arg("CH")
            .arg(unix_now())
            .arg(&self.id);
        let (changed,): (u64,) = hub.query(&pipe, conn).await?;
        Ok(changed == 1)
    }

    /// Reaps every other process silent for longer than [`Process::dead_after`]; returns
    /// how many processes are registered, and how many tasks went back to the queues.
    pub async fn reap_dead(
        &self,
        conn: &mut ConnectionManager,
    ) -> redis::RedisResult<(usize, u64)> {
        let registry = queue::processes_key(&self.prefix);
        let beats: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(&registry)
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query_async(conn)
            .await?;
        let dead_before = unix_now() - self.dead_after().as_secs_f64();
        let mut moved = 0;
        for (process, beat) in &beats {
            if process == &self.id || *beat > dead_before {
                continue;
            }
            let n = self.reap(conn, process, dead_before).await?;
            if n >= 0 {
                tracing::warn!(process = %process, tasks = n, "reaped a worker process that stopped beating");
                metrics::counter!("worker_processes_reaped_total").increment(1);
                moved += n as u64;
            }
        }
        Ok((beats.len(), moved))
    }

    /// Hands back what this process still holds and deletes its registration: the last
    /// thing a stopping worker does, after its drain time.
    pub async fn retire(&self, conn: &mut ConnectionManager) -> redis::RedisResult<u64> {
        let moved = self.reap(conn, &self.id, f64::INFINITY).await?;
        Ok(moved.max(0) as u64)
    }

    async fn reap(
        &self,
        conn: &mut ConnectionManager,
        process: &str,
        dead_before: f64,
    ) -> redis::RedisResult<i64> {
        let claimed: Vec<redis::Value> = redis::Script::new(CLAIM)
            .key(queue::processes_key(&self.prefix))
            .key(queue::process_key(&self.prefix, process))
            .arg(process)
            .arg(if dead_before.is_finite() {
                format!("{dead_before:.3}")
            } else {
                "1e300".to_string()
            })
            .invoke_async(conn)
            .await?;
        let mut claimed = claimed.into_iter();
        let first: i64 = match claimed.next() {
            Some(v) => redis::from_redis_value(v)?,
            None => 0,
        };
        if first != 1 {
            return Ok(-1);
        }
        let mut moved = 0;
        for q in claimed {
            let q: String = redis::from_redis_value(q)?;
            moved += redis::Script::new(RETURN)
                .key(format!("{q}:inflight:{process}"))
                .key(format!("{q}:active"))
                .key(format!("{q}:consumers"))
                .arg(process)
                .invoke_async::<i64>(conn)
                .await?;
        }
        Ok(moved)
    }
}

/// Beats every heartbeat and looks for dead processes until `stop` fires.
pub async fn run(
    process: Arc<Process>,
    hub: Hub,
    mut conn: ConnectionManager,
    stop: CancellationToken,
) {
    let mut beats_to_look = 0u64;
    loop {
        if beats_to_look == 0 {
            beats_to_look = match process.reap_dead(&mut conn).await {
                Ok((registered, _)) => jittered_beats(registered),
                Err(e) => {
                    tracing::warn!(error = %e, "could not look for dead worker processes");
                    1
                }
            };
        }
        tokio::select! {
            _ = tokio::time::sleep(process.heartbeat()) => {}
            _ = stop.cancelled() => return,
        }
        match process.beat(&hub, &mut conn).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(
                    process = %process.id(),
                    "this worker was presumed dead (silent for {} s) and its work handed to others; registering again",
                    process.dead_after().as_secs()
                );
                if let Err(e) = process.register(&mut conn).await {
                    tracing::warn!(error = %e, "could not register again");
                }
            }
            // the wake-up connection is being re-established (and every queue looked at)
            Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
        }
        beats_to_look -= 1;
    }
}

/// Beats until the next look for dead processes: `max(2, registered)` on average, so that
/// all processes together look about once a beat (at least every other beat for one alone).
fn jittered_beats(registered: usize) -> u64 {
    let mean = registered.max(2) as f64;
    let factor: f64 = rand::random_range(0.5..1.5);
    ((mean * factor).round() as u64).max(1)
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}
