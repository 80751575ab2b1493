//! Synchronous replication as the third proof: the writer requires a
//! standby before the record names it, the record drops it before the
//! writer stops requiring it, and a recorded standby is promoted without
//! waiting for the old writer's guard lease — each a drill on the real
//! Controller.

mod common;

use common::*;
use failover_core::{
    Action, Config, CoordinationEvent, EventKind, Input, NodeId, NodeObservation, PortErrorKind,
    RpoGate, StopProof, SyncSet, Synchronous,
};

fn config(mode: Synchronous) -> Config {
    let mut policy = auto_promote(seed_policy(), 16 * 1024);
    policy.synchronous = mode;
    Config::new(seed_topology(&[]), policy).unwrap()
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

fn lease(d: &mut Drill, name: &str, held: bool) {
    let node = node(d, name);
    d.input(Input::Coordination(CoordinationEvent::GuardLease {
        node,
        held,
    }));
}

/// The last `SetSynchronous` sent: its id, node and standbys.
fn last_set_synchronous(d: &Drill) -> Option<(failover_core::ActionId, NodeId, SyncSet)> {
    d.log.iter().rev().find_map(|(_, a)| match a {
        Action::SetSynchronous {
            id, node, standbys, ..
        } => Some((*id, *node, *standbys)),
        _ => None,
    })
}

/// The last `SetWriter` sent: its id, expected and new sync sets.
fn last_set_writer(d: &Drill) -> Option<(failover_core::ActionId, Option<SyncSet>, SyncSet)> {
    d.log.iter().rev().find_map(|(_, a)| match a {
        Action::SetWriter {
            id, expected, new, ..
        } => Some((*id, expected.map(|e| e.sync), new.sync)),
        _ => None,
    })
}

/// Steady state with pg-west recorded as pg-east's synchronous standby.
fn synchronous(mode: Synchronous) -> Drill {
    let mut d = Drill::new(config(mode));
    steady(&mut d);
    let west = node(&d, "pg-west");
    let (id, writer, standbys) = last_set_synchronous(&d).expect("the writer is configured");
    assert_eq!(writer, node(&d, "pg-east"));
    assert_eq!(standbys, SyncSet::of(west));
    assert!(
        last_set_writer(&d).is_none(),
        "the record names no standby before the writer requires it"
    );
    d.done(id);
    let (id, expected, new) = last_set_writer(&d).expect("then recorded");
    assert_eq!(expected, Some(SyncSet::EMPTY));
    assert_eq!(new, SyncSet::of(west));
    d.done(id);
    assert_eq!(d.c.status().synchronous, SyncSet::of(west));
    assert!(d.events().iter().any(|e| matches!(
        e,
        EventKind::SynchronousRecorded { standbys, .. } if *standbys == SyncSet::of(west)
    )));
    d
}

#[test]
fn the_writer_requires_a_standby_before_the_record_names_it() {
    let d = synchronous(Synchronous::On);
    // Nothing more to do once both agree.
    let sets = d
        .log
        .iter()
        .filter(|(_, a)| matches!(a, Action::SetSynchronous { .. } | Action::SetWriter { .. }))
        .count();
    assert_eq!(sets, 2);
}

#[test]
fn a_recorded_synchronous_standby_is_promoted_without_waiting_for_the_guard_lease() {
    let mut d = synchronous(Synchronous::On);
    let east = node(&d, "pg-east");
    let west = node(&d, "pg-west");
    lease(&mut d, "pg-east", true);
    d.rounds(30, 3, "us-east", false);
    // No fence confirmed, the guard lease still held: the third proof.
    assert!(d.events().iter().any(|e| matches!(
        e,
        EventKind::StopProven {
            node,
            proof: StopProof::SynchronousStandby,
        } if *node == east
    )));
    let (claim, expected, new) = last_set_writer(&d).expect("claimed");
    assert_eq!(
        expected,
        Some(SyncSet::of(west)),
        "the claim compares the record the proof was read from"
    );
    assert_eq!(new, SyncSet::EMPTY);
    d.done(claim);
    let (id, request) = d.last_promote();
    assert_eq!(request.node, west);
    assert_eq!(request.gate, RpoGate::Synchronous);
    assert_eq!(request.synchronous, Synchronous::On);
    d.done(id);
    assert_eq!(d.c.writer(), Some(west));
    assert_eq!(d.c.status().synchronous, SyncSet::EMPTY);
}

#[test]
fn a_standby_the_record_does_not_name_yet_needs_the_usual_proof() {
    let mut d = Drill::new(config(Synchronous::On));
    steady(&mut d);
    let (_configuring, _, _) = last_set_synchronous(&d).expect("configuring");
    lease(&mut d, "pg-east", true);
    // The writer is lost while it is being configured: the record does not
    // name pg-west, so only a fence or the lease proves anything.
    d.rounds(30, 3, "us-east", false);
    assert_eq!(d.promotes(), 0);
    assert!(!d.events().iter().any(|e| matches!(
        e,
        EventKind::StopProven {
            proof: StopProof::SynchronousStandby,
            ..
        }
    )));
    let (fence, _, _) = d.last_fence();
    d.fail(fence, PortErrorKind::Unavailable);
    assert_eq!(d.promotes(), 0, "an unreachable writer is no proof");
}

#[test]
fn a_lost_standby_leaves_the_record_before_the_writer_stops_requiring_it() {
    let mut d = synchronous(Synchronous::On);
    let before = d.log.len();
    for s in [30, 40, 50] {
        d.advance_to(s);
        d.observe("pg-west", NodeObservation::Unreachable);
        d.primary("pg-east", 2000, None);
    }
    let after: Vec<Action> = d.log[before..]
        .iter()
        .map(|(_, a)| a.clone())
        .filter(|a| matches!(a, Action::SetSynchronous { .. } | Action::SetWriter { .. }))
        .collect();
    // (The drill acknowledges writer-record writes at once, as the
    // single-controller store does.)
    let west = SyncSet::of(node(&d, "pg-west"));
    match after.as_slice() {
        [Action::SetWriter {
            expected: Some(expected),
            new,
            ..
        }, Action::SetSynchronous {
            node: writer,
            standbys,
            ..
        }] => {
            assert_eq!(expected.sync, west);
            assert_eq!(new.sync, SyncSet::EMPTY, "the record drops it first");
            assert_eq!(*writer, node(&d, "pg-east"));
            assert_eq!(
                *standbys,
                SyncSet::EMPTY,
                "on: then the writer goes on asynchronously"
            );
        }
        other => panic!("record first, then the writer: {other:?}"),
    }
    assert_eq!(d.c.status().synchronous, SyncSet::EMPTY);
}

#[test]
fn strict_mode_never_lets_the_writer_go_on_without_a_standby() {
    let mut d = synchronous(Synchronous::Strict);
    let before = d.log.len();
    for s in [30, 40, 50, 60] {
        d.advance_to(s);
        d.observe("pg-west", NodeObservation::Unreachable);
        d.primary("pg-east", 2000, None);
    }
    assert!(
        !d.log[before..]
            .iter()
            .any(|(_, a)| matches!(a, Action::SetSynchronous { .. } | Action::SetWriter { .. })),
        "strict: nothing changes, the writer keeps requiring pg-west"
    );
    assert_eq!(d.c.status().synchronous, SyncSet::of(node(&d, "pg-west")));
    let blocked = d
        .events()
        .iter()
        .filter(|e| matches!(e, EventKind::SynchronousBlocked { .. }))
        .count();
    assert_eq!(blocked, 1, "said once");
}

#[test]
fn a_failed_configuration_is_decided_again_after_an_interval() {
    let mut d = Drill::new(config(Synchronous::On));
    steady(&mut d);
    let (id, _, _) = last_set_synchronous(&d).unwrap();
    d.fail(id, PortErrorKind::Timeout);
    d.primary("pg-east", 1100, None);
    assert_eq!(last_set_synchronous(&d).unwrap().0, id, "not again at once");
    d.advance_to(25);
    d.primary("pg-east", 1200, None);
    let (again, _, standbys) = last_set_synchronous(&d).unwrap();
    assert_ne!(again, id);
    assert_eq!(standbys, SyncSet::of(node(&d, "pg-west")));
}

#[test]
fn synchronous_mode_needs_guards() {
    let mut policy = auto_promote(seed_policy(), 16 * 1024);
    policy.synchronous = Synchronous::On;
    policy.guard_ttl = None;
    let err = Config::new(seed_topology(&[]), policy).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("policy.synchronous"), "{text}");
    assert!(text.contains("guard_ttl"), "{text}");
}

/// A replica observation whose WAL receiver last heard from upstream
/// `heard_secs` ago (`None`: not streaming).
fn replica_hearing(d: &mut Drill, name: &str, heard_secs: Option<u64>) {
    d.observe(
        name,
        NodeObservation::Replica {
            timeline: 1,
            receive_lsn: Some(failover_core::Lsn(2000)),
            replay_lsn: Some(failover_core::Lsn(2000)),
            replay_delay: Some(std::time::Duration::ZERO),
            upstream_heard: heard_secs.map(std::time::Duration::from_secs),
        },
    );
}

fn declared_down(d: &Drill, node: NodeId) -> bool {
    d.events()
        .iter()
        .any(|e| matches!(e, EventKind::DatabaseDown { node: n, .. } if *n == node))
}

/// The soak's false detection: the controller cannot reach the writer (it
/// is loaded, or cut off from it), but the writer's synchronous standby
/// still receives its WAL. Nothing is declared down, nothing promoted —
/// until the stream stops, when the proof and promotion follow at once.
#[test]
fn a_standby_still_receiving_the_writers_stream_vetoes_database_down() {
    let mut d = synchronous(Synchronous::On);
    let east = node(&d, "pg-east");
    let west = node(&d, "pg-west");
    lease(&mut d, "pg-east", true);
    for s in [30, 40, 50] {
        d.advance_to(s);
        d.observe("pg-east", NodeObservation::Unreachable);
        d.advance_to(s + 1);
        replica_hearing(&mut d, "pg-west", Some(0));
    }
    assert!(!declared_down(&d, east), "{:?}", d.events());
    assert!(d.events().iter().any(|e| matches!(
        e,
        EventKind::DatabaseDownVetoed { node, misses: 3, witness, .. }
            if *node == east && *witness == west
    )));
    assert_eq!(d.promotes(), 0);
    assert!(!d.log.iter().any(|(_, a)| matches!(a, Action::Fence { .. })));
    // More misses change nothing while the stream carries news, nor does
    // a failed observation of the witness itself (a loaded controller's
    // timeout says nothing about the stream).
    d.advance_to(60);
    d.observe("pg-west", NodeObservation::Unreachable);
    d.observe("pg-east", NodeObservation::Unreachable);
    assert_eq!(d.promotes(), 0);
    assert!(!declared_down(&d, east));

    // The writer dies: its standby's stream ends.
    d.advance_to(61);
    replica_hearing(&mut d, "pg-west", None);
    assert!(declared_down(&d, east));
    let (claim, _, _) = last_set_writer(&d).expect("claimed at once");
    d.done(claim);
    let (_, request) = d.last_promote();
    assert_eq!(request.node, west);
    assert_eq!(request.gate, RpoGate::Synchronous);
}

/// A partitioned writer's stream stays open but carries nothing new: a
/// message received before the misses began vouches for nothing.
#[test]
fn a_stream_that_heard_nothing_since_the_misses_began_vouches_for_nothing() {
    let mut d = synchronous(Synchronous::On);
    let east = node(&d, "pg-east");
    lease(&mut d, "pg-east", true);
    for s in [30, 40, 50] {
        d.advance_to(s);
        d.observe("pg-east", NodeObservation::Unreachable);
        d.advance_to(s + 1);
        // Last message at 29 s: before the first miss.
        replica_hearing(&mut d, "pg-west", Some(s + 1 - 29));
    }
    assert!(declared_down(&d, east));
    assert!(!d
        .events()
        .iter()
        .any(|e| matches!(e, EventKind::DatabaseDownVetoed { .. })));
    assert!(last_set_writer(&d).is_some_and(|(_, _, new)| new == SyncSet::EMPTY));
}

/// A witness the controller stopped hearing from vouches only for
/// `fall × interval`.
#[test]
fn a_witness_not_observed_for_fall_times_interval_stops_vouching() {
    let mut d = synchronous(Synchronous::On);
    let east = node(&d, "pg-east");
    lease(&mut d, "pg-east", true);
    for s in [30, 40, 50] {
        d.advance_to(s);
        d.observe("pg-east", NodeObservation::Unreachable);
        d.advance_to(s + 1);
        replica_hearing(&mut d, "pg-west", Some(0));
    }
    // pg-west's last observation was at 51 s; the window is 3 × 10 s.
    for s in [60, 70, 80] {
        d.advance_to(s);
        d.observe("pg-east", NodeObservation::Unreachable);
        assert!(!declared_down(&d, east), "still vouched for at {s} s");
    }
    d.advance_to(90);
    d.observe("pg-east", NodeObservation::Unreachable);
    assert!(declared_down(&d, east), "{:?}", d.events());
}

/// A replica on an older timeline than the writer's (it followed the old
/// writer and has not switched — or cannot, being ahead of the fork point)
/// does not stream from the writer: requiring it would block every commit.
/// It is not chosen; once it replays the writer's timeline, it is.
#[test]
fn a_replica_on_an_older_timeline_is_never_required_as_the_writers_standby() {
    let mut d = Drill::new(config(Synchronous::On));
    d.rounds(0, 2, "us-east", true);
    d.round(0, "us-west", true);
    d.round(10, "us-west", true);
    let on_timeline = |timeline: u32| NodeObservation::Replica {
        timeline,
        receive_lsn: Some(failover_core::Lsn(1000)),
        replay_lsn: Some(failover_core::Lsn(1000)),
        replay_delay: Some(std::time::Duration::ZERO),
        upstream_heard: None,
    };
    d.observe(
        "pg-east",
        NodeObservation::Primary {
            timeline: 2,
            current_lsn: failover_core::Lsn(1000),
            epoch: None,
            fenced: false,
            sync_wait: None,
        },
    );
    d.observe("pg-west", on_timeline(1));
    let west = node(&d, "pg-west");
    let required: Vec<SyncSet> = d
        .log
        .iter()
        .filter_map(|(_, a)| match a {
            Action::SetSynchronous { standbys, .. } => Some(*standbys),
            _ => None,
        })
        .collect();
    assert!(
        !required.contains(&SyncSet::of(west)),
        "pg-west, on timeline 1, was required by a writer on timeline 2: {required:?}"
    );
    if let Some((id, _, standbys)) = last_set_synchronous(&d) {
        assert_eq!(
            standbys,
            SyncSet::EMPTY,
            "the writer goes on asynchronously"
        );
        d.done(id);
    }
    // pg-west switches to the writer's timeline: now it is required.
    d.advance_to(25);
    d.observe("pg-west", on_timeline(2));
    d.observe(
        "pg-east",
        NodeObservation::Primary {
            timeline: 2,
            current_lsn: failover_core::Lsn(1100),
            epoch: None,
            fenced: false,
            sync_wait: None,
        },
    );
    let (_, writer, standbys) = last_set_synchronous(&d).expect("configured");
    assert_eq!(writer, node(&d, "pg-east"));
    assert_eq!(standbys, SyncSet::of(west));
}

/// `node` seen as the unfenced writer on timeline 1 whose oldest commit has
/// waited `wait_secs` for its synchronous standby.
fn primary_waiting(d: &mut Drill, name: &str, lsn: u64, wait_secs: Option<u64>) {
    d.observe(
        name,
        NodeObservation::Primary {
            timeline: 1,
            current_lsn: failover_core::Lsn(lsn),
            epoch: None,
            fenced: false,
            sync_wait: wait_secs.map(std::time::Duration::from_secs),
        },
    );
}

/// The `SetSynchronous` and `SetWriter` actions sent since `from`.
fn sync_steps(d: &Drill, from: usize) -> Vec<Action> {
    d.log[from..]
        .iter()
        .map(|(_, a)| a.clone())
        .filter(|a| matches!(a, Action::SetSynchronous { .. } | Action::SetWriter { .. }))
        .collect()
}

fn stalled(d: &Drill) -> Vec<(NodeId, u64)> {
    d.events()
        .iter()
        .filter_map(|e| match e {
            EventKind::SynchronousStalled {
                standby, behind, ..
            } => Some((*standby, behind.0)),
            _ => None,
        })
        .collect()
}

/// The cut that stalled three of the three-controller drills' writes for
/// as long as it lasted: the writer's region cut from its synchronous
/// standby's, but not from the controllers. The standby answers every
/// observation as a healthy replica on the writer's timeline, so before,
/// it stayed "kept" and every commit waited. Now the writer's own report
/// of how long its commits wait (`fall` × `interval` = 30 s here) drops it,
/// and it is required again only once it has received what they waited for.
#[test]
fn a_standby_that_stalls_the_writers_commits_is_dropped_though_it_answers_as_healthy() {
    let mut d = synchronous(Synchronous::On);
    let west = node(&d, "pg-west");
    let before = d.log.len();
    // Waits shorter than fall × interval are a slow standby, not a lost one.
    for (s, wait) in [(30, Some(5)), (40, Some(29)), (50, None)] {
        d.advance_to(s);
        d.replica("pg-west", 1500);
        primary_waiting(&mut d, "pg-east", 2000, wait);
    }
    assert!(sync_steps(&d, before).is_empty());
    assert!(stalled(&d).is_empty());

    d.advance_to(60);
    d.replica("pg-west", 1500);
    primary_waiting(&mut d, "pg-east", 2000, Some(30));
    assert_eq!(
        stalled(&d),
        vec![(west, 2000)],
        "said once, with the writer's position"
    );
    match sync_steps(&d, before).as_slice() {
        [Action::SetWriter { new, .. }, Action::SetSynchronous { id, standbys, .. }] => {
            assert_eq!(new.sync, SyncSet::EMPTY, "the record drops it first");
            assert_eq!(
                *standbys,
                SyncSet::EMPTY,
                "on: the writer goes on asynchronously"
            );
            d.done(*id);
        }
        other => panic!("record first, then the writer: {other:?}"),
    }
    assert_eq!(d.c.status().synchronous, SyncSet::EMPTY);

    // Still reachable and still behind: not required again.
    let before = d.log.len();
    for s in [70, 80] {
        d.advance_to(s);
        d.replica("pg-west", 1900);
        primary_waiting(&mut d, "pg-east", 2100, None);
    }
    assert!(
        sync_steps(&d, before).is_empty(),
        "{:?}",
        sync_steps(&d, before)
    );
    // It received what the commits waited for: it may be required again.
    d.advance_to(90);
    d.replica("pg-west", 2000);
    primary_waiting(&mut d, "pg-east", 2100, None);
    let (_, writer, standbys) = last_set_synchronous(&d).expect("required again");
    assert_eq!(writer, node(&d, "pg-east"));
    assert_eq!(standbys, SyncSet::of(west));
    assert_eq!(stalled(&d).len(), 1);
}

/// Strict mode with no other replica: a stalled standby is still the only
/// one, so the writer keeps requiring it and says its commits wait.
#[test]
fn strict_mode_keeps_requiring_a_stalled_standby_it_cannot_replace() {
    let mut d = synchronous(Synchronous::Strict);
    let before = d.log.len();
    d.advance_to(40);
    d.replica("pg-west", 1500);
    primary_waiting(&mut d, "pg-east", 2000, Some(45));
    assert_eq!(stalled(&d).len(), 1);
    assert!(sync_steps(&d, before).is_empty());
    assert!(d
        .events()
        .iter()
        .any(|e| matches!(e, EventKind::SynchronousBlocked { .. })));
    assert_eq!(d.c.status().synchronous, SyncSet::of(node(&d, "pg-west")));
}

fn three_regions(mode: Synchronous) -> Drill {
    let mut west = failover_core::Region::new("us-west", failover_core::RegionRole::Standby);
    west.capacity = 0.6;
    let mut south = failover_core::Region::new("us-south", failover_core::RegionRole::Standby);
    south.capacity = 0.6;
    let pg = |name: &str, region: &str, primary| failover_core::Node {
        name: name.into(),
        region: region.into(),
        priority: 0,
        primary,
    };
    let topology = failover_core::Topology::builder("api.example.com.")
        .region(failover_core::Region::new(
            "us-east",
            failover_core::RegionRole::Active,
        ))
        .region(west)
        .region(south)
        .node(pg("pg-east", "us-east", true))
        .node(pg("pg-west", "us-west", false))
        .node(pg("pg-south", "us-south", false))
        .build()
        .unwrap();
    let mut policy = auto_promote(seed_policy(), 16 * 1024);
    policy.synchronous = mode;
    let mut d = Drill::new(Config::new(topology, policy).unwrap());
    d.rounds(0, 2, "us-east", true);
    for region in ["us-west", "us-south"] {
        d.round(0, region, true);
        d.round(10, region, true);
    }
    d.primary("pg-east", 1000, None);
    d.replica("pg-west", 1000);
    d.replica("pg-south", 900);
    let (id, _, standbys) = last_set_synchronous(&d).expect("the writer is configured");
    assert_eq!(standbys, SyncSet::of(node(&d, "pg-west")), "the most WAL");
    d.done(id);
    assert_eq!(d.c.status().synchronous, SyncSet::of(node(&d, "pg-west")));
    d
}

/// With a third replica, the stalled standby is replaced, in strict mode
/// too (the writer never goes on without one); and once the old standby
/// catches up, the new one stays: no switching back.
#[test]
fn a_stalled_standby_is_replaced_by_another_replica_and_the_new_one_stays() {
    let mut d = three_regions(Synchronous::Strict);
    let (west, south) = (node(&d, "pg-west"), node(&d, "pg-south"));
    let before = d.log.len();
    d.advance_to(40);
    d.replica("pg-west", 1500);
    d.replica("pg-south", 3000);
    primary_waiting(&mut d, "pg-east", 3000, Some(31));
    assert_eq!(stalled(&d), vec![(west, 3000)]);
    let steps = sync_steps(&d, before);
    match steps.as_slice() {
        [Action::SetWriter { new: dropped, .. }, Action::SetSynchronous { id, standbys, .. }] => {
            assert_eq!(
                dropped.sync,
                SyncSet::EMPTY,
                "the record drops pg-west first"
            );
            assert_eq!(*standbys, SyncSet::of(south));
            d.done(*id);
        }
        other => panic!("drop, then require pg-south: {other:?}"),
    }
    assert_eq!(d.c.status().synchronous, SyncSet::of(south), "recorded");
    // A commit that waited for pg-west and is still waiting has waited for
    // pg-south only since the writer was reconfigured: no mark.
    d.advance_to(45);
    primary_waiting(&mut d, "pg-east", 3000, Some(36));
    assert_eq!(stalled(&d), vec![(west, 3000)]);
    assert!(!d
        .events()
        .iter()
        .any(|e| matches!(e, EventKind::SynchronousBlocked { .. })));

    // pg-west heals and gets ahead of pg-south: pg-south stays required.
    let before = d.log.len();
    for s in [50, 60, 70] {
        d.advance_to(s);
        d.replica("pg-west", 4000);
        d.replica("pg-south", 3900);
        primary_waiting(&mut d, "pg-east", 4000, None);
    }
    assert!(
        sync_steps(&d, before).is_empty(),
        "{:?}",
        sync_steps(&d, before)
    );
    assert_eq!(d.c.status().synchronous, SyncSet::of(south));
}

/// The stalled standby catches up (a cut that heals, or one that let WAL
/// through one way only) while its replacement is being configured: the
/// writer already requires a healthy standby, so that one is recorded,
/// not the "better" one back, which would take turns with it.
#[test]
fn a_stalled_standby_that_catches_up_during_its_replacement_does_not_take_its_place_back() {
    let mut d = three_regions(Synchronous::On);
    let (west, south) = (node(&d, "pg-west"), node(&d, "pg-south"));
    d.advance_to(40);
    d.replica("pg-west", 1500);
    d.replica("pg-south", 3000);
    primary_waiting(&mut d, "pg-east", 3000, Some(31));
    let (id, _, standbys) = last_set_synchronous(&d).expect("pg-south required");
    assert_eq!(standbys, SyncSet::of(south));
    // Before the configuration completes, pg-west has received it all and
    // more than pg-south.
    d.advance_to(41);
    d.replica("pg-west", 3500);
    d.replica("pg-south", 3400);
    let before = d.log.len();
    d.done(id);
    match sync_steps(&d, before).as_slice() {
        [Action::SetWriter { new, .. }] => assert_eq!(new.sync, SyncSet::of(south)),
        other => panic!("record pg-south, the standby the writer requires: {other:?}"),
    }
    assert_eq!(d.c.status().synchronous, SyncSet::of(south));
    assert_eq!(stalled(&d), vec![(west, 3000)]);
}
