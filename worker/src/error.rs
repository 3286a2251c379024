//! Errors of the worker crate.

/// What can stop a job attempt or a worker loop short of an outcome.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("queue: {0}")]
    Queue(#[from] apalis_redis::Error),
    #[error("consumer: {0}")]
    Consumer(#[from] crate::backend::QueueError),
    #[error("serialization: {0}")]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Shared(#[from] shared::error::Error),
    #[error("{0}")]
    Config(String),
}
