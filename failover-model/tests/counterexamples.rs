//! Each protective rule, taken out, lets the checker find the failure it
//! prevents. Breadth-first search returns a shortest trace.

use std::collections::BTreeSet;
use std::time::Instant;

use failover_model::{
    describe_path, Action, Delivery, ModelConfig, Network, OneWriter, PromotionRule,
    ReceiverChecks, State,
};
use stateright::{Checker, HasDiscoveries, Model, Path};

fn find(config: ModelConfig, property: &'static str) -> Path<State, Action> {
    let started = Instant::now();
    let checker = OneWriter::new(config)
        .checker()
        .threads(1) // one thread: the same shortest trace on every run
        .finish_when(HasDiscoveries::AnyOf(BTreeSet::from([property])))
        .spawn_bfs()
        .join();
    let path = checker.discovery(property);
    println!(
        "{config:?}: {} unique states explored in {:.2?}",
        checker.unique_state_count(),
        started.elapsed()
    );
    let Some(path) = path else {
        panic!("no counterexample for {property:?}: the checker should have found one");
    };
    println!("counterexample to {property:?}:\n{}", describe_path(&path));
    path
}

#[test]
fn promoting_on_unreachable_makes_two_writers() {
    let config = ModelConfig::small()
        .with_network(Network::Links)
        .with_promotion(PromotionRule::PromoteOnUnreachable);
    let path = find(config, "S1 one writer");
    let last = path.last_state();
    assert_eq!(
        last.writable_nodes(),
        vec![0, 1],
        "the trace must end with both nodes writable"
    );
    let actions = path.into_actions();
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::Fence(_, Delivery::Lost))),
        "the split brain must come from a fence that merely failed: {actions:?}"
    );
}

#[test]
fn receivers_without_token_checks_apply_a_deposed_leaders_update() {
    let config = ModelConfig::small().with_receivers(ReceiverChecks::None);
    let path = find(config, "S3 no stale side effect");
    assert!(path.last_state().stale_effect);
    let actions = path.into_actions();
    assert!(
        actions.iter().any(|a| matches!(a, Action::Resume(_))),
        "the stale side effect must come from a paused leader that resumed: {actions:?}"
    );
}

#[test]
fn reading_the_expired_lease_before_the_move_makes_two_writers() {
    let config = ModelConfig::small().with_promotion(PromotionRule::LeaseReadBeforeMove);
    let path = find(config, "S1 one writer");
    assert_eq!(path.last_state().writable_nodes(), vec![0, 1]);
    let actions = path.into_actions();
    let seen = actions
        .iter()
        .position(|a| matches!(a, Action::SeeLeaseExpired(_)));
    let renewed = actions.iter().rposition(|a| matches!(a, Action::Renew(0)));
    assert!(
        matches!((seen, renewed), (Some(s), Some(r)) if s < r),
        "the old writer's guard must renew after the lease was seen expired: {actions:?}"
    );
}

/// Finishing a claimed promotion on another node than the record's.
///
/// A leader finds the record naming a node that an earlier term claimed at
/// epoch E, takes it for a replica, and "finishes" the failover on the node
/// it prefers: it re-points the record at E to that node by compare-and-set
/// (the guard accepts a promote only for the node the record names, so
/// promoting its choice without touching the record would just be refused)
/// and skips the proof that the claimed node stopped, since "it was never
/// promoted". That belief is an observation and can be stale: the claimer
/// may have promoted the node before it lost its term, and the node's guard
/// unfences it as soon as it reads the record naming it. The checker finds
/// the claimed node and the retargeted one both writable. The safe rule
/// (`finish_claimed_promotion`) promotes the record's node at the record's
/// epoch and moves the record only with a proof of stop.
///
/// The two other wrong finishes one might write are harmless in the model,
/// because the guard checks the record: promoting the record's node at E+1
/// without re-claiming, or promoting a node the record does not name, is
/// refused (the guard accepts only the record's node at the record's epoch),
/// and even if applied would leave the node fenced (a guard unfences only
/// for the record's node at its promotion epoch). They cost availability,
/// not S1 or S3, so they have no counterexample here.
#[test]
fn retargeting_an_unfinished_claim_without_proof_makes_two_writers() {
    let config = ModelConfig::small().with_promotion(PromotionRule::RetargetUnfinishedClaim);
    let path = find(config, "S1 one writer");
    assert_eq!(path.last_state().writable_nodes(), vec![0, 1]);
    let steps = path.into_vec();
    let retarget = steps
        .iter()
        .position(|(_, a)| matches!(a, Some(Action::RetargetClaim(_))))
        .expect("the split brain must come from a retargeted claim");
    // When the claim was retargeted, the claimed node was no replica any
    // more: an earlier term had promoted it, and the retargeting leader
    // acted on a stale belief.
    let before = &steps[retarget].0;
    let claimed = before.store.writer;
    assert_eq!(
        before.nodes[claimed.node as usize].promoted,
        Some(claimed.epoch),
        "the claimed node must have been promoted before the retarget"
    );
    let claim_term = steps
        .iter()
        .position(|(_, a)| matches!(a, Some(Action::MoveWriter(..))))
        .and_then(|i| steps[i].0.store.leader)
        .expect("the node must have been claimed under a leader key");
    let retarget_term = before.store.leader.expect("retargeted under a leader key");
    assert!(
        retarget_term.token > claim_term.token,
        "the retarget must come from a later term than the claim"
    );
}
