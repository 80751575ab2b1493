//! The two ways the tests run the checker: every reachable state, or the
//! shortest path to one property's discovery.

// Each test file uses what it needs.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::time::Instant;

use failover_model::{describe_path, Action, ModelConfig, OneWriter, State};
use stateright::{Checker, HasDiscoveries, Model, Path};

/// Explores every state reachable under `config` (two threads, controllers
/// taken as interchangeable) and prints how many and how long.
pub fn exhaustive(config: ModelConfig) -> impl Checker<OneWriter> {
    let started = Instant::now();
    let checker = OneWriter::new(config)
        .checker()
        .threads(2)
        .symmetry()
        .spawn_dfs()
        .join();
    println!(
        "{config:?}: {} unique states ({} generated), max depth {}, in {:.2?}",
        checker.unique_state_count(),
        checker.state_count(),
        checker.max_depth(),
        started.elapsed()
    );
    checker
}

/// The shortest path under `config` to a state where `property` is
/// discovered (breadth first, one thread: the same path on every run),
/// printed as a timeline. Panics if there is none.
pub fn shortest(config: ModelConfig, property: &'static str) -> Path<State, Action> {
    let started = Instant::now();
    let checker = OneWriter::new(config)
        .checker()
        .threads(1)
        .finish_when(HasDiscoveries::AnyOf(BTreeSet::from([property])))
        .spawn_bfs()
        .join();
    println!(
        "{config:?}: {} unique states explored in {:.2?}",
        checker.unique_state_count(),
        started.elapsed()
    );
    let Some(path) = checker.discovery(property) else {
        panic!("no path to {property:?}: the checker should have found one");
    };
    println!("path to {property:?}:\n{}", describe_path(&path));
    path
}
