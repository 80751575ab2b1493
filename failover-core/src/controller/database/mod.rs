//! Database decisions, one concept per file:
//!
//! - [`writer`]: who the writer is — node observations, a promotion made
//!   elsewhere (adopted, never repeated), stale primaries, the coordination
//!   store's writer record and the node guards' leases.
//! - [`promotion`]: a promotion's steps — proof that the old writer stopped,
//!   claiming the writer record, a switchover's catch-up, the promotion —
//!   each with its deadline, and abort, retry and unfence.
//! - [`drain`]: a switchover's drain of the old writer before its fence,
//!   and lifting a drain that no switchover follows any more.
//! - [`rpo`]: which replica to promote and whether its lag is within the
//!   promise.
//!
//! The rule that keeps one writer: a replica is promoted only once the old
//! writer is **proven** stopped — its fence confirmed by the node, or its
//! guard lease expired at the store — never because it is unreachable. An
//! operator's `ForcePromote` is the only way around it, and says so.

mod drain;
mod promotion;
mod rpo;
mod sync;
mod writer;

use std::time::{Duration, Instant};

use crate::{
    ActionId, Epoch, Lsn, NodeId, NodeObservation, PromotionPhase, RpoGate, SyncSet, Topology,
    WriterRecord,
};

/// One step of changing the writer's synchronous standbys (see [`sync`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SyncStep {
    /// The writer's `synchronous_standby_names`.
    Configure,
    /// The writer record's `sync`.
    Record,
}

/// The synchronous step in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct SyncOp {
    pub(super) id: ActionId,
    pub(super) step: SyncStep,
    pub(super) standbys: SyncSet,
}

/// What a node guard's lease is known to be.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) enum GuardLease {
    /// Never reported (no guards, or not yet seen).
    #[default]
    Unknown,
    /// Held at the store.
    Held,
    /// Reported absent without ever having been seen held (a store joined
    /// while the key was missing, or a node that runs no guard): proves
    /// nothing.
    Absent,
    /// Seen held, then expired or released at the store: the node's guard
    /// fenced it, or guard and node are down.
    Expired,
}

/// Why a fence was sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum FencePurpose {
    /// The old writer, ahead of a promotion.
    Promotion,
    /// A node that claims to be primary but is not the writer.
    Stale,
}

/// A fence in flight. Every fence the controller sends is tracked here, in
/// its node's track, and nowhere else.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct FenceInFlight {
    pub(super) id: ActionId,
    pub(super) epoch: Epoch,
    pub(super) purpose: FencePurpose,
}

#[derive(Clone, Copy, Debug, Default)]
pub(super) struct NodeTrack {
    pub(super) last: Option<NodeObservation>,
    /// When `last` was observed (the observation's start).
    pub(super) seen_at: Option<Instant>,
    pub(super) fence: Option<FenceInFlight>,
    /// WAL bytes it was behind the writer when last seen while the writer
    /// was reachable: once the writer is gone, the lag cannot be smaller.
    pub(super) lag: Option<u64>,
    pub(super) guard: GuardLease,
    /// Observations in a row that could not reach it.
    pub(super) misses: u32,
    /// When the first of those `misses` started.
    pub(super) first_miss: Option<Instant>,
    /// The timeline of its last observation that reached it.
    pub(super) timeline: Option<u32>,
    /// A replica's last observation that reached it: when it started, the
    /// timeline it receives, and how long before that its WAL receiver last
    /// heard from upstream. Kept through a failed observation (a loaded
    /// controller's timeout says nothing about the stream); `None` once it
    /// is seen as a primary.
    pub(super) stream: Option<(Instant, u32, Option<std::time::Duration>)>,
    /// The writer only: a replica whose WAL stream heard from it after its
    /// misses began (see `writer::writer_witness`). While one does, the
    /// writer is not down, however many observations miss.
    pub(super) vouched: Option<NodeId>,
    /// A required standby the writer's commits waited on for `fall` ×
    /// `interval`: the writer's position then. It is not required again
    /// until it has received that far (see `sync::note_sync_stall`).
    pub(super) stalled: Option<Lsn>,
}

/// What a promotion is for; it decides the gate and what a failed fence means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Intent {
    /// The writer's region or database is lost: automatic, RPO-gated, needs proof.
    Failover,
    /// Planned, zero-loss: fence, wait for the target to replay everything.
    Switchover,
    /// An operator forced it: no RPO gate, no proof required.
    Forced,
}

/// One promotion attempt's fixed parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Attempt {
    /// The writer being replaced (`None`: no writer known).
    pub(super) old: Option<NodeId>,
    pub(super) candidate: NodeId,
    /// The epoch the promotion will carry: one above the highest promotion
    /// epoch known. Spent only when the promotion happens.
    pub(super) epoch: Epoch,
    pub(super) intent: Intent,
    pub(super) gate: RpoGate,
    /// Lag when the attempt started, when known.
    pub(super) lag_bytes: Option<u64>,
    /// How the old writer was proven stopped, once it was.
    pub(super) proof: Option<crate::StopProof>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Phase {
    Idle,
    /// A switchover marks the old writer draining and then waits
    /// `policy.writer_drain` (`marked`: since the store confirmed the mark)
    /// before fencing it, so load balancers stop sending it new connections
    /// first.
    Draining {
        attempt: Attempt,
        marked: Option<Instant>,
    },
    /// Waiting for proof that `attempt.old` stopped.
    Fencing {
        attempt: Attempt,
        started: Instant,
    },
    /// A switchover waits for its target to replay the old writer's final WAL.
    CatchingUp {
        attempt: Attempt,
        lsn: Lsn,
        reported: bool,
        /// Whether `lsn` is the fenced primary's final position: from the
        /// fence's own report, or from an observation started after the
        /// fence completed. Until then `lsn` may be stale, and promoting at
        /// it could lose what the old primary committed since.
        final_known: bool,
        /// When the fence was reported done.
        fenced_at: Instant,
    },
    /// The writer record is being written.
    Claiming {
        attempt: Attempt,
        id: ActionId,
    },
    /// The promotion was sent.
    Promoting {
        attempt: Attempt,
        id: ActionId,
    },
    /// The best candidate is beyond `max_rpo`.
    Refused {
        node: NodeId,
    },
    /// No proof that the old writer stopped arrived in time.
    Unproven {
        old: NodeId,
        candidate: NodeId,
    },
    /// Too many failed attempts.
    NeedsOperator {
        writer: NodeId,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Reported {
    NoCandidate,
    Refused(NodeId),
}

/// The controller's database state.
#[derive(Clone, Debug)]
pub(super) struct Database {
    pub(super) writer: Option<NodeId>,
    /// Epoch the writer was promoted at (0 for the configured primary).
    pub(super) writer_epoch: Epoch,
    /// Highest promotion epoch known (recorded, seen, or done by us). A
    /// fence or a failed attempt never raises it.
    pub(super) epoch: Epoch,
    pub(super) nodes: Vec<NodeTrack>,
    /// Last WAL position seen on the writer, and when.
    pub(super) primary_lsn: Option<(Lsn, Instant)>,
    pub(super) phase: Phase,
    pub(super) reported: Option<Reported>,
    /// Failed promotion attempts in a row.
    pub(super) attempts: u32,
    /// The writer record as the coordination store last reported it.
    pub(super) record: Option<WriterRecord>,
    /// A `Promote` whose outcome is unknown (timed out, aborted, lost): the
    /// node may have become primary at this epoch. Never fenced as stale for
    /// it; the same promotion is re-sent (it is idempotent) to finish it.
    pub(super) uncertain: Option<Attempt>,
    /// The writer, fenced by an attempt that did not finish: unfenced when it
    /// is still the writer and its region serves.
    pub(super) fenced_writer: Option<(NodeId, Epoch)>,
    /// When `fenced_writer`'s fence was confirmed: the writer seen as an
    /// unfenced primary in an observation begun after that lifted it.
    pub(super) fenced_writer_at: Option<Instant>,
    /// The old writer of the attempt in progress, and when it was proven
    /// stopped: seeing it as an unfenced primary after that voids the proof.
    pub(super) proven_at: Option<(NodeId, Instant)>,
    /// An unfence in flight.
    pub(super) unfence: Option<ActionId>,
    /// The first write of the writer record, in flight.
    pub(super) seeding: Option<ActionId>,
    /// The synchronous standbys the writer's record names (as last
    /// confirmed by the store or by our own write).
    pub(super) writer_sync: SyncSet,
    /// What the writer was last configured to require (`None`: unknown).
    pub(super) sync_configured: Option<SyncSet>,
    /// When the writer's configuration last changed (a configure step done,
    /// or failed and put back): its commits can have waited for what it
    /// requires now only since then.
    pub(super) sync_configured_at: Option<Instant>,
    /// The synchronous step in flight.
    pub(super) sync_op: Option<SyncOp>,
    /// No synchronous step before this (after a failed one).
    pub(super) sync_retry_at: Option<Instant>,
    /// Strict mode: the lost standby the writer still requires, once said.
    pub(super) sync_blocked: Option<NodeId>,
    /// Whether the writer's record says it is draining for a switchover
    /// (as last confirmed by the store or by our own write).
    pub(super) writer_draining: bool,
    /// The write of a switchover's drain mark, in flight.
    pub(super) marking: Option<ActionId>,
    /// A write of the writer record that lifts a drain, in flight.
    pub(super) undrain: Option<ActionId>,
    /// The last promotion this controller saw complete (node and epoch):
    /// an observation of that node as a replica taken before it completed
    /// must not start it again.
    pub(super) promoted: Option<(NodeId, Epoch)>,
}

impl Database {
    pub(super) fn new(topology: &Topology) -> Self {
        Database {
            writer: topology.initial_primary(),
            writer_epoch: Epoch(0),
            epoch: Epoch(0),
            nodes: vec![NodeTrack::default(); topology.nodes().len()],
            primary_lsn: None,
            phase: Phase::Idle,
            reported: None,
            attempts: 0,
            record: None,
            uncertain: None,
            fenced_writer: None,
            fenced_writer_at: None,
            proven_at: None,
            unfence: None,
            seeding: None,
            writer_sync: SyncSet::EMPTY,
            sync_configured: None,
            sync_configured_at: None,
            sync_op: None,
            sync_retry_at: None,
            sync_blocked: None,
            writer_draining: false,
            marking: None,
            undrain: None,
            promoted: None,
        }
    }

    pub(super) fn phase(&self) -> PromotionPhase {
        match self.phase {
            Phase::Idle => PromotionPhase::Idle,
            Phase::Draining { attempt, .. } => PromotionPhase::Draining {
                node: attempt.old.unwrap_or(attempt.candidate),
                candidate: attempt.candidate,
            },
            Phase::Fencing { attempt, .. } => match attempt.old {
                Some(old) => PromotionPhase::Fencing {
                    node: old,
                    candidate: attempt.candidate,
                },
                None => PromotionPhase::Claiming {
                    node: attempt.candidate,
                },
            },
            Phase::CatchingUp { attempt, .. } => PromotionPhase::CatchingUp {
                node: attempt.candidate,
            },
            Phase::Claiming { attempt, .. } => PromotionPhase::Claiming {
                node: attempt.candidate,
            },
            Phase::Promoting { attempt, .. } => PromotionPhase::Promoting {
                node: attempt.candidate,
            },
            Phase::Refused { node } => PromotionPhase::Refused { node },
            Phase::Unproven { old, candidate } => PromotionPhase::Unproven {
                node: old,
                candidate,
            },
            Phase::NeedsOperator { writer } => PromotionPhase::NeedsOperator { writer },
        }
    }

    /// A promotion is under way (something was or will be sent for it).
    pub(super) fn busy(&self) -> bool {
        matches!(
            self.phase,
            Phase::Draining { .. }
                | Phase::Fencing { .. }
                | Phase::CatchingUp { .. }
                | Phase::Claiming { .. }
                | Phase::Promoting { .. }
        )
    }

    /// The attempt in progress, if any.
    pub(super) fn attempt(&self) -> Option<Attempt> {
        match self.phase {
            Phase::Draining { attempt, .. }
            | Phase::Fencing { attempt, .. }
            | Phase::CatchingUp { attempt, .. }
            | Phase::Claiming { attempt, .. }
            | Phase::Promoting { attempt, .. } => Some(attempt),
            _ => None,
        }
    }

    /// The WAL a replica has received (or replayed), if it is a replica.
    pub(super) fn replica_lsn(&self, node: NodeId) -> Option<Lsn> {
        match self.nodes.get(node.index())?.last? {
            NodeObservation::Replica {
                receive_lsn,
                replay_lsn,
                ..
            } => Some(receive_lsn.or(replay_lsn).unwrap_or_default()),
            _ => None,
        }
    }

    /// The node whose fence has this id.
    pub(super) fn fence_by_id(&self, id: ActionId) -> Option<(NodeId, FenceInFlight)> {
        self.nodes.iter().enumerate().find_map(|(i, t)| {
            t.fence
                .filter(|f| f.id == id)
                .map(|f| (NodeId(i as u32), f))
        })
    }

    /// The epoch for a promotion of `candidate`: one above the highest
    /// promotion epoch known — or the epoch of an unfinished promotion of
    /// the same node (it is idempotent), never that of another node's.
    pub(super) fn epoch_for(&self, candidate: NodeId) -> Epoch {
        match self.uncertain {
            Some(a) if a.candidate == candidate => a.epoch,
            Some(a) => self.epoch.max(a.epoch).next(),
            None => self.epoch.next(),
        }
    }

    /// The writer record that matches the controller's belief.
    pub(super) fn believed_record(&self) -> Option<WriterRecord> {
        self.writer.map(|node| WriterRecord {
            node,
            epoch: self.writer_epoch,
            sync: self.writer_sync,
            draining: self.writer_draining,
        })
    }
}

/// Retry delay after `attempts` failed attempts: one interval, doubling,
/// at most eight.
pub(super) fn retry_delay(interval: Duration, attempts: u32) -> Duration {
    interval.saturating_mul(1u32 << attempts.saturating_sub(1).min(3))
}
