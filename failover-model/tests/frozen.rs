//! A PostgreSQL server frozen under its live guard (SIGSTOP, a cgroup
//! freeze): it confirms no fence and applies none. A guard that only fences
//! lets its lease run out as if the fence had landed, and the thawed old
//! writer takes commits beside its successor; a guard that kills the server
//! it cannot fence before its deadline (`failover_pg::NodeKill`) keeps one
//! writer.

mod common;

use common::{exhaustive, shortest};
use failover_model::{
    describe_path, describe_state, Action, Delivery, FrozenServers, ModelConfig, OneWriter, Proof,
    Synchronous,
};
use stateright::{Checker, Model};

#[test]
fn a_guard_that_only_fences_lets_a_frozen_writer_wake_beside_its_successor() {
    let config = ModelConfig::small().with_frozen_servers(FrozenServers::GuardFencesOnly);
    let path = shortest(config, "S1 one writer");
    assert_eq!(path.last_state().writable_nodes(), vec![0, 1]);
    let actions = path.into_actions();
    let frozen = actions
        .iter()
        .position(|a| *a == Action::Freeze(0))
        .expect("the old writer freezes");
    let moved = actions
        .iter()
        .position(|a| matches!(a, Action::MoveWriter(_, Proof::LeaseExpired, _)))
        .expect("the writer moves on the old writer's expired lease");
    let thawed = actions
        .iter()
        .rposition(|a| *a == Action::Thaw(0))
        .expect("the old writer thaws");
    assert!(frozen < moved && moved < thawed, "{actions:?}");
}

fn check_exhaustively(config: ModelConfig, properties: &[&'static str]) {
    let checker = exhaustive(config);
    for property in properties {
        if let Some(path) = checker.discovery(property) {
            panic!("{property} violated:\n{}", describe_path(&path));
        }
    }
    assert!(
        checker.discovery("a failover happens").is_some(),
        "no failover is reachable: the model would be vacuous"
    );
    assert!(
        checker.is_done(),
        "the check stopped before exploring every state"
    );
}

#[test]
fn a_guard_that_kills_what_it_cannot_fence_keeps_one_writer() {
    check_exhaustively(
        ModelConfig::small().with_frozen_servers(FrozenServers::GuardKills),
        &["S1 one writer", "S3 no stale side effect"],
    );
}

/// With synchronous replication the old writer may stay writable after a
/// move on the synchronous proof, by design; what must hold is that it
/// acknowledges nothing after the successor's promotion and that nothing it
/// acknowledged is lost, a freeze and thaw included. One leadership term
/// keeps the check exhaustive and short.
#[test]
fn a_frozen_synchronous_writer_acknowledges_nothing_after_its_successor() {
    check_exhaustively(
        ModelConfig::small()
            .with_synchronous(Synchronous::On)
            .with_bounds(1, 2)
            .with_frozen_servers(FrozenServers::GuardKills),
        &[
            "S1 one acknowledging writer",
            "S2 no acknowledged loss",
            "S3 no stale side effect",
        ],
    );
}

/// The drill's interleaving step by step: the writer freezes, its fence
/// cannot be confirmed, its guard kills it one tick before the store would
/// expire its lease, the writer moves on the expired lease, and the killed
/// node comes back fenced, never to thaw as a writer.
#[test]
fn a_frozen_writer_is_killed_before_its_lease_expires_and_returns_fenced() {
    let model = OneWriter::new(ModelConfig::small().with_frozen_servers(FrozenServers::GuardKills));
    let mut actions = vec![
        Action::Campaign(0),
        Action::ReadWriter(0),
        Action::Freeze(0),
        Action::Tick(0),
        Action::KeepAlive(0),
        Action::Renew(1),
        Action::Tick(0),
    ];
    let killed = model.replay(&actions).unwrap_or_else(|e| panic!("{e}"));
    assert!(!killed.nodes[0].up, "{}", describe_state(&killed));
    assert!(
        killed.store.guard_lease[0] > 0,
        "the kill comes before the store expires the lease: {}",
        describe_state(&killed)
    );
    let mut offered = Vec::new();
    model.actions(&killed, &mut offered);
    assert!(!offered.contains(&Action::Thaw(0)), "{offered:?}");
    assert!(
        !offered.iter().any(|a| matches!(a, Action::Fence(0, _))),
        "a killed node confirms no fence: {offered:?}"
    );
    actions.extend([
        Action::KeepAlive(0),
        Action::Renew(1),
        Action::Tick(0),
        Action::MoveWriter(0, Proof::LeaseExpired, Delivery::Replied),
        Action::Promote(0),
        Action::Renew(1),
        Action::RestartNode(0),
        Action::Renew(0),
    ]);
    let state = model.replay(&actions).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        state.writable_nodes(),
        vec![1],
        "{}",
        describe_state(&state)
    );
    assert!(state.nodes[0].fenced && !state.nodes[0].frozen);
}
