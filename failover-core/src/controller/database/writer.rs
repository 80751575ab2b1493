//! Who the writer is: node observations, adopting a promotion made elsewhere,
//! fencing stale primaries, the store's writer record and guard leases.

use std::time::Instant;

use super::{FenceInFlight, FencePurpose, GuardLease, Phase};
use crate::controller::Controller;
use crate::{
    Action, Epoch, EventKind, Health, Lsn, NodeId, NodeObservation, ReplicationStatus, StopProof,
    WriterRecord,
};

impl Controller {
    pub(in crate::controller) fn on_replication(
        &mut self,
        now: Instant,
        status: ReplicationStatus,
    ) {
        let node = status.node;
        let lost_before = self.writer_lost();
        let Some(track) = self.db.nodes.get_mut(node.index()) else {
            return;
        };
        // An observation older than the one we hold says nothing new.
        if track.seen_at.is_some_and(|seen| status.at < seen) {
            return;
        }
        track.last = Some(status.observation);
        track.seen_at = Some(status.at);
        let is_writer = self.db.writer == Some(node);
        // The writer counts as down only while no replica vouches for it.
        let was_down = track.misses >= self.policy.fall && track.vouched.is_none();
        if matches!(status.observation, NodeObservation::Unreachable) {
            track.misses = track.misses.saturating_add(1);
            track.first_miss.get_or_insert(status.at);
            let misses = track.misses;
            if is_writer {
                self.refresh_vouch(now);
                if !lost_before && self.writer_lost() {
                    self.evaluate_writer(now);
                }
            } else if misses == self.policy.fall {
                self.notify(now, EventKind::DatabaseDown { node, misses });
            }
            if misses == self.policy.fall {
                self.evaluate_sync(now);
            }
            return;
        }
        track.misses = 0;
        track.first_miss = None;
        track.vouched = None;
        match status.observation {
            NodeObservation::Primary { timeline, .. } => {
                track.timeline = Some(timeline);
                track.stream = None;
            }
            NodeObservation::Replica {
                timeline,
                upstream_heard,
                receive_lsn,
                replay_lsn,
                ..
            } => {
                track.timeline = Some(timeline);
                track.stream = Some((status.at, timeline, upstream_heard));
                // A standby that stalled the writer's commits counts again
                // once it has received what they waited for.
                if track
                    .stalled
                    .is_some_and(|behind| receive_lsn.max(replay_lsn) >= Some(behind))
                {
                    track.stalled = None;
                }
            }
            NodeObservation::Unreachable => {}
        }
        if was_down {
            self.notify(now, EventKind::DatabaseUp { node });
        }
        if !is_writer {
            // A replica's stream may vouch for an unreachable writer, or stop.
            self.refresh_vouch(now);
        }
        match status.observation {
            NodeObservation::Primary {
                current_lsn,
                epoch,
                fenced,
                ..
            } => self.on_primary_seen(now, status.at, node, current_lsn, epoch, fenced),
            NodeObservation::Replica { .. } => {
                if self.db.nodes[node.index()]
                    .fence
                    .is_some_and(|f| f.purpose == FencePurpose::Stale)
                {
                    // A stale primary that rejoined as a replica needs no fence.
                    self.db.nodes[node.index()].fence = None;
                }
                let writer_reachable = self.db.writer.is_some_and(|w| {
                    matches!(
                        self.db.nodes[w.index()].last,
                        Some(NodeObservation::Primary { fenced: false, .. })
                    )
                });
                if let (true, Some((primary, _)), Some(lsn)) = (
                    writer_reachable,
                    self.db.primary_lsn,
                    self.db.replica_lsn(node),
                ) {
                    self.db.nodes[node.index()].lag = Some(primary.bytes_after(lsn));
                }
                if let Phase::CatchingUp { attempt, .. } = self.db.phase {
                    if attempt.candidate == node {
                        self.check_catch_up(now);
                    }
                } else {
                    if self.db.writer == Some(node) {
                        self.finish_claimed_promotion(now, None);
                    }
                    if self.writer_lost() {
                        self.evaluate_writer(now);
                    }
                }
            }
            NodeObservation::Unreachable => {}
        }
        if was_down && self.db.writer == Some(node) {
            // The writer's database answers again.
            self.evaluate_writer(now);
        }
        self.evaluate_sync(now);
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
        if fenced && self.may_restore_writer(node, epoch) {
            let epoch = epoch.unwrap_or_default();
            self.db.record = Some(WriterRecord::new(node, epoch));
            self.notify(now, EventKind::WriterRestored { node, epoch });
            self.adopt(now, node, epoch, current_lsn, observed_at);
            return;
        }
        if self.db.writer == Some(node) && !fenced {
            self.void_proof(now, node, observed_at);
        }
        if self.db.writer == Some(node) {
            let lsn = self
                .db
                .primary_lsn
                .map_or(current_lsn, |(l, _)| l.max(current_lsn));
            self.db.primary_lsn = Some((lsn, observed_at));
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
            if self.db.writer_draining && !self.db.busy() {
                self.undrain_writer(
                    now,
                    "no switchover is under way (a drain left before a restart)",
                );
            }
            return;
        }
        // Our own promotion, whose outcome we did not learn: finish it (the
        // promotion is idempotent for its epoch), never fence it.
        if let Some(attempt) = self.db.uncertain {
            if attempt.candidate == node {
                if epoch == Some(attempt.epoch) && !fenced {
                    self.db.uncertain = None;
                    self.adopt(now, node, attempt.epoch, current_lsn, observed_at);
                } else if !self.db.busy() && self.leading() {
                    self.promote(now, attempt);
                }
                return;
            }
        }
        // `epoch` is the node's own promotion epoch (a fence epoch never
        // counts): a greater one than we know is a promotion made before
        // our restart or by another controller. Adopt it, never promote a
        // second node for it.
        if let Some(e) =
            epoch.filter(|e| !fenced && *e > self.db.writer_epoch && *e >= self.db.epoch)
        {
            self.adopt(now, node, e, current_lsn, observed_at);
            return;
        }
        if self.db.attempt().is_some_and(|a| a.candidate == node) {
            if matches!(self.db.phase, Phase::Promoting { .. }) {
                // Our promotion taking effect.
                return;
            }
            // The candidate became a primary on its own before we promoted
            // it — fenced or not: it is no replica whose lag the gate could
            // check (and unfenced, it takes writes nobody decided). Abandon;
            // an unfenced one is fenced below as the stale primary it is.
            self.abandon(
                now,
                "the candidate reports itself a primary before its promotion",
            );
        }
        if fenced {
            self.note_fenced_old_writer(now, node, current_lsn, observed_at);
        }
        if fenced || self.db.nodes[node.index()].fence.is_some() {
            return;
        }
        // A stale primary. Fencing it is automation: not while paused, and
        // only by the leader.
        if self.paused || !self.leading() {
            return;
        }
        let current = self.db.epoch;
        let id = self.next_id();
        self.db.nodes[node.index()].fence = Some(FenceInFlight {
            id,
            epoch: current,
            purpose: FencePurpose::Stale,
        });
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

    /// The fenced primary `node` (not the writer) at `lsn`: when the writer
    /// is a claimed node still a replica on the same timeline, `node` is the
    /// old writer its claim deposed, fenced before the claim, so `lsn` is
    /// its final position: the reference the claimed node's promotion is
    /// gated against. A leader that took over after the claim never saw the
    /// old writer unfenced, and without this its RPO gate had no reference
    /// at all ("the writer's position was never seen") and refused forever.
    /// The greatest position seen is kept.
    fn note_fenced_old_writer(&mut self, now: Instant, node: NodeId, lsn: Lsn, at: Instant) {
        let Some(writer) = self.db.writer.filter(|w| *w != node) else {
            return;
        };
        if self.db.promoted == Some((writer, self.db.writer_epoch)) {
            return;
        }
        let claimed = &self.db.nodes[writer.index()];
        let same_timeline =
            claimed.timeline.is_some() && claimed.timeline == self.db.nodes[node.index()].timeline;
        if !same_timeline || !matches!(claimed.last, Some(NodeObservation::Replica { .. })) {
            return;
        }
        if self.db.primary_lsn.is_some_and(|(seen, _)| seen >= lsn) {
            return;
        }
        self.db.primary_lsn = Some((lsn, at));
        self.finish_claimed_promotion(now, Some(node));
    }

    /// Whether the fenced primary `node` (promoted at `epoch`, `None` for
    /// the configured primary) is the writer a restarted single controller
    /// lost track of, to be named again. A single controller keeps the
    /// writer record in memory (its lease server); a crash longer than the
    /// guards' deadline makes the writer's guard fence it, and the record is
    /// gone on restart, so nothing would ever name the writer again. It is
    /// named again only when nothing else can be the writer:
    /// - no record was written in this controller's life, the epoch floor it
    ///   resumed after is above `epoch` (the guard's fence recorded it), and
    ///   `epoch` is not below the writer it believes in;
    /// - nothing is in flight (no attempt, no fence, no uncertain promotion)
    ///   and automation is not paused;
    /// - every node answers, and every other node is a replica: a node
    ///   promoted since would be a primary at a greater epoch (adopted
    ///   instead), and one that cannot be seen might be one.
    ///
    /// The guard lifts its fence only for a record naming its node at the
    /// epoch it took writes at, and only if no reachable node recorded a
    /// promotion from the fence's epoch on.
    fn may_restore_writer(&self, node: NodeId, epoch: Option<Epoch>) -> bool {
        let epoch = epoch.unwrap_or_default();
        !self.coordinated
            && !self.paused
            && self.leading()
            && self.db.record.is_none()
            && self.db.epoch > epoch
            && epoch >= self.db.writer_epoch
            && !self.db.busy()
            && self.db.uncertain.is_none()
            && self.db.nodes.iter().all(|n| n.fence.is_none())
            && self
                .db
                .nodes
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != node.index())
                .all(|(_, n)| {
                    matches!(n.last, Some(NodeObservation::Replica { .. })) && n.misses == 0
                })
    }

    /// The old writer `node` answered as an unfenced primary in an
    /// observation begun at `observed_at`. If that is after it was proven
    /// stopped, the proof is void: its fence was lifted, or its guard broke
    /// its promise. An attempt that has not yet sent its promotion is
    /// abandoned (and retried, needing proof again); a sent one cannot be
    /// recalled, and the event says so.
    fn void_proof(&mut self, now: Instant, node: NodeId, observed_at: Instant) {
        // A fence confirmed earlier (kept as the proof for a retry) is
        // lifted, whether or not an attempt is under way.
        let fence_lifted = self.db.fenced_writer.is_some_and(|(n, _)| n == node)
            && self.db.fenced_writer_at.is_some_and(|at| observed_at >= at);
        if fence_lifted {
            self.db.fenced_writer = None;
            self.db.fenced_writer_at = None;
        }
        let proof_void = self
            .db
            .proven_at
            .is_some_and(|(n, at)| n == node && observed_at >= at);
        if !fence_lifted && !proof_void {
            return;
        }
        self.db.proven_at = None;
        self.notify(now, EventKind::ProofVoided { node });
        let pending = matches!(
            self.db.phase,
            Phase::CatchingUp { .. } | Phase::Claiming { .. }
        );
        if pending && self.db.attempt().is_some_and(|a| a.old == Some(node)) {
            self.abandon(now, "the old writer was seen taking writes after its proof");
        }
    }

    /// `node` is the writer at `epoch`, promoted elsewhere or by an attempt
    /// whose report we lost.
    fn adopt(&mut self, now: Instant, node: NodeId, epoch: Epoch, lsn: Lsn, at: Instant) {
        let from = self.db.writer;
        self.db.writer = Some(node);
        self.db.writer_epoch = epoch;
        self.db.writer_draining = false;
        self.db.epoch = self.db.epoch.max(epoch);
        self.db.primary_lsn = Some((lsn, at));
        self.db.phase = super::Phase::Idle;
        self.db.reported = None;
        self.db.attempts = 0;
        self.db.fenced_writer = None;
        self.reset_sync(crate::SyncSet::EMPTY, None);
        // A promotion of another node whose outcome we never learnt is
        // superseded: that node, if primary, is now stale — fenced, never
        // promoted again.
        self.db.uncertain = None;
        self.timers
            .stop(crate::controller::timers::Timer::DatabaseStep);
        self.notify(
            now,
            EventKind::WriterMoved {
                from,
                to: node,
                epoch,
            },
        );
    }

    /// The writer is lost: its database is down (its guard lease expired,
    /// or `fall` observations in a row could not reach it), or — unless the
    /// policy moves the writer only with its database — its region is down.
    /// Recomputes which replica, if any, vouches for the unreachable writer,
    /// and reports the writer down or vetoed: at its `fall`-th miss, or when
    /// a veto starts or lapses after it.
    fn refresh_vouch(&mut self, now: Instant) {
        let Some(writer) = self.db.writer else { return };
        let witness = self.writer_witness(now, writer);
        let fall = self.policy.fall;
        let track = &mut self.db.nodes[writer.index()];
        let before = std::mem::replace(&mut track.vouched, witness.map(|(w, _)| w));
        let misses = track.misses;
        // Reported at the `fall`-th miss, and after it whenever a veto
        // starts or lapses.
        if misses < fall || (misses > fall && before.is_some() == witness.is_some()) {
            return;
        }
        let event = match witness {
            None => EventKind::DatabaseDown {
                node: writer,
                misses,
            },
            Some((witness, heard_ago)) => EventKind::DatabaseDownVetoed {
                node: writer,
                misses,
                witness,
                heard_ago,
            },
        };
        self.notify(now, event);
    }

    /// A replica that vouches for the writer while this controller cannot
    /// reach it: its latest observation that reached it is recent (within
    /// `fall × interval` of `now`), its WAL receiver streams on the writer's
    /// timeline, and the last message it received from upstream arrived
    /// after the writer's first miss began. Only a live writer sends WAL or keepalives, so this
    /// is proof of life, never of death: a killed writer's stream ends at
    /// once, and a partitioned one's stops carrying messages, so the veto
    /// lapses and detection proceeds as without it. (An idle writer whose
    /// stream carries no message within the window simply gets no veto.)
    fn writer_witness(
        &self,
        now: Instant,
        writer: NodeId,
    ) -> Option<(NodeId, std::time::Duration)> {
        let track = &self.db.nodes[writer.index()];
        let first_miss = track.first_miss?;
        let timeline = track.timeline?;
        let window = self.policy.interval.saturating_mul(self.policy.fall.max(1));
        self.db
            .nodes
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != writer.index())
            .filter_map(|(i, r)| {
                let (seen, t, age) = r.stream?;
                if now.saturating_duration_since(seen) > window {
                    return None;
                }
                let heard = seen.checked_sub(age?)?;
                (t == timeline && heard > first_miss)
                    .then(|| (NodeId(i as u32), now.saturating_duration_since(heard)))
            })
            .min_by_key(|&(_, ago)| ago)
    }

    pub(in crate::controller) fn writer_lost(&self) -> bool {
        self.db.writer.is_some_and(|w| {
            let node = &self.db.nodes[w.index()];
            let database_down = node.guard == GuardLease::Expired
                || (node.misses >= self.policy.fall && node.vouched.is_none());
            let region_down =
                self.regions[self.topology.node_region(w).index()].routed == Health::Down;
            database_down
                || (region_down
                    && self.policy.move_writer_on == crate::MoveWriterOn::RegionOrDatabase)
        })
    }

    /// The store reports the writer record.
    pub(in crate::controller) fn on_writer_record(
        &mut self,
        now: Instant,
        record: Option<WriterRecord>,
    ) {
        if record.is_some_and(|r| r.node.index() >= self.db.nodes.len()) {
            return;
        }
        self.db.record = record;
        match record {
            Some(r) if Some(r.node) == self.db.writer && r.epoch == self.db.writer_epoch => {
                // The writer's own record: only its synchronous standbys
                // or its drain mark may have changed (our write, or a
                // predecessor's). A mark no switchover of ours follows is
                // lifted.
                self.db.writer_draining = r.draining;
                if r.draining && !self.db.busy() {
                    self.undrain_writer(
                        now,
                        "no switchover is under way (a drain left by an earlier leader or attempt)",
                    );
                }
                if self.db.writer_sync != r.sync {
                    self.db.writer_sync = r.sync;
                    self.notify(
                        now,
                        EventKind::SynchronousRecorded {
                            writer: r.node,
                            standbys: r.sync,
                        },
                    );
                }
                self.evaluate_sync(now);
            }
            Some(r) => {
                let ours = self.db.attempt().is_some_and(|a| a.candidate == r.node)
                    && matches!(
                        self.db.phase,
                        Phase::Claiming { .. } | Phase::Promoting { .. }
                    );
                if !ours && r.epoch >= self.db.writer_epoch && Some(r) != self.db.believed_record()
                {
                    // Another controller claimed a writer at this epoch or later.
                    self.db.epoch = self.db.epoch.max(r.epoch);
                    let from = self.db.writer;
                    self.db.writer = Some(r.node);
                    self.db.writer_epoch = r.epoch;
                    self.db.writer_draining = r.draining;
                    self.reset_sync(r.sync, None);
                    // A claimed node still a replica is not promoted yet:
                    // the old writer's last position stays the reference
                    // its promotion is gated against.
                    if self.db.replica_lsn(r.node).is_none() {
                        self.db.primary_lsn = None;
                    }
                    if self.db.uncertain.is_some_and(|a| a.candidate != r.node) {
                        self.db.uncertain = None;
                    }
                    if self.db.busy() {
                        self.abandon(now, "another controller claimed the writer");
                    }
                    self.notify(
                        now,
                        EventKind::WriterMoved {
                            from,
                            to: r.node,
                            epoch: r.epoch,
                        },
                    );
                    self.finish_claimed_promotion(now, from);
                }
            }
            None => self.seed_writer_record(now),
        }
    }

    /// The writer record names a node still seen as a replica: a leader
    /// claimed it — only ever after proving the old writer stopped — and was
    /// deposed or died before promoting it. The claim itself deposed the old
    /// writer (its guard fences it, and unfences only for a record naming
    /// it), so the leader finishes the promotion at the claimed epoch
    /// (promotion is idempotent for its epoch), behind the usual RPO gate.
    /// Otherwise the service would be left without a writer.
    pub(in crate::controller) fn finish_claimed_promotion(
        &mut self,
        now: Instant,
        old: Option<NodeId>,
    ) {
        if !self.coordinated
            || !self.leading()
            || self.paused
            || self.db.busy()
            || self
                .timers
                .get(crate::controller::timers::Timer::RetryDatabase)
                .is_some()
        {
            return;
        }
        let Some(record) = self.db.record else {
            return;
        };
        if self.db.believed_record() != Some(record) {
            return;
        }
        // Done already: a replica observation of it from before the
        // promotion completed says nothing about it now.
        if self.db.promoted == Some((record.node, record.epoch)) {
            return;
        }
        let Some(lsn) = self.db.replica_lsn(record.node) else {
            return;
        };
        let (gate, lag_bytes) = match self.rpo_gate(now, record.node, lsn) {
            Ok(gate) => gate,
            Err(event) => {
                if self.db.reported != Some(super::Reported::Refused(record.node)) {
                    self.db.reported = Some(super::Reported::Refused(record.node));
                    self.notify(now, event);
                }
                return;
            }
        };
        self.db.reported = None;
        self.notify(
            now,
            EventKind::PromotionResumed {
                node: record.node,
                epoch: record.epoch,
            },
        );
        self.promote(
            now,
            super::Attempt {
                old,
                candidate: record.node,
                epoch: record.epoch,
                intent: super::Intent::Failover,
                gate,
                lag_bytes: Some(lag_bytes),
                proof: None,
            },
        );
    }

    /// A leader that finds no writer record writes its belief (once known).
    pub(in crate::controller) fn seed_writer_record(&mut self, now: Instant) {
        if !self.coordinated
            || !self.leading()
            || self.db.record.is_some()
            || self.db.seeding.is_some()
            || self.db.busy()
        {
            return;
        }
        let Some(new) = self.db.believed_record() else {
            return;
        };
        let id = self.next_id();
        let token = self.leader;
        self.db.seeding = Some(id);
        self.notify(
            now,
            EventKind::WriterClaimRequested {
                node: new.node,
                epoch: new.epoch,
            },
        );
        self.actions.push_back(Action::SetWriter {
            id,
            token,
            expected: None,
            new,
            guard_absent: None,
        });
    }

    /// The store reports a node guard's lease.
    pub(in crate::controller) fn on_guard_lease(&mut self, now: Instant, node: NodeId, held: bool) {
        let Some(track) = self.db.nodes.get_mut(node.index()) else {
            return;
        };
        // Only a lease seen held and then gone proves its guard fenced the
        // node: an absent key from a node whose guard we never saw may be a
        // node that runs no guard at all.
        let state = match (held, track.guard) {
            (true, _) => GuardLease::Held,
            (false, GuardLease::Held | GuardLease::Expired) => GuardLease::Expired,
            (false, GuardLease::Unknown | GuardLease::Absent) => GuardLease::Absent,
        };
        if track.guard == state {
            return;
        }
        track.guard = state;
        self.notify(now, EventKind::GuardLeaseChanged { node, held });
        if state != GuardLease::Expired {
            return;
        }
        match self.db.phase {
            Phase::Fencing { attempt, .. } if attempt.old == Some(node) => {
                self.proven(now, node, StopProof::GuardLeaseExpired, None);
            }
            _ if self.db.writer == Some(node) => self.evaluate_writer(now),
            _ => {}
        }
    }
}
