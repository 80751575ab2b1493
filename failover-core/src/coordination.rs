//! What controllers and node guards share through the coordination store
//! (etcd, or the in-process store of the single-controller default).
//!
//! The store holds, and only it decides:
//! - the controllers' **leader lease**; its [`FencingToken`] (etcd: the
//!   leader key's create revision) grows with every new term and travels
//!   with every side effect, so a deposed leader's late writes are refused;
//! - the **writer record** ([`WriterRecord`]): which node takes writes at
//!   which epoch, changed only by compare-and-set under the leader's token;
//! - one **guard lease** per database node: the node's guard promises to
//!   fence its node before the lease can expire, so an expired lease proves
//!   the node stopped taking writes (or is dead);
//! - each controller's published [`Verdict`]s, under its own lease, so a dead
//!   controller's votes vanish with it;
//! - operator [`Intent`] (drains, pause), which survives restarts and leader
//!   changes.
//!
//! The driver feeds what the store reports to the controller as
//! [`CoordinationEvent`]s; the traits that implement it are
//! [`Coordinator`](crate::ports::Coordinator) (controllers) and
//! [`GuardLease`](crate::ports::GuardLease) (node guards).

use std::fmt;

use crate::{Epoch, Health, NodeId, RegionId, VantageId};

/// The fencing token of one leadership term. Strictly greater for every new
/// term, so the receiving side of a side effect can refuse a stale leader.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(transparent)]
pub struct FencingToken(pub u64);

impl fmt::Display for FencingToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "token {}", self.0)
    }
}

/// Which node takes writes, the fencing epoch it was promoted at, and the
/// standbys its `synchronous_standby_names` requires. The store's copy is
/// the truth: a guard unfences its node only when this record names the
/// node at the epoch the node itself has recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WriterRecord {
    /// The writer.
    pub node: NodeId,
    /// The epoch of its promotion (0 for the configured primary).
    pub epoch: Epoch,
    /// The standbys the writer requires for every commit it acknowledges
    /// (all of them: `FIRST n (…)` with n the set's size). A standby is in
    /// this set only after the writer was configured to require it and it
    /// caught up, and it leaves the set before the writer stops requiring
    /// it — so every commit the writer acknowledged is on every member, and
    /// a member may be promoted without waiting for the writer's guard
    /// lease. Empty: asynchronous replication (or `policy.synchronous` off).
    pub sync: SyncSet,
    /// A planned switchover is draining this writer: load balancers must
    /// stop sending it new connections (its guard's `/writer` answers 503),
    /// and it is fenced once `policy.writer_drain` has passed. It still
    /// takes writes meanwhile. Encoded only when true, so records written
    /// before the field existed read as not draining.
    pub draining: bool,
}

impl WriterRecord {
    /// A record with no synchronous standbys.
    pub const fn new(node: NodeId, epoch: Epoch) -> Self {
        WriterRecord {
            node,
            epoch,
            sync: SyncSet::EMPTY,
            draining: false,
        }
    }

    /// This record with `draining` set as given.
    pub const fn with_draining(self, draining: bool) -> Self {
        WriterRecord { draining, ..self }
    }
}

impl fmt::Display for WriterRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "writer {} at {}", self.node, self.epoch)?;
        if !self.sync.is_empty() {
            write!(f, ", synchronous {}", self.sync)?;
        }
        if self.draining {
            f.write_str(", draining for a switchover")?;
        }
        Ok(())
    }
}

/// A set of database nodes, by [`NodeId`] (at most 64 nodes: a bit each).
/// Used for the writer's synchronous standbys.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SyncSet(u64);

impl SyncSet {
    /// No node.
    pub const EMPTY: SyncSet = SyncSet(0);
    /// Nodes a set can hold: ids `0..CAPACITY`.
    pub const CAPACITY: u32 = 64;

    /// The set holding only `node` (empty if its id is beyond [`Self::CAPACITY`]).
    pub fn of(node: NodeId) -> Self {
        SyncSet::EMPTY.with(node)
    }
    /// This set plus `node` (unchanged if its id is beyond [`Self::CAPACITY`]).
    pub fn with(self, node: NodeId) -> Self {
        match 1u64.checked_shl(node.0) {
            Some(bit) => SyncSet(self.0 | bit),
            None => self,
        }
    }
    /// This set without `node`.
    pub fn without(self, node: NodeId) -> Self {
        match 1u64.checked_shl(node.0) {
            Some(bit) => SyncSet(self.0 & !bit),
            None => self,
        }
    }
    /// Whether `node` is in the set.
    pub fn contains(self, node: NodeId) -> bool {
        1u64.checked_shl(node.0)
            .is_some_and(|bit| self.0 & bit != 0)
    }
    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
    /// How many nodes it holds.
    pub const fn len(self) -> u32 {
        self.0.count_ones()
    }
    /// Its nodes, in id order.
    pub fn iter(self) -> impl Iterator<Item = NodeId> {
        (0..Self::CAPACITY)
            .filter(move |i| self.0 & (1u64 << i) != 0)
            .map(NodeId)
    }
}

impl FromIterator<NodeId> for SyncSet {
    fn from_iter<I: IntoIterator<Item = NodeId>>(iter: I) -> Self {
        iter.into_iter().fold(SyncSet::EMPTY, SyncSet::with)
    }
}

impl fmt::Display for SyncSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, n) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{n}")?;
        }
        f.write_str("}")
    }
}

/// The controller that leads, as the store shows it to the others: so a
/// follower can tell an operator where to send commands.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LeaderInfo {
    /// The leading controller's id (its configured name).
    pub controller: String,
    /// Its admin API's URL, when it advertised one.
    pub admin: Option<String>,
}

/// One controller's view of one region, published for the others: the
/// vantage quorum counts controllers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Verdict {
    /// The controller (its vantage) that published it.
    pub vantage: VantageId,
    /// The region judged.
    pub region: RegionId,
    /// What the vantage's fall/rise thresholds say.
    pub health: Health,
}

/// Operator intent kept in the store, so it survives restarts and leader
/// changes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Intent {
    /// Regions an operator drained.
    pub drained: Vec<RegionId>,
    /// Whether automation is paused.
    pub paused: bool,
}

/// A change in the coordination store, as the driver reports it to the
/// controller.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CoordinationEvent {
    /// This controller now leads with `token` (`Some`), or has lost or never
    /// had leadership (`None`). Leadership must be reported lost no later than
    /// the leader lease could expire at the store.
    Leadership(Option<FencingToken>),
    /// The writer record as the store holds it (`None`: never written).
    Writer(Option<WriterRecord>),
    /// A node's guard lease: `held` while the store has it, `false` once it
    /// expired or was released (then the node's guard has fenced it, or the
    /// guard and its node are down).
    GuardLease {
        /// The node whose guard holds the lease.
        node: NodeId,
        /// Whether the lease is held now.
        held: bool,
    },
    /// A peer controller's verdict on a region; `health: None` when the
    /// verdict was withdrawn or its publisher's lease expired.
    Verdict {
        /// The publishing controller's vantage.
        vantage: VantageId,
        /// The region judged.
        region: RegionId,
        /// The verdict, or `None` when it vanished.
        health: Option<Health>,
    },
    /// Operator intent as stored.
    Intent(Intent),
    /// The weight plan as the leader last stored it (with its
    /// [`token`](crate::WeightPlan::token)). Every controller's embedded DNS
    /// serves it, so DNS keeps answering with the current plan when any one
    /// region — the leader's included — is lost; a new leader continues its
    /// generations above it.
    Plan(crate::WeightPlan),
}
