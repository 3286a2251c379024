//! The harness's handler and completion protocol, step by step as its README fixes them
//! (same keys, same clock, same order), so that our figures and the peers' are comparable.
use std::time::Duration;

use redis::AsyncCommands;
use shared::queue::ConnectionManager;

use crate::clock::monotonic_ns;
use crate::job::{BenchJob, WARMUP};

/// The handler's dependencies: its own Redis connection (not the backend's, so protocol
/// writes never queue behind a fetch script) and the run's parameters.
#[derive(Clone)]
pub struct Protocol {
    conn: ConnectionManager,
    expected: u64,
    sleep: Duration,
    record_latency: bool,
}

impl Protocol {
    pub fn new(
        conn: ConnectionManager,
        expected: u64,
        sleep: Duration,
        record_latency: bool,
    ) -> Self {
        Self {
            conn,
            expected,
            sleep,
            record_latency,
        }
    }

    /// Runs steps 2–7 for a job whose handler started at `t_start` (step 1).
    pub async fn handle(&self, job: &BenchJob, t_start: u64) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        if job.kind == WARMUP {
            let _: u64 = conn.incr("bench:warm", 1).await?;
            return Ok(());
        }
        if self.record_latency {
            let latency = t_start as i64 - job.enq_ns as i64;
            let _: u64 = conn.rpush("bench:lat", latency).await?;
        }
        if !self.sleep.is_zero() {
            tokio::time::sleep(self.sleep).await;
        }
        let now = monotonic_ns();
        let n: u64 = conn.incr("bench:done", 1).await?;
        if n == 1 {
            let _: () = conn.set("bench:t_first", now).await?;
        }
        if n == self.expected {
            let _: () = conn.set("bench:t_last", now).await?;
        }
        Ok(())
    }
}
