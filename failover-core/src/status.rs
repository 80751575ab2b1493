//! A snapshot of what the controller believes, for dashboards and the runtime.

use std::time::Instant;

use crate::{Epoch, FencingToken, NodeId, RegionId, WeightPlan};

/// A region's health as the controller's vantage quorum sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Health {
    /// Not evaluated yet (`policy.initial_health = "unknown"`): serves at its
    /// configured weight, never counts as healthy for promotion.
    Unknown,
    /// Enough vantages see it up.
    Up,
    /// A quorum of vantages sees it down.
    Down,
}

/// One region in a [`Status`].
#[derive(Clone, Debug, PartialEq)]
pub struct RegionStatus {
    /// The region.
    pub id: RegionId,
    /// Its health (as probes say, even while automation is paused).
    pub health: Health,
    /// Its weight in the current desired plan.
    pub weight: u32,
    /// Whether an operator drained it.
    pub drained: bool,
    /// Index of its failback ramp step, when ramping (into `policy.ramp_steps`).
    pub ramp_step: Option<usize>,
    /// Out of rotation until then (hold-down or flap damping), if so.
    pub held_until: Option<Instant>,
}

/// Where a database change is, in a [`Status`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PromotionPhase {
    /// Nothing in progress.
    Idle,
    /// A planned switchover drains the old writer before fencing it: the
    /// writer record says draining, so load balancers stop sending it new
    /// connections, for `policy.writer_drain`.
    Draining {
        /// The writer being drained.
        node: NodeId,
        /// The replica promoted next.
        candidate: NodeId,
    },
    /// Waiting for proof that the old writer stopped: its fence confirmed,
    /// or its guard lease expired.
    Fencing {
        /// The node being fenced.
        node: NodeId,
        /// The replica promoted next.
        candidate: NodeId,
    },
    /// Writing the new writer record to the coordination store.
    Claiming {
        /// The replica promoted next.
        node: NodeId,
    },
    /// Waiting for a planned switchover's target to replay everything.
    CatchingUp {
        /// The target.
        node: NodeId,
    },
    /// Waiting for a promotion to complete.
    Promoting {
        /// The replica being promoted.
        node: NodeId,
    },
    /// The best candidate is beyond `max_rpo`; waiting for it or an operator.
    Refused {
        /// The candidate.
        node: NodeId,
    },
    /// No proof that the old writer stopped arrived within
    /// `policy.proof_timeout`: nothing is promoted. Retried after a backoff.
    Unproven {
        /// The old writer.
        node: NodeId,
        /// The replica that would be promoted.
        candidate: NodeId,
    },
    /// `policy.max_attempts` promotions failed in a row: the controller no
    /// longer retries on its own. An operator acts (force-promote,
    /// switchover, resume after repair).
    NeedsOperator {
        /// The writer that is lost.
        writer: NodeId,
    },
}

/// Everything the controller currently believes.
#[derive(Clone, Debug, PartialEq)]
pub struct Status {
    /// Every region, in topology order.
    pub regions: Vec<RegionStatus>,
    /// The desired plan (the last issued), if any.
    pub plan: Option<WeightPlan>,
    /// The node taking writes, if known.
    pub writer: Option<NodeId>,
    /// The highest epoch used or seen.
    pub epoch: Epoch,
    /// Database change in progress.
    pub promotion: PromotionPhase,
    /// Whether automation is paused.
    pub paused: bool,
    /// Leadership: `Some(token)` while this controller leads (always
    /// `Some(FencingToken(0))` without a coordinator), `None` while another
    /// controller does or nobody is known to.
    pub leader: Option<FencingToken>,
    /// The synchronous standbys the writer record names (empty: the writer
    /// replicates asynchronously, or `policy.synchronous` is off).
    pub synchronous: crate::SyncSet,
}

impl Status {
    /// The status of one region.
    pub fn region(&self, id: RegionId) -> Option<&RegionStatus> {
        self.regions.get(id.index())
    }
}
