//! How an idle worker learns there is work, used by the platform's worker and the benchmark
//! peer: a poll strategy that keeps polling on its
//! interval ([`Ticker`]), or one woken by Redis when the queue is written ([`OnWrite`]).
//!
//! apalis-core 1.0's `IntervalStrategy` (behind `poll_with_interval`) stops waking the worker
//! whenever one fetch takes longer than the interval: when its timer fires it replaces it
//! with a fresh one *without polling it*, so no waker is registered; `PollWith` ignores the
//! `Ready`, the empty fetch parks the worker, and the next wake-up is the heartbeat. Measured
//! here with a 1 ms interval: polling stopped after 160 ms and jobs waited ~4 s for the
//! 5 s heartbeat (W3 p50 2,970 ms). This strategy polls its timer until it is `Pending`, so a
//! waker is always armed, as the `PollStrategy` contract asks.
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use futures::task::AtomicWaker;
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
        if fired {
            Poll::Ready(Some(()))
        } else {
            Poll::Pending
        }
    }
}

/// Wakes the worker when the queue's `:scheduled` set is written (every apalis-redis push
/// lands there), with a slow tick as a safety net and for retries that fall due.
///
/// apalis-redis publishes nothing on push, so instead of polling every millisecond we ask
/// Redis itself: `CLIENT TRACKING ON BCAST PREFIX <scheduled key>` on a RESP3 connection
/// delivers an `invalidate` push whenever any client modifies the key, coalesced by Redis to
/// at most one message per event-loop turn. No change to producers or the server config.
#[derive(Debug)]
pub struct OnWrite {
    signal: Arc<WriteSignal>,
    fallback: Ticker,
    /// A second look shortly after a notification: a fetch already in flight when the write
    /// landed may have missed it, and the notification has been consumed by then.
    follow_up: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// Set by the tracking connection, consumed by the worker's poll.
#[derive(Debug, Default)]
pub struct WriteSignal {
    written: AtomicBool,
    waker: AtomicWaker,
}

const FOLLOW_UP: Duration = Duration::from_millis(2);

impl WriteSignal {
    /// Starts tracking writes to keys under `key_prefix` on a dedicated RESP3 connection,
    /// kept for the life of the process and re-established (and the worker woken, in case a
    /// write was missed meanwhile) when Redis goes away and comes back.
    pub async fn track(redis_url: &str, key_prefix: &str) -> redis::RedisResult<Arc<Self>> {
        let signal = Arc::new(Self::default());
        let mut conn = Self::connect(redis_url, key_prefix, &signal).await?;
        let (url, prefix, keeper) = (
            redis_url.to_string(),
            key_prefix.to_string(),
            signal.clone(),
        );
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if redis::cmd("PING")
                    .query_async::<()>(&mut conn)
                    .await
                    .is_ok()
                {
                    continue;
                }
                match Self::connect(&url, &prefix, &keeper).await {
                    Ok(fresh) => {
                        conn = fresh;
                        keeper.notify();
                    }
                    Err(e) => tracing::debug!(error = %e, "write tracking: redis unavailable"),
                }
            }
        });
        Ok(signal)
    }

    fn notify(&self) {
        self.written.store(true, Ordering::Release);
        self.waker.wake();
    }

    async fn connect(
        redis_url: &str,
        key_prefix: &str,
        signal: &Arc<Self>,
    ) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        use redis::IntoConnectionInfo;
        let info = redis_url.into_connection_info()?;
        let settings = info
            .redis_settings()
            .clone()
            .set_protocol(redis::ProtocolVersion::RESP3);
        let client = redis::Client::open(info.set_redis_settings(settings))?;
        let on_push = signal.clone();
        let config = redis::AsyncConnectionConfig::new()
            .set_response_timeout(Some(Duration::from_secs(5)))
            .set_push_sender(move |push: redis::PushInfo| {
                if push.kind == redis::PushKind::Invalidate {
                    on_push.notify();
                }
                Ok::<(), std::convert::Infallible>(())
            });
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        let _: () = redis::cmd("CLIENT")
            .arg(&["TRACKING", "ON", "BCAST", "PREFIX", key_prefix])
            .query_async(&mut conn)
            .await?;
        Ok(conn)
    }
}

impl OnWrite {
    pub fn new(signal: Arc<WriteSignal>, fallback: Duration) -> Self {
        Self {
            signal,
            fallback: Ticker::new(fallback),
            follow_up: None,
        }
    }
}

impl PollStrategy for OnWrite {
    fn poll_drive(&mut self, cx: &mut Context<'_>, snapshot: &PollSnapshot) -> Poll<Option<()>> {
        self.signal.waker.register(cx.waker());
        let mut fired = self.signal.written.swap(false, Ordering::AcqRel);
        if fired {
            self.follow_up = Some(Box::pin(tokio::time::sleep(FOLLOW_UP)));
        }
        if let Some(follow_up) = self.follow_up.as_mut()
            && follow_up.as_mut().poll(cx).is_ready()
        {
            self.follow_up = None;
            fired = true;
        }
        // polled every time, so that its waker stays armed
        let ticked = self.fallback.poll_drive(cx, snapshot).is_ready();
        if fired || ticked {
            Poll::Ready(Some(()))
        } else {
            Poll::Pending
        }
    }
}

/// A worker's wake-up: [`Ticker`], or [`OnWrite`] when write tracking could be set up.
#[derive(Debug)]
pub enum Wake {
    Tick(Ticker),
    OnWrite(OnWrite),
}

impl PollStrategy for Wake {
    fn poll_drive(&mut self, cx: &mut Context<'_>, snapshot: &PollSnapshot) -> Poll<Option<()>> {
        match self {
            Wake::Tick(t) => t.poll_drive(cx, snapshot),
            Wake::OnWrite(w) => w.poll_drive(cx, snapshot),
        }
    }
}
