//! The facade's public surface, as an embedding service sees it (issue 10
//! item 15).

use std::time::Duration;

// A glob import of the facade must not shadow Rust's `core`: the decision
// core is `failover::decision`, and `core::` below still means Rust's.
use failover::*;

/// A user's own probe, written with the facade's re-exported `async_trait`
/// and nothing but the facade's paths.
struct AlwaysUp;

#[async_trait]
impl decision::ports::Probe for AlwaysUp {
    async fn check(&self) -> decision::ProbeOutcome {
        decision::ProbeOutcome::Ok {
            latency: Duration::from_millis(1),
        }
    }
}

#[test]
fn a_glob_import_of_the_facade_leaves_rusts_core_alone() {
    assert_eq!(core::mem::size_of::<u32>(), 4);
    let _: &dyn decision::ports::Probe = &AlwaysUp;
}

#[tokio::test]
async fn a_probe_written_with_the_reexported_async_trait_runs() {
    use failover::decision::ports::Probe;
    assert!(AlwaysUp.check().await.is_ok());
}
