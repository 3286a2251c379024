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
