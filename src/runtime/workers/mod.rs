//! The tasks that execute the controller's actions on the adapters and
//! report each attempt and each end back to the driver on their own channel
//! (never behind probe results), and the observer that feeds database
//! observations in.
//!
//! - [`router`]: applies weight plans, newest first, retrying until applied
//!   or superseded;
//! - [`database`]: fences and promotes, strictly in issue order;
//! - [`observer`]: observes every database node once per interval;
//! - [`writer_name`]: points the writer's DNS name at a node once its
//!   promotion completed.
//!
//! Every adapter call goes through [`guarded`](super::adapter_call::guarded).
//! At shutdown the action in flight may finish until the deadline; every
//! action ends with an `action_done`, `action_failed` or `action_abandoned`
//! audit record.

pub(crate) mod database;
pub(crate) mod observer;
pub(crate) mod router;
pub(crate) mod writer_name;

use std::time::Duration;

use failover_core::{ActionFailure, ActionId, FencingToken, Input, PortError, PromoteRequest};
use serde_json::json;
use tokio::sync::{mpsc, watch};

use super::audit::AuditLog;

/// What a worker tells the driver.
#[derive(Debug)]
pub(crate) enum Report {
    /// An action ended (done, or failed for good): feed this to the controller.
    Finished(Input),
    /// One attempt at an action failed; `retry_in` is `None` when it is not retried.
    AttemptFailed {
        /// The action.
        id: ActionId,
        /// `set_weights`, `fence` or `promote`.
        action: &'static str,
        /// 1-based.
        attempt: u32,
        /// The adapter's error.
        error: String,
        /// Wait before the next attempt.
        retry_in: Option<Duration>,
    },
}

/// The leadership term as the driver last saw it, which workers check
/// before every attempt: with a coordinator, a job issued under a term that
/// has since ended is dropped, so a deposed leader's queued actions never
/// start. Without one every job is allowed.
#[derive(Clone, Debug)]
pub(crate) struct Term {
    current: watch::Receiver<Option<FencingToken>>,
    coordinated: bool,
}

impl Term {
    pub(crate) fn new(current: watch::Receiver<Option<FencingToken>>, coordinated: bool) -> Self {
        Term {
            current,
            coordinated,
        }
    }

    /// Whether a job of kind `action` issued under `term` may still run:
    /// `Ok`, or the failure a dropped job reports (logged and counted here).
    pub(crate) fn admit(
        &self,
        term: Option<FencingToken>,
        action: &'static str,
    ) -> Result<(), PortError> {
        if !self.coordinated || (term.is_some() && *self.current.borrow() == term) {
            return Ok(());
        }
        let error = PortError::new(
            failover_core::PortErrorKind::Refused,
            format!(
                "dropped: the leadership term it was issued under ({}) ended before it ran",
                term.map_or_else(|| "none".to_owned(), |t| t.to_string())
            ),
        );
        tracing::warn!(action, %error, "deposed leader's action dropped");
        metrics::counter!("failover_actions_dropped_total", "action" => action).increment(1);
        Err(error)
    }
}

/// Where workers send their reports.
pub(crate) type Reports = mpsc::UnboundedSender<Report>;

/// A database action waiting for the database worker.
#[derive(Clone, Copy, Debug)]
pub(crate) enum DatabaseJob {
    Fence {
        id: ActionId,
        term: Option<FencingToken>,
        node: failover_core::NodeId,
        epoch: failover_core::Epoch,
    },
    Promote {
        id: ActionId,
        term: Option<FencingToken>,
        request: PromoteRequest,
    },
    Unfence {
        id: ActionId,
        term: Option<FencingToken>,
        node: failover_core::NodeId,
        epoch: failover_core::Epoch,
    },
    SetSynchronous {
        id: ActionId,
        term: Option<FencingToken>,
        node: failover_core::NodeId,
        epoch: failover_core::Epoch,
        standbys: failover_core::SyncSet,
        token: Option<FencingToken>,
    },
}

impl DatabaseJob {
    pub(crate) fn id(&self) -> ActionId {
        match self {
            DatabaseJob::Fence { id, .. }
            | DatabaseJob::Promote { id, .. }
            | DatabaseJob::Unfence { id, .. }
            | DatabaseJob::SetSynchronous { id, .. } => *id,
        }
    }

    /// The leadership term it was issued under.
    pub(crate) fn term(&self) -> Option<FencingToken> {
        match self {
            DatabaseJob::Fence { term, .. }
            | DatabaseJob::Promote { term, .. }
            | DatabaseJob::Unfence { term, .. }
            | DatabaseJob::SetSynchronous { term, .. } => *term,
        }
    }
}

fn failure(error: &PortError) -> ActionFailure {
    ActionFailure {
        kind: error.kind(),
        message: error.to_string(),
    }
}

/// Logs, counts, audits and reports a failed attempt; `retry_in` is the wait
/// before the next one (`None`: no more attempts).
fn note_failed_attempt(
    audit: &AuditLog,
    reports: &Reports,
    id: ActionId,
    action: &'static str,
    attempt: u32,
    error: &PortError,
    retry_in: Option<Duration>,
) {
    let retry_ms = retry_in.map(|wait| u64::try_from(wait.as_millis()).unwrap_or(u64::MAX));
    tracing::warn!(action, action_id = id.0, attempt, %error, retry_in_ms = ?retry_ms,
        "action attempt failed");
    metrics::counter!("failover_action_attempt_failures_total", "action" => action).increment(1);
    if retry_in.is_some() {
        metrics::counter!("failover_action_retries_total", "action" => action).increment(1);
        audit.record(
            "action_retry",
            json!({"action": id.0, "attempt": attempt, "error": error.to_string(), "retry_in_ms": retry_ms}),
        );
    }
    let _ = reports.send(Report::AttemptFailed {
        id,
        action,
        attempt,
        error: error.to_string(),
        retry_in,
    });
}

/// Records that action `id` ends without a result: shutdown came first.
/// How long an action took from its first attempt to its end, retries included.
fn record_duration(action: &'static str, outcome: &'static str, started: std::time::Instant) {
    metrics::histogram!("failover_action_seconds", "action" => action, "outcome" => outcome)
        .record(started.elapsed().as_secs_f64());
}

pub(crate) fn abandon(audit: &AuditLog, id: ActionId, attempts: u32, reason: &str) {
    tracing::warn!(action_id = id.0, attempts, reason, "action abandoned");
    metrics::counter!("failover_actions_abandoned_total").increment(1);
    audit.record(
        "action_abandoned",
        json!({"action": id.0, "attempts": attempts, "reason": reason}),
    );
}

/// Why an action is abandoned when the deadline cuts it off.
const PAST_DEADLINE: &str = "the shutdown deadline passed while it was in flight";
/// Why a queued action is abandoned at shutdown.
pub(crate) const NOT_STARTED: &str = "not started: the runtime is shutting down";
