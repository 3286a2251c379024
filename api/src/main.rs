//! The `api` binary: serves the HTTP API, or runs an ops subcommand.
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use shared::{clock::SystemClock, config::Config, domain::Role};

// glibc's malloc spent 8% of both cores while the api took 5,500 search events/s
// (ops/bench/search under perf: _int_free, unlink_chunk, malloc_consolidate on the runtime's
// threads); mimalloc's per-thread heaps do not contend
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "api", about = "InstaInstru HTTP API")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API (the default).
    Serve,
    /// Print a bearer token for the user with this email (local use and ops). The user is
    /// created if there is none (as a student unless --role says otherwise); --role also
    /// sets the role of an existing user (student, instructor, admin, ops_viewer,
    /// ops_operator).
    MintToken {
        #[arg(long)]
        email: String,
        #[arg(long, value_parser = parse_role)]
        role: Option<Role>,
    },
    /// Create the database if missing, migrate, and insert the demo data (idempotent).
    Seed,
}

fn parse_role(s: &str) -> Result<Role, String> {
    s.parse()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = Config::from_env()?;
    let command = cli.command.unwrap_or(Command::Serve);
    // mint-token prints the token alone on stdout, where the logs go, so that
    // `TOKEN=$(api mint-token ...)` works
    if !matches!(command, Command::MintToken { .. }) {
        shared::telemetry::init_tracing(&config.log_format);
    }
    match command {
        Command::Serve => {
            let addr = format!("{}:{}", config.host, config.port);
            let state = api::build_state(config, Arc::new(SystemClock))
                .await
                .context("starting the api")?;
            let listener = tokio::net::TcpListener::bind(&addr)
                .await
                .with_context(|| format!("binding {addr}"))?;
            tracing::info!(port = listener.local_addr()?.port(), "api listening");
            api::serve(listener, state, shared::shutdown::signal()).await?;
            tracing::info!("api stopped");
        }
        Command::MintToken { email, role } => {
            let pool = shared::db::prepare(&config.database_url, 1).await?;
            let user: Option<(i64, Role)> = sqlx::query!(
                r#"select id, role as "role: Role" from users
                   where lower(email) = lower($1) and erased_at is null"#,
                &email
            )
            .map(|r| (r.id, r.role))
            .fetch_optional(&pool)
            .await?;
            let (id, role) = match (user, role) {
                (Some((id, current)), Some(wanted)) if current != wanted => {
                    sqlx::query!(
                        "update users set role = $2 where id = $1",
                        id,
                        wanted as Role
                    )
                    .execute(&pool)
                    .await?;
                    (id, wanted)
                }
                (Some(found), _) => found,
                (None, role) => {
                    // local use: a user to sign in with, named by its email's local part
                    let role = role.unwrap_or(Role::Student);
                    let name = email.split('@').next().unwrap_or("ops");
                    let id: i64 = sqlx::query_scalar!(
                        "insert into users (email, full_name, role, timezone)
                         values ($1, $2, $3, 'UTC') returning id",
                        &email,
                        name,
                        role as Role
                    )
                    .fetch_one(&pool)
                    .await?;
                    eprintln!("created user {id} with role {}", role.as_str());
                    (id, role)
                }
            };
            let keys = api::auth::JwtKeys::new(&config.jwt_secret, config.jwt_ttl_minutes);
            println!("{}", keys.mint(id, role, chrono::Utc::now())?);
        }
        Command::Seed => {
            let pool = shared::db::prepare(&config.database_url, 2).await?;
            api::seed::seed(&pool, chrono::Utc::now()).await?;
            tracing::info!("demo data in place");
        }
    }
    Ok(())
}
