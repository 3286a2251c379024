//! Everything the scheduler can fail with.
use shared::{config::ConfigError, schedule::ScheduleError};

/// The scheduler's one error type.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("invalid scheduler setting: {0}")]
    Settings(String),
    #[error(transparent)]
    Schedule(#[from] ScheduleError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
