//! Controllers in every region ([`RuntimeBuilder::coordinator`](super::RuntimeBuilder::coordinator)):
//! the tasks that connect the driver to the coordination store.
//!
//! - [`forward_events`]: the store's changes (leadership, writer record,
//!   guard leases, peers' verdicts, intent, the stored plan) to the driver,
//!   on a channel it reads right after operator commands;
//! - [`store_worker`]: writes under the leader's token — the writer record
//!   (compare-and-set) and operator intent — and reports each claim back;
//! - [`publish_verdicts`]: this controller's own verdicts, newest first;
//! - [`StoreRouter`]: the leader's weight plan goes to the store first (every
//!   controller's embedded DNS serves it from there), then to the user's
//!   router, if any.
//!
//! Only the leader acts. Every job carries the term it was issued under, and
//! a worker drops a job whose term has ended before it starts
//! ([`Term`](super::workers::Term)); what is already in flight is refused by
//! the receiving side (the store's token compare, the DNS prerequisite, the
//! database's epoch).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use failover_core::ports::{Coordinator, TrafficRouter};
use failover_core::{
    ActionFailure, ActionId, CoordinationEvent, FencingToken, Input, Intent, NodeId, PortError,
    PortErrorKind, RegionWeight, Verdict, WeightPlan, WriterRecord,
};
use serde_json::json;
use tokio::sync::{mpsc, watch};

use super::adapter_call::guarded;
use super::audit::AuditLog;
use super::stop::StopSignal;
use super::workers::{Report, Reports, Term};

/// Pause after a failed read of the store's events or a failed publication.
const RETRY: Duration = Duration::from_millis(250);

/// A write to the coordination store, issued by the driver.
#[derive(Clone, Debug)]
pub(crate) enum StoreJob {
    /// [`Action::SetWriter`](failover_core::Action::SetWriter).
    SetWriter {
        id: ActionId,
        token: Option<FencingToken>,
        expected: Option<WriterRecord>,
        new: WriterRecord,
        guard_absent: Option<NodeId>,
    },
    /// Operator intent changed by a command this controller took as leader.
    SetIntent { token: FencingToken, intent: Intent },
}

/// Feeds the store's changes to the driver until shutdown begins; its
/// errors too (the driver shows them in the status: why this controller
/// cannot lead or hear its peers).
pub(crate) async fn forward_events(
    coordinator: Arc<dyn Coordinator>,
    events: mpsc::UnboundedSender<Result<CoordinationEvent, String>>,
    mut stop: StopSignal,
) {
    loop {
        let event = tokio::select! {
            biased;
            () = stop.begun() => return,
            event = coordinator.next_event() => event,
        };
        match event {
            Ok(event) => {
                if events.send(Ok(event)).is_err() {
                    return;
                }
            }
            Err(error) => {
                tracing::warn!(%error, "coordination store: cannot read its changes; retrying");
                metrics::counter!("failover_coordination_errors_total", "operation" => "next_event")
                    .increment(1);
                if events.send(Err(error.to_string())).is_err() {
                    return;
                }
                tokio::select! {
                    () = stop.begun() => return,
                    () = tokio::time::sleep(RETRY) => {}
                }
            }
        }
    }
}

/// Executes writes to the store in order. A claim is tried once and its
/// result reported: the controller decides whether and when to try again.
pub(crate) async fn store_worker(
    coordinator: Arc<dyn Coordinator>,
    mut jobs: mpsc::UnboundedReceiver<StoreJob>,
    reports: Reports,
    term: Term,
    call_timeout: Duration,
    audit: AuditLog,
    mut stop: StopSignal,
) {
    loop {
        let job = tokio::select! {
            biased;
            job = jobs.recv() => job,
            () = stop.begun() => None,
        };
        let Some(job) = job else { return };
        match job {
            StoreJob::SetWriter {
                id,
                token,
                expected,
                new,
                guard_absent,
            } => {
                let result = match (term.admit(token, "set_writer"), token) {
                    (Err(dropped), _) => Err(dropped),
                    (Ok(()), None) => Err(PortError::new(
                        PortErrorKind::Config,
                        "a writer claim without a leadership token cannot go to the coordination store",
                    )),
                    (Ok(()), Some(token)) => {
                        guarded(
                            "coordinator.set_writer",
                            call_timeout,
                            coordinator.set_writer(token, expected, new, guard_absent),
                        )
                        .await
                    }
                };
                let input = match result {
                    Ok(()) => {
                        audit.record("action_done", json!({"action": id.0, "attempts": 1}));
                        Input::ActionDone { id }
                    }
                    Err(error) => {
                        tracing::warn!(action = id.0, %error, "writer claim refused or failed");
                        audit.record(
                            "action_failed",
                            json!({"action": id.0, "attempts": 1, "error": error.to_string()}),
                        );
                        Input::ActionFailed {
                            id,
                            failure: ActionFailure {
                                kind: error.kind(),
                                message: error.to_string(),
                            },
                        }
                    }
                };
                let _ = reports.send(Report::Finished(input));
            }
            StoreJob::SetIntent { token, intent } => {
                for attempt in 1..=5u32 {
                    if term.admit(Some(token), "set_intent").is_err() {
                        break;
                    }
                    let stored = guarded(
                        "coordinator.set_intent",
                        call_timeout,
                        coordinator.set_intent(token, &intent),
                    )
                    .await;
                    match stored {
                        Ok(()) => {
                            audit.record(
                                "intent_stored",
                                json!({"token": token.0, "intent": format!("{intent:?}")}),
                            );
                            break;
                        }
                        Err(error) => {
                            tracing::warn!(%token, attempt, %error, "cannot store operator intent");
                            metrics::counter!("failover_coordination_errors_total", "operation" => "set_intent")
                                .increment(1);
                            if !error.is_retryable() {
                                break;
                            }
                            tokio::select! {
                                () = stop.begun() => return,
                                () = tokio::time::sleep(RETRY * attempt) => {}
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Publishes this controller's verdicts whenever they change, newest first;
/// a failed publication is retried until it lands or newer verdicts replace it.
pub(crate) async fn publish_verdicts(
    coordinator: Arc<dyn Coordinator>,
    mut verdicts: watch::Receiver<Vec<Verdict>>,
    call_timeout: Duration,
    mut stop: StopSignal,
) {
    loop {
        tokio::select! {
            biased;
            () = stop.begun() => return,
            changed = verdicts.changed() => if changed.is_err() { return },
        }
        loop {
            let latest = verdicts.borrow_and_update().clone();
            let published = guarded(
                "coordinator.publish_verdicts",
                call_timeout,
                coordinator.publish_verdicts(&latest),
            )
            .await;
            match published {
                Ok(()) => {
                    tracing::debug!(count = latest.len(), "verdicts published");
                    break;
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot publish this controller's verdicts; retrying");
                    metrics::counter!("failover_coordination_errors_total", "operation" => "publish_verdicts")
                        .increment(1);
                    tokio::select! {
                        () = stop.begun() => return,
                        () = tokio::time::sleep(RETRY) => {}
                        changed = verdicts.changed() => if changed.is_err() { return },
                    }
                }
            }
        }
    }
}

/// The leader's traffic router with a coordinator: the plan is stored first,
/// under its token (refused once that token no longer leads), then applied
/// to the user's router, if any. Every controller's local DNS
/// ([`RuntimeBuilder::serve`](super::RuntimeBuilder::serve)) follows the
/// stored plan.
pub(crate) struct StoreRouter {
    pub(crate) coordinator: Arc<dyn Coordinator>,
    pub(crate) then: Option<Arc<dyn TrafficRouter>>,
}

#[async_trait]
impl TrafficRouter for StoreRouter {
    async fn apply(&self, plan: &WeightPlan) -> Result<(), PortError> {
        let Some(token) = plan.token else {
            return Err(PortError::new(
                PortErrorKind::Config,
                "a plan without a leadership token cannot go to the coordination store",
            ));
        };
        self.coordinator.set_plan(token, plan).await?;
        match &self.then {
            Some(router) => router.apply(plan).await,
            None => Ok(()),
        }
    }

    async fn read_back(&self) -> Result<Vec<RegionWeight>, PortError> {
        match &self.then {
            Some(router) => router.read_back().await,
            None => Err(PortError::new(
                PortErrorKind::Config,
                "the coordination store's plan is read through its events, not read back",
            )),
        }
    }
}
