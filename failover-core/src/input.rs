//! What the driver tells the controller.

use crate::{
    ActionId, CoordinationEvent, Lsn, NodeId, PortErrorKind, ProbeResult, RegionId,
    ReplicationStatus, TrafficReport,
};

/// One input to [`Controller::handle`](crate::Controller::handle).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Input {
    /// A probe finished.
    Probe(ProbeResult),
    /// A database node was observed.
    Replication(ReplicationStatus),
    /// An action completed successfully.
    ActionDone {
        /// The action's id.
        id: ActionId,
    },
    /// A fence completed and the adapter knows the node's final WAL flush
    /// position (every write it ever acknowledged is at or before it).
    /// Report fences this way when possible: a planned switchover then
    /// promotes as soon as the target has replayed exactly that much, and
    /// otherwise waits for an observation of the fenced node started after
    /// the fence completed.
    FenceDone {
        /// The fence action's id.
        id: ActionId,
        /// `pg_current_wal_flush_lsn()` (or equivalent) after the fence.
        final_lsn: Lsn,
    },
    /// An action failed for good (the driver has stopped retrying it).
    ActionFailed {
        /// The action's id.
        id: ActionId,
        /// Why.
        failure: ActionFailure,
    },
    /// An operator command.
    Command(Command),
    /// A change in the coordination store: leadership, the writer record, a
    /// node guard's lease, a peer's verdict, operator intent.
    Coordination(CoordinationEvent),
    /// What the service's own users saw of one region's requests (passive
    /// health, see [`PassivePolicy`](crate::PassivePolicy)); ignored while
    /// `policy.passive` is off.
    Traffic(TrafficReport),
}

/// Why an action failed, as reported by the driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActionFailure {
    /// The adapter's error kind.
    pub kind: PortErrorKind,
    /// The adapter's message, for the event log.
    pub message: String,
}

/// An operator's instruction. Commands are obeyed even while automation is paused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Command {
    /// Take a region out of rotation regardless of its health.
    Drain(RegionId),
    /// Return a drained region to health-driven routing (through the ramp).
    Undrain(RegionId),
    /// Planned, zero-loss move of the writer to `to`: fence the primary, wait
    /// for `to` to replay everything, promote it.
    Switchover {
        /// The replica that becomes primary.
        to: NodeId,
    },
    /// Promote `node` now, whatever its lag and **without proof that the old
    /// writer stopped**: the old writer is still fenced first, but if the
    /// fence fails the promotion goes ahead. This accepts the split-brain
    /// risk: use it only after confirming the old writer is powered off or
    /// cut off from every client.
    ForcePromote {
        /// The replica to promote.
        node: NodeId,
    },
    /// Stop automatic decisions: health is still tracked and reported, but no
    /// weights change and nothing is promoted except by command. An automatic
    /// promotion that has not reached the database yet is abandoned (as by
    /// [`Command::Abort`]), and stale primaries are not fenced.
    Pause,
    /// Abandon the promotion or switchover in progress, whatever its step:
    /// nothing further is sent for it, and an old writer it fenced is
    /// unfenced when it is still the writer. A `Promote` already sent may
    /// still take effect; the controller then adopts the promoted node from
    /// its next observation, never promoting a second one for that epoch.
    Abort,
    /// Resume automatic decisions, acting at once on the current health.
    Resume,
}
