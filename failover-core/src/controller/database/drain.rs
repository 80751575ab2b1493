//! A planned switchover drains the old writer before fencing it:
//!
//! ```text
//! switchover ──SetWriter(draining)──▶ Draining ──policy.writer_drain──▶ Fencing ──▶ …
//!                  (mark confirmed)        └─ mark not confirmed by step_timeout ─▶ failed
//! ```
//!
//! The mark is the writer record with `draining` set, written by
//! compare-and-set like every other change of the record. The old writer's
//! guard answers 503 on `/writer` as soon as it reads it, so a load balancer
//! that checks `/writer` marks the writer down and sends it no new
//! connection; `writer_drain` is the time it needs to notice. Only then is
//! the writer fenced, so no connection reaches a fenced writer. The writer
//! keeps taking writes on its open sessions meanwhile: the drain costs time,
//! never data.
//!
//! A drain that no switchover follows any more (aborted, failed, a
//! predecessor's, a restart's) is lifted by writing the record without the
//! mark, so the writer takes new connections again.

use std::time::Instant;

use super::{Attempt, Phase};
use crate::controller::timers::{Timer, TimerReason};
use crate::controller::{later, Controller};
use crate::{Action, ActionFailure, ActionId, ActionKind, EventKind, WriterRecord};

impl Controller {
    /// Starts a switchover: drains the old writer first when
    /// `policy.writer_drain` asks for it, else fences it at once.
    pub(super) fn start_switchover(&mut self, now: Instant, attempt: Attempt) {
        let drain = self.policy.writer_drain;
        let old = attempt.old.filter(|o| *o != attempt.candidate);
        let (Some(old), false) = (old, drain.is_zero()) else {
            self.start_attempt(now, attempt);
            return;
        };
        self.db.reported = None;
        self.db.proven_at = None;
        self.timers.stop(Timer::RetryDatabase);
        self.db.phase = Phase::Draining {
            attempt,
            marked: None,
        };
        if self.db.writer_draining {
            // Already marked (a drain left by an attempt that did not
            // finish): the wait starts now, as if just confirmed.
            self.drain_marked(now);
            return;
        }
        self.timers.set(
            Timer::DatabaseStep,
            later(now, self.policy.step_timeout),
            TimerReason::DrainMark,
        );
        self.notify(
            now,
            EventKind::WriterDrainRequested {
                node: old,
                candidate: attempt.candidate,
                drain,
            },
        );
        let id = self.next_id();
        self.db.marking = Some(id);
        let expected = self.store_record();
        self.actions.push_back(Action::SetWriter {
            id,
            token: self.coordinated.then_some(self.leader).flatten(),
            expected,
            new: WriterRecord {
                node: old,
                epoch: self.db.writer_epoch,
                sync: self.db.writer_sync,
                draining: true,
            },
            guard_absent: None,
        });
    }

    /// The store holds the drain mark: wait `policy.writer_drain`, then fence.
    fn drain_marked(&mut self, now: Instant) {
        let Phase::Draining { attempt, .. } = self.db.phase else {
            return;
        };
        let drain = self.policy.writer_drain;
        self.db.phase = Phase::Draining {
            attempt,
            marked: Some(now),
        };
        self.timers
            .set(Timer::DatabaseStep, later(now, drain), TimerReason::Drain);
        if let Some(old) = attempt.old {
            self.notify(now, EventKind::WriterDraining { node: old, drain });
        }
    }

    /// The step deadline in [`Phase::Draining`]: the drain is over (fence
    /// now), or its mark was not confirmed in time (the switchover fails).
    pub(super) fn on_drain_deadline(&mut self, now: Instant) {
        let Phase::Draining { attempt, marked } = self.db.phase else {
            return;
        };
        if marked.is_some() {
            self.start_attempt(now, attempt);
            return;
        }
        self.notify(
            now,
            EventKind::StepTimedOut {
                step: "drain",
                node: attempt.old.unwrap_or(attempt.candidate),
            },
        );
        self.fail_attempt(now);
    }

    /// A write of the drain mark or its lifting completed. Returns whether
    /// `id` was one.
    pub(super) fn on_drain_done(&mut self, now: Instant, id: ActionId) -> bool {
        if self.db.undrain == Some(id) {
            self.db.undrain = None;
            self.set_draining(false);
            return true;
        }
        if self.db.marking != Some(id) {
            return false;
        }
        self.db.marking = None;
        self.set_draining(true);
        if matches!(self.db.phase, Phase::Draining { marked: None, .. }) {
            self.drain_marked(now);
        } else {
            self.undrain_writer(
                now,
                "the switchover was abandoned while its drain was being marked",
            );
        }
        true
    }

    /// A write of the drain mark or its lifting failed. Returns whether `id`
    /// was one. A failed mark fails the switchover (nothing was fenced); a
    /// failed lifting is retried after one interval.
    pub(super) fn on_drain_failed(
        &mut self,
        now: Instant,
        id: ActionId,
        failure: &ActionFailure,
    ) -> bool {
        let event = |id, retry_in| EventKind::ActionFailed {
            id,
            action: ActionKind::SetWriter,
            kind: failure.kind,
            message: failure.message.clone(),
            retry_in,
        };
        if self.db.undrain == Some(id) {
            self.db.undrain = None;
            let retry = self.policy.interval;
            self.notify(now, event(id, Some(retry)));
            if self.timers.get(Timer::RetryDatabase).is_none() {
                self.timers.set(
                    Timer::RetryDatabase,
                    later(now, retry),
                    TimerReason::DatabaseFailed,
                );
            }
            return true;
        }
        if self.db.marking != Some(id) {
            return false;
        }
        self.db.marking = None;
        self.notify(now, event(id, None));
        if matches!(self.db.phase, Phase::Draining { .. }) {
            self.fail_attempt(now);
        }
        true
    }

    /// The writer's record now says `draining` (our own write confirmed).
    fn set_draining(&mut self, draining: bool) {
        self.db.writer_draining = draining;
        if let Some(r) = self.db.record.as_mut() {
            if Some(r.node) == self.db.writer && r.epoch == self.db.writer_epoch {
                r.draining = draining;
            }
        }
    }

    /// Lifts a drain mark that no switchover follows any more, so the
    /// writer takes new connections again. Only the leader writes it, never
    /// while a promotion is under way (its claim replaces the record).
    pub(in crate::controller) fn undrain_writer(&mut self, now: Instant, reason: &'static str) {
        if !self.leading()
            || self.db.busy()
            || self.db.undrain.is_some()
            || self.db.marking.is_some()
        {
            return;
        }
        let Some(record) = self.store_record() else {
            return;
        };
        if !record.draining
            || Some(record.node) != self.db.writer
            || record.epoch != self.db.writer_epoch
        {
            return;
        }
        let id = self.next_id();
        self.db.undrain = Some(id);
        self.notify(
            now,
            EventKind::WriterUndrainRequested {
                node: record.node,
                reason,
            },
        );
        self.actions.push_back(Action::SetWriter {
            id,
            token: self.coordinated.then_some(self.leader).flatten(),
            expected: Some(record),
            new: record.with_draining(false),
            guard_absent: None,
        });
    }
}
