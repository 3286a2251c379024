//! Queue pauses as this worker process sees them: a flag per consumed queue, refreshed from
//! `queue_pauses` in Postgres every [`POLL_EVERY`]. A paused queue's consumer sends no fetch
//! (`crate::backend`); on resume the watcher rings the queue's wake-up signal, so the
//! consumer looks at its ready list at once. Polling Postgres, not Redis: a paused or idle
//! queue costs Redis nothing (the at-rest budget of `ops/bench/idle`), and Postgres answers
//! this primary-key scan of a table of a few rows in well under a millisecond.
//!
//! The relay and the reconciler do not need these flags: they read `queue_pauses` inside
//! their own queries (`shared::records`).
use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::wake::Signal;

/// How often the pauses are read: a pause or resume takes effect within this.
pub const POLL_EVERY: Duration = Duration::from_millis(500);

/// The paused flag of every queue this process consumes.
#[derive(Debug, Clone, Default)]
pub struct Pauses {
    flags: Arc<HashMap<String, Arc<AtomicBool>>>,
}

impl Pauses {
    /// Flags for `queues`, all running until the first read.
    pub fn new(queues: &[String]) -> Self {
        Pauses {
            flags: Arc::new(
                queues
                    .iter()
                    .map(|q| (q.clone(), Arc::new(AtomicBool::new(false))))
                    .collect(),
            ),
        }
    }

    /// The flag of `queue` (a fresh, never-set one for a queue not consumed here).
    pub fn flag(&self, queue: &str) -> Arc<AtomicBool> {
        self.flags.get(queue).cloned().unwrap_or_default()
    }

    /// Sets the flags to `paused`; returns the queues that were resumed just now.
    pub fn apply(&self, paused: &[String]) -> Vec<String> {
        let mut resumed = Vec::new();
        for (queue, flag) in self.flags.iter() {
            let now_paused = paused.contains(queue);
            let was = flag.swap(now_paused, Ordering::AcqRel);
            if was != now_paused {
                tracing::info!(queue = %queue, paused = now_paused, "queue pause changed");
            }
            if was && !now_paused {
                resumed.push(queue.clone());
            }
        }
        resumed
    }

    /// Reads the pauses once.
    pub async fn refresh(&self, pool: &PgPool) -> Result<Vec<String>, sqlx::Error> {
        let paused: Vec<String> = shared::pauses::paused_queues(pool)
            .await?
            .into_iter()
            .map(|p| p.queue)
            .collect();
        Ok(self.apply(&paused))
    }
}

/// Keeps `pauses` current until `stop` fires, ringing the signal of each resumed queue
/// (`signals`: queue name → its consumers' signal).
pub async fn run(
    pool: PgPool,
    pauses: Pauses,
    signals: HashMap<String, Arc<Signal>>,
    stop: CancellationToken,
) {
    loop {
        match pauses.refresh(&pool).await {
            Ok(resumed) => {
                for queue in resumed {
                    if let Some(signal) = signals.get(&queue) {
                        signal.notify();
                    }
                }
            }
            // the flags keep their last value: a pause read before still holds
            Err(e) => tracing::warn!(error = %e, "could not read the queue pauses"),
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL_EVERY) => {}
            _ = stop.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resume_is_reported_once() {
        let pauses = Pauses::new(&["a".into(), "b".into()]);
        assert!(pauses.apply(&["a".into()]).is_empty());
        assert!(pauses.flag("a").load(Ordering::Acquire));
        assert!(!pauses.flag("b").load(Ordering::Acquire));
        assert_eq!(pauses.apply(&[]), vec!["a".to_string()]);
        assert!(pauses.apply(&[]).is_empty());
        assert!(!pauses.flag("a").load(Ordering::Acquire));
    }
}
