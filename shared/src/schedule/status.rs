//! What the admin endpoint shows of the schedules: the definitions the running scheduler
//! published, the fire ledger, the outcome of each fire's job, the next fire and the leader.
use chrono::{DateTime, Duration, NaiveDateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use super::{CatchUp, ON_TIME, Schedule};
use crate::records::JobState;

/// One schedule as the admin endpoint shows it.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
// inert for serializing; tells the OpenAPI document that an answer has no other fields (and
// `required` below: an `Option` here is always present, null when empty)
#[serde(deny_unknown_fields)]
pub struct ScheduleStatus {
    pub name: String,
    pub cron: String,
    pub timezone: String,
    #[cfg_attr(feature = "openapi", schema(value_type = CatchUp))]
    pub catch_up: String,
    pub enabled: bool,
    /// Paused by an operator: no slot fires until it is resumed.
    pub paused: bool,
    /// The latest slot fired, if any.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub last_fire: Option<FireStatus>,
    /// When a run of this schedule (slot or manual) last finished successfully.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub last_success_at: Option<DateTime<Utc>>,
    /// The next slot to fire, local with offset and UTC.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub next_fire_local: Option<String>,
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub next_fire_at: Option<DateTime<Utc>>,
    /// The next three slots (none while switched off or paused).
    pub next_fires: Vec<NextFire>,
    /// Fires whose job had not succeeded by the schedule's deadline, ever.
    pub misses: i64,
    /// The scheduler instance holding the lease, if it is current.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub leader: Option<String>,
}

/// A slot to come.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NextFire {
    /// Local wall-clock time with its offset (RFC 3339).
    pub local: String,
    pub at: DateTime<Utc>,
}

/// A fired slot and what became of its job.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct FireStatus {
    /// The local wall-clock slot (`2026-03-08T02:00:00`).
    // no offset: not an RFC 3339 date-time
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub slot_local: NaiveDateTime,
    pub slot_at: DateTime<Utc>,
    pub fired_at: DateTime<Utc>,
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub job_id: Option<i64>,
    /// The job's state (pending, enqueued, running, done, skipped, dead); `None` once the
    /// job record has been purged.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub outcome: Option<String>,
}

/// The state of every schedule the running scheduler published (with its overrides
/// applied), read from Postgres: the fire ledger, the jobs and the leader.
#[tracing::instrument(skip_all)]
pub async fn status(pool: &PgPool, now: DateTime<Utc>) -> Result<Vec<ScheduleStatus>, sqlx::Error> {
    let rows = sqlx::query!(
        "select schedule, cron, timezone, catch_up, enabled, paused_at is not null as \"paused!\"
           from schedule_state order by schedule"
    )
    .fetch_all(pool)
    .await?;
    let leader: Option<String> = sqlx::query_scalar!(
        "select holder from scheduler_leader where expires_at > $1",
        now
    )
    .fetch_optional(pool)
    .await?;

    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let last_fire = sqlx::query!(
            // the job may be gone (retention): its status is nullable through the left join
            r#"select f.slot_local, f.slot_at, f.fired_at, f.job_id,
                      j.status as "status?: crate::records::JobStatus", j.started_at
                 from schedule_fires f left join jobs j on j.id = f.job_id
                where f.schedule = $1
                order by f.slot_at desc, f.slot_local desc limit 1"#,
            &row.schedule
        )
        .fetch_optional(pool)
        .await?
        .map(|f| FireStatus {
            slot_local: f.slot_local,
            slot_at: f.slot_at,
            fired_at: f.fired_at,
            job_id: f.job_id,
            outcome: f.status.map(|status| {
                JobState::of(status, f.started_at.is_some())
                    .as_str()
                    .to_string()
            }),
        });
        let last_success_at = crate::records::last_success(pool, &row.schedule).await?;
        let mut next_fires = Vec::new();
        if let Ok(schedule) = Schedule::new(
            &row.schedule,
            &row.cron,
            &row.timezone,
            CatchUp::Skip,
            ON_TIME,
            Duration::zero(),
        ) && row.enabled
            && !row.paused
        {
            let mut after = now;
            while next_fires.len() < 3 {
                let Some(slot) = schedule.next_after(after) else {
                    break;
                };
                next_fires.push(NextFire {
                    local: schedule.local_rfc3339(&slot),
                    at: slot.at,
                });
                after = slot.at;
            }
        }
        let misses: i64 = sqlx::query_scalar!(
            r#"select count(*) as "n!" from schedule_fires where schedule = $1 and missed_at is not null"#,
            &row.schedule
        )
        .fetch_one(pool)
        .await?;
        let next = next_fires.first().cloned();
        out.push(ScheduleStatus {
            name: row.schedule,
            cron: row.cron,
            timezone: row.timezone,
            catch_up: row.catch_up,
            enabled: row.enabled,
            paused: row.paused,
            last_fire,
            last_success_at,
            next_fire_local: next.as_ref().map(|n| n.local.clone()),
            next_fire_at: next.map(|n| n.at),
            next_fires,
            misses,
            leader: leader.clone(),
        });
    }
    Ok(out)
}
