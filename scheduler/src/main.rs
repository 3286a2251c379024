//! `scheduler`: run the leader loop (default), print the plan, or trigger a run by hand.
use std::sync::Arc;

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};
use scheduler::{Lease, Scheduler, Settings, ledger, schedules};
use shared::{
    clock::{Clock, SystemClock},
    config::Config,
    db, queue, schedule, telemetry,
};

#[derive(Parser)]
#[command(
    name = "scheduler",
    about = "Fires the platform's periodic jobs, once per slot"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the leader loop until SIGINT or SIGTERM (the default).
    Run,
    /// Print every schedule's next fires: `<name> <local RFC 3339> <UTC RFC 3339>`. Connects to nothing.
    Plan {
        /// The instant to plan from (RFC 3339); now by default.
        #[arg(long, value_parser = parse_instant)]
        from: Option<DateTime<Utc>>,
        /// How many fires per schedule.
        #[arg(long, default_value_t = 5)]
        count: usize,
    },
    /// Enqueue one run of schedule NAME now, with a key of its own.
    Trigger { name: String },
}

fn parse_instant(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("not an RFC 3339 instant: {e}"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // configuration loading: the only place the environment is read
    let vars: Vec<(String, String)> = std::env::vars().collect();
    let schedules = schedules::effective(vars.clone())?;
    match cli.command {
        Some(Command::Plan { from, count }) => {
            let from = from.unwrap_or_else(|| SystemClock.now());
            for line in schedule::plan(&schedules, from, count) {
                println!("{line}");
            }
            Ok(())
        }
        Some(Command::Trigger { name }) => {
            let config = Config::from_env()?;
            telemetry::init_tracing(&config.log_format);
            let schedule = schedules::find(&schedules, &name)?;
            if !schedule.enabled {
                tracing::warn!(schedule = %name, "schedule is switched off; triggering it anyway");
            }
            let pool = db::prepare(&config.database_url, 2)
                .await
                .context("connecting to Postgres")?;
            let id = ledger::trigger(&pool, schedule, SystemClock.now()).await?;
            println!("{name} enqueued as job {id}");
            Ok(())
        }
        None | Some(Command::Run) => run(vars, schedules).await,
    }
}

async fn run(
    vars: Vec<(String, String)>,
    schedules: Vec<schedule::Schedule>,
) -> anyhow::Result<()> {
    let config = Config::from_env()?;
    let settings = Settings::from_vars(vars)?;
    telemetry::init_tracing(&config.log_format);
    let metrics = telemetry::init_metrics();
    // every series exists before the first scrape can be answered
    scheduler::telemetry::register(&schedules);
    let pool = db::prepare(&config.database_url, 4)
        .await
        .context("connecting to Postgres")?;
    let redis = queue::connect(&config.redis())
        .await
        .context("connecting to Redis")?;
    let lease = Lease::new(
        redis,
        &config.queue_prefix,
        &settings.instance,
        settings.lease,
    );

    let listener = tokio::net::TcpListener::bind((config.host.as_str(), settings.port))
        .await
        .with_context(|| format!("binding SCHEDULER_PORT={}", settings.port))?;
    tracing::info!(port = listener.local_addr()?.port(), "serving /metrics");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut server_stop = stop_rx.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, scheduler::metrics_router(metrics))
            .with_graceful_shutdown(async move {
                let _ = server_stop.changed().await;
            })
            .await
    });

    Scheduler::new(pool, lease, schedules, Arc::new(SystemClock), &settings)
        .run(shared::shutdown::signal())
        .await;
    let _ = stop_tx.send(true);
    server.await??;
    Ok(())
}
