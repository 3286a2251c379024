//! Which worker processes are alive, and what happens to the work of one that is not.
//!
//! One heartbeat per *process*, whatever the number of queues it consumes (apalis-redis
//! beats and scans for orphans once per worker, i.e. per queue and process): the process
//! registers in `<prefix>:processes` (id → last beat) with the queues it consumes in
//! `<prefix>:process:<id>`, and beats every `HEARTBEAT_SECS`. A process silent for
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

use apalis_redis::ConnectionManager;
use shared::queue::{self, DEAD_AFTER_BEATS};
use tokio_util::sync::CancellationToken;

use crate::wake::Hub;

/// Moves a dead process's in-flight tasks back to their ready lists and deletes its
/// registration, unless it beat again meanwhile (or another process reaped it first).
/// Returns the number of tasks moved, or -1 when there was nothing to reap.
const REAP: &str = r#"
    -- KEYS[1] the process registry, KEYS[2] the process's queues
    -- ARGV[1] key prefix, ARGV[2] process id, ARGV[3] beats at or before this are dead
    local beat = redis.call('ZSCORE', KEYS[1], ARGV[2])
    if not beat or tonumber(beat) > tonumber(ARGV[3]) then return -1 end
    local moved = 0
    for _, q in ipairs(redis.call('HKEYS', KEYS[2])) do
      local inflight = ARGV[1] .. ':' .. q .. ':inflight:' .. ARGV[2]
      local ready = ARGV[1] .. ':' .. q .. ':active'
      while true do
        local ids = redis.call('SPOP', inflight, 1000)
        if #ids == 0 then break end
        redis.call('RPUSH', ready, unpack(ids))
        moved = moved + #ids
      end
    end
    redis.call('DEL', KEYS[2])
    redis.call('ZREM', KEYS[1], ARGV[2])
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

    /// Registers the process and the queues it consumes (again, after being reaped).
    pub async fn register(&self, conn: &mut ConnectionManager) -> redis::RedisResult<()> {
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
    async fn beat(&self, hub: &Hub) -> redis::RedisResult<bool> {
        let mut pipe = redis::pipe();
        // XX: a reaped process must register its queues again, not just a heartbeat
        pipe.cmd("ZADD")
            .arg(queue::processes_key(&self.prefix))
            .arg("XX")
            .arg("CH")
            .arg(unix_now())
            .arg(&self.id);
        let (changed,): (u64,) = hub.query(&pipe).await?;
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
        redis::Script::new(REAP)
            .key(queue::processes_key(&self.prefix))
            .key(queue::process_key(&self.prefix, process))
            .arg(&self.prefix)
            .arg(process)
            .arg(if dead_before.is_finite() {
                format!("{dead_before:.3}")
            } else {
                "1e300".to_string()
            })
            .invoke_async(conn)
            .await
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
        match process.beat(&hub).await {
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
