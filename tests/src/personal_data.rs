//! Looking for personal data where principle 2 says there is none: every value under a
//! test's Redis prefix, `pg_dump`'s output of a test database, and captured process logs.
//! Each finder returns where it found what, so an assertion names the leak.
use std::path::Path;

use redis::Value;

/// The readable forms of one Redis value: a type-aware read (strings, hashes, lists, sets,
/// sorted sets, streams, flattened) and its DUMP serialization. Both, because DUMP
/// LZF-compresses long strings (a compressed email would not show) and a type-aware read
/// would miss a type it does not know.
async fn readings(
    conn: &mut shared::queue::ConnectionManager,
    key: &str,
) -> redis::RedisResult<Vec<Vec<u8>>> {
    let kind: String = redis::cmd("TYPE").arg(key).query_async(conn).await?;
    let read = match kind.as_str() {
        "string" => redis::cmd("GET").arg(key).to_owned(),
        "hash" => redis::cmd("HGETALL").arg(key).to_owned(),
        "list" => redis::cmd("LRANGE").arg(key).arg(0).arg(-1).to_owned(),
        "set" => redis::cmd("SMEMBERS").arg(key).to_owned(),
        "zset" => redis::cmd("ZRANGE")
            .arg(key)
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .to_owned(),
        "stream" => redis::cmd("XRANGE").arg(key).arg("-").arg("+").to_owned(),
        // gone between SCAN and TYPE
        "none" => return Ok(Vec::new()),
        other => panic!("{key}: a Redis type this scan cannot read: {other}"),
    };
    let value: Value = read.query_async(conn).await?;
    let dump: Value = redis::cmd("DUMP").arg(key).query_async(conn).await?;
    let mut out = Vec::new();
    flatten(&value, &mut out);
    flatten(&dump, &mut out);
    out.push(key.as_bytes().to_vec());
    Ok(out)
}

fn flatten(value: &Value, out: &mut Vec<Vec<u8>>) {
    match value {
        Value::BulkString(bytes) => out.push(bytes.clone()),
        Value::SimpleString(s) => out.push(s.as_bytes().to_vec()),
        Value::Array(items) | Value::Set(items) => items.iter().for_each(|v| flatten(v, out)),
        Value::Map(pairs) => pairs.iter().for_each(|(k, v)| {
            flatten(k, out);
            flatten(v, out)
        }),
        _ => {}
    }
}

fn contains_ignore_case(haystack: &[u8], needle: &str) -> bool {
    let needle = needle.to_ascii_lowercase();
    let needle = needle.as_bytes();
    !needle.is_empty()
        && haystack
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle))
}

/// Every key under `prefix` whose name or value holds one of `needles` (ASCII case
/// ignored), as "key: needle"; and how many keys were read.
pub async fn redis_leaks(redis_url: &str, prefix: &str, needles: &[&str]) -> (Vec<String>, usize) {
    let mut conn = shared::queue::connect(redis_url).await.expect("redis");
    let pattern = format!("{prefix}:*");
    let (mut cursor, mut keys) = (0u64, Vec::<String>::new());
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await
            .expect("scan");
        keys.extend(batch);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    let mut found = Vec::new();
    for key in &keys {
        let values = readings(&mut conn, key).await.expect("read a key");
        for needle in needles {
            if values.iter().any(|v| contains_ignore_case(v, needle)) {
                found.push(format!("{key}: {needle}"));
            }
        }
    }
    (found, keys.len())
}

/// `pg_dump --data-only` of the database at `url`, as text.
pub fn pg_dump(url: &str) -> String {
    let output = std::process::Command::new("pg_dump")
        .args(["--data-only", "--no-owner", "--dbname", url])
        .output()
        .expect("pg_dump (Debian postgresql-client; ops/test installs it)");
    assert!(
        output.status.success(),
        "pg_dump failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Every email address in `text`: a run of address characters, an `@`, and a domain with a
/// dot. Loose on purpose: it would rather flag a false one than miss a real one.
pub fn email_addresses(text: &str) -> Vec<String> {
    let local = |c: char| c.is_ascii_alphanumeric() || "._%+-".contains(c);
    let domain = |c: char| c.is_ascii_alphanumeric() || ".-".contains(c);
    let mut found = Vec::new();
    for (at, _) in text.match_indices('@') {
        let before = text[..at]
            .chars()
            .rev()
            .take_while(|c| local(*c))
            .collect::<Vec<_>>();
        let after: String = text[at + 1..].chars().take_while(|c| domain(*c)).collect();
        let after = after.trim_end_matches('.');
        let host = after.rsplit_once('.');
        if !before.is_empty()
            && host.is_some_and(|(name, tld)| {
                !name.is_empty() && tld.len() >= 2 && tld.chars().all(|c| c.is_ascii_alphabetic())
            })
        {
            let local_part: String = before.into_iter().rev().collect();
            found.push(format!("{local_part}@{after}"));
        }
    }
    found
}

/// The lines of every file under `dir` (recursively) that hold an email address or one of
/// `addresses`, as "file: line".
pub fn log_leaks(dir: &Path, addresses: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let text =
                String::from_utf8_lossy(&std::fs::read(&path).unwrap_or_default()).into_owned();
            for line in text.lines() {
                if !email_addresses(line).is_empty() || addresses.iter().any(|a| line.contains(a)) {
                    found.push(format!("{}: {line}", path.display()));
                }
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_addresses_and_only_addresses() {
        assert_eq!(
            email_addresses("to=student@example.com, from <a.b+c@mail.example.org>."),
            ["student@example.com", "a.b+c@mail.example.org"]
        );
        assert!(email_addresses("user@localhost at 12:00 @ 127.0.0.1 x@1.2").is_empty());
    }
}
