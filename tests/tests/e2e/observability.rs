//! Observability: a real Prometheus (Debian's package) scrapes the three running binaries and
//! evaluates the alert rules of `ops/alerts/`; every expression of those rules and of the
//! Grafana dashboards in `ops/grafana/dashboards/` must parse, every metric they name must
//! exist, with its `# HELP`, and every job series must be there at zero for each registered
//! queue and kind before any job ran (a series born at its first increment hides it from
//! `rate()` and makes `absent()` fire on an idle worker). Also: the backlog that the gauges
//! publish, counted from the records.
use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    time::Duration,
};

use chrono::SubsecRound;
use e2e::{
    procs::{Cluster, bin_dir, lesson_slot, post_booking},
    prometheus::{self, Prometheus, metric_names},
};
use serde_json::Value;
use shared::testing::{self, TestDatabase};

/// Metrics that dashboards read but that other work publishes, not yet part of this tree:
/// they are reported, never failed on.
const PUBLISHED_ELSEWHERE: &[(&str, &str)] = &[(
    "search_events_total",
    "the search analytics work (api/src/search) publishes it",
)];

fn ops_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../ops")
}

/// The alert rule files (not their promtool tests).
fn rule_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(ops_dir().join("alerts"))
        .expect("ops/alerts")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no alert rules in ops/alerts");
    files
}

/// Every PromQL expression of every dashboard, with where it comes from, Grafana's variables
/// replaced by what they stand for in a query: a range, or "any value".
fn dashboard_expressions() -> Vec<(String, String)> {
    let dir = ops_dir().join("grafana/dashboards");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("ops/grafana/dashboards")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 3, "dashboards missing in {}", dir.display());
    let mut found = Vec::new();
    for file in files {
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let board: Value =
            serde_json::from_str(&std::fs::read_to_string(&file).expect("dashboard"))
                .expect("JSON");
        let mut panels: Vec<&Value> = board["panels"].as_array().into_iter().flatten().collect();
        while let Some(panel) = panels.pop() {
            panels.extend(panel["panels"].as_array().into_iter().flatten());
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str() {
                    let title = panel["title"].as_str().unwrap_or("?");
                    found.push((format!("{name}: {title}"), substitute(expr)));
                }
            }
        }
        for variable in board["templating"]["list"].as_array().into_iter().flatten() {
            // label_values(<series selector>, <label>): the selector must find series
            let query = variable["query"]["query"]
                .as_str()
                .or(variable["query"].as_str())
                .unwrap_or_default();
            if let Some(inner) = query
                .strip_prefix("label_values(")
                .and_then(|q| q.rsplit_once(','))
            {
                let label = variable["name"].as_str().unwrap_or("?");
                found.push((format!("{name}: variable {label}"), substitute(inner.0)));
            }
        }
    }
    found
}

fn substitute(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$__interval", "15s")
        .replace("$__range", "1h")
        .replace("$queue", ".*")
        .replace("$kind", ".*")
}

#[tokio::test]
async fn every_expression_of_the_dashboards_and_alerts_parses_and_names_existing_metrics() {
    let Some(binary) = prometheus::binary() else {
        let why = "prometheus is not installed (Debian's package: apt-get install prometheus; \
                   ops/test installs it)";
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "observability test cannot run in CI: {why}"
        );
        eprintln!("SKIPPED observability end-to-end test: {why}");
        return;
    };
    let mut cluster = Cluster::new(
        testing::redis_url(),
        &[("SCHEDULER_HEALTH_MS", "500"), ("SCHEDULER_TICK_MS", "200")],
    )
    .await;
    let api = cluster.api().await;
    let worker = cluster.worker().await;
    let scheduler = cluster.scheduler().await;
    let prom = Prometheus::start(
        &binary,
        &[
            ("api", api.port),
            ("worker", worker.port),
            ("scheduler", scheduler.port),
        ],
        &rule_files(),
    )
    .await;

    // an idle platform, just started: every target up, every job series there at zero
    let mut up = Vec::new();
    for _ in 0..300 {
        up = prom.query("up == 1").await.unwrap_or_default();
        if up.len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(up.len(), 3, "not every target is up:\n{}", prom.log());
    let registry = worker::jobs::registry();
    for (counter, _) in worker::telemetry::JOB_COUNTERS {
        let series = prom.query(counter).await.expect("query");
        let present: BTreeSet<(String, String)> = series
            .iter()
            .map(|(labels, _)| {
                (
                    labels["queue"].as_str().unwrap_or_default().to_string(),
                    labels["kind"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        for kind in registry.kinds() {
            for label in kind.metric_kinds() {
                assert!(
                    present.contains(&(kind.queue().to_string(), label.to_string())),
                    "{counter}{{queue={:?}, kind={label:?}}} is missing on an idle worker: {present:?}",
                    kind.queue()
                );
            }
        }
    }
    let idle_succeeded = prom
        .query("sum(jobs_succeeded_total)")
        .await
        .expect("query");
    assert_eq!(idle_succeeded.first().map(|(_, v)| *v), Some(0.0));

    // some work: a booking (two confirmation emails) and a manual run of a schedule whose
    // success feeds its dead man's switch
    let token = cluster.token("student@example.com").await;
    let instructor: i64 =
        sqlx::query_scalar("select id from users where email = 'instructor@example.com'")
            .fetch_one(&cluster.db.pool)
            .await
            .expect("instructor");
    let service: i64 = sqlx::query_scalar("select id from services limit 1")
        .fetch_one(&cluster.db.pool)
        .await
        .expect("service");
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{}", api.port);
    let booked = post_booking(&http, &base, &token, instructor, service, lesson_slot(0))
        .await
        .expect("booking request");
    assert_eq!(booked.status().as_u16(), 201);
    let triggered = tokio::process::Command::new(bin_dir().join("scheduler"))
        .args(["trigger", "retention_sweep"])
        .envs(cluster.env.iter().cloned())
        .output()
        .await
        .expect("scheduler trigger");
    assert!(
        triggered.status.success(),
        "{}",
        String::from_utf8_lossy(&triggered.stderr)
    );
    for (what, expr) in [
        ("two emails sent", "sum(emails_sent_total) >= 2"),
        (
            "the sweep's success seen by the scheduler",
            r#"schedule_last_success_timestamp_seconds{schedule="retention_sweep"}"#,
        ),
        (
            "the booking request counted",
            r#"http_requests_total{route="/api/v1/bookings"}"#,
        ),
        ("a Redis sample", "redis_memory_used_bytes"),
    ] {
        let mut seen = false;
        for _ in 0..300 {
            if !prom.query(expr).await.unwrap_or_default().is_empty() {
                seen = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(seen, "never saw {what} ({expr}):\n{}", cluster.logs());
    }

    // the work counted where it happened, by queue and kind
    for expr in [
        r#"sum(jobs_enqueued_total{queue="booking_email", kind="confirmation"}) >= 2"#,
        r#"sum(jobs_started_total{queue="booking_email", kind="confirmation"}) >= 2"#,
        r#"sum(jobs_succeeded_total{queue="booking_email", kind="confirmation"}) >= 2"#,
        r#"sum(job_wait_duration_seconds_count{queue="booking_email", kind="confirmation"}) >= 2"#,
        r#"sum(job_run_duration_seconds_count{queue="booking_email", kind="confirmation"}) >= 2"#,
        r#"sum(jobs_succeeded_total{queue="retention_sweep"}) >= 1"#,
        r#"sum(bookings_created_total) >= 1"#,
        r#"sum(jobs_failed_total) == 0"#,
    ] {
        let mut holds = false;
        for _ in 0..100 {
            if !prom.query(expr).await.unwrap_or_default().is_empty() {
                holds = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(holds, "does not hold: {expr}");
    }

    // every rule loaded and evaluated without error
    let mut rules: Vec<(String, String)> = Vec::new();
    let mut broken = Vec::new();
    for _ in 0..100 {
        let groups = prom.api("rules", &[]).await.expect("rules");
        rules.clear();
        broken.clear();
        let mut evaluated = true;
        for group in groups["groups"].as_array().into_iter().flatten() {
            for rule in group["rules"].as_array().into_iter().flatten() {
                let name = rule["name"].as_str().unwrap_or("?").to_string();
                match rule["health"].as_str() {
                    Some("ok") => {}
                    Some("err") => broken.push(format!(
                        "{name}: {}",
                        rule["lastError"].as_str().unwrap_or("?")
                    )),
                    _ => evaluated = false,
                }
                rules.push((
                    format!("rule {name}"),
                    rule["query"].as_str().unwrap_or_default().to_string(),
                ));
            }
        }
        if evaluated {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rule_count: usize = rule_files()
        .iter()
        .map(|f| {
            std::fs::read_to_string(f)
                .unwrap_or_default()
                .matches("- alert:")
                .count()
        })
        .sum();
    assert_eq!(
        rules.len(),
        rule_count,
        "prometheus loaded fewer rules than ops/alerts holds:\n{}",
        prom.log()
    );
    assert!(broken.is_empty(), "rules failing to evaluate: {broken:#?}");

    // every expression parses, and every metric it names exists and is described
    let expressions: Vec<(String, String)> =
        rules.into_iter().chain(dashboard_expressions()).collect();
    let existing: BTreeSet<String> = prom
        .api("label/__name__/values", &[])
        .await
        .expect("names")
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    let metadata = prom.api("metadata", &[]).await.expect("metadata");
    let mut unparsed = Vec::new();
    let mut missing: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut undescribed = BTreeSet::new();
    let mut elsewhere = BTreeSet::new();
    for (source, expr) in &expressions {
        if let Err(e) = prom.query(expr).await {
            unparsed.push(format!("{source}: {e}\n    {expr}"));
        }
        for name in metric_names(expr) {
            if let Some((_, why)) = PUBLISHED_ELSEWHERE.iter().find(|(n, _)| *n == name) {
                elsewhere.insert(format!("{name} ({why})"));
                continue;
            }
            if !existing.contains(&name) {
                missing
                    .entry(name.clone())
                    .or_default()
                    .push(source.clone());
                continue;
            }
            if name == "up" {
                continue;
            }
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .filter(|base| metadata.get(*base).is_some())
                .unwrap_or(name.as_str());
            let help = metadata[family][0]["help"].as_str().unwrap_or_default();
            if help.is_empty() {
                undescribed.insert(family.to_string());
            }
        }
    }
    for name in &elsewhere {
        eprintln!("not checked, published elsewhere: {name}");
    }
    assert!(
        unparsed.is_empty(),
        "expressions Prometheus refuses:\n{}",
        unparsed.join("\n")
    );
    assert!(
        missing.is_empty(),
        "metrics named but not exported: {missing:#?}"
    );
    assert!(
        undescribed.is_empty(),
        "metrics without # HELP: {undescribed:?}"
    );
    assert!(
        expressions.len() > 60,
        "only {} expressions found",
        expressions.len()
    );
    // build information from each binary
    let builds = prom
        .query("count by (binary) (instainstru_build_info)")
        .await
        .expect("query");
    assert_eq!(builds.len(), 3, "build info: {builds:?}");
}

#[tokio::test]
async fn the_backlog_counts_each_queue_by_state_from_the_partial_indexes() {
    let db = TestDatabase::create().await;
    // Postgres keeps microseconds
    let now = chrono::Utc::now().trunc_subsecs(6);
    sqlx::query(
        "insert into jobs (queue, payload, dedupe_key, status, run_at, started_at, finished_at) values
            ('q1', '{}', 'a', 'pending', $1 - interval '30 seconds', null, null),
            ('q1', '{}', 'b', 'pending', $1 - interval '10 seconds', null, null),
            ('q1', '{}', 'c', 'pending', $1 + interval '1 hour', null, null),
            ('q1', '{}', 'd', 'enqueued', $1 - interval '60 seconds', null, null),
            ('q1', '{}', 'e', 'enqueued', $1 - interval '90 seconds', $1, null),
            ('q1', '{}', 'f', 'dead', $1, null, $1),
            ('q1', '{}', 'g', 'done', $1, $1, $1),
            ('q2', '{}', 'h', 'skipped', $1, null, $1),
            ('q3', '{}', 'i', 'dead', $1, null, $1)",
    )
    .bind(now)
    .execute(&db.pool)
    .await
    .expect("records");
    let mut backlog = shared::records::backlog(&db.pool, now)
        .await
        .expect("backlog");
    backlog.sort_by(|a, b| a.queue.cmp(&b.queue));
    let secs = |s| Some(now - chrono::Duration::seconds(s));
    assert_eq!(
        backlog,
        [
            shared::records::Backlog {
                queue: "q1".into(),
                due: 2,
                scheduled: 1,
                enqueued: 1,
                running: 1,
                dead: 1,
                // the enqueued record due 60 s ago waits longer than the pending ones
                oldest_waiting: secs(60),
                oldest_due: secs(30),
            },
            shared::records::Backlog {
                queue: "q3".into(),
                dead: 1,
                ..Default::default()
            },
        ]
    );

    // the dead letters are counted as they come and go (job_dead_counts): a retry, a
    // discard, a new dead letter, one moved to another queue, and updates that touch
    // neither state nor queue
    for statement in [
        "update jobs set status = 'pending', run_at = now() + interval '1 day' where dedupe_key = 'f'",
        "delete from jobs where dedupe_key = 'i'",
        "update jobs set status = 'dead' where dedupe_key in ('g', 'h')",
        "update jobs set queue = 'q4' where dedupe_key = 'h'",
        "update jobs set last_error = 'again' where status = 'dead'",
    ] {
        sqlx::query(statement)
            .execute(&db.pool)
            .await
            .expect(statement);
        let counted: Vec<(String, i64)> = sqlx::query_as(
            "select queue, count(*) from jobs where status = 'dead' group by 1 order by 1",
        )
        .fetch_all(&db.pool)
        .await
        .expect("counted");
        let mut backlog = shared::records::backlog(&db.pool, now)
            .await
            .expect("backlog");
        backlog.sort_by(|a, b| a.queue.cmp(&b.queue));
        let dead: Vec<(String, i64)> = backlog
            .into_iter()
            .filter(|b| b.dead > 0)
            .map(|b| (b.queue, b.dead))
            .collect();
        assert_eq!(dead, counted, "after {statement}");
    }
}
