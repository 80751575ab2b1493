//! The safe protocol, checked exhaustively for the small size.

use std::time::Instant;

use failover_model::{describe_path, ModelConfig, Network, OneWriter};
use stateright::{Checker, Model};

fn check_exhaustively(config: ModelConfig) {
    let started = Instant::now();
    let checker = OneWriter::new(config)
        .checker()
        .threads(2)
        .symmetry()
        .spawn_dfs()
        .join();
    let elapsed = started.elapsed();
    println!(
        "{config:?}: {} unique states ({} generated), max depth {}, in {:.2?}",
        checker.unique_state_count(),
        checker.state_count(),
        checker.max_depth(),
        elapsed
    );
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
