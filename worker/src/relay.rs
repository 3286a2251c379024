//! The outbox relay: moves due job records from Postgres into their Redis queues.
//!
//! It wakes on the `jobs_due` notification that writers send after committing new records
//! (`shared::outbox::notify` / `Waker`; a new booking's emails are in Redis within
//! milliseconds) and polls once a second for records
//! that became due by time (reminders, retries). Claiming uses `for update skip locked` and
//! the push happens inside the claiming transaction: any number of relays can run, none
//! pushes a record another is pushing, and a failed push rolls the claim back.
use std::time::Duration;

use chrono::{DateTime, Utc};
use shared::queue::ConnectionManager;
use shared::{jobs::Envelope, queue, records};
use sqlx::{PgPool, postgres::PgListener};
use tokio_util::sync::CancellationToken;

use crate::{Deps, error::WorkerError, jobs::Registry};

/// Records claimed per round trip.
const BATCH: i64 = 500;

/// A registration younger than this counts as a live worker's: a relay leaves records of
/// queues such a worker runs (a kind newer than this worker, during a rolling deploy).
const LIVE_REGISTRATION: chrono::Duration = chrono::Duration::minutes(10);

/// Pushes every due record of `registry`'s queues; returns how many it pushed.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn relay_due(
    pool: &PgPool,
    redis: &mut ConnectionManager,
    prefix: &str,
    heartbeat: Duration,
    partitions: u32,
    registry: &Registry,
    now: DateTime<Utc>,
) -> Result<usize, WorkerError> {
    let queues = registry.queues();
    let mut total = 0;
    loop {
        let mut tx = pool.begin().await?;
        let rows = records::claim_due(&mut tx, &queues, now, BATCH).await?;
        if rows.is_empty() {
            return Ok(total);
        }
        let count = rows.len();
        // by queue and partition (each partition its own slot on a cluster: one MULTI each)
        let mut by_queue: std::collections::BTreeMap<(String, u32), Vec<queue::Outgoing>> =
            Default::default();
        // counted once the claim commits: a failed push hands nothing to Redis
        let mut enqueued: std::collections::BTreeMap<(&'static str, &'static str), u64> =
            Default::default();
        for records::Claimed {
            id,
            queue: queue_name,
            payload: args,
            pushes,
            run_at,
        } in rows
        {
            if let Some(kind) = registry.kind(&queue_name) {
                *enqueued
                    .entry((kind.queue(), kind.metric_kind_of(&args)))
                    .or_default() += 1;
            }
            let payload = serde_json::to_vec(&Envelope { job_id: id, args })?;
            // the push count makes a re-push after Redis lost its data a new task, never a
            // duplicate id that Redis would silently drop
            let task = queue::Outgoing {
                task_id: format!("{id}.{pushes}"),
                payload,
            };
            metrics::histogram!("outbox_relay_lag_seconds", "queue" => queue_name.clone())
                .record((now - run_at).num_milliseconds().max(0) as f64 / 1000.0);
            by_queue
                .entry((queue_name, queue::partition_of(id, partitions)))
                .or_default()
                .push(task);
        }
        for ((queue_name, partition), tasks) in by_queue {
            let config =
                queue::partition_config(prefix, &queue_name, partition, partitions, heartbeat);
            for chunk in tasks.chunks(500) {
                queue::push(redis, &config, chunk).await?;
            }
            metrics::counter!("outbox_relayed_total", "queue" => queue_name)
                .increment(tasks.len() as u64);
        }
        tx.commit().await?;
        for ((queue, kind), n) in enqueued {
            metrics::counter!("jobs_enqueued_total", "queue" => queue, "kind" => kind).increment(n);
        }
        total += count;
        if count < BATCH as usize {
            return Ok(total);
        }
    }
}

/// Dead-letters due records whose queue no worker registered; returns how many.
pub async fn dead_letter_unroutable(
    pool: &PgPool,
    queues: &[String],
    now: DateTime<Utc>,
) -> Result<usize, WorkerError> {
    let dead = records::dead_letter_unroutable(pool, queues, now, now - LIVE_REGISTRATION).await?;
    for (job_id, queue) in &dead {
        tracing::error!(job_id, queue = %queue, "no handler is registered for this queue: dead-lettered");
    }
    if !dead.is_empty() {
        metrics::counter!("jobs_unroutable_total").increment(dead.len() as u64);
    }
    Ok(dead.len())
}

/// Runs the relay until `stop` fires.
pub async fn run(deps: Deps, stop: CancellationToken) {
    let mut listener = None;
    let mut redis: Option<ConnectionManager> = None;
    loop {
        if stop.is_cancelled() {
            return;
        }
        if listener.is_none() {
            listener = match PgListener::connect_with(&deps.pool).await {
                Ok(mut l) => match l.listen(shared::outbox::NOTIFY_CHANNEL).await {
                    Ok(()) => Some(l),
                    Err(e) => {
                        tracing::warn!(error = %e, "relay cannot listen; polling");
                        None
                    }
                },
                Err(e) => {
                    tracing::warn!(error = %e, "relay cannot connect to listen; polling");
                    None
                }
            };
        }
        if redis.is_none() {
            redis = queue::connect(&deps.config.redis()).await.inspect_err(|e| {
                tracing::warn!(error = %e, "relay cannot reach redis; records stay in the outbox");
            }).ok();
        }
        let queues = deps.registry.queues();
        if let Err(e) = dead_letter_unroutable(&deps.pool, &queues, deps.clock.now()).await {
            tracing::warn!(error = %e, "could not check for records without a handler");
        }
        if let Some(conn) = redis.as_mut() {
            let heartbeat = Duration::from_secs(deps.config.heartbeat_secs);
            match relay_due(
                &deps.pool,
                conn,
                &deps.config.queue_prefix,
                heartbeat,
                deps.config.queue_partitions,
                &deps.registry,
                deps.clock.now(),
            )
            .await
            {
                Ok(n) if n > 0 => tracing::debug!(relayed = n, "relayed due jobs"),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "relay round failed; records stay in the outbox");
                    metrics::counter!("outbox_relay_errors_total").increment(1);
                    if matches!(e, WorkerError::Redis(_) | WorkerError::Queue(_)) {
                        redis = None;
                    }
                }
            }
        }
        // wait for a notification, the poll tick, or the stop signal
        let wait = async {
            match listener.as_mut() {
                Some(l) => match tokio::time::timeout(deps.relay_poll, l.recv()).await {
                    Ok(Ok(_)) => {
                        // under load many are queued: take them all and relay once
                        while l.next_buffered().is_some() {}
                    }
                    Ok(Err(_)) => {
                        listener = None;
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Err(_) => {}
                },
                None => tokio::time::sleep(deps.relay_poll).await,
            }
        };
        tokio::select! {
            _ = wait => {}
            _ = stop.cancelled() => return,
        }
    }
}
