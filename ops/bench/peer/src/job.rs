//! The benchmark job: the same object every peer enqueues, field order and formats fixed by
//! the harness README, wrapped in the platform's own `shared::jobs::Envelope`.
use serde::{Deserialize, Serialize};
use shared::jobs::Envelope;

/// The `kind` of a W3 warm-up job: the handler only counts it.
pub const WARMUP: &str = "warmup";

/// The harness payload (compact JSON, 192–196 bytes).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchJob {
    pub booking_id: String,
    pub kind: String,
    pub recipient: String,
    pub locale: String,
    pub template: String,
    pub seq: u64,
    /// `CLOCK_MONOTONIC` ns read just before the enqueue call (bulk: when built).
    pub enq_ns: u64,
}

impl BenchJob {
    /// Job `seq` of kind `kind`, stamped with `enq_ns`.
    pub fn new(seq: u64, kind: &str, enq_ns: u64) -> Self {
        Self {
            booking_id: format!("BK-{seq:010}"),
            kind: kind.to_owned(),
            recipient: format!("guest.{seq:010}@example-hotel-guests.test"),
            locale: "en-GB".to_owned(),
            template: "confirm_v3".to_owned(),
            seq,
            enq_ns,
        }
    }
}

/// What travels through Redis, exactly as a platform job does. The benchmark has no
/// Postgres row, so `job_id` carries `seq`.
pub type BenchEnvelope = Envelope<BenchJob>;

/// Wraps job `seq` in its envelope.
pub fn envelope(seq: u64, kind: &str, enq_ns: u64) -> BenchEnvelope {
    Envelope {
        job_id: seq as i64,
        args: BenchJob::new(seq, kind, enq_ns),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_has_the_harness_shape_and_size() {
        let json = serde_json::to_string(&BenchJob::new(
            12345,
            "booking_confirmation",
            2_135_524_386_103,
        ))
        .unwrap();
        assert_eq!(
            json,
            r#"{"booking_id":"BK-0000012345","kind":"booking_confirmation","recipient":"guest.0000012345@example-hotel-guests.test","locale":"en-GB","template":"confirm_v3","seq":12345,"enq_ns":2135524386103}"#
        );
        assert!((192..=196).contains(&json.len()), "{} bytes", json.len());
    }
}
