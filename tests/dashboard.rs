//! `dashboards/failover.json` against the telemetry it claims: every metric
//! it queries is in README's telemetry table (which is the runtime's own,
//! in `src/runtime/telemetry.rs`) and is emitted by a running runtime that
//! has been through a writer switchover and a region outage. Its own test
//! binary, so the process's metrics come from this runtime alone.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::admin::*;
use failover_testkit::postgres::PgTestCluster;
use serde_json::Value;

/// The metric names in the first column of the markdown table under
/// `heading` in `text` (lines starting `| \``), up to the next heading.
fn table_metrics(text: &str, prefix: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let line = line.trim_start_matches(prefix).trim_start();
        let Some(first) = line.strip_prefix('|').and_then(|l| l.split('|').next()) else {
            continue;
        };
        for (i, part) in first.split('`').enumerate() {
            if i % 2 == 1 && part.starts_with("failover_") {
                names.insert(part.to_owned());
            }
        }
    }
    names
}

/// Every `failover_…` name in the dashboard's queries.
fn dashboard_queries(dashboard: &Value) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut stack = vec![dashboard];
    while let Some(value) = stack.pop() {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(expr)) = map.get("expr") {
                    let title = map.get("refId").map(Value::to_string).unwrap_or_default();
                    for name in metric_names(expr) {
                        found.push((name, format!("{title}: {expr}")));
                    }
                }
                stack.extend(map.values());
            }
            Value::Array(items) => stack.extend(items),
            _ => {}
        }
    }
    found
}

fn metric_names(expr: &str) -> Vec<String> {
    let bytes = expr.as_bytes();
    let mut names = Vec::new();
    let mut i = 0;
    while let Some(at) = expr[i..].find("failover_") {
        let start = i + at;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        names.push(expr[start..end].to_owned());
        i = end;
    }
    names
}

/// The table's name for a queried series: a summary's `_sum` and `_count`
/// belong to the histogram the table lists.
fn base_name(name: &str, table: &BTreeSet<String>) -> String {
    for suffix in ["_sum", "_count", "_bucket"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if table.contains(base) {
                return base.to_owned();
            }
        }
    }
    name.to_owned()
}

#[test]
fn the_readme_telemetry_table_is_the_runtimes() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let section = readme
        .split("\n## Telemetry")
        .nth(1)
        .expect("README has a Telemetry section");
    let section = section.split("\n## ").next().unwrap_or_default();
    let source = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src/runtime/telemetry.rs"
    ))
    .expect("telemetry.rs");
    let docs: String = source
        .lines()
        .take_while(|l| l.starts_with("//!"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(
        table_metrics(section, ""),
        table_metrics(&docs, "//!"),
        "README's telemetry table and src/runtime/telemetry.rs's differ"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_queries_is_documented_and_emitted() {
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/dashboards/failover.json"
        ))
        .expect("dashboards/failover.json"),
    )
    .expect("the dashboard is JSON");
    assert!(dashboard["panels"].as_array().is_some_and(|p| p.len() >= 6));
    let queries = dashboard_queries(&dashboard);
    assert!(queries.len() >= 15, "{queries:#?}");
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let table = table_metrics(
        readme
            .split("\n## Telemetry")
            .nth(1)
            .expect("README has a Telemetry section"),
        "",
    );
    for (name, query) in &queries {
        let base = base_name(name, &table);
        assert!(
            table.contains(&base),
            "the dashboard queries {name} ({query}), which README's telemetry table lacks"
        );
    }

    // Drive a runtime through a planned writer switchover and a region outage.
    let cluster = tokio::task::spawn_blocking(|| PgTestCluster::builder().replicas(1).start())
        .await
        .expect("cluster task")
        .expect("PostgreSQL primary + replica start");
    let f = Fixture::start_with(Some(&cluster), |_| {}).await;
    let node_is = |s: &Value, name: &str, role: &str| {
        s["nodes"].as_array().is_some_and(|n| {
            n.iter()
                .any(|n| n["name"] == name && n["role"] == role && n["lag_bytes"].is_u64())
        })
    };
    wait_api_status(
        f.admin,
        Duration::from_secs(20),
        "pg-west a replica with a known lag",
        |s| node_is(s, "pg-west", "replica"),
    )
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (code, body) = request(
            f.admin,
            "POST",
            "/commands/switchover",
            Some(ALICE),
            br#"{"to": "pg-west"}"#,
        )
        .await;
        assert_eq!(code, 202, "{body}");
        let attempt = tokio::time::Instant::now() + Duration::from_secs(15);
        let mut moved = false;
        while tokio::time::Instant::now() < attempt && !moved {
            moved = get_json(f.admin, "/status").await["writer"] == "pg-west";
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if moved {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no switchover within 60 s"
        );
    }
    wait_api_status(
        f.admin,
        Duration::from_secs(20),
        "pg-west observed as primary",
        |s| node_is(s, "pg-west", "primary"),
    )
    .await;
    f.regions.east.stop().await;
    wait_api_status(
        f.admin,
        Duration::from_secs(20),
        "us-east down and drained of traffic",
        |s| {
            let east = region(s, "us-east");
            east["health"] == "down" && east["applied_weight"] == 0
        },
    )
    .await;

    let (code, text) = request(f.admin, "GET", "/metrics", Some(ALICE), b"").await;
    assert_eq!(code, 200, "{text}");
    let emitted: BTreeSet<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let missing: Vec<&(String, String)> = queries
        .iter()
        .filter(|(name, _)| !emitted.contains(name.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries series the runtime did not emit: {missing:#?}\n/metrics:\n{text}"
    );
    f.stop().await;
}
