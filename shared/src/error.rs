//! Errors of the shared library.

/// Anything the shared seams can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("serialization: {0}")]
    Json(#[from] serde_json::Error),
    #[error("template: {0}")]
    Template(#[from] minijinja::Error),
    #[error("email: {0}")]
    Email(String),
    #[error("{0}")]
    Other(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
