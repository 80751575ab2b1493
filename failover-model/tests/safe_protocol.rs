//! The safe protocol, checked exhaustively for the small size.

use std::collections::BTreeSet;
use std::time::Instant;

mod common;

use common::exhaustive;
use failover_model::{
    describe_path, describe_state, Action, Delivery, ModelConfig, Network, OneWriter, Proof,
};
use stateright::{Checker, HasDiscoveries, Model};

/// The `sometimes` property that shows a successor finishing a promotion its
/// predecessor claimed (`finish_claimed_promotion`).
const FINISHED_BY_SUCCESSOR: &str = "a successor finishes a claimed promotion";

fn check_exhaustively(config: ModelConfig) {
    let checker = exhaustive(config);
    for property in ["S1 one writer", "S3 no stale side effect"] {
        if let Some(path) = checker.discovery(property) {
            panic!("{property} violated:\n{}", describe_path(&path));
        }
    }
    assert!(
        checker.discovery("a failover happens").is_some(),
        "no failover is reachable: the model would be vacuous"
    );
    assert!(
        checker.discovery(FINISHED_BY_SUCCESSOR).is_some(),
        "no successor ever finishes a claimed promotion: S1 and S3 would hold vacuously for it"
    );
    assert!(
        checker.is_done(),
        "the check stopped before exploring every state"
    );
}

#[test]
fn safe_protocol_keeps_one_writer_on_a_lossy_network() {
    check_exhaustively(ModelConfig::small());
}

/// With explicit links the state space is too large to exhaust in a test;
/// every behaviour here is also one of the lossy network, checked above. This
/// run checks every state within `DEPTH` steps, partitions included.
#[test]
fn safe_protocol_keeps_one_writer_with_explicit_partitions_to_a_bounded_depth() {
    const DEPTH: usize = 11;
    let config = ModelConfig::small().with_network(Network::Links);
    let started = Instant::now();
    let checker = OneWriter::new(config)
        .checker()
        .threads(2)
        .target_max_depth(DEPTH)
        .spawn_bfs()
        .join();
    println!(
        "{config:?}: {} unique states within {DEPTH} steps, in {:.2?}",
        checker.unique_state_count(),
        started.elapsed()
    );
    for property in ["S1 one writer", "S3 no stale side effect"] {
        if let Some(path) = checker.discovery(property) {
            panic!("{property} violated:\n{}", describe_path(&path));
        }
    }
}

/// A leader claims the new writer (moves the record), then loses its term
/// before it promotes; the next leader reads the record and promotes the
/// claimed node at the claimed epoch, without a fence or proof of its own,
/// and the node takes writes. The exhaustive check above covers every such
/// interleaving; this one prints the shortest and checks its shape.
#[test]
fn a_successor_finishes_a_promotion_its_predecessor_claimed() {
    let config = ModelConfig::small();
    let started = Instant::now();
    let checker = OneWriter::new(config)
        .checker()
        .threads(1) // one thread: the same shortest trace on every run
        .finish_when(HasDiscoveries::AnyOf(BTreeSet::from([
            FINISHED_BY_SUCCESSOR,
        ])))
        .spawn_bfs()
        .join();
    println!(
        "{config:?}: {} unique states explored in {:.2?}",
        checker.unique_state_count(),
        started.elapsed()
    );
    let path = checker
        .discovery(FINISHED_BY_SUCCESSOR)
        .expect("a successor must be able to finish a claimed promotion");
    println!("{FINISHED_BY_SUCCESSOR}:\n{}", describe_path(&path));
    let steps = path.into_vec();
    let last = &steps[steps.len() - 1].0;
    assert!(last.claim_finished_by_successor());
    assert_eq!(last.writable_nodes(), vec![last.store.writer.node as usize]);
    // The record move that claimed the node, then a new term, then the
    // promote of the claimed node under that term.
    let actions: Vec<Action> = steps.iter().filter_map(|(_, a)| *a).collect();
    let claimed = actions
        .iter()
        .rposition(|a| matches!(a, Action::MoveWriter(..)))
        .expect("the trace must claim a node");
    let campaign = actions
        .iter()
        .rposition(|a| matches!(a, Action::Campaign(_)))
        .expect("the trace must elect a successor");
    let promoted = actions
        .iter()
        .rposition(|a| matches!(a, Action::Promote(_)))
        .expect("the trace must promote");
    assert!(
        claimed < campaign && campaign < promoted,
        "claim, new term, promote: {actions:?}"
    );
    let claimer = steps[..=claimed]
        .last()
        .and_then(|(s, _)| s.store.leader)
        .expect("the claim is made under a leader key");
    let successor = steps[..=promoted]
        .last()
        .and_then(|(s, _)| s.store.leader)
        .expect("the promote is made under a leader key");
    assert!(successor.token > claimer.token, "{claimer:?} {successor:?}");
}

/// The two interleavings the rule is for, step by step: the claimer crashes
/// right after its claim, or is paused (SIGSTOP) until its term ran out; the
/// successor promotes the claimed node at the claimed epoch and it takes
/// writes. A claimer that resumes after the successor took over can no
/// longer promote: its token is not the current term's.
#[test]
fn a_claim_survives_its_claimer_crashing_or_pausing_before_the_promote() {
    let model = OneWriter::new(ModelConfig::small());
    let claim = [
        Action::Campaign(0),
        Action::ReadWriter(0),
        Action::Fence(0, Delivery::Replied),
        Action::MoveWriter(0, Proof::Held, Delivery::Replied),
    ];
    let successor_leads = [
        Action::Tick(0),
        Action::Tick(0),
        Action::Tick(0),
        Action::Campaign(1),
    ];
    let successor_finishes = [Action::ReadWriter(1), Action::Promote(1), Action::Renew(1)];
    for fault in [Action::Crash(0), Action::Pause(0)] {
        let mut actions = claim.to_vec();
        actions.push(fault);
        actions.extend(successor_leads);
        if fault == Action::Pause(0) {
            actions.push(Action::Resume(0));
            let resumed = model.replay(&actions).unwrap_or_else(|e| panic!("{e}"));
            let mut offered = Vec::new();
            model.actions(&resumed, &mut offered);
            assert!(
                !offered.contains(&Action::Promote(0)),
                "a deposed claimer must not promote after it resumes: {offered:?}"
            );
        }
        actions.extend(successor_finishes);
        let state = model.replay(&actions).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            state.claim_finished_by_successor(),
            "after {fault:?}: {}",
            describe_state(&state)
        );
        assert_eq!(state.writable_nodes(), vec![1]);
    }
}
