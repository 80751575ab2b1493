//! End to end on real sockets: regional HTTP APIs probed by failover-probe,
//! decisions by the core Controller under the tokio runtime, answers served
//! by the embedded authoritative DNS server and read back with `dig`.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use failover::decision::objectives::Bounds;
use failover::dns::{EmbeddedConfig, EmbeddedDns, Selection};
use failover::RuntimeBuilder;

async fn embedded_dns(policy: &failover::decision::Policy) -> EmbeddedDns {
    let mut dns = EmbeddedConfig::new(ZONE);
    dns.selection = Selection::AllServing;
    EmbeddedDns::bind(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        &topology(),
        policy,
        dns,
    )
    .await
    .expect("embedded DNS binds on loopback")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_switches_within_the_planners_bounds_when_a_region_dies() {
    let policy = fast_policy();
    let regions = TwoRegions::start();
    let dns = embedded_dns(&policy).await;
    let runtime = regions
        .run(RuntimeBuilder::new(config(topology(), policy.clone())).router(Arc::new(dns.router())))
        .await;
    let handle = runtime.handle();
    wait_answer(dns.local_addr(), EAST_IP, Duration::from_secs(5)).await;

    let outage = Instant::now();
    regions.east.stop().await;
    let switched = wait_answer(dns.local_addr(), WEST_IP, Duration::from_secs(10)).await;
    let took = switched - outage;

    let bounds = Bounds::for_policy(&policy, Duration::ZERO);
    // The authoritative answer changes when detection completes; dig's own
    // polling adds up to ~20 ms plus its start-up. A loaded machine may be
    // late by a few hundred ms; it can never be early.
    assert!(
        took >= bounds.best_detection,
        "switched after {took:?}, before the best-case detection {:?}",
        bounds.best_detection
    );
    assert!(
        took <= bounds.worst_detection + Duration::from_millis(750),
        "switched after {took:?}, beyond the worst-case detection {:?} (+750 ms slack)",
        bounds.worst_detection
    );
    let status = handle.status();
    assert!(
        status
            .recent_events
            .iter()
            .any(|e| e.contains("us-east") && e.contains("down")),
        "the outage is explained in the events: {:#?}",
        status.recent_events
    );
    runtime.shutdown().await;
    dns.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flapping_region_fails_over_no_more_often_than_damping_allows() {
    let mut policy = fast_policy();
    policy.flap_limit = 2;
    policy.flap_window = Duration::from_secs(60);
    policy.hold_down = Duration::from_millis(300);
    let regions = TwoRegions::start();
    let east = &regions.east;
    let dns = embedded_dns(&policy).await;
    let runtime = regions
        .run(RuntimeBuilder::new(config(topology(), policy.clone())).router(Arc::new(dns.router())))
        .await;
    let handle = runtime.handle();

    // Six outages of ~1.5 s separated by ~2 s of health: each is long enough
    // to be detected, and each recovery long enough to be seen.
    let mut watch = handle.watch_status();
    let mut drains = 0u32;
    let mut serving = true;
    for _ in 0..6 {
        east.stop().await;
        let until = tokio::time::Instant::now() + Duration::from_millis(1500);
        while let Ok(Ok(())) = tokio::time::timeout_at(until, watch.changed()).await {
            let weight = watch.borrow_and_update().controller.regions[EAST.index()].weight;
            if serving && weight == 0 {
                drains += 1;
            }
            serving = weight > 0;
        }
        east.start().expect("east API restarts on its port");
        let until = tokio::time::Instant::now() + Duration::from_millis(2000);
        while let Ok(Ok(())) = tokio::time::timeout_at(until, watch.changed()).await {
            let weight = watch.borrow_and_update().controller.regions[EAST.index()].weight;
            if serving && weight == 0 {
                drains += 1;
            }
            serving = weight > 0;
        }
    }
    let status = handle.status();
    // Held out beyond now. The hold-down alone (300 ms) ended well over a
    // second ago, after the last recovery; only damping (a whole 60 s
    // window) keeps it out now.
    let damped = status.controller.regions[EAST.index()]
        .held_until
        .is_some_and(|until| until > std::time::Instant::now());
    assert!(drains >= 1, "the first outage must fail over");
    assert!(
        drains <= policy.flap_limit,
        "{drains} failovers for 6 flaps; damping allows {}",
        policy.flap_limit
    );
    assert!(
        damped,
        "us-east is held out after flapping: {:#?}",
        status.recent_events
    );
    assert_eq!(
        failover_testkit::bind::dig(dns.local_addr(), SERVICE, "A").expect("dig"),
        vec![WEST_IP.to_owned()],
        "clients stay on us-west while us-east is damped"
    );
    runtime.shutdown().await;
    dns.shutdown().await;
}
