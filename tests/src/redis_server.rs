//! Private Redis servers on free ports, torn down on drop: one node, for tests that stop
//! and restart Redis; a 3-primary, 3-replica Redis Cluster ([`RedisCluster`]); and one
//! primary, one replica and three sentinels ([`RedisSentinels`]).
use std::{path::PathBuf, process::Stdio, time::Duration};

use tokio::process::{Child, Command};

/// A redis-server this test owns; stopped on drop.
pub struct RedisServer {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
    /// arguments beyond the private defaults (cluster mode, replica of ...)
    extra: Vec<String>,
    /// the program: redis-server, or redis-sentinel (whose argument is its config file)
    program: &'static str,
}

impl RedisServer {
    pub async fn start() -> RedisServer {
        Self::start_with(&[]).await
    }

    /// A server with these arguments besides the private defaults.
    pub async fn start_with(extra: &[&str]) -> RedisServer {
        Self::spawn("redis-server", extra, |_, _| Vec::new()).await
    }

    async fn spawn(
        program: &'static str,
        extra: &[&str],
        // from the port and the directory: arguments written before the defaults
        leading: impl FnOnce(u16, &std::path::Path) -> Vec<String>,
    ) -> RedisServer {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!(
            "e2e-redis-{port}-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).expect("redis dir");
        let mut all = leading(port, &dir);
        all.extend(extra.iter().map(|s| s.to_string()));
        let mut server = RedisServer {
            port,
            dir,
            child: None,
            extra: all,
            program,
        };
        server.restart().await;
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Starts it again on the same port (with no data: it keeps nothing on disk).
    pub async fn restart(&mut self) {
        let child = Command::new(self.program)
            .args(&self.extra)
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(self.dir.join("redis.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("{} on PATH: {e}", self.program));
        self.child = Some(child);
        assert!(
            crate::listening(self.port).await,
            "redis-server did not start on {}",
            self.port
        );
    }

    /// Kills it with SIGKILL (no shutdown, no save), and waits until it is gone.
    pub async fn kill(&mut self) {
        self.stop().await
    }

    /// What it logged (kept in its directory until drop).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
    }

    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
            let _ = child.wait().await;
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

async fn node(port: u16) -> redis::aio::MultiplexedConnection {
    redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("connect to a fixture node")
}

/// A 3-primary, 3-replica Redis Cluster on private ports (`redis-cli --cluster create`).
/// A short `cluster-node-timeout` makes a killed primary's replica take over in seconds.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub async fn start() -> RedisCluster {
        let mut nodes = Vec::new();
        for _ in 0..6 {
            nodes.push(
                RedisServer::start_with(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-node-timeout",
                    "1500",
                    // a replica of a primary that died a moment ago may still take over
                    "--cluster-replica-validity-factor",
                    "0",
                ])
                .await,
            );
        }
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for n in &nodes {
            create.arg(format!("127.0.0.1:{}", n.port));
        }
        let out = create
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .await
            .expect("redis-cli on PATH");
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = RedisCluster { nodes };
        cluster.wait_ok(Duration::from_secs(30)).await;
        cluster
    }

    /// `REDIS_CLUSTER_NODES`: every node as a seed.
    pub fn seeds(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// A URL of one node, for what takes one (it is not the cluster's entry point).
    pub fn first_url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.nodes[0].port)
    }

    fn running(&self) -> impl Iterator<Item = &RedisServer> {
        self.nodes.iter().filter(|n| n.child.is_some())
    }

    /// Waits until every running node says `cluster_state:ok` and sees three primaries.
    pub async fn wait_ok(&self, limit: Duration) {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let mut ok = true;
            for n in self.running() {
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query_async(&mut node(n.port).await)
                    .await
                    .unwrap_or_default();
                ok &= info.contains("cluster_state:ok");
            }
            if ok && self.primaries().await.len() == 3 {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the cluster did not become ok"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The slot ranges and their primary's port, from a running node's `CLUSTER SLOTS`.
    pub async fn slots(&self) -> Vec<(u16, u16, u16)> {
        for n in self.running() {
            let reply: redis::RedisResult<Vec<redis::Value>> = redis::cmd("CLUSTER")
                .arg("SLOTS")
                .query_async(&mut node(n.port).await)
                .await;
            let Ok(ranges) = reply else { continue };
            let mut out = Vec::new();
            for range in ranges {
                let redis::Value::Array(parts) = range else {
                    continue;
                };
                let num =
                    |v: &redis::Value| -> u16 { redis::from_redis_value(v.clone()).unwrap_or(0) };
                let port = match parts.get(2) {
                    Some(redis::Value::Array(primary)) => primary.get(1).map(num).unwrap_or(0),
                    _ => 0,
                };
                out.push((num(&parts[0]), num(&parts[1]), port));
            }
            return out;
        }
        Vec::new()
    }

    /// The ports of the primaries serving slots now.
    pub async fn primaries(&self) -> Vec<u16> {
        let mut ports: Vec<u16> = self.slots().await.into_iter().map(|(_, _, p)| p).collect();
        ports.sort();
        ports.dedup();
        ports
    }

    /// The port of the primary serving `key` (`CLUSTER KEYSLOT`).
    pub async fn owner_of(&self, key: &str) -> u16 {
        let n = self.running().next().expect("a running node");
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query_async(&mut node(n.port).await)
            .await
            .expect("CLUSTER KEYSLOT");
        self.slots()
            .await
            .into_iter()
            .find(|(from, to, _)| (*from..=*to).contains(&slot))
            .map(|(_, _, port)| port)
            .expect("a slot owner")
    }

    /// SIGKILLs the primary on `port`; its replica takes over after the node timeout.
    pub async fn kill(&mut self, port: u16) {
        if let Some(n) = self.nodes.iter_mut().find(|n| n.port == port) {
            n.kill().await;
        }
    }

    /// `INFO commandstats` of the node on `port`: command → calls.
    pub async fn commandstats(port: u16) -> Vec<(String, u64)> {
        commandstats(&mut node(port).await).await
    }

    /// Every node's log.
    pub fn logs(&self) -> String {
        self.nodes.iter().map(RedisServer::log).collect()
    }
}

/// `INFO commandstats` of one connection's server: command → calls.
pub async fn commandstats<C: redis::aio::ConnectionLike + Send>(
    conn: &mut C,
) -> Vec<(String, u64)> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .expect("INFO commandstats");
    info.lines()
        .filter_map(|line| {
            let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            Some((name.to_string(), calls))
        })
        .collect()
}

/// One primary, one replica and three sentinels watching them as `mymaster` (quorum 2),
/// on private ports. A killed primary is replaced by the replica within a few seconds.
pub struct RedisSentinels {
    pub primary: RedisServer,
    pub replica: RedisServer,
    pub sentinels: Vec<RedisServer>,
}

pub const SENTINEL_MASTER: &str = "mymaster";

impl RedisSentinels {
    pub async fn start() -> RedisSentinels {
        let primary = RedisServer::start().await;
        let replica_of = primary.port.to_string();
        let replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", &replica_of]).await;
        let mut sentinels = Vec::new();
        for _ in 0..3 {
            let master = primary.port;
            let sentinel = RedisServer::spawn("redis-sentinel", &[], move |port, dir| {
                // sentinel rewrites its config file: one of its own, in its directory
                let conf = dir.join("sentinel.conf");
                std::fs::write(
                    &conf,
                    format!(
                        "port {port}\nbind 127.0.0.1\n\
                         sentinel monitor {SENTINEL_MASTER} 127.0.0.1 {master} 2\n\
                         sentinel down-after-milliseconds {SENTINEL_MASTER} 1000\n\
                         sentinel failover-timeout {SENTINEL_MASTER} 4000\n\
                         sentinel parallel-syncs {SENTINEL_MASTER} 1\n"
                    ),
                )
                .expect("sentinel.conf");
                vec![conf.display().to_string(), "--sentinel".to_string()]
            })
            .await;
            sentinels.push(sentinel);
        }
        let set = RedisSentinels {
            primary,
            replica,
            sentinels,
        };
        // the replica in sync and known to every sentinel before a test relies on it
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let info: String = redis::cmd("INFO")
                .arg("replication")
                .query_async(&mut node(set.replica.port).await)
                .await
                .unwrap_or_default();
            let mut known = info.contains("master_link_status:up");
            for s in &set.sentinels {
                let replicas: redis::RedisResult<Vec<redis::Value>> = redis::cmd("SENTINEL")
                    .arg("REPLICAS")
                    .arg(SENTINEL_MASTER)
                    .query_async(&mut node(s.port).await)
                    .await;
                known &= replicas.is_ok_and(|r| !r.is_empty());
            }
            if known {
                return set;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the sentinel set did not settle"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `REDIS_SENTINELS`.
    pub fn sentinels(&self) -> String {
        self.sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The port of the master the sentinels name now.
    pub async fn master_port(&self) -> Option<u16> {
        for s in &self.sentinels {
            let addr: redis::RedisResult<(String, u16)> = redis::cmd("SENTINEL")
                .arg("GET-MASTER-ADDR-BY-NAME")
                .arg(SENTINEL_MASTER)
                .query_async(&mut node(s.port).await)
                .await;
            if let Ok((_, port)) = addr {
                return Some(port);
            }
        }
        None
    }
}
