//! `CLOCK_MONOTONIC` in nanoseconds, the one clock every peer's producer and handler share
//! (Python `time.monotonic_ns()`, Node `process.hrtime.bigint()`). `Instant` cannot be
//! serialised, so the harness contract asks for `clock_gettime` directly.

/// Nanoseconds on `CLOCK_MONOTONIC`.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    debug_assert_eq!(rc, 0);
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// What `tokio::time::sleep(sleep)` really takes on this runtime and machine: `tasks` tasks
/// sleeping `rounds` times each, concurrently, as W4's handlers do. Returns the mean in ns.
///
/// W4's ideal assumes a sleep of exactly `sleep`; tokio's timer wheel has 1 ms slots and
/// rounds every deadline up, so no peer on this runtime can reach the ideal. This measures
/// the ceiling the harness contract (`tokio::time::sleep`) leaves.
pub async fn mean_sleep_ns(sleep: std::time::Duration, tasks: usize, rounds: usize) -> u64 {
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            tokio::spawn(async move {
                let mut total = 0u64;
                for _ in 0..rounds {
                    let start = monotonic_ns();
                    tokio::time::sleep(sleep).await;
                    total += monotonic_ns() - start;
                }
                total
            })
        })
        .collect();
    let (mut total, mut sleeps) = (0u64, 0u64);
    for handle in handles {
        // a task that failed contributes nothing rather than zeros
        if let Ok(sum) = handle.await {
            total += sum;
            sleeps += rounds as u64;
        }
    }
    total / sleeps.max(1)
}
