//! The guard's margin against clock drift and pauses: a guard whose clock
//! lags by up to the margin still fences before the store expires its lease;
//! one that lags by more lets a second writer in.

mod common;

use common::{exhaustive, shortest};
use failover_model::{describe_path, Action, ModelConfig};
use stateright::Checker;

#[test]
fn a_guard_clock_lagging_by_the_margin_keeps_one_writer() {
    let config = ModelConfig::small()
        .with_guard_clock(1, 1)
        .with_bounds(1, 2);
    let checker = exhaustive(config);
    if let Some(path) = checker.discovery("S1 one writer") {
        panic!("S1 violated:\n{}", describe_path(&path));
    }
    assert!(checker.discovery("a failover happens").is_some());
    assert!(checker.is_done());
}

#[test]
fn a_guard_clock_lagging_past_the_margin_makes_two_writers() {
    let config = ModelConfig::small()
        .with_guard_clock(0, 1)
        .with_bounds(1, 2);
    // A guard whose clock lags past its margin must let a second writer in.
    let path = shortest(config, "S1 one writer");
    assert_eq!(path.last_state().writable_nodes(), vec![0, 1]);
    assert!(path
        .into_actions()
        .iter()
        .any(|a| matches!(a, Action::Tick(slow) if *slow != 0)));
}
