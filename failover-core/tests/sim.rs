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

/// The planner against the simulator, over a sweep: the outage's phase
/// across the 10 s probe grid (every 250 ms), probe jitter (0, 1 s, 3 s),
/// probe loss (0, 3 %, 10 %) and two seeds each — 720 runs. Every run is
/// detected and cut over within the planner's bounds, and for each jitter
/// and loss the worst run comes within 10 % of the planner's worst: a bound
/// that is never approached is not known to be tight.
///
/// The one exception to the lower bound is stated, not hidden: with probe
/// loss, a probe lost just *before* the outage starts the failure streak
/// early, so detection can beat the planner's best (which counts from a
/// fresh streak). Such a run must show that streak: its first failure
/// reported before any probe started after the outage could have failed.
#[test]
fn the_planner_bounds_every_run_of_a_phase_jitter_and_loss_sweep() {
    let interval = S(10);
    let outage_base = S(120);
    for jitter_ms in [0u64, 1_000, 3_000] {
        for loss in [0.0, 0.03, 0.10] {
            let mut policy = seed_policy();
            policy.jitter = Duration::from_millis(jitter_ms);
            let config = Config::new(seed_topology(&[]), policy).unwrap();
            let east = config.topology().region_id("us-east").unwrap();
            let bounds =
                Bounds::for_policy(config.policy(), Scenario::new(config.clone(), 0).actuation);
            let timeout = config.policy().timeout;
            let (mut worst_detection, mut worst_cutover) = (Duration::ZERO, Duration::ZERO);
            let (mut early, mut disturbed) = (0, 0);
            for step in 0..40u32 {
                let phase = interval * step / 40;
                let outage = outage_base + phase;
                for seed in [11, 12] {
                    let scenario = Scenario::new(config.clone(), seed * 1000 + u64::from(step))
                        .duration(S(300))
                        .probe_loss(loss)
                        .outage(east, outage, None);
                    let report = scenario.run();
                    let what =
                        format!("jitter {jitter_ms} ms, loss {loss}, phase {phase:?}, seed {seed}");
                    // Loss alone can fail us-east over before the outage (3
                    // losses in a row). If it is still marked down, or still
                    // drained, when the outage begins, there is no detection
                    // or no cutover to measure: say so, count it, and hold
                    // what was measured to the upper bounds only.
                    let down_before = report.timeline.iter().rev().find_map(|e| match &e.what {
                        Happening::Controller(ev) if e.at < outage => match ev.kind {
                            EventKind::RegionDown { region, .. } if region == east => Some(true),
                            EventKind::RegionUp { region, .. } if region == east => Some(false),
                            _ => None,
                        },
                        _ => None,
                    }) == Some(true);
                    let live_before = report.timeline.iter().rev().find_map(|e| match &e.what {
                        Happening::PlanApplied { weights, .. } if e.at < outage => {
                            Some(weights[east.index()].weight)
                        }
                        _ => None,
                    });
                    if down_before || live_before == Some(0) {
                        assert!(
                            loss > 0.0,
                            "{what}: us-east out of service before the outage without loss"
                        );
                        assert!(
                            report.detection.is_none_or(|d| d <= bounds.worst_detection),
                            "{what}: {report:?}"
                        );
                        assert!(
                            report.cutover.is_none_or(|c| c <= bounds.worst_cutover),
                            "{what}: {report:?}"
                        );
                        disturbed += 1;
                        continue;
                    }
                    let detection = report
                        .detection
                        .unwrap_or_else(|| panic!("{what}: not detected"));
                    let cutover = report
                        .cutover
                        .unwrap_or_else(|| panic!("{what}: no cutover"));
                    assert!(
                        detection <= bounds.worst_detection,
                        "{what}: detection {detection:?} > {bounds:?}"
                    );
                    assert!(
                        cutover <= bounds.worst_cutover,
                        "{what}: cutover {cutover:?} > {bounds:?}"
                    );
                    if detection < bounds.best_detection {
                        // Only a streak begun by a loss before the outage.
                        let streak = report.timeline.iter().rev().find(|e| e.at <= outage + detection && matches!(
                            &e.what,
                            Happening::Controller(ev) if matches!(ev.kind, EventKind::ProbeFailed { region, .. } if region == east)
                        ));
                        let began = streak
                            .map(|e| e.at)
                            .unwrap_or_else(|| panic!("{what}: early with no streak"));
                        assert!(
                            loss > 0.0 && began < outage + timeout,
                            "{what}: detection {detection:?} beats the best {:?} without a pre-outage loss (streak began {began:?})",
                            bounds.best_detection
                        );
                        early += 1;
                    } else {
                        assert!(
                            cutover >= bounds.best_cutover,
                            "{what}: cutover {cutover:?} < {bounds:?}"
                        );
                    }
                    worst_detection = worst_detection.max(detection);
                    worst_cutover = worst_cutover.max(cutover);
                }
            }
            eprintln!(
                "jitter {jitter_ms} ms, loss {loss}: worst detection {worst_detection:?} of {:?}, worst cutover {worst_cutover:?} of {:?}, {early} runs early by a pre-outage loss, {disturbed} already failed over by loss",
                bounds.worst_detection, bounds.worst_cutover
            );
            assert!(
                worst_detection.as_secs_f64() >= 0.9 * bounds.worst_detection.as_secs_f64(),
                "jitter {jitter_ms} ms, loss {loss}: the worst detection {worst_detection:?} is not within 10 % of the planner's {:?}",
                bounds.worst_detection
            );
            assert!(
                worst_cutover.as_secs_f64() >= 0.9 * bounds.worst_cutover.as_secs_f64(),
                "jitter {jitter_ms} ms, loss {loss}: the worst cutover {worst_cutover:?} is not within 10 % of the planner's {:?}",
                bounds.worst_cutover
            );
        }
    }
}

/// The seed drill with us-east and us-west in different residency groups:
/// the outage of the writer's region is detected, but its replica in the
/// other group is never promoted, the refusal names the rule, and no
/// traffic share crosses to the other group.
#[test]
fn a_cross_group_promotion_is_refused_in_the_simulator() {
    let mut topology = seed_topology(&[]).regions().to_vec();
    topology[0].residency = Some("us-east-only".into());
    topology[1].residency = Some("us-west-only".into());
    let mut b = failover_core::Topology::builder("api.example.com.");
    for r in topology {
        b = b.region(r);
    }
    for n in seed_topology(&[]).nodes() {
        b = b.node(n.clone());
    }
    let config = Config::new(
        b.build().expect("valid topology"),
        auto_promote(seed_policy(), 16 << 20),
    )
    .unwrap();
    let east = config.topology().region_id("us-east").unwrap();
    let west = config.topology().region_id("us-west").unwrap();
    let report = Scenario::new(config, 3)
        .duration(S(600))
        .replication(2_000_000.0, Duration::from_millis(250))
        .outage(east, S(120), Some(S(400)))
        .run();
    assert!(report.detection.is_some(), "the outage is detected");
    assert!(report.data_loss.is_none(), "nothing promoted");
    let events = controller_events(&report);
    assert!(
        !events.iter().any(|e| matches!(
            e,
            EventKind::Promoted { .. } | EventKind::PromotionRequested { .. }
        )),
        "{events:#?}"
    );
    assert!(events
        .iter()
        .any(|e| matches!(e, EventKind::ResidencyRefused { .. })));
    assert!(events
        .iter()
        .any(|e| matches!(e, EventKind::ResidencyAllDown { region, .. } if *region == east)));
    // Each group serves its own users: us-west (alone in its group) at its
    // base weight throughout, never more, and us-east, wholly out, kept by
    // fail-open (then ramped back). No plan moves a share across.
    let plans: Vec<_> = report
        .timeline
        .iter()
        .filter_map(|e| match &e.what {
            Happening::PlanApplied { weights, .. } => Some(weights.clone()),
            _ => None,
        })
        .collect();
    assert!(!plans.is_empty());
    for weights in plans {
        let w = |r| {
            weights
                .iter()
                .find(|w| w.region == r)
                .map_or(0, |w| w.weight)
        };
        assert_eq!(w(west), 100, "{weights:?}");
        assert!(w(east) > 0, "{weights:?}");
    }
}
