//! What the driver tells the controller.

use crate::{ActionId, Lsn, NodeId, PortErrorKind, ProbeResult, RegionId, ReplicationStatus};

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
    /// Promote `node` now, whatever its lag (the old primary is still fenced first
    /// when it is reachable).
    ForcePromote {
        /// The replica to promote.
        node: NodeId,
    },
    /// Stop automatic decisions: health is still tracked and reported, but no
    /// weights change and nothing is promoted except by command.
    Pause,
    /// Resume automatic decisions, acting at once on the current health.
    Resume,
}
