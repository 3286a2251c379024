//! Job definitions: what each kind of asynchronous work carries and the stable queue name
//! it travels on. Only ids and small values: the worker reads current state when it runs.
//! One module per kind; the worker's registry (`worker/src/jobs/mod.rs`) pairs each with its
//! handler, and is the one list of kinds.
//!
//! Executing a job is the worker's business; anyone may enqueue one through
//! [`crate::outbox`].
use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Serialize, de::DeserializeOwned};

pub mod booking_email;
pub mod data_export;
pub mod erasure;
pub mod export_ready_email;
pub mod retention_sweep;
pub mod search_rollup;

pub use booking_email::{BookingEmail, EmailKind, Party};
pub use data_export::DataExport;
pub use erasure::Erasure;
pub use export_ready_email::ExportReadyEmail;
pub use retention_sweep::RetentionSweep;
pub use search_rollup::SearchRollup;

/// Arguments of one kind of job.
pub trait JobArgs: Serialize + DeserializeOwned + Send + Sync + Unpin + 'static {
    /// The stable wire name of the queue; renaming the Rust type never orphans queued jobs.
    const QUEUE: &'static str;

    /// Every value [`JobArgs::metric_kind`] returns, so that each series of the kind exists
    /// at zero from start-up (a counter born at its first increment hides that increment
    /// from `rate()` and `increase()`).
    const METRIC_KINDS: &'static [&'static str] = &[Self::QUEUE];

    /// What this job *is*: a second enqueue with the same key is a no-op.
    fn dedupe_key(&self) -> String;

    /// The `kind` label of this job's metrics: a bounded sub-kind within its queue (which
    /// email a booking email sends), or the queue itself. Never an id.
    fn metric_kind(&self) -> &'static str {
        Self::QUEUE
    }
}

/// A kind a schedule enqueues: its arguments follow from the slot it fires for.
pub trait Periodic: JobArgs {
    /// The arguments of the run for the slot at local wall-clock `local` (in the schedule's
    /// zone), firing at `at`.
    fn for_slot(local: NaiveDateTime, at: DateTime<Utc>) -> Self;
}

/// What travels through Redis: the durable record's id and the typed arguments.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Envelope<A> {
    /// Id of the row in `jobs`, the durable record of this work.
    pub job_id: i64,
    pub args: A,
}
