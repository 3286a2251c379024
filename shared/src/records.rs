//! The durable record of a job (a row of `jobs`) and every transition it goes through. This
//! module is the only place that writes or filters on a job's status: the relay, the
//! reconciler, the worker's attempts, the booking writes, the scheduler and the admin views
//! all ask it.
//!
//! ```text
//!            relay claims            attempt ends
//!  pending ───────────────▶ enqueued ─────────────▶ done | skipped | dead
//!     ▲  ▲                     │  │
//!     │  └─ retry (backoff), ──┘  └─ (started_at set: "running", derived)
//!     │     deferral, reconciler
//!     └──── admin retry of dead | skipped          admin discard: dead ─▶ skipped
//! ```
//!
//! Starting an attempt only sets `started_at` and the attempt count: an update of unindexed
//! columns, so Postgres makes it in place (HOT, migration 0003).
use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};

/// The stored status of a job record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum JobStatus {
    /// Waiting in the outbox for its `run_at`.
    Pending,
    /// Handed to Redis; running once an attempt has started (`started_at` set).
    Enqueued,
    Done,
    /// Nothing to do any more (a cancelled booking's reminder, an erased recipient).
    Skipped,
    /// Failed permanently or out of attempts: a dead letter.
    Dead,
}

/// A job's state as ops read it: the stored status, with `running` told apart from
/// `enqueued`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Pending,
    Enqueued,
    Running,
    Done,
    Skipped,
    Dead,
}

impl JobState {
    pub const ALL: [JobState; 6] = [
        JobState::Pending,
        JobState::Enqueued,
        JobState::Running,
        JobState::Done,
        JobState::Skipped,
        JobState::Dead,
    ];

    /// The state of a record with `status` whose attempt has (or has not) `started`.
    pub fn of(status: JobStatus, started: bool) -> JobState {
        match status {
            JobStatus::Pending => JobState::Pending,
            JobStatus::Enqueued if started => JobState::Running,
            JobStatus::Enqueued => JobState::Enqueued,
            JobStatus::Done => JobState::Done,
            JobStatus::Skipped => JobState::Skipped,
            JobStatus::Dead => JobState::Dead,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Enqueued => "enqueued",
            JobState::Running => "running",
            JobState::Done => "done",
            JobState::Skipped => "skipped",
            JobState::Dead => "dead",
        }
    }

    /// The stored status, and whether an attempt has started, that make this state.
    fn stored(self) -> (JobStatus, Option<bool>) {
        match self {
            JobState::Pending => (JobStatus::Pending, None),
            JobState::Enqueued => (JobStatus::Enqueued, Some(false)),
            JobState::Running => (JobStatus::Enqueued, Some(true)),
            JobState::Done => (JobStatus::Done, None),
            JobState::Skipped => (JobStatus::Skipped, None),
            JobState::Dead => (JobStatus::Dead, None),
        }
    }
}

impl std::str::FromStr for JobState {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or(())
    }
}

// ---- the relay -----------------------------------------------------------------------------

/// A record claimed for pushing to Redis.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: i64,
    pub queue: String,
    pub payload: serde_json::Value,
    /// How many times it has been pushed, this push included: part of its Redis task id.
    pub pushes: i32,
    pub run_at: DateTime<Utc>,
}

/// Claims up to `limit` due records of `queues` and marks them enqueued, inside the caller's
/// transaction (the push to Redis happens before its commit; a failed push rolls it back).
/// `for update skip locked`: any number of relays, none claiming what another holds. A
/// paused queue's records stay (`shared::pauses`).
pub async fn claim_due(
    tx: &mut PgConnection,
    queues: &[String],
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<Claimed>, sqlx::Error> {
    sqlx::query_as!(
        Claimed,
        "with due as (
            select id from jobs where status = 'pending' and run_at <= $1 and queue = any($3)
              and queue not in (select queue from queue_pauses)
            order by run_at limit $2 for update skip locked)
         update jobs set status = 'enqueued', enqueued_at = now(), started_at = null, pushes = pushes + 1
         from due where jobs.id = due.id
         returning jobs.id, jobs.queue, jobs.payload, jobs.pushes, jobs.run_at",
        now,
        limit,
        queues
    )
    .fetch_all(tx)
    .await
}

/// Dead-letters the due records whose queue neither `known` (this worker's registry) nor any
/// worker seen since `live_since` registered: a typo, or a kind since removed. Pushed, they
/// would wait in Redis for a consumer that never comes.
pub async fn dead_letter_unroutable(
    pool: &PgPool,
    known: &[String],
    now: DateTime<Utc>,
    live_since: DateTime<Utc>,
) -> Result<Vec<(i64, String)>, sqlx::Error> {
    sqlx::query!(
        "with unroutable as (
            select id, queue, attempts from jobs
             where status = 'pending' and run_at <= $1 and queue <> all($2)
               and queue not in (select queue from job_queues where seen_at >= $3)
               and queue not in (select queue from queue_pauses)
             for update skip locked),
         errors as (
            insert into job_errors (job_id, attempt, error)
            select id, attempts, 'no handler is registered for queue ' || queue from unroutable)
         update jobs j set status = 'dead', finished_at = now(),
                last_error = 'no handler is registered for queue ' || j.queue
           from unroutable u where j.id = u.id
         returning j.id, j.queue",
        now,
        known,
        live_since
    )
    .map(|r| (r.id, r.queue))
    .fetch_all(pool)
    .await
}

// ---- the reconciler ------------------------------------------------------------------------

/// A record handed to Redis that has not finished.
#[derive(Debug, Clone)]
pub struct InFlight {
    pub id: i64,
    pub queue: String,
    pub pushes: i32,
}

/// Up to 1000 records enqueued (or running) since before `before`, of queues not paused: a
/// paused queue's tasks wait in Redis on purpose, and must not be pushed a second time.
pub async fn in_flight_since(
    pool: &PgPool,
    before: DateTime<Utc>,
) -> Result<Vec<InFlight>, sqlx::Error> {
    sqlx::query_as!(
        InFlight,
        "select id, queue, pushes from jobs
         where status = 'enqueued' and coalesce(started_at, enqueued_at) < $1
           and queue not in (select queue from queue_pauses)
         order by id limit 1000",
        before
    )
    .fetch_all(pool)
    .await
}

/// Sends records Redis no longer holds back to the outbox; returns how many it sent.
pub async fn requeue(pool: &PgPool, ids: &[i64]) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query!(
        "update jobs set status = 'pending' where id = any($1) and status = 'enqueued'",
        ids
    )
    .execute(pool)
    .await?
    .rows_affected())
}

// ---- attempts ------------------------------------------------------------------------------

/// A started attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    pub number: i32,
    pub max: i32,
    /// How long the job waited to start, from when it was due (its `run_at`): the queue's
    /// wait-time histogram. Zero for a job started early (a manual trigger's own run).
    pub wait: chrono::Duration,
}

/// Starts an attempt of record `job_id`, whose kind allows `max_attempts`. `None` when the
/// record is already finished: this delivery is a duplicate and must do nothing.
pub async fn begin(
    pool: &PgPool,
    job_id: i64,
    max_attempts: i32,
) -> Result<Option<Attempt>, sqlx::Error> {
    let row = sqlx::query!(
        r#"update jobs set attempts = attempts + 1, started_at = now(), max_attempts = $2
         where id = $1 and status in ('pending', 'enqueued')
         returning attempts, max_attempts, run_at, started_at as "started_at!""#,
        job_id,
        max_attempts
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| Attempt {
        number: r.attempts,
        max: r.max_attempts,
        wait: (r.started_at - r.run_at).max(chrono::Duration::zero()),
    }))
}

/// How an attempt ended, as the record keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    Done,
    Skipped(String),
    /// Failed; runs again at `at`.
    Retry {
        error: String,
        at: DateTime<Utc>,
    },
    /// Not this job's failure: runs again at `until`, with its attempt given back.
    Defer {
        until: DateTime<Utc>,
        reason: String,
    },
    /// A dead letter, with its error kept in the history.
    Dead(String),
}

/// Records how `attempt` of `job_id` ended.
pub async fn finish(
    pool: &PgPool,
    job_id: i64,
    attempt: Attempt,
    ending: &Ending,
) -> Result<(), sqlx::Error> {
    match ending {
        Ending::Done => {
            // a concurrent delivery of the same job may have finished it first
            sqlx::query!(
                "update jobs set status = 'done', finished_at = now() where id = $1 and status <> 'done'",
                job_id
            )
            .execute(pool)
            .await?;
        }
        Ending::Skipped(reason) => {
            sqlx::query!(
                "update jobs set status = 'skipped', last_error = $2, finished_at = now() where id = $1",
                job_id,
                reason
            )
            .execute(pool)
            .await?;
        }
        Ending::Defer { until, reason } => {
            sqlx::query!(
                // only while this delivery's attempt is the latest word: a concurrent delivery
                // that finished (or scheduled its own retry) meanwhile is not overwritten
                "update jobs set status = 'pending', attempts = greatest(attempts - 1, 0),
                                 last_error = $2, run_at = $3
                 where id = $1 and status = 'enqueued'",
                job_id,
                reason,
                until
            )
            .execute(pool)
            .await?;
        }
        Ending::Retry { error, at } => {
            let mut tx = pool.begin().await?;
            record_error(&mut tx, job_id, attempt.number, error).await?;
            sqlx::query!(
                "update jobs set status = 'pending', last_error = $2, run_at = $3 where id = $1",
                job_id,
                error,
                at
            )
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        }
        Ending::Dead(error) => {
            let mut tx = pool.begin().await?;
            record_error(&mut tx, job_id, attempt.number, error).await?;
            sqlx::query!(
                "update jobs set status = 'dead', last_error = $2, finished_at = now() where id = $1",
                job_id,
                error
            )
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        }
    }
    Ok(())
}

/// Records an email as sent (ledger row `ledger_id`) and its job as done, in one statement
/// on the caller's durable pool: the knowledge that the SMTP server took the message exists
/// only in the sending process until this commits.
pub async fn done_with_email_sent(
    durable: &PgPool,
    job_id: i64,
    ledger_id: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "with sent as (update email_ledger set status = 'sent', sent_at = now() where id = $1)
         update jobs set status = 'done', finished_at = now() where id = $2",
        ledger_id,
        job_id
    )
    .execute(durable)
    .await
    .map(drop)
}

async fn record_error(
    conn: &mut PgConnection,
    job_id: i64,
    attempt: i32,
    error: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "insert into job_errors (job_id, attempt, error) values ($1, $2, $3)",
        job_id,
        attempt,
        error
    )
    .execute(conn)
    .await
    .map(drop)
}

// ---- what the business writes retire -------------------------------------------------------

/// Skips the pending jobs of `queue` about booking `booking_id` whose payload contains
/// `matching` (`{"kind": "reminder"}`), with `reason`. Returns how many.
pub async fn skip_pending_for_booking(
    conn: &mut PgConnection,
    queue: &str,
    booking_id: i64,
    matching: &serde_json::Value,
    reason: &str,
) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query!(
        "update jobs set status = 'skipped', last_error = $4, finished_at = now()
         where booking_id = $2 and queue = $1 and status = 'pending' and payload @> $3",
        queue,
        booking_id,
        matching,
        reason
    )
    .execute(conn)
    .await?
    .rows_affected())
}

/// Deletes up to `batch` records finished (done or skipped) before `before`; returns how
/// many. Dead letters stay until someone acts on them.
pub async fn purge_finished(
    pool: &PgPool,
    before: DateTime<Utc>,
    batch: i64,
) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query!(
        "delete from jobs where id in (
            select id from jobs where status in ('done', 'skipped') and finished_at < $1 limit $2)",
        before,
        batch
    )
    .execute(pool)
    .await?
    .rows_affected())
}

/// How many finished (done or skipped) job records [`purge_finished`] would delete before
/// `before`: the retention sweep's dry run.
pub async fn count_purgeable(pool: &PgPool, before: DateTime<Utc>) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(
        r#"select count(*) as "n!" from jobs where status in ('done', 'skipped') and finished_at < $1"#,
        before
    )
    .fetch_one(pool)
    .await
}

// ---- the scheduler -------------------------------------------------------------------------

/// When a job started by `schedule` (a slot or a manual trigger) last finished successfully.
pub async fn last_success(
    pool: &PgPool,
    schedule: &str,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar!(
        "select max(finished_at) from jobs where schedule = $1 and status = 'done'",
        schedule
    )
    .fetch_one(pool)
    .await
}

/// Marks, once, the fires of `schedule` for slots before `before` whose job has not
/// succeeded (nor been skipped), and returns them with their job's state then.
pub async fn mark_missed_fires(
    pool: &PgPool,
    schedule: &str,
    now: DateTime<Utc>,
    before: DateTime<Utc>,
) -> Result<Vec<(NaiveDateTime, JobState)>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"update schedule_fires f set missed_at = $2
             from jobs j
            where j.id = f.job_id and f.schedule = $1 and f.missed_at is null and f.slot_at < $3
              and j.status not in ('done', 'skipped')
            returning f.slot_local, j.status as "status: JobStatus", j.started_at"#,
        schedule,
        now,
        before
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.slot_local, JobState::of(r.status, r.started_at.is_some())))
        .collect())
}

// ---- the metrics ----------------------------------------------------------------------------

/// What one queue holds in Postgres that is not finished history: the backlog gauges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Backlog {
    pub queue: String,
    /// Pending and due: waiting for the relay.
    pub due: i64,
    /// Pending, due later (a reminder, a retry's back-off).
    pub scheduled: i64,
    /// Handed to Redis, no attempt started yet.
    pub enqueued: i64,
    pub running: i64,
    pub dead: i64,
    /// The `run_at` of the oldest record due and not yet started (relayed or not).
    pub oldest_waiting: Option<DateTime<Utc>>,
    /// The `run_at` of the oldest record due and not yet relayed: the outbox lag.
    pub oldest_due: Option<DateTime<Utc>>,
}

/// The backlog of every queue that has unfinished records or dead letters, as of `now`.
///
/// Cheap enough to run every few seconds whatever the history holds: each arm of the union
/// reads one partial index (pending, enqueued), never the done and skipped rows; the
/// pending arm reads only the index (migration 0014 includes `queue` in it), and the dead
/// letters are counted per queue as they come and go (`job_dead_counts`, migration 0014).
pub async fn backlog(pool: &PgPool, now: DateTime<Utc>) -> Result<Vec<Backlog>, sqlx::Error> {
    sqlx::query_as!(
        Backlog,
        r#"select queue as "queue!", sum(due)::bigint as "due!", sum(scheduled)::bigint as "scheduled!",
                  sum(enqueued)::bigint as "enqueued!", sum(running)::bigint as "running!",
                  sum(dead)::bigint as "dead!",
                  least(min(oldest_due), min(oldest_enqueued)) as oldest_waiting,
                  min(oldest_due) as oldest_due
             from (select queue, count(*) filter (where run_at <= $1) as due,
                          count(*) filter (where run_at > $1) as scheduled,
                          0::bigint as enqueued, 0::bigint as running, 0::bigint as dead,
                          min(run_at) filter (where run_at <= $1) as oldest_due,
                          null::timestamptz as oldest_enqueued
                     from jobs where status = 'pending' group by queue
                   union all
                   select queue, 0, 0, count(*) filter (where started_at is null),
                          count(*) filter (where started_at is not null), 0, null,
                          min(run_at) filter (where started_at is null)
                     from jobs where status = 'enqueued' group by queue
                   union all
                   select queue, 0, 0, 0, 0, dead, null, null
                     from job_dead_counts where dead > 0) j
            group by queue"#,
        now
    )
    .fetch_all(pool)
    .await
}

// ---- the admin views -----------------------------------------------------------------------

/// How many records of each queue are in each state.
pub async fn counts(pool: &PgPool) -> Result<Vec<(String, JobState, i64)>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"select queue, status as "status: JobStatus", started_at is not null as "started!",
                  count(*) as "count!"
             from jobs group by 1, 2, 3"#
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.queue, JobState::of(r.status, r.started), r.count))
        .collect())
}

/// Per queue, the `run_at` of the oldest record due by `now` and not yet relayed.
pub async fn oldest_due(
    pool: &PgPool,
    now: DateTime<Utc>,
) -> Result<Vec<(String, Option<DateTime<Utc>>)>, sqlx::Error> {
    sqlx::query!(
        "select queue, min(run_at) as oldest from jobs where status = 'pending' and run_at <= $1 group by queue",
        now
    )
    .map(|r| (r.queue, r.oldest))
    .fetch_all(pool)
    .await
}

/// A job record as the admin views show it.
#[derive(Debug, Clone, Serialize)]
pub struct JobRecord {
    pub id: i64,
    pub queue: String,
    pub payload: serde_json::Value,
    /// The state as ops read it (`running` told apart from `enqueued`).
    pub status: JobState,
    pub attempts: i32,
    pub max_attempts: i32,
    pub last_error: Option<String>,
    pub run_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// One failed attempt of a job.
#[derive(Debug, Clone, Serialize)]
pub struct AttemptError {
    pub attempt: i32,
    pub error: String,
    pub at: DateTime<Utc>,
}

/// The error history of job `id`, oldest first.
pub async fn errors(pool: &PgPool, id: i64) -> Result<Vec<AttemptError>, sqlx::Error> {
    sqlx::query_as!(
        AttemptError,
        "select attempt, error, at from job_errors where job_id = $1 order by id",
        id
    )
    .fetch_all(pool)
    .await
}

/// What an admin's action on one job came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acted {
    Done,
    /// The job is in a state the action does not apply to.
    Refused(JobState),
    NotFound,
}

/// Sends a dead or skipped job back to the outbox with fresh attempts, due at `now`.
pub async fn retry(
    conn: &mut PgConnection,
    id: i64,
    now: DateTime<Utc>,
) -> Result<Acted, sqlx::Error> {
    let updated = sqlx::query!(
        "update jobs set status = 'pending', attempts = 0, run_at = $2, finished_at = null
         where id = $1 and status in ('dead', 'skipped')",
        id,
        now
    )
    .execute(&mut *conn)
    .await?;
    acted(conn, id, updated.rows_affected()).await
}

/// Gives up on a dead job for good: it is kept as skipped, with the reason.
pub async fn discard(conn: &mut PgConnection, id: i64) -> Result<Acted, sqlx::Error> {
    let updated = sqlx::query!(
        "update jobs set status = 'skipped', last_error = coalesce(last_error, '') || ' (discarded by an admin)'
         where id = $1 and status = 'dead'",
        id
    )
    .execute(&mut *conn)
    .await?;
    acted(conn, id, updated.rows_affected()).await
}

async fn acted(conn: &mut PgConnection, id: i64, updated: u64) -> Result<Acted, sqlx::Error> {
    if updated > 0 {
        return Ok(Acted::Done);
    }
    let row = sqlx::query!(
        r#"select status as "status: JobStatus", started_at from jobs where id = $1"#,
        id
    )
    .fetch_optional(conn)
    .await?;
    Ok(match row {
        Some(r) => Acted::Refused(JobState::of(r.status, r.started_at.is_some())),
        None => Acted::NotFound,
    })
}

// ---- the ops dashboard ---------------------------------------------------------------------

/// What the dashboard's job list, and its bulk actions, filter on. Every field is optional;
/// [`JobFilter::narrows`] tells whether any narrows the set beyond its state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct JobFilter {
    /// `None`: every state.
    pub state: Option<JobState>,
    pub queue: Option<String>,
    /// The payload's `kind` (a booking email's confirmation, reminder...).
    pub kind: Option<String>,
    /// A case-insensitive substring of the last error.
    pub error: Option<String>,
    pub booking_id: Option<i64>,
    /// Jobs about this user: their bookings (as student or instructor) and their privacy
    /// requests.
    pub user_id: Option<i64>,
    /// Created at or after.
    pub from: Option<DateTime<Utc>>,
    /// Created before.
    pub to: Option<DateTime<Utc>>,
}

impl JobFilter {
    /// Whether anything but the state narrows the set (a bulk action without it must be
    /// confirmed as "all").
    pub fn narrows(&self) -> bool {
        self.queue.is_some()
            || self.kind.is_some()
            || self.error.is_some()
            || self.booking_id.is_some()
            || self.user_id.is_some()
            || self.from.is_some()
            || self.to.is_some()
    }

    fn stored(&self) -> (Option<JobStatus>, Option<bool>) {
        match self.state {
            Some(state) => {
                let (status, started) = state.stored();
                (Some(status), started)
            }
            None => (None, None),
        }
    }

    /// The `ilike` pattern of the error text, its wildcards escaped.
    fn error_pattern(&self) -> Option<String> {
        self.error.as_ref().map(|e| {
            let escaped = e
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            format!("%{escaped}%")
        })
    }
}

/// Up to `limit` records matching `filter`, newest first, older than job `before` when
/// given: keyset pagination, so page 1,000 costs what page 1 does. Each state's records
/// are read through its partial index (the dead letters through `jobs_dead_idx`).
pub async fn list_filtered(
    pool: &PgPool,
    filter: &JobFilter,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<JobRecord>, sqlx::Error> {
    let (status, started) = filter.stored();
    let rows = sqlx::query!(
        r#"select id, queue, payload, status as "status: JobStatus", started_at, attempts,
                  max_attempts, last_error, run_at, created_at, finished_at
             from jobs
            where ($1::text is null or status = $1)
              and ($2::bool is null or (started_at is not null) = $2)
              and ($3::text is null or queue = $3)
              and ($4::text is null or payload->>'kind' = $4)
              and ($5::text is null or last_error ilike $5)
              and ($6::bigint is null or booking_id = $6)
              and ($7::bigint is null
                   or booking_id in (select b.id from bookings b
                                      where b.student_id = $7 or b.instructor_id = $7)
                   or (payload ? 'request_id'
                       and payload->>'request_id' in (select p.id::text from privacy_requests p
                                                      where p.user_id = $7)))
              and ($8::timestamptz is null or created_at >= $8)
              and ($9::timestamptz is null or created_at < $9)
              and ($10::bigint is null or id < $10)
            order by id desc limit $11"#,
        status as _,
        started,
        filter.queue,
        filter.kind,
        filter.error_pattern(),
        filter.booking_id,
        filter.user_id,
        filter.from,
        filter.to,
        before,
        limit
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| JobRecord {
            id: r.id,
            queue: r.queue,
            payload: r.payload,
            status: JobState::of(r.status, r.started_at.is_some()),
            attempts: r.attempts,
            max_attempts: r.max_attempts,
            last_error: r.last_error,
            run_at: r.run_at,
            created_at: r.created_at,
            finished_at: r.finished_at,
        })
        .collect())
}

/// How many records match `filter`: what a bulk action would touch, shown before it is
/// confirmed.
pub async fn count_filtered(pool: &PgPool, filter: &JobFilter) -> Result<i64, sqlx::Error> {
    let (status, started) = filter.stored();
    sqlx::query_scalar!(
        r#"select count(*) as "n!" from jobs
            where ($1::text is null or status = $1)
              and ($2::bool is null or (started_at is not null) = $2)
              and ($3::text is null or queue = $3)
              and ($4::text is null or payload->>'kind' = $4)
              and ($5::text is null or last_error ilike $5)
              and ($6::bigint is null or booking_id = $6)
              and ($7::bigint is null
                   or booking_id in (select b.id from bookings b
                                      where b.student_id = $7 or b.instructor_id = $7)
                   or (payload ? 'request_id'
                       and payload->>'request_id' in (select p.id::text from privacy_requests p
                                                      where p.user_id = $7)))
              and ($8::timestamptz is null or created_at >= $8)
              and ($9::timestamptz is null or created_at < $9)"#,
        status as _,
        started,
        filter.queue,
        filter.kind,
        filter.error_pattern(),
        filter.booking_id,
        filter.user_id,
        filter.from,
        filter.to
    )
    .fetch_one(pool)
    .await
}

/// Records one bulk statement touches: each batch is its own short transaction, so the
/// relay's `for update skip locked` claims never wait behind a 10,000-row update.
pub const BULK_BATCH: i64 = 500;

/// Which bulk action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BulkAction {
    /// Dead or skipped records back to the outbox, with fresh attempts.
    Retry,
    /// Dead records kept as skipped.
    Discard,
}

impl BulkAction {
    pub fn as_str(self) -> &'static str {
        match self {
            BulkAction::Retry => "retry",
            BulkAction::Discard => "discard",
        }
    }

    /// The states the action applies to; a filter on another state matches nothing.
    pub fn applies_to(self, state: JobState) -> bool {
        match self {
            BulkAction::Retry => matches!(state, JobState::Dead | JobState::Skipped),
            BulkAction::Discard => state == JobState::Dead,
        }
    }
}

/// Applies `action` to the next batch of at most [`BULK_BATCH`] records matching `filter`
/// (whose state must be one the action applies to), newest first, below id `below` when
/// given; returns the ids it changed. The caller loops, one short transaction per batch,
/// starting each below the lowest id of the last: a skipped row is not met again and the
/// loop ends. Rows another transaction holds are skipped (the relay never waits on this),
/// and a record that changed state since it was counted is not touched.
pub async fn bulk_batch(
    conn: &mut PgConnection,
    action: BulkAction,
    filter: &JobFilter,
    below: Option<i64>,
    now: DateTime<Utc>,
) -> Result<Vec<i64>, sqlx::Error> {
    let Some(state) = filter.state.filter(|s| action.applies_to(*s)) else {
        return Ok(Vec::new());
    };
    let (status, _) = state.stored();
    sqlx::query_scalar!(
        r#"with batch as (
                select id from jobs
                 where status = $1
                   and ($2::text is null or queue = $2)
                   and ($3::text is null or payload->>'kind' = $3)
                   and ($4::text is null or last_error ilike $4)
                   and ($5::bigint is null or booking_id = $5)
                   and ($6::bigint is null
                        or booking_id in (select b.id from bookings b
                                           where b.student_id = $6 or b.instructor_id = $6)
                        or (payload ? 'request_id'
                            and payload->>'request_id' in (select p.id::text from privacy_requests p
                                                           where p.user_id = $6)))
                   and ($7::timestamptz is null or created_at >= $7)
                   and ($8::timestamptz is null or created_at < $8)
                   and ($9::bigint is null or id < $9)
                 order by id desc limit $10
                 for update skip locked),
             retried as (
                update jobs set status = 'pending', attempts = 0, run_at = $11, finished_at = null
                  from batch where jobs.id = batch.id and $12
                returning jobs.id),
             discarded as (
                update jobs set status = 'skipped',
                       last_error = coalesce(last_error, '') || ' (discarded by an operator)'
                  from batch where jobs.id = batch.id and not $12
                returning jobs.id)
            select id as "id!" from retried union all select id from discarded"#,
        status as _,
        filter.queue,
        filter.kind,
        filter.error_pattern(),
        filter.booking_id,
        filter.user_id,
        filter.from,
        filter.to,
        below,
        BULK_BATCH,
        now,
        action == BulkAction::Retry
    )
    .fetch_all(conn)
    .await
}

/// One job record, whatever its state.
pub async fn get(pool: &PgPool, id: i64) -> Result<Option<JobRecord>, sqlx::Error> {
    let row = sqlx::query!(
        r#"select id, queue, payload, status as "status: JobStatus", started_at, attempts,
                  max_attempts, last_error, run_at, created_at, finished_at
             from jobs where id = $1"#,
        id
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| JobRecord {
        id: r.id,
        queue: r.queue,
        payload: r.payload,
        status: JobState::of(r.status, r.started_at.is_some()),
        attempts: r.attempts,
        max_attempts: r.max_attempts,
        last_error: r.last_error,
        run_at: r.run_at,
        created_at: r.created_at,
        finished_at: r.finished_at,
    }))
}

/// Per queue, what finished: succeeded (done), dead-lettered, and failed attempts (every
/// recorded error, retried or not).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Finished {
    pub queue: String,
    pub succeeded: i64,
    pub dead: i64,
    pub failed_attempts: i64,
}

/// What finished per minute (`date_trunc('minute')`) and queue in `[from, to)`, oldest minute
/// first, from `jobs_finished_idx` and `job_errors_at_idx` (a range, never the whole
/// history). Minutes without any are absent. The overview keeps the settled minutes of its
/// last day (`api::ops::FinishedMinutes`) and reads only the newest each time.
pub async fn finished_by_minute(
    pool: &PgPool,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<(DateTime<Utc>, Finished)>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"select minute as "minute!", queue as "queue!", sum(succeeded)::bigint as "succeeded!",
                  sum(dead)::bigint as "dead!", sum(failed)::bigint as "failed_attempts!"
             from (select date_trunc('minute', finished_at) as minute, queue,
                          count(*) filter (where status = 'done') as succeeded,
                          count(*) filter (where status = 'dead') as dead, 0::bigint as failed
                     from jobs where finished_at >= $1 and finished_at < $2 group by 1, 2
                   union all
                   select date_trunc('minute', e.at), j.queue, 0, 0, count(*)
                     from job_errors e join jobs j on j.id = e.job_id
                    where e.at >= $1 and e.at < $2 group by 1, 2) t
            group by minute, queue order by minute, queue"#,
        from,
        to
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            (
                r.minute,
                Finished {
                    queue: r.queue,
                    succeeded: r.succeeded,
                    dead: r.dead,
                    failed_attempts: r.failed_attempts,
                },
            )
        })
        .collect())
}

// ---- the registry ---------------------------------------------------------------------------

/// A job kind as a worker registered it.
#[derive(Debug, Clone, Serialize)]
pub struct RegisteredQueue {
    pub queue: String,
    pub concurrency: i32,
    pub max_attempts: i32,
    pub timeout_secs: i32,
    pub registered_by: String,
    pub seen_at: DateTime<Utc>,
}

/// Publishes (or refreshes) the kinds a worker runs.
pub async fn register_queues(pool: &PgPool, queues: &[RegisteredQueue]) -> Result<(), sqlx::Error> {
    for q in queues {
        sqlx::query!(
            "insert into job_queues (queue, concurrency, max_attempts, timeout_secs, registered_by, seen_at)
             values ($1, $2, $3, $4, $5, $6)
             on conflict (queue) do update set concurrency = excluded.concurrency,
                max_attempts = excluded.max_attempts, timeout_secs = excluded.timeout_secs,
                registered_by = excluded.registered_by, seen_at = excluded.seen_at",
            q.queue,
            q.concurrency,
            q.max_attempts,
            q.timeout_secs,
            q.registered_by,
            q.seen_at
        )
        .execute(pool)
        .await?;
    }
    Ok(())
}

/// The queues workers have registered, by name.
pub async fn registered_queues(pool: &PgPool) -> Result<Vec<RegisteredQueue>, sqlx::Error> {
    sqlx::query_as!(
        RegisteredQueue,
        "select queue, concurrency, max_attempts, timeout_secs, registered_by, seen_at
           from job_queues order by queue"
    )
    .fetch_all(pool)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_is_an_enqueued_job_whose_attempt_started() {
        assert_eq!(JobState::of(JobStatus::Enqueued, true), JobState::Running);
        assert_eq!(JobState::of(JobStatus::Enqueued, false), JobState::Enqueued);
        assert_eq!(JobState::of(JobStatus::Done, true), JobState::Done);
        for state in JobState::ALL {
            let (status, started) = state.stored();
            assert_eq!(JobState::of(status, started.unwrap_or(false)), state);
            assert_eq!(state.as_str().parse(), Ok(state));
        }
    }
}
