//! The writer's synchronous standbys (`policy.synchronous` on or strict).
//!
//! Two things must agree: what the writer's `synchronous_standby_names`
//! requires (changed by [`Action::SetSynchronous`]) and what the writer
//! record names in `sync` (changed by [`Action::SetWriter`], compare-and-set
//! under the leader's token). A standby named in the record may be promoted
//! without waiting for the writer's guard lease, so the record may name only
//! standbys the writer requires:
//!
//! - to **add** a standby, first configure the writer to require it (the
//!   adapter reports done once it streams synchronously and has flushed all
//!   the writer had flushed), then record it;
//! - to **drop** one, first record the set without it, then reconfigure the
//!   writer.
//!
//! One step is in flight at a time, and each step is decided afresh from
//! what is known (record, configuration, replica health), so a failed or
//! interrupted step is simply decided again.

use std::time::Instant;

use super::{SyncOp, SyncStep};
use crate::controller::{later, Controller};
use crate::{
    Action, EventKind, Health, NodeId, NodeObservation, SyncSet, Synchronous, WriterRecord,
};

impl Controller {
    /// Takes the next step towards the synchronous standbys the writer
    /// should require, if one is due.
    pub(in crate::controller) fn evaluate_sync(&mut self, now: Instant) {
        let mode = self.policy.synchronous;
        if mode == Synchronous::Off || !self.leading() {
            return;
        }
        self.note_sync_stall(now);
        if self.db.sync_op.is_some()
            || self.db.busy()
            || self.db.fenced_writer.is_some()
            || self.db.sync_retry_at.is_some_and(|at| now < at)
        {
            return;
        }
        let Some(writer) = self.db.writer else { return };
        if self.writer_lost() {
            return;
        }
        // Only a writer seen taking writes at its own epoch is configured.
        match self.db.nodes[writer.index()].last {
            Some(NodeObservation::Primary {
                fenced: false,
                epoch,
                ..
            }) if epoch.is_none_or(|e| e == self.db.writer_epoch) => {}
            _ => return,
        }
        let record = self.db.writer_sync;
        if self.coordinated
            && self
                .db
                .record
                .is_none_or(|r| r.node != writer || r.epoch != self.db.writer_epoch)
        {
            return; // the store's record is not (yet) this writer's
        }
        // A required standby is kept until `fall` observations in a row
        // miss it; a new one must answer now.
        let kept: Vec<NodeId> = self.sync_eligible(writer, self.policy.fall).collect();
        let healthy: Vec<NodeId> = self.sync_eligible(writer, 1).collect();
        let configured = self
            .db
            .sync_configured
            .filter(|c| !c.is_empty() && c.iter().all(|n| healthy.contains(&n)));
        let desired = if !record.is_empty() && record.iter().all(|n| kept.contains(&n)) {
            record
        } else if let Some(configured) = configured {
            // The writer already requires healthy standbys: record those
            // rather than move to a "better" one, which would cost another
            // reconfiguration (and let two standbys take turns).
            configured
        } else if let Some(best) = self.best_sync_standby(&healthy) {
            SyncSet::of(best)
        } else if mode == Synchronous::Strict {
            // Never fall back to asynchronous: keep requiring what the
            // writer requires, and say that its commits wait.
            if let Some(lost) = record.iter().next() {
                if self.db.sync_blocked != Some(lost) {
                    self.db.sync_blocked = Some(lost);
                    self.notify(
                        now,
                        EventKind::SynchronousBlocked {
                            writer,
                            standby: lost,
                        },
                    );
                }
            }
            return;
        } else if self.db.nodes.iter().any(|t| t.seen_at.is_none()) {
            return; // a node not observed yet may be the standby to require
        } else {
            SyncSet::EMPTY
        };
        self.db.sync_blocked = None;
        let (step, standbys, reason) = if !record.is_empty() && record != desired {
            (
                SyncStep::Record,
                SyncSet::EMPTY,
                if record
                    .iter()
                    .any(|n| self.db.nodes[n.index()].stalled.is_some())
                {
                    "a required standby stalls the writer's commits: the record drops it before the writer stops requiring it"
                } else {
                    "a required standby is lost: the record drops it before the writer stops requiring it"
                },
            )
        } else if self.db.sync_configured != Some(desired) {
            (
                SyncStep::Configure,
                desired,
                if desired.is_empty() {
                    "no replica can be required: the writer goes on asynchronously"
                } else {
                    "require a healthy replica in another region for every commit"
                },
            )
        } else if record != desired {
            (
                SyncStep::Record,
                desired,
                "the writer requires it and it caught up",
            )
        } else {
            return;
        };
        let id = self.next_id();
        self.db.sync_op = Some(SyncOp { id, step, standbys });
        self.notify(
            now,
            EventKind::SynchronousChanging {
                writer,
                standbys,
                step: match step {
                    SyncStep::Configure => "configure the writer to require",
                    SyncStep::Record => "record",
                },
                reason,
            },
        );
        match step {
            SyncStep::Configure => self.actions.push_back(Action::SetSynchronous {
                id,
                node: writer,
                epoch: self.db.writer_epoch,
                standbys,
                token: self.coordinated.then_some(self.leader).flatten(),
            }),
            SyncStep::Record => {
                let expected = self.store_record();
                self.actions.push_back(Action::SetWriter {
                    id,
                    token: self.coordinated.then_some(self.leader).flatten(),
                    expected,
                    new: WriterRecord {
                        node: writer,
                        epoch: self.db.writer_epoch,
                        sync: standbys,
                        draining: self.db.writer_draining,
                    },
                    guard_absent: None,
                });
            }
        }
    }

    /// Replicas that may be required as the writer's synchronous standby:
    /// replicas (or missed since, fewer than `misses` times in a row), unfenced, not
    /// marked as stalling the writer's commits (`note_sync_stall`), in a
    /// serving region other than the writer's (a standby in the writer's own
    /// region is lost with it), last seen replaying the writer's timeline
    /// when both are known. A replica still on an older timeline — one that
    /// followed the old writer and has not (or cannot: it was ahead of the
    /// fork point) switched to the promoted one — does not stream from the
    /// writer: requiring it would block every commit, so it is not chosen.
    fn sync_eligible(&self, writer: NodeId, misses: u32) -> impl Iterator<Item = NodeId> + '_ {
        let writer_region = self.topology.node_region(writer);
        let writer_timeline = self.db.nodes[writer.index()].timeline;
        self.topology.node_ids().filter(move |n| {
            let track = &self.db.nodes[n.index()];
            let r = self.topology.node_region(*n);
            let region = &self.regions[r.index()];
            let on_writers_timeline = match (writer_timeline, track.stream) {
                (Some(w), Some((_, t, _))) => t == w,
                _ => true,
            };
            *n != writer
                && track.misses < misses
                && track.stalled.is_none()
                && track.fence.is_none()
                && on_writers_timeline
                && matches!(
                    track.last,
                    Some(NodeObservation::Replica { .. } | NodeObservation::Unreachable)
                )
                && r != writer_region
                && self.topology.same_residency(writer_region, r)
                && region.routed == Health::Up
                && !region.drained
        })
    }

    /// Marks the standbys the writer requires as stalled when its commits
    /// have waited `fall` × `interval` for them (`sync_wait`), the same
    /// patience a standby that stops answering gets. Such a standby may
    /// answer every observation as a healthy replica on the writer's
    /// timeline (its region cut from the writer's, not from the
    /// controllers), yet it acknowledges nothing, and every commit waits for
    /// as long as it stays required. Marked, it is neither kept nor chosen
    /// until it has received the writer's position of now (see
    /// `on_replication`).
    ///
    /// A wait counts only from when the writer's configuration last changed
    /// (a commit may have waited for the standby it required before), and
    /// not while a configure step is in flight: the standby being added may
    /// still be catching up, and the step's own timeout puts the old
    /// setting back if it never streams.
    fn note_sync_stall(&mut self, now: Instant) {
        if self
            .db
            .sync_op
            .is_some_and(|op| op.step == SyncStep::Configure)
        {
            return;
        }
        let Some(writer) = self.db.writer else { return };
        let track = &self.db.nodes[writer.index()];
        let Some(NodeObservation::Primary {
            fenced: false,
            current_lsn,
            sync_wait: Some(waited),
            ..
        }) = track.last
        else {
            return;
        };
        let since_configured = match (self.db.sync_configured_at, track.seen_at) {
            (Some(configured), Some(seen)) => seen.saturating_duration_since(configured),
            _ => waited,
        };
        let waited = waited.min(since_configured);
        if waited < self.policy.interval.saturating_mul(self.policy.fall) {
            return;
        }
        let required = self.db.sync_configured.unwrap_or(self.db.writer_sync);
        for standby in required.iter().filter(|n| *n != writer) {
            let track = &mut self.db.nodes[standby.index()];
            if track.stalled.is_some() {
                continue;
            }
            track.stalled = Some(current_lsn);
            self.notify(
                now,
                EventKind::SynchronousStalled {
                    writer,
                    standby,
                    waited,
                    behind: current_lsn,
                },
            );
        }
    }

    /// The replica to require: the most WAL received, then priority.
    fn best_sync_standby(&self, healthy: &[NodeId]) -> Option<NodeId> {
        healthy.iter().copied().max_by_key(|n| {
            (
                self.db.replica_lsn(*n).unwrap_or_default(),
                self.topology.node(*n).priority,
                u32::MAX - n.0,
            )
        })
    }

    /// A synchronous step completed. Returns whether `id` was one.
    pub(super) fn on_sync_done(&mut self, now: Instant, id: crate::ActionId) -> bool {
        let Some(op) = self.db.sync_op.filter(|op| op.id == id) else {
            return false;
        };
        self.db.sync_op = None;
        self.db.sync_retry_at = None;
        match op.step {
            SyncStep::Configure => {
                self.db.sync_configured = Some(op.standbys);
                self.db.sync_configured_at = Some(now);
            }
            SyncStep::Record => {
                if let Some(writer) = self.db.writer {
                    self.db.writer_sync = op.standbys;
                    self.db.record = Some(WriterRecord {
                        node: writer,
                        epoch: self.db.writer_epoch,
                        sync: op.standbys,
                        draining: self.db.writer_draining,
                    });
                    self.notify(
                        now,
                        EventKind::SynchronousRecorded {
                            writer,
                            standbys: op.standbys,
                        },
                    );
                }
            }
        }
        self.evaluate_sync(now);
        true
    }

    /// A synchronous step failed. Returns whether `id` was one. The step is
    /// decided again after one interval; a failed configuration leaves the
    /// writer's setting unknown.
    pub(super) fn on_sync_failed(
        &mut self,
        now: Instant,
        id: crate::ActionId,
        failure: &crate::ActionFailure,
    ) -> bool {
        let Some(op) = self.db.sync_op.filter(|op| op.id == id) else {
            return false;
        };
        self.db.sync_op = None;
        let action = match op.step {
            SyncStep::Configure => {
                self.db.sync_configured = None;
                self.db.sync_configured_at = Some(now);
                crate::ActionKind::SetSynchronous
            }
            SyncStep::Record => crate::ActionKind::SetWriter,
        };
        let retry = self.policy.interval;
        self.db.sync_retry_at = Some(later(now, retry));
        self.notify(
            now,
            EventKind::ActionFailed {
                id,
                action,
                kind: failure.kind,
                message: failure.message.clone(),
                retry_in: Some(retry),
            },
        );
        true
    }

    /// The writer changed: its synchronous standbys start over, from what
    /// its record says (`sync`) and how it starts (`configured`).
    pub(super) fn reset_sync(&mut self, sync: SyncSet, configured: Option<SyncSet>) {
        self.db.writer_sync = sync;
        self.db.sync_configured = configured;
        self.db.sync_configured_at = None;
        self.db.sync_op = None;
        self.db.sync_blocked = None;
        self.db.sync_retry_at = None;
        for track in &mut self.db.nodes {
            track.stalled = None;
        }
    }

    /// The writer record as the store holds it: the store's report with a
    /// coordinator, else (the in-process store, which only this controller
    /// writes) the controller's own belief. Compare-and-sets expect it.
    pub(super) fn store_record(&self) -> Option<WriterRecord> {
        if self.coordinated {
            self.db.record
        } else {
            self.db.believed_record()
        }
    }

    /// Whether `candidate` is a synchronous standby the writer record says
    /// the writer `old` requires: promoting it loses no acknowledged commit,
    /// and needs no wait for `old`'s guard lease.
    pub(super) fn sync_proof(&self, old: NodeId, candidate: NodeId) -> bool {
        if self.policy.synchronous == Synchronous::Off || self.db.writer != Some(old) {
            return false;
        }
        let record = self.store_record();
        record.is_some_and(|r| {
            r.node == old && r.epoch == self.db.writer_epoch && r.sync.contains(candidate)
        })
    }
}
