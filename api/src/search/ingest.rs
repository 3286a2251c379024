//! Recording search events: exactly one event per `search_id`, the searcher's history
//! upserted in the same transaction, written in batches.
//!
//! Why batches: an event costs a handful of statements and a commit, and a commit waits for
//! the WAL flush. A batch is one call of `search_record_events` (migration 0013), whose
//! statements are those below: one round trip and one implicit transaction. Requests hand their validated event to a queue; a few writer tasks each
//! take whatever is waiting (up to [`MAX_BATCH`]) and write it in one transaction, and every
//! request is answered only after the transaction holding its event committed. An idle API
//! writes a batch of one and adds no wait; a busy one shares each commit among the requests
//! that arrived during the previous one (group commit), which is what lets ingestion keep
//! up with what Postgres alone sustains (ops/bench/search). A writer that finds only a few
//! waiting waits a moment for more ([`LINGER`]), so that each call's fixed cost is shared by
//! more events.
//!
//! Exactly once: `search_ids` (not partitioned, unique on search_id) is inserted first with
//! `on conflict do nothing`, in search_id order so that two batches never wait on each
//! other in a cycle; an event is written only for the identities that insert created. A
//! repeated search_id answers the original event. A user whose account is closed (erased
//! since their token was issued) has nothing written: the batch checks the accounts of its
//! users itself (migration 0015), so a request hands over its event without a query of its
//! own. One bad event must not fail the rest of its batch: a batch that fails for any reason
//! but an unreachable database is written again one event per transaction.
//!
//! History: per searcher, the ten most recent distinct normalized queries. The upsert on the
//! normalized query makes concurrent identical searches one row without a duplicate-key
//! error; an advisory lock per searcher (taken in key order) makes the trim to ten see every
//! concurrent upsert of that searcher, so no searcher ever keeps more than ten.
use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio::sync::{Mutex, mpsc, oneshot};
use uuid::Uuid;

use super::{client::UaClass, searcher::Searcher};
use crate::error::{ApiError, ApiResult};

/// The most events written in one transaction.
pub const MAX_BATCH: usize = 256;
/// The stripes of a day's query counts (migration 0013).
const STRIPES: usize = 16;
/// Events waiting for a writer before requests wait to hand theirs over.
const QUEUE_CAPACITY: usize = 4096;
/// How long a writer that found a few events waiting (more than one, fewer than
/// [`LINGER_BELOW`]) waits for more before it writes them; tokio's timers tick by the
/// millisecond, so this is 2-3 ms. Why: a call of `search_record_events` has a fixed cost
/// of about 0.7 ms whatever its size, and at 5,500 events/s the writers, taking only what
/// was waiting, wrote batches of 5-11 events, so the fixed cost was over half of what
/// Postgres spent on an event. Waiting for more makes batches of 15-18, and Postgres spends
/// 111-128 us per event instead of 142-188 at 5,500/s (ops/bench/search-load, 100,000-event
/// days, ten paired runs in ops/bench/results/search-linger-ab-2026-12-04T1944Z.txt): a
/// fifth to a third less of the database for the same events. The wait is paid by every
/// request of a busy api (p50 7.5-10.3 ms against 4.0-8.8), and it does not lower p99:
/// 12.9-15.2 ms against 7.6-18.3 on a quiet machine, 17.1-22.4 against 16.8-20.9 with
/// another process taking half or three quarters of a core. A single event waiting is
/// written at once: a quiet api adds no wait.
const LINGER: Duration = Duration::from_millis(2);
/// The batch size from which a writer does not wait for more.
const LINGER_BELOW: usize = 32;
/// History entries kept per searcher.
pub const HISTORY_KEPT: i64 = 10;

/// A validated search event, ready to write.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub search_id: Uuid,
    pub searcher: Searcher,
    pub query: String,
    pub normalized_query: String,
    pub result_count: i32,
    pub filters: Option<serde_json::Value>,
    pub shown: Option<serde_json::Value>,
    pub ip_hash: Option<Vec<u8>>,
    pub ua_class: UaClass,
    pub searched_at: DateTime<Utc>,
}

/// What became of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Written now.
    Created { id: i64 },
    /// Its search_id was already recorded, by the same searcher: the original event.
    Repeated { id: i64 },
    /// Its search_id belongs to another searcher's event.
    Taken,
    /// Its user's account is closed: nothing was written.
    Closed,
}

struct Pending {
    event: NewEvent,
    reply: oneshot::Sender<ApiResult<Recorded>>,
}

/// The handle requests record events through; cheap to clone.
#[derive(Clone, Debug)]
pub struct Ingest {
    queue: mpsc::Sender<Pending>,
}

impl Ingest {
    /// Writer tasks per api process: one per core of the machine this was measured on. More
    /// writers wait on each other inside Postgres (the same users' rows, the same searchers'
    /// locks): at 5,500 events/s offered (ops/bench/search, 100,000-event day) Postgres spent
    /// 175-215 us per event with four writers (six runs), 156-186 us with two (four runs) and
    /// 133-144 us with one (four runs); but one writer leaves a single transaction in flight,
    /// so a slow commit holds up every request.
    pub const WRITERS: usize = 2;

    /// Starts `writers` writer tasks on `pool`; they end when the last handle is dropped.
    pub fn start(pool: PgPool, writers: usize) -> Self {
        let (queue, receiver) = mpsc::channel(QUEUE_CAPACITY);
        let receiver = Arc::new(Mutex::new(receiver));
        // each writer adds to its own stripe of the day's query counts (migration 0013), so
        // that two writers never wait on one popular query's row; another api process most
        // likely starts elsewhere in the 16
        let first_stripe = (Uuid::new_v4().as_u128() % STRIPES as u128) as usize;
        for i in 0..writers.max(1) {
            let stripe = ((first_stripe + i) % STRIPES) as i16;
            tokio::spawn(write_loop(pool.clone(), receiver.clone(), stripe));
        }
        Self { queue }
    }

    /// Records `event` and answers once its transaction committed.
    pub async fn record(&self, event: NewEvent) -> ApiResult<Recorded> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Pending { event, reply })
            .await
            .map_err(|_| ApiError::Unavailable("search event writers stopped".into()))?;
        answer
            .await
            .map_err(|_| ApiError::Internal("search event writer dropped an event".into()))?
    }
}

async fn write_loop(pool: PgPool, receiver: Arc<Mutex<mpsc::Receiver<Pending>>>, stripe: i16) {
    loop {
        // the other writer waits for the lock meanwhile, so it cannot split the batch
        let Some(batch) = gather(&mut *receiver.lock().await).await else {
            return;
        };
        metrics::histogram!("search_event_batch_size").record(batch.len() as f64);
        let started = std::time::Instant::now();
        write_and_answer(&pool, batch, stripe).await;
        metrics::histogram!("search_event_batch_seconds").record(started.elapsed().as_secs_f64());
    }
}

/// The next batch: the first event to arrive and whatever is waiting behind it (up to
/// [`MAX_BATCH`]); when that is more than one event and fewer than [`LINGER_BELOW`], what
/// else arrives within [`LINGER`] too. `None` once every sender is gone.
async fn gather<T>(receiver: &mut mpsc::Receiver<T>) -> Option<Vec<T>> {
    let first = receiver.recv().await?;
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH {
        match receiver.try_recv() {
            Ok(next) => batch.push(next),
            Err(_) => break,
        }
    }
    if batch.len() > 1 && batch.len() < LINGER_BELOW {
        let deadline = tokio::time::Instant::now() + LINGER;
        while batch.len() < LINGER_BELOW {
            match tokio::time::timeout_at(deadline, receiver.recv()).await {
                Ok(Some(next)) => batch.push(next),
                // the wait is over, or every sender is gone: write what there is
                _ => break,
            }
        }
    }
    Some(batch)
}

async fn write_and_answer(pool: &PgPool, batch: Vec<Pending>, stripe: i16) {
    let events: Vec<&NewEvent> = batch.iter().map(|p| &p.event).collect();
    match write(pool, &events, stripe).await {
        Ok(outcomes) => {
            for (pending, outcome) in batch.into_iter().zip(outcomes) {
                answer(pending, Ok(outcome));
            }
        }
        Err(e) if unreachable_database(&e) => {
            for pending in batch {
                answer(
                    pending,
                    Err(ApiError::Unavailable(format!("database: {e}"))),
                );
            }
        }
        Err(e) if batch.len() == 1 => {
            if let Some(pending) = batch.into_iter().next() {
                answer(pending, Err(ApiError::from(e)));
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, size = batch.len(), "search event batch failed; writing its events one by one");
            for pending in batch {
                let outcome = write(pool, &[&pending.event], stripe)
                    .await
                    .map_err(ApiError::from)
                    .and_then(|mut outcomes| {
                        outcomes
                            .pop()
                            .ok_or_else(|| ApiError::Internal("no outcome for an event".into()))
                    });
                answer(pending, outcome);
            }
        }
    }
}

fn answer(pending: Pending, outcome: ApiResult<Recorded>) {
    let label = match &outcome {
        Ok(Recorded::Created { .. }) => "created",
        Ok(Recorded::Repeated { .. }) => "repeated",
        Ok(Recorded::Taken) => "taken",
        Ok(Recorded::Closed) => "closed",
        Err(_) => "failed",
    };
    metrics::counter!("search_events_total", "outcome" => label).increment(1);
    // a client that went away still had its event recorded; nobody is left to tell
    let _ = pending.reply.send(outcome);
}

/// Errors that would fail each event of the batch alike: no point writing them one by one.
fn unreachable_database(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| code.starts_with("57P") || code.starts_with("08")),
        _ => false,
    }
}

/// Writes `events` in one transaction; one outcome per event, in order.
#[tracing::instrument(level = "debug", skip_all, fields(size = events.len()))]
async fn write(
    pool: &PgPool,
    events: &[&NewEvent],
    stripe: i16,
) -> Result<Vec<Recorded>, sqlx::Error> {
    let n = events.len();
    let mut search_ids = Vec::with_capacity(n);
    let mut searched_at = Vec::with_capacity(n);
    let mut user_ids = Vec::with_capacity(n);
    let mut guests = Vec::with_capacity(n);
    let mut queries = Vec::with_capacity(n);
    let mut normalized = Vec::with_capacity(n);
    let mut result_counts = Vec::with_capacity(n);
    let mut filters = Vec::with_capacity(n);
    let mut shown = Vec::with_capacity(n);
    let mut ip_hashes = Vec::with_capacity(n);
    let mut ua_classes = Vec::with_capacity(n);
    for e in events {
        search_ids.push(e.search_id);
        searched_at.push(e.searched_at);
        user_ids.push(e.searcher.user_id());
        guests.push(e.searcher.guest_session());
        queries.push(e.query.as_str());
        normalized.push(e.normalized_query.as_str());
        result_counts.push(e.result_count);
        filters.push(e.filters.as_ref());
        shown.push(e.shown.as_ref());
        ip_hashes.push(e.ip_hash.as_deref());
        ua_classes.push(e.ua_class.as_str());
    }
    // one statement, so one round trip and its own transaction (migration 0013)
    let stored = sqlx::query!(
        r#"select search_id, event_id, created as "created!", user_id, guest_session
           from search_record_events($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"#,
        i32::from(stripe),
        HISTORY_KEPT as i32,
        &search_ids,
        &searched_at,
        &user_ids as &[Option<i64>],
        &guests as &[Option<&str>],
        &queries as &[&str],
        &normalized as &[&str],
        &result_counts,
        &filters as &[Option<&serde_json::Value>],
        &shown as &[Option<&serde_json::Value>],
        &ip_hashes as &[Option<&[u8]>],
        &ua_classes as &[&str],
    )
    .fetch_all(pool)
    .await?;
    // who owns each search_id, and whether this batch created it; and whose account is closed
    let mut owners: HashMap<Uuid, (i64, Searcher, bool)> = HashMap::new();
    let mut closed = HashSet::new();
    for row in stored {
        let (Some(search_id), Some(event_id)) = (row.search_id, row.event_id) else {
            closed.extend(row.user_id);
            continue;
        };
        let owner = match (row.user_id, row.guest_session) {
            (Some(id), _) => Searcher::User(id),
            (None, Some(session)) => Searcher::Guest(session),
            (None, None) => continue,
        };
        owners.insert(search_id, (event_id, owner, row.created));
    }
    let mut created = HashSet::new();
    Ok(events
        .iter()
        .map(|e| {
            if e.searcher.user_id().is_some_and(|id| closed.contains(&id)) {
                return Recorded::Closed;
            }
            match owners.get(&e.search_id) {
                Some((id, owner, fresh)) if *owner == e.searcher => {
                    if *fresh && created.insert(e.search_id) {
                        Recorded::Created { id: *id }
                    } else {
                        Recorded::Repeated { id: *id }
                    }
                }
                _ => Recorded::Taken,
            }
        })
        .collect())
}

/// Takes the advisory locks of `searchers`' histories for the rest of the transaction, in
/// key order, so that two writers never wait on each other in a cycle.
pub async fn lock_searchers(
    tx: &mut sqlx::PgConnection,
    searchers: &[&Searcher],
) -> Result<(), sqlx::Error> {
    let mut keys: Vec<String> = searchers.iter().map(|s| s.lock_key()).collect();
    keys.sort();
    keys.dedup();
    // unnest yields the sorted array in order, and each lock is taken as its row is read
    sqlx::query!(
        "select pg_advisory_xact_lock(hashtextextended(k, 0)) from unnest($1::text[]) as k",
        &keys
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Deletes all but the [`HISTORY_KEPT`] most recent entries of these users and guests
/// (`search_history_trim`, migration 0015, which the batch write calls too).
pub async fn trim_history(
    tx: &mut sqlx::PgConnection,
    users: &[i64],
    guests: &[String],
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "select search_history_trim($1, $2, $3)",
        users,
        guests,
        HISTORY_KEPT as i32
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(waiting: usize) -> (mpsc::Sender<usize>, mpsc::Receiver<usize>) {
        let (sender, receiver) = mpsc::channel(QUEUE_CAPACITY);
        for n in 0..waiting {
            sender.try_send(n).expect("room");
        }
        (sender, receiver)
    }

    #[tokio::test(start_paused = true)]
    async fn a_lone_event_is_written_at_once() {
        let (_sender, mut receiver) = queue(1);
        let started = tokio::time::Instant::now();
        assert_eq!(gather(&mut receiver).await, Some(vec![0]));
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_few_waiting_events_wait_for_those_arriving_within_the_linger() {
        let (sender, mut receiver) = queue(3);
        let late = sender.clone();
        tokio::spawn(async move {
            tokio::time::sleep(LINGER / 2).await;
            late.send(3).await.expect("open");
            tokio::time::sleep(LINGER * 2).await;
            late.send(4).await.expect("open");
        });
        let started = tokio::time::Instant::now();
        assert_eq!(gather(&mut receiver).await, Some(vec![0, 1, 2, 3]));
        assert!(started.elapsed() >= LINGER && started.elapsed() < LINGER * 2);
        // the one that came after the wait starts the next batch
        assert_eq!(gather(&mut receiver).await, Some(vec![4]));
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_enough_batch_is_written_without_waiting() {
        let (_sender, mut receiver) = queue(LINGER_BELOW + 5);
        let started = tokio::time::Instant::now();
        let batch = gather(&mut receiver).await.expect("a batch");
        assert_eq!(batch.len(), LINGER_BELOW + 5);
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn the_wait_ends_once_the_batch_is_full_enough() {
        let (sender, mut receiver) = queue(2);
        tokio::spawn(async move {
            for n in 2..100 {
                sender.send(n).await.expect("open");
            }
        });
        let batch = gather(&mut receiver).await.expect("a batch");
        assert_eq!(batch.len(), LINGER_BELOW);
        assert_eq!(batch, (0..LINGER_BELOW).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn no_batch_once_every_sender_is_gone() {
        let (sender, mut receiver) = queue(2);
        drop(sender);
        assert_eq!(gather(&mut receiver).await, Some(vec![0, 1]));
        assert_eq!(gather(&mut receiver).await, None);
    }
}
