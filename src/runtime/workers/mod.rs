//! The tasks that execute the controller's actions on the adapters and report
//! each completion or failure back as an input.

use std::sync::Arc;
use std::time::Duration;

use failover_core::ports::{DatabaseAdmin, TrafficRouter};
use failover_core::{
    ActionFailure, ActionId, Input, PortError, PortErrorKind, PromoteRequest, WeightPlan,
};
use serde_json::json;
use tokio::sync::{mpsc, watch};

use super::audit::AuditLog;
use super::retry::RetryPolicy;

/// A database action waiting for the database worker.
#[derive(Clone, Copy, Debug)]
pub(crate) enum DatabaseJob {
    Fence {
        id: ActionId,
        node: failover_core::NodeId,
        epoch: failover_core::Epoch,
    },
    Promote {
        id: ActionId,
        request: PromoteRequest,
    },
}

fn failure(error: &PortError) -> ActionFailure {
    ActionFailure {
        kind: error.kind(),
        message: error.to_string(),
    }
}

/// Applies weight plans one at a time. A plan that fails with a retryable
/// error is retried with backoff until it lands, unless a newer plan arrives
/// first: plans are complete, so the newest one is all that matters, and the
/// superseded one is reported failed with kind `Conflict`.
pub(crate) async fn route(
    router: Arc<dyn TrafficRouter>,
    mut plans: mpsc::UnboundedReceiver<(ActionId, WeightPlan)>,
    inputs: mpsc::Sender<Input>,
    retry: RetryPolicy,
    audit: AuditLog,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut next = None;
    loop {
        let (mut id, mut plan) = match next.take() {
            Some(job) => job,
            None => tokio::select! {
                job = plans.recv() => match job { Some(job) => job, None => return },
                _ = shutdown.changed() => return,
            },
        };
        while let Ok(newer) = plans.try_recv() {
            supersede(&inputs, &audit, id, newer.1.generation).await;
            (id, plan) = newer;
        }
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            match router.apply(&plan).await {
                Ok(()) => {
                    tracing::info!(generation = plan.generation, attempt, "weight plan applied");
                    metrics::counter!("failover_weight_plans_applied_total").increment(1);
                    audit.record(
                        "action_done",
                        json!({"action": id.0, "generation": plan.generation, "attempts": attempt}),
                    );
                    let _ = inputs.send(Input::ActionDone { id }).await;
                    break;
                }
                Err(error) if error.is_retryable() => {
                    let wait = note_retry(&audit, &retry, id, "set_weights", attempt, &error);
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        newer = plans.recv() => {
                            let Some(newer) = newer else { return };
                            supersede(&inputs, &audit, id, newer.1.generation).await;
                            next = Some(newer);
                            break;
                        }
                        _ = shutdown.changed() => return,
                    }
                }
                Err(error) => {
                    tracing::error!(generation = plan.generation, %error, "weight plan rejected; not retrying");
                    audit.record(
                        "action_failed",
                        json!({"action": id.0, "error": error.to_string()}),
                    );
                    let _ = inputs
                        .send(Input::ActionFailed {
                            id,
                            failure: failure(&error),
                        })
                        .await;
                    break;
                }
            }
        }
    }
}

/// Logs, counts and audits a failed attempt that will be retried; returns
/// how long to wait first.
fn note_retry(
    audit: &AuditLog,
    retry: &RetryPolicy,
    id: ActionId,
    action: &'static str,
    attempt: u32,
    error: &PortError,
) -> Duration {
    let wait = retry.backoff(attempt);
    tracing::warn!(action, action_id = id.0, attempt, %error, retry_in_ms = wait.as_millis() as u64,
        "action failed; retrying");
    metrics::counter!("failover_action_retries_total", "action" => action).increment(1);
    audit.record(
        "action_retry",
        json!({"action": id.0, "attempt": attempt, "error": error.to_string()}),
    );
    wait
}

async fn supersede(
    inputs: &mpsc::Sender<Input>,
    audit: &AuditLog,
    id: ActionId,
    by_generation: u64,
) {
    let message =
        format!("superseded by weight plan generation {by_generation} before it was applied");
    audit.record("action_failed", json!({"action": id.0, "error": message}));
    let failure = ActionFailure {
        kind: PortErrorKind::Conflict,
        message,
    };
    let _ = inputs.send(Input::ActionFailed { id, failure }).await;
}

/// Runs fences and promotions strictly in the order the controller issued
/// them (a promotion never overtakes the fence before it), retrying
/// retryable errors up to `retry.fence_attempts` / `retry.database_attempts` times.
pub(crate) async fn administer(
    database: Arc<dyn DatabaseAdmin>,
    mut jobs: mpsc::UnboundedReceiver<DatabaseJob>,
    inputs: mpsc::Sender<Input>,
    retry: RetryPolicy,
    audit: AuditLog,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let job = tokio::select! {
            job = jobs.recv() => match job { Some(job) => job, None => return },
            _ = shutdown.changed() => return,
        };
        let (id, what, attempts) = match job {
            DatabaseJob::Fence { id, .. } => (id, "fence", retry.fence_attempts),
            DatabaseJob::Promote { id, .. } => (id, "promote", retry.database_attempts),
        };
        let mut attempt = 0u32;
        let outcome = loop {
            attempt += 1;
            let result = match job {
                DatabaseJob::Fence { node, epoch, .. } => database.fence(node, epoch).await,
                DatabaseJob::Promote { request, .. } => database.promote(&request).await.map(Some),
            };
            match result {
                Err(error) if error.is_retryable() && attempt < attempts.max(1) => {
                    let wait = note_retry(&audit, &retry, id, what, attempt, &error);
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = shutdown.changed() => return,
                    }
                }
                other => break other,
            }
        };
        let input = match outcome {
            Ok(lsn) => {
                tracing::info!(action = what, attempt, lsn = ?lsn.map(|l| l.to_string()), "database action done");
                audit.record(
                    "action_done",
                    json!({"action": id.0, "attempts": attempt, "lsn": lsn.map(|l| l.to_string())}),
                );
                match (job, lsn) {
                    // The fenced node's final position: a switchover promotes at exactly it.
                    (DatabaseJob::Fence { .. }, Some(final_lsn)) => {
                        Input::FenceDone { id, final_lsn }
                    }
                    _ => Input::ActionDone { id },
                }
            }
            Err(error) => {
                tracing::error!(action = what, attempt, %error, "database action failed");
                audit.record(
                    "action_failed",
                    json!({"action": id.0, "attempts": attempt, "error": error.to_string()}),
                );
                Input::ActionFailed {
                    id,
                    failure: failure(&error),
                }
            }
        };
        let _ = inputs.send(input).await;
    }
}

/// Observes every database node once per `interval` and feeds the result to
/// the controller. A call that errors (rather than finding the node
/// unreachable) is reported as unreachable: the controller must not trust a
/// node it cannot read.
pub(crate) async fn observe(
    database: Arc<dyn DatabaseAdmin>,
    nodes: Vec<failover_core::NodeId>,
    interval: Duration,
    timeout: Duration,
    inputs: mpsc::Sender<Input>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.changed() => return,
        }
        // All nodes at once: one slow or black-holed node must not delay
        // what the controller learns about the others.
        let observed = futures::future::join_all(nodes.iter().map(|&node| {
            let database = database.clone();
            async move {
                // Stamped when it starts: everything committed before is in it.
                let started = std::time::Instant::now();
                let observation = match tokio::time::timeout(timeout, database.observe(node)).await {
                    Ok(Ok(observation)) => observation,
                    Ok(Err(error)) => {
                        tracing::warn!(%node, %error, "database observation failed; treating node as unreachable");
                        failover_core::NodeObservation::Unreachable
                    }
                    Err(_) => {
                        tracing::warn!(%node, timeout_ms = timeout.as_millis() as u64, "database observation timed out");
                        failover_core::NodeObservation::Unreachable
                    }
                };
                failover_core::ReplicationStatus {
                    node,
                    at: started,
                    observation,
                }
            }
        }))
        .await;
        for status in observed {
            if inputs.send(Input::Replication(status)).await.is_err() {
                return;
            }
        }
    }
}
