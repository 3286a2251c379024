//! Job definitions: what each kind of asynchronous work carries and the stable queue name
//! it travels on. Only ids and small values: the worker reads current state when it runs.
//!
//! Executing a job is the worker's business; anyone may enqueue one through
//! [`crate::outbox`].
use serde::{Serialize, de::DeserializeOwned};

pub mod booking_email;
pub mod scheduled;
pub mod search_rollup;

pub use booking_email::{BookingEmail, EmailKind, Party};
pub use scheduled::ScheduledRun;

/// Arguments of one kind of job.
pub trait JobArgs: Serialize + DeserializeOwned + Send + Sync + Unpin + 'static {
    /// The stable wire name of the queue; renaming the Rust type never orphans queued jobs.
    const QUEUE: &'static str;

    /// What this job *is*: a second enqueue with the same key is a no-op.
    fn dedupe_key(&self) -> String;
}

/// What travels through Redis: the durable record's id and the typed arguments.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Envelope<A> {
    /// Id of the row in `jobs`, the durable record of this work.
    pub job_id: i64,
    pub args: A,
}

/// Every queue the worker consumes, for the relay, the stats and the dashboard.
pub const ALL_QUEUES: &[&str] = &[BookingEmail::QUEUE, ScheduledRun::QUEUE];
