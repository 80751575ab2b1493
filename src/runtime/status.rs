//! What the status handle shows: the controller's view, the recent events,
//! and what the traffic router has actually made live.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use failover_core::{Epoch, Lsn, NodeId, NodeObservation, ReplicationStatus, Status, WeightPlan};

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
    /// Traffic reports (passive health) the controller has handled since
    /// start.
    pub traffic_reports_handled: u64,
    /// Every database node of the topology, in topology order, as the
    /// database observer last saw it.
    pub nodes: Vec<NodeView>,
    /// The last WAL position seen on a primary, to express replicas' lag.
    primary_lsn: Option<Lsn>,
}

impl RuntimeStatus {
    pub(crate) fn new(controller: Status, nodes: impl Iterator<Item = NodeId>) -> Self {
        RuntimeStatus {
            controller,
            recent_events: VecDeque::new(),
            router: RouterStatus::default(),
            probe_results_handled: 0,
            traffic_reports_handled: 0,
            nodes: nodes.map(NodeView::unobserved).collect(),
            primary_lsn: None,
        }
    }

    /// Records an observation of a node; returns whether its role or lag
    /// changed (a change worth publishing).
    pub(crate) fn observe(&mut self, seen: &ReplicationStatus) -> bool {
        if let NodeObservation::Primary { current_lsn, .. } = seen.observation {
            self.primary_lsn = Some(current_lsn);
        }
        let primary_lsn = self.primary_lsn;
        let Some(view) = self.nodes.iter_mut().find(|v| v.node == seen.node) else {
            return false;
        };
        let before = (view.role, view.lag_bytes, view.replay_delay);
        view.observed_at = Some(SystemTime::now());
        match seen.observation {
            NodeObservation::Unreachable => view.role = NodeRole::Unreachable,
            NodeObservation::Primary { epoch, fenced, .. } => {
                view.role = NodeRole::Primary { epoch, fenced };
                view.lag_bytes = Some(0);
                view.replay_delay = None;
            }
            NodeObservation::Replica {
                receive_lsn,
                replay_lsn,
                replay_delay,
                ..
            } => {
                view.role = NodeRole::Replica;
                view.lag_bytes = primary_lsn
                    .zip(receive_lsn.or(replay_lsn))
                    .map(|(primary, have)| primary.bytes_after(have));
                view.replay_delay = replay_delay;
            }
        }
        before != (view.role, view.lag_bytes, view.replay_delay)
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

/// A database node as the runtime's observer last saw it.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct NodeView {
    /// The node (its name is in the topology).
    pub node: NodeId,
    /// What it reported being.
    pub role: NodeRole,
    /// How far, in bytes of WAL, it is behind the last position seen on a
    /// primary (0 on a primary; `None` until both are known).
    pub lag_bytes: Option<u64>,
    /// On a replica: time since the last replayed transaction's commit, as
    /// the node reports it.
    pub replay_delay: Option<Duration>,
    /// When it was last observed (wall clock), whatever the outcome.
    pub observed_at: Option<SystemTime>,
}

impl NodeView {
    fn unobserved(node: NodeId) -> Self {
        NodeView {
            node,
            role: NodeRole::Unknown,
            lag_bytes: None,
            replay_delay: None,
            observed_at: None,
        }
    }
}

/// What a database node reported being, in a [`NodeView`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NodeRole {
    /// Not observed yet.
    Unknown,
    /// It did not answer the last observation.
    Unreachable,
    /// It accepts writes, unless `fenced`.
    Primary {
        /// The fencing epoch it carries, if recorded.
        epoch: Option<Epoch>,
        /// Whether it has been fenced (refuses writes).
        fenced: bool,
    },
    /// A streaming replica.
    Replica,
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
