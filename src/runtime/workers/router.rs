//! The router worker: applies weight plans one at a time. A plan that fails
//! with a retryable error is retried with backoff until it lands, unless a
//! newer plan arrives first: plans are complete, so the newest one is all
//! that matters, and the superseded one is reported failed (kind `Conflict`).
//! Every failed attempt is reported to the driver, which counts it in the
//! status.

use std::sync::Arc;

use failover_core::ports::TrafficRouter;
use failover_core::{ActionFailure, ActionId, Input, PortErrorKind, WeightPlan};
use serde_json::json;
use tokio::sync::mpsc;

use super::{
    abandon, failure, note_failed_attempt, record_duration, Report, Reports, Term, NOT_STARTED,
    PAST_DEADLINE,
};
use crate::runtime::adapter_call::guarded;
use crate::runtime::audit::AuditLog;
use crate::runtime::retry::RetryPolicy;
use crate::runtime::stop::StopSignal;

/// A plan and the action that carries it.
pub(crate) type PlanJob = (ActionId, WeightPlan);

/// Runs until the plan channel closes or shutdown begins; at shutdown the
/// plan in flight may finish until the deadline, queued plans are abandoned.
pub(crate) async fn route(
    router: Arc<dyn TrafficRouter>,
    mut plans: mpsc::UnboundedReceiver<PlanJob>,
    reports: Reports,
    retry: RetryPolicy,
    term: Term,
    audit: AuditLog,
    mut stop: StopSignal,
) {
    let mut next = None;
    loop {
        let (mut id, mut plan) = match next.take() {
            Some(job) => job,
            None => {
                let job = tokio::select! {
                    biased;
                    job = plans.recv() => job,
                    () = stop.begun() => None,
                };
                match job {
                    Some(job) if !stop.is_stopping() => job,
                    other => {
                        if let Some((id, _)) = other {
                            abandon(&audit, id, 0, NOT_STARTED);
                        }
                        abandon_queued(&mut plans, &audit);
                        return;
                    }
                }
            }
        };
        while let Ok(newer) = plans.try_recv() {
            supersede(&reports, &audit, id, newer.1.generation);
            (id, plan) = newer;
        }
        let mut attempt = 0u32;
        let started = std::time::Instant::now();
        loop {
            if let Err(error) = term.admit(plan.token, "set_weights") {
                audit.record(
                    "action_failed",
                    json!({"action": id.0, "attempts": attempt, "error": error.to_string()}),
                );
                let _ = reports.send(Report::Finished(Input::ActionFailed {
                    id,
                    failure: failure(&error),
                }));
                break;
            }
            attempt += 1;
            let applied = guarded("router.apply", retry.call_timeout, router.apply(&plan));
            let Some(result) = stop.finish_by_deadline(applied).await else {
                abandon(&audit, id, attempt, PAST_DEADLINE);
                abandon_queued(&mut plans, &audit);
                return;
            };
            match result {
                Ok(()) => {
                    tracing::info!(generation = plan.generation, attempt, "weight plan applied");
                    metrics::counter!("failover_weight_plans_applied_total").increment(1);
                    record_duration("set_weights", "done", started);
                    audit.record(
                        "action_done",
                        json!({"action": id.0, "generation": plan.generation, "attempts": attempt}),
                    );
                    let _ = reports.send(Report::Finished(Input::ActionDone { id }));
                    break;
                }
                Err(error) if error.is_retryable() => {
                    let wait = retry.backoff(attempt);
                    note_failed_attempt(
                        &audit,
                        &reports,
                        id,
                        "set_weights",
                        attempt,
                        &error,
                        Some(wait),
                    );
                    // A closed plan channel (shutdown) disables the second
                    // branch; the wait then ends with the sleep.
                    let waited = stop
                        .finish_by_deadline(async {
                            tokio::select! {
                                () = tokio::time::sleep(wait) => None,
                                Some(newer) = plans.recv() => Some(newer),
                            }
                        })
                        .await;
                    match waited {
                        None => {
                            abandon(&audit, id, attempt, PAST_DEADLINE);
                            abandon_queued(&mut plans, &audit);
                            return;
                        }
                        Some(None) => {}
                        Some(Some(newer)) => {
                            supersede(&reports, &audit, id, newer.1.generation);
                            next = Some(newer);
                            break;
                        }
                    }
                }
                Err(error) => {
                    note_failed_attempt(&audit, &reports, id, "set_weights", attempt, &error, None);
                    tracing::error!(generation = plan.generation, %error, "weight plan rejected; not retrying");
                    record_duration("set_weights", "failed", started);
                    audit.record(
                        "action_failed",
                        json!({"action": id.0, "attempts": attempt, "error": error.to_string()}),
                    );
                    let _ = reports.send(Report::Finished(Input::ActionFailed {
                        id,
                        failure: failure(&error),
                    }));
                    break;
                }
            }
        }
    }
}

fn abandon_queued(plans: &mut mpsc::UnboundedReceiver<PlanJob>, audit: &AuditLog) {
    plans.close();
    while let Ok((id, _)) = plans.try_recv() {
        abandon(audit, id, 0, NOT_STARTED);
    }
}

fn supersede(reports: &Reports, audit: &AuditLog, id: ActionId, by_generation: u64) {
    let message =
        format!("superseded by weight plan generation {by_generation} before it was applied");
    audit.record("action_failed", json!({"action": id.0, "error": message}));
    let failure = ActionFailure {
        kind: PortErrorKind::Conflict,
        message,
    };
    let _ = reports.send(Report::Finished(Input::ActionFailed { id, failure }));
}
