//! Drain before fence: a planned switchover marks the old writer draining in
//! the writer record, waits `policy.writer_drain` so load balancers stop
//! sending it new connections, and only then fences it. Simulated time.

mod common;

use std::time::Duration;

use common::*;
use failover_core::{
    Action, ActionId, Command, Config, Epoch, EventKind, Input, Lsn, NodeId, PortErrorKind,
    PromotionPhase, WriterRecord,
};

const DRAIN: u64 = 6;

fn config() -> Config {
    let mut policy = auto_promote(seed_policy(), 100);
    policy.writer_drain = Duration::from_secs(DRAIN);
    Config::new(seed_topology(&[]), policy).unwrap()
}

fn node(d: &Drill, name: &str) -> NodeId {
    d.c.topology().node_id(name).unwrap()
}

/// Both regions up, pg-east primary at LSN 1000, pg-west replica caught up.
fn steady(d: &mut Drill) {
    d.rounds(0, 2, "us-east", true);
    d.round(0, "us-west", true);
    d.round(10, "us-west", true);
    d.primary("pg-east", 1000, None);
    d.replica("pg-west", 1000);
}

/// Every `SetWriter` so far: (seconds, id, expected, new).
fn writer_writes(d: &Drill) -> Vec<(u64, ActionId, Option<WriterRecord>, WriterRecord)> {
    d.log
        .iter()
        .filter_map(|(t, a)| match a {
            Action::SetWriter {
                id, expected, new, ..
            } => Some((*t, *id, *expected, *new)),
            _ => None,
        })
        .collect()
}

fn fences(d: &Drill) -> Vec<(u64, NodeId)> {
    d.log
        .iter()
        .filter_map(|(t, a)| match a {
            Action::Fence { node, .. } => Some((*t, *node)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_switchover_marks_the_writer_draining_and_fences_only_after_the_drain() {
    let mut d = Drill::new(config());
    d.ack_claims = false;
    steady(&mut d);
    let (east, west) = (node(&d, "pg-east"), node(&d, "pg-west"));
    d.advance_to(100);
    d.command(Command::Switchover { to: west });

    // First the mark: a compare-and-set of the writer's own record, drained.
    let writes = writer_writes(&d);
    let &(at, mark, expected, new) = writes.last().expect("the drain mark is written");
    assert_eq!(at, 100);
    assert_eq!(expected, Some(WriterRecord::new(east, Epoch(0))));
    assert_eq!(new, WriterRecord::new(east, Epoch(0)).with_draining(true));
    assert!(fences(&d).is_empty(), "nothing is fenced before the mark");
    assert!(matches!(
        d.c.status().promotion,
        PromotionPhase::Draining { node, candidate } if node == east && candidate == west
    ));
    assert!(d.last_events().iter().any(|e| matches!(
        e,
        EventKind::WriterDrainRequested { node, drain, .. }
            if *node == east && *drain == Duration::from_secs(DRAIN)
    )));

    // The store confirms 2 s later: the drain runs from there.
    d.advance_to(102);
    d.done(mark);
    assert!(d
        .last_events()
        .iter()
        .any(|e| matches!(e, EventKind::WriterDraining { node, .. } if *node == east)));
    d.advance_to(102 + DRAIN - 1);
    assert!(
        fences(&d).is_empty(),
        "no fence while load balancers may still send the writer connections: {:#?}",
        d.log
    );
    d.advance_to(102 + DRAIN);
    assert_eq!(
        fences(&d),
        vec![(102 + DRAIN, east)],
        "the fence follows the drain"
    );

    // The rest is today's switchover; the claim replaces the drained record.
    let (fence, _, epoch) = d.last_fence();
    d.input(Input::FenceDone {
        id: fence,
        final_lsn: Lsn(1000),
    });
    let writes = writer_writes(&d);
    let &(_, claim, expected, new) = writes.last().unwrap();
    assert_eq!(
        expected,
        Some(WriterRecord::new(east, Epoch(0)).with_draining(true)),
        "the claim expects the drained record"
    );
    assert_eq!(new, WriterRecord::new(west, epoch));
    d.done(claim);
    let (promote, _) = d.last_promote();
    d.done(promote);
    assert_eq!(d.c.writer(), Some(west));
    assert_eq!(d.c.status().promotion, PromotionPhase::Idle);
}

#[test]
fn without_a_drain_the_switchover_fences_at_once() {
    let mut policy = auto_promote(seed_policy(), 100);
    policy.writer_drain = Duration::ZERO;
    let mut d = Drill::new(Config::new(seed_topology(&[]), policy).unwrap());
    steady(&mut d);
    let west = node(&d, "pg-west");
    let before = writer_writes(&d).len();
    d.command(Command::Switchover { to: west });
    assert_eq!(fences(&d).len(), 1);
    assert_eq!(writer_writes(&d).len(), before, "no drain mark");
}

#[test]
fn abort_during_the_drain_lifts_the_mark_and_fences_nothing() {
    let mut d = Drill::new(config());
    steady(&mut d);
    let (east, west) = (node(&d, "pg-east"), node(&d, "pg-west"));
    d.command(Command::Switchover { to: west });
    d.advance_to(d.secs() + 2);
    d.command(Command::Abort);
    let writes = writer_writes(&d);
    let &(_, _, expected, new) = writes.last().unwrap();
    assert_eq!(
        (expected, new),
        (
            Some(WriterRecord::new(east, Epoch(0)).with_draining(true)),
            WriterRecord::new(east, Epoch(0))
        ),
        "the abort writes the record back without the mark"
    );
    assert!(d.last_events().iter().any(|e| matches!(
        e,
        EventKind::WriterUndrainRequested { node, .. } if *node == east
    )));
    d.advance_to(d.secs() + 10 * DRAIN);
    assert!(fences(&d).is_empty(), "an aborted drain fences nothing");
    assert_eq!(d.promotes(), 0);
    assert_eq!(d.c.status().promotion, PromotionPhase::Idle);
    // A new switchover drains again from an unmarked record.
    d.command(Command::Switchover { to: west });
    let writes = writer_writes(&d);
    let &(_, _, expected, new) = writes.last().unwrap();
    assert_eq!(expected, Some(WriterRecord::new(east, Epoch(0))));
    assert!(new.draining);
}

#[test]
fn a_switchover_that_fails_after_its_fence_unfences_and_lifts_the_mark() {
    let mut d = Drill::new(config());
    steady(&mut d);
    let (east, west) = (node(&d, "pg-east"), node(&d, "pg-west"));
    d.replica("pg-west", 900);
    d.command(Command::Switchover { to: west });
    d.advance_to(d.secs() + DRAIN);
    let (fence, _, _) = d.last_fence();
    d.input(Input::FenceDone {
        id: fence,
        final_lsn: Lsn(1000),
    });
    // pg-west never catches up: the step times out.
    let step = d.c.policy().step_timeout.as_secs();
    d.advance_to(d.secs() + step);
    let actions: Vec<Action> = d.log.iter().map(|(_, a)| a.clone()).collect();
    assert!(actions
        .iter()
        .any(|a| matches!(a, Action::Unfence { node, .. } if *node == east)));
    let writes = writer_writes(&d);
    let &(_, _, _, new) = writes.last().unwrap();
    assert_eq!(new, WriterRecord::new(east, Epoch(0)), "the mark is lifted");
    assert_eq!(d.promotes(), 0);
}

#[test]
fn a_mark_the_store_refuses_fails_the_switchover_without_a_fence() {
    let mut d = Drill::new(config());
    d.ack_claims = false;
    steady(&mut d);
    let west = node(&d, "pg-west");
    d.command(Command::Switchover { to: west });
    let &(_, mark, _, _) = writer_writes(&d).last().unwrap();
    d.fail(mark, PortErrorKind::Refused);
    assert_eq!(d.c.status().promotion, PromotionPhase::Idle);
    d.advance_to(d.secs() + 10 * DRAIN);
    assert!(fences(&d).is_empty());
    // An unconfirmed mark times out the same way.
    d.command(Command::Switchover { to: west });
    let step = d.c.policy().step_timeout.as_secs();
    d.advance_to(d.secs() + step);
    assert!(d
        .events()
        .iter()
        .any(|e| matches!(e, EventKind::StepTimedOut { step: "drain", .. })));
    assert!(fences(&d).is_empty());
}

#[test]
fn a_leader_lifts_a_drain_it_finds_in_the_store_with_no_switchover_under_way() {
    let mut d = Drill::new(config());
    d.ack_claims = false;
    steady(&mut d);
    let east = node(&d, "pg-east");
    // A record drained by a switchover that died with its controller.
    d.input(Input::Coordination(
        failover_core::CoordinationEvent::Writer(Some(
            WriterRecord::new(east, Epoch(0)).with_draining(true),
        )),
    ));
    let writes = writer_writes(&d);
    let &(_, _, expected, new) = writes.last().expect("the drain is lifted");
    assert_eq!(
        expected,
        Some(WriterRecord::new(east, Epoch(0)).with_draining(true))
    );
    assert_eq!(new, WriterRecord::new(east, Epoch(0)));
}
