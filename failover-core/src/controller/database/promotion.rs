//! A promotion's steps, each with a deadline:
//!
//! ```text
//! Fencing ──proof──▶ [CatchingUp] ──▶ Claiming ──▶ Promoting ──▶ writer moved
//!   │ fence confirmed          (switchover)   SetWriter     Promote
//!   │ or guard lease expired
//!   └─ no proof by policy.proof_timeout ─▶ Unproven (retry after backoff)
//! ```
//!
//! An attempt's epoch is one above the highest promotion epoch known and is
//! spent only when the promotion happens: a failed attempt's retry reuses it.
//! A failed or abandoned attempt that fenced a writer which is still the
//! writer unfences it.

use std::time::Instant;

use super::{retry_delay, Attempt, FenceInFlight, FencePurpose, Intent, Phase};
use crate::controller::timers::{Timer, TimerReason};
use crate::controller::{later, Controller};
use crate::{
    Action, ActionFailure, ActionId, ActionKind, Epoch, EventKind, Lsn, NodeId, NodeObservation,
    PromoteRequest, RpoGate, StopProof, WriterRecord,
};

impl Controller {
    /// Starts an automatic promotion when the writer is lost; settles the
    /// database state when it is not.
    pub(in crate::controller) fn evaluate_writer(&mut self, now: Instant) {
        if self.paused || !self.policy.auto_promote || self.db.busy() || !self.leading() {
            return;
        }
        let Some(writer) = self.db.writer else { return };
        if !self.writer_lost() {
            // The writer is back: forget refusals and failures, and lift a
            // fence left by an attempt that did not finish.
            if matches!(
                self.db.phase,
                Phase::Refused { .. } | Phase::Unproven { .. } | Phase::NeedsOperator { .. }
            ) {
                self.db.phase = Phase::Idle;
            }
            self.db.attempts = 0;
            self.db.reported = None;
            self.timers.stop(Timer::RetryDatabase);
            self.unfence_writer(now);
            return;
        }
        if matches!(self.db.phase, Phase::NeedsOperator { .. }) {
            return;
        }
        // A retry waits for its backoff, whatever else arrives meanwhile.
        if self.timers.get(Timer::RetryDatabase).is_some() {
            return;
        }
        let Some((candidate, lsn)) = self.best_candidate(writer) else {
            if self.db.reported != Some(super::Reported::NoCandidate) {
                self.db.reported = Some(super::Reported::NoCandidate);
                let event = self
                    .residency_refusal(writer)
                    .unwrap_or(EventKind::NoPromotionCandidate { writer });
                self.notify(now, event);
            }
            return;
        };
        // A synchronous standby the writer required has every acknowledged
        // commit: no RPO gate to pass, no guard lease to wait for.
        let gate = if self.sync_proof(writer, candidate) {
            Ok((RpoGate::Synchronous, 0))
        } else {
            self.rpo_gate(now, candidate, lsn)
        };
        match gate {
            Ok((gate, lag_bytes)) => {
                let attempt = Attempt {
                    old: Some(writer),
                    candidate,
                    epoch: self.db.epoch_for(candidate),
                    intent: Intent::Failover,
                    gate,
                    lag_bytes: Some(lag_bytes),
                    proof: None,
                };
                self.start_attempt(now, attempt);
            }
            Err(event) => {
                self.db.phase = Phase::Refused { node: candidate };
                if self.db.reported != Some(super::Reported::Refused(candidate)) {
                    self.db.reported = Some(super::Reported::Refused(candidate));
                    self.notify(now, event);
                }
            }
        }
    }

    /// Fences the old writer (if any) and waits for proof, or goes straight
    /// to claiming when there is no old writer to stop.
    pub(super) fn start_attempt(&mut self, now: Instant, attempt: Attempt) {
        self.db.reported = None;
        self.db.proven_at = None;
        self.timers.stop(Timer::RetryDatabase);
        let Some(old) = attempt.old.filter(|o| *o != attempt.candidate) else {
            self.claim(now, attempt);
            return;
        };
        self.db.phase = Phase::Fencing {
            attempt,
            started: now,
        };
        let deadline = match attempt.intent {
            Intent::Failover => self.policy.proof_timeout,
            // An operator is waiting: a forced promotion waits one step for
            // the fence, a switchover needs it.
            Intent::Forced | Intent::Switchover => self.policy.step_timeout,
        };
        self.timers.set(
            Timer::DatabaseStep,
            later(now, deadline),
            TimerReason::AwaitingProof,
        );
        // Already fenced by an earlier attempt that did not finish: that
        // fence is the proof — unless an unfence of it is in flight, which
        // may have lifted it already. Then a new fence is sent; the driver
        // keeps one node's operations in order, so its confirmation comes
        // after the unfence and proves the node stopped.
        if let Some((node, epoch)) = self.db.fenced_writer {
            if node == old && epoch <= attempt.epoch && self.db.unfence.is_none() {
                self.proven(now, node, StopProof::FenceConfirmed, None);
                return;
            }
        }
        if self.unsafe_no_stop_proof && attempt.intent == Intent::Failover {
            // Test-only (feature `chaos-unsafe`): the rule is loosened.
            self.proven(now, old, StopProof::Forced, None);
            return;
        }
        if attempt.gate == RpoGate::Synchronous && self.sync_proof(old, attempt.candidate) {
            self.proven(now, old, StopProof::SynchronousStandby, None);
            return;
        }
        if attempt.intent != Intent::Switchover
            && self.db.nodes[old.index()].guard == super::GuardLease::Expired
        {
            self.proven(now, old, StopProof::GuardLeaseExpired, None);
            return;
        }
        self.send_fence(now, old, attempt.epoch);
    }

    fn send_fence(&mut self, now: Instant, node: NodeId, epoch: Epoch) {
        if self.db.nodes[node.index()]
            .fence
            .is_some_and(|f| f.purpose == FencePurpose::Promotion && f.epoch == epoch)
        {
            return; // already on its way
        }
        let id = self.next_id();
        self.db.nodes[node.index()].fence = Some(FenceInFlight {
            id,
            epoch,
            purpose: FencePurpose::Promotion,
        });
        self.notify(now, EventKind::FencingRequested { node, epoch });
        self.actions.push_back(Action::Fence { id, node, epoch });
    }

    /// The old writer `node` is proven stopped (`final_lsn`: its final
    /// flush position, when the fence reported it): says so, and goes on.
    pub(super) fn proven(
        &mut self,
        now: Instant,
        node: NodeId,
        proof: StopProof,
        final_lsn: Option<Lsn>,
    ) {
        self.notify(now, EventKind::StopProven { node, proof });
        let Phase::Fencing { mut attempt, .. } = self.db.phase else {
            return;
        };
        attempt.proof = Some(proof);
        // A synchronous standby's proof holds while the old writer runs: it
        // cannot acknowledge a commit without the candidate.
        if !matches!(proof, StopProof::Forced | StopProof::SynchronousStandby) {
            self.db.proven_at = Some((node, now));
        }
        if let (Some(old), Some(lsn)) = (attempt.old, final_lsn) {
            self.db.fenced_writer = Some((old, attempt.epoch));
            self.db.fenced_writer_at = Some(now);
            let best = self.db.primary_lsn.map_or(lsn, |(l, _)| l.max(lsn));
            self.db.primary_lsn = Some((best, now));
        }
        if attempt.intent == Intent::Switchover {
            let last_seen = self.db.primary_lsn.map_or(Lsn(0), |(l, _)| l);
            self.db.phase = Phase::CatchingUp {
                attempt,
                lsn: final_lsn.map_or(last_seen, |f| f.max(last_seen)),
                reported: false,
                final_known: final_lsn.is_some(),
                fenced_at: now,
            };
            self.timers.set(
                Timer::DatabaseStep,
                later(now, self.policy.step_timeout),
                TimerReason::CatchUp,
            );
            self.check_catch_up(now);
        } else {
            // With the final position known, gate on it exactly — against
            // what the candidate reported receiving, not the estimate the
            // attempt started with: the fence may show the writer wrote
            // more. A candidate too far behind may still receive the rest
            // from the fenced writer; wait for it (one step), never claim.
            if let (RpoGate::Within { max, .. }, Some(lsn)) = (attempt.gate, final_lsn) {
                attempt.gate = RpoGate::Within {
                    max,
                    reference: Some(lsn),
                };
                let received = self.db.replica_lsn(attempt.candidate).unwrap_or_default();
                let lag = lsn.bytes_after(received);
                attempt.lag_bytes = Some(lag);
                if max.bytes.is_some_and(|b| lag > b) {
                    self.db.phase = Phase::CatchingUp {
                        attempt,
                        lsn,
                        reported: false,
                        final_known: true,
                        fenced_at: now,
                    };
                    self.timers.set(
                        Timer::DatabaseStep,
                        later(now, self.policy.step_timeout),
                        TimerReason::CatchUp,
                    );
                    self.check_catch_up(now);
                    return;
                }
            }
            self.claim(now, attempt);
        }
    }

    /// Writes the writer record for the candidate, before promoting it.
    fn claim(&mut self, now: Instant, attempt: Attempt) {
        let id = self.next_id();
        self.db.phase = Phase::Claiming { attempt, id };
        self.timers.set(
            Timer::DatabaseStep,
            later(now, self.policy.step_timeout),
            TimerReason::Claim,
        );
        self.notify(
            now,
            EventKind::WriterClaimRequested {
                node: attempt.candidate,
                epoch: attempt.epoch,
            },
        );
        let expected = self.store_record();
        self.actions.push_back(Action::SetWriter {
            id,
            token: self.coordinated.then_some(self.leader).flatten(),
            expected,
            new: WriterRecord::new(attempt.candidate, attempt.epoch),
            guard_absent: attempt
                .old
                .filter(|_| attempt.proof == Some(StopProof::GuardLeaseExpired)),
        });
    }

    /// Sends the promotion. Also re-sends one whose outcome is unknown, at
    /// its own epoch (it is idempotent): that node already became primary.
    pub(super) fn promote(&mut self, now: Instant, attempt: Attempt) {
        let id = self.next_id();
        self.db.phase = Phase::Promoting { attempt, id };
        self.timers.set(
            Timer::DatabaseStep,
            later(now, self.policy.step_timeout),
            TimerReason::Promote,
        );
        self.notify(
            now,
            EventKind::PromotionRequested {
                node: attempt.candidate,
                epoch: attempt.epoch,
                lag_bytes: attempt.lag_bytes,
                forced: attempt.gate == RpoGate::Forced,
            },
        );
        self.actions.push_back(Action::Promote {
            id,
            request: PromoteRequest {
                node: attempt.candidate,
                epoch: attempt.epoch,
                gate: attempt.gate,
                synchronous: self.policy.synchronous,
            },
        });
    }

    pub(in crate::controller) fn check_catch_up(&mut self, now: Instant) {
        let Phase::CatchingUp {
            attempt,
            lsn,
            reported,
            final_known,
            fenced_at,
        } = self.db.phase
        else {
            return;
        };
        let node = attempt.candidate;
        // A failover needs the candidate within max_rpo of the final
        // position; a switchover needs it to have replayed all of it.
        let (ready, next, waiting) = match attempt.gate {
            RpoGate::Within { max, .. } => {
                let received = self.db.replica_lsn(node).unwrap_or_default();
                let lag = lsn.bytes_after(received);
                let mut next = attempt;
                next.lag_bytes = Some(lag);
                let waiting = EventKind::FailoverCatchingUp {
                    node,
                    lag_bytes: lag,
                };
                (max.bytes.is_none_or(|b| lag <= b), next, waiting)
            }
            _ => {
                let replayed = match self.db.nodes[node.index()].last {
                    Some(NodeObservation::Replica { replay_lsn, .. }) => {
                        replay_lsn.unwrap_or_default()
                    }
                    _ => Lsn(0),
                };
                let mut next = attempt;
                next.gate = RpoGate::CaughtUp { lsn };
                next.lag_bytes = Some(0);
                let waiting = EventKind::SwitchoverWaiting {
                    node,
                    lag_bytes: lsn.bytes_after(replayed),
                };
                (final_known && replayed >= lsn, next, waiting)
            }
        };
        if ready {
            self.claim(now, next);
        } else if !reported {
            self.db.phase = Phase::CatchingUp {
                attempt,
                lsn,
                reported: true,
                final_known,
                fenced_at,
            };
            self.notify(now, waiting);
        }
    }

    /// A database action completed. `final_lsn` is a fenced node's final WAL
    /// flush position, when the adapter reported it.
    pub(in crate::controller) fn on_database_done(
        &mut self,
        now: Instant,
        id: ActionId,
        final_lsn: Option<Lsn>,
    ) {
        if let Some((node, fence)) = self.db.fence_by_id(id) {
            self.db.nodes[node.index()].fence = None;
            if fence.purpose == FencePurpose::Promotion && self.db.writer == Some(node) {
                // Whatever happens to the attempt, the writer is fenced now.
                self.db.fenced_writer = Some((node, fence.epoch));
                self.db.fenced_writer_at = Some(now);
                match self.db.phase {
                    Phase::Fencing { attempt, .. } if attempt.old == Some(node) => {
                        self.proven(now, node, StopProof::FenceConfirmed, final_lsn);
                    }
                    // The attempt was abandoned meanwhile.
                    _ => self.evaluate_writer(now),
                }
            }
            return;
        }
        if self.db.unfence == Some(id) {
            self.db.unfence = None;
            self.db.fenced_writer = None;
            return;
        }
        if self.db.seeding == Some(id) {
            self.db.seeding = None;
            return;
        }
        if self.on_sync_done(now, id) || self.on_drain_done(now, id) {
            return;
        }
        match self.db.phase {
            Phase::Claiming { attempt, id: claim } if claim == id => {
                self.db.record = Some(WriterRecord::new(attempt.candidate, attempt.epoch));
                self.promote(now, attempt);
            }
            Phase::Promoting {
                attempt,
                id: promote,
            } if promote == id => {
                let node = attempt.candidate;
                self.db.promoted = Some((node, attempt.epoch));
                self.db.writer = Some(node);
                self.db.writer_epoch = attempt.epoch;
                self.db.writer_draining = false;
                self.db.epoch = self.db.epoch.max(attempt.epoch);
                self.db.primary_lsn = None;
                self.db.phase = Phase::Idle;
                self.db.attempts = 0;
                self.db.uncertain = None;
                self.db.fenced_writer = None;
                self.timers.stop(Timer::DatabaseStep);
                // It starts asynchronous (on) or requiring any standby
                // (strict): a standby is named once one streams from it.
                let configured = (self.policy.synchronous == crate::Synchronous::On)
                    .then_some(crate::SyncSet::EMPTY);
                self.reset_sync(crate::SyncSet::EMPTY, configured);
                self.notify(
                    now,
                    EventKind::Promoted {
                        node,
                        epoch: attempt.epoch,
                    },
                );
                self.evaluate_sync(now);
            }
            _ => {}
        }
    }

    pub(in crate::controller) fn on_database_failed(
        &mut self,
        now: Instant,
        id: ActionId,
        failure: ActionFailure,
    ) {
        if let Some((node, fence)) = self.db.fence_by_id(id) {
            self.db.nodes[node.index()].fence = None;
            self.action_failed_event(now, id, ActionKind::Fence, &failure);
            // A failed fence proves nothing, whatever its kind: "unreachable"
            // is not "stopped". An automatic attempt keeps waiting for its
            // guard lease to expire, resending the fence meanwhile; a forced
            // one goes ahead, as the operator accepted.
            if let Phase::Fencing { attempt, .. } = self.db.phase {
                if attempt.old == Some(node) && fence.purpose == FencePurpose::Promotion {
                    match attempt.intent {
                        Intent::Forced => {
                            self.proven(now, node, StopProof::Forced, None);
                        }
                        Intent::Switchover => self.fail_attempt(now),
                        Intent::Failover => {
                            self.timers.set(
                                Timer::RetryFence,
                                later(now, self.policy.interval),
                                TimerReason::RetryFence,
                            );
                        }
                    }
                }
            }
            return;
        }
        if self.db.unfence == Some(id) {
            self.db.unfence = None;
            self.action_failed_event(now, id, ActionKind::Unfence, &failure);
            self.timers.set(
                Timer::RetryDatabase,
                later(now, self.policy.interval),
                TimerReason::DatabaseFailed,
            );
            return;
        }
        if self.db.seeding == Some(id) {
            self.db.seeding = None;
            self.action_failed_event(now, id, ActionKind::SetWriter, &failure);
            return;
        }
        if self.on_sync_failed(now, id, &failure) || self.on_drain_failed(now, id, &failure) {
            return;
        }
        match self.db.phase {
            Phase::Claiming { id: claim, .. } if claim == id => {
                self.action_failed_event(now, id, ActionKind::SetWriter, &failure);
                self.fail_attempt(now);
            }
            Phase::Promoting {
                attempt,
                id: promote,
            } if promote == id => {
                self.action_failed_event(now, id, ActionKind::Promote, &failure);
                // It may have taken effect (a timeout after `pg_promote`):
                // never fence that node for it, finish it when the node
                // shows up as primary, and never give its epoch to another
                // node.
                self.db.uncertain = Some(attempt);
                self.fail_attempt(now);
            }
            _ => {}
        }
    }

    fn action_failed_event(
        &mut self,
        now: Instant,
        id: ActionId,
        action: ActionKind,
        failure: &ActionFailure,
    ) {
        self.notify(
            now,
            EventKind::ActionFailed {
                id,
                action,
                kind: failure.kind,
                message: failure.message.clone(),
                retry_in: None,
            },
        );
    }

    /// The attempt failed: count it, retry after a backoff (or stop and ask
    /// for an operator), and unfence the writer if it is still the writer.
    pub(super) fn fail_attempt(&mut self, now: Instant) {
        let attempt = self.db.attempt();
        self.timers.stop(Timer::DatabaseStep);
        self.timers.stop(Timer::RetryFence);
        self.db.phase = Phase::Idle;
        self.db.attempts += 1;
        let Some(attempt) = attempt else { return };
        if attempt.intent != Intent::Failover {
            // Operator commands are not retried on their own.
            self.unfence_writer(now);
            self.undrain_writer(now, "the switchover failed");
            return;
        }
        let writer = attempt.old.unwrap_or(attempt.candidate);
        if self.db.attempts >= self.policy.max_attempts {
            self.db.phase = Phase::NeedsOperator { writer };
            self.notify(
                now,
                EventKind::NeedsOperator {
                    writer,
                    attempts: self.db.attempts,
                },
            );
            return;
        }
        self.timers.set(
            Timer::RetryDatabase,
            later(now, retry_delay(self.policy.interval, self.db.attempts)),
            TimerReason::DatabaseFailed,
        );
    }

    /// Lifts a fence left on the writer by an attempt that did not finish,
    /// when its region serves again (or the attempt was a switchover).
    pub(in crate::controller) fn unfence_writer(&mut self, now: Instant) {
        let Some((node, epoch)) = self.db.fenced_writer else {
            return;
        };
        if self.db.writer != Some(node)
            || self.db.unfence.is_some()
            || self.db.busy()
            || !self.leading()
        {
            return;
        }
        if self.writer_lost() {
            return;
        }
        let id = self.next_id();
        self.db.unfence = Some(id);
        self.notify(now, EventKind::UnfenceRequested { node, epoch });
        self.actions.push_back(Action::Unfence { id, node, epoch });
    }

    /// A step's deadline passed.
    pub(in crate::controller) fn on_step_deadline(&mut self, now: Instant) {
        match self.db.phase {
            Phase::Draining { .. } => self.on_drain_deadline(now),
            Phase::Fencing { attempt, started } => {
                let Some(old) = attempt.old else { return };
                match attempt.intent {
                    Intent::Failover => {
                        let attempts = self.db.attempts + 1;
                        let give_up = attempts >= self.policy.max_attempts;
                        self.notify(
                            now,
                            EventKind::PromotionUnproven {
                                node: old,
                                candidate: attempt.candidate,
                                waited: now.saturating_duration_since(started),
                                guards: self.policy.guard_ttl.is_some(),
                                retry_in: (!give_up)
                                    .then(|| retry_delay(self.policy.interval, attempts)),
                            },
                        );
                        self.fail_attempt(now);
                        // Retried after the backoff, visibly waiting for proof.
                        if self.db.phase == Phase::Idle {
                            self.db.phase = Phase::Unproven {
                                old,
                                candidate: attempt.candidate,
                            };
                        }
                    }
                    Intent::Forced => {
                        self.proven(now, old, StopProof::Forced, None);
                    }
                    Intent::Switchover => {
                        self.notify(
                            now,
                            EventKind::StepTimedOut {
                                step: "fence",
                                node: old,
                            },
                        );
                        self.fail_attempt(now);
                    }
                }
            }
            Phase::CatchingUp { attempt, .. } => {
                self.notify(
                    now,
                    EventKind::StepTimedOut {
                        step: "catch-up",
                        node: attempt.candidate,
                    },
                );
                self.fail_attempt(now);
            }
            Phase::Claiming { attempt, .. } => {
                self.notify(
                    now,
                    EventKind::StepTimedOut {
                        step: "claim",
                        node: attempt.candidate,
                    },
                );
                self.fail_attempt(now);
            }
            Phase::Promoting { attempt, .. } => {
                self.notify(
                    now,
                    EventKind::StepTimedOut {
                        step: "promote",
                        node: attempt.candidate,
                    },
                );
                self.db.uncertain = Some(attempt);
                self.fail_attempt(now);
            }
            _ => {}
        }
    }

    /// Re-sends the old writer's fence while waiting for proof.
    pub(in crate::controller) fn on_retry_fence(&mut self, now: Instant) {
        if let Phase::Fencing { attempt, .. } = self.db.phase {
            if let Some(old) = attempt.old {
                self.send_fence(now, old, attempt.epoch);
            }
        }
    }

    /// Abandons the attempt in progress (operator abort, pause, lost
    /// leadership): nothing more is sent for it. A `Promote` already sent
    /// may still take effect and is then adopted, never repeated.
    pub(in crate::controller) fn abandon(&mut self, now: Instant, reason: &'static str) {
        let Some(attempt) = self.db.attempt() else {
            return;
        };
        if let Phase::Promoting { .. } = self.db.phase {
            self.db.uncertain = Some(attempt);
        }
        self.timers.stop(Timer::DatabaseStep);
        self.timers.stop(Timer::RetryFence);
        self.db.phase = Phase::Idle;
        self.notify(
            now,
            EventKind::PromotionAborted {
                node: attempt.candidate,
                reason,
            },
        );
        self.unfence_writer(now);
        self.undrain_writer(now, "the switchover was abandoned");
    }

    pub(in crate::controller) fn switchover(&mut self, now: Instant, to: NodeId) {
        let primary = self.db.primary_lsn.map(|(l, _)| l);
        let refuse = if self.db.busy() {
            Some("a promotion is already in progress")
        } else if !self.leading() {
            Some("this controller does not lead")
        } else if self.db.writer.is_none() {
            Some("no known writer to switch over from")
        } else if self.db.writer == Some(to) {
            Some("the target is already the writer")
        } else if self.db.replica_lsn(to).is_none() {
            Some("the target is not seen as a replica")
        } else if primary.is_none() {
            Some("the writer's WAL position is unknown: observe it first")
        } else {
            None
        };
        if let Some(reason) = refuse {
            self.notify(now, EventKind::CommandRefused { reason });
            return;
        }
        self.db.attempts = 0;
        let attempt = Attempt {
            old: self.db.writer,
            candidate: to,
            epoch: self.db.epoch_for(to),
            intent: Intent::Switchover,
            gate: RpoGate::CaughtUp {
                lsn: primary.unwrap_or_default(),
            },
            lag_bytes: Some(0),
            proof: None,
        };
        self.start_switchover(now, attempt);
    }

    pub(in crate::controller) fn force_promote(&mut self, now: Instant, node: NodeId) {
        // An operator's force supersedes an automatic attempt still waiting
        // for proof; anything further along is left to finish or be aborted.
        if matches!(self.db.phase, Phase::Fencing { attempt, .. } if attempt.intent == Intent::Failover)
            && self.leading()
        {
            self.abandon(now, "superseded by a forced promotion");
        }
        let refuse = if self.db.busy() {
            Some("a promotion is already in progress")
        } else if !self.leading() {
            Some("this controller does not lead")
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
        self.db.attempts = 0;
        self.timers.stop(Timer::RetryDatabase);
        let lag_bytes = self.lag_of(node);
        let attempt = Attempt {
            old: self.db.writer,
            candidate: node,
            epoch: self.db.epoch_for(node),
            intent: Intent::Forced,
            gate: RpoGate::Forced,
            lag_bytes,
            proof: None,
        };
        self.start_attempt(now, attempt);
    }
}
