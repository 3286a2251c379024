//! A private Prometheus (Debian's `prometheus` package) for tests: a free port, storage in a
//! temp dir, every target scraped each second, the given rule files evaluated each second,
//! and its HTTP API to ask what it sees. Stopped on drop.
use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use serde_json::Value;
use tokio::process::{Child, Command};

use crate::redis_server::free_port;

/// A Prometheus server this test owns.
pub struct Prometheus {
    pub port: u16,
    dir: PathBuf,
    child: Child,
    http: reqwest::Client,
}

/// Where the Prometheus binary is: `/usr/bin/prometheus` (Debian's package), or one on PATH.
pub fn binary() -> Option<PathBuf> {
    let debian = PathBuf::from("/usr/bin/prometheus");
    if debian.exists() {
        return Some(debian);
    }
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join("prometheus"))
        .find(|path| path.exists())
}

impl Prometheus {
    /// Starts `binary` scraping `targets` (`(job, port)` on 127.0.0.1) and evaluating
    /// `rule_files`; waits until it is ready.
    pub async fn start(binary: &Path, targets: &[(&str, u16)], rule_files: &[PathBuf]) -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!(
            "e2e-prometheus-{port}-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(dir.join("data")).expect("prometheus dir");
        let mut config = String::from(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  evaluation_interval: 1s\nrule_files:\n",
        );
        for file in rule_files {
            config.push_str(&format!("  - {:?}\n", file.display().to_string()));
        }
        config.push_str("scrape_configs:\n");
        for (job, target) in targets {
            config.push_str(&format!(
                "  - job_name: {job}\n    static_configs:\n      - targets: ['127.0.0.1:{target}']\n"
            ));
        }
        let config_file = dir.join("prometheus.yml");
        std::fs::write(&config_file, config).expect("prometheus config");
        let log = std::fs::File::create(dir.join("prometheus.log")).expect("prometheus log");
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--storage.tsdb.retention.time=1h")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .expect("start prometheus");
        let server = Prometheus {
            port,
            dir,
            child,
            http: reqwest::Client::new(),
        };
        let ready = format!("{}/-/ready", server.base());
        for _ in 0..300 {
            if let Ok(r) = server.http.get(&ready).send().await
                && r.status().is_success()
            {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("prometheus did not get ready:\n{}", server.log());
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// What Prometheus logged (its errors name a rule file that does not load).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// `GET /api/v1/<path>` with `query`: the `data` of a success, or its error text.
    pub async fn api(&self, path: &str, query: &[(&str, &str)]) -> Result<Value, String> {
        let response = self
            .http
            .get(format!("{}/api/v1/{path}", self.base()))
            .query(query)
            .send()
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        let body: Value = response
            .json()
            .await
            .map_err(|e| format!("not JSON: {e}"))?;
        if body["status"] == "success" {
            Ok(body["data"].clone())
        } else {
            Err(format!(
                "{}: {}",
                body["errorType"].as_str().unwrap_or("error"),
                body["error"].as_str().unwrap_or("?")
            ))
        }
    }

    /// The instant vector `expr` evaluates to now, as `(labels, value)` pairs.
    pub async fn query(&self, expr: &str) -> Result<Vec<(Value, f64)>, String> {
        let data = self.api("query", &[("query", expr)]).await?;
        Ok(data["result"]
            .as_array()
            .map(|series| {
                series
                    .iter()
                    .map(|s| {
                        let value = s["value"][1]
                            .as_str()
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(f64::NAN);
                        (s["metric"].clone(), value)
                    })
                    .collect()
            })
            .unwrap_or_default())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("prometheus files kept in {}", self.dir.display());
        }
    }
}

/// The metric names an expression (PromQL, after Grafana's variables are substituted) reads:
/// every identifier that is not a function, a keyword, a label name or a duration.
pub fn metric_names(expr: &str) -> Vec<String> {
    const KEYWORDS: &[&str] = &[
        "and",
        "or",
        "unless",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "offset",
        "atan2",
        "inf",
        "nan",
        "Inf",
        "NaN",
        // aggregations, which may be followed by `by (...)` rather than their parenthesis
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "limitk",
    ];
    const GROUPING: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let mut names = Vec::new();
    let mut i = 0;
    let ident_start = |c: char| c.is_ascii_alphabetic() || c == '_' || c == ':';
    let ident_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let skip_to = |from: usize, close: char| {
        let mut j = from;
        let mut quote: Option<char> = None;
        while j < chars.len() {
            let c = chars[j];
            match quote {
                Some(_) if c == '\\' => j += 1,
                Some(q) if c == q => quote = None,
                Some(_) => {}
                None if c == '"' || c == '\'' || c == '`' => quote = Some(c),
                None if c == close => return j + 1,
                None => {}
            }
            j += 1;
        }
        j
    };
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            // a string literal: skip to its closing quote
            i += 1;
            while i < chars.len() && chars[i] != c {
                if chars[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
        } else if c == '{' {
            i = skip_to(i + 1, '}');
        } else if c == '[' {
            i = skip_to(i + 1, ']');
        } else if c.is_ascii_digit() || c == '.' {
            // a number or a duration (1e3, 0.99, 10m): its letters are no name
            while i < chars.len() && (ident_char(chars[i]) || chars[i] == '.') {
                i += 1;
            }
        } else if ident_start(c) {
            let start = i;
            while i < chars.len() && ident_char(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut next = i;
            while next < chars.len() && chars[next].is_whitespace() {
                next += 1;
            }
            let opens = chars.get(next) == Some(&'(');
            if GROUPING.contains(&word.as_str()) && opens {
                i = skip_to(next + 1, ')');
            } else if !opens && !KEYWORDS.contains(&word.as_str()) {
                names.push(word);
            }
        } else {
            i += 1;
        }
    }
    names.sort();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::metric_names;

    #[test]
    fn names_are_told_from_functions_labels_keywords_and_durations() {
        let expr = r#"histogram_quantile(0.99, sum by (le, route) (rate(http_request_duration_seconds_bucket{route!~"/metrics|{x}"}[5m])))
            > 0.5 and on (job) max(up offset 10m) or vector(1e3) unless ignoring(state) group_left db_pool_max_connections"#;
        assert_eq!(
            metric_names(expr),
            [
                "db_pool_max_connections",
                "http_request_duration_seconds_bucket",
                "up"
            ]
        );
        assert_eq!(
            metric_names("time() - max by (schedule) (schedule_last_success_timestamp_seconds)"),
            ["schedule_last_success_timestamp_seconds"]
        );
        assert_eq!(
            metric_names("count by (binary) (instainstru_build_info) - max without (x) (up)"),
            ["instainstru_build_info", "up"]
        );
        assert_eq!(metric_names(r#"{__name__="x"}"#), Vec::<String>::new());
    }
}
