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
