//! The database observer: observes every database node once per `interval`
//! and feeds the result to the controller. A call that errors, panics or
//! outlives `policy.timeout` (rather than finding the node unreachable) is
//! reported as unreachable: the controller must not trust a node it cannot read.

use std::sync::Arc;
use std::time::Duration;

use failover_core::ports::DatabaseAdmin;
use failover_core::{Input, NodeObservation, ReplicationStatus};
use tokio::sync::mpsc;

use crate::runtime::adapter_call::guarded;
use crate::runtime::stop::StopSignal;

/// Runs until shutdown begins or the driver stops reading.
pub(crate) async fn observe(
    database: Arc<dyn DatabaseAdmin>,
    nodes: Vec<failover_core::NodeId>,
    interval: Duration,
    timeout: Duration,
    inputs: mpsc::Sender<Input>,
    mut stop: StopSignal,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            biased;
            () = stop.begun() => return,
            _ = ticker.tick() => {}
        }
        // All nodes at once: one slow or black-holed node must not delay
        // what the controller learns about the others.
        let observed = futures::future::join_all(nodes.iter().map(|&node| {
            let database = database.clone();
            async move {
                // Stamped when it starts: everything committed before is in it.
                let started = std::time::Instant::now();
                let observation =
                    match guarded("database.observe", timeout, database.observe(node)).await {
                        Ok(observation) => observation,
                        Err(error) => {
                            tracing::warn!(%node, %error, "database observation failed; treating node as unreachable");
                            NodeObservation::Unreachable
                        }
                    };
                ReplicationStatus {
                    node,
                    at: started,
                    observation,
                }
            }
        }));
        let observed = tokio::select! {
            biased;
            () = stop.begun() => return,
            observed = observed => observed,
        };
        // What was learned before what could not be: a replica's stream that
        // heard from the writer this round must be known when the writer's
        // miss of this round is counted (it may vouch for the writer).
        let (reached, missed): (Vec<_>, Vec<_>) = observed
            .into_iter()
            .partition(|s| !matches!(s.observation, NodeObservation::Unreachable));
        for status in reached.into_iter().chain(missed) {
            if inputs.send(Input::Replication(status)).await.is_err() {
                return;
            }
        }
    }
}
