//! End to end against real BIND: the DNS primary is down when the failover
//! happens. The runtime keeps retrying the plan until BIND is back, the
//! update then lands (checked with `dig`), and the audit log holds every
//! event and action in order.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use failover::decision::Health;
use failover::dns::{Rfc2136Config, Rfc2136Router};
use failover::{RetryPolicy, RuntimeBuilder};
use failover_testkit::bind::{BindServer, BindZone};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_made_while_dns_is_down_is_retried_until_it_lands() {
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
    let retry = RetryPolicy {
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_millis(400),
        ..RetryPolicy::default()
    };
    let runtime = regions
        .run(
            RuntimeBuilder::new(config(topology(), policy.clone()))
                .router(Arc::new(router))
                .retry(retry)
                .audit_log(&audit),
        )
        .await;
    let handle = runtime.handle();
    wait_answer(dns_addr, EAST_IP, Duration::from_secs(5)).await;
    // On a loaded machine the first plan may itself need a retry.
    let failed_before = handle.status().router.failed_attempts;

    // DNS goes down first, then the region.
    let mut bind = tokio::task::spawn_blocking(move || {
        let mut bind = bind;
        bind.stop();
        bind
    })
    .await
    .expect("stop task");
    regions.east.stop().await;
    wait_status(&handle, Duration::from_secs(10), "us-east down", |s| {
        s.controller.regions[EAST.index()].health == Health::Down
    })
    .await;
    // Several update attempts fail against the stopped server: wait for
    // them, however long a loaded machine takes, instead of a fixed window.
    wait_status(
        &handle,
        Duration::from_secs(20),
        "two failed attempts to apply the drain plan",
        |s| s.router.failed_attempts >= failed_before + 2 && !s.plan_applied(),
    )
    .await;

    let bind = tokio::task::spawn_blocking(move || bind.restart().map(|()| bind))
        .await
        .expect("restart task")
        .expect("named restarts on its port");
    wait_answer(dns_addr, WEST_IP, Duration::from_secs(15)).await;
    runtime.shutdown().await;

    let records: Vec<serde_json::Value> = std::fs::read_to_string(&audit)
        .expect("audit log")
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    let retries = records
        .iter()
        .filter(|r| r["record"] == "action_retry")
        .count();
    assert!(
        retries >= 2,
        "the update was retried while BIND was down ({retries} retries)"
    );
    let drains_east = |r: &serde_json::Value| {
        r["record"] == "action"
            && r["type"] == "set_weights"
            && r["weights"][EAST.index()]["weight"] == 0
    };
    let drain = records
        .iter()
        .position(drains_east)
        .expect("a plan draining us-east was issued");
    let draining_ids: Vec<_> = records
        .iter()
        .filter(|r| drains_east(r))
        .map(|r| r["action"].clone())
        .collect();
    let first_retry = records
        .iter()
        .position(|r| r["record"] == "action_retry")
        .expect("a retry");
    assert!(
        records[first_retry..]
            .iter()
            .any(|r| r["record"] == "action_done" && draining_ids.contains(&r["action"])),
        "a plan draining us-east was applied after the retries: {records:#?}"
    );
    let down_event = records
        .iter()
        .position(|r| {
            r["record"] == "event"
                && r["event"]
                    .as_str()
                    .is_some_and(|e| e.contains("us-east") && e.contains("down"))
        })
        .expect("the region-down event is in the audit log");
    assert!(
        down_event < drain + 2,
        "the event explaining the drain is logged with it"
    );
    let unix: Vec<u64> = records
        .iter()
        .map(|r| r["unix_ms"].as_u64().expect("timestamp"))
        .collect();
    assert!(
        unix.windows(2).all(|w| w[0] <= w[1]),
        "records are appended in order"
    );
    drop(bind);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_shows_the_applied_plan_beside_the_desired_one_and_each_failed_attempt() {
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
    let retry = RetryPolicy {
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_millis(300),
        ..RetryPolicy::default()
    };
    let runtime = regions
        .run(
            RuntimeBuilder::new(config(topology(), policy.clone()))
                .router(Arc::new(router))
                .retry(retry),
        )
        .await;
    let handle = runtime.handle();
    let live = wait_status(
        &handle,
        Duration::from_secs(10),
        "first plan applied",
        |s| s.controller.plan.is_some() && s.plan_applied(),
    )
    .await;
    assert_eq!(live.router.applied, live.controller.plan);
    // On a loaded machine the first plan may itself need a retry.
    let failed_before = live.router.failed_attempts;

    let mut bind = tokio::task::spawn_blocking(move || {
        let mut bind = bind;
        bind.stop();
        bind
    })
    .await
    .expect("stop task");
    regions.east.stop().await;
    let stuck = wait_status(
        &handle,
        Duration::from_secs(10),
        "a drain plan failing at least twice",
        |s| {
            s.controller.regions[EAST.index()].weight == 0
                && s.router.failed_attempts >= failed_before + 2
        },
    )
    .await;
    assert!(!stuck.plan_applied(), "the desired plan is not live yet");
    let applied = stuck.router.applied.as_ref().expect("the first plan");
    let desired = stuck.controller.plan.as_ref().expect("a desired plan");
    assert!(applied.generation < desired.generation);
    assert!(
        applied.weights[EAST.index()].weight > 0,
        "live still sends traffic to us-east"
    );
    let failure = stuck.router.last_failure.as_deref().expect("a failure");
    assert!(
        failure.contains("set_weights") && failure.contains("retrying"),
        "{failure}"
    );
    assert!(
        stuck
            .recent_events
            .iter()
            .filter(|e| e.contains("set_weights") && e.contains("attempt"))
            .count()
            >= 2,
        "each failed attempt is among the recent events: {:#?}",
        stuck.recent_events
    );

    let bind = tokio::task::spawn_blocking(move || bind.restart().map(|()| bind))
        .await
        .expect("restart task")
        .expect("named restarts on its port");
    let landed = wait_status(
        &handle,
        Duration::from_secs(15),
        "drain plan applied",
        |s| s.controller.regions[EAST.index()].weight == 0 && s.plan_applied(),
    )
    .await;
    assert_eq!(landed.router.applied, landed.controller.plan);
    wait_answer(dns_addr, WEST_IP, Duration::from_secs(5)).await;
    runtime.shutdown().await;
    drop(bind);
}
