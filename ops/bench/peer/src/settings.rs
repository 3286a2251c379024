//! Everything the peer reads from its environment, in one place: the harness's variables
//! (`BENCH_*` in its README) and this peer's tuning knobs, which the variants in
//! ops/bench/peers.json set.
use std::time::Duration;

use anyhow::Context;

/// The Redis key prefix of every platform queue (`shared::config`'s default).
pub const QUEUE_PREFIX: &str = "instainstru";

/// The harness's connection and queue.
#[derive(Debug, Clone)]
pub struct Target {
    pub redis_url: String,
    /// `BENCH_QUEUE`; the Redis queue is `instainstru:<queue>`.
    pub queue: String,
}

impl Target {
    pub fn from_env() -> Self {
        Self {
            redis_url: var("BENCH_REDIS_URL").unwrap_or_else(|| "redis://127.0.0.1:6390/0".into()),
            queue: var("BENCH_QUEUE").unwrap_or_else(|| "bench".into()),
        }
    }

    /// The backend configuration: the platform's `shared::queue::queue_config`.
    pub fn queue_config(&self) -> apalis_redis::Config {
        shared::queue::queue_config(QUEUE_PREFIX, &self.queue, self.heartbeat())
    }

    /// The worker process heartbeat (the platform's default).
    pub fn heartbeat(&self) -> Duration {
        Duration::from_secs(30)
    }
}

/// The worker's knobs.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// `BENCH_EXPECTED`: the completion that sets `bench:t_last`.
    pub expected: u64,
    /// `BENCH_SLEEP_MS`: the simulated SMTP send.
    pub sleep: Duration,
    /// `BENCH_RECORD_LAT=1` in W3.
    pub record_latency: bool,
    /// `BENCH_CONCURRENCY`: handlers in flight.
    pub concurrency: usize,
    /// `BENCH_POLL_US`: with `BENCH_WAKE=tick`, how often an idle worker looks for work.
    pub poll_interval: Duration,
    /// `BENCH_WAKE=write` (default): woken by Redis client tracking on the queue's ready
    /// list, as the platform's worker is; `BENCH_WAKE=tick`: look every `poll_interval`.
    pub wake_on_write: bool,
    /// `BENCH_BATCH_SIZE`: tasks per fetch; `None` keeps `shared::queue`'s value.
    pub batch_size: Option<usize>,
    /// `BENCH_THREADS`: tokio worker threads; 1 = current-thread runtime.
    pub threads: usize,
}

impl WorkerSettings {
    pub fn from_env() -> anyhow::Result<Self> {
        Ok(Self {
            expected: parse("BENCH_EXPECTED")?.unwrap_or(0),
            sleep: Duration::from_millis(parse("BENCH_SLEEP_MS")?.unwrap_or(0)),
            record_latency: var("BENCH_RECORD_LAT").as_deref() == Some("1"),
            concurrency: parse("BENCH_CONCURRENCY")?.unwrap_or(50),
            poll_interval: Duration::from_micros(parse("BENCH_POLL_US")?.unwrap_or(1000)),
            wake_on_write: match var("BENCH_WAKE").as_deref() {
                None | Some("write") => true,
                Some("tick") => false,
                Some(v) => anyhow::bail!("BENCH_WAKE={v}: expected write or tick"),
            },
            batch_size: parse("BENCH_BATCH_SIZE")?,
            threads: parse("BENCH_THREADS")?.unwrap_or(1),
        })
    }

    /// The platform's queue configuration with this run's overrides applied.
    pub fn apply(&self, mut config: apalis_redis::Config) -> apalis_redis::Config {
        if let Some(n) = self.batch_size {
            config = config.batch_size(n);
        }
        config
    }
}

/// `BENCH_THREADS` for the producer too (default: current-thread).
pub fn threads() -> anyhow::Result<usize> {
    Ok(parse("BENCH_THREADS")?.unwrap_or(1))
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn parse<T: std::str::FromStr>(name: &str) -> anyhow::Result<Option<T>>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    var(name)
        .map(|v| v.parse::<T>().with_context(|| format!("{name}={v}")))
        .transpose()
}
