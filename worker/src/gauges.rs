//! Gauges of what *is*, sampled every few seconds: the job backlog per queue and state as
//! Postgres records it (the truth, where Redis' own view is `maintenance`'s `queue_*`
//! gauges), the outbox lag and this worker's database pools. Redis' memory and clients
//! ([`sample_redis`]) are read when `/metrics` is scraped, with the queue gauges: a worker
//! at rest sends Redis nothing on a timer but its heartbeat.
//!
//! Sampled on a timer rather than at scrape time so that a slow database never makes a
//! scrape time out, and so that any number of scrapers costs one query per period. Every
//! worker replica samples the same Postgres state: dashboards and alerts take `max` over
//! instances.
use std::{collections::BTreeSet, time::Duration};

use chrono::{DateTime, Utc};
use shared::queue::ConnectionManager;
use shared::records;
use tokio_util::sync::CancellationToken;

use crate::{Deps, telemetry::RECORD_STATES};

/// How often the gauges are refreshed: well inside a 15 s scrape interval.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// The longest one sample may take before it is abandoned until the next period.
const SAMPLE_TIMEOUT: Duration = Duration::from_secs(4);

/// Samples the gauges every [`SAMPLE_EVERY`] until `stop` fires, the first time at once.
pub async fn run(deps: Deps, stop: CancellationToken) {
    let mut seen = BTreeSet::new();
    loop {
        shared::telemetry::record_pool("main", &deps.pool);
        shared::telemetry::record_pool("durable", &deps.durable);
        match tokio::time::timeout(SAMPLE_TIMEOUT, sample_backlog(&deps, &mut seen)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "could not sample the job backlog"),
            Err(_) => tracing::warn!("sampling the job backlog timed out"),
        }
        tokio::select! {
            _ = tokio::time::sleep(SAMPLE_EVERY) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// Publishes `job_records`, `job_oldest_waiting_age_seconds` and `outbox_lag_seconds` for
/// every registered queue, every queue holding records, and every queue `seen` before (so a
/// queue whose last record was purged reads 0, not its last value).
pub async fn sample_backlog(deps: &Deps, seen: &mut BTreeSet<String>) -> Result<(), sqlx::Error> {
    let now = deps.clock.now();
    let rows = records::backlog(&deps.pool, now).await?;
    seen.extend(deps.registry.queues());
    seen.extend(rows.iter().map(|r| r.queue.clone()));
    for queue in seen.iter() {
        let row = rows
            .iter()
            .find(|r| &r.queue == queue)
            .cloned()
            .unwrap_or_default();
        let counts = [row.due, row.scheduled, row.enqueued, row.running, row.dead];
        for (state, count) in RECORD_STATES.iter().zip(counts) {
            metrics::gauge!("job_records", "queue" => queue.clone(), "state" => *state)
                .set(count as f64);
        }
        metrics::gauge!("job_oldest_waiting_age_seconds", "queue" => queue.clone())
            .set(age(now, row.oldest_waiting));
        metrics::gauge!("outbox_lag_seconds", "queue" => queue.clone())
            .set(age(now, row.oldest_due));
    }
    Ok(())
}

/// Seconds since `since` at `now`; 0 for none (or one in the future).
fn age(now: DateTime<Utc>, since: Option<DateTime<Utc>>) -> f64 {
    since
        .map(|t| (now - t).num_milliseconds().max(0) as f64 / 1000.0)
        .unwrap_or(0.0)
}

/// Publishes Redis' memory, clients and command count from one `INFO`.
pub async fn sample_redis(conn: &mut ConnectionManager) -> Result<(), redis::RedisError> {
    let info: String = redis::cmd("INFO").query_async(conn).await?;
    let info = parse_info(&info);
    let field = |name: &str| info.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
    if let Some(used) = field("used_memory") {
        metrics::gauge!("redis_memory_used_bytes").set(used);
    }
    // absent on some managed Redis services: "no limit we can see", like 0
    metrics::gauge!("redis_memory_max_bytes").set(field("maxmemory").unwrap_or(0.0));
    if let Some(clients) = field("connected_clients") {
        metrics::gauge!("redis_connected_clients").set(clients);
    }
    if let Some(commands) = field("total_commands_processed") {
        metrics::counter!("redis_commands_processed_total").absolute(commands as u64);
    }
    Ok(())
}

/// The numeric `name:value` fields of an `INFO` reply.
fn parse_info(info: &str) -> Vec<(&str, f64)> {
    info.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (name, value) = line.trim().split_once(':')?;
            Some((name, value.parse::<f64>().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_fields_are_read_by_name_and_text_ignored() {
        let info = "# Memory\r\nused_memory:1048576\r\nused_memory_human:1.00M\r\n\
                    maxmemory:4194304\r\n# Clients\r\nconnected_clients:7\r\n";
        let fields = parse_info(info);
        assert_eq!(
            fields,
            [
                ("used_memory", 1_048_576.0),
                ("maxmemory", 4_194_304.0),
                ("connected_clients", 7.0)
            ]
        );
    }

    #[test]
    fn ages_are_never_negative() {
        let now = Utc::now();
        assert_eq!(age(now, None), 0.0);
        assert_eq!(age(now, Some(now + chrono::Duration::seconds(5))), 0.0);
        assert_eq!(
            age(now, Some(now - chrono::Duration::milliseconds(1500))),
            1.5
        );
    }
}
