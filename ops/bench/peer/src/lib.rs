//! The `instainstru` peer of the side-by-side queue benchmark (../shared/bench/peers).
//!
//! It drives the platform's real transport (`shared::queue`'s push and key layout, the
//! worker's own apalis 1.0 backend `::worker::backend`) behind the harness's two contracts:
//! - [`producer`]: `--mode single|bulk|paced|count`, pushing `Envelope<BenchJob>` through
//!   `shared::queue::push` (what the outbox relay uses) and printing one JSON line;
//! - [`worker`]: an apalis `Monitor` + `WorkerBuilder` whose handler follows the completion
//!   protocol ([`protocol`]) exactly, until SIGTERM.
//!
//! Nothing here is used by the platform itself; it only measures it.
pub mod clock;
pub mod job;
pub mod producer;
pub mod protocol;
pub mod settings;
pub mod worker;
