//! Keeps the Redis queues healthy where apalis-redis does not, when there is something to
//! do rather than on a clock (it ran every 500 ms per queue: about 1.5 million commands a
//! day for three idle queues, ops/bench/idle):
//! - promotes `:scheduled` tasks (backend retries, an older producer's pushes) when the
//!   earliest is due: it reads the earliest score at start and whenever a `:scheduled` set
//!   is written ([`crate::wake`] reports it), and sleeps until then;
//! - deletes finished tasks after this process acknowledged some (apalis-redis never does),
//!   at most every [`CLEANUP_EVERY`];
//! - hands back what apalis-redis workers of the previous release left in flight when they
//!   died (a rolling deploy), while any are registered;
//! - publishes queue depth as metrics when `/metrics` is scraped ([`Gauges`]), not on a loop.
use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use apalis_redis::Config as QueueConfig;
use shared::queue::ConnectionManager;
use shared::{config::Config, queue, records};
use tokio_util::sync::CancellationToken;

use crate::{Deps, wake::Hub};

/// How often finished tasks are deleted, at most, while this process acknowledges some.
pub const CLEANUP_EVERY: Duration = Duration::from_secs(10);

/// How often the job registry in Postgres is refreshed (its `seen_at`).
const REGISTRY_EVERY: Duration = Duration::from_secs(60);

/// How often apalis-redis workers of the previous release are looked at, while any is
/// registered.
const LEGACY_EVERY: Duration = Duration::from_secs(600);

/// Re-enqueues what dead apalis-redis workers (the previous release's, registered per
/// queue in `{q}:workers`) had fetched, like its own `reenqueue_orphaned.lua` but in chunks;
/// returns how many such workers are still registered.
const LEGACY_REAP: &str = r#"
    -- KEYS[1] the queue's apalis workers set, KEYS[2] the ready list;
    -- ARGV[1] in-flight key prefix, ARGV[2] beats at or before this are dead
    for _, worker in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2], 'LIMIT', 0, 100)) do
      local inflight = ARGV[1] .. ':' .. worker
      while true do
        local ids = redis.call('SPOP', inflight, 1000)
        if #ids == 0 then break end
        redis.call('RPUSH', KEYS[2], unpack(ids))
      end
      redis.call('ZREM', KEYS[1], worker)
    end
    return redis.call('ZCARD', KEYS[1])"#;

/// The queues this process consumes, as maintenance sees them.
#[derive(Debug, Clone)]
pub struct Queues {
    pub configs: Vec<QueueConfig>,
    /// Set by a queue's consumer when it acknowledged something.
    pub finished: Vec<Arc<AtomicBool>>,
}

impl Queues {
    pub fn new(configs: Vec<QueueConfig>) -> Self {
        let finished = configs
            .iter()
            .map(|_| Arc::new(AtomicBool::new(true)))
            .collect();
        Queues { configs, finished }
    }
}

/// Publishes the kinds this worker runs to `job_queues`, or refreshes their `seen_at`.
pub async fn publish_registry(deps: &Deps) -> Result<(), sqlx::Error> {
    let instance = deps.instance.to_string();
    let now = deps.clock.now();
    let queues: Vec<records::RegisteredQueue> = deps
        .registry
        .kinds()
        .iter()
        .map(|kind| records::RegisteredQueue {
            queue: kind.queue().to_string(),
            concurrency: i32::try_from(kind.concurrency(&deps.config)).unwrap_or(i32::MAX),
            max_attempts: kind.max_attempts(),
            timeout_secs: i32::try_from(kind.timeout().as_secs()).unwrap_or(i32::MAX),
            registered_by: instance.clone(),
            seen_at: now,
        })
        .collect();
    records::register_queues(&deps.pool, &queues).await
}

/// Refreshes this worker's kinds in `job_queues` every minute until `stop` fires.
pub async fn refresh_registry(deps: Deps, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(REGISTRY_EVERY) => {}
            _ = stop.cancelled() => return,
        }
        if let Err(e) = publish_registry(&deps).await {
            tracing::warn!(error = %e, "could not refresh the job registry");
        }
    }
}

/// What maintenance keeps between rounds.
struct Round {
    /// per queue: when its earliest `:scheduled` task is due (unix seconds)
    earliest: Vec<Option<u64>>,
    last_cleanup: Option<Instant>,
    /// when to look at the previous release's workers next (`None`: none left)
    legacy_at: Option<Instant>,
}

/// Tends the queues until `stop` fires; a worker process silent for `dead_after` is dead
/// (for the previous release's workers too).
pub async fn run(
    target: queue::Target,
    hub: Hub,
    queues: Queues,
    dead_after: Duration,
    stop: CancellationToken,
) {
    let mut redis: Option<ConnectionManager> = None;
    let mut round = Round {
        earliest: vec![None; queues.configs.len()],
        last_cleanup: None,
        legacy_at: Some(Instant::now()),
    };
    loop {
        if redis.is_none() {
            redis = queue::connect(&target).await.ok();
        }
        let failed = match redis.as_mut() {
            Some(conn) => match tend(conn, &hub, &queues, &mut round, dead_after).await {
                Ok(()) => false,
                Err(e) => {
                    tracing::warn!(error = %e, "queue maintenance failed");
                    true
                }
            },
            None => true,
        };
        if failed {
            redis = None;
            // everything is read again once Redis answers
            round.earliest.iter_mut().for_each(|e| *e = Some(0));
        }
        let wait = if failed {
            Duration::from_secs(1)
        } else {
            next_wait(&queues, &round)
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = hub.scheduled_changed() => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// One round: promote what is due, clean up after acknowledgements, hand back what dead
/// workers of the previous release held.
async fn tend(
    conn: &mut ConnectionManager,
    hub: &Hub,
    queues: &Queues,
    round: &mut Round,
    dead_after: Duration,
) -> Result<(), redis::RedisError> {
    for i in hub.take_scheduled_changes() {
        if let Some(config) = queues.configs.get(i) {
            round.earliest[i] = queue::earliest_due(conn, config).await?;
        }
    }
    for (i, config) in queues.configs.iter().enumerate() {
        if round.earliest[i].is_some_and(|due| due <= unix_now()) {
            while queue::promote_due(conn, config).await? > 0 {}
            round.earliest[i] = queue::earliest_due(conn, config).await?;
        }
    }
    if round
        .last_cleanup
        .is_none_or(|at| at.elapsed() >= CLEANUP_EVERY)
    {
        let mut cleaned = false;
        for (config, finished) in queues.configs.iter().zip(&queues.finished) {
            if finished.swap(false, Ordering::AcqRel) {
                while queue::cleanup_finished(conn, config, 5_000).await? >= 5_000 {}
                cleaned = true;
            }
        }
        if cleaned {
            round.last_cleanup = Some(Instant::now());
        }
    }
    if round.legacy_at.is_some_and(|at| at <= Instant::now()) {
        let dead_before = unix_now().saturating_sub(dead_after.as_secs());
        let mut registered = 0;
        for config in &queues.configs {
            let left: u64 = redis::Script::new(LEGACY_REAP)
                .key(config.workers_set())
                .key(config.active_jobs_list())
                .arg(config.inflight_jobs_set())
                .arg(dead_before)
                .invoke_async(conn)
                .await?;
            registered += left;
        }
        round.legacy_at = (registered > 0).then(|| Instant::now() + LEGACY_EVERY);
    }
    Ok(())
}

/// How long to sleep: until the earliest scheduled task is due, the next cleanup while
/// something waits to be cleaned, or the next look at older workers (at most an hour: the
/// loop is woken by writes to the scheduled sets anyway).
fn next_wait(queues: &Queues, round: &Round) -> Duration {
    let now = unix_now_f64();
    let mut wait = Duration::from_secs(3600);
    for due in round.earliest.iter().flatten() {
        let until = Duration::from_secs_f64((*due as f64 - now).max(0.0));
        wait = wait.min(until);
    }
    if queues.finished.iter().any(|f| f.load(Ordering::Acquire)) {
        let since = round
            .last_cleanup
            .map(|at| at.elapsed())
            .unwrap_or(CLEANUP_EVERY);
        wait = wait.min(CLEANUP_EVERY.saturating_sub(since));
    }
    if let Some(at) = round.legacy_at {
        wait = wait.min(at.saturating_duration_since(Instant::now()));
    }
    wait
}

/// The queue gauges (`queue_waiting`, `queue_in_flight`, `queue_workers`,
/// `queue_stale_workers`), read from Redis when `/metrics` is scraped: one pipelined read of
/// every queue (`shared::queue::stats_of`), at most once a second however many scrape.
#[derive(Clone, Debug)]
pub struct Gauges {
    inner: Arc<GaugesInner>,
}

#[derive(Debug)]
struct GaugesInner {
    target: queue::Target,
    prefix: String,
    queues: Vec<String>,
    partitions: u32,
    heartbeat: Duration,
    conn: tokio::sync::Mutex<(Option<ConnectionManager>, Option<Instant>)>,
}

/// The longest a scrape waits for Redis before it answers with the gauges it has.
const GAUGES_TIMEOUT: Duration = Duration::from_secs(2);

impl Gauges {
    pub fn new(config: &Config, queues: Vec<String>) -> Self {
        Gauges {
            inner: Arc::new(GaugesInner {
                target: config.redis(),
                prefix: config.queue_prefix.clone(),
                queues,
                partitions: config.queue_partitions,
                heartbeat: Duration::from_secs(config.heartbeat_secs),
                conn: tokio::sync::Mutex::new((None, None)),
            }),
        }
    }

    /// Reads every queue's stats and Redis' `INFO` into the gauges (unless read less than a
    /// second ago).
    pub async fn refresh(&self) {
        let inner = &self.inner;
        let mut slot = inner.conn.lock().await;
        if slot
            .1
            .is_some_and(|at| at.elapsed() < Duration::from_secs(1))
        {
            return;
        }
        slot.1 = Some(Instant::now());
        if slot.0.is_none() {
            slot.0 = tokio::time::timeout(GAUGES_TIMEOUT, queue::connect(&inner.target))
                .await
                .ok()
                .and_then(Result::ok);
        }
        let Some(conn) = slot.0.as_mut() else {
            metrics::gauge!("redis_up").set(0.0);
            return;
        };
        // Redis' memory and clients with the same scrape: nothing is read while nobody looks
        let up = matches!(
            tokio::time::timeout(GAUGES_TIMEOUT, crate::gauges::sample_redis(conn)).await,
            Ok(Ok(()))
        );
        metrics::gauge!("redis_up").set(if up { 1.0 } else { 0.0 });
        let read = tokio::time::timeout(
            GAUGES_TIMEOUT,
            queue::stats_of(
                conn,
                &inner.prefix,
                &inner.queues,
                inner.heartbeat,
                inner.partitions,
            ),
        )
        .await;
        let stats = match read {
            Ok(Ok(stats)) => stats,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "could not read the queue gauges");
                slot.0 = None;
                return;
            }
            Err(_) => {
                tracing::warn!("reading the queue gauges timed out");
                return;
            }
        };
        for (name, stats) in inner.queues.iter().zip(stats) {
            let name = name.clone();
            metrics::gauge!("queue_waiting", "queue" => name.clone()).set(stats.waiting as f64);
            metrics::gauge!("queue_in_flight", "queue" => name.clone()).set(stats.in_flight as f64);
            metrics::gauge!("queue_workers", "queue" => name.clone()).set(stats.workers as f64);
            metrics::gauge!("queue_stale_workers", "queue" => name.clone())
                .set(stats.stale_workers.len() as f64);
            if !stats.stale_workers.is_empty() {
                tracing::warn!(queue = %name, stale = ?stats.stale_workers, "worker processes registered but not heartbeating");
            }
        }
    }
}

fn unix_now() -> u64 {
    unix_now_f64() as u64
}

fn unix_now_f64() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}
