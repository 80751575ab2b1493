//! Traffic rules, each as a short drill: set up regions, break one, read the timeline.

mod common;

use std::time::Duration;

use common::*;
use failover_core::{
    Action, AllDownPolicy, Command, Config, EventKind, Health, InitialHealth, PortErrorKind,
    Region, RegionRole, Topology,
};

fn healthy_start(d: &mut Drill) {
    d.rounds(0, 2, "us-east", true);
    for t in [0, 10] {
        d.round(t, "us-west", true);
    }
}

#[test]
fn first_plan_is_emitted_at_construction_and_health_starts_unknown() {
    let d = Drill::new(seed_config());
    assert_eq!(d.plans(), vec![(0, vec![100, 0])]);
    assert_eq!(d.health("us-east"), Health::Unknown);
    assert_eq!(d.health("us-west"), Health::Unknown);
    assert_eq!(d.c.poll_timeout(), None);
}

#[test]
fn fall_misses_mark_down_and_the_standby_takes_all_traffic() {
    let mut d = Drill::new(seed_config());
    healthy_start(&mut d);
    assert_eq!(d.health("us-east"), Health::Up);

    d.round(30, "us-east", false);
    assert!(matches!(
        d.last_events()[..],
        [EventKind::ProbeFailed {
            consecutive: 1,
            fall: 3,
            ..
        }]
    ));
    d.round(40, "us-east", false);
    assert!(d.last_events().is_empty(), "second miss is silent");
    assert_eq!(d.weights(), vec![100, 0]);

    d.round(50, "us-east", false);
    assert_eq!(d.health("us-east"), Health::Down);
    assert_eq!(d.weights(), vec![0, 100]);
    let events = d.last_events();
    assert!(events.iter().any(|e| matches!(
        e,
        EventKind::RegionDown {
            down_votes: 1,
            vantages: 1,
            quorum: 1,
            ..
        }
    )));
    assert!(events
        .iter()
        .any(|e| matches!(e, EventKind::CapacityWarning { load_percent: 167 })));
    assert!(events.iter().any(|e| matches!(
        e,
        EventKind::WeightsChanged {
            generation: 2,
            serving: 1,
            retry: false
        }
    )));
}

#[test]
fn recovery_is_held_down_then_ramps_back_in_steps() {
    let mut d = Drill::new(seed_config());
    healthy_start(&mut d);
    d.rounds(30, 3, "us-east", false); // down at 50, held until 110
    d.rounds(60, 2, "us-east", true); // up at 70
    assert_eq!(d.health("us-east"), Health::Up);
    assert!(d
        .last_events()
        .iter()
        .any(|e| matches!(e, EventKind::HeldDown { .. })));
    assert_eq!(d.weights(), vec![0, 100], "held down: still out at 70 s");

    d.advance_to(300);
    let plans = d.plans();
    let after: Vec<_> = plans.iter().filter(|(t, _)| *t > 50).cloned().collect();
    assert_eq!(
        after,
        vec![
            (110, vec![10, 90]),
            (140, vec![25, 75]),
            (170, vec![50, 50]),
            (200, vec![100, 0]),
        ]
    );
    assert_eq!(d.c.poll_timeout(), None, "nothing left to wake for");
}

#[test]
fn failing_again_during_the_ramp_aborts_it() {
    let mut d = Drill::new(seed_config());
    healthy_start(&mut d);
    d.rounds(30, 3, "us-east", false);
    d.rounds(60, 2, "us-east", true);
    d.advance_to(145); // at 25 %
    assert_eq!(d.weights(), vec![25, 75]);
    d.rounds(150, 3, "us-east", false); // the 170 s ramp step (50 %) comes first
    assert_eq!(d.weights(), vec![0, 100]);
    assert!(d
        .events()
        .iter()
        .any(|e| matches!(e, EventKind::FailbackAborted { percent: 50, .. })));
}

#[test]
fn a_down_needs_a_quorum_of_vantages() {
    let config = Config::new(seed_topology(&["a", "b", "c"]), seed_policy()).unwrap();
    let mut d = Drill::new(config);
    d.rounds(0, 2, "us-east", true);
    for t in [20, 30, 40] {
        d.advance_to(t);
        d.probe("us-east", "a", false);
        d.probe("us-east", "b", true);
        d.probe("us-east", "c", true);
    }
    assert_eq!(
        d.health("us-east"),
        Health::Up,
        "one vantage of three is not a quorum"
    );
    for t in [50, 60, 70] {
        d.advance_to(t);
        d.probe("us-east", "b", false);
    }
    assert_eq!(d.health("us-east"), Health::Down);
    assert!(d.events().iter().any(|e| matches!(
        e,
        EventKind::RegionDown {
            down_votes: 2,
            vantages: 3,
            quorum: 2,
            ..
        }
    )));
}

#[test]
fn initial_health_down_serves_nothing_until_proven_but_fail_open_serves_all() {
    let mut policy = seed_policy();
    policy.initial_health = InitialHealth::Down;
    let d = Drill::new(Config::new(seed_topology(&[]), policy.clone()).unwrap());
    assert_eq!(
        d.weights(),
        vec![100, 100],
        "fail-open: everything down → serve all"
    );
    assert!(d.events().iter().any(|e| matches!(
        e,
        EventKind::AllDown {
            policy: AllDownPolicy::FailOpen
        }
    )));

    policy.all_down = AllDownPolicy::FailClosed;
    let mut d = Drill::new(Config::new(seed_topology(&[]), policy).unwrap());
    assert_eq!(d.weights(), vec![0, 0]);
    d.rounds(0, 2, "us-east", true);
    assert_eq!(d.weights(), vec![10, 0], "a region proven up ramps in");
}

#[test]
fn all_down_fail_open_and_fail_closed() {
    for (all_down, expected) in [
        (AllDownPolicy::FailOpen, vec![100, 100]),
        (AllDownPolicy::FailClosed, vec![0, 0]),
    ] {
        let mut policy = seed_policy();
        policy.all_down = all_down;
        let mut d = Drill::new(Config::new(seed_topology(&[]), policy).unwrap());
        healthy_start(&mut d);
        for t in [30, 40, 50] {
            d.round(t, "us-east", false);
            d.round(t, "us-west", false);
        }
        assert_eq!(d.weights(), expected, "{all_down:?}");
    }
}

#[test]
fn flapping_region_is_damped_beyond_its_hold_down() {
    let mut policy = seed_policy();
    policy.hold_down = Duration::from_secs(20);
    policy.flap_limit = 2;
    policy.flap_window = Duration::from_secs(600);
    let mut d = Drill::new(Config::new(seed_topology(&[]), policy).unwrap());
    healthy_start(&mut d);
    d.rounds(30, 3, "us-east", false); // down #1 at 50
    d.rounds(60, 2, "us-east", true); // up at 70 (hold-down over)
    assert_eq!(d.weights()[0], 10, "first flap: back through the ramp");
    d.rounds(80, 3, "us-east", false); // down #2 at 100 → damped until 700
    assert!(d
        .events()
        .iter()
        .any(|e| matches!(e, EventKind::FlapDamped { flaps: 2, .. })));
    d.rounds(110, 2, "us-east", true);
    d.advance_to(650);
    assert_eq!(
        d.weights(),
        vec![0, 100],
        "damped: stays out for the window"
    );
    d.advance_to(701);
    assert_eq!(d.weights(), vec![10, 90]);
}

fn active_active(min_serving: u32) -> Config {
    let topo = Topology::builder("api.example.com.")
        .region(Region::new("eu", RegionRole::Active))
        .region({
            let mut r = Region::new("us", RegionRole::Active);
            r.base_weight = 300;
            r
        })
        .build()
        .unwrap();
    let mut policy = seed_policy();
    policy.min_serving_regions = min_serving;
    Config::new(topo, policy).unwrap()
}

#[test]
fn active_active_shares_by_base_weight_and_survivor_takes_all() {
    let mut d = Drill::new(active_active(1));
    assert_eq!(d.weights(), vec![100, 300]);
    d.rounds(0, 2, "eu", true);
    d.rounds(20, 3, "us", false);
    assert_eq!(d.weights(), vec![100, 0]);
}

#[test]
fn safety_rule_keeps_min_serving_regions_on_probe_evidence() {
    let mut d = Drill::new(active_active(2));
    d.rounds(0, 2, "eu", true);
    d.rounds(20, 3, "us", false);
    assert_eq!(
        d.weights(),
        vec![100, 300],
        "probe evidence alone may not drop below 2"
    );
    assert!(d
        .events()
        .iter()
        .any(|e| matches!(e, EventKind::SafetyHold { min_serving: 2, .. })));
    // An operator may.
    let us = d.c.topology().region_id("us").unwrap();
    d.command(Command::Drain(us));
    assert_eq!(d.weights(), vec![100, 0]);
}

#[test]
fn drain_and_undrain_through_the_ramp_and_last_region_is_refused() {
    let mut d = Drill::new(active_active(1));
    let (eu, us) = (
        d.c.topology().region_id("eu").unwrap(),
        d.c.topology().region_id("us").unwrap(),
    );
    d.command(Command::Drain(eu));
    assert_eq!(d.weights(), vec![0, 300]);
    assert!(d.c.status().regions[0].drained);
    d.command(Command::Drain(us));
    assert!(matches!(
        d.last_events()[..],
        [EventKind::CommandRefused { .. }]
    ));
    assert_eq!(d.weights(), vec![0, 300]);
    d.command(Command::Undrain(eu));
    assert_eq!(d.weights(), vec![10, 300]);
    d.advance_to(100);
    assert_eq!(d.weights(), vec![100, 300]);
}

#[test]
fn paused_automation_tracks_health_but_changes_nothing_until_resumed() {
    let mut d = Drill::new(seed_config());
    healthy_start(&mut d);
    d.command(Command::Pause);
    d.rounds(30, 3, "us-east", false);
    assert_eq!(d.health("us-east"), Health::Down, "health is still tracked");
    assert_eq!(d.weights(), vec![100, 0]);
    assert!(d.c.status().paused);
    d.command(Command::Resume);
    assert_eq!(d.weights(), vec![0, 100]);
}

#[test]
fn failed_weight_plan_is_resent_with_a_new_id_after_backoff() {
    let mut d = Drill::new(seed_config());
    healthy_start(&mut d);
    d.ack_weights = false;
    d.rounds(30, 3, "us-east", false);
    let (first, plan) = match &d.last_actions()[..] {
        [Action::SetWeights { id, plan }] => (*id, plan.clone()),
        other => panic!("{other:?}"),
    };
    d.fail(first, PortErrorKind::Unavailable);
    assert!(matches!(
        d.last_events()[..],
        [EventKind::ActionFailed {
            retry_in: Some(_),
            ..
        }]
    ));
    let retry_at = d.c.poll_timeout().expect("retry armed");
    d.advance_to((retry_at - d.t0).as_secs() + 1);
    let resent: Vec<_> = d
        .log
        .iter()
        .filter_map(|(_, a)| match a {
            Action::SetWeights { id, plan: p } if *id != first && *p == plan => Some(*id),
            _ => None,
        })
        .collect();
    assert_eq!(resent.len(), 1, "the same plan, once, under a new id");
    // A second failure backs off further; success stops the retries.
    d.fail(resent[0], PortErrorKind::Timeout);
    let second = d.c.poll_timeout().unwrap() - d.now;
    assert!(second > Duration::from_secs(1));
    d.advance_to(d.secs() + 60);
    let last = d
        .log
        .iter()
        .rev()
        .find_map(|(_, a)| match a {
            Action::SetWeights { id, .. } => Some(*id),
            _ => None,
        })
        .unwrap();
    d.done(last);
    assert_eq!(d.c.poll_timeout(), None);
}

#[test]
fn early_and_extra_timeouts_do_nothing() {
    let mut d = Drill::new(seed_config());
    healthy_start(&mut d);
    // us-east goes down and comes back: its hold-down arms a timer.
    d.rounds(30, 3, "us-east", false);
    d.rounds(60, 2, "us-east", true);
    let due = d.c.poll_timeout().expect("a hold-down timer is armed");
    assert!(due > d.now, "the timer is in the future");
    let before = d.log.len();
    // Woken early, or several times, before the deadline: nothing happens,
    // and the deadline stays.
    for _ in 0..3 {
        d.c.handle_timeout(d.now);
        d.drain();
    }
    assert_eq!(d.log.len(), before, "{:?}", &d.log[before..]);
    assert_eq!(d.c.poll_timeout(), Some(due));
    // At the deadline it acts once (the region may return); again at the
    // same instant, nothing more.
    d.c.handle_timeout(due);
    d.drain();
    let acted = d.log.len();
    assert!(acted > before, "the due timer did nothing");
    d.c.handle_timeout(due);
    d.drain();
    assert_eq!(d.log.len(), acted, "{:?}", &d.log[acted..]);
}

#[test]
fn events_render_with_names() {
    let mut d = Drill::new(seed_config());
    healthy_start(&mut d);
    d.rounds(30, 3, "us-east", false);
    let text: Vec<String> = d
        .log
        .iter()
        .filter_map(|(_, a)| match a {
            Action::Notify(e) => Some(e.display(d.c.topology()).to_string()),
            _ => None,
        })
        .collect();
    assert!(
        text.iter()
            .any(|t| t == "us-east marked DOWN: 1/1 vantages agree (quorum 1)"),
        "{text:#?}"
    );
    assert!(text.iter().any(|t| t.contains("167%")), "{text:#?}");
}

#[test]
fn pausing_freezes_a_ramp_and_resuming_continues_it() {
    let mut d = Drill::new(seed_config());
    healthy_start(&mut d);
    d.rounds(30, 3, "us-east", false);
    d.rounds(60, 2, "us-east", true);
    d.advance_to(115);
    assert_eq!(d.weights(), vec![10, 90]);
    let why: Vec<&str> = d.c.deadlines().map(|(_, why)| why).collect();
    assert_eq!(why, vec!["failback ramp step"]);
    d.command(Command::Pause);
    d.advance_to(400);
    assert_eq!(
        d.weights(),
        vec![10, 90],
        "no automatic weight change while paused"
    );
    d.command(Command::Resume);
    d.advance_to(401);
    assert_eq!(d.weights(), vec![25, 75]);
    d.advance_to(500);
    assert_eq!(d.weights(), vec![100, 0]);
}

#[test]
fn rise_successes_are_needed_to_come_back_and_a_miss_resets_them() {
    let mut d = Drill::new(seed_config());
    healthy_start(&mut d);
    d.rounds(30, 3, "us-east", false);
    d.round(60, "us-east", true);
    assert_eq!(d.health("us-east"), Health::Down, "1 of rise 2");
    d.round(70, "us-east", false);
    d.round(80, "us-east", true);
    assert_eq!(
        d.health("us-east"),
        Health::Down,
        "the miss reset the count"
    );
    d.round(90, "us-east", true);
    assert_eq!(d.health("us-east"), Health::Up);
}

#[test]
fn configured_quorum_of_one_lets_any_vantage_mark_down() {
    let mut policy = seed_policy();
    policy.quorum = Some(1);
    let config = Config::new(seed_topology(&["a", "b", "c"]), policy).unwrap();
    let mut d = Drill::new(config);
    for t in [0, 10, 20] {
        d.advance_to(t);
        d.probe("us-east", "c", false);
    }
    assert_eq!(d.health("us-east"), Health::Down);
    assert!(d.events().iter().any(|e| matches!(
        e,
        EventKind::RegionDown {
            down_votes: 1,
            vantages: 3,
            quorum: 1,
            ..
        }
    )));
}

#[test]
fn initial_health_up_serves_until_fall_misses() {
    let mut policy = seed_policy();
    policy.initial_health = InitialHealth::Up;
    let mut d = Drill::new(Config::new(seed_topology(&[]), policy).unwrap());
    assert_eq!(d.health("us-east"), Health::Up);
    d.rounds(0, 3, "us-east", false);
    assert_eq!(d.weights(), vec![0, 100]);
}

#[test]
fn an_unknown_region_never_counts_for_promotion_but_keeps_its_weight() {
    let d = Drill::new(seed_config());
    let status = d.c.status();
    assert!(status.regions.iter().all(|r| r.health == Health::Unknown));
    assert_eq!(status.regions[0].weight, 100);
    assert_eq!(status.plan.as_ref().map(|p| p.generation), Some(1));
    assert!(!status.paused);

    // The writer's region goes down while us-west was never probed: its
    // replica is not a candidate, so nothing is fenced or promoted.
    let config = Config::new(seed_topology(&[]), auto_promote(seed_policy(), 1 << 20)).unwrap();
    let mut d = Drill::new(config);
    d.rounds(0, 2, "us-east", true);
    d.primary("pg-east", 1000, None);
    d.replica("pg-west", 1000);
    d.rounds(30, 3, "us-east", false);
    assert_eq!(d.health("us-west"), Health::Unknown);
    let acted = |d: &Drill| {
        d.log
            .iter()
            .any(|(_, a)| matches!(a, Action::Fence { .. } | Action::Promote { .. }))
    };
    assert!(
        !acted(&d),
        "a replica in a region of unknown health was used"
    );
    // Once us-west is known up, the same replica is a candidate.
    d.rounds(70, 2, "us-west", true);
    d.replica("pg-west", 1000);
    assert!(
        acted(&d),
        "a replica in a healthy region must be a candidate"
    );
}

#[test]
fn a_dead_vantage_cannot_pin_a_region_up_its_vote_expires() {
    // Two vantages: the default quorum is both. One dies (reports nothing
    // from t=20); the other sees us-east fail from t=30.
    let config = Config::new(seed_topology(&["a", "b"]), seed_policy()).unwrap();
    let mut d = Drill::new(config);
    for t in [0, 10] {
        d.probe("us-east", "a", true);
        d.probe("us-east", "b", true);
        d.probe("us-west", "a", true);
        d.probe("us-west", "b", true);
        d.advance_to(t + 10);
    }
    for t in (30..=120).step_by(10) {
        d.advance_to(t);
        d.probe("us-east", "a", false);
        d.probe("us-west", "a", true);
    }
    assert_eq!(
        d.health("us-east"),
        Health::Down,
        "b has been silent for more than 3 intervals: its vote no longer counts"
    );
    assert!(d.events().iter().any(|e| matches!(
        e,
        EventKind::RegionDown {
            vantages: 1,
            quorum: 1,
            ..
        }
    )));
}

#[test]
fn a_result_taken_before_the_newest_one_is_ignored() {
    let config = Config::new(seed_topology(&[]), seed_policy()).unwrap();
    let mut d = Drill::new(config);
    d.rounds(0, 2, "us-east", true);
    let region = d.c.topology().region_id("us-east").unwrap();
    let vantage = d.c.topology().vantage_id("local").unwrap();
    let newest = d.now;
    // Three failures that were taken before the newest success arrive late.
    for back in [3, 2, 1] {
        d.input(failover_core::Input::Probe(failover_core::ProbeResult {
            region,
            vantage,
            at: newest - Duration::from_secs(back),
            outcome: failover_core::ProbeOutcome::Failed(
                failover_core::ProbeFailure::ConnectTimeout,
            ),
        }));
    }
    assert_eq!(d.health("us-east"), Health::Up);
    assert!(d
        .events()
        .iter()
        .all(|e| !matches!(e, EventKind::ProbeFailed { .. })));
}
