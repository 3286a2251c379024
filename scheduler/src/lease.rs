//! The leader lease: one Redis key, `<QUEUE_PREFIX>:scheduler:leader`, set with NX and an
//! expiry, renewed on every tick by its holder only.
//!
//! The lease decides who *tries* to fire; it is not what makes fires unique (a paused leader
//! may still believe it leads for a moment after its lease expired). That is the fire
//! ledger's job: see [`crate::ledger`].
use std::time::Duration;

use redis::aio::ConnectionManager;

/// Takes the lease when it is free and extends it when it is ours, in one step.
const HOLD: &str = r#"
    if redis.call('GET', KEYS[1]) == ARGV[1] then
      redis.call('PEXPIRE', KEYS[1], ARGV[2])
      return 1
    end
    if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
      return 1
    end
    return 0"#;

/// Gives the lease up, only if it is still ours.
const RELEASE: &str = r#"
    if redis.call('GET', KEYS[1]) == ARGV[1] then
      return redis.call('DEL', KEYS[1])
    end
    return 0"#;

/// This process's claim on the leadership.
#[derive(Clone)]
pub struct Lease {
    conn: ConnectionManager,
    key: String,
    holder: String,
    ttl: Duration,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("key", &self.key)
            .field("holder", &self.holder)
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl Lease {
    /// A lease on `<prefix>:scheduler:leader` for `holder`, lasting `ttl` per renewal.
    pub fn new(conn: ConnectionManager, prefix: &str, holder: &str, ttl: Duration) -> Self {
        Lease {
            conn,
            key: format!("{prefix}:scheduler:leader"),
            holder: holder.to_string(),
            ttl,
        }
    }

    pub fn holder(&self) -> &str {
        &self.holder
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Takes or renews the lease; `true` when this process leads for the next `ttl`.
    #[tracing::instrument(level = "debug", skip(self), fields(holder = %self.holder))]
    pub async fn hold(&mut self) -> Result<bool, redis::RedisError> {
        let held: i64 = redis::Script::new(HOLD)
            .key(&self.key)
            .arg(&self.holder)
            .arg(self.ttl.as_millis() as u64)
            .invoke_async(&mut self.conn)
            .await?;
        Ok(held == 1)
    }

    /// Gives the lease up so another replica takes over at once instead of after `ttl`.
    #[tracing::instrument(level = "debug", skip(self), fields(holder = %self.holder))]
    pub async fn release(&mut self) -> Result<(), redis::RedisError> {
        let _: i64 = redis::Script::new(RELEASE)
            .key(&self.key)
            .arg(&self.holder)
            .invoke_async(&mut self.conn)
            .await?;
        Ok(())
    }

    /// Who holds the lease now, if anyone.
    pub async fn current(&mut self) -> Result<Option<String>, redis::RedisError> {
        redis::cmd("GET")
            .arg(&self.key)
            .query_async(&mut self.conn)
            .await
    }
}
