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
