//! The leader lease: one Redis key, `<QUEUE_PREFIX>:scheduler:leader`, taken with `SET NX
//! PX` and renewed by its holder only, every third of its time to live (the scheduler
//! decides when: [`crate::Scheduler`]).
//!
//! The lease decides who *tries* to fire; it is not what makes fires unique (a paused leader
//! may still believe it leads for a moment after its lease expired). That is the fire
//! ledger's job: see [`crate::ledger`].
//!
//! Cost: with the default 60 s lease, a renewal every 20 s of two commands (`EVALSHA` and
//! the `SET` inside it; a `GET` + `PEXPIRE` script would be three) and one `SET NX` per
//! standby replica at the same pace: 8,640 and 4,320 commands a day. Renewing on every 1 s
//! tick cost 259,000 (ops/bench/idle).
use std::time::Duration;

use shared::queue::ConnectionManager;

/// Extends the lease if it is ours, in one step and one inner command: the `SET` returns
/// the value it replaced, and a lease found to be another's is put back (its expiry moved
/// to one lease from now, which its holder's next renewal would do anyway).
const RENEW: &str = r#"
    local was = redis.call('SET', KEYS[1], ARGV[1], 'XX', 'PX', ARGV[2], 'GET')
    if was == ARGV[1] then return 1 end
    if was then redis.call('SET', KEYS[1], was, 'KEEPTTL') end
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
    /// whether the last take or renewal succeeded
    held: bool,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("key", &self.key)
            .field("holder", &self.holder)
            .field("ttl", &self.ttl)
            .field("held", &self.held)
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
            held: false,
        }
    }

    pub fn holder(&self) -> &str {
        &self.holder
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Renews the lease when it is ours, or takes it when it is free; `true` when this
    /// process leads for the next `ttl`.
    #[tracing::instrument(level = "debug", skip(self), fields(holder = %self.holder))]
    pub async fn hold(&mut self) -> Result<bool, redis::RedisError> {
        let ttl = self.ttl.as_millis() as u64;
        if self.held {
            self.held = false;
            let renewed: i64 = redis::Script::new(RENEW)
                .key(&self.key)
                .arg(&self.holder)
                .arg(ttl)
                .invoke_async(&mut self.conn)
                .await?;
            if renewed == 1 {
                self.held = true;
                return Ok(true);
            }
        }
        let taken: Option<String> = redis::cmd("SET")
            .arg(&self.key)
            .arg(&self.holder)
            .arg("NX")
            .arg("PX")
            .arg(ttl)
            .query_async(&mut self.conn)
            .await?;
        self.held = taken.is_some();
        Ok(self.held)
    }

    /// Gives the lease up so another replica takes over at once instead of after `ttl`.
    #[tracing::instrument(level = "debug", skip(self), fields(holder = %self.holder))]
    pub async fn release(&mut self) -> Result<(), redis::RedisError> {
        self.held = false;
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
