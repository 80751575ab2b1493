//! What the status handle shows: the controller's view, the recent events,
//! and what the traffic router has actually made live.

use std::collections::VecDeque;
use std::time::SystemTime;

use failover_core::{Status, WeightPlan};

/// What the status handle shows: the controller's view plus the runtime's.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RuntimeStatus {
    /// Health, weights, writer, epoch and pause state, as the controller
    /// sees them. `controller.plan` is the *desired* plan (the last issued).
    pub controller: Status,
    /// The most recent events, rendered with region and node names, oldest
    /// first; failed router attempts are among them.
    pub recent_events: VecDeque<String>,
    /// The traffic router's side: the plan it last confirmed live, and its
    /// failed attempts.
    pub router: RouterStatus,
    /// Probe results the controller has handled since start.
    pub probe_results_handled: u64,
}

impl RuntimeStatus {
    pub(crate) fn new(controller: Status) -> Self {
        RuntimeStatus {
            controller,
            recent_events: VecDeque::new(),
            router: RouterStatus::default(),
            probe_results_handled: 0,
        }
    }

    /// Whether the router has confirmed the desired plan (true when there is
    /// no plan yet).
    pub fn plan_applied(&self) -> bool {
        match (&self.controller.plan, &self.router.applied) {
            (None, _) => true,
            (Some(desired), Some(applied)) => desired.generation == applied.generation,
            (Some(_), None) => false,
        }
    }
}

/// The traffic router as the runtime saw it.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct RouterStatus {
    /// The last plan the router confirmed live (its `apply` returned `Ok`),
    /// if any. Compare with `controller.plan`, the desired one.
    pub applied: Option<WeightPlan>,
    /// When `applied` was confirmed (wall clock).
    pub applied_at: Option<SystemTime>,
    /// Failed attempts at applying a plan since start, each retry included.
    pub failed_attempts: u64,
    /// The last failed attempt, as a sentence.
    pub last_failure: Option<String>,
}
