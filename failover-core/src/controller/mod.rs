//! The sans-IO failover state machine.

mod database;
mod health;
mod passive;
mod residency;
mod routing;
mod timers;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::{
    Action, ActionId, Command, Config, CoordinationEvent, Epoch, Event, EventKind, FencingToken,
    Health, Input, NodeObservation, Policy, RegionId, RegionStatus, Status, Topology, WeightPlan,
    WriterRecord,
};

/// State a controller resumes from, all in one step: what the durable
/// stores say (the coordination store's intent and writer record, the
/// database's recorded epochs). [`Controller::restore`] takes it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Restored {
    /// The highest promotion epoch recorded durably
    /// (`DatabaseAdmin::recorded_epoch`): the next promotion uses a greater one.
    pub epoch_floor: Epoch,
    /// The writer and its epoch, when known (from the store's writer record);
    /// otherwise the topology's configured primary at epoch 0.
    pub writer: Option<WriterRecord>,
    /// Regions an operator drained.
    pub drained: Vec<RegionId>,
    /// Whether automation was paused.
    pub paused: bool,
    /// Whether the controller runs with a coordinator (several controllers
    /// and a store): it then acts only while it leads, which it learns from
    /// [`CoordinationEvent::Leadership`]. Without one it always leads.
    pub coordinated: bool,
}

use database::Database;
use health::{RegionTrack, VantageTrack};
use passive::PassiveTrack;
use timers::{Timer, TimerTable};

/// The failover decision core for one service: it tracks every region's
/// health from probe results, decides the traffic weights and drives database
/// promotion. It performs no I/O and never reads a clock.
///
/// # Methods, by group
///
/// - **Getters** (`&self`): [`status`](Self::status), [`topology`](Self::topology),
///   [`policy`](Self::policy), [`poll_timeout`](Self::poll_timeout).
/// - **Inputs**: [`handle`](Self::handle) with an [`Input`] (a probe result, a
///   replication observation, an action's completion or failure, an operator
///   [`Command`]), and [`handle_timeout`](Self::handle_timeout) when the deadline
///   from `poll_timeout` has passed.
/// - **Commands**: operator commands arrive as [`Input::Command`]; also
///   [`set_epoch_floor`](Self::set_epoch_floor) at start-up.
/// - **Outputs**: [`poll_action`](Self::poll_action) returns the next [`Action`],
///   [`poll_timeout`](Self::poll_timeout) the next deadline.
///
/// # The driver's order of calls
///
/// 1. [`Controller::new`] queues the initial weight plan (a `SetWeights` for
///    every region, from `policy.initial_health`); call
///    [`set_epoch_floor`](Self::set_epoch_floor) with the highest epoch recorded
///    durably, then drain `poll_action` once.
/// 2. After **every** `handle` or `handle_timeout`, call `poll_action` until it
///    returns `None`, then read `poll_timeout` and sleep until that instant or
///    the next input, whichever comes first.
/// 3. Execute each `SetWeights`, `Fence` and `Promote` and report its outcome
///    with [`Input::ActionDone`] or [`Input::ActionFailed`] carrying the action's
///    id. `Notify` needs no report: log it (see
///    [`Event::display`](crate::Event::display)).
///
/// Extra `handle_timeout` calls are harmless: only expired timers run.
///
/// # Rules it applies
///
/// - A vantage votes a region down after `fall` consecutive failures and up
///   after `rise` consecutive successes; the region is down when a quorum of
///   vantages votes down and up when too few remain to form that quorum.
/// - With `policy.passive`, the service's traffic reports
///   ([`Input::Traffic`]) are a second signal: `fall` reports in a row that
///   find the region's users failing (error or slow rate over the window,
///   or consecutive errors) mark it down whatever its probes say, and
///   `rise` healthy ones clear that
///   ([`EventKind::UsersFailing`](crate::EventKind::UsersFailing)).
/// - A region that went down stays out for `hold_down`; one that went down
///   `flap_limit` times within `flap_window` is damped for a whole window.
/// - A region returning to rotation ramps through `ramp_steps`, one step per
///   `ramp_interval`; failing again aborts the ramp.
/// - Active regions share traffic by base weight; standby regions serve only
///   the share the active regions cannot (all of it when none serves).
/// - When nothing can serve, `all_down` decides (fail-open serves every
///   undrained region at base weight). Probe evidence alone never brings the
///   serving regions below `min_serving_regions`: regions that served are kept.
/// - The writer's database is down after `fall` observations in a row that
///   could not reach it, unless a replica vouches for it: its WAL receiver
///   heard from the writer after those misses began
///   ([`EventKind::DatabaseDownVetoed`](crate::EventKind::DatabaseDownVetoed)).
/// - When the writer is lost — its region down, its database down, or its
///   guard lease expired —
///   and `auto_promote` is on, the replica with the most WAL in a serving
///   region (ties by priority) is promoted if within `max_rpo`, but only
///   once the old writer is **proven stopped**: its fence confirmed, or its
///   guard lease expired at the store. An unreachable writer is not proof;
///   without proof by `proof_timeout` the promotion is refused, and retried
///   after a backoff. Then the new writer record is claimed (compare-and-set
///   under the leader's token), then the replica is promoted with the next
///   epoch; the writer moves only once the promotion is reported done.
/// - With a coordinator, only the leader acts: a controller that does not
///   lead tracks health and reports status but sends no action.
pub struct Controller {
    topology: Topology,
    policy: Policy,
    quorum: u32,
    vantage_count: usize,
    vantages: Vec<VantageTrack>,
    regions: Vec<RegionTrack>,
    /// Passive health per region (empty windows while `policy.passive` is off).
    passive: Vec<PassiveTrack>,
    /// Scratch for computing weights without allocating.
    scratch: Vec<u32>,
    plan: Option<WeightPlan>,
    plan_action: Option<ActionId>,
    weights_backoff: Duration,
    all_down: bool,
    saturated: bool,
    db: Database,
    paused: bool,
    timers: TimerTable,
    actions: VecDeque<Action>,
    next_action: u64,
    /// The highest plan generation seen in the coordination store.
    stored_generation: u64,
    /// Whether a coordinator decides leadership.
    coordinated: bool,
    /// This controller's leadership term, if it leads.
    leader: Option<FencingToken>,
    /// Test-only loosened promotion rule (feature `chaos-unsafe`): promote
    /// without proof that the old writer stopped. Always false unless
    /// [`unsafe_promote_without_stop_proof`](Self::unsafe_promote_without_stop_proof) was called.
    unsafe_no_stop_proof: bool,
}

impl Controller {
    // ---------------------------------------------------------------- creation

    /// Builds a controller for a validated configuration and queues the
    /// initial weight plan. `now` is the driver's clock. The same as
    /// [`restore`](Self::restore) with nothing restored.
    pub fn new(config: Config, now: Instant) -> Controller {
        Controller::restore(config, now, Restored::default())
    }

    /// Builds a controller that resumes from `restored` — epoch floor,
    /// writer, drains, pause, coordination — in one step, then queues the
    /// weight plan those imply (unless it must wait for leadership).
    pub fn restore(config: Config, now: Instant, restored: Restored) -> Controller {
        let (topology, policy) = config.into_parts();
        let vantage_count = topology.vantages().len().max(1);
        let quorum = policy.effective_quorum(vantage_count).max(1);
        let initial = match policy.initial_health {
            crate::InitialHealth::Unknown => Health::Unknown,
            crate::InitialHealth::Up => Health::Up,
            crate::InitialHealth::Down => Health::Down,
        };
        let region_count = topology.regions().len();
        let flap_limit = policy.flap_limit as usize;
        let vantages = vec![VantageTrack::new(initial); region_count * vantage_count];
        let regions = (0..region_count)
            .map(|_| RegionTrack::new(initial, flap_limit))
            .collect();
        let passive = (0..region_count)
            .map(|_| PassiveTrack::new(policy.passive.is_some()))
            .collect();
        let db = Database::new(&topology);
        let mut controller = Controller {
            quorum,
            vantage_count,
            vantages,
            regions,
            passive,
            scratch: vec![0; region_count],
            plan: None,
            plan_action: None,
            weights_backoff: Duration::ZERO,
            all_down: false,
            saturated: false,
            db,
            paused: false,
            timers: TimerTable::default(),
            // Room for a burst of decisions so queuing never allocates in steady state.
            actions: VecDeque::with_capacity(64 + 8 * region_count),
            next_action: 1,
            stored_generation: 0,
            coordinated: restored.coordinated,
            leader: (!restored.coordinated).then_some(FencingToken(0)),
            unsafe_no_stop_proof: false,
            topology,
            policy,
        };
        controller.db.epoch = restored.epoch_floor;
        if let Some(w) = restored
            .writer
            .filter(|w| w.node.index() < controller.db.nodes.len())
        {
            controller.db.writer = Some(w.node);
            controller.db.writer_epoch = w.epoch;
            controller.db.writer_draining = w.draining;
            controller.db.epoch = controller.db.epoch.max(w.epoch);
        }
        for region in restored.drained {
            if let Some(r) = controller.regions.get_mut(region.index()) {
                r.drained = true;
            }
        }
        controller.paused = restored.paused;
        controller.init_eligibility(now);
        controller.recompute(now);
        controller
    }

    // ----------------------------------------------------------------- getters

    /// A snapshot of health, weights, writer, epoch and automation state.
    pub fn status(&self) -> Status {
        let regions = self
            .topology
            .region_ids()
            .map(|id| {
                let r = &self.regions[id.index()];
                RegionStatus {
                    id,
                    health: r.health,
                    weight: self.plan.as_ref().map_or(0, |p| p.weight(id)),
                    drained: r.drained,
                    ramp_step: r.ramp,
                    held_until: r.out_until(),
                }
            })
            .collect();
        Status {
            regions,
            plan: self.plan.clone(),
            writer: self.db.writer,
            epoch: self.db.epoch,
            promotion: self.db.phase(),
            paused: self.paused,
            leader: self.leader,
            synchronous: self.db.writer_sync,
        }
    }

    /// The topology the controller runs with (ids index it).
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// The policy the controller runs with.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The desired weight plan: the last one issued.
    pub fn plan(&self) -> Option<&WeightPlan> {
        self.plan.as_ref()
    }

    /// The node taking writes, if known.
    pub fn writer(&self) -> Option<crate::NodeId> {
        self.db.writer
    }

    /// The writer a local DNS may name, with its promotion epoch: the
    /// known writer once its own last observation shows it promoted — a
    /// primary at the writer's epoch (none recorded counts as 0, a fresh
    /// deployment's configured primary) that is not fenced. `None` while a
    /// claimed node is still a replica, or the writer is fenced, unreached
    /// or unknown.
    ///
    /// For a controller that does not lead, the writer is the one the
    /// coordination store records, which names a claimed candidate before
    /// its promotion completes: this is the rule that keeps a follower's
    /// writer name from moving before the promotion did. The leader's own
    /// `Promoted` and `WriterMoved` events say the same sooner.
    pub fn promoted_writer(&self) -> Option<(crate::NodeId, Epoch)> {
        let node = self.db.writer?;
        match self.db.nodes.get(node.index())?.last? {
            NodeObservation::Primary {
                epoch,
                fenced: false,
                ..
            } if epoch.unwrap_or(Epoch(0)) == self.db.writer_epoch => {
                Some((node, self.db.writer_epoch))
            }
            _ => None,
        }
    }

    /// The highest epoch used or seen.
    pub fn epoch(&self) -> Epoch {
        self.db.epoch
    }

    // ------------------------------------------------------------------ inputs

    /// Feeds one input. Drain [`poll_action`](Self::poll_action) afterwards.
    /// Ids that do not belong to this topology are ignored.
    pub fn handle(&mut self, now: Instant, input: Input) {
        match input {
            Input::Probe(probe) => self.on_probe(now, probe),
            Input::Replication(status) => self.on_replication(now, status),
            Input::ActionDone { id } => self.on_action_done(now, id, None),
            Input::FenceDone { id, final_lsn } => self.on_action_done(now, id, Some(final_lsn)),
            Input::ActionFailed { id, failure } => self.on_action_failed(now, id, failure),
            Input::Command(command) => self.on_command(now, command),
            Input::Coordination(event) => self.on_coordination(now, event),
            Input::Traffic(report) => self.on_traffic(now, report),
        }
    }

    /// Runs every timer that has expired at `now`. Calling it early or twice
    /// does nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(timer) = self.timers.take_expired(now) {
            match timer {
                // Paused: no automatic weight change; Resume re-arms both.
                Timer::Ramp | Timer::Release if self.paused => {}
                Timer::Ramp => self.on_ramp_timer(now),
                Timer::Release => self.recompute(now),
                Timer::RetryWeights => self.resend_plan(now),
                Timer::RetryDatabase => {
                    if matches!(self.db.phase, database::Phase::Unproven { .. }) {
                        self.db.phase = database::Phase::Idle;
                    }
                    self.evaluate_writer(now);
                    self.unfence_writer(now);
                    self.undrain_writer(now, "a failed lifting of the drain is retried");
                }
                Timer::DatabaseStep => self.on_step_deadline(now),
                Timer::RetryFence => self.on_retry_fence(now),
            }
        }
    }

    // ---------------------------------------------------------------- commands

    /// **Test-only, unsafe.** Loosens the promotion rule: an automatic
    /// failover promotes as soon as the writer is lost, on "unreachable"
    /// alone, without a confirmed fence, an expired guard lease or a
    /// synchronous standby (the proof is recorded as
    /// [`StopProof::Forced`](crate::StopProof::Forced)). In a partition the
    /// old writer keeps serving its region, so this makes two writers: it
    /// exists only so chaos drills can show that their checker catches them
    /// (issue 11). Needs the `chaos-unsafe` feature; never call it outside
    /// such a test.
    #[cfg(feature = "chaos-unsafe")]
    pub fn unsafe_promote_without_stop_proof(&mut self) {
        self.unsafe_no_stop_proof = true;
    }

    /// Records the highest epoch stored durably (read by the driver at
    /// start-up): the next promotion uses a greater one.
    pub fn set_epoch_floor(&mut self, epoch: Epoch) {
        self.db.epoch = self.db.epoch.max(epoch);
    }

    fn on_command(&mut self, now: Instant, command: Command) {
        // Ids come from the operator's tooling: one from another topology is
        // refused out loud rather than ignored.
        let unknown = match command {
            Command::Drain(region) | Command::Undrain(region) => {
                (region.index() >= self.regions.len()).then_some("no such region in the topology")
            }
            Command::Switchover { to: node } | Command::ForcePromote { node } => (node.index()
                >= self.topology.nodes().len())
            .then_some("no such database node in the topology"),
            _ => None,
        };
        if let Some(reason) = unknown {
            self.notify(now, EventKind::CommandRefused { reason });
            return;
        }
        match command {
            Command::Drain(region) => self.drain(now, region),
            Command::Undrain(region) => self.undrain(now, region),
            Command::Switchover { to } => self.switchover(now, to),
            Command::ForcePromote { node } => self.force_promote(now, node),
            Command::Pause => {
                if !self.paused {
                    self.paused = true;
                    self.notify(now, EventKind::Paused);
                    // Only automatic attempts stop; an operator's own
                    // switchover or forced promotion goes on.
                    if self
                        .db
                        .attempt()
                        .is_some_and(|a| a.intent == database::Intent::Failover)
                    {
                        self.abandon(now, "automation paused");
                    }
                }
            }
            Command::Abort => {
                if self.db.busy() {
                    self.abandon(now, "aborted by operator");
                } else {
                    self.notify(
                        now,
                        EventKind::CommandRefused {
                            reason: "no promotion in progress to abort",
                        },
                    );
                }
            }
            Command::Resume => {
                if self.paused {
                    self.paused = false;
                    self.notify(now, EventKind::Resumed);
                    for r in &mut self.regions {
                        r.routed = r.health;
                    }
                    self.recompute(now);
                    if matches!(self.db.phase, database::Phase::NeedsOperator { .. }) {
                        self.db.phase = database::Phase::Idle;
                        self.db.attempts = 0;
                    }
                    self.evaluate_writer(now);
                }
            }
        }
    }

    fn on_coordination(&mut self, now: Instant, event: CoordinationEvent) {
        match event {
            CoordinationEvent::Leadership(token) => {
                if !self.coordinated || token == self.leader {
                    return;
                }
                let was = self.leader;
                self.leader = token;
                self.notify(now, EventKind::LeadershipChanged { token });
                if token.is_none() {
                    // A deposed leader sends nothing more for what it started.
                    self.abandon(now, "leadership lost");
                    self.plan_action = None;
                    return;
                }
                if was.is_none() {
                    // A new term: make the desired state live again.
                    self.plan_action = None;
                    self.resend_plan(now);
                    self.seed_writer_record(now);
                    self.evaluate_writer(now);
                    self.finish_claimed_promotion(now, None);
                    self.undrain_writer(
                        now,
                        "no switchover is under way (a drain left by an earlier leader)",
                    );
                }
            }
            CoordinationEvent::Writer(record) => self.on_writer_record(now, record),
            CoordinationEvent::GuardLease { node, held } => self.on_guard_lease(now, node, held),
            CoordinationEvent::Verdict {
                vantage,
                region,
                health,
            } => self.on_verdict(now, vantage, region, health),
            CoordinationEvent::Intent(intent) => self.on_intent(now, intent),
            CoordinationEvent::Plan(plan) => {
                self.stored_generation = self.stored_generation.max(plan.generation);
            }
        }
    }

    /// This controller's own verdicts — each region's health as `vantage`'s
    /// fall/rise thresholds judge it from the probe results — to publish for
    /// the other controllers. Regions this vantage has no result for yet are
    /// left out.
    pub fn verdicts(&self, vantage: crate::VantageId) -> Vec<crate::Verdict> {
        if vantage.index() >= self.vantage_count {
            return Vec::new();
        }
        self.topology
            .region_ids()
            .filter_map(|region| {
                let track = &self.vantages[region.index() * self.vantage_count + vantage.index()];
                (track.reported() && !track.leased()).then_some(crate::Verdict {
                    vantage,
                    region,
                    health: track.state,
                })
            })
            .collect()
    }

    /// Operator intent from the store (written by whichever controller took
    /// the command): drains and pause converge on every controller.
    fn on_intent(&mut self, now: Instant, intent: crate::Intent) {
        for i in 0..self.regions.len() {
            let want = intent.drained.iter().any(|r| r.index() == i);
            if want && !self.regions[i].drained {
                self.drain(now, RegionId(i as u32));
            } else if !want && self.regions[i].drained {
                self.undrain(now, RegionId(i as u32));
            }
        }
        if intent.paused != self.paused {
            let command = if intent.paused {
                Command::Pause
            } else {
                Command::Resume
            };
            self.on_command(now, command);
        }
    }

    /// The operator intent this controller holds (drains and pause), to
    /// store so it survives restarts and leader changes.
    pub fn intent(&self) -> crate::Intent {
        crate::Intent {
            drained: self
                .topology
                .region_ids()
                .filter(|r| self.regions[r.index()].drained)
                .collect(),
            paused: self.paused,
        }
    }

    /// Whether this controller may act: always without a coordinator, and
    /// while it holds the leader lease with one.
    pub fn leading(&self) -> bool {
        self.leader.is_some()
    }

    /// The leadership term this controller acts under: its token while it
    /// leads with a coordinator, `None` while it does not, and
    /// `FencingToken(0)` without a coordinator.
    pub fn token(&self) -> Option<FencingToken> {
        self.leader
    }

    /// Whether this controller runs with a coordinator.
    pub fn coordinated(&self) -> bool {
        self.coordinated
    }

    // ----------------------------------------------------------------- outputs

    /// The next action to execute, in order; `None` when there is nothing to do.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must be called next, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    // --------------------------------------------------------------- internals

    fn notify(&mut self, now: Instant, kind: EventKind) {
        self.actions
            .push_back(Action::Notify(Event { at: now, kind }));
    }

    fn next_id(&mut self) -> ActionId {
        let id = ActionId(self.next_action);
        self.next_action += 1;
        id
    }

    fn on_action_done(&mut self, now: Instant, id: ActionId, final_lsn: Option<crate::Lsn>) {
        if self.plan_action == Some(id) {
            self.plan_action = None;
            self.weights_backoff = Duration::ZERO;
            return;
        }
        self.on_database_done(now, id, final_lsn);
    }

    fn on_action_failed(&mut self, now: Instant, id: ActionId, failure: crate::ActionFailure) {
        if self.plan_action == Some(id) {
            self.plan_action = None;
            self.weights_backoff = next_backoff(self.weights_backoff, self.policy.ttl);
            let retry = later(now, self.weights_backoff);
            self.timers.set(
                Timer::RetryWeights,
                retry,
                timers::TimerReason::WeightsFailed,
            );
            self.notify(
                now,
                EventKind::ActionFailed {
                    id,
                    action: crate::ActionKind::SetWeights,
                    kind: failure.kind,
                    message: failure.message,
                    retry_in: Some(self.weights_backoff),
                },
            );
            return;
        }
        self.on_database_failed(now, id, failure);
    }

    /// Every armed deadline with the reason it was armed (in timer-kind
    /// order): answers "why will the controller wake at T?".
    pub fn deadlines(&self) -> impl Iterator<Item = (Instant, &'static str)> + '_ {
        Timer::ALL.into_iter().filter_map(|t| {
            self.timers.get(t).map(|d| {
                let why = match d.reason {
                    timers::TimerReason::FailbackRamp => "failback ramp step",
                    timers::TimerReason::HoldDown => "hold-down or damping ends",
                    timers::TimerReason::WeightsFailed => "re-send failed weight plan",
                    timers::TimerReason::DatabaseFailed => "retry promotion",
                    timers::TimerReason::AwaitingProof => {
                        "give up waiting for proof the old writer stopped"
                    }
                    timers::TimerReason::CatchUp => "switchover catch-up deadline",
                    timers::TimerReason::Claim => "writer record claim deadline",
                    timers::TimerReason::Promote => "promotion deadline",
                    timers::TimerReason::RetryFence => "re-send the old writer's fence",
                    timers::TimerReason::DrainMark => "switchover drain mark deadline",
                    timers::TimerReason::Drain => "switchover drain ends: fence the old writer",
                };
                (d.at, why)
            })
        })
    }
}

/// `now + d`, saturating instead of panicking on absurd configured durations.
fn later(now: Instant, d: Duration) -> Instant {
    now.checked_add(d)
        .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 86_400)))
        .unwrap_or(now)
}

/// Doubles from 1 s, capped at the TTL (and at least 1 s).
fn next_backoff(previous: Duration, cap: Duration) -> Duration {
    let next = if previous.is_zero() {
        Duration::from_secs(1)
    } else {
        previous.saturating_mul(2)
    };
    next.min(cap.max(Duration::from_secs(1)))
}
