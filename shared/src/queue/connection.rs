//! One connection type for the three Redis set-ups the platform runs on, so that the api,
//! worker, scheduler and relay share every queue operation whatever the topology:
//! - one node (`REDIS_URL`): redis-rs' `ConnectionManager`, reconnecting by itself;
//! - a Redis Cluster (`REDIS_CLUSTER_NODES`): redis-rs' cluster-async connection, which
//!   routes each command (and each single-slot pipeline or script) to the primary of its
//!   slot and follows `MOVED`/failovers. Every multi-key command and script of ours touches
//!   keys of one hash tag ([`super::queue_name`]), so none is refused with CROSSSLOT;
//! - a Sentinel set (`REDIS_SENTINELS` + `REDIS_SENTINEL_MASTER`): a multiplexed connection
//!   to the master the sentinels name, dropped on an error that says it is gone or demoted
//!   (I/O, `READONLY`) and asked for again on the next command, so that after a failover
//!   the next command reaches the promoted replica.
use std::{sync::Arc, time::Duration};

use redis::{
    Cmd, ConnectionInfo, IntoConnectionInfo, Pipeline, RedisError, RedisFuture, RedisResult, Value,
    aio::{ConnectionLike, ConnectionManagerConfig, MultiplexedConnection},
    cluster_async::ClusterConnection,
    sentinel::{SentinelClient, SentinelServerType},
};

/// Where Redis is (`shared::config::Config::redis`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A `redis://` URL.
    Single(String),
    /// `redis://host:port` seeds of a cluster.
    Cluster(Vec<String>),
    /// `host:port` sentinels and the name of the master they watch.
    Sentinel {
        sentinels: Vec<String>,
        master: String,
    },
}

impl From<&str> for Target {
    fn from(url: &str) -> Self {
        Target::Single(url.to_string())
    }
}

impl From<String> for Target {
    fn from(url: String) -> Self {
        Target::Single(url)
    }
}

impl From<&String> for Target {
    fn from(url: &String) -> Self {
        Target::Single(url.clone())
    }
}

impl From<&Target> for Target {
    fn from(target: &Target) -> Self {
        target.clone()
    }
}

impl Target {
    pub fn is_cluster(&self) -> bool {
        matches!(self, Target::Cluster(_))
    }

    /// The primaries that hold the data now: the node, the cluster's primaries (from
    /// `CLUSTER SLOTS` of the first seed that answers), or the master the sentinels name.
    /// What the wake-up connections (one per primary: client tracking is per node) and the
    /// cluster-wide scans connect to.
    pub async fn primaries(&self) -> RedisResult<Vec<ConnectionInfo>> {
        match self {
            Target::Single(url) => Ok(vec![url.as_str().into_connection_info()?]),
            Target::Sentinel { .. } => {
                let client = self.sentinel_client()?.async_get_client().await?;
                Ok(vec![client.get_connection_info().clone()])
            }
            Target::Cluster(seeds) => {
                let mut last = None;
                for seed in seeds {
                    match cluster_primaries(seed).await {
                        Ok(nodes) if !nodes.is_empty() => return Ok(nodes),
                        Ok(_) => {}
                        Err(e) => last = Some(e),
                    }
                }
                Err(last.unwrap_or_else(|| {
                    RedisError::from((redis::ErrorKind::Io, "no cluster seed answered"))
                }))
            }
        }
    }

    fn sentinel_client(&self) -> RedisResult<SentinelClient> {
        let Target::Sentinel { sentinels, master } = self else {
            return Err(RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "not a sentinel target",
            )));
        };
        let urls: Vec<String> = sentinels.iter().map(|s| format!("redis://{s}")).collect();
        SentinelClient::build(urls, master.clone(), None, SentinelServerType::Master)
    }
}

/// The primaries of a cluster, read from one node's `CLUSTER SLOTS`.
async fn cluster_primaries(seed: &str) -> RedisResult<Vec<ConnectionInfo>> {
    let client = redis::Client::open(seed)?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(2)));
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    let slots: Vec<Value> = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async(&mut conn)
        .await?;
    let mut nodes: Vec<String> = Vec::new();
    for range in slots {
        let Value::Array(parts) = range else { continue };
        let Some(Value::Array(primary)) = parts.get(2) else {
            continue;
        };
        let host: String = match primary.first() {
            Some(v) => redis::from_redis_value(v.clone())?,
            None => continue,
        };
        let port: u16 = match primary.get(1) {
            Some(v) => redis::from_redis_value(v.clone())?,
            None => continue,
        };
        let url = format!("redis://{host}:{port}");
        if !nodes.contains(&url) {
            nodes.push(url);
        }
    }
    nodes
        .iter()
        .map(|n| n.as_str().into_connection_info())
        .collect()
}

/// A connection to the platform's Redis, whatever its topology; cheap to clone (clones
/// share the underlying connection).
#[derive(Clone)]
pub struct ConnectionManager {
    kind: Kind,
    target: Arc<Target>,
}

#[derive(Clone)]
enum Kind {
    Single(redis::aio::ConnectionManager),
    Cluster(ClusterConnection),
    Sentinel(Arc<SentinelConnection>),
}

impl std::fmt::Debug for ConnectionManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionManager")
            .field("target", &self.target)
            .finish()
    }
}

/// The response timeout of every data connection: redis-rs' default 500 ms turns a busy
/// moment into a fatal worker error.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(2);

/// Connects to `target` (a URL is a single node).
pub async fn connect(target: impl Into<Target>) -> RedisResult<ConnectionManager> {
    let target = target.into();
    let kind = match &target {
        Target::Single(url) => {
            let config = ConnectionManagerConfig::new()
                .set_response_timeout(Some(RESPONSE_TIMEOUT))
                .set_connection_timeout(Some(CONNECTION_TIMEOUT))
                .set_number_of_retries(3)
                .set_max_delay(Duration::from_secs(1));
            Kind::Single(
                redis::Client::open(url.as_str())?
                    .get_connection_manager_with_config(config)
                    .await?,
            )
        }
        Target::Cluster(seeds) => {
            let client = redis::cluster::ClusterClient::builder(seeds.clone())
                .connection_timeout(CONNECTION_TIMEOUT)
                .response_timeout(RESPONSE_TIMEOUT)
                // a failover takes a few seconds (cluster-node-timeout plus the election):
                // retries with back-off ride most of it out instead of failing the command
                .retries(6)
                .min_retry_wait(100)
                .max_retry_wait(2_000)
                .build()?;
            Kind::Cluster(client.get_async_connection().await?)
        }
        Target::Sentinel { .. } => {
            let sentinel = SentinelConnection {
                client: tokio::sync::Mutex::new(target.sentinel_client()?),
                current: std::sync::Mutex::new(None),
            };
            // fail at start-up, not at the first command, when no master can be found
            sentinel.get().await?;
            Kind::Sentinel(Arc::new(sentinel))
        }
    };
    Ok(ConnectionManager {
        kind,
        target: Arc::new(target),
    })
}

impl ConnectionManager {
    /// Where this connection goes.
    pub fn target(&self) -> &Target {
        &self.target
    }
}

/// The master the sentinels name, connected on demand and forgotten when it fails.
struct SentinelConnection {
    client: tokio::sync::Mutex<SentinelClient>,
    current: std::sync::Mutex<Option<MultiplexedConnection>>,
}

impl SentinelConnection {
    async fn get(&self) -> RedisResult<MultiplexedConnection> {
        if let Some(conn) = self.current.lock().ok().and_then(|c| c.clone()) {
            return Ok(conn);
        }
        // one resolution at a time: a burst of failing commands asks the sentinels once
        let mut client = self.client.lock().await;
        if let Some(conn) = self.current.lock().ok().and_then(|c| c.clone()) {
            return Ok(conn);
        }
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECTION_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        let conn = client
            .async_get_client()
            .await?
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        if let Ok(mut slot) = self.current.lock() {
            *slot = Some(conn.clone());
        }
        Ok(conn)
    }

    /// Forgets the master after an error that says it is unreachable or no longer master.
    fn check<T>(&self, result: RedisResult<T>) -> RedisResult<T> {
        if let Err(e) = &result
            && master_gone(e)
            && let Ok(mut slot) = self.current.lock()
        {
            *slot = None;
        }
        result
    }
}

/// Whether `e` says the node is gone or not a master (any more): after a failover the
/// old master, if it comes back, is a replica and refuses writes with `READONLY`.
pub fn master_gone(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.code() == Some("READONLY")
        || e.code() == Some("MASTERDOWN")
}

impl ConnectionLike for ConnectionManager {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match &mut self.kind {
            Kind::Single(conn) => conn.req_packed_command(cmd),
            Kind::Cluster(conn) => conn.req_packed_command(cmd),
            Kind::Sentinel(sentinel) => {
                let sentinel = sentinel.clone();
                Box::pin(async move {
                    let mut conn = sentinel.get().await?;
                    let result = conn.req_packed_command(cmd).await;
                    sentinel.check(result)
                })
            }
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match &mut self.kind {
            Kind::Single(conn) => conn.req_packed_commands(cmd, offset, count),
            Kind::Cluster(conn) => conn.req_packed_commands(cmd, offset, count),
            Kind::Sentinel(sentinel) => {
                let sentinel = sentinel.clone();
                Box::pin(async move {
                    let mut conn = sentinel.get().await?;
                    let result = conn.req_packed_commands(cmd, offset, count).await;
                    sentinel.check(result)
                })
            }
        }
    }

    fn get_db(&self) -> i64 {
        match &self.kind {
            Kind::Single(conn) => conn.get_db(),
            _ => 0,
        }
    }
}

/// A plain connection to one node (a primary of [`Target::primaries`]), for what must run
/// on every node: scans, `INFO`, client tracking.
pub async fn node_connection(info: ConnectionInfo) -> RedisResult<MultiplexedConnection> {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECTION_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT));
    redis::Client::open(info)?
        .get_multiplexed_async_connection_with_config(&config)
        .await
}
