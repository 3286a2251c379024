//! The vocabulary and seams every InstaInstru binary shares: configuration, the clock,
//! database access, job definitions, the outbox that enqueues them and the records of their
//! progress, which emails a booking write records, the Redis queue
//! plumbing, email rendering and sending, search analytics partitions, and telemetry.
pub mod audit;
pub mod booking_emails;
pub mod clock;
pub mod config;
pub mod db;
pub mod domain;
pub mod email;
pub mod error;
pub mod jobs;
pub mod outbox;
pub mod pauses;
pub mod queue;
pub mod records;
pub mod retention;
pub mod schedule;
pub mod search;
pub mod shutdown;
pub mod telemetry;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
