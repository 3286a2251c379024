//! The producer contract: `--mode single|bulk|paced|count --n N --batch B [--interval-ms MS]
//! [--kind K]`, pushing through the platform's own push (`shared::queue::push`, what the
//! outbox relay uses) and printing one JSON line.
//! `elapsed_s` covers only the enqueue loop; connecting happens before the timer starts.
use std::time::Duration;

use serde_json::json;
use shared::queue::Outgoing;

use crate::clock::monotonic_ns;
use crate::job::envelope;
use crate::settings::Target;

/// The four producer modes of the harness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// One push per job, each awaited (one MULTI round trip).
    Single,
    /// `--batch` jobs per push: one MULTI per batch (what the outbox relay does).
    Bulk,
    /// One `push` at a time on an absolute schedule `t0 + i·interval`.
    Paced,
    /// Jobs waiting in the queue's keys (ready list + scheduled set).
    Count,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ProducerArgs {
    #[arg(long, value_enum)]
    pub mode: Mode,
    #[arg(long, default_value_t = 20_000)]
    pub n: u64,
    #[arg(long, default_value_t = 1000)]
    pub batch: u64,
    #[arg(long = "interval-ms", default_value_t = 10.0)]
    pub interval_ms: f64,
    #[arg(long, default_value = "booking_confirmation")]
    pub kind: String,
}

/// Runs one producer invocation and returns the JSON line the harness reads.
pub async fn run(target: &Target, args: &ProducerArgs) -> anyhow::Result<serde_json::Value> {
    let config = target.queue_config();
    let mut conn = shared::queue::connect(&target.redis_url).await?;
    if args.mode == Mode::Count {
        let stats = shared::queue::stats(&mut conn, &config).await?;
        return Ok(json!({"mode": "count", "count": stats.waiting}));
    }
    let kind = args.kind.as_str();
    // task ids unique across producer runs (W3 sends warm-up jobs, then measured ones)
    let run = monotonic_ns();
    let task = |seq: u64, enq_ns: u64| -> anyhow::Result<Outgoing> {
        Ok(Outgoing {
            task_id: format!("{run}-{seq}"),
            payload: serde_json::to_vec(&envelope(seq, kind, enq_ns))?,
        })
    };

    let t0 = monotonic_ns();
    match args.mode {
        Mode::Single => {
            for seq in 0..args.n {
                shared::queue::push(&mut conn, &config, &[task(seq, monotonic_ns())?]).await?;
            }
        }
        Mode::Bulk => {
            let batch = args.batch.max(1);
            for start in (0..args.n).step_by(batch as usize) {
                let jobs = (start..(start + batch).min(args.n))
                    .map(|seq| task(seq, monotonic_ns()))
                    .collect::<anyhow::Result<Vec<_>>>()?;
                shared::queue::push(&mut conn, &config, &jobs).await?;
            }
        }
        Mode::Paced => {
            let interval_ns = (args.interval_ms * 1e6) as u64;
            for seq in 0..args.n {
                let due = t0 + seq * interval_ns;
                let now = monotonic_ns();
                if due > now {
                    // A thread sleep keeps to the schedule far better than tokio's 1 ms timer
                    // wheel; nothing else runs on this producer's runtime meanwhile.
                    std::thread::sleep(Duration::from_nanos(due - now));
                }
                shared::queue::push(&mut conn, &config, &[task(seq, monotonic_ns())?]).await?;
            }
        }
        Mode::Count => unreachable!("handled above"),
    }
    let elapsed_s = (monotonic_ns() - t0) as f64 / 1e9;
    let mode = format!("{:?}", args.mode).to_lowercase();
    Ok(json!({"mode": mode, "n": args.n, "elapsed_s": elapsed_s}))
}
