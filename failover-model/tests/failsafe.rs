//! Patroni-style failsafe mode (DESIGN.md, "When the store itself is
//! down"), opt-in: how long the confirming guard must hold decides S1.
//!
//! DESIGN.md says a guard that confirmed "refuses promotion until the store
//! is back". Taken literally that lets a second writer in: the confirming
//! guard may reach the store before the writer's guard does, while the
//! writer's guard still runs on the extension it was granted. The hold must
//! last as long as the extension it granted (a guard TTL, on the confirming
//! guard's clock) and survive a restart of that guard.

mod common;

use common::{exhaustive, shortest};
use failover_model::{describe_path, Action, Failsafe, ModelConfig};
use stateright::Checker;

#[test]
fn holding_only_until_the_store_is_back_makes_two_writers() {
    let config = ModelConfig::small().with_failsafe(Failsafe::HoldUntilStoreBack);
    // The guard that stops holding when its own store link returns must let
    // a second writer in.
    let path = shortest(config, "S1 one writer");
    assert_eq!(path.last_state().writable_nodes(), vec![0, 1]);
    assert!(path
        .into_actions()
        .iter()
        .any(|a| matches!(a, Action::FailsafeRenew(0))));
}

#[test]
fn holding_for_the_granted_ttl_keeps_one_writer() {
    // One leadership term: the question here is between the guards and the
    // leader's store transaction; terms are covered by the main check.
    let config = ModelConfig::small()
        .with_bounds(1, 2)
        .with_failsafe(Failsafe::HoldForGrantedTtl);
    let checker = exhaustive(config);
    if let Some(path) = checker.discovery("S1 one writer") {
        panic!("S1 violated:\n{}", describe_path(&path));
    }
    assert!(checker.discovery("S3 no stale side effect").is_none());
    assert!(checker.discovery("a failover happens").is_some());
    assert!(checker.is_done());
}
