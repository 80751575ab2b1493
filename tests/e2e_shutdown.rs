//! End to end: shutdown lets the action in flight finish within its
//! deadline, abandons it after, and leaves one end record (done, failed or
//! abandoned) per action in the audit log. Real BIND (RFC 2136), real HTTP
//! APIs, a real UDP socket that never answers.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use failover::decision::{Command, Health};
use failover::dns::{Rfc2136Config, Rfc2136Router};
use failover::{RetryPolicy, RuntimeBuilder};
use failover_testkit::bind::{BindServer, BindZone};
use serde_json::Value;

fn audit_records(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .expect("audit log")
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect()
}

/// Each action's end record (`action_done`, `action_failed`,
/// `action_abandoned`), by action id; panics if one has none or two.
fn ends(records: &[Value]) -> HashMap<u64, String> {
    let mut ends = HashMap::new();
    for r in records {
        let kind = r["record"].as_str().unwrap_or_default();
        if matches!(kind, "action_done" | "action_failed" | "action_abandoned") {
            let id = r["action"].as_u64().expect("action id");
            let before = ends.insert(id, kind.to_owned());
            assert!(before.is_none(), "action {id} ended twice: {records:#?}");
        }
    }
    for r in records.iter().filter(|r| r["record"] == "action") {
        let id = r["action"].as_u64().expect("action id");
        assert!(
            ends.contains_key(&id),
            "action {id} has no end record: {records:#?}"
        );
    }
    ends
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_waiting_to_retry_at_shutdown_lands_and_is_recorded_done() {
    let zone = BindZone::new(ZONE).record(SERVICE, EAST_IP.parse().expect("literal"));
    let bind = tokio::task::spawn_blocking(move || BindServer::start(zone))
        .await
        .expect("bind task")
        .expect("named starts");
    let dns_addr = bind.addr();
    let policy = fast_policy();
    let mut rfc = Rfc2136Config::new(dns_addr, ZONE, bind.key_name(), bind.key_secret());
    rfc.timeout = Duration::from_millis(300);
    let router = Rfc2136Router::new(rfc, &topology(), &policy).expect("valid RFC 2136 config");
    let regions = TwoRegions::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let audit = dir.path().join("audit.jsonl");
    // Long waits between attempts: at shutdown the worker is almost surely
    // waiting to retry, which is where the last `action_done` used to be lost.
    let retry = RetryPolicy {
        initial_backoff: Duration::from_millis(1500),
        max_backoff: Duration::from_millis(1500),
        ..RetryPolicy::default()
    };
    let runtime = regions
        .run(
            RuntimeBuilder::new(config(topology(), policy.clone()))
                .router(Arc::new(router))
                .retry(retry)
                .audit_log(&audit)
                .audit_fsync(true)
                .shutdown_deadline(Duration::from_secs(10)),
        )
        .await;
    let handle = runtime.handle();
    wait_status(
        &handle,
        Duration::from_secs(10),
        "first plan applied",
        |s| s.controller.plan.is_some() && s.plan_applied(),
    )
    .await;

    let mut bind = tokio::task::spawn_blocking(move || {
        let mut bind = bind;
        bind.stop();
        bind
    })
    .await
    .expect("stop task");
    handle
        .command(Command::Drain(EAST))
        .await
        .expect("command accepted");
    wait_status(
        &handle,
        Duration::from_secs(10),
        "the drain plan failed once",
        |s| s.controller.regions[EAST.index()].drained && s.router.failed_attempts >= 1,
    )
    .await;
    let bind = tokio::task::spawn_blocking(move || bind.restart().map(|()| bind))
        .await
        .expect("restart task")
        .expect("named restarts on its port");
    runtime.shutdown().await;

    // The worker was let finish: the plan is live and the driver saw it.
    let status = handle.status();
    assert!(
        status.plan_applied(),
        "the last completion reached the status: desired {:?}, applied {:?}",
        status.controller.plan,
        status.router.applied
    );
    wait_answer(dns_addr, WEST_IP, Duration::from_secs(5)).await;
    let records = audit_records(&audit);
    let ends = ends(&records);
    let drain_action = records
        .iter()
        .rev()
        .find(|r| r["record"] == "action" && r["type"] == "set_weights")
        .and_then(|r| r["action"].as_u64())
        .expect("a drain plan");
    assert_eq!(
        ends.get(&drain_action).map(String::as_str),
        Some("action_done"),
        "{records:#?}"
    );
    drop(bind);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_that_cannot_land_by_the_deadline_is_recorded_abandoned() {
    // A DNS server that never answers: a bound UDP socket nobody reads.
    let black_hole = std::net::UdpSocket::bind("127.0.0.1:0").expect("UDP socket");
    let policy = fast_policy();
    let mut rfc = Rfc2136Config::new(
        black_hole.local_addr().expect("address"),
        ZONE,
        "failover-key.",
        "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
    );
    rfc.timeout = Duration::from_secs(60);
    let router = Rfc2136Router::new(rfc, &topology(), &policy).expect("valid RFC 2136 config");
    let regions = TwoRegions::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let audit = dir.path().join("audit.jsonl");
    let deadline = Duration::from_millis(500);
    let runtime = regions
        .run(
            RuntimeBuilder::new(config(topology(), policy.clone()))
                .router(Arc::new(router))
                .audit_log(&audit)
                .shutdown_deadline(deadline),
        )
        .await;
    let handle = runtime.handle();
    assert_eq!(
        handle.status().controller.regions[EAST.index()].health,
        Health::Up
    );
    assert!(
        !handle.status().plan_applied(),
        "the plan hangs in the router"
    );

    let started = Instant::now();
    runtime.shutdown().await;
    let took = started.elapsed();
    assert!(
        took < deadline + Duration::from_secs(2),
        "shutdown took {took:?} with a {deadline:?} deadline"
    );
    assert!(
        handle.command(Command::Pause).await.is_err(),
        "a stopped runtime takes no commands"
    );
    let records = audit_records(&audit);
    let ends = ends(&records);
    assert!(
        ends.values().any(|end| end == "action_abandoned"),
        "the plan in flight is recorded abandoned: {records:#?}"
    );
    assert!(records.iter().any(|r| r["record"] == "action_abandoned"
        && r["reason"]
            .as_str()
            .is_some_and(|why| why.contains("deadline"))));
    drop(black_hole);
}
