//! How a job's attempt ends, as a handler says it, and the default retry policy. The
//! transitions this causes on the durable record are `shared::records`'; retries are durable
//! too: a transient failure puts the record back to `pending` with a jittered exponential
//! `run_at`, and the relay pushes it again when due. Redis never retries on its own (its
//! hard-coded 25 attempts are never reached) and the dead letters, with their error history,
//! live in Postgres.
use chrono::{DateTime, Utc};
use rand::Rng;

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Done,
    /// Done, and already recorded by the handler together with its effect.
    Recorded,
    /// Nothing to do any more (a cancelled booking's reminder, an erased recipient).
    Skipped(String),
    /// A transient failure: try again later, unless the attempts are exhausted.
    Retry(String),
    /// Not this job's failure: something else holds what it needs (another delivery's email
    /// claim) until `until`. Run again then, without spending an attempt.
    Defer {
        until: DateTime<Utc>,
        reason: String,
    },
    /// A permanent failure: straight to the dead letters.
    Dead(String),
}

impl Outcome {
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Done | Outcome::Recorded => "done",
            Outcome::Skipped(_) => "skipped",
            Outcome::Retry(_) => "retry",
            Outcome::Defer { .. } => "deferred",
            Outcome::Dead(_) => "dead",
        }
    }
}

/// The delay before retry number `attempt` (1-based): 2 s doubling to at most 10 min, ±20%.
pub fn backoff(attempt: i32) -> chrono::Duration {
    let exponent = attempt.clamp(1, 20) as u32 - 1;
    let base_ms = (2_000u64.saturating_mul(1 << exponent)).min(600_000) as f64;
    let jitter = rand::rng().random_range(0.8..1.2);
    chrono::Duration::milliseconds((base_ms * jitter) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_exponentially_with_jitter_and_a_cap() {
        for _ in 0..50 {
            let first = backoff(1).num_milliseconds();
            assert!((1_600..=2_400).contains(&first), "{first}");
            let third = backoff(3).num_milliseconds();
            assert!((6_400..=9_600).contains(&third), "{third}");
            let late = backoff(30).num_milliseconds();
            assert!(late <= 720_000, "{late}");
        }
    }
}
