//! `instainstru-bench producer …` / `instainstru-bench worker`: the harness's two commands.
use bench_peer::{producer, settings, worker};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "The instainstru peer of the Celery/BullMQ benchmark (ops/bench)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Enqueue per the harness producer contract; prints one JSON line.
    Producer(producer::ProducerArgs),
    /// Consume per the harness worker contract until SIGTERM.
    Worker,
    /// Measure what `tokio::time::sleep` takes here (W4's ceiling); prints one JSON line.
    Timer {
        #[arg(long, default_value_t = 20)]
        sleep_ms: u64,
        #[arg(long, default_value_t = 50)]
        tasks: usize,
        #[arg(long, default_value_t = 50)]
        rounds: usize,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BENCH_LOG")
                .unwrap_or_else(|_| "warn,bench_peer=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let target = settings::Target::from_env();
    match cli.command {
        Command::Producer(args) => {
            let out = runtime(settings::threads()?)?.block_on(producer::run(&target, &args))?;
            println!("{out}");
        }
        Command::Timer {
            sleep_ms,
            tasks,
            rounds,
        } => {
            let sleep = std::time::Duration::from_millis(sleep_ms);
            let mean_ns = runtime(settings::threads()?)?
                .block_on(bench_peer::clock::mean_sleep_ns(sleep, tasks, rounds));
            let mean_ms = mean_ns as f64 / 1e6;
            let out = serde_json::json!({
                "sleep_ms": sleep_ms, "tasks": tasks, "rounds": rounds,
                "mean_ms": mean_ms, "ceiling": sleep_ms as f64 / mean_ms,
            });
            println!("{out}");
        }
        Command::Worker => {
            let settings = settings::WorkerSettings::from_env()?;
            runtime(settings.threads)?.block_on(worker::run(target, settings))?;
        }
    }
    Ok(())
}

/// One thread by default: on a 2-core box shared with Redis, a second runtime thread mostly
/// adds wake-ups; `BENCH_THREADS` tries more.
fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
}
