//! The fire ledger: deciding and recording fires in Postgres.
//!
//! One transaction per schedule and tick: lock the schedule's `schedule_state` row, decide
//! the slots in `(evaluated_to, now]` by the catch-up policy, insert a `schedule_fires` row
//! and the outbox job of each slot to fire, advance `evaluated_to`, commit. The row lock makes
//! two leaders take turns; the ledger's unique (schedule, slot_local) makes a second fire of
//! a slot insert and enqueue nothing, whatever happened to the lease. A crash before commit
//! leaves nothing behind, and the next leader decides the same slots again.
use chrono::{DateTime, NaiveDateTime, Utc};
use shared::{
    outbox, records,
    records::JobState,
    schedule::{Schedule, ScheduleError, Slot},
};
use sqlx::PgPool;

/// What one evaluation of a schedule did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fired {
    /// Slots fired now, with the job each enqueued.
    pub fired: Vec<(Slot, Option<i64>)>,
    /// Slots already in the ledger (another leader fired them): nothing done.
    pub duplicates: usize,
    /// Missed slots the catch-up policy did not fire.
    pub skipped: usize,
    /// Missed slots older than the catch-up window, reported and never fired.
    pub expired: Vec<Slot>,
    pub expired_truncated: bool,
}

/// Fires what of `schedule` came due up to `now`.
#[tracing::instrument(skip_all, fields(schedule = %schedule.name))]
pub async fn fire_due(
    pool: &PgPool,
    schedule: &Schedule,
    now: DateTime<Utc>,
    holder: &str,
) -> Result<Fired, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // A new schedule starts being evaluated now: a first deployment fires no backlog.
    sqlx::query!(
        "insert into schedule_state (schedule, cron, timezone, catch_up, enabled, evaluated_to, updated_at)
         values ($1, $2, $3, $4, $5, $6, $6)
         on conflict (schedule) do update
            set cron = excluded.cron, timezone = excluded.timezone, catch_up = excluded.catch_up,
                enabled = excluded.enabled, updated_at = excluded.updated_at",
        &schedule.name,
        &schedule.expr,
        schedule.tz.name(),
        schedule.catch_up.as_str(),
        schedule.enabled,
        now
    )
    .execute(&mut *tx)
    .await?;
    let state = sqlx::query!(
        r#"select evaluated_to, paused_at is not null as "paused!" from schedule_state
            where schedule = $1 for update"#,
        &schedule.name
    )
    .fetch_one(&mut *tx)
    .await?;
    let after = state.evaluated_to;

    let mut fired = Fired::default();
    // switched off, or paused by an operator (`shared::pauses`): time passes without
    // slots, so switching on again or resuming fires no backlog
    if schedule.enabled && !state.paused {
        let due = schedule.due(after, now);
        fired.skipped = due.skipped.len();
        fired.expired = due.expired;
        fired.expired_truncated = due.expired_truncated;
        for slot in due.fire {
            match record_fire(&mut tx, schedule, slot, now, holder).await? {
                Some(job_id) => fired.fired.push((slot, job_id)),
                None => fired.duplicates += 1,
            }
        }
    }
    sqlx::query!(
        "update schedule_state set evaluated_to = greatest(evaluated_to, $2) where schedule = $1",
        &schedule.name,
        now
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    if !fired.fired.is_empty() {
        outbox::notify(pool).await;
    }
    report(schedule, &fired);
    Ok(fired)
}

/// Inserts the ledger row and enqueues the run of one slot. `None` when the slot was already
/// fired; otherwise the id of the job (shared with an earlier slot at the same instant).
async fn record_fire(
    tx: &mut sqlx::PgConnection,
    schedule: &Schedule,
    slot: Slot,
    now: DateTime<Utc>,
    holder: &str,
) -> Result<Option<Option<i64>>, sqlx::Error> {
    let fire_id: Option<i64> = sqlx::query_scalar!(
        "insert into schedule_fires (schedule, slot_local, timezone, slot_at, fired_at, fired_by)
         values ($1, $2, $3, $4, $5, $6)
         on conflict (schedule, slot_local) do nothing returning id",
        &schedule.name,
        slot.local,
        schedule.tz.name(),
        slot.at,
        now,
        holder
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(fire_id) = fire_id else {
        return Ok(None);
    };
    let record = fire_record(schedule, &slot, None)?;
    let job_id = match outbox::enqueue_record(&mut *tx, &record).await? {
        Some(id) => Some(id),
        // two local slots at one instant (spring forward) share the job
        None => outbox::find(&mut *tx, &record.dedupe_key).await?,
    };
    sqlx::query!(
        "update schedule_fires set job_id = $2 where id = $1",
        fire_id,
        job_id
    )
    .execute(&mut *tx)
    .await?;
    Ok(Some(job_id))
}

fn report(schedule: &Schedule, fired: &Fired) {
    let name = schedule.name.clone();
    for (slot, job_id) in &fired.fired {
        tracing::info!(slot_local = %slot.local, slot_at = %slot.at, job_id, "fired");
    }
    if let Some((last, _)) = fired.fired.last() {
        metrics::counter!("schedule_fires_total", "schedule" => name.clone())
            .increment(fired.fired.len() as u64);
        metrics::gauge!("schedule_last_fire_timestamp_seconds", "schedule" => name.clone())
            .set(last.at.timestamp() as f64);
    }
    if fired.duplicates > 0 {
        tracing::info!(
            duplicates = fired.duplicates,
            "slots already fired by another scheduler"
        );
        metrics::counter!("schedule_duplicate_fires_total", "schedule" => name.clone())
            .increment(fired.duplicates as u64);
    }
    if fired.skipped > 0 {
        tracing::info!(
            skipped = fired.skipped,
            policy = schedule.catch_up.as_str(),
            "missed slots not fired by policy"
        );
        metrics::counter!("schedule_slots_skipped_total", "schedule" => name.clone())
            .increment(fired.skipped as u64);
    }
    if let (Some(first), Some(last)) = (fired.expired.first(), fired.expired.last()) {
        tracing::warn!(
            count = fired.expired.len(),
            more = fired.expired_truncated,
            first = %first.local,
            last = %last.local,
            window_secs = schedule.window.num_seconds(),
            "missed slots older than the catch-up window: not fired"
        );
        metrics::counter!("schedule_misses_total", "schedule" => name, "reason" => "expired")
            .increment(fired.expired.len() as u64);
    }
}

/// The outbox record of `schedule`'s run for `slot`: its kind's arguments for that slot,
/// keyed by the schedule and the instant (or by a manual trigger's own key), and marked as
/// started by the schedule.
fn fire_record<'a>(
    schedule: &'a Schedule,
    slot: &Slot,
    manual_key: Option<&str>,
) -> Result<outbox::Record<'a>, sqlx::Error> {
    let job = schedule.job.ok_or_else(|| {
        sqlx::Error::Configuration(Box::new(ScheduleError::NoJob(schedule.name.clone())))
    })?;
    let payload = job
        .args_for(slot)
        .map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    // the key format of the schedules' runs before they were typed (`scheduled_run:…`), so
    // that a slot fired before an upgrade is still recognised after it
    let dedupe_key = match manual_key {
        Some(key) => format!("scheduled_run:{}:manual:{key}", schedule.name),
        None => format!("scheduled_run:{}:{}", schedule.name, slot.at.to_rfc3339()),
    };
    Ok(outbox::Record {
        queue: job.queue,
        payload,
        dedupe_key,
        run_at: slot.at,
        schedule: Some(&schedule.name),
    })
}

/// Enqueues one run of `schedule` now, outside its slots, with a key of its own: the run of
/// the slot that `now` is (in the schedule's zone).
#[tracing::instrument(skip(pool, schedule), fields(schedule = %schedule.name))]
pub async fn trigger(
    pool: &PgPool,
    schedule: &Schedule,
    now: DateTime<Utc>,
) -> Result<i64, sqlx::Error> {
    let key = format!(
        "{}-{}",
        now.format("%Y%m%dT%H%M%S%.3fZ"),
        uuid::Uuid::new_v4().simple()
    );
    let mut tx = pool.begin().await?;
    let id = trigger_in(&mut tx, schedule, now, &key).await?;
    tx.commit().await?;
    outbox::notify(pool).await;
    Ok(id)
}

/// Enqueues the manual run of [`trigger`] inside the caller's transaction, keyed by `key`.
async fn trigger_in(
    tx: &mut sqlx::PgConnection,
    schedule: &Schedule,
    now: DateTime<Utc>,
    key: &str,
) -> Result<i64, sqlx::Error> {
    let slot = Slot {
        local: schedule.local(now),
        at: now,
    };
    let record = fire_record(schedule, &slot, Some(key))?;
    let id = outbox::enqueue_record(&mut *tx, &record).await?;
    // a fresh key per trigger: a duplicate is impossible short of a collision
    id.ok_or(sqlx::Error::RowNotFound)
}

/// Carries out the dashboard's open "trigger now" requests (`shared::schedule::triggers`)
/// with the code of `scheduler trigger`, each in one transaction with its request marked
/// done: a request is carried out once, whichever leader takes it. Returns the jobs.
#[tracing::instrument(skip_all)]
pub async fn run_trigger_requests(
    pool: &PgPool,
    schedules: &[Schedule],
    now: DateTime<Utc>,
) -> Result<Vec<i64>, sqlx::Error> {
    use shared::schedule::triggers;
    let mut jobs = Vec::new();
    // bounded: a flood of requests cannot hold the tick
    for _ in 0..20 {
        let mut tx = pool.begin().await?;
        let Some((request, name)) = triggers::next_open(&mut tx).await? else {
            break;
        };
        match schedules.iter().find(|s| s.name == name) {
            Some(schedule) => {
                // the request's id is the key: carried out again after a crash before the
                // commit, it enqueues nothing new
                let id = trigger_in(&mut tx, schedule, now, &format!("request-{request}")).await?;
                triggers::finish(&mut tx, request, Some(id), None).await?;
                tracing::info!(schedule = %name, request, job_id = id, "triggered from the dashboard");
                jobs.push(id);
            }
            None => {
                triggers::finish(
                    &mut tx,
                    request,
                    None,
                    Some("this scheduler has no such schedule"),
                )
                .await?;
            }
        }
        tx.commit().await?;
    }
    if !jobs.is_empty() {
        outbox::notify(pool).await;
    }
    Ok(jobs)
}

/// Records `holder` as the current leader until `expires_at`, for the admin view.
pub async fn record_leader(
    pool: &PgPool,
    holder: &str,
    now: DateTime<Utc>,
    expires_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "insert into scheduler_leader (id, holder, acquired_at, renewed_at, expires_at)
         values (true, $1, $2, $2, $3)
         on conflict (id) do update
            set acquired_at = case when scheduler_leader.holder = excluded.holder
                                   then scheduler_leader.acquired_at else excluded.acquired_at end,
                holder = excluded.holder, renewed_at = excluded.renewed_at, expires_at = excluded.expires_at",
        holder,
        now,
        expires_at
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Marks `holder`'s leadership as ended at `now` (a clean stop), so the admin view shows no
/// leader until another replica takes the lease.
pub async fn record_release(
    pool: &PgPool,
    holder: &str,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "update scheduler_leader set expires_at = least(expires_at, $2) where holder = $1",
        holder,
        now
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Fired slots whose job had not succeeded by the deadline, marked once (so a miss counts
/// once across restarts and replicas).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Miss {
    pub slot_local: NaiveDateTime,
    /// The job's state then (pending, enqueued, running or dead).
    pub job_status: JobState,
}

/// The dead man's switch for one schedule: publishes its last success and deadline as
/// metrics and counts the fires that missed their deadline.
#[tracing::instrument(skip_all, fields(schedule = %schedule.name))]
pub async fn check_health(
    pool: &PgPool,
    schedule: &Schedule,
    now: DateTime<Utc>,
) -> Result<Vec<Miss>, sqlx::Error> {
    let name = schedule.name.clone();
    if let Some(at) = records::last_success(pool, &schedule.name).await? {
        metrics::gauge!("schedule_last_success_timestamp_seconds", "schedule" => name.clone())
            .set(at.timestamp() as f64);
    }
    metrics::gauge!("schedule_deadline_seconds", "schedule" => name.clone())
        .set(schedule.deadline.num_seconds() as f64);
    metrics::gauge!("schedule_enabled", "schedule" => name.clone()).set(if schedule.enabled {
        1.0
    } else {
        0.0
    });
    if let Some(next) = schedule.next_after(now).filter(|_| schedule.enabled) {
        metrics::gauge!("schedule_next_fire_timestamp_seconds", "schedule" => name.clone())
            .set(next.at.timestamp() as f64);
    }
    let misses =
        records::mark_missed_fires(pool, &schedule.name, now, now - schedule.deadline).await?;
    let misses: Vec<Miss> = misses
        .into_iter()
        .map(|(slot_local, job_status)| Miss {
            slot_local,
            job_status,
        })
        .collect();
    for miss in &misses {
        tracing::warn!(slot_local = %miss.slot_local, job_status = miss.job_status.as_str(), "fire missed its deadline");
    }
    if !misses.is_empty() {
        metrics::counter!("schedule_misses_total", "schedule" => name, "reason" => "deadline")
            .increment(misses.len() as u64);
    }
    Ok(misses)
}
