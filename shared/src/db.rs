//! Connecting to Postgres, creating the database when it is missing, and applying migrations.
use std::{str::FromStr, time::Duration};

use sqlx::{
    ConnectOptions, Connection, PgConnection, PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};

/// The migrations in `migrations/`, embedded at build time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// How a pool's sessions commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    /// Every commit waits for the disk: the default, and what the API's writes need.
    Durable,
    /// Commits return before the disk write: for bookkeeping whose loss in a Postgres crash
    /// is harmless because it is redone; a statement that must be durable says
    /// `set local synchronous_commit = on` in its transaction.
    Async,
}

/// Opens a pool on `url` with durable commits.
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    connect_with(url, max_connections, Commit::Durable).await
}

/// Opens a pool on `url` whose sessions commit as `commit` says.
pub async fn connect_with(
    url: &str,
    max_connections: u32,
    commit: Commit,
) -> Result<PgPool, sqlx::Error> {
    let mut options = PgConnectOptions::from_str(url)?
        .log_statements(tracing::log::LevelFilter::Trace)
        .application_name(&application_name(commit));
    if commit == Commit::Async {
        options = options.options([("synchronous_commit", "off")]);
    }
    PgPoolOptions::new()
        .max_connections(max_connections)
        // sqlx pings every connection it hands out by default: one more round trip per
        // statement. A connection that died since its last use fails its statement instead,
        // which callers handle like any database error (the API answers 503, jobs retry).
        .test_before_acquire(false)
        .acquire_timeout(Duration::from_secs(3))
        .connect_with(options)
        .await
}

/// Who a session belongs to in `pg_stat_activity` (and in Postgres' logs and
/// `pg_stat_statements`): the binary's name, and which of its pools.
fn application_name(commit: Commit) -> String {
    let binary = std::env::current_exe()
        .ok()
        .and_then(|path| path.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "instainstru".into());
    match commit {
        Commit::Durable => binary,
        Commit::Async => format!("{binary} (async commit)"),
    }
}

/// Creates the database named in `url` when it does not exist yet.
pub async fn create_database_if_missing(url: &str) -> Result<(), sqlx::Error> {
    let options = PgConnectOptions::from_str(url)?;
    let name = options.get_database().unwrap_or("postgres").to_string();
    let mut admin = PgConnection::connect_with(&options.clone().database("postgres")).await?;
    let exists: bool = sqlx::query_scalar!(
        r#"select exists(select 1 from pg_database where datname = $1) as "exists!""#,
        &name
    )
    .fetch_one(&mut admin)
    .await?;
    if !exists {
        // identifiers cannot be bound; quote it ourselves
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        match sqlx::query(&format!("create database {quoted}"))
            .execute(&mut admin)
            .await
        {
            Ok(_) => {}
            // a concurrent start-up created it first
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => {}
            Err(e) => return Err(e),
        }
    }
    admin.close().await
}

/// Creates the database if needed, connects and migrates: what every binary does at start.
pub async fn prepare(url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    prepare_with(url, max_connections, Commit::Durable).await
}

/// [`prepare`] with a pool whose sessions commit as `commit` says.
pub async fn prepare_with(
    url: &str,
    max_connections: u32,
    commit: Commit,
) -> Result<PgPool, sqlx::Error> {
    create_database_if_missing(url).await?;
    let pool = connect_with(url, max_connections, commit).await?;
    MIGRATOR.run(&pool).await?;
    Ok(pool)
}
