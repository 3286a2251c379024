//! The scheduler: the one process kind that owns periodic work. It only *enqueues*: each
//! fire is a `scheduled_run` job through the outbox, executed by the worker.
//!
//! ```text
//!  every tick:  lease (Redis SET NX PX, renewed) ──▶ leader? ──▶ for each schedule:
//!     Postgres tx { lock schedule_state; decide slots in (evaluated_to, now] by the catch-up
//!                   policy; insert schedule_fires (unique schedule+local slot) + outbox job;
//!                   advance evaluated_to }
//! ```
//!
//! Why a plain tokio interval and not tokio-cron-scheduler (named in the issue): its jobs
//! freeze the zone's UTC offset at creation, so zoned jobs run an hour off after a DST change,
//! and it keeps no record of what it fired. Used "in UTC as a ticker" it would add a second
//! loop and callbacks spawned per tick for what `tokio::time::interval` does. Fire times come
//! from [`shared::schedule`], a pure function of (schedule, zone, instant); the loop only
//! asks it what came due since the last decided instant.
use std::{future::Future, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use shared::{clock::SharedClock, schedule::Schedule};
use sqlx::PgPool;
use tokio::time::{Instant, MissedTickBehavior};

pub mod error;
pub mod lease;
pub mod ledger;
pub mod schedules;
pub mod settings;
pub mod telemetry;

pub use error::{Error, Result};
pub use lease::Lease;
pub use settings::Settings;

/// One scheduler replica: it leads when it holds the lease, and fires only then.
#[derive(Debug)]
pub struct Scheduler {
    pool: PgPool,
    lease: Lease,
    schedules: Vec<Schedule>,
    clock: SharedClock,
    tick: Duration,
    health_every: Duration,
    leading: bool,
    /// when the lease was last taken or renewed (it is renewed every third of its ttl)
    held_at: Option<Instant>,
}

impl Scheduler {
    pub fn new(
        pool: PgPool,
        lease: Lease,
        schedules: Vec<Schedule>,
        clock: SharedClock,
        settings: &Settings,
    ) -> Self {
        Scheduler {
            pool,
            lease,
            schedules,
            clock,
            tick: settings.tick,
            health_every: settings.health_every,
            leading: false,
            held_at: None,
        }
    }

    /// Ticks until `shutdown` resolves, then gives the lease up. A tick in progress finishes
    /// first: its transaction either commits or never started.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        // the binary registered already; a scheduler run in-process has not
        telemetry::register(&self.schedules);
        tracing::info!(
            instance = self.lease.holder(),
            schedules = self.schedules.len(),
            "scheduler started"
        );
        let mut interval = tokio::time::interval(self.tick);
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut last_health: Option<Instant> = None;
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = interval.tick() => {}
            }
            let now = self.clock.now();
            self.tick(now).await;
            if last_health.is_none_or(|at| at.elapsed() >= self.health_every) {
                self.check_health(now).await;
                last_health = Some(Instant::now());
            }
        }
        if self.leading {
            self.held_at = None;
            if let Err(e) = self.lease.release().await {
                tracing::warn!(error = %e, "could not release the lease; it expires on its own");
            }
            if let Err(e) =
                ledger::record_release(&self.pool, self.lease.holder(), self.clock.now()).await
            {
                tracing::warn!(error = %e, "could not record the release");
            }
        }
        metrics::gauge!("scheduler_is_leader").set(0.0);
        tracing::info!(instance = self.lease.holder(), "scheduler stopped");
    }

    /// How often the lease is renewed (or, by a standby, tried): a third of its time to
    /// live, so that a renewal can fail twice before it lapses; every tick if that is longer.
    fn renew_every(&self) -> Duration {
        (self.lease.ttl() / 3).max(self.tick)
    }

    /// One tick: hold the lease (when a renewal is due), and when leading fire what came
    /// due up to `now`. Between renewals a leader leads on the lease it renewed less than a
    /// third of its ttl ago; a failed renewal stops it firing at once.
    #[tracing::instrument(level = "debug", skip(self), fields(instance = %self.lease.holder()))]
    pub async fn tick(&mut self, now: DateTime<Utc>) {
        shared::telemetry::record_pool("main", &self.pool);
        let renew = self
            .held_at
            .is_none_or(|at| at.elapsed() >= self.renew_every());
        let leading = if renew {
            match self.lease.hold().await {
                Ok(held) => {
                    self.held_at = Some(Instant::now());
                    held
                }
                Err(e) => {
                    // tried again next tick
                    self.held_at = None;
                    tracing::warn!(error = %e, "lease unavailable: not firing");
                    false
                }
            }
        } else {
            self.leading
        };
        if leading != self.leading {
            tracing::info!(
                instance = self.lease.holder(),
                leading,
                "leadership changed"
            );
            if leading {
                metrics::counter!("scheduler_leader_changes_total").increment(1);
            }
            self.leading = leading;
        }
        metrics::gauge!("scheduler_is_leader").set(if leading { 1.0 } else { 0.0 });
        if !leading {
            return;
        }
        let expires = now
            + chrono::Duration::from_std(self.lease.ttl()).unwrap_or(chrono::Duration::seconds(10));
        if let Err(e) = ledger::record_leader(&self.pool, self.lease.holder(), now, expires).await {
            tracing::warn!(error = %e, "could not record the leader");
        }
        for schedule in &self.schedules {
            if let Err(e) = ledger::fire_due(&self.pool, schedule, now, self.lease.holder()).await {
                // nothing was committed: the same slots are decided again next tick
                tracing::error!(schedule = %schedule.name, error = %e, "could not fire");
                metrics::counter!("scheduler_errors_total", "schedule" => schedule.name.clone())
                    .increment(1);
            }
        }
        if let Err(e) = ledger::run_trigger_requests(&self.pool, &self.schedules, now).await {
            // the request stays open: carried out next tick
            tracing::error!(error = %e, "could not carry out a trigger request");
        }
    }

    /// Refreshes the dead man's switch metrics of every schedule (on every replica, so the
    /// gauges survive the leader).
    pub async fn check_health(&self, now: DateTime<Utc>) {
        for schedule in &self.schedules {
            if let Err(e) = ledger::check_health(&self.pool, schedule, now).await {
                tracing::warn!(schedule = %schedule.name, error = %e, "could not check health");
            }
        }
    }
}

/// `/metrics` (Prometheus) and `/health` of a scheduler process.
pub fn metrics_router(handle: metrics_exporter_prometheus::PrometheusHandle) -> axum::Router {
    let handle = Arc::new(handle);
    axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || async move { handle.render() }),
        )
        .route("/health", axum::routing::get(|| async { "ok" }))
}
