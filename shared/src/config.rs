//! Typed configuration, read once from the environment at start-up.
//!
//! Every binary calls [`Config::from_env`]; nothing else in the codebase reads environment
//! variables. Defaults work on a developer machine; a bad value stops start-up with a
//! message that names the variable.
use std::time::Duration;

use serde::Deserialize;

/// Why configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid configuration: {0}")]
    Env(#[from] envy::Error),
    #[error("invalid configuration: {name}={value:?}: {reason}")]
    Invalid {
        name: &'static str,
        value: String,
        reason: String,
    },
}

/// Settings shared by the api, worker and scheduler processes.
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    #[serde(default = "defaults::database_url")]
    pub database_url: String,
    #[serde(default = "defaults::redis_url")]
    pub redis_url: String,
    /// Redis Cluster seeds, comma-separated `redis://host:port`; wins over `REDIS_URL`.
    #[serde(default)]
    pub redis_cluster_nodes: Option<String>,
    /// Sentinels, comma-separated `host:port`, watching [`Config::redis_sentinel_master`];
    /// wins over `REDIS_URL` (not over a cluster).
    #[serde(default)]
    pub redis_sentinels: Option<String>,
    #[serde(default)]
    pub redis_sentinel_master: Option<String>,
    /// Each queue is split into this many partitions, each its own hash slot, so that one
    /// hot queue does not pin one cluster shard (`shared::queue::partition_of`).
    #[serde(default = "defaults::queue_partitions")]
    pub queue_partitions: u32,
    /// Postgres connections per api or worker process.
    #[serde(default = "defaults::database_pool_size")]
    pub database_pool_size: u32,
    /// Prefixes every Redis key this platform owns, so that tests and tenants never collide.
    #[serde(default = "defaults::queue_prefix")]
    pub queue_prefix: String,
    #[serde(default = "defaults::host")]
    pub host: String,
    #[serde(default = "defaults::port")]
    pub port: u16,
    /// Port of the worker's own /metrics and /health listener (0 picks a free one).
    #[serde(default = "defaults::worker_port")]
    pub worker_port: u16,
    #[serde(default = "defaults::jwt_secret")]
    pub jwt_secret: String,
    #[serde(default = "defaults::jwt_ttl_minutes")]
    pub jwt_ttl_minutes: i64,
    /// `smtp://host:port` (plain) or `smtps://...`; unset means write .eml files to `mail_dir`.
    #[serde(default)]
    pub smtp_url: Option<String>,
    #[serde(default = "defaults::mail_dir")]
    pub mail_dir: String,
    /// The sender of every email; its domain also names the Message-IDs and calendar UIDs.
    #[serde(default = "defaults::mail_from")]
    pub mail_from: String,
    /// The web app's base URL, for the "manage this lesson" link in every booking email.
    #[serde(default = "defaults::app_url")]
    pub app_url: String,
    #[serde(default = "defaults::reminder_lead_minutes")]
    pub reminder_lead_minutes: i64,
    /// Worker concurrency per queue.
    #[serde(default = "defaults::worker_concurrency")]
    pub worker_concurrency: usize,
    /// An enqueued job not finished after this long is pushed again by the reconciler.
    #[serde(default = "defaults::reconcile_after_secs")]
    pub reconcile_after_secs: u64,
    /// Worker process heartbeat; a process silent for 3 beats is presumed dead and what it
    /// had fetched returns to the queues (`shared::queue::DEAD_AFTER_BEATS`).
    #[serde(default = "defaults::heartbeat_secs")]
    pub heartbeat_secs: u64,
    /// An email claim older than this was abandoned by a worker that died mid-send.
    #[serde(default = "defaults::email_claim_timeout_secs")]
    pub email_claim_timeout_secs: u64,
    /// How long a stopping worker waits for in-flight jobs.
    #[serde(default = "defaults::drain_secs")]
    pub drain_secs: u64,
    #[serde(default = "defaults::log_format")]
    pub log_format: String,
    /// Requests per second allowed per client on public and write endpoints.
    #[serde(default = "defaults::rate_limit_per_sec")]
    pub rate_limit_per_sec: u32,
    #[serde(default = "defaults::rate_limit_burst")]
    pub rate_limit_burst: u32,
    /// Key of the HMAC-SHA256 that search events store instead of the client's address.
    /// Required unless the API serves loopback only (see [`Config::search_ip_hash_key`]).
    #[serde(default)]
    pub search_ip_hash_key: Option<String>,
    /// The IANA zone whose local days the search analytics count in.
    #[serde(default = "defaults::analytics_tz")]
    pub analytics_tz: String,
    /// Benchmark only (`ops/bench/idle`): this many throwaway queues registered beside the
    /// real kinds, to measure what each queue a worker runs costs Redis at rest.
    #[serde(default)]
    pub bench_extra_queues: usize,
    /// How long a data export can be downloaded before it is deleted.
    #[serde(default = "defaults::export_ttl_days")]
    pub export_ttl_days: i64,
    /// How long search events and their interactions are kept (the retention sweep).
    #[serde(default = "defaults::retention_search_days")]
    pub retention_search_days: i64,
    /// Whether the ops dashboard's session cookie is marked `Secure` (sent over HTTPS
    /// only). On by default; off only for plain-HTTP local use and tests.
    #[serde(default = "defaults::ops_cookie_secure")]
    pub ops_cookie_secure: bool,
    /// How long an ops dashboard session lasts, in minutes (never beyond the token's own
    /// expiry).
    #[serde(default = "defaults::ops_session_minutes")]
    pub ops_session_minutes: i64,
}

mod defaults {
    pub fn ops_cookie_secure() -> bool {
        true
    }
    pub fn ops_session_minutes() -> i64 {
        8 * 60
    }
    pub fn export_ttl_days() -> i64 {
        7
    }
    pub fn retention_search_days() -> i64 {
        365
    }
    pub fn database_url() -> String {
        "postgres://postgres@127.0.0.1:5432/instainstru".into()
    }
    pub fn database_pool_size() -> u32 {
        20
    }
    pub fn redis_url() -> String {
        "redis://127.0.0.1:6379/0".into()
    }
    pub fn queue_partitions() -> u32 {
        1
    }
    pub fn queue_prefix() -> String {
        "instainstru".into()
    }
    pub fn host() -> String {
        "127.0.0.1".into()
    }
    pub fn port() -> u16 {
        8080
    }
    pub fn worker_port() -> u16 {
        9101
    }
    pub fn jwt_secret() -> String {
        "dev-only-secret-change-me-in-production".into()
    }
    pub fn jwt_ttl_minutes() -> i64 {
        60 * 24
    }
    pub fn mail_dir() -> String {
        "var/mail".into()
    }
    pub fn mail_from() -> String {
        "InstaInstru <no-reply@instainstru.test>".into()
    }
    /// The web app's development server.
    pub fn app_url() -> String {
        "http://localhost:3000".into()
    }
    pub fn reminder_lead_minutes() -> i64 {
        1440
    }
    pub fn worker_concurrency() -> usize {
        32
    }
    pub fn reconcile_after_secs() -> u64 {
        120
    }
    /// One beat per worker process is its only steady Redis traffic at rest (about 4,300
    /// commands a day with the look for dead processes, ops/bench/idle): 30 s puts a crashed
    /// worker's in-flight jobs back after 90-120 s (5 s and 6 beats did after 30 s, at
    /// 30,000 commands a day per queue).
    pub fn heartbeat_secs() -> u64 {
        30
    }
    /// Longer than the longest SMTP send (`shared::email::smtp::SmtpTarget::longest_send`,
    /// 260 s): a claim younger than that may belong to a send still waiting for its verdict.
    pub fn email_claim_timeout_secs() -> u64 {
        300
    }
    pub fn drain_secs() -> u64 {
        20
    }
    pub fn log_format() -> String {
        "text".into()
    }
    pub fn rate_limit_per_sec() -> u32 {
        200
    }
    pub fn rate_limit_burst() -> u32 {
        400
    }
    pub fn analytics_tz() -> String {
        "America/New_York".into()
    }
}

/// The IP hash key of local development, used only while the API listens on loopback.
const DEV_SEARCH_IP_HASH_KEY: &str = "dev-only-search-ip-hash-key-change-me";
/// The shortest `SEARCH_IP_HASH_KEY` accepted: an HMAC key guessable by brute force would
/// let anyone holding the table recover addresses (the IPv4 space is only 2^32).
const MIN_SEARCH_IP_HASH_KEY_LEN: usize = 32;

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(std::env::vars())
    }

    /// Reads configuration from explicit pairs (tests use this instead of the environment).
    pub fn from_vars(
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let config: Config = envy::from_iter(vars)?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |name, value: &str, reason: &str| ConfigError::Invalid {
            name,
            value: value.to_string(),
            reason: reason.to_string(),
        };
        if !self.database_url.starts_with("postgres://")
            && !self.database_url.starts_with("postgresql://")
        {
            return Err(invalid(
                "DATABASE_URL",
                &self.database_url,
                "must be a postgres:// URL",
            ));
        }
        if !self.redis_url.starts_with("redis://") && !self.redis_url.starts_with("rediss://") {
            return Err(invalid(
                "REDIS_URL",
                &self.redis_url,
                "must be a redis:// URL",
            ));
        }
        if let Some(smtp) = &self.smtp_url
            && !smtp.starts_with("smtp://")
            && !smtp.starts_with("smtps://")
        {
            return Err(invalid(
                "SMTP_URL",
                smtp,
                "must be an smtp:// or smtps:// URL",
            ));
        }
        if self.mail_from.parse::<lettre::message::Mailbox>().is_err() {
            return Err(invalid(
                "MAIL_FROM",
                &self.mail_from,
                "must be an address, e.g. InstaInstru <no-reply@example.com>",
            ));
        }
        match url::Url::parse(&self.app_url) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {}
            _ => {
                return Err(invalid(
                    "APP_URL",
                    &self.app_url,
                    "must be an http:// or https:// URL",
                ));
            }
        }
        if self.jwt_secret.len() < 16 {
            return Err(invalid(
                "JWT_SECRET",
                "<hidden>",
                "must be at least 16 characters",
            ));
        }
        if self.worker_concurrency == 0 || self.worker_concurrency > 4096 {
            return Err(invalid(
                "WORKER_CONCURRENCY",
                &self.worker_concurrency.to_string(),
                "must be between 1 and 4096",
            ));
        }
        if self.reminder_lead_minutes < 0 {
            return Err(invalid(
                "REMINDER_LEAD_MINUTES",
                &self.reminder_lead_minutes.to_string(),
                "must not be negative",
            ));
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return Err(invalid(
                "LOG_FORMAT",
                &self.log_format,
                "must be text or json",
            ));
        }
        if self.database_pool_size == 0 || self.database_pool_size > 1000 {
            return Err(invalid(
                "DATABASE_POOL_SIZE",
                &self.database_pool_size.to_string(),
                "must be between 1 and 1000",
            ));
        }
        if !(1..=365).contains(&self.export_ttl_days) {
            return Err(invalid(
                "EXPORT_TTL_DAYS",
                &self.export_ttl_days.to_string(),
                "must be between 1 and 365",
            ));
        }
        // the rollups need their days' events (the rollup recomputes up to a few days back),
        // and beyond ten years a sweep no longer bounds anything
        if !(30..=3650).contains(&self.retention_search_days) {
            return Err(invalid(
                "RETENTION_SEARCH_DAYS",
                &self.retention_search_days.to_string(),
                "must be between 30 and 3650",
            ));
        }
        if self.rate_limit_per_sec == 0 {
            return Err(invalid("RATE_LIMIT_PER_SEC", "0", "must be positive"));
        }
        if self
            .search_ip_hash_key
            .as_ref()
            .is_some_and(|k| k.len() < MIN_SEARCH_IP_HASH_KEY_LEN)
        {
            return Err(invalid(
                "SEARCH_IP_HASH_KEY",
                "<hidden>",
                "must be at least 32 characters",
            ));
        }
        if self.analytics_tz.parse::<chrono_tz::Tz>().is_err() {
            return Err(invalid(
                "ANALYTICS_TZ",
                &self.analytics_tz,
                "must be an IANA time zone name",
            ));
        }
        if self.heartbeat_secs == 0 {
            return Err(invalid("HEARTBEAT_SECS", "0", "must be positive"));
        }
        if !(1..=256).contains(&self.queue_partitions) {
            return Err(invalid(
                "QUEUE_PARTITIONS",
                &self.queue_partitions.to_string(),
                "must be between 1 and 256",
            ));
        }
        if let Err(e) = self.redis_target() {
            let (name, value) = match (&self.redis_cluster_nodes, &self.redis_sentinels) {
                (Some(nodes), _) => ("REDIS_CLUSTER_NODES", nodes.clone()),
                (None, Some(s)) => ("REDIS_SENTINELS", s.clone()),
                _ => ("REDIS_URL", self.redis_url.clone()),
            };
            return Err(invalid(name, &value, &e));
        }
        if self.bench_extra_queues > 1000 {
            return Err(invalid(
                "BENCH_EXTRA_QUEUES",
                &self.bench_extra_queues.to_string(),
                "must be at most 1000",
            ));
        }
        Ok(())
    }

    /// Which Redis to use: a cluster when `REDIS_CLUSTER_NODES` is set, else a Sentinel set
    /// when `REDIS_SENTINELS` is, else the single node of `REDIS_URL`.
    pub fn redis_target(&self) -> Result<crate::queue::Target, String> {
        let list = |s: &str| -> Vec<String> {
            s.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        };
        if let Some(nodes) = self
            .redis_cluster_nodes
            .as_deref()
            .filter(|s| !s.trim().is_empty())
        {
            let nodes = list(nodes);
            if let Some(bad) = nodes.iter().find(|n| !n.starts_with("redis://")) {
                return Err(format!("{bad} is not a redis://host:port seed"));
            }
            return Ok(crate::queue::Target::Cluster(nodes));
        }
        if let Some(sentinels) = self
            .redis_sentinels
            .as_deref()
            .filter(|s| !s.trim().is_empty())
        {
            let Some(master) = self.redis_sentinel_master.clone().filter(|m| !m.is_empty()) else {
                return Err("REDIS_SENTINEL_MASTER must name the master".into());
            };
            let sentinels = list(sentinels);
            if let Some(bad) = sentinels
                .iter()
                .find(|s| s.contains("://") || !s.contains(':'))
            {
                return Err(format!("{bad} is not a host:port sentinel"));
            }
            return Ok(crate::queue::Target::Sentinel { sentinels, master });
        }
        Ok(crate::queue::Target::Single(self.redis_url.clone()))
    }

    /// [`Config::redis_target`], validated at load.
    pub fn redis(&self) -> crate::queue::Target {
        self.redis_target()
            .unwrap_or_else(|_| crate::queue::Target::Single(self.redis_url.clone()))
    }

    /// The zone of the analytics days (validated at load).
    pub fn analytics_tz(&self) -> chrono_tz::Tz {
        self.analytics_tz
            .parse()
            .unwrap_or(chrono_tz::America::New_York)
    }

    /// The key the API hashes client addresses with. `SEARCH_IP_HASH_KEY` is required
    /// outside local development, which is an API listening on a loopback `HOST` only (the
    /// default): there a fixed development key stands in, as the default `JWT_SECRET` does.
    /// The API asks for it at start-up, so a deployment without it does not start.
    pub fn search_ip_hash_key(&self) -> Result<&str, ConfigError> {
        match &self.search_ip_hash_key {
            Some(key) => Ok(key),
            None if self.serves_loopback_only() => Ok(DEV_SEARCH_IP_HASH_KEY),
            None => Err(ConfigError::Invalid {
                name: "SEARCH_IP_HASH_KEY",
                value: String::new(),
                reason: format!(
                    "is required when the API listens beyond loopback (HOST={})",
                    self.host
                ),
            }),
        }
    }

    fn serves_loopback_only(&self) -> bool {
        self.host == "localhost"
            || self
                .host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }

    /// How long search events and interactions are kept.
    pub fn search_retention(&self) -> chrono::Duration {
        chrono::Duration::days(self.retention_search_days)
    }

    /// How long a data export can be downloaded.
    pub fn export_ttl(&self) -> chrono::Duration {
        chrono::Duration::days(self.export_ttl_days)
    }

    pub fn reconcile_after(&self) -> Duration {
        Duration::from_secs(self.reconcile_after_secs)
    }

    pub fn reminder_lead(&self) -> chrono::Duration {
        chrono::Duration::minutes(self.reminder_lead_minutes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_work_locally() {
        let config = Config::from_vars(vars(&[])).expect("defaults are valid");
        assert_eq!(config.port, 8080);
        assert_eq!(config.reminder_lead_minutes, 1440);
        assert!(config.smtp_url.is_none());
    }

    #[test]
    fn the_ip_hash_key_is_required_beyond_loopback() {
        let local = Config::from_vars(vars(&[])).expect("defaults");
        assert!(local.search_ip_hash_key().is_ok());
        let exposed = Config::from_vars(vars(&[("HOST", "0.0.0.0")])).expect("valid");
        let err = exposed.search_ip_hash_key().unwrap_err().to_string();
        assert!(err.contains("SEARCH_IP_HASH_KEY"), "{err}");
        let key = "k".repeat(32);
        let keyed = Config::from_vars(vars(&[("HOST", "0.0.0.0"), ("SEARCH_IP_HASH_KEY", &key)]))
            .expect("valid");
        assert_eq!(keyed.search_ip_hash_key().ok(), Some(key.as_str()));
        let err = Config::from_vars(vars(&[("SEARCH_IP_HASH_KEY", "short")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("SEARCH_IP_HASH_KEY") && !err.contains("short"),
            "{err}"
        );
        let err = Config::from_vars(vars(&[("ANALYTICS_TZ", "Mars/Olympus")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("ANALYTICS_TZ"), "{err}");
    }

    #[test]
    fn a_bad_value_names_its_variable() {
        let err = Config::from_vars(vars(&[("PORT", "eighty")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("PORT"), "{err}");
        let err = Config::from_vars(vars(&[("SMTP_URL", "http://x")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("SMTP_URL"), "{err}");
        let err = Config::from_vars(vars(&[("REDIS_URL", "localhost")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("REDIS_URL"), "{err}");
        let err = Config::from_vars(vars(&[("MAIL_FROM", "nobody")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("MAIL_FROM"), "{err}");
        let err = Config::from_vars(vars(&[("APP_URL", "localhost:3000")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("APP_URL"), "{err}");
        for (name, value) in [
            ("RETENTION_SEARCH_DAYS", "0"),
            ("RETENTION_SEARCH_DAYS", "99999"),
            ("RETENTION_SEARCH_DAYS", "a year"),
            ("EXPORT_TTL_DAYS", "0"),
        ] {
            let err = Config::from_vars(vars(&[(name, value)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(name), "{name}={value}: {err}");
        }
        let config = Config::from_vars(vars(&[])).expect("defaults");
        assert_eq!(config.retention_search_days, 365);
    }
}
