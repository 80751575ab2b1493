//! Database decisions: who the writer is, which replica to promote, the RPO
//! gate, fencing before promotion, epochs, planned switchover and adopting a
//! promotion made before a restart.

use std::time::Instant;

use super::timers::{Timer, TimerReason};
use super::{later, Controller};
use crate::{
    Action, ActionFailure, ActionId, ActionKind, Epoch, EventKind, Health, Lsn, NodeId,
    NodeObservation, PortErrorKind, PromoteRequest, PromotionPhase, ReplicationStatus, RpoGate,
    Topology,
};

#[derive(Clone, Copy, Debug, Default)]
struct NodeTrack {
    last: Option<NodeObservation>,
    /// A fence of this node (as a stale primary) is in flight.
    fence: Option<ActionId>,
    /// WAL bytes it was behind the writer when last seen while the writer
    /// was reachable: once the writer is gone, the lag cannot be smaller.
    lag: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Phase {
    Idle,
    Fencing {
        id: ActionId,
        old: NodeId,
        candidate: NodeId,
        epoch: Epoch,
        gate: RpoGate,
        lag_bytes: u64,
        switchover: bool,
    },
    CatchingUp {
        node: NodeId,
        epoch: Epoch,
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
    Promoting {
        id: ActionId,
        node: NodeId,
        epoch: Epoch,
    },
    Refused {
        node: NodeId,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reported {
    NoCandidate,
    Refused(NodeId),
}

/// The controller's database state.
#[derive(Clone, Debug)]
pub(super) struct Database {
    pub(super) writer: Option<NodeId>,
    /// Epoch the writer was promoted at (0 for the configured primary).
    writer_epoch: Epoch,
    /// Highest epoch used or seen: the next promotion takes a greater one.
    pub(super) epoch: Epoch,
    nodes: Vec<NodeTrack>,
    /// Last WAL position seen on the writer.
    primary_lsn: Option<Lsn>,
    phase: Phase,
    reported: Option<Reported>,
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
        }
    }

    pub(super) fn phase(&self) -> PromotionPhase {
        match self.phase {
            Phase::Idle => PromotionPhase::Idle,
            Phase::Fencing { old, candidate, .. } => PromotionPhase::Fencing {
                node: old,
                candidate,
            },
            Phase::CatchingUp { node, .. } => PromotionPhase::CatchingUp { node },
            Phase::Promoting { node, .. } => PromotionPhase::Promoting { node },
            Phase::Refused { node } => PromotionPhase::Refused { node },
        }
    }

    fn busy(&self) -> bool {
        matches!(
            self.phase,
            Phase::Fencing { .. } | Phase::CatchingUp { .. } | Phase::Promoting { .. }
        )
    }

    /// The WAL a replica has received (or replayed), if it is a replica.
    fn replica_lsn(&self, node: NodeId) -> Option<Lsn> {
        match self.nodes.get(node.index())?.last? {
            NodeObservation::Replica {
                receive_lsn,
                replay_lsn,
                ..
            } => Some(receive_lsn.or(replay_lsn).unwrap_or_default()),
            _ => None,
        }
    }
}

impl Controller {
    pub(super) fn on_replication(&mut self, now: Instant, status: ReplicationStatus) {
        let node = status.node;
        let Some(track) = self.db.nodes.get_mut(node.index()) else {
            return;
        };
        track.last = Some(status.observation);
        match status.observation {
            NodeObservation::Primary {
                current_lsn,
                epoch,
                fenced,
                ..
            } => self.on_primary_seen(now, status.at, node, current_lsn, epoch, fenced),
            NodeObservation::Replica { .. } => {
                self.db.nodes[node.index()].fence = None;
                let writer_reachable = self.db.writer.is_some_and(|w| {
                    matches!(
                        self.db.nodes[w.index()].last,
                        Some(NodeObservation::Primary { fenced: false, .. })
                    )
                });
                if let (true, Some(primary), Some(lsn)) = (
                    writer_reachable,
                    self.db.primary_lsn,
                    self.db.replica_lsn(node),
                ) {
                    self.db.nodes[node.index()].lag = Some(primary.bytes_after(lsn));
                }
                if let Phase::CatchingUp { node: target, .. } = self.db.phase {
                    if target == node {
                        self.check_catch_up(now);
                    }
                } else if self.writer_region_down() {
                    self.evaluate_writer(now);
                }
            }
            NodeObservation::Unreachable => {}
        }
    }

    fn on_primary_seen(
        &mut self,
        now: Instant,
        observed_at: Instant,
        node: NodeId,
        current_lsn: Lsn,
        epoch: Option<Epoch>,
        fenced: bool,
    ) {
        if self.db.writer == Some(node) {
            self.db.primary_lsn = Some(
                self.db
                    .primary_lsn
                    .map_or(current_lsn, |l| l.max(current_lsn)),
            );
            if let Phase::CatchingUp {
                lsn,
                final_known,
                fenced_at,
                ..
            } = &mut self.db.phase
            {
                *lsn = (*lsn).max(current_lsn);
                // `at` is when the observation started: one that started
                // after the fence completed sees the final position.
                if fenced && observed_at >= *fenced_at {
                    *final_known = true;
                }
            }
            if matches!(self.db.phase, Phase::CatchingUp { .. }) {
                self.check_catch_up(now);
            }
            return;
        }
        if let Some(e) =
            epoch.filter(|e| !fenced && *e > self.db.writer_epoch && *e >= self.db.epoch)
        {
            // Promoted before our restart, or by our own in-flight promotion:
            // adopt it, never promote a second node for it.
            let from = self.db.writer;
            self.db.writer = Some(node);
            self.db.writer_epoch = e;
            self.db.epoch = e;
            self.db.primary_lsn = Some(current_lsn);
            self.db.phase = Phase::Idle;
            self.db.reported = None;
            self.notify(
                now,
                EventKind::WriterMoved {
                    from,
                    to: node,
                    epoch: e,
                },
            );
            return;
        }
        if fenced || self.db.nodes[node.index()].fence.is_some() {
            return;
        }
        if matches!(self.db.phase, Phase::Promoting { node: n, .. } if n == node) {
            return;
        }
        let current = self.db.epoch;
        let id = self.next_id();
        self.db.nodes[node.index()].fence = Some(id);
        self.notify(
            now,
            EventKind::StalePrimary {
                node,
                epoch,
                current,
            },
        );
        self.actions.push_back(Action::Fence {
            id,
            node,
            epoch: current,
        });
    }

    fn writer_region_down(&self) -> bool {
        self.db.writer.is_some_and(|w| {
            self.regions[self.topology.node_region(w).index()].routed == Health::Down
        })
    }

    /// Starts an automatic promotion when the writer's region is down.
    pub(super) fn evaluate_writer(&mut self, now: Instant) {
        if self.paused || !self.policy.auto_promote || self.db.busy() {
            return;
        }
        let Some(writer) = self.db.writer else { return };
        if !self.writer_region_down() {
            if matches!(self.db.phase, Phase::Refused { .. }) {
                self.db.phase = Phase::Idle;
            }
            self.db.reported = None;
            return;
        }
        let Some((candidate, lsn)) = self.best_candidate(writer) else {
            if self.db.reported != Some(Reported::NoCandidate) {
                self.db.reported = Some(Reported::NoCandidate);
                self.notify(now, EventKind::NoPromotionCandidate { writer });
            }
            return;
        };
        // The lag is the larger of: behind the writer's last seen position, and
        // behind the writer when both were last seen (the writer kept writing
        // after its last observation). Unknown primary position: the best
        // replica is the reference (the adapter still gets `reference: None`).
        let reference = self.db.primary_lsn;
        let seen_lag = self.db.nodes[candidate.index()].lag.unwrap_or(0);
        let lag_bytes = reference.map_or(0, |p| p.bytes_after(lsn)).max(seen_lag);
        let delay = match self.db.nodes[candidate.index()].last {
            Some(NodeObservation::Replica { replay_delay, .. }) => replay_delay,
            _ => None,
        };
        let limit = self.policy.max_rpo.unwrap_or_default();
        if limit.admits(lag_bytes, delay) {
            let gate = RpoGate::Within {
                max: limit,
                reference,
            };
            self.start_promotion(now, candidate, gate, lag_bytes, false);
        } else {
            self.db.phase = Phase::Refused { node: candidate };
            if self.db.reported != Some(Reported::Refused(candidate)) {
                self.db.reported = Some(Reported::Refused(candidate));
                self.notify(
                    now,
                    EventKind::PromotionRefused {
                        node: candidate,
                        lag_bytes,
                        delay,
                        limit,
                    },
                );
            }
        }
    }

    /// The replica in a serving region with the most WAL, ties by priority.
    fn best_candidate(&self, writer: NodeId) -> Option<(NodeId, Lsn)> {
        let writer_region = self.topology.node_region(writer);
        self.topology
            .node_ids()
            .filter(|n| *n != writer && self.db.nodes[n.index()].fence.is_none())
            .filter(|n| {
                let r = self.topology.node_region(*n);
                let region = &self.regions[r.index()];
                r != writer_region && region.routed == Health::Up && !region.drained
            })
            .filter_map(|n| self.db.replica_lsn(n).map(|lsn| (n, lsn)))
            .max_by_key(|(n, lsn)| (*lsn, self.topology.node(*n).priority, u32::MAX - n.0))
    }

    fn start_promotion(
        &mut self,
        now: Instant,
        candidate: NodeId,
        gate: RpoGate,
        lag_bytes: u64,
        switchover: bool,
    ) {
        let epoch = self.db.epoch.next();
        self.db.epoch = epoch;
        self.db.reported = None;
        match self.db.writer {
            Some(old) if old != candidate => {
                let id = self.next_id();
                self.db.phase = Phase::Fencing {
                    id,
                    old,
                    candidate,
                    epoch,
                    gate,
                    lag_bytes,
                    switchover,
                };
                self.notify(now, EventKind::FencingRequested { node: old, epoch });
                self.actions.push_back(Action::Fence {
                    id,
                    node: old,
                    epoch,
                });
            }
            _ => self.issue_promote(now, candidate, epoch, gate, lag_bytes),
        }
    }

    fn issue_promote(
        &mut self,
        now: Instant,
        node: NodeId,
        epoch: Epoch,
        gate: RpoGate,
        lag_bytes: u64,
    ) {
        let id = self.next_id();
        self.db.phase = Phase::Promoting { id, node, epoch };
        self.notify(
            now,
            EventKind::PromotionRequested {
                node,
                epoch,
                lag_bytes,
                forced: gate == RpoGate::Forced,
            },
        );
        self.actions.push_back(Action::Promote {
            id,
            request: PromoteRequest { node, epoch, gate },
        });
    }

    fn check_catch_up(&mut self, now: Instant) {
        let Phase::CatchingUp {
            node,
            epoch,
            lsn,
            reported,
            final_known,
            fenced_at,
        } = self.db.phase
        else {
            return;
        };
        let replayed = match self.db.nodes[node.index()].last {
            Some(NodeObservation::Replica { replay_lsn, .. }) => replay_lsn.unwrap_or_default(),
            _ => Lsn(0),
        };
        if final_known && replayed >= lsn {
            self.issue_promote(now, node, epoch, RpoGate::CaughtUp { lsn }, 0);
        } else if !reported {
            self.db.phase = Phase::CatchingUp {
                node,
                epoch,
                lsn,
                reported: true,
                final_known,
                fenced_at,
            };
            self.notify(
                now,
                EventKind::SwitchoverWaiting {
                    node,
                    lag_bytes: lsn.bytes_after(replayed),
                },
            );
        }
    }

    /// A fence or promotion completed. `final_lsn` is a fenced node's final
    /// WAL flush position, when the adapter reported it.
    pub(super) fn on_database_done(&mut self, now: Instant, id: ActionId, final_lsn: Option<Lsn>) {
        match self.db.phase {
            Phase::Fencing {
                id: fence,
                candidate,
                epoch,
                gate,
                lag_bytes,
                switchover,
                ..
            } if fence == id => {
                if switchover {
                    let last_seen = self.db.primary_lsn.unwrap_or_default();
                    self.db.phase = Phase::CatchingUp {
                        node: candidate,
                        epoch,
                        lsn: final_lsn.map_or(last_seen, |f| f.max(last_seen)),
                        reported: false,
                        final_known: final_lsn.is_some(),
                        fenced_at: now,
                    };
                    self.check_catch_up(now);
                } else {
                    self.issue_promote(now, candidate, epoch, gate, lag_bytes);
                }
            }
            Phase::Promoting {
                id: promote,
                node,
                epoch,
            } if promote == id => {
                self.db.writer = Some(node);
                self.db.writer_epoch = epoch;
                self.db.primary_lsn = None;
                self.db.phase = Phase::Idle;
                self.notify(now, EventKind::Promoted { node, epoch });
            }
            _ => {
                if let Some(track) = self.db.nodes.iter_mut().find(|t| t.fence == Some(id)) {
                    track.fence = None;
                }
            }
        }
    }

    pub(super) fn on_database_failed(
        &mut self,
        now: Instant,
        id: ActionId,
        failure: ActionFailure,
    ) {
        let (action, proceed) = match self.db.phase {
            Phase::Fencing {
                id: fence,
                candidate,
                epoch,
                gate,
                lag_bytes,
                switchover,
                ..
            } if fence == id => {
                // An unreachable old primary cannot be fenced now; the new,
                // greater epoch still makes it refuse writes when it returns.
                let unreachable = matches!(
                    failure.kind,
                    PortErrorKind::Timeout | PortErrorKind::Unavailable
                );
                let proceed =
                    (!switchover && unreachable).then_some((candidate, epoch, gate, lag_bytes));
                (ActionKind::Fence, proceed)
            }
            Phase::Promoting { id: promote, .. } if promote == id => (ActionKind::Promote, None),
            _ => {
                if let Some(track) = self.db.nodes.iter_mut().find(|t| t.fence == Some(id)) {
                    track.fence = None;
                    self.notify(
                        now,
                        EventKind::ActionFailed {
                            id,
                            action: ActionKind::Fence,
                            kind: failure.kind,
                            message: failure.message,
                            retry_in: None,
                        },
                    );
                }
                return;
            }
        };
        self.notify(
            now,
            EventKind::ActionFailed {
                id,
                action,
                kind: failure.kind,
                message: failure.message,
                retry_in: None,
            },
        );
        if let Some((candidate, epoch, gate, lag_bytes)) = proceed {
            self.issue_promote(now, candidate, epoch, gate, lag_bytes);
        } else {
            self.db.phase = Phase::Idle;
            self.timers.set(
                Timer::RetryDatabase,
                later(now, self.policy.interval),
                TimerReason::DatabaseFailed,
            );
        }
    }

    pub(super) fn switchover(&mut self, now: Instant, to: NodeId) {
        let refuse = if self.db.busy() {
            Some("a promotion is already in progress")
        } else if to.index() >= self.db.nodes.len() {
            Some("unknown node")
        } else if self.db.writer.is_none() {
            Some("no known writer to switch over from")
        } else if self.db.writer == Some(to) {
            Some("the target is already the writer")
        } else if self.db.replica_lsn(to).is_none() {
            Some("the target is not seen as a replica")
        } else if self.db.primary_lsn.is_none() {
            Some("the writer's WAL position is unknown: observe it first")
        } else {
            None
        };
        if let Some(reason) = refuse {
            self.notify(now, EventKind::CommandRefused { reason });
            return;
        }
        let gate = RpoGate::CaughtUp {
            lsn: self.db.primary_lsn.unwrap_or_default(),
        };
        self.start_promotion(now, to, gate, 0, true);
    }

    pub(super) fn force_promote(&mut self, now: Instant, node: NodeId) {
        let refuse = if self.db.busy() {
            Some("a promotion is already in progress")
        } else if node.index() >= self.db.nodes.len() {
            Some("unknown node")
        } else if self.db.writer == Some(node) {
            Some("the node is already the writer")
        } else if matches!(
            self.db.nodes[node.index()].last,
            Some(NodeObservation::Primary { .. })
        ) {
            Some("the node claims to be primary already (stale): it is never promoted")
        } else {
            None
        };
        if let Some(reason) = refuse {
            self.notify(now, EventKind::CommandRefused { reason });
            return;
        }
        let lag_bytes = match (self.db.primary_lsn, self.db.replica_lsn(node)) {
            (Some(p), Some(l)) => p.bytes_after(l),
            _ => 0,
        };
        self.start_promotion(now, node, RpoGate::Forced, lag_bytes, false);
    }
}
