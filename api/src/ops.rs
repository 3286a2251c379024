//! What ops can see and do, shared by the two fronts: the dashboard at `/ops` (HTML,
//! `crate::dashboard`) and its JSON twin under `/api/v1/admin/` (`routes::admin`). Both
//! check the same roles here (`ops_viewer` reads; `ops_operator` and `admin` act), and every
//! action is written to the audit log here, in the transaction that makes it: who (the
//! user id), what (`ops.job.retry`...), which jobs or queue or schedule, and when.
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use shared::{
    domain::Role,
    pauses::{self, ScheduleChange},
    records::{self, Acted, BulkAction, JobFilter, JobState},
};
use utoipa::ToSchema;

use crate::{
    error::{ApiError, ApiResult},
    state::AppState,
};

/// Who acts: the user id and role of a bearer token or of a dashboard session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Actor {
    pub user_id: i64,
    pub role: Role,
}

impl Actor {
    /// 403 unless the role may read the ops views.
    pub fn require_view(&self) -> ApiResult<()> {
        if self.role.can_view_ops() {
            Ok(())
        } else {
            Err(ApiError::Forbidden(
                "requires the ops_viewer, ops_operator or admin role".into(),
            ))
        }
    }

    /// 403 unless the role may act.
    pub fn require_act(&self) -> ApiResult<()> {
        if self.role.can_act_ops() {
            Ok(())
        } else {
            Err(ApiError::Forbidden(
                "requires the ops_operator or admin role".into(),
            ))
        }
    }

    fn id(&self) -> String {
        self.user_id.to_string()
    }
}

// ---- the overview ---------------------------------------------------------------------------

/// One queue at a glance.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueueOverview {
    pub queue: String,
    /// Paused by an operator: not relayed, not fetched.
    pub paused: bool,
    /// Due and not started (in the outbox, or in Redis).
    pub waiting: i64,
    /// Due later (a reminder, a retry's back-off).
    pub scheduled: i64,
    /// Attempt started, not finished.
    pub in_flight: i64,
    pub succeeded_hour: i64,
    pub succeeded_day: i64,
    /// Failed attempts (retried or dead-lettered) in the last hour and day.
    pub failed_hour: i64,
    pub failed_day: i64,
    /// Dead letters now.
    pub dead: i64,
    /// Seconds the oldest waiting job has waited since it was due.
    #[schema(required = true)]
    pub oldest_waiting_seconds: Option<f64>,
}

/// Jobs finished in one minute.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MinuteThroughput {
    pub minute: DateTime<Utc>,
    pub succeeded: i64,
    pub dead: i64,
}

/// The outbox: records due and not yet relayed to Redis.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OutboxOverview {
    pub pending: i64,
    #[schema(required = true)]
    pub oldest_seconds: Option<f64>,
}

/// A worker process that beat recently.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkerOverview {
    pub id: String,
    pub started_at: DateTime<Utc>,
    pub heartbeat_at: DateTime<Utc>,
    /// The queues it registered (what it runs).
    pub queues: Vec<String>,
}

/// Redis as `INFO` reports it.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedisOverview {
    pub used_memory_bytes: u64,
    /// 0 when no limit is set.
    pub maxmemory_bytes: u64,
    pub connected_clients: u64,
    pub ops_per_sec: u64,
}

/// This API process's Postgres pool.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PoolOverview {
    pub size: u32,
    pub idle: u32,
    pub in_use: u32,
    pub max: u32,
}

/// Everything the overview shows.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Overview {
    pub generated_at: DateTime<Utc>,
    pub queues: Vec<QueueOverview>,
    pub outbox: OutboxOverview,
    /// The last 60 minutes, oldest first, every minute present.
    pub throughput: Vec<MinuteThroughput>,
    pub workers: Vec<WorkerOverview>,
    /// `null` when Redis does not answer within two seconds.
    #[schema(required = true)]
    pub redis: Option<RedisOverview>,
    pub postgres: PoolOverview,
}

/// What finished, per minute and queue, over the overview's last day, kept by this process.
/// Counting a day of finished records took most of the overview at a million records
/// (33,000 index entries a request, ops/bench/ops); a settled minute does not change, so
/// each is counted once and a request reads only the minutes since the last one and the
/// partial minutes at the windows' starts. Done records stay done and errors are only
/// added; a dead letter retried later still counts as dead in its minute, which only the
/// throughput chart shows.
#[derive(Debug, Default)]
pub struct FinishedMinutes {
    kept: std::sync::Mutex<KeptMinutes>,
}

#[derive(Debug, Default)]
struct KeptMinutes {
    /// Every minute of `[.., until)`, each with its totals (empty for a quiet minute).
    minutes: std::collections::BTreeMap<DateTime<Utc>, Vec<records::Finished>>,
    until: Option<DateTime<Utc>>,
}

/// The overview's view of what finished.
#[derive(Debug, Default)]
pub struct Recent {
    /// Per queue, in the hour and in the day before now.
    pub hour: Vec<records::Finished>,
    pub day: Vec<records::Finished>,
    /// Per minute, succeeded and dead, for the whole minutes of the last hour.
    pub minutes: Vec<(DateTime<Utc>, i64, i64)>,
}

impl FinishedMinutes {
    /// A finish is stamped by the database's clock at its commit: a minute is kept once it
    /// ended this long ago, so that no commit in flight still lands in it.
    const SETTLED: chrono::Duration = chrono::Duration::minutes(2);

    /// What finished in the hour and the day before `now`, and per minute.
    pub async fn recent(
        &self,
        db: &sqlx::PgPool,
        now: DateTime<Utc>,
    ) -> Result<Recent, sqlx::Error> {
        let minute = chrono::Duration::minutes(1);
        let day_start = now - chrono::Duration::days(1);
        let hour_start = now - chrono::Duration::hours(1);
        let (day_whole, hour_whole) = (ceil_minute(day_start), ceil_minute(hour_start));
        let closed_until = floor_minute(now - Self::SETTLED).max(day_whole);
        let missing_from = {
            let mut kept = self.lock();
            // kept minutes serve only while they end inside the day and at or before the
            // settled minutes; a clock set back (a test's) reopens them: count them anew
            match kept.until {
                Some(until) if (day_whole..=closed_until).contains(&until) => until,
                _ => {
                    *kept = KeptMinutes::default();
                    day_whole
                }
            }
        };
        let range = |from: DateTime<Utc>, to: DateTime<Utc>| async move {
            if from < to {
                records::finished_by_minute(db, from, to).await
            } else {
                Ok(Vec::new())
            }
        };
        // the newest minutes, up to any commit stamped a little ahead of this clock
        let (missing, day_head, hour_head, tail) = tokio::try_join!(
            range(missing_from, closed_until),
            range(day_start, day_whole),
            range(hour_start, hour_whole),
            range(closed_until, now + chrono::Duration::hours(1)),
        )?;
        let mut totals = Totals::default();
        {
            let mut kept = self.lock();
            if kept.until.is_none_or(|until| until == missing_from) {
                let mut m = missing_from;
                while m < closed_until {
                    kept.minutes.entry(m).or_default();
                    m += minute;
                }
                for (m, f) in missing {
                    kept.minutes.entry(m).or_default().push(f);
                }
                kept.until = Some(closed_until);
                kept.minutes.retain(|m, _| *m >= day_whole);
                for (m, f) in &kept.minutes {
                    f.iter().for_each(|f| totals.add(*m, f, hour_whole));
                }
            } else {
                // another request kept these minutes meanwhile: add what this one read
                for (m, f) in kept.minutes.range(day_whole..missing_from) {
                    f.iter().for_each(|f| totals.add(*m, f, hour_whole));
                }
                missing
                    .iter()
                    .for_each(|(m, f)| totals.add(*m, f, hour_whole));
            }
        }
        tail.iter().for_each(|(m, f)| totals.add(*m, f, hour_whole));
        // the partial minutes at the windows' starts: in their window, never in the chart
        day_head
            .iter()
            .for_each(|(_, f)| Totals::sum(&mut totals.day, f));
        hour_head
            .iter()
            .for_each(|(_, f)| Totals::sum(&mut totals.hour, f));
        Ok(Recent {
            hour: totals.hour.into_values().collect(),
            day: totals.day.into_values().collect(),
            minutes: totals
                .minutes
                .into_iter()
                .map(|(m, (s, d))| (m, s, d))
                .collect(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, KeptMinutes> {
        // the kept minutes are plain data: a panic elsewhere cannot leave them half-written
        self.kept.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The sums of [`FinishedMinutes::recent`], added up without copying the kept minutes.
#[derive(Default)]
struct Totals {
    hour: std::collections::BTreeMap<String, records::Finished>,
    day: std::collections::BTreeMap<String, records::Finished>,
    minutes: std::collections::BTreeMap<DateTime<Utc>, (i64, i64)>,
}

impl Totals {
    /// A whole minute's totals of one queue: in the day, and in the hour and its chart from
    /// `hour_whole` on.
    fn add(&mut self, minute: DateTime<Utc>, f: &records::Finished, hour_whole: DateTime<Utc>) {
        Self::sum(&mut self.day, f);
        if minute >= hour_whole {
            Self::sum(&mut self.hour, f);
            let chart = self.minutes.entry(minute).or_default();
            chart.0 += f.succeeded;
            chart.1 += f.dead;
        }
    }

    fn sum(
        totals: &mut std::collections::BTreeMap<String, records::Finished>,
        f: &records::Finished,
    ) {
        match totals.get_mut(&f.queue) {
            Some(t) => {
                t.succeeded += f.succeeded;
                t.dead += f.dead;
                t.failed_attempts += f.failed_attempts;
            }
            None => {
                totals.insert(f.queue.clone(), f.clone());
            }
        }
    }
}

fn floor_minute(t: DateTime<Utc>) -> DateTime<Utc> {
    use chrono::DurationRound;
    t.duration_trunc(chrono::Duration::minutes(1)).unwrap_or(t)
}

fn ceil_minute(t: DateTime<Utc>) -> DateTime<Utc> {
    let floor = floor_minute(t);
    if floor == t {
        t
    } else {
        floor + chrono::Duration::minutes(1)
    }
}

/// Reads the overview. Every query reads a partial index or a recent range of one (the
/// backlog's pending/enqueued/dead indexes, `jobs_finished_idx`, `job_errors_at_idx`), and
/// what finished is read only for the minutes not yet kept ([`FinishedMinutes`]): its cost follows
/// the live work, not the history (ops/bench/ops).
#[tracing::instrument(skip_all)]
pub async fn overview(state: &AppState) -> ApiResult<Overview> {
    let now = state.clock.now();
    let db = &state.db;
    // side by side on the pool: the page waits for the slowest, not for the sum
    let (backlog, recent, paused, registered, redis) = tokio::try_join!(
        records::backlog(db, now),
        state.finished.recent(db, now),
        pauses::paused_queues(db),
        records::registered_queues(db),
        async { Ok(redis_info(state).await) },
    )?;
    let Recent { hour, day, minutes } = recent;

    let mut names: Vec<String> = registered.iter().map(|q| q.queue.clone()).collect();
    names.extend(backlog.iter().map(|b| b.queue.clone()));
    names.extend(paused.iter().map(|p| p.queue.clone()));
    names.sort();
    names.dedup();
    let seconds_since = |t: DateTime<Utc>| (now - t).num_milliseconds().max(0) as f64 / 1000.0;
    let queues = names
        .iter()
        .map(|name| {
            let b = backlog
                .iter()
                .find(|b| &b.queue == name)
                .cloned()
                .unwrap_or_default();
            let h = hour.iter().find(|f| &f.queue == name);
            let d = day.iter().find(|f| &f.queue == name);
            QueueOverview {
                queue: name.clone(),
                paused: paused.iter().any(|p| &p.queue == name),
                waiting: b.due + b.enqueued,
                scheduled: b.scheduled,
                in_flight: b.running,
                succeeded_hour: h.map_or(0, |f| f.succeeded),
                succeeded_day: d.map_or(0, |f| f.succeeded),
                failed_hour: h.map_or(0, |f| f.failed_attempts),
                failed_day: d.map_or(0, |f| f.failed_attempts),
                dead: b.dead,
                oldest_waiting_seconds: b.oldest_waiting.map(seconds_since),
            }
        })
        .collect();
    let outbox = OutboxOverview {
        pending: backlog.iter().map(|b| b.due).sum(),
        oldest_seconds: backlog
            .iter()
            .filter_map(|b| b.oldest_due)
            .min()
            .map(seconds_since),
    };
    // the minutes as Postgres' date_trunc names them, the current one last
    let current = {
        use chrono::DurationRound;
        now.duration_trunc(chrono::Duration::minutes(1))
            .unwrap_or(now)
    };
    let throughput = (0..60)
        .rev()
        .map(|ago| {
            let minute = current - chrono::Duration::minutes(ago);
            let found = minutes.iter().find(|(m, _, _)| *m == minute);
            MinuteThroughput {
                minute,
                succeeded: found.map_or(0, |f| f.1),
                dead: found.map_or(0, |f| f.2),
            }
        })
        .collect();
    let workers = workers(state, now, &registered).await?;
    let max = state.db.options().get_max_connections();
    let size = state.db.size();
    let idle = state.db.num_idle() as u32;
    Ok(Overview {
        generated_at: now,
        queues,
        outbox,
        throughput,
        workers,
        redis,
        postgres: PoolOverview {
            size,
            idle,
            in_use: size.saturating_sub(idle),
            max,
        },
    })
}

/// Worker processes seen beating in the last 30 seconds, with the queues they registered.
async fn workers(
    state: &AppState,
    now: DateTime<Utc>,
    registered: &[records::RegisteredQueue],
) -> ApiResult<Vec<WorkerOverview>> {
    let rows = sqlx::query!(
        "select id, started_at, heartbeat_at from workers
          where stopped_at is null and heartbeat_at > $1 order by id",
        now - chrono::Duration::seconds(30)
    )
    .fetch_all(&state.db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| WorkerOverview {
            queues: registered
                .iter()
                .filter(|q| q.registered_by == r.id)
                .map(|q| q.queue.clone())
                .collect(),
            id: r.id,
            started_at: r.started_at,
            heartbeat_at: r.heartbeat_at,
        })
        .collect())
}

/// Redis' memory, clients and operations per second, or `None` when it does not answer
/// within two seconds. Read only when someone looks (the overview), never on a timer.
async fn redis_info(state: &AppState) -> Option<RedisOverview> {
    let conn = state
        .queues
        .get_or_try_init(|| async {
            tokio::time::timeout(
                Duration::from_secs(2),
                shared::queue::connect(&state.config.redis_url),
            )
            .await
            .map_err(|_| ())?
            .map_err(|_| ())
        })
        .await
        .ok()?;
    let mut conn = conn.clone();
    let info: String = tokio::time::timeout(
        Duration::from_secs(2),
        redis::cmd("INFO").query_async(&mut conn),
    )
    .await
    .ok()?
    .ok()?;
    let field = |name: &str| -> u64 {
        info.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    Some(RedisOverview {
        used_memory_bytes: field("used_memory"),
        maxmemory_bytes: field("maxmemory"),
        connected_clients: field("connected_clients"),
        ops_per_sec: field("instantaneous_ops_per_sec"),
    })
}

// ---- one job --------------------------------------------------------------------------------

/// An email ledger entry of a job's booking or privacy request: ids only.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmailEntry {
    pub id: i64,
    pub kind: String,
    pub recipient_id: i64,
    pub status: String,
    pub claimed_at: DateTime<Utc>,
    #[schema(required = true)]
    pub sent_at: Option<DateTime<Utc>>,
}

/// One job with every attempt's error and its email ledger entries.
pub struct JobDetail {
    pub job: records::JobRecord,
    pub errors: Vec<records::AttemptError>,
    pub emails: Vec<EmailEntry>,
}

/// Job `id` with its history, or 404.
pub async fn job(state: &AppState, id: i64) -> ApiResult<JobDetail> {
    let job = records::get(&state.db, id)
        .await?
        .ok_or(ApiError::NotFound("job"))?;
    let errors = records::errors(&state.db, id).await?;
    let request_id = job
        .payload
        .get("request_id")
        .and_then(serde_json::Value::as_i64);
    let booking_id = job
        .payload
        .get("booking_id")
        .and_then(serde_json::Value::as_i64);
    let kind = job
        .payload
        .get("kind")
        .and_then(serde_json::Value::as_str)
        .map(str::to_string);
    // the ledger is keyed by booking (and kind) or by privacy request, not by job
    let emails = sqlx::query_as!(
        EmailEntry,
        "select id, kind, recipient_id, status, claimed_at, sent_at from email_ledger
          where (booking_id = $1 and ($3::text is null or kind = $3)) or privacy_request_id = $2
          order by id",
        booking_id,
        request_id,
        kind
    )
    .fetch_all(&state.db)
    .await?;
    Ok(JobDetail {
        job,
        errors,
        emails,
    })
}

// ---- actions --------------------------------------------------------------------------------

/// The answer to an action on one job that did not apply: 404, or 409 naming its state.
fn refused(acted: Acted, detail: &str) -> ApiResult<()> {
    match acted {
        Acted::Done => Ok(()),
        Acted::Refused(state) => Err(ApiError::Conflict {
            code: "invalid_state",
            detail: format!("{detail}; this job is {}", state.as_str()),
        }),
        Acted::NotFound => Err(ApiError::NotFound("job")),
    }
}

/// Retries (`BulkAction::Retry`) or discards one job, audited with its outcome.
#[tracing::instrument(skip(state))]
pub async fn act_on_job(
    state: &AppState,
    actor: Actor,
    action: BulkAction,
    id: i64,
) -> ApiResult<()> {
    actor.require_act()?;
    let mut tx = state.db.begin().await?;
    let (acted, rule) = match action {
        BulkAction::Retry => (
            records::retry(&mut tx, id, state.clock.now()).await?,
            "only dead or skipped jobs can be retried",
        ),
        BulkAction::Discard => (
            records::discard(&mut tx, id).await?,
            "only dead jobs can be discarded",
        ),
    };
    let (outcome, detail) = match acted {
        Acted::Done => ("done".to_string(), json!({ "job_ids": [id] })),
        Acted::Refused(s) => (
            "refused".to_string(),
            json!({ "job_ids": [id], "state": s.as_str() }),
        ),
        Acted::NotFound => ("not_found".to_string(), json!({ "job_ids": [id] })),
    };
    shared::audit::record_ops(
        &mut tx,
        &actor.id(),
        &format!("ops.job.{}", action.as_str()),
        &outcome,
        detail,
    )
    .await?;
    tx.commit().await?;
    if acted == Acted::Done && action == BulkAction::Retry {
        state.outbox.wake();
    }
    tracing::info!(job_id = id, action = action.as_str(), outcome = %outcome, "ops action on a job");
    refused(acted, rule)
}

/// What a bulk action did.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkOutcome {
    #[schema(inline)]
    pub action: BulkActionView,
    /// Records that matched when the action started.
    pub matched: i64,
    /// Records it changed (fewer when some changed state meanwhile).
    pub changed: i64,
    /// Transactions it took ([`records::BULK_BATCH`] records each at most).
    pub batches: i64,
}

/// `retry` or `discard`.
#[derive(Debug, Clone, Copy, Serialize, serde::Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BulkActionView {
    Retry,
    Discard,
}

impl From<BulkAction> for BulkActionView {
    fn from(action: BulkAction) -> Self {
        match action {
            BulkAction::Retry => BulkActionView::Retry,
            BulkAction::Discard => BulkActionView::Discard,
        }
    }
}

/// Checks a bulk action's filter: a state it applies to, and either a narrowing filter or
/// an explicit `all`. Returns how many records match (what the confirmation shows).
pub async fn check_bulk(
    state: &AppState,
    action: BulkAction,
    filter: &JobFilter,
    all: bool,
) -> ApiResult<i64> {
    let applies = filter.state.is_some_and(|s| action.applies_to(s));
    if !applies {
        return Err(ApiError::invalid(
            "invalid_state",
            "status",
            match action {
                BulkAction::Retry => "a bulk retry applies to dead or skipped jobs: filter on one",
                BulkAction::Discard => "a bulk discard applies to dead jobs: filter on them",
            },
        ));
    }
    let count = records::count_filtered(&state.db, filter).await?;
    if !filter.narrows() && !all {
        let state_name = filter.state.map_or("", |s| s.as_str());
        return Err(ApiError::invalid(
            "filter_required",
            "all",
            format!(
                "no filter: this would {} all {count} {state_name} jobs; confirm with all = true",
                action.as_str()
            ),
        ));
    }
    Ok(count)
}

/// Applies `action` to every record matching `filter`, in batches of
/// [`records::BULK_BATCH`], each batch one transaction with its audit entry (the job ids it
/// changed). The relay's claims never wait on it: the batches lock few rows, briefly, and
/// skip what another transaction holds.
#[tracing::instrument(skip(state, filter))]
pub async fn bulk(
    state: &AppState,
    actor: Actor,
    action: BulkAction,
    filter: &JobFilter,
    all: bool,
) -> ApiResult<BulkOutcome> {
    actor.require_act()?;
    let matched = check_bulk(state, action, filter, all).await?;
    let now = state.clock.now();
    let mut below = None;
    let (mut changed, mut batches) = (0i64, 0i64);
    loop {
        let mut tx = state.db.begin().await?;
        let ids = records::bulk_batch(&mut tx, action, filter, below, now).await?;
        let Some(lowest) = ids.iter().min().copied() else {
            break;
        };
        batches += 1;
        changed += ids.len() as i64;
        shared::audit::record_ops(
            &mut tx,
            &actor.id(),
            &format!("ops.jobs.bulk_{}", action.as_str()),
            "done",
            json!({ "filter": filter, "batch": batches, "job_ids": ids, "matched": matched }),
        )
        .await?;
        tx.commit().await?;
        if action == BulkAction::Retry {
            state.outbox.wake();
        }
        below = Some(lowest);
    }
    tracing::info!(
        action = action.as_str(),
        matched,
        changed,
        batches,
        "ops bulk action"
    );
    Ok(BulkOutcome {
        action: action.into(),
        matched,
        changed,
        batches,
    })
}

/// Pauses (`paused`) or resumes `queue`, audited; returns whether that changed anything.
#[tracing::instrument(skip(state))]
pub async fn set_queue_paused(
    state: &AppState,
    actor: Actor,
    queue: &str,
    paused: bool,
) -> ApiResult<bool> {
    actor.require_act()?;
    if queue.is_empty() || queue.len() > 100 {
        return Err(ApiError::invalid(
            "invalid_queue",
            "queue",
            "a queue name of 1 to 100 characters",
        ));
    }
    let mut tx = state.db.begin().await?;
    let changed = if paused {
        pauses::pause_queue(&mut tx, queue, &actor.id()).await?
    } else {
        pauses::resume_queue(&mut tx, queue).await?
    };
    shared::audit::record_ops(
        &mut tx,
        &actor.id(),
        if paused {
            "ops.queue.pause"
        } else {
            "ops.queue.resume"
        },
        if changed { "done" } else { "unchanged" },
        json!({ "queue": queue }),
    )
    .await?;
    tx.commit().await?;
    if !paused && changed {
        // the resumed queue's due records go now, not at the next poll
        state.outbox.wake();
    }
    Ok(changed)
}

/// Pauses or resumes schedule `name`, audited; 404 for a schedule no scheduler published.
#[tracing::instrument(skip(state))]
pub async fn set_schedule_paused(
    state: &AppState,
    actor: Actor,
    name: &str,
    paused: bool,
) -> ApiResult<bool> {
    actor.require_act()?;
    let mut tx = state.db.begin().await?;
    let change = pauses::set_schedule_paused(&mut tx, name, paused, &actor.id()).await?;
    if change == ScheduleChange::Unknown {
        return Err(ApiError::NotFound("schedule"));
    }
    shared::audit::record_ops(
        &mut tx,
        &actor.id(),
        if paused {
            "ops.schedule.pause"
        } else {
            "ops.schedule.resume"
        },
        if change == ScheduleChange::Changed {
            "done"
        } else {
            "unchanged"
        },
        json!({ "schedule": name }),
    )
    .await?;
    tx.commit().await?;
    Ok(change == ScheduleChange::Changed)
}

/// Asks the leading scheduler to run schedule `name` now (`shared::schedule::triggers`),
/// audited; returns the request's id. 404 for a schedule no scheduler published.
#[tracing::instrument(skip(state))]
pub async fn trigger_schedule(state: &AppState, actor: Actor, name: &str) -> ApiResult<i64> {
    actor.require_act()?;
    let mut tx = state.db.begin().await?;
    let id = shared::schedule::triggers::request(&mut tx, name, &actor.id())
        .await?
        .ok_or(ApiError::NotFound("schedule"))?;
    shared::audit::record_ops(
        &mut tx,
        &actor.id(),
        "ops.schedule.trigger",
        "requested",
        json!({ "schedule": name, "request_id": id }),
    )
    .await?;
    tx.commit().await?;
    Ok(id)
}

/// A job state by name, or 422 naming the valid ones.
pub fn parse_state(name: &str, field: &str) -> ApiResult<JobState> {
    name.parse::<JobState>().map_err(|()| {
        let names: Vec<&str> = JobState::ALL.iter().map(|s| s.as_str()).collect();
        ApiError::invalid(
            "invalid_status",
            field,
            format!("one of {}", names.join(", ")),
        )
    })
}
