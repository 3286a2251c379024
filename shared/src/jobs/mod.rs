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
pub mod retention_sweep;
pub mod search_rollup;

pub use booking_email::{BookingEmail, EmailKind, Party};
pub use retention_sweep::RetentionSweep;
pub use search_rollup::SearchRollup;

/// Arguments of one kind of job.
pub trait JobArgs: Serialize + DeserializeOwned + Send + Sync + Unpin + 'static {
    /// The stable wire name of the queue; renaming the Rust type never orphans queued jobs.
    const QUEUE: &'static str;

    /// What this job *is*: a second enqueue with the same key is a no-op.
    fn dedupe_key(&self) -> String;
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
