//! One writer, always: the promotion rule (proof, never "unreachable"),
//! leadership, the writer record, deadlines, abort, pause, unfence, retries
//! and restored state — each a drill on the real Controller.

mod common;

use std::time::Duration;

use common::*;
use failover_core::{
    Action, Command, Config, CoordinationEvent, Epoch, EventKind, FencingToken, Input, Lsn, NodeId,
    NodeObservation, PortErrorKind, PromotionPhase, RegionId, Restored, RpoGate, StopProof,
    WriterRecord,
};

fn config() -> Config {
    Config::new(seed_topology(&[]), auto_promote(seed_policy(), 16 * 1024)).unwrap()
}

/// A drill whose controller runs with a coordinator (it acts only while it
/// leads, which it learns from `CoordinationEvent::Leadership`).
fn coordinated_drill() -> Drill {
    let config = config();
    let mut d = Drill::new(config.clone());
    d.c = failover_core::Controller::restore(
        config,
        std::time::Instant::now(),
        Restored {
            coordinated: true,
            ..Restored::default()
        },
    );
    d.drain();
    d
}

fn node(d: &Drill, name: &str) -> NodeId {
    d.c.topology().node_id(name).unwrap()
}

fn steady(d: &mut Drill) {
    d.rounds(0, 2, "us-east", true);
    d.round(0, "us-west", true);
    d.round(10, "us-west", true);
    d.primary("pg-east", 1000, None);
    d.replica("pg-west", 1000);
}

fn lose_east(d: &mut Drill) {
    d.rounds(30, 3, "us-east", false);
}

fn lease(d: &mut Drill, name: &str, held: bool) {
    let node = node(d, name);
    d.input(Input::Coordination(CoordinationEvent::GuardLease {
        node,
        held,
    }));
}

fn actions(d: &Drill) -> Vec<Action> {
    d.log
        .iter()
        .filter(|(_, a)| !matches!(a, Action::Notify(_)))
        .map(|(_, a)| a.clone())
        .collect()
}

fn unfences(d: &Drill) -> Vec<NodeId> {
    actions(d)
        .iter()
        .filter_map(|a| match a {
            Action::Unfence { node, .. } => Some(*node),
            _ => None,
        })
        .collect()
}

#[test]
fn an_expired_guard_lease_proves_the_old_writer_stopped_and_the_replica_is_promoted() {
    let mut d = Drill::new(config());
    steady(&mut d);
    lease(&mut d, "pg-east", true);
    lose_east(&mut d);
    let (fence, _, _) = d.last_fence();
    d.fail(fence, PortErrorKind::Unavailable);
    assert_eq!(d.promotes(), 0, "an unreachable writer is not proof");
    // The fence is re-sent while waiting.
    let fences = actions(&d)
        .iter()
        .filter(|a| matches!(a, Action::Fence { .. }))
        .count();
    d.advance_to(d.secs() + 11);
    assert!(
        actions(&d)
            .iter()
            .filter(|a| matches!(a, Action::Fence { .. }))
            .count()
            > fences
    );
    lease(&mut d, "pg-east", false);
    assert!(d.last_events().iter().any(|e| matches!(
        e,
        EventKind::StopProven {
            proof: StopProof::GuardLeaseExpired,
            ..
        }
    )));
    // The writer record is claimed before the promotion is sent.
    let claim = actions(&d)
        .iter()
        .position(|a| matches!(a, Action::SetWriter { .. }))
        .expect("claimed");
    let promote = actions(&d)
        .iter()
        .position(|a| matches!(a, Action::Promote { .. }))
        .expect("promoted");
    assert!(claim < promote);
    let east = node(&d, "pg-east");
    assert!(
        actions(&d).iter().any(|a| matches!(
            a,
            Action::SetWriter { guard_absent: Some(n), .. } if *n == east
        )),
        "a claim proven by lease expiry requires the lease still absent, in the same compare-and-set"
    );
    let (id, request) = d.last_promote();
    assert_eq!(request.node, node(&d, "pg-west"));
    d.done(id);
    assert_eq!(d.c.writer(), Some(node(&d, "pg-west")));
}

#[test]
fn without_proof_by_the_deadline_nothing_is_promoted_and_an_operator_is_called() {
    let mut d = Drill::new(config());
    steady(&mut d);
    lose_east(&mut d);
    let (fence, _, _) = d.last_fence();
    d.fail(fence, PortErrorKind::Timeout);
    // Fences keep failing: the guard lease never expires (pg-east is alive
    // in its own region, and its guard still reaches the store).
    for _ in 0..200 {
        let t = d.secs() + 10;
        d.advance_to(t);
        if let Some(Action::Fence { id, .. }) = d
            .last_actions()
            .into_iter()
            .find(|a| matches!(a, Action::Fence { .. }))
        {
            d.fail(id, PortErrorKind::Unavailable);
        }
        if matches!(d.c.status().promotion, PromotionPhase::NeedsOperator { .. }) {
            break;
        }
    }
    assert_eq!(d.promotes(), 0);
    let events = d.events();
    assert!(events
        .iter()
        .any(|e| matches!(e, EventKind::PromotionUnproven { guards: true, .. })));
    assert!(matches!(
        d.c.status().promotion,
        PromotionPhase::NeedsOperator { .. }
    ));
    let rendered = d
        .log
        .iter()
        .filter_map(|(_, a)| match a {
            Action::Notify(e) if matches!(e.kind, EventKind::PromotionUnproven { .. }) => {
                Some(e.display(d.c.topology()).to_string())
            }
            _ => None,
        })
        .next()
        .unwrap();
    assert!(
        rendered.contains("pg-east is not proven stopped") && rendered.contains("force-promote"),
        "{rendered}"
    );
}

#[test]
fn a_forced_promotion_goes_ahead_without_proof_and_says_so() {
    let mut d = Drill::new(config());
    steady(&mut d);
    lose_east(&mut d);
    let west = node(&d, "pg-west");
    d.command(Command::ForcePromote { node: west });
    let (fence, _, _) = d.last_fence();
    d.fail(fence, PortErrorKind::Unavailable);
    assert!(d.events().iter().any(|e| matches!(
        e,
        EventKind::StopProven {
            proof: StopProof::Forced,
            ..
        }
    )));
    assert_eq!(d.last_promote().1.node, west);
}

#[test]
fn a_promotion_that_timed_out_is_finished_at_its_epoch_never_fenced() {
    let mut d = Drill::new(config());
    steady(&mut d);
    lose_east(&mut d);
    let (fence, _, _) = d.last_fence();
    d.done(fence);
    let (promote, first) = d.last_promote();
    d.fail(promote, PortErrorKind::Timeout);
    // pg_promote took effect, the epoch was not recorded.
    d.primary("pg-west", 2000, None);
    assert!(
        !d.last_actions()
            .iter()
            .any(|a| matches!(a, Action::Fence { node, .. } if *node == first.node)),
        "the node we just promoted is never fenced as stale"
    );
    let (_, again) = d.last_promote();
    assert_eq!(again.node, first.node);
    assert_eq!(
        again.epoch, first.epoch,
        "the same epoch: promotion is idempotent"
    );
    // Its epoch shows up: adopted.
    d.primary("pg-west", 2100, Some(first.epoch.0));
    assert_eq!(d.c.writer(), Some(first.node));
    assert_eq!(d.c.epoch(), first.epoch);
}

#[test]
fn abort_stops_a_switchover_and_unfences_the_writer() {
    let mut d = Drill::new(config());
    steady(&mut d);
    let west = node(&d, "pg-west");
    d.replica("pg-west", 900);
    d.command(Command::Switchover { to: west });
    let (fence, east, epoch) = d.last_fence();
    d.done(fence);
    assert!(matches!(
        d.c.status().promotion,
        PromotionPhase::CatchingUp { .. }
    ));
    d.command(Command::Abort);
    assert!(d
        .last_events()
        .iter()
        .any(|e| matches!(e, EventKind::PromotionAborted { .. })));
    assert!(d.last_actions().iter().any(
        |a| matches!(a, Action::Unfence { node, epoch: e, .. } if *node == east && *e == epoch)
    ));
    assert_eq!(d.promotes(), 0);
    assert_eq!(d.c.status().promotion, PromotionPhase::Idle);
}

#[test]
fn a_catch_up_that_never_ends_times_out_and_unfences_the_writer() {
    let mut d = Drill::new(config());
    steady(&mut d);
    let west = node(&d, "pg-west");
    d.replica("pg-west", 900);
    d.command(Command::Switchover { to: west });
    let (fence, east, _) = d.last_fence();
    d.done(fence);
    let step = d.c.policy().step_timeout.as_secs();
    d.advance_to(d.secs() + step + 1);
    assert!(d.events().iter().any(|e| matches!(
        e,
        EventKind::StepTimedOut {
            step: "catch-up",
            ..
        }
    )));
    assert_eq!(unfences(&d), vec![east]);
    assert_eq!(d.promotes(), 0);
}

#[test]
fn a_promotion_that_never_answers_times_out() {
    let mut d = Drill::new(config());
    steady(&mut d);
    lose_east(&mut d);
    let (fence, _, _) = d.last_fence();
    d.done(fence);
    d.last_promote();
    let step = d.c.policy().step_timeout.as_secs();
    d.advance_to(d.secs() + step + 1);
    assert!(d.events().iter().any(|e| matches!(
        e,
        EventKind::StepTimedOut {
            step: "promote",
            ..
        }
    )));
}

#[test]
fn pause_abandons_an_automatic_promotion_and_fences_no_stale_primary() {
    let mut d = Drill::new(config());
    steady(&mut d);
    lose_east(&mut d);
    assert!(matches!(
        d.c.status().promotion,
        PromotionPhase::Fencing { .. }
    ));
    d.command(Command::Pause);
    assert_eq!(d.c.status().promotion, PromotionPhase::Idle);
    let (fence, _, _) = d.last_fence();
    d.done(fence);
    assert_eq!(d.promotes(), 0, "nothing promoted while paused");
    // A stale primary shows up: not fenced while paused.
    let before = actions(&d).len();
    d.primary("pg-west", 5000, None);
    assert_eq!(actions(&d).len(), before, "{:?}", d.last_actions());
}

#[test]
fn a_failed_promotion_unfences_the_writer_when_its_region_returns() {
    let mut policy = auto_promote(seed_policy(), 16 * 1024);
    policy.max_attempts = 1;
    let mut d = Drill::new(Config::new(seed_topology(&[]), policy).unwrap());
    steady(&mut d);
    lose_east(&mut d);
    let (fence, east, _) = d.last_fence();
    d.done(fence);
    let (promote, _) = d.last_promote();
    d.fail(promote, PortErrorKind::Refused);
    assert!(unfences(&d).is_empty(), "not while its region is down");
    d.rounds(60, 3, "us-east", true);
    d.advance_to(300); // past the hold-down
    assert_eq!(unfences(&d), vec![east], "writes come back with the region");
    assert_eq!(d.c.writer(), Some(east));
}

#[test]
fn repeated_failures_stop_at_max_attempts_and_ask_for_an_operator() {
    let mut d = Drill::new(config());
    steady(&mut d);
    lose_east(&mut d);
    let (fence, _, _) = d.last_fence();
    d.done(fence);
    for _ in 0..10 {
        if let Some(Action::Promote { id, .. }) = d
            .last_actions()
            .into_iter()
            .find(|a| matches!(a, Action::Promote { .. }))
        {
            d.fail(id, PortErrorKind::Refused);
        }
        let t = d.secs() + 90;
        d.advance_to(t);
    }
    assert_eq!(d.promotes(), d.c.policy().max_attempts as usize);
    assert!(matches!(
        d.c.status().promotion,
        PromotionPhase::NeedsOperator { .. }
    ));
    assert_eq!(
        d.events()
            .iter()
            .filter(|e| matches!(e, EventKind::NeedsOperator { .. }))
            .count(),
        1
    );
}

#[test]
fn force_promote_reports_the_lag_it_does_not_know_as_unknown() {
    let mut d = Drill::new(config());
    d.rounds(0, 2, "us-east", true);
    d.round(0, "us-west", true);
    d.round(10, "us-west", true);
    // No observation of either node: the lag is unknown, not "0 bytes".
    d.observe(
        "pg-west",
        NodeObservation::Replica {
            timeline: 1,
            receive_lsn: None,
            replay_lsn: None,
            replay_delay: None,
            upstream_heard: None,
        },
    );
    let west = node(&d, "pg-west");
    d.command(Command::ForcePromote { node: west });
    let (fence, _, _) = d.last_fence();
    d.done(fence);
    assert!(d.events().iter().any(|e| matches!(
        e,
        EventKind::PromotionRequested {
            lag_bytes: None,
            forced: true,
            ..
        }
    )));
}

#[test]
fn restore_takes_epoch_writer_drains_and_pause_in_one_step() {
    let config = config();
    let west = config.topology().node_id("pg-west").unwrap();
    let east_region = config.topology().region_id("us-east").unwrap();
    let c = failover_core::Controller::restore(
        config,
        std::time::Instant::now(),
        Restored {
            epoch_floor: Epoch(7),
            writer: Some(WriterRecord::new(west, Epoch(5))),
            drained: vec![east_region, RegionId(99)],
            paused: true,
            coordinated: false,
        },
    );
    let status = c.status();
    assert_eq!(status.writer, Some(west));
    assert_eq!(status.epoch, Epoch(7));
    assert!(status.paused);
    assert!(status.regions[east_region.index()].drained);
    assert_eq!(status.plan.unwrap().weight(east_region), 0);
}

#[test]
fn a_controller_that_does_not_lead_sends_nothing_until_it_does() {
    let mut config_policy = auto_promote(seed_policy(), 16 * 1024);
    config_policy.initial_health = failover_core::InitialHealth::Up;
    let config = Config::new(seed_topology(&[]), config_policy).unwrap();
    let t0 = std::time::Instant::now();
    let mut d = Drill::new(config.clone());
    d.c = failover_core::Controller::restore(
        config,
        t0,
        Restored {
            coordinated: true,
            ..Restored::default()
        },
    );
    d.log.clear();
    d.drain();
    steady(&mut d);
    lose_east(&mut d);
    assert!(
        actions(&d).is_empty(),
        "a follower decides but acts on nothing: {:?}",
        actions(&d)
    );
    assert_eq!(d.c.status().leader, None);
    d.input(Input::Coordination(CoordinationEvent::Leadership(Some(
        FencingToken(42),
    ))));
    let sent = d.last_actions();
    assert!(sent.iter().any(|a| matches!(a, Action::SetWeights { .. })));
    assert!(sent.iter().any(|a| matches!(a, Action::Fence { .. })));
    // Deposed mid-promotion: the attempt is abandoned, nothing more is sent.
    d.input(Input::Coordination(CoordinationEvent::Leadership(None)));
    let (fence, _, _) = d.last_fence();
    d.done(fence);
    assert_eq!(d.promotes(), 0);
    assert!(d.events().iter().any(|e| matches!(
        e,
        EventKind::PromotionAborted {
            reason: "leadership lost",
            ..
        }
    )));
}

#[test]
fn claims_carry_the_leaders_token_and_a_newer_record_from_a_successor_is_adopted() {
    let mut d = coordinated_drill();
    let east = node(&d, "pg-east");
    let west = node(&d, "pg-west");
    d.input(Input::Coordination(CoordinationEvent::Leadership(Some(
        FencingToken(9),
    ))));
    d.input(Input::Coordination(CoordinationEvent::Writer(None)));
    assert!(d.last_actions().iter().any(|a| matches!(
        a,
        Action::SetWriter {
            token: Some(FencingToken(9)),
            expected: None,
            new: WriterRecord { node, epoch: Epoch(0), .. },
            ..
        } if *node == east
    )));
    // A successor claimed pg-west at epoch 3: adopted as the writer.
    d.input(Input::Coordination(CoordinationEvent::Writer(Some(
        WriterRecord::new(west, Epoch(3)),
    ))));
    assert_eq!(d.c.writer(), Some(west));
    assert_eq!(d.c.epoch(), Epoch(3));
    let _ = Duration::ZERO;
}

#[test]
fn a_follower_names_the_recorded_writer_only_once_it_is_promoted() {
    // A controller that does not lead learns the writer from the store's
    // record, which names a claimed candidate before its promotion: its
    // local writer name must wait for the node itself to show it promoted.
    let mut d = coordinated_drill();
    let east = node(&d, "pg-east");
    let west = node(&d, "pg-west");
    // A fresh deployment: the configured primary, unpromoted (epoch 0).
    assert_eq!(d.c.promoted_writer(), None, "not observed yet");
    d.primary("pg-east", 100, None);
    assert_eq!(d.c.promoted_writer(), Some((east, Epoch(0))));
    // The leader claims pg-west at epoch 3; pg-west is still a replica.
    d.input(Input::Coordination(CoordinationEvent::Writer(Some(
        WriterRecord::new(west, Epoch(3)),
    ))));
    assert_eq!(d.c.writer(), Some(west));
    assert_eq!(d.c.promoted_writer(), None, "claimed, not promoted");
    d.replica("pg-west", 100);
    assert_eq!(d.c.promoted_writer(), None, "still a replica");
    // The old writer still answering as an unfenced primary names nothing.
    d.primary("pg-east", 120, None);
    assert_eq!(d.c.promoted_writer(), None);
    // pg-west out of recovery but at an older epoch, or fenced: not yet.
    d.primary("pg-west", 130, Some(2));
    assert_eq!(d.c.promoted_writer(), None, "an older epoch");
    d.fenced_primary("pg-west", 130, Some(3));
    assert_eq!(d.c.promoted_writer(), None, "fenced");
    d.primary("pg-west", 130, Some(3));
    assert_eq!(d.c.promoted_writer(), Some((west, Epoch(3))));
    // Unreached: nothing named (the DNS keeps its last answer).
    d.observe("pg-west", NodeObservation::Unreachable);
    assert_eq!(d.c.promoted_writer(), None);
}

#[test]
fn peer_verdicts_count_as_votes_and_vanish_with_their_publisher() {
    use failover_core::Health;
    let config = Config::new(seed_topology(&["local", "peer-b", "peer-c"]), seed_policy()).unwrap();
    let mut d = Drill::new(config);
    let east = d.c.topology().region_id("us-east").unwrap();
    let b = d.c.topology().vantage_id("peer-b").unwrap();
    let c = d.c.topology().vantage_id("peer-c").unwrap();
    let verdict = |d: &mut Drill, vantage, health| {
        d.input(Input::Coordination(CoordinationEvent::Verdict {
            vantage,
            region: east,
            health,
        }))
    };
    verdict(&mut d, b, Some(Health::Up));
    verdict(&mut d, c, Some(Health::Up));
    d.rounds(0, 2, "us-east", true);
    assert_eq!(d.health("us-east"), Health::Up);
    // One peer alone saying down is not a quorum of three.
    verdict(&mut d, b, Some(Health::Down));
    assert_eq!(d.health("us-east"), Health::Up);
    // A second controller agrees: down.
    verdict(&mut d, c, Some(Health::Down));
    assert_eq!(d.health("us-east"), Health::Down);
    // Both peers' leases end: their votes vanish; local still sees it up.
    verdict(&mut d, b, None);
    verdict(&mut d, c, None);
    d.round(30, "us-east", true);
    assert_eq!(d.health("us-east"), Health::Up);
}

#[test]
fn stored_intent_converges_drains_and_pause() {
    let mut d = Drill::new(config());
    steady(&mut d);
    let west = d.c.topology().region_id("us-west").unwrap();
    d.input(Input::Coordination(CoordinationEvent::Intent(
        failover_core::Intent {
            drained: vec![west],
            paused: true,
        },
    )));
    assert!(d.c.status().paused);
    assert!(d.c.status().regions[west.index()].drained);
    assert_eq!(d.c.intent().drained, vec![west]);
    d.input(Input::Coordination(CoordinationEvent::Intent(
        failover_core::Intent::default(),
    )));
    assert!(!d.c.status().paused);
    assert!(!d.c.status().regions[west.index()].drained);
}

#[test]
fn a_guard_lease_never_seen_held_proves_nothing() {
    let mut d = Drill::new(config());
    steady(&mut d);
    // The store reports pg-east's guard key absent (as at a join), but no
    // guard of pg-east was ever seen: it may run no guard at all.
    lease(&mut d, "pg-east", false);
    lose_east(&mut d);
    let (fence, _, _) = d.last_fence();
    d.fail(fence, PortErrorKind::Unavailable);
    assert_eq!(
        d.promotes(),
        0,
        "an absent lease never seen held is not proof"
    );
    assert!(!d
        .events()
        .iter()
        .any(|e| matches!(e, EventKind::StopProven { .. })));
}

#[test]
fn the_rpo_gate_counts_how_old_its_evidence_is_against_a_time_limit() {
    // max_rpo of 20 s of data. The replica is current (0 s delay), but the
    // writer was last seen at t=20 and the decision comes at t=50: it may
    // have committed for 30 s since, so the possible loss exceeds 20 s.
    let mut policy = auto_promote(seed_policy(), 16 * 1024);
    policy.max_rpo = Some(failover_core::MaxRpo {
        bytes: None,
        time: Some(Duration::from_secs(20)),
    });
    let mut d = Drill::new(Config::new(seed_topology(&[]), policy).unwrap());
    d.rounds(0, 2, "us-east", true);
    d.round(0, "us-west", true);
    d.round(10, "us-west", true);
    d.advance_to(20);
    d.primary("pg-east", 1000, None);
    d.replica("pg-west", 1000);
    lose_east(&mut d);
    assert_eq!(d.promotes(), 0);
    assert!(
        d.events().iter().any(|e| matches!(
            e,
            EventKind::PromotionRefused { delay: Some(delay), .. } if *delay >= Duration::from_secs(30)
        )),
        "the refusal counts the evidence's age: {:#?}",
        d.events()
    );
}

#[test]
fn with_no_writer_position_ever_seen_a_byte_limit_refuses_out_loud_instead_of_looping() {
    // A controller restarted while the writer was already gone: it never saw
    // the writer's WAL position, so a byte limit cannot be checked.
    let mut d = Drill::new(config());
    d.rounds(0, 2, "us-east", true);
    d.round(0, "us-west", true);
    d.round(10, "us-west", true);
    d.replica("pg-west", 1000);
    lose_east(&mut d);
    assert_eq!(d.promotes(), 0);
    assert!(matches!(
        d.c.status().promotion,
        PromotionPhase::Refused { .. }
    ));
    let refusals = d
        .events()
        .iter()
        .filter(|e| matches!(e, EventKind::PromotionRefused { .. }))
        .count();
    d.replica("pg-west", 1000);
    d.advance_to(d.secs() + 60);
    assert_eq!(
        d.events()
            .iter()
            .filter(|e| matches!(e, EventKind::PromotionRefused { .. }))
            .count(),
        refusals,
        "refused once, visibly; not retried in a loop"
    );
    assert!(actions(&d)
        .iter()
        .all(|a| !matches!(a, Action::Fence { .. })));
}

#[test]
fn an_unfinished_promotion_is_dropped_once_another_writer_is_adopted() {
    let config = config();
    let mut d = Drill::new(config.clone());
    d.c = failover_core::Controller::restore(
        config,
        d.now,
        Restored {
            coordinated: true,
            ..Restored::default()
        },
    );
    d.log.clear();
    let east = node(&d, "pg-east");
    d.input(Input::Coordination(CoordinationEvent::Leadership(Some(
        FencingToken(1),
    ))));
    d.input(Input::Coordination(CoordinationEvent::Writer(Some(
        WriterRecord::new(east, Epoch(0)),
    ))));
    steady(&mut d);
    lose_east(&mut d);
    let (fence, _, _) = d.last_fence();
    d.done(fence);
    let (promote, first) = d.last_promote();
    d.fail(promote, PortErrorKind::Timeout);
    // A successor claimed pg-east back at a later epoch: adopted.
    d.input(Input::Coordination(CoordinationEvent::Writer(Some(
        WriterRecord::new(east, Epoch(first.epoch.0 + 1)),
    ))));
    assert_eq!(d.c.epoch(), Epoch(first.epoch.0 + 1));
    // pg-west shows up as a primary without its epoch: stale now, fenced,
    // never promoted again for the abandoned attempt.
    let promotes = d.promotes();
    d.primary("pg-west", 2000, None);
    assert_eq!(d.promotes(), promotes, "{:?}", d.last_actions());
    assert!(d
        .last_actions()
        .iter()
        .any(|a| matches!(a, Action::Fence { node: n, .. } if *n == first.node)));
}

#[test]
fn a_peer_verdict_lives_with_its_publishers_lease_not_by_age() {
    use failover_core::Health;
    let config = Config::new(seed_topology(&["local", "peer-b", "peer-c"]), seed_policy()).unwrap();
    let mut d = Drill::new(config);
    let east = d.c.topology().region_id("us-east").unwrap();
    let b = d.c.topology().vantage_id("peer-b").unwrap();
    let c = d.c.topology().vantage_id("peer-c").unwrap();
    let verdict = |d: &mut Drill, vantage, health| {
        d.input(Input::Coordination(CoordinationEvent::Verdict {
            vantage,
            region: east,
            health,
        }))
    };
    d.rounds(0, 2, "us-east", true);
    assert_eq!(d.health("us-east"), Health::Up);
    // Both peers judge us-east down, once; a peer republishes only on change.
    verdict(&mut d, b, Some(Health::Down));
    verdict(&mut d, c, Some(Health::Down));
    assert_eq!(d.health("us-east"), Health::Down);
    // Far past vote_expiry, with the local vantage still seeing it up, the
    // peers' verdicts still count: their leases live, so they still hold.
    let expiry = d.c.policy().interval.as_secs() * u64::from(d.c.policy().vote_expiry);
    for i in 1..=expiry * 4 {
        d.advance_to(30 + i);
        d.probe("us-east", "local", true);
    }
    assert_eq!(
        d.health("us-east"),
        Health::Down,
        "two live peer verdicts of three are a quorum however old"
    );
    // One peer's lease ends: its vote counts neither way, at once. One
    // down verdict of the two remaining vantages is no quorum: up again.
    verdict(&mut d, b, None);
    assert_eq!(d.health("us-east"), Health::Up);
}

#[test]
fn a_coordinated_plan_carries_the_token_and_continues_the_stored_generations() {
    let mut d = coordinated_drill();
    d.log.clear();
    // The previous leader stored generation 40.
    let stored = failover_core::WeightPlan::in_region_order(40, Duration::from_secs(30), [1, 1]);
    d.input(Input::Coordination(CoordinationEvent::Plan(stored)));
    d.input(Input::Coordination(CoordinationEvent::Leadership(Some(
        FencingToken(77),
    ))));
    steady(&mut d);
    lose_east(&mut d);
    let plans: Vec<_> = d
        .log
        .iter()
        .filter_map(|(_, a)| match a {
            Action::SetWeights { plan, .. } => Some(plan.clone()),
            _ => None,
        })
        .collect();
    assert!(!plans.is_empty());
    for plan in &plans {
        assert_eq!(plan.token, Some(FencingToken(77)), "{plan:?}");
    }
    let drained = plans.last().unwrap();
    assert!(
        drained.generation > 40,
        "a new leader's plan must come after the stored one: {drained:?}"
    );
}

/// A leader claimed pg-west at epoch 1 and died before promoting it: the
/// successor, finding the record naming a node still a replica, finishes
/// that promotion at epoch 1 — never a second epoch, never left writerless.
#[test]
fn a_successor_finishes_a_promotion_its_predecessor_claimed() {
    let mut d = coordinated_drill();
    d.log.clear();
    let east = node(&d, "pg-east");
    let west = node(&d, "pg-west");
    steady(&mut d);
    // A follower: it sees the predecessor's claim, while pg-west is still a replica.
    d.input(Input::Coordination(CoordinationEvent::Writer(Some(
        WriterRecord::new(east, Epoch(0)),
    ))));
    lose_east(&mut d);
    d.input(Input::Coordination(CoordinationEvent::Writer(Some(
        WriterRecord::new(west, Epoch(1)),
    ))));
    d.replica("pg-west", 1000);
    assert_eq!(d.promotes(), 0, "a follower promotes nothing");
    // It becomes the leader: it promotes pg-west at the claimed epoch.
    d.input(Input::Coordination(CoordinationEvent::Leadership(Some(
        FencingToken(12),
    ))));
    assert_eq!(d.promotes(), 1, "{:?}", d.last_actions());
    let (id, request) = d.last_promote();
    assert_eq!((request.node, request.epoch), (west, Epoch(1)));
    assert!(d.events().iter().any(
        |e| matches!(e, EventKind::PromotionResumed { node, epoch: Epoch(1) } if *node == west)
    ));
    // No fence and no new claim: the predecessor's claim already deposed pg-east.
    assert!(!d
        .last_actions()
        .iter()
        .any(|a| matches!(a, Action::Fence { .. } | Action::SetWriter { .. })));
    d.done(id);
    assert_eq!(d.c.writer(), Some(west));
    assert_eq!(d.c.epoch(), Epoch(1));
    // Further observations of pg-west as primary at epoch 1 change nothing.
    d.primary("pg-west", 2000, Some(1));
    assert_eq!(d.promotes(), 1);
}

/// A leader that took over after its predecessor claimed pg-west at epoch
/// 1, before any observation of pg-east; pg-west a replica at 1000.
fn successor_of_a_claim_of_pg_west() -> (Drill, NodeId) {
    let mut d = coordinated_drill();
    d.log.clear();
    let west = node(&d, "pg-west");
    d.input(Input::Coordination(CoordinationEvent::Writer(Some(
        WriterRecord::new(west, Epoch(1)),
    ))));
    d.input(Input::Coordination(CoordinationEvent::Leadership(Some(
        FencingToken(19),
    ))));
    d.replica("pg-west", 1000);
    (d, west)
}

/// The same, when the successor never saw the old writer unfenced (it
/// started after the fence, and the store's claim reached it before its
/// first observation): the fenced old writer's position is final, and is
/// the reference the promotion is gated against. Found by the loaded soak of
/// `e2e_controllers` (the successor refused: "its lag is unknown (the
/// writer's position was never seen)").
#[test]
fn a_successor_gates_the_claimed_promotion_on_the_fenced_old_writers_position() {
    let (mut d, west) = successor_of_a_claim_of_pg_west();
    assert_eq!(d.promotes(), 0, "no reference yet: {:?}", d.last_events());
    // pg-east, fenced at 1 by the predecessor, on pg-west's timeline.
    d.fenced_primary("pg-east", 1200, None);
    d.replica("pg-west", 1200);
    assert_eq!(d.promotes(), 1, "{:?}", d.events());
    let (id, request) = d.last_promote();
    assert_eq!((request.node, request.epoch), (west, Epoch(1)));
    assert!(
        matches!(
            request.gate,
            RpoGate::CaughtUp { lsn: Lsn(1200) } | RpoGate::Within { .. }
        ),
        "{:?}",
        request.gate
    );
    // Done. Observations that started before it completed (pg-west still a
    // replica) and the fenced old writer, seen again, start nothing: found
    // by `e2e_controllers` under load, where the successor promoted pg-west
    // twice at epoch 1.
    d.done(id);
    d.fenced_primary("pg-east", 1200, None);
    d.replica("pg-west", 1200);
    assert_eq!(d.promotes(), 1, "{:?}", d.last_actions());
}

/// A fenced primary on another timeline than the claimed replica is not
/// the old writer it streamed from: its position is no reference.
#[test]
fn a_fenced_primary_on_another_timeline_is_no_reference() {
    let (mut d, _) = successor_of_a_claim_of_pg_west();
    d.observe(
        "pg-east",
        NodeObservation::Primary {
            timeline: 7,
            current_lsn: Lsn(900),
            epoch: None,
            fenced: true,
            sync_wait: None,
        },
    );
    d.replica("pg-west", 1000);
    assert_eq!(d.promotes(), 0, "{:?}", d.events());
}

/// Database health is its own signal: with the API of us-east healthy, its
/// database unreachable `fall` times in a row moves the writer — still only
/// with proof (here its guard lease expiring), never on unreachability alone.
#[test]
fn a_database_down_with_its_api_up_moves_the_writer_once_proven_stopped() {
    let mut d = Drill::new(config());
    steady(&mut d);
    lease(&mut d, "pg-east", true);
    let fall = d.c.policy().fall;
    for i in 0..fall {
        assert_eq!(d.promotes(), 0);
        assert!(
            !actions(&d)
                .iter()
                .any(|a| matches!(a, Action::Fence { .. })),
            "moved after {i} misses"
        );
        let now = d.secs();
        d.advance_to(now + 1);
        d.observe("pg-east", failover_core::NodeObservation::Unreachable);
    }
    let east = node(&d, "pg-east");
    assert!(d
        .events()
        .iter()
        .any(|e| matches!(e, EventKind::DatabaseDown { node, .. } if *node == east)));
    assert_eq!(
        d.health("us-east"),
        failover_core::Health::Up,
        "the API is up"
    );
    let (fence, fenced, _) = d.last_fence();
    assert_eq!(fenced, east);
    d.fail(fence, PortErrorKind::Unavailable);
    assert_eq!(d.promotes(), 0, "an unreachable database is not proof");
    lease(&mut d, "pg-east", false);
    assert_eq!(d.promotes(), 1);
    assert_eq!(d.last_promote().1.node, node(&d, "pg-west"));
}

/// `move_writer_on = "database"`: an outage of us-east's API alone drains
/// its traffic but leaves the writer where it is while its database answers.
#[test]
fn with_move_writer_on_database_an_api_only_outage_leaves_the_writer() {
    let mut policy = auto_promote(seed_policy(), 16 * 1024);
    policy.move_writer_on = failover_core::MoveWriterOn::Database;
    let mut d = Drill::new(Config::new(seed_topology(&[]), policy).unwrap());
    steady(&mut d);
    lose_east(&mut d);
    assert_eq!(d.health("us-east"), failover_core::Health::Down);
    assert_eq!(d.weights()[0], 0, "us-east's traffic is drained");
    d.primary("pg-east", 1200, None);
    d.replica("pg-west", 1200);
    assert!(
        !d.log
            .iter()
            .any(|(_, a)| matches!(a, Action::Fence { .. } | Action::Promote { .. })),
        "the writer moved on an API-only outage"
    );
    assert_eq!(d.c.writer(), Some(node(&d, "pg-east")));
    // Its database then goes: now the writer moves (with proof).
    lease(&mut d, "pg-east", true);
    for _ in 0..d.c.policy().fall {
        let now = d.secs();
        d.advance_to(now + 1);
        d.observe("pg-east", failover_core::NodeObservation::Unreachable);
    }
    let (fence, _, _) = d.last_fence();
    d.done(fence);
    assert_eq!(d.promotes(), 1);
}
