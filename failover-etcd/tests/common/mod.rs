//! Shared set-up: a two-region topology, fast leases, and waiting for events.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use failover_core::ports::Coordinator;
use failover_core::{CoordinationEvent, Node, Policy, Region, RegionRole, Topology};
use failover_etcd::{EtcdConfig, EtcdCoordinator};

/// Lease TTL of the tests' controllers (etcd's least whole-second TTL).
pub const TTL: Duration = Duration::from_secs(2);

pub fn topology() -> Topology {
    Topology::builder("api.example.com.")
        .region(Region::new("us-east", RegionRole::Active))
        .region(Region::new("us-west", RegionRole::Standby))
        .vantage("east")
        .vantage("west")
        .node(Node {
            name: "pg-east".into(),
            region: "us-east".into(),
            priority: 0,
            primary: true,
        })
        .node(Node {
            name: "pg-west".into(),
            region: "us-west".into(),
            priority: 0,
            primary: false,
        })
        .build()
        .expect("valid topology")
}

pub fn policy() -> Policy {
    Policy {
        interval: Duration::from_millis(500),
        timeout: Duration::from_millis(250),
        jitter: Duration::ZERO,
        ..Policy::default()
    }
}

pub fn config(endpoints: &[String], controller: &str, vantage: &str) -> EtcdConfig {
    let mut c = EtcdConfig::new(endpoints.iter().cloned(), "api", controller, vantage);
    c.lease_ttl = TTL;
    c.lease_margin = Duration::from_millis(500);
    c.connect_timeout = Duration::from_millis(500);
    c.request_timeout = Duration::from_secs(1);
    c
}

pub async fn coordinator(endpoints: &[String], controller: &str, vantage: &str) -> EtcdCoordinator {
    EtcdCoordinator::connect(
        config(endpoints, controller, vantage),
        topology(),
        &policy(),
    )
    .await
    .expect("valid config")
}

/// The leadership `join` reported (its last event).
pub fn joined_leadership(events: &[CoordinationEvent]) -> Option<failover_core::FencingToken> {
    match events.last() {
        Some(CoordinationEvent::Leadership(t)) => *t,
        other => panic!("join must end with Leadership, got {other:?}"),
    }
}

/// Waits (at most `limit`) for an event matching `want`; returns it and when
/// it arrived. Panics with every event seen if none matched.
pub async fn wait_for(
    c: &EtcdCoordinator,
    limit: Duration,
    what: &str,
    mut want: impl FnMut(&CoordinationEvent) -> bool,
) -> (CoordinationEvent, Instant) {
    let deadline = Instant::now() + limit;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, c.next_event()).await {
            Ok(Ok(ev)) if want(&ev) => return (ev, Instant::now()),
            Ok(Ok(ev)) => seen.push(format!("{ev:?}")),
            Ok(Err(e)) => seen.push(format!("error: {e}")),
            Err(_) => panic!("no {what} within {limit:?}; saw {seen:?}"),
        }
    }
}

/// Asserts that no event matching `unwanted` comes within `window`.
pub async fn none_within(
    c: &EtcdCoordinator,
    window: Duration,
    what: &str,
    mut unwanted: impl FnMut(&CoordinationEvent) -> bool,
) {
    let deadline = Instant::now() + window;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, c.next_event()).await {
            Ok(Ok(ev)) if unwanted(&ev) => panic!("unexpected {what}: {ev:?}"),
            Ok(_) => {}
            Err(_) => return,
        }
    }
}

/// Two coordinators on a 3-member cluster: east reaches etcd through one
/// follower only (the member returned), west through the other two. Stopping
/// that member cuts east off while west keeps a majority.
pub async fn east_on_one_follower(
    cluster: &mut failover_testkit::etcd::EtcdCluster,
) -> (usize, EtcdCoordinator, EtcdCoordinator) {
    let leader = tokio::task::block_in_place(|| cluster.leader());
    let lone = (0..3).find(|&i| Some(i) != leader).unwrap();
    let others: Vec<String> = (0..3)
        .filter(|&i| i != lone)
        .map(|i| cluster.endpoint(i))
        .collect();
    let east = coordinator(&[cluster.endpoint(lone)], "ctl-east", "east").await;
    let west = coordinator(&others, "ctl-west", "west").await;
    (lone, east, west)
}
