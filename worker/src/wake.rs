//! How a worker process learns that there is work without asking for it: one RESP3
//! connection per process on which Redis reports every write to the ready list and the
//! `:scheduled` set of each queue the process consumes, and [`Signal`]s that the consumers
//! ([`crate::backend`]) and the promoter ([`crate::maintenance`]) wait on.
//!
//! The report is Redis' client-side tracking in broadcast mode (`CLIENT TRACKING ON BCAST
//! PREFIX <ready list> PREFIX <scheduled set> ...`): an `invalidate` push naming the keys
//! written, coalesced by Redis to one message per event-loop turn. It costs Redis no command
//! at rest, whatever the number of queues, needs no server configuration (keyspace
//! notifications do) and no change to producers: any writer wakes the consumers, our push,
//! the promoter, the reaper, or an apalis-redis producer of the previous release.
//!
//! A push sent while the connection is down is not reported. So:
//! - a closed connection (a Redis restart, `CLIENT KILL`) is reported by redis-rs at once
//!   and the connection is re-established; then every consumer looks again;
//! - a connection that died silently is found by the process heartbeat
//!   ([`crate::liveness`]), which is sent on this connection: a failed beat is treated as a
//!   closed connection. That bounds a missed wake-up to one heartbeat interval plus the
//!   response timeout (the safety net; before, every queue was also fetched every 100 ms).
//!
//! Tracking is per node: on a Redis Cluster the hub keeps one such connection to every
//! primary (each reports the writes to the keys it owns), found from `CLUSTER SLOTS`; behind
//! Sentinel, one to the master the sentinels name. Losing any of them (a primary killed, a
//! failover) re-establishes all of them against the topology as it is then, and every
//! consumer looks again. On a cluster the heartbeat is sent on the data connection (its key
//! lives on one node) and each wake-up connection is proved alive by a `PING` instead.
//!
//! Where tracking is not available (Redis < 6, or a proxy that refuses `CLIENT TRACKING`)
//! every signal fires on a [`POLL_FALLBACK`] tick instead, and the worker says so.
use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    task::Waker,
    time::Duration,
};

use apalis_redis::Config as QueueConfig;
use futures::task::AtomicWaker;
use redis::{FromRedisValue, aio::MultiplexedConnection};
use shared::queue::{self, ConnectionManager, Target};
use tokio::sync::Notify;

/// How often every queue is looked at when Redis cannot report writes.
pub const POLL_FALLBACK: Duration = Duration::from_millis(100);

/// Rings when a queue's ready list was written. A consumer reads [`Signal::generation`]
/// before it sends a fetch; an empty fetch only sleeps if the generation has not moved
/// since, so a write that lands while a fetch is in flight is never slept through.
#[derive(Debug, Default)]
pub struct Signal {
    generation: AtomicU64,
    waker: AtomicWaker,
}

impl Signal {
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Wakes `waker` at the next write (one consumer per queue and process).
    pub fn register(&self, waker: &Waker) {
        self.waker.register(waker);
    }

    pub fn notify(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.waker.wake();
    }
}

/// The process's wake-up connection and the signals it rings.
#[derive(Clone, Debug)]
pub struct Hub {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    target: Target,
    client_name: String,
    prefixes: Vec<String>,
    /// ready list key → its consumers' signal
    ready: HashMap<String, Arc<Signal>>,
    /// `:scheduled` key → index into `scheduled_dirty`
    scheduled: HashMap<String, usize>,
    scheduled_dirty: Vec<AtomicBool>,
    scheduled_changed: Notify,
    /// the current connections (one per primary) and their number (pushes of an older
    /// set are ignored)
    conn: Mutex<Option<(u64, Vec<MultiplexedConnection>)>>,
    connections: AtomicU64,
    /// the connection closed or failed a command: the keeper reconnects
    lost: Notify,
    polling: AtomicBool,
    closed: tokio_util::sync::CancellationToken,
}

impl Hub {
    /// Connects and starts tracking the queues of `groups` (each queue's partitions, which
    /// ring one signal); `client_name` shows in `CLIENT LIST` (the process's id). Keeps the
    /// connections for the life of the process.
    pub async fn start(
        target: &Target,
        client_name: &str,
        groups: &[&[QueueConfig]],
    ) -> redis::RedisResult<Self> {
        let mut prefixes = Vec::new();
        let mut ready = HashMap::new();
        let mut scheduled = HashMap::new();
        let mut i = 0;
        for group in groups {
            let signal = Arc::new(Signal::default());
            for config in group.iter() {
                prefixes.push(config.active_jobs_list());
                prefixes.push(config.scheduled_jobs_set());
                ready.insert(config.active_jobs_list(), signal.clone());
                scheduled.insert(config.scheduled_jobs_set(), i);
                i += 1;
            }
        }
        let hub = Hub {
            inner: Arc::new(Inner {
                target: target.clone(),
                client_name: client_name.to_string(),
                prefixes,
                ready,
                scheduled,
                scheduled_dirty: (0..i).map(|_| AtomicBool::new(true)).collect(),
                scheduled_changed: Notify::new(),
                conn: Mutex::new(None),
                connections: AtomicU64::new(0),
                lost: Notify::new(),
                polling: AtomicBool::new(false),
                closed: tokio_util::sync::CancellationToken::new(),
            }),
        };
        let conn = hub.connect().await?;
        hub.set_conn(Some(conn));
        tokio::spawn(hub.clone().keep());
        Ok(hub)
    }

    /// The signal of the queue whose ready list is `config`'s, if this hub tracks it.
    pub fn signal(&self, config: &QueueConfig) -> Option<Arc<Signal>> {
        self.inner.ready.get(&config.active_jobs_list()).cloned()
    }

    /// Waits until a `:scheduled` set was written (or may have been, after a reconnect).
    pub async fn scheduled_changed(&self) {
        self.inner.scheduled_changed.notified().await
    }

    /// Takes the indexes (in the order of `configs`) of the `:scheduled` sets written since
    /// the last call.
    pub fn take_scheduled_changes(&self) -> Vec<usize> {
        self.inner
            .scheduled_dirty
            .iter()
            .enumerate()
            .filter(|(_, dirty)| dirty.swap(false, Ordering::AcqRel))
            .map(|(i, _)| i)
            .collect()
    }

    /// Runs `pipe` on the wake-up connection (the heartbeat does, so that a dead connection
    /// is found); a failure hands the connection to the keeper to re-establish. On a
    /// cluster `pipe` runs on `data` (its key is on one node of several) and each wake-up
    /// connection answers a `PING`.
    pub async fn query<T: FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
        data: &mut ConnectionManager,
    ) -> redis::RedisResult<T> {
        let conn = self.inner.conn.lock().ok().and_then(|c| c.clone());
        let Some((id, conns)) = conn else {
            return Err(redis::RedisError::from(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                "the wake-up connection is being re-established",
            )));
        };
        let lost = |e: &redis::RedisError| {
            if queue::master_gone(e) {
                self.lost(id);
            }
        };
        if let (false, [conn]) = (self.inner.target.is_cluster(), conns.as_slice()) {
            let result = pipe.query_async(&mut conn.clone()).await;
            if let Err(e) = &result {
                lost(e);
            }
            return result;
        }
        for conn in &conns {
            let ping: redis::RedisResult<()> =
                redis::cmd("PING").query_async(&mut conn.clone()).await;
            if let Err(e) = &ping {
                lost(e);
            }
            ping?;
        }
        pipe.query_async(data).await
    }

    /// Closes the connection and stops re-establishing it (the process is stopping).
    pub fn close(&self) {
        self.inner.closed.cancel();
        self.set_conn(None);
    }

    /// Whether writes are reported (false: every queue is polled on [`POLL_FALLBACK`]).
    pub fn tracking(&self) -> bool {
        !self.inner.polling.load(Ordering::Acquire)
    }

    /// Rings every signal: something may have been written unreported.
    fn notify_all(&self) {
        for signal in self.inner.ready.values() {
            signal.notify();
        }
        for dirty in &self.inner.scheduled_dirty {
            dirty.store(true, Ordering::Release);
        }
        self.inner.scheduled_changed.notify_one();
    }

    /// Connection number `id` is gone (a later one may already have replaced it).
    fn lost(&self, id: u64) {
        if let Ok(mut slot) = self.inner.conn.lock()
            && slot.as_ref().is_some_and(|(current, _)| *current == id)
        {
            *slot = None;
            self.inner.lost.notify_one();
        }
    }

    fn set_conn(&self, conn: Option<(u64, Vec<MultiplexedConnection>)>) {
        if let Ok(mut slot) = self.inner.conn.lock() {
            *slot = conn;
        }
    }

    /// Re-establishes the connection whenever it is lost, and polls when Redis cannot
    /// track. Ends with the process.
    async fn keep(self) {
        let mut backoff = Duration::from_millis(100);
        let closed = self.inner.closed.clone();
        loop {
            let poll = self.inner.polling.load(Ordering::Acquire);
            tokio::select! {
                _ = tokio::time::sleep(POLL_FALLBACK), if poll => self.notify_all(),
                _ = self.inner.lost.notified() => {}
                _ = closed.cancelled() => return,
            }
            while !closed.is_cancelled() {
                let connected = self.inner.conn.lock().ok().is_some_and(|c| c.is_some());
                if connected {
                    break;
                }
                match self.connect().await {
                    Ok(conn) => {
                        if closed.is_cancelled() {
                            return;
                        }
                        self.set_conn(Some(conn));
                        tracing::info!("wake-up connection re-established");
                        // writes made while it was down were not reported
                        self.notify_all();
                        backoff = Duration::from_millis(100);
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "wake-up connection: redis unavailable");
                        tokio::select! {
                            _ = tokio::time::sleep(backoff) => {}
                            _ = closed.cancelled() => return,
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                    }
                }
            }
        }
    }

    /// Connects to every primary of the topology as it is now.
    async fn connect(&self) -> redis::RedisResult<(u64, Vec<MultiplexedConnection>)> {
        let id = self.inner.connections.fetch_add(1, Ordering::AcqRel) + 1;
        let mut conns = Vec::new();
        for info in self.inner.target.primaries().await? {
            conns.push(self.connect_node(id, info).await?);
        }
        Ok((id, conns))
    }

    async fn connect_node(
        &self,
        id: u64,
        info: redis::ConnectionInfo,
    ) -> redis::RedisResult<MultiplexedConnection> {
        let settings = info
            .redis_settings()
            .clone()
            .set_protocol(redis::ProtocolVersion::RESP3);
        let client = redis::Client::open(info.set_redis_settings(settings))?;
        // the push sender lives in the connection's task: a weak reference lets the hub go
        let hub = Arc::downgrade(&self.inner);
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(5)))
            .set_push_sender(move |push: redis::PushInfo| {
                if let Some(inner) = hub.upgrade() {
                    Hub { inner }.on_push(id, push);
                }
                Ok::<(), std::convert::Infallible>(())
            });
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        let _: () = redis::cmd("CLIENT")
            .arg("SETNAME")
            .arg(&self.inner.client_name)
            .query_async(&mut conn)
            .await?;
        let mut tracking = redis::cmd("CLIENT");
        tracking.arg(&["TRACKING", "ON", "BCAST"]);
        for prefix in &self.inner.prefixes {
            tracking.arg("PREFIX").arg(prefix);
        }
        match tracking.query_async::<()>(&mut conn).await {
            Ok(()) => self.inner.polling.store(false, Ordering::Release),
            Err(e) if !e.is_io_error() && !e.is_timeout() => {
                if !self.inner.polling.swap(true, Ordering::AcqRel) {
                    tracing::warn!(error = %e, period_ms = POLL_FALLBACK.as_millis() as u64,
                        "redis cannot report writes (CLIENT TRACKING): polling every queue instead");
                }
            }
            Err(e) => return Err(e),
        }
        Ok(conn)
    }

    fn on_push(&self, id: u64, push: redis::PushInfo) {
        match push.kind {
            redis::PushKind::Invalidate => {
                for value in push.data {
                    match value {
                        redis::Value::Array(keys) => {
                            for key in keys {
                                if let redis::Value::BulkString(key) = key {
                                    self.written(&String::from_utf8_lossy(&key));
                                }
                            }
                        }
                        // FLUSHALL / FLUSHDB: every key
                        _ => self.notify_all(),
                    }
                }
            }
            redis::PushKind::Disconnection => self.lost(id),
            _ => {}
        }
    }

    fn written(&self, key: &str) {
        if let Some(signal) = self.inner.ready.get(key) {
            signal.notify();
        } else if let Some(&i) = self.inner.scheduled.get(key) {
            if let Some(dirty) = self.inner.scheduled_dirty.get(i) {
                dirty.store(true, Ordering::Release);
            }
            self.inner.scheduled_changed.notify_one();
        }
    }
}
