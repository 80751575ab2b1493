//! What the controller asks the driver to do.

use std::time::Duration;

use crate::{
    Epoch, Event, FencingToken, Lsn, MaxRpo, NodeId, RegionId, SyncSet, Synchronous, WriterRecord,
};

/// Identifies one action so its completion or failure can be reported back
/// with [`Input::ActionDone`](crate::Input::ActionDone) / [`Input::ActionFailed`](crate::Input::ActionFailed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ActionId(pub u64);

/// One region's share of traffic in a [`WeightPlan`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RegionWeight {
    /// The region.
    pub region: RegionId,
    /// Its weight (0 = drained). Relative to the other regions' weights.
    pub weight: u32,
}

/// A complete routing plan: every region's weight, never a delta, so applying
/// it twice is harmless and a lost plan is repaired by the next one.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct WeightPlan {
    /// Increases with every new plan; adapters may use it to ignore stale plans.
    pub generation: u64,
    /// TTL of the DNS answers that carry this plan.
    pub ttl: Duration,
    /// One entry per region of the topology, in region order.
    pub weights: Vec<RegionWeight>,
    /// The leadership term the plan is applied under, when controllers run
    /// with a coordinator (`None` for a single controller). Routers that can
    /// compare and set (RFC 2136 prerequisites, the coordination store)
    /// refuse a plan whose token is older than the one they hold, so a
    /// deposed leader's late plan changes nothing.
    pub token: Option<crate::FencingToken>,
}

impl WeightPlan {
    /// A plan from one weight per region, in topology order (the first
    /// weight is `RegionId(0)`'s).
    pub fn in_region_order(
        generation: u64,
        ttl: Duration,
        weights: impl IntoIterator<Item = u32>,
    ) -> WeightPlan {
        WeightPlan {
            generation,
            ttl,
            weights: weights
                .into_iter()
                .enumerate()
                .map(|(i, weight)| RegionWeight {
                    region: RegionId(i as u32),
                    weight,
                })
                .collect(),
            token: None,
        }
    }

    /// The weight of a region (0 when absent).
    pub fn weight(&self, region: RegionId) -> u32 {
        self.weights
            .iter()
            .find(|w| w.region == region)
            .map_or(0, |w| w.weight)
    }
    /// Regions with a weight above zero.
    pub fn serving(&self) -> impl Iterator<Item = RegionId> + '_ {
        self.weights
            .iter()
            .filter(|w| w.weight > 0)
            .map(|w| w.region)
    }
    /// Sum of all weights.
    pub fn total(&self) -> u64 {
        self.weights.iter().map(|w| u64::from(w.weight)).sum()
    }
}

/// What a promotion must check before it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RpoGate {
    /// An operator forced the promotion: promote whatever the lag.
    Forced,
    /// Refuse if the candidate is further behind than `max`. `reference` is the
    /// last WAL position the controller saw on the old primary, which the
    /// candidate's received WAL is compared with.
    Within {
        /// The limit.
        max: MaxRpo,
        /// The old primary's last known `pg_current_wal_lsn()`.
        reference: Option<Lsn>,
    },
    /// Planned switchover: refuse unless the candidate has replayed at least
    /// `lsn` (the fenced old primary's final flush position): zero loss.
    CaughtUp {
        /// The position the candidate must have replayed.
        lsn: Lsn,
    },
    /// The candidate is a synchronous standby the old writer required (the
    /// writer record names it in `sync`): every commit the old writer
    /// acknowledged is on it, so there is no acknowledged loss to measure.
    /// The adapter checks nothing more.
    Synchronous,
}

/// A request to promote one replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PromoteRequest {
    /// The replica to promote.
    pub node: NodeId,
    /// The fencing epoch it will carry; strictly greater than any before.
    pub epoch: Epoch,
    /// What to check first.
    pub gate: RpoGate,
    /// The replication mode the new writer starts in: with
    /// [`Synchronous::On`] it starts asynchronous (no standby required yet:
    /// `synchronous_standby_names = ''`); with [`Synchronous::Strict`] it
    /// requires any one standby (`'*'`) so it never acknowledges a commit
    /// no standby has; with [`Synchronous::Off`] the setting is left as it is.
    /// The controller then names its synchronous standby.
    pub synchronous: Synchronous,
}

/// An instruction from the controller. Execute it, then report
/// [`Input::ActionDone`](crate::Input::ActionDone) or
/// [`Input::ActionFailed`](crate::Input::ActionFailed) with its id
/// (`Notify` needs no report).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Action {
    /// Route traffic according to this complete plan.
    SetWeights {
        /// Report completion with this id.
        id: ActionId,
        /// The plan.
        plan: WeightPlan,
    },
    /// Make `node` provably stop accepting writes, recording `epoch`.
    Fence {
        /// Report completion with this id.
        id: ActionId,
        /// The node to fence (the old primary).
        node: NodeId,
        /// The epoch of the promotion that follows.
        epoch: Epoch,
    },
    /// Promote a replica to primary.
    Promote {
        /// Report completion with this id.
        id: ActionId,
        /// What to promote and what to check first.
        request: PromoteRequest,
    },
    /// Lift the fence placed on `node` at `epoch` (it is still the writer at
    /// that epoch: the promotion that fenced it did not happen).
    Unfence {
        /// Report completion with this id.
        id: ActionId,
        /// The node.
        node: NodeId,
        /// The epoch of the fence to lift.
        epoch: Epoch,
    },
    /// Compare-and-set the writer record in the coordination store, under
    /// leadership `token` (`None` for a controller without a coordinator,
    /// whose in-process store needs no token). Sent before the promotion it
    /// announces, so the new writer's guard finds its node named and the old
    /// writer's guard fences its node.
    SetWriter {
        /// Report completion with this id.
        id: ActionId,
        /// The leadership term it is written under.
        token: Option<FencingToken>,
        /// What the store must hold for the write to succeed.
        expected: Option<WriterRecord>,
        /// The record to write.
        new: WriterRecord,
        /// When the old writer was proven stopped by its guard lease
        /// expiring: that node, whose guard lease must still be absent for
        /// the write to succeed — checked in the same compare-and-set, or a
        /// guard renewing in between could unfence it as the writer.
        guard_absent: Option<NodeId>,
    },
    /// Make the writer `node` (at `epoch`) require exactly `standbys` for
    /// every commit it acknowledges (`synchronous_standby_names =
    /// 'FIRST n (…)'` naming them all; empty: `''`, asynchronous). Report
    /// done only once the setting is in effect and, for each standby, it is
    /// a streaming synchronous standby that has flushed everything the
    /// writer had flushed when the setting took effect: from then on every
    /// acknowledged commit is on every standby.
    SetSynchronous {
        /// Report completion with this id.
        id: ActionId,
        /// The writer.
        node: NodeId,
        /// The writer's epoch: an adapter refuses a node that carries
        /// another.
        epoch: Epoch,
        /// The standbys to require.
        standbys: SyncSet,
        /// The leadership term it is sent under (`None` without a
        /// coordinator). The node keeps the newest token that configured it
        /// and refuses an older one: a deposed leader's late "require
        /// nothing" must never land after its successor made the writer
        /// require a standby and recorded it — the successor would then
        /// promote that standby on a proof that no longer holds.
        token: Option<FencingToken>,
    },
    /// Something happened that an operator should know; log it, count it.
    Notify(Event),
}

impl Action {
    /// The id to report back, or `None` for notifications.
    pub fn id(&self) -> Option<ActionId> {
        match self {
            Action::SetWeights { id, .. }
            | Action::Fence { id, .. }
            | Action::Promote { id, .. }
            | Action::Unfence { id, .. }
            | Action::SetWriter { id, .. }
            | Action::SetSynchronous { id, .. } => Some(*id),
            Action::Notify(_) => None,
        }
    }
}
