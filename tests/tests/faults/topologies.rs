//! Failover under load beyond one Redis: bookings at a steady rate while a Redis primary
//! is SIGKILLed and its replica promoted, on a cluster (one shard's primary) and behind
//! Sentinel. A failover costs a pause, never a job: every booking ends with exactly its two
//! confirmations (what the primary had not replicated when it died comes back through the
//! reconciler, which re-pushes from Postgres what Redis no longer holds).
use std::time::{Duration, Instant};

use e2e::{
    eventually,
    procs::{Cluster, record_figure, record_summary},
    redis_server::{RedisCluster, RedisSentinels, SENTINEL_MASTER},
};

use crate::{
    processes::{base, stream, wait_for_all},
    tally,
};

const BOOKINGS: usize = 30;
const EVERY: Duration = Duration::from_millis(300);

fn assert_no_crossslot(logs: &str) {
    let hits: Vec<&str> = logs.lines().filter(|l| l.contains("CROSSSLOT")).collect();
    assert!(hits.is_empty(), "CROSSSLOT in the logs: {hits:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_primary_killed_under_load_costs_a_pause_not_a_booking() {
    let mut redis = RedisCluster::start().await;
    let mut cluster = Cluster::new(
        redis.first_url(),
        &[
            ("REDIS_CLUSTER_NODES", redis.seeds().as_str()),
            ("QUEUE_PARTITIONS", "4"),
        ],
    )
    .await;
    let api = cluster.api().await;
    let _workers = [cluster.worker().await, cluster.worker().await];
    let token = cluster.token("student@example.com").await;
    let booking = tokio::spawn(stream(
        &cluster,
        vec![base(api.port)],
        token,
        BOOKINGS,
        EVERY,
    ));
    tokio::time::sleep(Duration::from_secs(3)).await;
    // the shard of the email queue's partition 0: the one the relay writes to now
    let victim = redis
        .owner_of(&shared::queue::partition_name(
            &cluster.prefix,
            "booking_email",
            0,
            4,
        ))
        .await;
    redis.kill(victim).await;
    let killed = Instant::now();
    eventually(Duration::from_secs(30), "a replica promoted", || async {
        let primaries = redis.primaries().await;
        primaries.len() == 3 && !primaries.contains(&victim)
    })
    .await;
    redis.wait_ok(Duration::from_secs(30)).await;
    let failover = killed.elapsed();
    let bookings = booking.await.unwrap();
    assert_eq!(bookings.len(), BOOKINGS, "bookings do not need Redis");
    wait_for_all(&cluster, &bookings, Duration::from_secs(120)).await;
    let (out, lost, extra) = tally(&cluster.smtp, &bookings);
    record_summary(
        "redis_cluster_primary_sigkill",
        1,
        bookings.len() * 2,
        out,
        lost,
        extra,
    );
    record_figure(
        "redis_cluster_primary_sigkill",
        "failover_s",
        format!("{:.1}", failover.as_secs_f64()),
    );
    assert_eq!(lost, 0);
    assert_eq!(extra, 0, "no confirmation sent twice");
    assert_no_crossslot(&cluster.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_master_killed_under_load_costs_a_pause_not_a_booking() {
    let mut redis = RedisSentinels::start().await;
    let mut cluster = Cluster::new(
        redis.primary.url(),
        &[
            ("REDIS_SENTINELS", redis.sentinels().as_str()),
            ("REDIS_SENTINEL_MASTER", SENTINEL_MASTER),
        ],
    )
    .await;
    let api = cluster.api().await;
    let _workers = [cluster.worker().await, cluster.worker().await];
    let token = cluster.token("student@example.com").await;
    let booking = tokio::spawn(stream(
        &cluster,
        vec![base(api.port)],
        token,
        BOOKINGS,
        EVERY,
    ));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (old, new) = (redis.primary.port, redis.replica.port);
    redis.primary.kill().await;
    let killed = Instant::now();
    eventually(Duration::from_secs(30), "the replica promoted", || async {
        redis.master_port().await == Some(new)
    })
    .await;
    let failover = killed.elapsed();
    let bookings = booking.await.unwrap();
    assert_eq!(bookings.len(), BOOKINGS, "bookings do not need Redis");
    wait_for_all(&cluster, &bookings, Duration::from_secs(120)).await;
    let (out, lost, extra) = tally(&cluster.smtp, &bookings);
    record_summary(
        "redis_sentinel_master_sigkill",
        1,
        bookings.len() * 2,
        out,
        lost,
        extra,
    );
    record_figure(
        "redis_sentinel_master_sigkill",
        "failover_s",
        format!("{:.1}", failover.as_secs_f64()),
    );
    assert_ne!(old, new);
    assert_eq!(lost, 0);
    assert_eq!(extra, 0, "no confirmation sent twice");
}
