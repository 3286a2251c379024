//! The scheduler's own settings (`SCHEDULER_*`), next to the shared [`shared::config::Config`].
use std::time::Duration;

use serde::Deserialize;

use crate::error::{Error, Result};

/// How the leader loop ticks and leases.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How often the loop wakes to renew the lease and fire what came due.
    pub tick: Duration,
    /// How long the lease lasts without renewal: a dead leader is replaced within this.
    pub lease: Duration,
    /// How often the dead man's switch metrics are refreshed.
    pub health_every: Duration,
    /// Port of the `/metrics` and `/health` listener (0 picks a free one).
    pub port: u16,
    /// This process's name in the lease and the ledger.
    pub instance: String,
}

#[derive(Deserialize)]
struct Raw {
    #[serde(default = "tick_ms")]
    tick_ms: u64,
    #[serde(default = "lease_ms")]
    lease_ms: u64,
    #[serde(default = "health_ms")]
    health_ms: u64,
    #[serde(default = "port")]
    port: u16,
    #[serde(default)]
    instance: Option<String>,
}

fn tick_ms() -> u64 {
    1000
}
/// A dead leader is replaced within this (a stopping one gives the lease up at once); it is
/// renewed every third of it, so it sets the scheduler's steady Redis traffic: 60 s is one
/// renewal every 20 s (8,640 commands a day; 10 s made it 52,000).
fn lease_ms() -> u64 {
    60_000
}
fn health_ms() -> u64 {
    15_000
}
fn port() -> u16 {
    9102
}

impl Settings {
    /// Reads `SCHEDULER_TICK_MS`, `SCHEDULER_LEASE_MS`, `SCHEDULER_HEALTH_MS`,
    /// `SCHEDULER_PORT` and `SCHEDULER_INSTANCE` from `vars`.
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Result<Self> {
        let vars: Vec<(String, String)> = vars.into_iter().collect();
        let raw: Raw = envy::prefixed("SCHEDULER_")
            .from_iter(vars.iter().cloned())
            .map_err(|e| Error::Settings(e.to_string()))?;
        if raw.tick_ms == 0 || raw.lease_ms < 2 * raw.tick_ms {
            return Err(Error::Settings(format!(
                "SCHEDULER_LEASE_MS={} must be at least twice SCHEDULER_TICK_MS={} (and the tick positive)",
                raw.lease_ms, raw.tick_ms
            )));
        }
        let host = vars
            .iter()
            .find(|(k, _)| k == "HOSTNAME")
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| "scheduler".into());
        let instance = raw.instance.unwrap_or_else(|| {
            let id = uuid::Uuid::new_v4().simple().to_string();
            format!("{host}-{}-{}", std::process::id(), &id[..8])
        });
        Ok(Settings {
            tick: Duration::from_millis(raw.tick_ms),
            lease: Duration::from_millis(raw.lease_ms),
            health_every: Duration::from_millis(raw.health_ms),
            port: raw.port,
            instance,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_validation() {
        let s = Settings::from_vars(Vec::new()).expect("defaults");
        assert_eq!(s.tick, Duration::from_secs(1));
        assert_eq!(s.lease, Duration::from_secs(60));
        let err = Settings::from_vars([("SCHEDULER_LEASE_MS".to_string(), "1500".to_string())])
            .expect_err("lease shorter than two ticks");
        assert!(err.to_string().contains("SCHEDULER_LEASE_MS"), "{err}");
    }
}
