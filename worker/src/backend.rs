//! The apalis backend of the platform's queues: apalis-core's `Backend` traits, so that
//! workers, handlers, layers and the `Monitor` are apalis' own, over the Redis key layout of
//! `shared::queue` (apalis-redis' layout), with our own scripts where apalis-redis' force it:
//!
//! | | apalis-redis 1.0 | here |
//! |---|---|---|
//! | idle worker | fetches on every poll tick, per queue (we ticked every 100 ms: 5 commands per queue per tick) | sleeps until its queue's ready list is written ([`crate::wake`]): no command at rest |
//! | liveness | heartbeat + orphan scan per worker, i.e. per queue | one heartbeat per process ([`crate::liveness`]) |
//! | fetch | registration check, promotion of *every* due id in one `unpack` (fails past ~8,000), `LRANGE`/`LTRIM`, and an `HGETALL` of each task's metadata | registration check, `LPOP n`, `HMGET`, `SADD`: 4 commands per batch whatever its size |
//! | ack | a metadata `HSET` per task | variadic `SREM`/`SADD` per batch; metadata touched only by a retry |
//!
//! Acknowledgement keeps apalis-redis' meaning: done → `:done`, killed (an `AbortError`) →
//! `:dead`, failed → retried by Redis at `now + attempts` seconds through `:scheduled`
//! (25 attempts, then `:dead`). Our handlers record every outcome in Postgres, so only a
//! handler that could not record one (Postgres down) ever returns a failure.
use std::{
    collections::HashMap,
    marker::PhantomData,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use apalis_codec::json::JsonCodec;
use apalis_core::{
    backend::{
        Backend, BackendConfig, WireFormatBackend,
        finalize::Durable,
        persistence::{Persisted, Persistence, State, TaskEvent, TaskPersistLayer},
    },
    task::{Task, builder::TaskBuilder, status::Status, task_id::TaskId},
    worker::context::WorkerContext,
};
use apalis_redis::Config as QueueConfig;
use serde_json::Value;
use shared::queue::{self, ConnectionManager, Target};

use crate::{
    liveness::{self, Process},
    maintenance::{self, Queues},
    pauses::Pauses,
    wake::{Hub, Signal},
};

/// What can stop a consumer's backend (a stopped backend is restarted by the `Monitor`).
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("serialization: {0}")]
    Json(#[from] serde_json::Error),
    #[error("pushing goes through shared::queue::push, not through a consumer")]
    PushUnsupported,
}

/// apalis-core drives a per-worker heartbeat from the backend; liveness is the process's
/// ([`crate::liveness`]), so this one is as good as never due.
const NO_WORKER_HEARTBEAT: Duration = Duration::from_secs(24 * 3600);

/// Takes up to ARGV[2] ready tasks of one queue partition for this process; errors when
/// the process is not registered as its consumer, so that nothing is fetched into an
/// in-flight set nobody would reap. Every key is the partition's (one slot on a cluster):
/// the registration checked is the partition's consumers hash, not the global registry.
const FETCH: &str = r#"
    -- KEYS[1] the partition's consumers, KEYS[2] the ready list, KEYS[3] this process's
    -- in-flight set, KEYS[4] the data hash; ARGV[1] process id, ARGV[2] batch size
    if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then
      return redis.error_reply('NOTREGISTERED worker process ' .. ARGV[1] .. ' is not registered')
    end
    local ids = redis.call('LPOP', KEYS[2], tonumber(ARGV[2]))
    if not ids then return {{}, {}} end
    local data = redis.call('HMGET', KEYS[4], unpack(ids))
    local taken, payloads = {}, {}
    for i, id in ipairs(ids) do
      -- a task whose data is gone was cleaned up after a duplicate finished: drop it
      if data[i] then
        taken[#taken + 1] = id
        payloads[#payloads + 1] = data[i]
      end
    end
    if #taken > 0 then redis.call('SADD', KEYS[3], unpack(taken)) end
    return {taken, payloads}"#;

/// Acknowledges a batch of outcomes.
const ACK: &str = r#"
    -- KEYS[1] this process's in-flight set, KEYS[2] done set, KEYS[3] dead set,
    -- KEYS[4] scheduled set; ARGV[1] metadata key prefix, ARGV[2] now (unix s);
    -- ARGV[3..] triples of task id, outcome (done | dead | retry), error
    local function chunked(cmd, key, list)
      for i = 1, #list, 1000 do
        redis.call(cmd, key, unpack(list, i, math.min(i + 999, #list)))
      end
    end
    local all, done, dead = {}, {}, {}
    for i = 3, #ARGV, 3 do
      local id, outcome = ARGV[i], ARGV[i + 1]
      all[#all + 1] = id
      if outcome == 'done' then
        done[#done + 1] = id
      elseif outcome == 'dead' then
        dead[#dead + 1] = id
      else
        local meta = ARGV[1] .. ':' .. id
        local attempts = redis.call('HINCRBY', meta, 'attempts', 1)
        redis.call('HSET', meta, 'result', ARGV[i + 2])
        if attempts < 25 then
          redis.call('ZADD', KEYS[4], tonumber(ARGV[2]) + attempts, id)
        else
          dead[#dead + 1] = id
        end
      end
    end
    -- an id no longer in flight here was reaped while it ran: its outcome still counts
    chunked('SREM', KEYS[1], all)
    chunked('SADD', KEYS[2], done)
    chunked('SADD', KEYS[3], dead)
    return #all"#;

/// Puts tasks fetched but never started back at the head of the ready list, in order.
const RELEASE: &str = r#"
    -- KEYS[1] this process's in-flight set, KEYS[2] the ready list; ARGV task ids
    local released = 0
    for i = #ARGV, 1, -1 do
      if redis.call('SREM', KEYS[1], ARGV[i]) == 1 then
        redis.call('LPUSH', KEYS[2], ARGV[i])
        released = released + 1
      end
    end
    return released"#;

/// Registers one consumer (a worker run) of this process on one queue partition; what an
/// earlier run in this process had fetched goes back to the ready list first. (The
/// process's own registration, in the registry's slot, is written before: [`Process::register`].)
const REGISTER: &str = r#"
    -- KEYS[1] the process's in-flight set of this partition, KEYS[2] the ready list,
    -- KEYS[3] the partition's consumers; ARGV[1] process id, ARGV[2] now
    local moved = 0
    while true do
      local ids = redis.call('SPOP', KEYS[1], 1000)
      if #ids == 0 then break end
      redis.call('RPUSH', KEYS[2], unpack(ids))
      moved = moved + #ids
    end
    redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
    return moved"#;

static FETCH_SCRIPT: OnceLock<redis::Script> = OnceLock::new();
static ACK_SCRIPT: OnceLock<redis::Script> = OnceLock::new();
static RELEASE_SCRIPT: OnceLock<redis::Script> = OnceLock::new();
static REGISTER_SCRIPT: OnceLock<redis::Script> = OnceLock::new();

/// A script hashed once (a fetch and an ack run one each per batch).
fn script(cell: &'static OnceLock<redis::Script>, code: &str) -> &'static redis::Script {
    cell.get_or_init(|| redis::Script::new(code))
}

/// The Redis side of one queue's consumer in this process: every partition of the queue.
#[derive(Clone, Debug)]
pub struct QueueStore {
    conn: ConnectionManager,
    /// partition 0 (what apalis sees as the backend's configuration)
    config: QueueConfig,
    /// every partition, partition 0 first
    partitions: Arc<[QueueConfig]>,
    queue: String,
    process: Arc<Process>,
    /// per partition: set whenever it acknowledged something (maintenance cleans up then)
    finished: Arc<[Arc<AtomicBool>]>,
    /// turns the partition each fetch starts at, so that every partition (and every shard
    /// of a cluster) is asked first as often; shared by the clones apalis' persistence
    /// layer fetches through (a plain field was reset with each clone: every fetch began at
    /// partition 0, and its shard took half the fetches in ops/bench/cluster-spread)
    next: Arc<std::sync::atomic::AtomicUsize>,
    /// fetched task id → its partition, until acknowledged or released
    owners: Arc<Mutex<HashMap<String, usize>>>,
}

impl QueueStore {
    fn inflight(&self, partition: usize) -> String {
        queue::inflight_key(&self.partitions[partition], self.process.id())
    }

    /// Takes the partitions of `ids` (those this store fetched), grouped.
    fn take_owners<'a>(&self, ids: impl Iterator<Item = &'a str>) -> Vec<Vec<&'a str>> {
        let mut groups = vec![Vec::new(); self.partitions.len()];
        let mut owners = self.owners.lock().unwrap_or_else(|e| e.into_inner());
        for id in ids {
            // an id not found was fetched before a restart of this store: partition 0 is
            // where a single-partition queue has it, and an ack of an id not in flight
            // there still records its outcome
            let last = groups.len() - 1;
            let p = owners.remove(id).unwrap_or(0).min(last);
            groups[p].push(id);
        }
        groups
    }
}

impl Persistence for QueueStore {
    type Compact = Vec<u8>;
    type Error = QueueError;
    type Response = Value;

    async fn register(&mut self, worker: &WorkerContext) -> Result<(), QueueError> {
        self.process.enroll(&mut self.conn).await?;
        let mut moved = 0u64;
        for (p, config) in self.partitions.iter().enumerate() {
            moved += script(&REGISTER_SCRIPT, REGISTER)
                .key(self.inflight(p))
                .key(config.active_jobs_list())
                .key(queue::consumers_key(config))
                .arg(self.process.id())
                .arg(unix_now())
                .invoke_async::<u64>(&mut self.conn)
                .await?;
        }
        if moved > 0 {
            tracing::warn!(
                worker = worker.name(),
                queue = %self.queue,
                tasks = moved,
                "re-enqueued what this consumer's previous run had fetched"
            );
        }
        Ok(())
    }

    async fn heartbeat(&mut self, _worker: &WorkerContext) -> Result<(), QueueError> {
        Ok(())
    }

    async fn fetch_next(
        &mut self,
        _worker: &WorkerContext,
    ) -> Result<Vec<Task<Vec<u8>>>, QueueError> {
        let n = self.partitions.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for i in 0..n {
            let p = (start + i) % n;
            let config = &self.partitions[p];
            let (ids, payloads): (Vec<String>, Vec<Vec<u8>>) = script(&FETCH_SCRIPT, FETCH)
                .key(queue::consumers_key(config))
                .key(config.active_jobs_list())
                .key(self.inflight(p))
                .key(config.job_data_hash())
                .arg(self.process.id())
                .arg(self.config.batch_size.max(1))
                .invoke_async(&mut self.conn)
                .await?;
            if ids.is_empty() {
                continue;
            }
            if n > 1 {
                let mut owners = self.owners.lock().unwrap_or_else(|e| e.into_inner());
                owners.extend(ids.iter().map(|id| (id.clone(), p)));
            }
            return Ok(ids
                .into_iter()
                .zip(payloads)
                .map(|(id, payload)| {
                    TaskBuilder::new(payload)
                        .task_id(TaskId::from_string(id))
                        .build()
                })
                .collect());
        }
        Ok(Vec::new())
    }

    async fn reenqueue_abandoned(
        &mut self,
        tasks: Vec<Task<Vec<u8>>>,
        _worker: &WorkerContext,
    ) -> Result<u64, QueueError> {
        let ids: Vec<String> = tasks
            .iter()
            .filter_map(|t| t.task_id().map(ToString::to_string))
            .collect();
        let groups = self.take_owners(ids.iter().map(String::as_str));
        let mut released = 0;
        for (p, ids) in groups.into_iter().enumerate() {
            if ids.is_empty() {
                continue;
            }
            released += script(&RELEASE_SCRIPT, RELEASE)
                .key(self.inflight(p))
                .key(self.partitions[p].active_jobs_list())
                .arg(ids)
                .invoke_async::<u64>(&mut self.conn)
                .await?;
        }
        Ok(released)
    }

    async fn handle_events(
        &mut self,
        events: Vec<TaskEvent<Value>>,
        _worker: &WorkerContext,
    ) -> Result<(), QueueError> {
        let mut acks: Vec<(String, &'static str, String)> = Vec::new();
        for event in &events {
            let TaskEvent::Complete(result) = event else {
                continue;
            };
            let (outcome, error) = match (&result.status, &result.result) {
                (Status::Done, _) => ("done", String::new()),
                (Status::Killed, Err(e)) => ("dead", e.clone()),
                (Status::Killed, Ok(_)) => ("dead", String::new()),
                (_, Err(e)) => ("retry", e.clone()),
                (_, Ok(_)) => ("retry", String::new()),
            };
            acks.push((result.task_id.to_string(), outcome, error));
        }
        if acks.is_empty() {
            return Ok(());
        }
        let groups = self.take_owners(acks.iter().map(|(id, _, _)| id.as_str()));
        for (p, ids) in groups.into_iter().enumerate() {
            if ids.is_empty() {
                continue;
            }
            let config = &self.partitions[p];
            let mut invocation = script(&ACK_SCRIPT, ACK).prepare_invoke();
            invocation
                .key(self.inflight(p))
                .key(config.done_jobs_set())
                .key(config.dead_jobs_set())
                .key(config.scheduled_jobs_set())
                .arg(config.job_meta_hash())
                .arg(unix_now());
            for (id, outcome, error) in &acks {
                if ids.contains(&id.as_str()) {
                    invocation.arg(id).arg(*outcome).arg(error);
                }
            }
            let _: u64 = invocation.invoke_async(&mut self.conn).await?;
            if let Some(finished) = self.finished.get(p) {
                finished.store(true, Ordering::Release);
            }
        }
        Ok(())
    }

    async fn push_tasks(&mut self, _tasks: Vec<Task<Vec<u8>>>) -> Result<(), QueueError> {
        Err(QueueError::PushUnsupported)
    }
}

/// One queue's consumer backend for an apalis worker, whose handler takes `Args` (decoded
/// from JSON; the platform's take the envelope as a `serde_json::Value`).
#[derive(Debug)]
pub struct RedisQueue<Args = Value> {
    persist: Persisted<QueueStore>,
    signal: Arc<Signal>,
    /// set while an operator has paused the queue ([`crate::pauses`]): no fetch is sent
    paused: Arc<AtomicBool>,
    /// the signal's generation when the last fetch was sent
    seen: u64,
    codec: JsonCodec,
    args: PhantomData<fn() -> Args>,
}

impl<Args> Clone for RedisQueue<Args> {
    fn clone(&self) -> Self {
        RedisQueue {
            persist: Persisted::new((*self.persist).clone()),
            signal: self.signal.clone(),
            paused: self.paused.clone(),
            seen: 0,
            codec: JsonCodec::default(),
            args: PhantomData,
        }
    }
}

impl<Args> RedisQueue<Args> {
    /// A consumer of the queue whose partitions are `partitions` (partition 0 first;
    /// `queue` is its short name) for `process`, woken by `signal`; `finished[p]` is set
    /// whenever it acknowledges something of partition `p` (maintenance cleans up then,
    /// and only then).
    pub fn new(
        conn: ConnectionManager,
        partitions: Vec<QueueConfig>,
        queue: &str,
        process: Arc<Process>,
        signal: Arc<Signal>,
        finished: Vec<Arc<AtomicBool>>,
        paused: Arc<AtomicBool>,
    ) -> Self {
        let config = partitions.first().cloned().unwrap_or_default();
        RedisQueue {
            persist: Persisted::new(QueueStore {
                conn,
                config,
                partitions: partitions.into(),
                queue: queue.to_string(),
                process,
                finished: finished.into(),
                next: Arc::default(),
                owners: Arc::default(),
            }),
            signal,
            paused,
            seen: 0,
            codec: JsonCodec::default(),
            args: PhantomData,
        }
    }

    pub fn config(&self) -> &QueueConfig {
        &self.persist.config
    }
}

impl<Args> Backend for RedisQueue<Args> {
    type Task = Task<Vec<u8>>;
    type Error = QueueError;

    fn poll_ready(
        &mut self,
        cx: &mut Context<'_>,
        worker: &WorkerContext,
    ) -> Poll<Result<(), QueueError>> {
        self.persist.poll_ready(cx, worker, NO_WORKER_HEARTBEAT)
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        worker: &WorkerContext,
    ) -> Poll<Option<Result<Self::Task, QueueError>>> {
        loop {
            if matches!(self.persist.state(), State::Ready) {
                if self.paused.load(Ordering::Acquire) {
                    // paused: no fetch. The pause watcher rings the signal on resume; the
                    // flag is read again after registering, so a resume in between is seen
                    self.signal.register(cx.waker());
                    if self.paused.load(Ordering::Acquire) {
                        return Poll::Pending;
                    }
                }
                // a fetch is about to be sent: writes from now on may be missed by it
                self.seen = self.signal.generation();
            }
            match self.persist.poll_next(cx, worker) {
                // `Ready` again after a fetch: it came back empty
                Poll::Pending if matches!(self.persist.state(), State::Ready) => {
                    self.signal.register(cx.waker());
                    if self.signal.generation() == self.seen {
                        return Poll::Pending;
                    }
                    // written while the fetch was in flight: look again
                }
                other => return other,
            }
        }
    }

    fn poll_close(
        &mut self,
        cx: &mut Context<'_>,
        worker: &WorkerContext,
    ) -> Poll<Result<(), QueueError>> {
        self.persist.poll_close(cx, worker)
    }
}

impl<Args> BackendConfig for RedisQueue<Args> {
    type Args = Args;
    type Id = String;
    type Kind = Durable;
    type Config = QueueConfig;
    type Layer = TaskPersistLayer<JsonCodec<Value>, Value>;

    fn config(&self) -> &QueueConfig {
        &self.persist.config
    }

    fn middleware(&mut self, _worker: &mut WorkerContext) -> Self::Layer {
        let batch = self.persist.config.batch_size.max(1);
        self.persist
            .layer(JsonCodec::<Value>::default(), batch)
            // the acknowledgement: must stay on
            .persist_results(true)
            .lock_tasks(false)
    }
}

impl<Args> WireFormatBackend for RedisQueue<Args> {
    type Codec = JsonCodec;
    type Compact = Vec<u8>;

    fn codec(&self) -> &JsonCodec {
        &self.codec
    }
}

/// The Redis side of one worker process: its registration, its wake-up connections, the
/// loops that keep both (heartbeat, queue maintenance) and a consumer backend per queue;
/// what the platform's worker and the benchmark peer share.
#[derive(Debug)]
pub struct Consumers {
    /// The data connection (fetches, acks, scripts), shared by the consumers.
    pub redis: ConnectionManager,
    pub hub: Hub,
    pub process: Arc<Process>,
    /// Every partition of every queue, flattened (queue 0's partitions first).
    pub queues: Queues,
    /// The operators' pauses of these queues, kept current by [`crate::pauses::run`].
    pub pauses: Pauses,
    names: Vec<String>,
    /// per queue: its partitions' range in `queues`
    ranges: Vec<std::ops::Range<usize>>,
    target: Target,
}

impl Consumers {
    /// Registers this process as a consumer of `queues` (short name and the backend
    /// configuration of each partition, under `prefix`) and opens its wake-up connections.
    pub async fn connect(
        target: &Target,
        prefix: &str,
        queues: Vec<(String, Vec<QueueConfig>)>,
        heartbeat: Duration,
    ) -> Result<Self, QueueError> {
        let mut names = Vec::new();
        let mut ranges = Vec::new();
        let mut configs: Vec<QueueConfig> = Vec::new();
        for (name, partitions) in queues {
            names.push(name);
            ranges.push(configs.len()..configs.len() + partitions.len());
            configs.extend(partitions);
        }
        let partition_names = configs.iter().map(|c| c.queue.to_string()).collect();
        let process = Arc::new(Process::new(prefix, partition_names, heartbeat));
        let mut redis = queue::connect(target).await?;
        process.enroll(&mut redis).await?;
        // named after its registration: `CLIENT LIST` shows which process holds which
        let name = queue::process_key(process.prefix(), process.id());
        let groups: Vec<&[QueueConfig]> = ranges.iter().map(|r| &configs[r.clone()]).collect();
        let hub = Hub::start(target, &name, &groups).await?;
        if !hub.tracking() {
            metrics::gauge!("worker_wake_polling").set(1.0);
        }
        Ok(Consumers {
            redis,
            hub,
            process,
            pauses: Pauses::new(&names),
            queues: Queues::new(configs),
            names,
            ranges,
            target: target.clone(),
        })
    }

    /// The consumer backend of queue number `i` (in the order given to [`Self::connect`]).
    pub fn backend<Args>(&self, i: usize) -> Option<RedisQueue<Args>> {
        let range = self.ranges.get(i)?.clone();
        let partitions = self.queues.configs.get(range.clone())?.to_vec();
        let signal = self.hub.signal(partitions.first()?)?;
        Some(RedisQueue::new(
            self.redis.clone(),
            partitions,
            self.names.get(i)?,
            self.process.clone(),
            signal,
            self.queues.finished.get(range)?.to_vec(),
            self.pauses.flag(self.names.get(i)?),
        ))
    }

    /// Each consumed queue's wake-up signal, by short name (the pause watcher rings it on
    /// resume).
    pub fn signals(&self) -> std::collections::HashMap<String, Arc<Signal>> {
        // all partitions of a queue ring one signal: its first partition's
        self.names
            .iter()
            .zip(&self.ranges)
            .filter_map(|(name, range)| {
                let config = self.queues.configs.get(range.start)?;
                Some((name.clone(), self.hub.signal(config)?))
            })
            .collect()
    }

    /// Starts the heartbeat and queue maintenance, until `stop` fires.
    pub fn spawn(
        &self,
        stop: &tokio_util::sync::CancellationToken,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        vec![
            tokio::spawn(liveness::run(
                self.process.clone(),
                self.hub.clone(),
                self.redis.clone(),
                stop.clone(),
            )),
            tokio::spawn(maintenance::run(
                self.target.clone(),
                self.hub.clone(),
                self.queues.clone(),
                self.process.dead_after(),
                stop.clone(),
            )),
        ]
    }

    /// Hands back what this process still holds (what did not finish within the drain
    /// time), deletes its registration and closes the wake-up connections: once the
    /// consumers have stopped.
    pub async fn retire(&mut self) {
        match self.process.retire(&mut self.redis).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(tasks = n, "handed unfinished tasks back to the queues"),
            Err(e) => {
                tracing::warn!(error = %e, "could not hand tasks back; they return when this process is presumed dead")
            }
        }
        self.hub.close();
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}
