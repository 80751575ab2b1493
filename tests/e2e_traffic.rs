//! End to end on real sockets: regional HTTP APIs probed by failover-probe,
//! decisions by the core Controller under the tokio runtime, answers served
//! by the embedded authoritative DNS server and read back with `dig`.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use failover::decision::objectives::Bounds;
use failover::decision::EventKind;
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
    let mut events = handle.subscribe_events();

    let outage = Instant::now();
    regions.east.stop().await;
    let bounds = Bounds::for_policy(&policy, Duration::ZERO);
    // Wait for the events, not for a window. Late is not a failure here: on
    // a loaded 2-core machine real sockets and threads can be late by far
    // more than a probe interval, so the upper bound is the worst case plus
    // ample slack (5 s). The planner's exact [best, worst] is checked on the
    // simulator's clock (failover-core/tests/sim.rs) and measured from the
    // fault by the bench (BENCHMARKS.md).
    let slack = Duration::from_secs(5);
    // Early is bounded by the probe grid, but not by the planner's best,
    // (fall - 1) x interval: that assumes the outage lands just before a
    // probe starts. A probe in flight when the API stops (started up to
    // `timeout` before) fails too and starts the streak, and jitter can
    // move the first start late and the last early. The true floor is
    // (fall - 1) x interval - jitter - timeout.
    let floor = bounds
        .best_detection
        .saturating_sub(policy.jitter + policy.timeout);
    let (detected, streak) = tokio::time::timeout(bounds.worst_detection + slack, async {
        let mut streak = None;
        loop {
            match events.recv().await {
                Ok(event) => match event.kind {
                    EventKind::ProbeFailed { region, .. } if region == EAST => {
                        streak = Some(event.at);
                    }
                    EventKind::RegionDown { region, .. } if region == EAST => {
                        return (event.at, streak);
                    }
                    _ => {}
                },
                Err(error) => panic!("event stream: {error}"),
            }
        }
    })
    .await
    .expect("us-east is seen down within the worst case plus slack");
    let switched = wait_answer(dns.local_addr(), WEST_IP, bounds.worst_detection + slack).await;

    let detection = detected - outage;
    match streak {
        // The failures that marked it down began with the outage.
        Some(first) if first >= outage => assert!(
            detection >= floor,
            "detected after {detection:?}, before the floor {floor:?}"
        ),
        // A probe failed before the outage (a loaded machine can time one
        // out at 150 ms): the streak is older than the fault. It still
        // cannot be shorter than the grid allows.
        Some(first) => {
            let run = detected.saturating_duration_since(first);
            assert!(
                run >= floor,
                "down {run:?} after the streak's first failure, before the floor {floor:?}"
            );
            eprintln!("a probe failed before the outage; the streak began early");
        }
        None => eprintln!("the streak began before the event subscription"),
    }
    assert!(
        detection <= bounds.worst_detection + slack,
        "detected after {detection:?}, beyond the worst case {:?} + {slack:?}",
        bounds.worst_detection
    );
    let took = switched - outage;
    assert!(
        switched >= detected,
        "the answer switched ({took:?}) before detection ({detection:?})"
    );
    assert!(
        took <= bounds.worst_detection + slack,
        "switched after {took:?}, beyond the worst case {:?} + {slack:?}",
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

    // Six outages, each until the runtime sees us-east down, each followed
    // by a recovery until it sees it up again: waited for as events, so a
    // slow machine stretches the flaps instead of missing them.
    let mut events = handle.subscribe_events();
    // Drains are counted from every status the runtime publishes. A drain
    // lasts at least the hold-down (300 ms) and the ramp, far longer than
    // this task takes to see a status.
    let mut watch = handle.watch_status();
    let drains = Arc::new(AtomicU32::new(0));
    let counter = {
        let drains = Arc::clone(&drains);
        tokio::spawn(async move {
            let mut serving = true;
            while watch.changed().await.is_ok() {
                let weight = watch.borrow_and_update().controller.regions[EAST.index()].weight;
                if serving && weight == 0 {
                    drains.fetch_add(1, Ordering::SeqCst);
                }
                serving = weight > 0;
            }
        })
    };
    let patience = Duration::from_secs(20);
    for flap in 0..6 {
        east.stop().await;
        wait_event(
            &mut events,
            patience,
            &format!("us-east down (flap {flap})"),
            |kind| matches!(kind, EventKind::RegionDown { region, .. } if *region == EAST),
        )
        .await;
        east.start().expect("east API restarts on its port");
        wait_event(
            &mut events,
            patience,
            &format!("us-east up (flap {flap})"),
            |kind| matches!(kind, EventKind::RegionUp { region, .. } if *region == EAST),
        )
        .await;
        // The recovery is seen: us-east serves again, or only damping keeps
        // it out (see `damped_now`).
        wait_status(&handle, patience, "us-east back or damped", |s| {
            s.controller.regions[EAST.index()].weight > 0 || damped_now(s)
        })
        .await;
    }
    let status = handle.status();
    let damped = damped_now(&status);
    counter.abort();
    let drains = drains.load(Ordering::SeqCst);
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

/// Waits (at most `limit`) for an event whose kind satisfies `check`.
async fn wait_event(
    events: &mut tokio::sync::broadcast::Receiver<failover::decision::Event>,
    limit: Duration,
    what: &str,
    check: impl Fn(&EventKind) -> bool,
) {
    let found = tokio::time::timeout(limit, async {
        loop {
            match events.recv().await {
                Ok(event) if check(&event.kind) => return,
                Ok(_) => {}
                Err(error) => panic!("event stream while waiting for {what}: {error}"),
            }
        }
    })
    .await;
    assert!(found.is_ok(), "no {what} within {limit:?}");
}

/// us-east is held out far beyond now. The hold-down (300 ms after it went
/// down) never reaches 10 s ahead; only flap damping (a whole 60 s window)
/// does.
fn damped_now(status: &failover::RuntimeStatus) -> bool {
    status.controller.regions[EAST.index()]
        .held_until
        .is_some_and(|until| until > std::time::Instant::now() + Duration::from_secs(10))
}
