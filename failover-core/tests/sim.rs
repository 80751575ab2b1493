//! Simulated drills: the measured numbers fall within the objectives' bounds.

mod common;

use std::time::Duration;

use common::*;
use failover_core::objectives::{rpo_from_delay, Bounds};
use failover_core::sim::{Happening, Scenario};
use failover_core::{Config, EventKind};

const S: fn(u64) -> Duration = Duration::from_secs;

fn seed_scenario(seed: u64) -> Scenario {
    let config = Config::new(seed_topology(&[]), auto_promote(seed_policy(), 16 << 20)).unwrap();
    let east = config.topology().region_id("us-east").unwrap();
    Scenario::new(config, seed)
        .duration(S(900))
        .replication(2_000_000.0, Duration::from_millis(250))
        .outage(east, S(120), Some(S(500)))
}

fn controller_events(report: &failover_core::sim::Report) -> Vec<EventKind> {
    report
        .timeline
        .iter()
        .filter_map(|e| match &e.what {
            Happening::Controller(ev) => Some(ev.kind.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn outage_is_detected_and_cut_over_within_the_planned_bounds() {
    let mut detections = Vec::new();
    for seed in 1..=5 {
        // Each seed jitters the probes differently (1 s of jitter) and
        // starts the outage at another phase of the 10 s probe grid.
        let mut config =
            Config::new(seed_topology(&[]), auto_promote(seed_policy(), 16 << 20)).unwrap();
        let mut policy = config.policy().clone();
        policy.jitter = Duration::from_secs(1);
        config = Config::new(config.topology().clone(), policy).unwrap();
        let east = config.topology().region_id("us-east").unwrap();
        let phase = Duration::from_millis(1_900 * seed);
        let scenario = Scenario::new(config, seed)
            .duration(S(900))
            .replication(2_000_000.0, Duration::from_millis(250))
            .outage(east, S(120) + phase, Some(S(500)));
        let report = scenario.run();
        let bounds = Bounds::for_policy(scenario.config.policy(), scenario.actuation);
        let detection = report.detection.expect("detected");
        detections.push(detection);
        let cutover = report.cutover.expect("cut over");
        assert!(
            detection >= bounds.best_detection && detection <= bounds.worst_detection,
            "seed {seed}: {detection:?} vs {bounds:?}"
        );
        assert!(
            cutover <= bounds.worst_cutover,
            "seed {seed}: {cutover:?} vs {bounds:?}"
        );
        let loss = report.data_loss.expect("promoted");
        assert_eq!(
            loss.bytes,
            rpo_from_delay(Duration::from_millis(250), 2_000_000.0).bytes
        );
        let events = controller_events(&report);
        assert!(events
            .iter()
            .any(|e| matches!(e, EventKind::Promoted { .. })));
        assert!(events
            .iter()
            .any(|e| matches!(e, EventKind::CapacityWarning { load_percent: 167 })));
        // The old primary's guard lease expired (its guard fenced it) before
        // anything was promoted, and nothing unfenced it on recovery.
        let expired = events.iter().position(|e| {
            matches!(
                e,
                EventKind::StopProven {
                    proof: failover_core::StopProof::GuardLeaseExpired,
                    ..
                }
            )
        });
        let promoted = events
            .iter()
            .position(|e| matches!(e, EventKind::Promoted { .. }));
        assert!(
            expired < promoted && expired.is_some(),
            "seed {seed}: {events:#?}"
        );
        assert!(!events
            .iter()
            .any(|e| matches!(e, EventKind::UnfenceRequested { .. })));
        // Recovery: us-east ramps back to 100 %.
        let ramp: Vec<u8> = events
            .iter()
            .filter_map(|e| match e {
                EventKind::RampStep { percent, .. } => Some(*percent),
                _ => None,
            })
            .collect();
        assert_eq!(ramp, vec![10, 25, 50, 100], "seed {seed}");
    }
    // The seeds are not five copies of one run.
    detections.sort();
    detections.dedup();
    assert!(
        detections.len() >= 3,
        "seeds and phases must give different detections: {detections:?}"
    );
}

#[test]
fn same_seed_same_timeline() {
    let start = std::time::Instant::now();
    let a = seed_scenario(9).start(start).probe_loss(0.05).run();
    let b = seed_scenario(9).start(start).probe_loss(0.05).run();
    assert_eq!(a, b);
    let c = seed_scenario(10).start(start).probe_loss(0.05).run();
    assert_ne!(
        a.timeline, c.timeline,
        "a different seed jitters differently"
    );
}

#[test]
fn scattered_probe_loss_does_not_fail_over() {
    let config = Config::new(seed_topology(&[]), seed_policy()).unwrap();
    let report = Scenario::new(config, 3)
        .duration(S(24 * 3600))
        .probe_loss(0.01)
        .run();
    let events = controller_events(&report);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, EventKind::ProbeFailed { .. })),
        "1 % loss shows as misses"
    );
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, EventKind::RegionDown { .. })),
        "but never 3 in a row in a day"
    );
    assert!(report.probes > 17_000);
}

#[test]
fn flapping_region_is_damped() {
    let mut policy = seed_policy();
    policy.hold_down = S(20);
    let config = Config::new(seed_topology(&[]), policy).unwrap();
    let east = config.topology().region_id("us-east").unwrap();
    let report = Scenario::new(config, 5)
        .duration(S(1500))
        .flapping(east, S(60), S(600), S(50))
        .run();
    let events = controller_events(&report);
    let downs = events
        .iter()
        .filter(|e| matches!(e, EventKind::RegionDown { .. }))
        .count();
    assert!(downs >= 3, "{downs}");
    assert!(events
        .iter()
        .any(|e| matches!(e, EventKind::FlapDamped { .. })));
    // Damped for a whole window after the last flap: no ramp while it flaps on.
    let last_flap = report.timeline.iter().rev().find(|e| matches!(e.what, Happening::Controller(ref ev) if matches!(ev.kind, EventKind::FlapDamped { .. }))).unwrap().at;
    let ramps_after: Vec<_> = report.timeline.iter().filter(|e| e.at > last_flap && matches!(e.what, Happening::Controller(ref ev) if matches!(ev.kind, EventKind::RampStep { .. }))).map(|e| e.at).collect();
    assert!(
        ramps_after.iter().all(|t| *t >= last_flap + S(600)),
        "{ramps_after:?}"
    );
}

#[test]
fn router_outage_during_failover_retries_until_the_plan_lands() {
    let scenario = seed_scenario(2).router_outage(S(100), S(200));
    let report = scenario.run();
    let events = controller_events(&report);
    assert!(events
        .iter()
        .any(|e| matches!(e, EventKind::WeightsChanged { retry: true, .. })));
    let applied = report.timeline.iter().find_map(|e| match &e.what {
        Happening::PlanApplied {
            generation: 2,
            weights,
        } => Some((e.at, weights.clone())),
        _ => None,
    });
    let (at, weights) = applied.expect("the failover plan is applied after the DNS outage");
    assert!(at >= S(200));
    assert_eq!(
        weights.iter().map(|w| w.weight).collect::<Vec<_>>(),
        vec![0, 100]
    );
}

#[test]
fn replication_lag_beyond_max_rpo_means_no_promotion() {
    let config = Config::new(seed_topology(&[]), auto_promote(seed_policy(), 1_000_000)).unwrap();
    let east = config.topology().region_id("us-east").unwrap();
    let report = Scenario::new(config, 1)
        .duration(S(400))
        .replication(1_000_000.0, S(5)) // 5 MB behind > 1 MB allowed
        .outage(east, S(60), None)
        .run();
    let events = controller_events(&report);
    assert!(report.data_loss.is_none());
    assert!(!events
        .iter()
        .any(|e| matches!(e, EventKind::Promoted { .. })));
    assert!(
        events
            .iter()
            .any(|e| matches!(e, EventKind::PromotionRefused { .. })),
        "{events:#?}"
    );
}

#[test]
fn without_guards_a_lost_region_is_never_promoted_and_the_controller_says_why() {
    let mut policy = auto_promote(seed_policy(), 16 << 20);
    policy.guard_ttl = None;
    let config = Config::new(seed_topology(&[]), policy).unwrap();
    let east = config.topology().region_id("us-east").unwrap();
    let report = Scenario::new(config, 7)
        .duration(S(600))
        .replication(2_000_000.0, Duration::from_millis(250))
        .outage(east, S(120), None)
        .run();
    let events = controller_events(&report);
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, EventKind::PromotionRequested { .. })),
        "an unreachable writer is not proof that it stopped: {events:#?}"
    );
    assert!(events
        .iter()
        .any(|e| matches!(e, EventKind::PromotionUnproven { guards: false, .. })));
    assert!(events
        .iter()
        .any(|e| matches!(e, EventKind::NeedsOperator { .. })));
    assert!(report.data_loss.is_none());
}
