//! The simulation loop: a time-ordered queue of probe starts and reports,
//! database observations, action completions and fault edges, interleaved
//! with the controller's own deadlines. The world model (regions, a router,
//! a primary writing WAL and replicas trailing it) answers every action the
//! way a real adapter would, including refusing stale epochs and RPO breaches.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use super::{Fault, Happening, Report, Scenario, SimRng, TimelineEntry};
use crate::objectives::{rpo_from_lag, RpoEstimate};
use crate::{
    Action, ActionFailure, Controller, CoordinationEvent, Epoch, EventKind, Input, Lsn, NodeId,
    NodeObservation, PortErrorKind, ProbeFailure, ProbeOutcome, ProbeResult, RegionId,
    ReplicationStatus, RpoGate, VantageId, WeightPlan,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Step {
    RegionEdge {
        region: u32,
    },
    /// A probe that started `took` before this step reports now; its outcome
    /// was decided at its start (faults are functions of time). `slot` is
    /// its place on the target's fixed grid; jitter delayed its start.
    ProbeReport {
        region: u32,
        vantage: u32,
        ok: bool,
        slot: Duration,
    },
    Observe,
    Complete {
        slot: u32,
    },
    CutOver {
        generation: u64,
    },
    /// A node guard's lease ends at the store: its region has been cut off
    /// for a whole `guard_ttl`, so the guard has fenced its node.
    GuardExpiry {
        node: u32,
    },
}

#[derive(Clone, Copy, Debug)]
struct SimNode {
    region: RegionId,
    primary: bool,
    fenced: bool,
    epoch: Option<Epoch>,
    lsn: u64,
}

struct Engine<'a> {
    s: &'a Scenario,
    c: Controller,
    t0: Instant,
    now: Duration,
    rng: SimRng,
    heap: BinaryHeap<Reverse<(Duration, u64, Step)>>,
    seq: u64,
    pending: Vec<Option<(Action, Result<(), PortErrorKind>)>>,
    region_down: Vec<bool>,
    nodes: Vec<SimNode>,
    writer: Option<usize>,
    writer_alive: bool,
    wal: f64,
    wal_at: Duration,
    applied: u64,
    first_fault: Option<(RegionId, Duration)>,
    cutover_generation: Option<u64>,
    report: Report,
}

pub(super) fn run(s: &Scenario) -> Report {
    let t0 = s.start;
    let topology = s.config.topology();
    let nodes: Vec<SimNode> = topology
        .node_ids()
        .map(|n| SimNode {
            region: topology.node_region(n),
            primary: topology.node(n).primary,
            fenced: false,
            epoch: None,
            lsn: 0,
        })
        .collect();
    let writer = nodes.iter().position(|n| n.primary);
    let first_fault = s
        .faults
        .iter()
        .filter_map(|f| f.region().map(|r| (r, f.start())))
        .min_by_key(|(_, t)| *t);
    let mut e = Engine {
        s,
        c: Controller::new(s.config.clone(), t0),
        t0,
        now: Duration::ZERO,
        rng: SimRng::new(s.seed),
        heap: BinaryHeap::new(),
        seq: 0,
        pending: Vec::new(),
        region_down: vec![false; topology.regions().len()],
        nodes,
        writer,
        writer_alive: writer.is_some(),
        wal: 0.0,
        wal_at: Duration::ZERO,
        applied: 0,
        first_fault,
        cutover_generation: None,
        report: Report {
            timeline: Vec::new(),
            detection: None,
            cutover: None,
            data_loss: None,
            probes: 0,
            actions: 0,
        },
    };
    e.schedule_start();
    if e.s.config.policy().guard_ttl.is_some() {
        for i in 0..e.nodes.len() {
            e.c.handle(
                t0,
                Input::Coordination(CoordinationEvent::GuardLease {
                    node: NodeId(i as u32),
                    held: true,
                }),
            );
        }
    }
    e.drain();
    e.run_loop();
    e.report
}

impl Engine<'_> {
    fn push(&mut self, at: Duration, step: Step) {
        self.seq += 1;
        self.heap.push(Reverse((at, self.seq, step)));
    }

    fn schedule_start(&mut self) {
        let topology = self.s.config.topology();
        let (regions, vantages) = (topology.regions().len(), topology.vantages().len());
        let slots = (regions * vantages).max(1) as u32;
        let interval = self.s.config.policy().interval;
        for r in 0..regions {
            for v in 0..vantages {
                let k = (r * vantages + v) as u32;
                self.start_probe(r as u32, v as u32, interval * k / slots);
            }
        }
        self.push(Duration::ZERO, Step::Observe);
        let faults = self.s.faults.clone();
        for fault in faults {
            match fault {
                Fault::Outage {
                    region,
                    from,
                    until,
                } => {
                    self.push(from, Step::RegionEdge { region: region.0 });
                    if let Some(until) = until {
                        self.push(until, Step::RegionEdge { region: region.0 });
                    }
                }
                Fault::Flapping {
                    region,
                    from,
                    until,
                    period,
                } => {
                    let mut t = from;
                    while t < until && !period.is_zero() {
                        self.push(t, Step::RegionEdge { region: region.0 });
                        t += period;
                    }
                    self.push(until, Step::RegionEdge { region: region.0 });
                }
                Fault::RouterOutage { .. } => {}
            }
        }
    }

    fn run_loop(&mut self) {
        loop {
            let timer = self
                .c
                .poll_timeout()
                .map(|at| at.saturating_duration_since(self.t0));
            let next = self.heap.peek().map(|Reverse((at, _, _))| *at);
            let timer_first = match (timer, next) {
                (Some(t), Some(n)) => t <= n,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => return,
            };
            if timer_first {
                let at = timer.unwrap_or_default().max(self.now);
                if at > self.s.duration {
                    return;
                }
                self.now = at;
                self.c.handle_timeout(self.t0 + at);
            } else {
                let Some(Reverse((at, _, step))) = self.heap.pop() else {
                    return;
                };
                if at > self.s.duration {
                    return;
                }
                self.now = self.now.max(at);
                self.step(step);
            }
            self.drain();
        }
    }

    fn instant(&self) -> Instant {
        self.t0 + self.now
    }

    fn note(&mut self, what: Happening) {
        self.report
            .timeline
            .push(TimelineEntry { at: self.now, what });
    }

    fn is_down(&self, region: RegionId) -> bool {
        self.is_down_at(region, self.now)
    }

    fn is_down_at(&self, region: RegionId, t: Duration) -> bool {
        self.s.faults.iter().any(|f| f.region_down(region, t))
    }

    fn probe_duration(&self, ok: bool) -> Duration {
        if ok {
            self.s.probe_latency
        } else {
            self.s.config.policy().timeout
        }
    }

    /// Starts the probe of grid slot `slot` a random `0..jitter` after it
    /// (jitter capped at half the interval), as the probe scheduler does:
    /// the grid itself never drifts. Decides the outcome at the start and
    /// schedules the report.
    fn start_probe(&mut self, region: u32, vantage: u32, slot: Duration) {
        let policy = self.s.config.policy();
        let jitter = policy.jitter.min(policy.interval / 2);
        let start = slot + self.rng.duration_up_to(jitter);
        let down = self.is_down_at(RegionId(region), start);
        let ok = !down && !self.rng.chance(self.s.probe_loss);
        let at = start + self.probe_duration(ok);
        self.push(
            at,
            Step::ProbeReport {
                region,
                vantage,
                ok,
                slot,
            },
        );
    }

    fn router_out(&self) -> bool {
        self.s.faults.iter().any(|f| match *f {
            Fault::RouterOutage { from, until } => self.now >= from && self.now < until,
            _ => false,
        })
    }

    fn step(&mut self, step: Step) {
        match step {
            Step::RegionEdge { region } => {
                let id = RegionId(region);
                let down = self.is_down(id);
                let Some(was) = self.region_down.get(region as usize).copied() else {
                    return;
                };
                if down != was {
                    self.advance_wal();
                    self.region_down[region as usize] = down;
                    self.refresh_writer_alive();
                    self.guards_follow(id, down);
                    self.note(if down {
                        Happening::RegionFailed(id)
                    } else {
                        Happening::RegionRecovered(id)
                    });
                }
            }
            Step::ProbeReport {
                region,
                vantage,
                ok,
                slot,
            } => {
                self.report.probes += 1;
                let took = self.probe_duration(ok);
                let started = self.now.saturating_sub(took);
                // The next slot still ahead; slots the probe overran are
                // skipped, never run late.
                let interval = self
                    .s
                    .config
                    .policy()
                    .interval
                    .max(Duration::from_millis(1));
                let mut next = slot + interval;
                while next < self.now {
                    next += interval;
                }
                self.start_probe(region, vantage, next);
                let outcome = if ok {
                    ProbeOutcome::Ok {
                        latency: self.s.probe_latency,
                    }
                } else if self.is_down_at(RegionId(region), started) {
                    ProbeOutcome::Failed(ProbeFailure::ConnectTimeout)
                } else {
                    ProbeOutcome::Failed(ProbeFailure::ResponseTimeout)
                };
                let now = self.instant();
                self.c.handle(
                    now,
                    Input::Probe(ProbeResult {
                        region: RegionId(region),
                        vantage: VantageId(vantage),
                        at: now,
                        outcome,
                    }),
                );
            }
            Step::Observe => {
                self.observe_all();
                let every = self
                    .s
                    .observe_every
                    .unwrap_or(self.s.config.policy().interval);
                if !self.nodes.is_empty() && !every.is_zero() {
                    self.push(self.now + every, Step::Observe);
                }
            }
            Step::Complete { slot } => self.complete(slot as usize),
            Step::GuardExpiry { node } => {
                let Some(n) = self.nodes.get(node as usize).copied() else {
                    return;
                };
                if self.region_down[n.region.index()] {
                    // The guard fenced its node before the lease could expire.
                    self.advance_wal();
                    self.nodes[node as usize].fenced = true;
                    self.refresh_writer_alive();
                    let now = self.instant();
                    self.c.handle(
                        now,
                        Input::Coordination(CoordinationEvent::GuardLease {
                            node: NodeId(node),
                            held: false,
                        }),
                    );
                }
            }
            Step::CutOver { generation } => {
                if generation == self.applied {
                    self.note(Happening::ClientsCutOver { generation });
                }
                if self.cutover_generation == Some(generation) {
                    if let Some((_, start)) = self.first_fault {
                        self.report.cutover = Some(self.now.saturating_sub(start));
                    }
                    self.cutover_generation = None;
                }
            }
        }
    }

    // ------------------------------------------------------------ database world

    /// Node guards (when `policy.guard_ttl` is set): a guard in a region cut
    /// off from the store stops renewing at the fault, so its lease ends one
    /// TTL later (the store is outside the failed region); a guard whose
    /// region recovers renews at once.
    fn guards_follow(&mut self, region: RegionId, down: bool) {
        let Some(ttl) = self.s.config.policy().guard_ttl else {
            return;
        };
        for i in 0..self.nodes.len() {
            if self.nodes[i].region != region {
                continue;
            }
            if down {
                self.push(self.now + ttl, Step::GuardExpiry { node: i as u32 });
            } else {
                let now = self.instant();
                self.c.handle(
                    now,
                    Input::Coordination(CoordinationEvent::GuardLease {
                        node: NodeId(i as u32),
                        held: true,
                    }),
                );
            }
        }
    }

    fn refresh_writer_alive(&mut self) {
        self.writer_alive = self.writer.is_some_and(|w| {
            let n = &self.nodes[w];
            !n.fenced && !self.region_down[n.region.index()]
        });
    }

    /// Grows the primary's WAL and lets reachable replicas follow, `lag` behind.
    fn advance_wal(&mut self) {
        if self.writer_alive {
            self.wal += self.s.write_rate * (self.now - self.wal_at).as_secs_f64();
            let trailing = self.wal - self.s.write_rate * self.s.replication_lag.as_secs_f64();
            let trailing = trailing.max(0.0) as u64;
            for (i, n) in self.nodes.iter_mut().enumerate() {
                if Some(i) != self.writer && !n.primary && !self.region_down[n.region.index()] {
                    n.lsn = n.lsn.max(trailing);
                }
            }
        }
        self.wal_at = self.now;
        if let Some(w) = self.writer {
            self.nodes[w].lsn = self.wal as u64;
        }
    }

    fn observe_all(&mut self) {
        self.advance_wal();
        let now = self.instant();
        for i in 0..self.nodes.len() {
            let n = self.nodes[i];
            let observation = if self.region_down[n.region.index()] {
                NodeObservation::Unreachable
            } else if n.primary {
                NodeObservation::Primary {
                    timeline: 1,
                    current_lsn: Lsn(n.lsn),
                    epoch: n.epoch,
                    fenced: n.fenced,
                    sync_wait: None,
                }
            } else {
                // The writer streams WAL to every replica while its region is up.
                let streaming = self.writer.is_some_and(|w| {
                    !self.region_down[self.nodes[w].region.index()] && !self.nodes[w].fenced
                });
                NodeObservation::Replica {
                    timeline: 1,
                    receive_lsn: Some(Lsn(n.lsn)),
                    replay_lsn: Some(Lsn(n.lsn)),
                    replay_delay: Some(self.s.replication_lag),
                    upstream_heard: streaming.then_some(Duration::ZERO),
                }
            };
            self.c.handle(
                now,
                Input::Replication(ReplicationStatus {
                    node: NodeId(i as u32),
                    at: now,
                    observation,
                }),
            );
        }
    }

    fn highest_epoch(&self) -> Epoch {
        self.nodes
            .iter()
            .filter_map(|n| n.epoch)
            .max()
            .unwrap_or_default()
    }

    // ------------------------------------------------------------------ actions

    fn drain(&mut self) {
        while let Some(action) = self.c.poll_action() {
            let result = match &action {
                Action::Notify(event) => {
                    self.measure(&event.kind);
                    self.note(Happening::Controller(event.clone()));
                    continue;
                }
                Action::SetWeights { .. } if self.router_out() => Err(PortErrorKind::Unavailable),
                _ => Ok(()),
            };
            self.report.actions += 1;
            let slot = self.pending.len() as u32;
            self.pending.push(Some((action, result)));
            self.push(self.now + self.s.actuation, Step::Complete { slot });
        }
    }

    fn measure(&mut self, kind: &EventKind) {
        if let (EventKind::RegionDown { region, .. }, Some((faulted, start))) =
            (kind, self.first_fault)
        {
            if *region == faulted && self.now >= start && self.report.detection.is_none() {
                self.report.detection = Some(self.now - start);
            }
        }
    }

    fn complete(&mut self, slot: usize) {
        let Some((action, result)) = self.pending.get_mut(slot).and_then(Option::take) else {
            return;
        };
        // A fence reports the fenced node's final WAL position, as a real
        // adapter does; everything else just completes.
        let result = result.and_then(|()| match &action {
            Action::SetWeights { plan, .. } => {
                self.apply_plan(plan);
                Ok(None)
            }
            Action::Fence { node, epoch, .. } => self.fence(*node, *epoch).map(Some),
            Action::Promote { request, .. } => self
                .promote(request.node, request.epoch, request.gate)
                .map(|()| None),
            Action::Unfence { node, .. } => self.unfence(*node).map(|()| None),
            _ => Ok(None),
        });
        let Some(id) = action.id() else { return };
        let now = self.instant();
        let input = match result {
            Ok(Some(final_lsn)) => Input::FenceDone { id, final_lsn },
            Ok(None) => Input::ActionDone { id },
            Err(kind) => Input::ActionFailed {
                id,
                failure: ActionFailure {
                    kind,
                    message: self.failure_message(&action, kind),
                },
            },
        };
        self.c.handle(now, input);
    }

    fn failure_message(&self, action: &Action, kind: PortErrorKind) -> String {
        let topology = self.s.config.topology();
        let node = |n: NodeId| {
            topology
                .nodes()
                .get(n.index())
                .map_or("?", |n| n.name.as_str())
        };
        match (action, kind) {
            (Action::SetWeights { .. }, _) => "simulated DNS outage: update rejected".to_owned(),
            (Action::Fence { node: n, .. }, PortErrorKind::Unavailable)
            | (
                Action::Promote {
                    request: crate::PromoteRequest { node: n, .. },
                    ..
                },
                PortErrorKind::Unavailable,
            ) => {
                format!("{} unreachable (its region is down)", node(*n))
            }
            (Action::Promote { request, .. }, PortErrorKind::Refused) => {
                format!("{} refused: RPO gate or stale epoch", node(request.node))
            }
            _ => format!("simulated {kind:?}"),
        }
    }

    fn apply_plan(&mut self, plan: &WeightPlan) {
        if plan.generation <= self.applied {
            return;
        }
        self.applied = plan.generation;
        self.note(Happening::PlanApplied {
            generation: plan.generation,
            weights: plan.weights.clone(),
        });
        let ttl = plan.ttl;
        self.push(
            self.now + ttl,
            Step::CutOver {
                generation: plan.generation,
            },
        );
        if let Some((region, start)) = self.first_fault {
            let without = plan.weight(region) == 0 && plan.total() > 0;
            if without && self.now >= start && self.report.cutover.is_none() {
                self.cutover_generation = Some(plan.generation);
            }
        }
    }

    fn unfence(&mut self, node: NodeId) -> Result<(), PortErrorKind> {
        let n = *self.nodes.get(node.index()).ok_or(PortErrorKind::Config)?;
        if self.region_down[n.region.index()] {
            return Err(PortErrorKind::Unavailable);
        }
        self.advance_wal();
        self.nodes[node.index()].fenced = false;
        self.refresh_writer_alive();
        Ok(())
    }

    fn fence(&mut self, node: NodeId, epoch: Epoch) -> Result<Lsn, PortErrorKind> {
        let n = *self.nodes.get(node.index()).ok_or(PortErrorKind::Config)?;
        if self.region_down[n.region.index()] {
            return Err(PortErrorKind::Unavailable);
        }
        self.advance_wal();
        let n = &mut self.nodes[node.index()];
        n.fenced = true;
        n.epoch = Some(n.epoch.map_or(epoch, |e| e.max(epoch)));
        let final_lsn = Lsn(n.lsn);
        self.refresh_writer_alive();
        Ok(final_lsn)
    }

    fn promote(&mut self, node: NodeId, epoch: Epoch, gate: RpoGate) -> Result<(), PortErrorKind> {
        let n = *self.nodes.get(node.index()).ok_or(PortErrorKind::Config)?;
        if self.region_down[n.region.index()] {
            return Err(PortErrorKind::Unavailable);
        }
        if epoch <= self.highest_epoch() || n.primary {
            return Err(PortErrorKind::Refused);
        }
        self.advance_wal();
        let admitted = match gate {
            RpoGate::Forced => true,
            RpoGate::Within { max, reference } => {
                let lag = reference.map_or(0, |r| r.bytes_after(Lsn(n.lsn)));
                max.admits(lag, Some(self.s.replication_lag))
            }
            RpoGate::CaughtUp { lsn } => n.lsn >= lsn.0,
            // The simulator replicates asynchronously: it never names a
            // synchronous standby, so the controller never sends this gate.
            RpoGate::Synchronous => true,
        };
        if !admitted {
            return Err(PortErrorKind::Refused);
        }
        let lost = (self.wal as u64).saturating_sub(n.lsn);
        let loss: RpoEstimate = rpo_from_lag(lost, self.s.write_rate);
        let target = &mut self.nodes[node.index()];
        target.primary = true;
        target.epoch = Some(epoch);
        target.fenced = false;
        self.wal = target.lsn as f64;
        self.writer = Some(node.index());
        self.refresh_writer_alive();
        if self.report.data_loss.is_none() {
            self.report.data_loss = Some(loss);
        }
        self.note(Happening::DataLost { node, loss });
        Ok(())
    }
}
