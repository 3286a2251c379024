//! A poll strategy that keeps an idle worker polling on its interval.
//!
//! apalis-core 1.0's `IntervalStrategy` (behind `poll_with_interval`) stops waking the worker
//! whenever one fetch takes longer than the interval: when its timer fires it replaces it
//! with a fresh one *without polling it*, so no waker is registered; `PollWith` ignores the
//! `Ready`, the empty fetch parks the worker, and the next wake-up is the heartbeat. Measured
//! here with a 1 ms interval: polling stopped after 160 ms and jobs waited ~4 s for the
//! 5 s heartbeat (W3 p50 2,970 ms). This strategy polls its timer until it is `Pending`, so a
//! waker is always armed, as the `PollStrategy` contract asks.
use std::task::{Context, Poll};
use std::time::Duration;

use apalis::prelude::{PollSnapshot, PollStrategy};
use tokio::time::{Interval, MissedTickBehavior};

/// Wakes the worker every `period` (tokio's timer: 1 ms resolution).
#[derive(Debug)]
pub struct Ticker {
    interval: Interval,
}

impl Ticker {
    pub fn new(period: Duration) -> Self {
        let mut interval = tokio::time::interval(period.max(Duration::from_millis(1)));
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Self { interval }
    }
}

impl PollStrategy for Ticker {
    fn poll_drive(&mut self, cx: &mut Context<'_>, _: &PollSnapshot) -> Poll<Option<()>> {
        let mut fired = false;
        // Consume every elapsed tick; the final `Pending` registers the waker for the next.
        while self.interval.poll_tick(cx).is_ready() {
            fired = true;
        }
        if fired { Poll::Ready(Some(())) } else { Poll::Pending }
    }
}
