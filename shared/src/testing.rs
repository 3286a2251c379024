//! Test support: a fresh database per test and a Redis key prefix per test, so that tests
//! run in parallel without sharing state.
use std::str::FromStr;

use sqlx::{Connection, PgConnection, PgPool, postgres::PgConnectOptions};

/// The server tests create their databases on: `TEST_DATABASE_URL`, else `DATABASE_URL`,
/// else the local default.
pub fn base_database_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .or_else(|_| std::env::var("DATABASE_URL"))
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// The Redis tests use: `TEST_REDIS_URL`, else `REDIS_URL`, else the local default.
pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL")
        .or_else(|_| std::env::var("REDIS_URL"))
        .unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into())
}

/// A unique name, for a database or a Redis prefix.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

/// A migrated database of its own; dropped by name at the start of later runs is not needed
/// because every name is unique.
#[derive(Debug, Clone)]
pub struct TestDatabase {
    pub url: String,
    pub pool: PgPool,
}

impl TestDatabase {
    /// Creates and migrates a new database.
    pub async fn create() -> TestDatabase {
        Self::create_on(&base_database_url()).await
    }

    /// Creates and migrates a new database on the server of `base`.
    pub async fn create_on(base: &str) -> TestDatabase {
        Self::create_with(base, &crate::db::MIGRATOR).await
    }

    async fn create_with(base: &str, migrator: &sqlx::migrate::Migrator) -> TestDatabase {
        let base = base.to_string();
        let options = PgConnectOptions::from_str(&base).expect("valid TEST_DATABASE_URL");
        let name = unique_name("test");
        let mut admin = PgConnection::connect_with(&options.clone().database("postgres"))
            .await
            .expect("connect to test postgres");
        sqlx::query(&format!("create database {name}"))
            .execute(&mut admin)
            .await
            .expect("create test database");
        let _ = admin.close().await;
        let url = match base.rsplit_once('/') {
            Some((server, last)) if !last.contains('@') && !server.ends_with('/') => {
                format!("{server}/{name}")
            }
            _ => format!("{}/{name}", base.trim_end_matches('/')),
        };
        let pool = crate::db::connect(&url, 4)
            .await
            .expect("connect to test database");
        migrator.run(&pool).await.expect("migrate test database");
        TestDatabase { url, pool }
    }
}

impl TestDatabase {
    /// Creates a new database migrated only up to `version` (an upgrade test's "before").
    pub async fn create_at(version: i64) -> TestDatabase {
        let migrator = sqlx::migrate::Migrator {
            migrations: crate::db::MIGRATOR
                .iter()
                .filter(|m| m.version <= version)
                .cloned()
                .collect::<Vec<_>>()
                .into(),
            // sqlx's own defaults (its fields are public for `migrate!`, semver-exempt)
            ignore_missing: false,
            locking: true,
            no_tx: false,
        };
        Self::create_with(&base_database_url(), &migrator).await
    }

    /// Drops the database (for long-lived users like benchmarks; test runs are cleaned by
    /// `ops/test`).
    pub async fn drop_database(self) -> Result<(), sqlx::Error> {
        self.pool.close().await;
        let options = PgConnectOptions::from_str(&self.url)?;
        let name = options.get_database().unwrap_or_default().to_string();
        let mut admin = PgConnection::connect_with(&options.database("postgres")).await?;
        sqlx::query(&format!("drop database if exists \"{name}\" with (force)"))
            .execute(&mut admin)
            .await?;
        admin.close().await
    }
}
