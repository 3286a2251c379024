//! Job kinds and their execution. A kind is its args (`shared/src/jobs/<kind>.rs`), its
//! [`Handler`] here (`jobs/<kind>.rs`) and one line in [`registry`]: the registry is the one
//! list of kinds, read by the consumers, the relay, the reconciler and maintenance, and
//! published to Postgres for the admin views.
//!
//! Every delivery runs the same envelope ([`execute`]): decode, begin an attempt on the
//! durable record, run the handler under its timeout, record the outcome. Every outcome is
//! recorded in Postgres and the Redis task acknowledged, so Redis never retries by itself;
//! retries, the attempt cap and the dead letters are ours, by the handler's policy. Every
//! step is counted by queue and kind (`crate::telemetry` describes the series).
pub mod booking_email;
pub mod data_export;
pub mod erasure;
pub mod export_ready_email;
pub mod retention_sweep;
pub mod search_rollup;

use std::{future::Future, panic::AssertUnwindSafe, pin::Pin, sync::Arc, time::Duration};

use apalis::prelude::BoxDynError;
use futures::FutureExt;
use shared::{
    config::Config,
    jobs::JobArgs,
    records::{self, Ending},
};
use tracing::Instrument;

use crate::{Deps, error::WorkerError, records::Outcome};

/// Every job kind this worker runs: one line each.
pub fn registry() -> Registry {
    Registry::new()
        .register(booking_email::BookingEmailJob)
        .register(search_rollup::SearchRollupJob)
        .register(retention_sweep::RetentionSweepJob)
        .register(data_export::DataExportJob)
        .register(export_ready_email::ExportReadyEmailJob)
        .register(erasure::ErasureJob)
}

/// The kinds a worker started with `config` runs: [`registry`] and any benchmark queues.
pub fn configured(config: &Config) -> Registry {
    registry().with_bench_queues(config.bench_extra_queues)
}

/// The attempt a handler runs in.
#[derive(Debug, Clone, Copy)]
pub struct JobRun {
    /// The id of the job's durable record.
    pub id: i64,
    /// This attempt's number, from 1.
    pub attempt: i32,
}

/// How one kind of job is done, with its policy next to the work.
pub trait Handler: Send + Sync + 'static {
    /// What the job carries; its `QUEUE` is the kind's stable name.
    type Args: JobArgs;

    /// How many jobs of this kind one worker process runs at once.
    fn concurrency(&self, _config: &Config) -> usize {
        4
    }

    /// Attempts before a failing job becomes a dead letter.
    fn max_attempts(&self) -> i32 {
        8
    }

    /// The delay before retry number `attempt` (1-based).
    fn backoff(&self, attempt: i32) -> chrono::Duration {
        crate::records::backoff(attempt)
    }

    /// How long one attempt may run before it is cut off and retried.
    fn timeout(&self) -> Duration {
        Duration::from_secs(300)
    }

    /// Does the work of one delivery. Idempotent: a delivery may repeat.
    fn work(
        &self,
        deps: &Deps,
        run: JobRun,
        args: Self::Args,
    ) -> impl Future<Output = Result<Outcome, WorkerError>> + Send;
}

/// A registered kind, its type erased: what the worker loops hold.
pub trait Kind: Send + Sync + 'static {
    fn queue(&self) -> &'static str;
    fn concurrency(&self, config: &Config) -> usize;
    fn max_attempts(&self) -> i32;
    fn timeout(&self) -> Duration;
    /// Every `kind` label value of this kind's metrics.
    fn metric_kinds(&self) -> &'static [&'static str];
    /// The `kind` label of a record's encoded arguments (what the relay sees).
    fn metric_kind_of(&self, args: &serde_json::Value) -> &'static str;
    /// Runs one delivery of an encoded envelope.
    fn deliver(
        self: Arc<Self>,
        deps: Deps,
        raw: serde_json::Value,
    ) -> Pin<Box<dyn Future<Output = Result<(), BoxDynError>> + Send>>;
}

struct Registered<H>(Arc<H>);

impl<H: Handler> Kind for Registered<H> {
    fn queue(&self) -> &'static str {
        H::Args::QUEUE
    }

    fn concurrency(&self, config: &Config) -> usize {
        self.0.concurrency(config).max(1)
    }

    fn max_attempts(&self) -> i32 {
        self.0.max_attempts().max(1)
    }

    fn timeout(&self) -> Duration {
        self.0.timeout()
    }

    fn metric_kinds(&self) -> &'static [&'static str] {
        H::Args::METRIC_KINDS
    }

    fn metric_kind_of(&self, args: &serde_json::Value) -> &'static str {
        // decoding borrows the value: no copy of the payload per relayed record
        <H::Args as serde::Deserialize>::deserialize(args)
            .map(|args| args.metric_kind())
            .unwrap_or(UNDECODABLE)
    }

    fn deliver(
        self: Arc<Self>,
        deps: Deps,
        raw: serde_json::Value,
    ) -> Pin<Box<dyn Future<Output = Result<(), BoxDynError>> + Send>> {
        Box::pin(execute(self.0.clone(), deps, raw))
    }
}

/// The job kinds of one worker process.
#[derive(Clone, Default)]
pub struct Registry {
    kinds: Vec<Arc<dyn Kind>>,
}

impl Registry {
    pub fn new() -> Self {
        Registry::default()
    }

    /// Adds a kind. Registering one queue twice is a programming error, caught at start-up.
    pub fn register<H: Handler>(mut self, handler: H) -> Self {
        assert!(
            self.kind(H::Args::QUEUE).is_none(),
            "job kind {} registered twice",
            H::Args::QUEUE
        );
        self.kinds.push(Arc::new(Registered(Arc::new(handler))));
        self
    }

    pub fn kinds(&self) -> &[Arc<dyn Kind>] {
        &self.kinds
    }

    pub fn kind(&self, queue: &str) -> Option<&Arc<dyn Kind>> {
        self.kinds.iter().find(|k| k.queue() == queue)
    }

    /// The queue of every registered kind.
    pub fn queues(&self) -> Vec<String> {
        self.kinds.iter().map(|k| k.queue().to_string()).collect()
    }

    /// Adds `count` throwaway queues, `bench_extra_0` ..., whose jobs are acknowledged and
    /// do nothing: `ops/bench/idle` measures with them what one more queue costs at rest.
    pub fn with_bench_queues(mut self, count: usize) -> Self {
        for n in 0..count {
            // leaked once at start-up, for the life of the process: a kind's queue name is
            // `&'static str` everywhere else (a `JobArgs::QUEUE` constant)
            let queue: &'static str = Box::leak(format!("bench_extra_{n}").into_boxed_str());
            assert!(self.kind(queue).is_none(), "{queue} registered twice");
            self.kinds.push(Arc::new(BenchQueue(queue)));
        }
        self
    }
}

/// A throwaway queue of [`Registry::with_bench_queues`].
struct BenchQueue(&'static str);

impl Kind for BenchQueue {
    fn queue(&self) -> &'static str {
        self.0
    }

    fn concurrency(&self, _config: &Config) -> usize {
        1
    }

    fn max_attempts(&self) -> i32 {
        1
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(1)
    }

    fn metric_kinds(&self) -> &'static [&'static str] {
        &[]
    }

    fn metric_kind_of(&self, _args: &serde_json::Value) -> &'static str {
        "bench"
    }

    fn deliver(
        self: Arc<Self>,
        _deps: Deps,
        _raw: serde_json::Value,
    ) -> Pin<Box<dyn Future<Output = Result<(), BoxDynError>> + Send>> {
        Box::pin(std::future::ready(Ok(())))
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.kinds.iter().map(|k| k.queue()))
            .finish()
    }
}

/// The `kind` label of a job whose arguments do not decode (it becomes a dead letter).
pub const UNDECODABLE: &str = "undecodable";

/// Runs one delivery of a job of `handler`'s kind.
async fn execute<H: Handler>(
    handler: Arc<H>,
    deps: Deps,
    raw: serde_json::Value,
) -> Result<(), BoxDynError> {
    let queue = H::Args::QUEUE;
    let Some(job_id) = raw.get("job_id").and_then(serde_json::Value::as_i64) else {
        // nothing durable to record against: acknowledge it so it does not loop in Redis
        tracing::error!(queue, "undecodable envelope dropped to the redis dead set");
        metrics::counter!("jobs_poison_total", "queue" => queue).increment(1);
        return Err(apalis::prelude::AbortError::new("envelope without job_id").into());
    };
    let span = tracing::info_span!(
        "job",
        queue,
        job_id,
        attempt = tracing::field::Empty,
        booking_id = tracing::field::Empty,
        schedule = tracing::field::Empty
    );
    let attempt = async move {
        let args = raw
            .get("args")
            .cloned()
            .map(serde_json::from_value::<H::Args>);
        let kind = match &args {
            Some(Ok(args)) => args.metric_kind(),
            _ => UNDECODABLE,
        };
        let Some(attempt) = records::begin(&deps.pool, job_id, handler.max_attempts()).await?
        else {
            tracing::info!("duplicate delivery of a finished job: nothing to do");
            metrics::counter!("jobs_duplicate_deliveries_total", "queue" => queue).increment(1);
            return Ok::<(), BoxDynError>(());
        };
        tracing::Span::current().record("attempt", attempt.number);
        metrics::counter!("jobs_started_total", "queue" => queue, "kind" => kind).increment(1);
        metrics::histogram!("job_wait_duration_seconds", "queue" => queue, "kind" => kind)
            .record(attempt.wait.num_milliseconds() as f64 / 1000.0);
        let started = std::time::Instant::now();
        let outcome = if attempt.number > attempt.max {
            Outcome::Dead(format!(
                "attempts exhausted ({} of {})",
                attempt.number - 1,
                attempt.max
            ))
        } else {
            match args {
                Some(Ok(args)) => {
                    let run = JobRun {
                        id: job_id,
                        attempt: attempt.number,
                    };
                    let timeout = handler.timeout();
                    let work = AssertUnwindSafe(handler.work(&deps, run, args)).catch_unwind();
                    match tokio::time::timeout(timeout, work).await {
                        Ok(Ok(Ok(outcome))) => outcome,
                        Ok(Ok(Err(e))) => Outcome::Retry(e.to_string()),
                        Ok(Err(_)) => Outcome::Dead("handler panicked".into()),
                        Err(_) => Outcome::Retry(format!(
                            "attempt timed out after {} s",
                            timeout.as_secs()
                        )),
                    }
                }
                Some(Err(e)) => Outcome::Dead(format!("undecodable arguments: {e}")),
                None => Outcome::Dead("envelope without arguments".into()),
            }
        };
        let ending = match &outcome {
            Outcome::Recorded => None,
            Outcome::Done => Some(Ending::Done),
            Outcome::Skipped(reason) => Some(Ending::Skipped(reason.clone())),
            Outcome::Defer { until, reason } => Some(Ending::Defer {
                until: *until,
                reason: reason.clone(),
            }),
            Outcome::Retry(error) if attempt.number < attempt.max => Some(Ending::Retry {
                error: error.clone(),
                at: deps.clock.now() + handler.backoff(attempt.number),
            }),
            Outcome::Retry(error) | Outcome::Dead(error) => Some(Ending::Dead(error.clone())),
        };
        if let Some(ending) = &ending {
            records::finish(&deps.pool, job_id, attempt, ending).await?;
        }
        metrics::histogram!("job_run_duration_seconds", "queue" => queue, "kind" => kind)
            .record(started.elapsed().as_secs_f64());
        count_ending(queue, kind, ending.as_ref());
        match &outcome {
            Outcome::Done | Outcome::Recorded => tracing::info!("job done"),
            Outcome::Skipped(reason) => tracing::info!(reason = %reason, "job skipped"),
            Outcome::Retry(error) if attempt.number < attempt.max => {
                tracing::warn!(error = %error, "job failed; retry scheduled")
            }
            Outcome::Defer { until, reason } => {
                tracing::info!(until = %until, reason = %reason, "job deferred")
            }
            Outcome::Retry(error) | Outcome::Dead(error) => {
                tracing::error!(error = %error, "job dead")
            }
        }
        Ok(())
    }
    .instrument(span);
    // An attempt runs to its recorded outcome even if apalis drops this future (a worker
    // restarted after a Redis error, a timeout): cancelled between the SMTP server's
    // acceptance and the ledger write, it would leave an email to be sent twice.
    match tokio::spawn(attempt).await {
        Ok(result) => result,
        Err(e) => Err(format!("job task failed: {e}").into()),
    }
}

/// Counts how an attempt ended (`None`: done, recorded by the handler itself). A failure
/// counts as failed and as retried or dead-lettered, so that the failure rate is one ratio.
fn count_ending(queue: &'static str, kind: &'static str, ending: Option<&Ending>) {
    let count = |name: &'static str| {
        metrics::counter!(name, "queue" => queue, "kind" => kind).increment(1);
    };
    match ending {
        None | Some(Ending::Done) => count("jobs_succeeded_total"),
        Some(Ending::Skipped(_)) => count("jobs_skipped_total"),
        Some(Ending::Defer { .. }) => count("jobs_deferred_total"),
        Some(Ending::Retry { .. }) => {
            count("jobs_failed_total");
            count("jobs_retried_total");
        }
        Some(Ending::Dead(_)) => {
            count("jobs_failed_total");
            count("jobs_dead_lettered_total");
        }
    }
}
