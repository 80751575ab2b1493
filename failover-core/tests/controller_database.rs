//! Database rules as drills: the writer's region fails, a replica is promoted
//! (or refused), epochs only grow, a restart adopts what was done.

mod common;

use common::*;
use failover_core::{
    Action, Command, Config, Epoch, EventKind, Input, Lsn, NodeId, NodeObservation, PortErrorKind,
    PromotionPhase, Region, RegionRole, RpoGate, Topology,
};

fn auto_config(max_bytes: u64) -> Config {
    Config::new(seed_topology(&[]), auto_promote(seed_policy(), max_bytes)).unwrap()
}

fn node(d: &Drill, name: &str) -> NodeId {
    d.c.topology().node_id(name).unwrap()
}

/// Both regions up, pg-east primary at LSN 1000, pg-west replica at `replica_lsn`.
fn steady(d: &mut Drill, replica_lsn: u64) {
    d.rounds(0, 2, "us-east", true);
    d.round(0, "us-west", true);
    d.round(10, "us-west", true);
    d.primary("pg-east", 1000, None);
    d.replica("pg-west", replica_lsn);
}

fn lose_east(d: &mut Drill) {
    d.rounds(30, 3, "us-east", false);
}

#[test]
fn writer_region_down_fences_then_promotes_and_moves_the_writer_only_when_done() {
    let mut d = Drill::new(auto_config(16 * 1024));
    steady(&mut d, 900);
    lose_east(&mut d);
    let (fence_id, fenced, epoch) = d.last_fence();
    assert_eq!(fenced, node(&d, "pg-east"));
    assert_eq!(epoch, Epoch(1));
    assert_eq!(d.promotes(), 0, "no promotion before the fence completes");
    d.done(fence_id);
    let (promote_id, request) = d.last_promote();
    assert_eq!(request.node, node(&d, "pg-west"));
    assert_eq!(request.epoch, Epoch(1));
    assert!(matches!(request.gate, RpoGate::Within { .. }));
    assert!(d.last_events().iter().any(|e| matches!(
        e,
        EventKind::PromotionRequested {
            lag_bytes: Some(100),
            forced: false,
            ..
        }
    )));
    assert_eq!(
        d.c.writer(),
        Some(node(&d, "pg-east")),
        "writer moves only after completion"
    );
    d.done(promote_id);
    assert_eq!(d.c.writer(), Some(node(&d, "pg-west")));
    assert_eq!(d.c.status().epoch, Epoch(1));
    assert!(matches!(
        d.last_events()[..],
        [EventKind::Promoted {
            epoch: Epoch(1),
            ..
        }]
    ));
}

#[test]
fn an_unreachable_old_primary_is_not_proof_and_nothing_is_promoted() {
    let mut d = Drill::new(auto_config(16 * 1024));
    steady(&mut d, 1000);
    lose_east(&mut d);
    let (fence_id, _, _) = d.last_fence();
    d.fail(fence_id, PortErrorKind::Unavailable);
    assert_eq!(d.promotes(), 0, "unreachable is not stopped: no promotion");
    assert!(matches!(
        d.c.status().promotion,
        PromotionPhase::Fencing { .. }
    ));
}

#[test]
fn lag_beyond_max_rpo_refuses_until_an_operator_forces() {
    let mut d = Drill::new(auto_config(100));
    steady(&mut d, 500);
    lose_east(&mut d);
    assert_eq!(d.promotes(), 0);
    assert!(d.events().iter().any(|e| matches!(
        e,
        EventKind::PromotionRefused {
            lag_bytes: Some(500),
            ..
        }
    )));
    assert_eq!(
        d.c.status().promotion,
        PromotionPhase::Refused {
            node: node(&d, "pg-west")
        }
    );
    // Another observation with the same lag does not repeat the refusal.
    d.replica("pg-west", 500);
    assert!(d.last_events().is_empty());
    // The replica catches up within the limit: promotion proceeds.
    d.replica("pg-west", 950);
    let (fence_id, _, _) = d.last_fence();
    d.done(fence_id);
    assert_eq!(d.promotes(), 1);
}

#[test]
fn force_promote_skips_the_rpo_gate() {
    let mut d = Drill::new(auto_config(100));
    steady(&mut d, 500);
    lose_east(&mut d);
    let west = node(&d, "pg-west");
    d.command(Command::ForcePromote { node: west });
    let (fence_id, _, _) = d.last_fence();
    d.fail(fence_id, PortErrorKind::Timeout);
    let (_, request) = d.last_promote();
    assert_eq!(request.gate, RpoGate::Forced);
    assert!(d.last_events().iter().any(|e| matches!(
        e,
        EventKind::PromotionRequested {
            forced: true,
            lag_bytes: Some(500),
            ..
        }
    )));
}

#[test]
fn candidate_has_most_wal_ties_broken_by_priority() {
    let mut nodes = Vec::new();
    for (name, region, priority, primary) in [
        ("pg-east", "us-east", 0, true),
        ("pg-west-a", "us-west", 1, false),
        ("pg-west-b", "us-west", 5, false),
        ("pg-eu", "eu", 9, false),
    ] {
        nodes.push(failover_core::Node {
            name: name.into(),
            region: region.into(),
            priority,
            primary,
        });
    }
    let mut b = Topology::builder("api.example.com.")
        .region(Region::new("us-east", RegionRole::Active))
        .region(Region::new("us-west", RegionRole::Active))
        .region(Region::new("eu", RegionRole::Active));
    for n in nodes {
        b = b.node(n);
    }
    let config = Config::new(b.build().unwrap(), auto_promote(seed_policy(), 10_000)).unwrap();
    let mut d = Drill::new(config);
    for r in ["us-east", "us-west", "eu"] {
        d.rounds(0, 2, r, true);
    }
    d.primary("pg-east", 1000, None);
    d.replica("pg-west-a", 990);
    d.replica("pg-west-b", 990);
    d.replica("pg-eu", 800);
    lose_east(&mut d);
    let (fence, _, _) = d.last_fence();
    d.done(fence);
    assert_eq!(d.last_promote().1.node, node(&d, "pg-west-b"));
}

#[test]
fn no_candidate_in_a_serving_region_is_reported_once() {
    let mut d = Drill::new(auto_config(100));
    d.rounds(0, 2, "us-east", true);
    d.primary("pg-east", 1000, None);
    d.replica("pg-west", 1000);
    // us-west is still unknown: never a promotion candidate.
    lose_east(&mut d);
    assert_eq!(d.promotes(), 0);
    let reports = d
        .events()
        .iter()
        .filter(|e| matches!(e, EventKind::NoPromotionCandidate { .. }))
        .count();
    assert_eq!(reports, 1);
}

#[test]
fn planned_switchover_waits_for_zero_lag() {
    let mut d = Drill::new(auto_config(100));
    steady(&mut d, 900);
    let west = node(&d, "pg-west");
    d.command(Command::Switchover { to: west });
    let (fence_id, fenced, epoch) = d.last_fence();
    assert_eq!((fenced, epoch), (node(&d, "pg-east"), Epoch(1)));
    // The fenced primary flushed a little more before it stopped; the fence
    // reports its final position.
    d.input(Input::FenceDone {
        id: fence_id,
        final_lsn: Lsn(1010),
    });
    assert!(d
        .last_events()
        .iter()
        .any(|e| matches!(e, EventKind::SwitchoverWaiting { lag_bytes: 110, .. })));
    d.replica("pg-west", 1000);
    assert_eq!(d.promotes(), 0, "1000 < 1010: still waiting");
    d.replica("pg-west", 1010);
    let (_, request) = d.last_promote();
    assert_eq!(request.gate, RpoGate::CaughtUp { lsn: Lsn(1010) });
}

#[test]
fn a_switchover_never_promotes_at_a_position_seen_before_the_fence() {
    let mut d = Drill::new(auto_config(100));
    steady(&mut d, 900);
    let west = node(&d, "pg-west");
    d.command(Command::Switchover { to: west });
    let (fence_id, _, _) = d.last_fence();
    // An observation taken while the fence was under way: not final.
    d.observe(
        "pg-east",
        NodeObservation::Primary {
            timeline: 1,
            current_lsn: Lsn(950),
            epoch: None,
            fenced: false,
            sync_wait: None,
        },
    );
    // The adapter could not say where the fenced node stopped.
    d.done(fence_id);
    d.replica("pg-west", 950);
    assert_eq!(
        d.promotes(),
        0,
        "950 is only the last position seen; the old primary may have committed more"
    );
    // The first observation started after the fence shows where it stopped.
    d.observe(
        "pg-east",
        NodeObservation::Primary {
            timeline: 1,
            current_lsn: Lsn(1030),
            epoch: Some(Epoch(1)),
            fenced: true,
            sync_wait: None,
        },
    );
    assert_eq!(d.promotes(), 0, "950 < 1030: still waiting");
    d.replica("pg-west", 1030);
    let (_, request) = d.last_promote();
    assert_eq!(request.gate, RpoGate::CaughtUp { lsn: Lsn(1030) });
}

#[test]
fn restart_adopts_a_promotion_made_before_and_never_promotes_twice() {
    let mut d = Drill::new(auto_config(16 * 1024));
    d.c.set_epoch_floor(Epoch(5));
    d.rounds(0, 2, "us-west", true);
    d.primary("pg-west", 2000, Some(5));
    assert_eq!(d.c.writer(), Some(node(&d, "pg-west")));
    assert!(matches!(
        d.last_events()[..],
        [EventKind::WriterMoved {
            epoch: Epoch(5),
            ..
        }]
    ));
    // The old primary comes back claiming to be primary: stale, fenced at the current epoch.
    d.primary("pg-east", 1500, None);
    let (_, fenced, epoch) = d.last_fence();
    assert_eq!((fenced, epoch), (node(&d, "pg-east"), Epoch(5)));
    assert!(matches!(
        d.last_events()[..],
        [EventKind::StalePrimary { .. }]
    ));
    // Losing us-east now changes nothing for the database.
    d.rounds(30, 3, "us-east", false);
    assert_eq!(d.promotes(), 0);
}

#[test]
fn epoch_floor_makes_the_next_promotion_greater() {
    let mut d = Drill::new(auto_config(16 * 1024));
    d.c.set_epoch_floor(Epoch(41));
    steady(&mut d, 1000);
    lose_east(&mut d);
    let (_, _, epoch) = d.last_fence();
    assert_eq!(epoch, Epoch(42));
}

#[test]
fn a_failed_promotion_retries_after_its_backoff_at_the_same_epoch() {
    let mut d = Drill::new(auto_config(16 * 1024));
    steady(&mut d, 1000);
    lose_east(&mut d);
    let (fence, _, _) = d.last_fence();
    d.done(fence);
    let (promote, first) = d.last_promote();
    d.fail(promote, PortErrorKind::Refused);
    assert_eq!(
        d.c.status().epoch,
        Epoch(0),
        "a failed attempt spends no epoch"
    );
    // A replica observation does not bypass the backoff.
    d.replica("pg-west", 1000);
    assert_eq!(d.promotes(), 1);
    d.advance_to(d.secs() + 11);
    let (_, again) = d.last_promote();
    assert_eq!(d.promotes(), 2, "retried once the backoff passed");
    assert_eq!(again.epoch, first.epoch, "the same epoch: none was spent");
}

#[test]
fn paused_automation_never_promotes() {
    let mut d = Drill::new(auto_config(16 * 1024));
    steady(&mut d, 1000);
    d.command(Command::Pause);
    lose_east(&mut d);
    assert_eq!(d.promotes(), 0);
    assert!(d
        .log
        .iter()
        .all(|(_, a)| !matches!(a, failover_core::Action::Fence { .. })));
}

#[test]
fn lag_seen_while_the_writer_lived_still_counts_after_it_is_gone() {
    let mut d = Drill::new(auto_config(100));
    steady(&mut d, 500); // 500 bytes behind a live writer
    d.observe("pg-east", NodeObservation::Unreachable);
    // The replica received more after the writer's last observation, but
    // the writer was writing too: it is still taken as 500 bytes behind.
    d.replica("pg-west", 1200);
    lose_east(&mut d);
    assert_eq!(d.promotes(), 0);
    assert!(d.events().iter().any(|e| matches!(
        e,
        EventKind::PromotionRefused {
            lag_bytes: Some(500),
            ..
        }
    )));
}

#[test]
fn commands_naming_unknown_regions_or_nodes_are_refused_out_loud() {
    let mut d = Drill::new(auto_config(100));
    steady(&mut d, 900);
    let plans = d.plans().len();
    for command in [
        Command::Drain(failover_core::RegionId(7)),
        Command::Undrain(failover_core::RegionId(7)),
        Command::Switchover { to: NodeId(9) },
        Command::ForcePromote { node: NodeId(9) },
    ] {
        d.command(command);
        assert!(
            matches!(d.last_events()[..], [EventKind::CommandRefused { .. }]),
            "{command:?} is refused with a reason: {:?}",
            d.last_events()
        );
    }
    assert_eq!(d.plans().len(), plans, "nothing changed");
    assert_eq!(d.promotes(), 0);
}

#[test]
fn a_refusal_for_want_of_the_writers_position_says_the_lag_is_unknown_not_zero() {
    let mut d = Drill::new(auto_config(16 * 1024));
    // The replica is seen, the writer's position never is (the controller
    // started while the writer was already down).
    d.rounds(0, 2, "us-east", true);
    d.round(0, "us-west", true);
    d.round(10, "us-west", true);
    d.replica("pg-west", 900);
    lose_east(&mut d);
    assert_eq!(d.promotes(), 0, "a byte limit it cannot check refuses");
    let refusal = d
        .log
        .iter()
        .find_map(|(_, a)| match a {
            Action::Notify(e) if matches!(e.kind, EventKind::PromotionRefused { .. }) => Some(e),
            _ => None,
        })
        .expect("a refusal event");
    assert!(matches!(
        refusal.kind,
        EventKind::PromotionRefused {
            lag_bytes: None,
            ..
        }
    ));
    let text = refusal.display(d.c.topology()).to_string();
    assert!(text.contains("lag is unknown"), "{text}");
    assert!(!text.contains("0 bytes behind"), "{text}");
}

fn restored(d: &Drill) -> bool {
    d.events()
        .iter()
        .any(|e| matches!(e, EventKind::WriterRestored { .. }))
}

/// A single controller keeps the writer record in memory: crashed for
/// longer than the guards' deadline, it comes back with no record while the
/// writer's guard fenced the writer (recording the fence's epoch, the floor
/// it resumes after). Nothing would ever name the writer again. When every
/// node answers and no other is a primary, it names it again — once.
#[test]
fn a_restarted_single_controller_names_the_writer_its_guard_fenced_again() {
    let mut d = Drill::new(auto_config(16 * 1024));
    d.c.set_epoch_floor(Epoch(1));
    d.rounds(0, 2, "us-east", true);
    d.rounds(0, 2, "us-west", true);
    // pg-west not heard from yet: it might have been promoted since.
    d.fenced_primary("pg-east", 1000, None);
    assert!(!restored(&d), "{:?}", d.events());
    d.replica("pg-west", 1000);
    d.fenced_primary("pg-east", 1000, None);
    assert!(
        matches!(
            d.last_events()[..],
            [
                EventKind::WriterRestored {
                    epoch: Epoch(0),
                    ..
                },
                EventKind::WriterMoved {
                    epoch: Epoch(0),
                    ..
                }
            ]
        ),
        "{:?}",
        d.last_events()
    );
    assert_eq!(d.c.writer(), Some(node(&d, "pg-east")));
    // Once: while the guard has not lifted its fence yet, nothing more.
    d.fenced_primary("pg-east", 1000, None);
    assert_eq!(d.last_events(), vec![]);
    // The next promotion still goes above the recorded fence.
    d.primary("pg-east", 1100, None);
    lose_east(&mut d);
    let (_, _, epoch) = d.last_fence();
    assert_eq!(epoch, Epoch(2));
}

#[test]
fn a_fenced_writer_is_not_named_again_while_a_node_is_unseen_a_primary_or_paused() {
    // The other node is unreachable: it may be a writer promoted since.
    let mut d = Drill::new(auto_config(16 * 1024));
    d.c.set_epoch_floor(Epoch(1));
    d.observe("pg-west", NodeObservation::Unreachable);
    d.fenced_primary("pg-east", 1000, None);
    assert!(!restored(&d));

    // The other node is a fenced primary too (promoted at 1, fenced at 2):
    // the later promotion is not the one to restore blindly either way.
    let mut d = Drill::new(auto_config(16 * 1024));
    d.c.set_epoch_floor(Epoch(2));
    d.fenced_primary("pg-west", 1000, Some(1));
    d.fenced_primary("pg-east", 1000, None);
    assert!(!restored(&d), "{:?}", d.events());

    // Automation paused by an operator.
    let mut d = Drill::new(auto_config(16 * 1024));
    d.c.set_epoch_floor(Epoch(1));
    d.command(Command::Pause);
    d.replica("pg-west", 1000);
    d.fenced_primary("pg-east", 1000, None);
    assert!(!restored(&d));

    // No recorded fence above its promotion: a fence of the controller's
    // own (or none at all) is not the guard's deadline fence.
    let mut d = Drill::new(auto_config(16 * 1024));
    d.replica("pg-west", 1000);
    d.fenced_primary("pg-east", 1000, None);
    assert!(!restored(&d));
}
