//! What happened and why: every decision the controller takes is one [`Event`],
//! delivered as [`Action::Notify`](crate::Action::Notify).
//!
//! Events carry compact ids; render them with region and node names through
//! [`Event::display`].

use std::fmt;
use std::time::{Duration, Instant};

use crate::{
    duration_serde, ActionId, AllDownPolicy, Epoch, FencingToken, Lsn, MaxRpo, NodeId,
    PortErrorKind, ProbeFailure, RegionId, SyncSet, Topology, TrafficRule, VantageId,
};

/// One decision or observation worth telling an operator, with its reason.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// When (the `now` of the call that produced it).
    pub at: Instant,
    /// What.
    pub kind: EventKind,
}

impl Event {
    /// Renders the event with region, vantage and node names from `topology`
    /// (the controller's own, see [`Controller::topology`](crate::Controller::topology)).
    pub fn display<'a>(&'a self, topology: &'a Topology) -> EventDisplay<'a> {
        EventDisplay {
            kind: &self.kind,
            topology,
        }
    }
}

/// Which kind of action failed, in [`EventKind::ActionFailed`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ActionKind {
    /// [`Action::SetWeights`](crate::Action::SetWeights).
    SetWeights,
    /// [`Action::Fence`](crate::Action::Fence).
    Fence,
    /// [`Action::Promote`](crate::Action::Promote).
    Promote,
    /// [`Action::Unfence`](crate::Action::Unfence).
    Unfence,
    /// [`Action::SetWriter`](crate::Action::SetWriter).
    SetWriter,
    /// [`Action::SetSynchronous`](crate::Action::SetSynchronous).
    SetSynchronous,
}

/// What proved that an old writer stopped taking writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StopProof {
    /// Its fence was confirmed by the node itself.
    FenceConfirmed,
    /// Its guard lease expired at the coordination store: its guard fenced
    /// it before that, or guard and node are down.
    GuardLeaseExpired,
    /// The candidate is a synchronous standby the old writer required (the
    /// writer record says so): the old writer cannot acknowledge a commit
    /// the candidate lacks, and once the candidate is promoted it stops
    /// receiving, so the old writer acknowledges nothing more. Its guard
    /// still fences it within the guard TTL.
    SynchronousStandby,
    /// An operator forced the promotion: no proof (split-brain risk accepted).
    Forced,
}

/// The kinds of [`Event`]. Each is emitted once per decision, at the moment the
/// controller takes it.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum EventKind {
    /// The first failed probe of a vantage that considered the region up: an
    /// early warning, nothing changes yet.
    ProbeFailed {
        /// The region probed.
        region: RegionId,
        /// The vantage that saw it.
        vantage: VantageId,
        /// Why the probe failed.
        failure: ProbeFailure,
        /// Consecutive failures so far (1 for the first miss).
        consecutive: u32,
        /// Failures needed to mark the vantage down (`policy.fall`).
        fall: u32,
    },
    /// A vantage crossed `fall` consecutive failures: it now votes the region down.
    VantageDown {
        /// The region.
        region: RegionId,
        /// The vantage.
        vantage: VantageId,
        /// The failure of the last probe.
        failure: ProbeFailure,
        /// Consecutive failures (= `policy.fall`).
        consecutive: u32,
    },
    /// A vantage crossed `rise` consecutive successes: it now votes the region up.
    VantageUp {
        /// The region.
        region: RegionId,
        /// The vantage.
        vantage: VantageId,
        /// Consecutive successes (= `policy.rise`).
        consecutive: u32,
    },
    /// A quorum of vantages says the region is down.
    RegionDown {
        /// The region.
        region: RegionId,
        /// Vantages voting down.
        down_votes: u32,
        /// Vantages in the topology.
        vantages: u32,
        /// Votes needed (`policy.quorum`, default a majority).
        quorum: u32,
    },
    /// Enough vantages say the region is up that no down quorum remains.
    RegionUp {
        /// The region.
        region: RegionId,
        /// Vantages voting up.
        up_votes: u32,
        /// Vantages in the topology.
        vantages: u32,
    },
    /// The region is up again but stays out of rotation until `until`
    /// (`policy.hold_down` after it went down).
    HeldDown {
        /// The region.
        region: RegionId,
        /// When it may return.
        until: Instant,
    },
    /// The region went down `flaps` times within `policy.flap_window`: it stays
    /// out of rotation until it has been stable for a whole window.
    FlapDamped {
        /// The region.
        region: RegionId,
        /// Down-transitions counted in the window.
        flaps: u32,
        /// Earliest return (extended if it goes down again).
        until: Instant,
    },
    /// A region returning to rotation moved to the next failback step.
    RampStep {
        /// The region.
        region: RegionId,
        /// Its share now, in percent of its base weight.
        percent: u8,
    },
    /// A region failed again during its failback ramp; the ramp restarts later
    /// from the first step.
    FailbackAborted {
        /// The region.
        region: RegionId,
        /// The step it had reached, in percent of base weight.
        percent: u8,
    },
    /// A new weight plan was issued (see the `SetWeights` action beside it).
    WeightsChanged {
        /// The plan's generation.
        generation: u64,
        /// Regions with a weight above zero.
        serving: u32,
        /// Whether this re-sends a plan whose application failed.
        retry: bool,
    },
    /// No region is eligible to serve: the all-down policy decides.
    AllDown {
        /// What is served now.
        policy: AllDownPolicy,
    },
    /// A region that probes say is down keeps serving, because draining it would
    /// leave fewer than `policy.min_serving_regions` serving.
    SafetyHold {
        /// The region kept in rotation.
        region: RegionId,
        /// The configured minimum.
        min_serving: u32,
    },
    /// The serving regions' capacity is below peak load: they will saturate.
    CapacityWarning {
        /// Peak load over their combined capacity, in percent (167 = 1.67× capacity).
        load_percent: u32,
    },
    /// The old primary is being fenced ahead of a promotion (or because it is stale).
    FencingRequested {
        /// The node to fence.
        node: NodeId,
        /// The epoch recorded on it.
        epoch: Epoch,
    },
    /// A replica is being promoted.
    PromotionRequested {
        /// The replica.
        node: NodeId,
        /// Its new epoch.
        epoch: Epoch,
        /// WAL bytes it is behind the last known primary position, when
        /// known (a forced promotion may not know).
        lag_bytes: Option<u64>,
        /// Whether an operator forced it (no RPO gate).
        forced: bool,
    },
    /// The best replica is further behind than `policy.max_rpo`: no automatic
    /// promotion. The controller waits for it to catch up; an operator can force.
    PromotionRefused {
        /// The best candidate.
        node: NodeId,
        /// WAL bytes it is behind; `None` when no position of the writer
        /// was ever seen (a byte limit cannot be checked, so it refuses).
        lag_bytes: Option<u64>,
        /// Its replay delay, when known.
        delay: Option<Duration>,
        /// The limit it broke.
        limit: MaxRpo,
    },
    /// The writer's region is down but no replica in a serving region qualifies.
    NoPromotionCandidate {
        /// The writer that is lost.
        writer: NodeId,
    },
    /// A promotion completed: the node is the writer.
    Promoted {
        /// The new primary.
        node: NodeId,
        /// Its epoch.
        epoch: Epoch,
    },
    /// A node reports being primary with a higher epoch than the controller
    /// knew (promoted before a restart, or by another controller): adopted as
    /// the writer without a second promotion.
    WriterMoved {
        /// The writer before.
        from: Option<NodeId>,
        /// The writer now.
        to: NodeId,
        /// Its epoch.
        epoch: Epoch,
    },
    /// A single controller without a writer record (after a restart) finds
    /// the writer of the last promotion fenced by its own guard, every node
    /// answering and no other node a primary: it names that node again, so
    /// its guard lifts the fence (followed by [`WriterMoved`](Self::WriterMoved)).
    WriterRestored {
        /// The node, a fenced primary.
        node: NodeId,
        /// Its promotion epoch, which the record names again.
        epoch: Epoch,
    },
    /// A node claims to be primary but is not the writer at the current epoch:
    /// it is fenced and never promoted.
    StalePrimary {
        /// The node.
        node: NodeId,
        /// The epoch it carries, if any.
        epoch: Option<Epoch>,
        /// The current epoch.
        current: Epoch,
    },
    /// A planned switchover waits for the target to replay everything.
    SwitchoverWaiting {
        /// The target replica.
        node: NodeId,
        /// WAL bytes it still has to replay.
        lag_bytes: u64,
    },
    /// A failover waits, before claiming, for its candidate to receive more
    /// of the fenced writer's last WAL: the fence reported a final position
    /// the candidate is further behind than `max_rpo` allows.
    FailoverCatchingUp {
        /// The candidate.
        node: NodeId,
        /// WAL bytes it is behind the fenced writer's final position.
        lag_bytes: u64,
    },
    /// The old writer was seen taking writes (an unfenced primary, in an
    /// observation begun after it was proven stopped): the proof is void,
    /// and the attempt is abandoned before it claims or promotes.
    ProofVoided {
        /// The old writer.
        node: NodeId,
    },
    /// An action failed; `next` says what the controller does about it.
    ActionFailed {
        /// The failed action.
        id: ActionId,
        /// Its kind.
        action: ActionKind,
        /// The adapter's error kind.
        kind: PortErrorKind,
        /// The adapter's message.
        message: String,
        /// For weights: the plan is re-sent after this delay.
        retry_in: Option<Duration>,
    },
    /// Automation paused by an operator.
    Paused,
    /// Automation resumed by an operator.
    Resumed,
    /// An operator drained a region.
    Drained {
        /// The region.
        region: RegionId,
    },
    /// An operator returned a region to health-driven routing.
    Undrained {
        /// The region.
        region: RegionId,
    },
    /// An operator command was not carried out.
    CommandRefused {
        /// Why, in words.
        reason: &'static str,
    },
    /// The old writer is proven stopped; the promotion may proceed.
    StopProven {
        /// The old writer.
        node: NodeId,
        /// The proof.
        proof: StopProof,
    },
    /// No proof that the old writer stopped arrived within
    /// `policy.proof_timeout`: nothing is promoted (an unreachable writer may
    /// still be taking writes in its own region).
    PromotionUnproven {
        /// The old writer.
        node: NodeId,
        /// The replica that would have been promoted.
        candidate: NodeId,
        /// How long the controller waited.
        waited: Duration,
        /// Whether guards are configured (`policy.guard_ttl`).
        guards: bool,
        /// When the controller tries again, unless an operator acts first.
        retry_in: Option<Duration>,
    },
    /// A promotion step did not finish within `policy.step_timeout`.
    StepTimedOut {
        /// The step: "claim", "catch-up" or "promote".
        step: &'static str,
        /// The node it concerned.
        node: NodeId,
    },
    /// A promotion in progress was abandoned.
    PromotionAborted {
        /// The replica it would have promoted.
        node: NodeId,
        /// Why: "operator abort", "paused", "leadership lost", ...
        reason: &'static str,
    },
    /// `policy.max_attempts` promotions failed in a row: automation stops
    /// retrying until an operator acts or the writer's region recovers.
    NeedsOperator {
        /// The writer that is lost.
        writer: NodeId,
        /// Failed attempts.
        attempts: u32,
    },
    /// The fence on a node that is still the writer is being lifted.
    UnfenceRequested {
        /// The node.
        node: NodeId,
        /// The fence's epoch.
        epoch: Epoch,
    },
    /// A planned switchover marks the writer draining in the writer record
    /// (its guard's `/writer` then answers 503, so load balancers stop
    /// sending it new connections) and fences it `drain` later.
    WriterDrainRequested {
        /// The writer being drained.
        node: NodeId,
        /// The switchover's target.
        candidate: NodeId,
        /// `policy.writer_drain`.
        drain: Duration,
    },
    /// The store confirmed the drain mark: the wait of `drain` before the
    /// fence starts now.
    WriterDraining {
        /// The writer being drained.
        node: NodeId,
        /// How long until its fence.
        drain: Duration,
    },
    /// A drain no switchover follows any more is lifted: the writer record
    /// is written without the mark, so load balancers send the writer
    /// connections again.
    WriterUndrainRequested {
        /// The writer.
        node: NodeId,
        /// Why: "the switchover was abandoned: operator abort", ...
        reason: &'static str,
    },
    /// The new writer is being claimed in the coordination store.
    WriterClaimRequested {
        /// The replica promoted next.
        node: NodeId,
        /// Its epoch.
        epoch: Epoch,
    },
    /// `misses` observations in a row could not reach a database node: its
    /// database is down (for the writer, a reason to move it; a promotion
    /// still needs proof that it stopped).
    DatabaseDown {
        /// The node.
        node: NodeId,
        /// Observations in a row that failed (`policy.fall`).
        misses: u32,
    },
    /// `misses` observations in a row could not reach the writer, but a
    /// replica's WAL stream heard from it since they began: the writer is
    /// alive and only this controller's path to it fails (a loaded
    /// controller, a partition between the controller and the writer). It
    /// is not declared down while a replica keeps vouching for it;
    /// [`DatabaseDown`](EventKind::DatabaseDown) follows if the stream stops.
    DatabaseDownVetoed {
        /// The writer.
        node: NodeId,
        /// Observations in a row that failed.
        misses: u32,
        /// The replica whose stream heard from it.
        witness: NodeId,
        /// How long before this event the witness last heard from it.
        heard_ago: Duration,
    },
    /// A database node that was down answers again.
    DatabaseUp {
        /// The node.
        node: NodeId,
    },
    /// The writer's synchronous standbys are being changed (one step of it:
    /// `step` is "configure the writer" or "record"), with the reason.
    SynchronousChanging {
        /// The writer.
        writer: NodeId,
        /// The set it will require (configure) or the record will name (record).
        standbys: SyncSet,
        /// Which step: the writer's configuration, or the writer record.
        step: &'static str,
        /// Why.
        reason: &'static str,
    },
    /// The writer record now names these synchronous standbys: each has
    /// every commit the writer acknowledged, and may be promoted without
    /// waiting for the writer's guard lease. Empty: the writer replicates
    /// asynchronously, and `max_rpo` bounds what a failover may lose.
    SynchronousRecorded {
        /// The writer.
        writer: NodeId,
        /// The standbys.
        standbys: SyncSet,
    },
    /// Strict synchronous mode: the writer's synchronous standby is lost and
    /// no replica can replace it, so the writer's commits wait (writes stop)
    /// rather than be acknowledged without a standby.
    SynchronousBlocked {
        /// The writer.
        writer: NodeId,
        /// The standby it still requires.
        standby: NodeId,
    },
    /// Commits on the writer have waited `waited` (at least `fall` ×
    /// `interval`) for the synchronous standby it requires: the standby is
    /// reachable, perhaps healthy, but no longer acknowledges — its stream
    /// from the writer is cut or stalled. It is treated as lost (the record
    /// drops it, then the writer requires another replica or, when
    /// synchronous mode is `on` and none can, none) until it has received
    /// `behind`, the writer's position when this was seen.
    SynchronousStalled {
        /// The writer.
        writer: NodeId,
        /// The standby it requires.
        standby: NodeId,
        /// How long the writer's commits had waited (its `sync_wait`).
        waited: Duration,
        /// The writer's WAL position then: the standby counts again once it
        /// has received this far.
        behind: Lsn,
    },
    /// The writer record names a node that is still a replica: the leader
    /// that claimed it (after proving the old writer stopped) did not finish
    /// the promotion, so this leader does, at the claimed epoch.
    PromotionResumed {
        /// The node the record names.
        node: NodeId,
        /// The claimed epoch.
        epoch: Epoch,
    },
    /// This controller gained (`Some`) or lost (`None`) leadership.
    LeadershipChanged {
        /// The token of the term, if leading.
        token: Option<FencingToken>,
    },
    /// A node guard's lease appeared or expired at the coordination store.
    GuardLeaseChanged {
        /// The node.
        node: NodeId,
        /// Whether it is held now.
        held: bool,
    },
    /// Passive health: `policy.fall` reports in a row judged the region's
    /// users failing. The region is down as if a probe quorum said so
    /// (hold-down, damping, `min_serving_regions` and `all_down` apply)
    /// until its users recover.
    UsersFailing {
        /// The region.
        region: RegionId,
        /// The rule that judged it.
        rule: TrafficRule,
        /// Requests in the window.
        requests: u32,
        /// Failed requests in the window.
        errors: u32,
        /// Slow requests in the window.
        slow: u32,
        /// Errors in a row, as the last report said.
        consecutive_errors: u32,
        /// `policy.passive.window`.
        window: Duration,
        /// Failing judgements in a row (= `policy.fall`).
        judgements: u32,
    },
    /// Every region of a residency group is out while other groups serve:
    /// its traffic may not go to another group, so `policy.all_down`
    /// applies to the group alone (`fail-open` serves its undrained regions
    /// at base weight, `fail-closed` none of them).
    ResidencyAllDown {
        /// The group's first region (its `residency` names the group).
        region: RegionId,
        /// What the group serves now.
        policy: AllDownPolicy,
    },
    /// The writer is lost and the only replica that could replace it is in
    /// another residency group: a region fails over only within its group
    /// (`region.residency`), so it is not promoted automatically. An
    /// operator may still force it.
    ResidencyRefused {
        /// The lost writer.
        writer: NodeId,
        /// The replica in another group that was refused.
        candidate: NodeId,
    },
    /// Passive health: the region's users no longer fail, so probes alone
    /// decide its health again.
    UsersRecovered {
        /// The region.
        region: RegionId,
        /// Requests in the window.
        requests: u32,
        /// Failed requests in the window.
        errors: u32,
        /// Healthy judgements in a row (= `policy.rise`), or 0 when the
        /// failing judgement expired: no report judged it failing for a
        /// whole window and too few requests remain to judge.
        judgements: u32,
    },
}

/// [`Event`] rendered with names; from [`Event::display`].
pub struct EventDisplay<'a> {
    kind: &'a EventKind,
    topology: &'a Topology,
}

impl EventDisplay<'_> {
    fn region(&self, id: RegionId) -> &str {
        self.topology
            .regions()
            .get(id.index())
            .map_or("?", |r| r.name.as_str())
    }
    fn vantage(&self, id: VantageId) -> &str {
        self.topology
            .vantages()
            .get(id.index())
            .map_or("?", |v| v.as_str())
    }
    fn node(&self, id: NodeId) -> &str {
        self.topology
            .nodes()
            .get(id.index())
            .map_or("?", |n| n.name.as_str())
    }
    fn nodes(&self, f: &mut fmt::Formatter<'_>, set: SyncSet) -> fmt::Result {
        if set.is_empty() {
            return f.write_str("no standby");
        }
        for (i, n) in set.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(self.node(n))?;
        }
        Ok(())
    }
}

fn secs(d: Duration) -> String {
    duration_serde::format(d)
}

impl fmt::Display for EventDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            EventKind::ProbeFailed {
                region,
                vantage,
                failure,
                consecutive,
                fall,
            } => write!(
                f,
                "probe of {} from {} failed ({failure}), miss {consecutive} of {fall}",
                self.region(*region),
                self.vantage(*vantage)
            ),
            EventKind::VantageDown {
                region,
                vantage,
                failure,
                consecutive,
            } => write!(
                f,
                "{} sees {} down after {consecutive} consecutive failures ({failure})",
                self.vantage(*vantage),
                self.region(*region)
            ),
            EventKind::VantageUp {
                region,
                vantage,
                consecutive,
            } => write!(
                f,
                "{} sees {} up after {consecutive} consecutive successes",
                self.vantage(*vantage),
                self.region(*region)
            ),
            EventKind::RegionDown {
                region,
                down_votes,
                vantages,
                quorum,
            } => write!(
                f,
                "{} marked DOWN: {down_votes}/{vantages} vantages agree (quorum {quorum})",
                self.region(*region)
            ),
            EventKind::RegionUp {
                region,
                up_votes,
                vantages,
            } => write!(
                f,
                "{} marked UP: {up_votes}/{vantages} vantages agree",
                self.region(*region)
            ),
            EventKind::HeldDown { region, .. } => {
                write!(f, "{} up but held down", self.region(*region))
            }
            EventKind::FlapDamped { region, flaps, .. } => write!(
                f,
                "{} flapping ({flaps} downs in the window): held out of rotation",
                self.region(*region)
            ),
            EventKind::RampStep { region, percent } => write!(
                f,
                "failback: {} at {percent}% of its base weight",
                self.region(*region)
            ),
            EventKind::FailbackAborted { region, percent } => write!(
                f,
                "failback of {} aborted at {percent}%: it failed again",
                self.region(*region)
            ),
            EventKind::WeightsChanged {
                generation,
                serving,
                retry,
            } => write!(
                f,
                "new weight plan #{generation}: {serving} region(s) serving{}",
                if *retry { " (re-sent)" } else { "" }
            ),
            EventKind::AllDown { policy } => match policy {
                AllDownPolicy::FailOpen => {
                    f.write_str("every region is down: fail-open, serving all regions")
                }
                AllDownPolicy::FailClosed => {
                    f.write_str("every region is down: fail-closed, serving nothing")
                }
            },
            EventKind::SafetyHold {
                region,
                min_serving,
            } => write!(
                f,
                "{} kept serving: draining it would leave fewer than {min_serving} region(s)",
                self.region(*region)
            ),
            EventKind::CapacityWarning { load_percent } => write!(
                f,
                "SATURATION: serving regions carry {load_percent}% of their capacity at peak"
            ),
            EventKind::FencingRequested { node, epoch } => {
                write!(f, "fencing {} ({epoch})", self.node(*node))
            }
            EventKind::PromotionRequested {
                node,
                epoch,
                lag_bytes,
                forced,
            } => write!(
                f,
                "promoting {} ({epoch}, {} behind the old primary{})",
                self.node(*node),
                lag_bytes.map_or_else(|| "unknown bytes".to_owned(), |b| format!("{b} bytes")),
                if *forced { ", forced" } else { "" }
            ),
            EventKind::PromotionRefused {
                node,
                lag_bytes,
                delay,
                limit,
            } => {
                match lag_bytes {
                    Some(b) => write!(
                        f,
                        "promotion of {} refused: {b} bytes behind",
                        self.node(*node)
                    )?,
                    None => write!(
                        f,
                        "promotion of {} refused: its lag is unknown (the writer's position was never seen)",
                        self.node(*node)
                    )?,
                }
                if let Some(d) = delay {
                    write!(f, ", {} delay", secs(*d))?;
                }
                write!(f, "; max_rpo is")?;
                if let Some(b) = limit.bytes {
                    write!(f, " {b} bytes")?;
                }
                if let Some(t) = limit.time {
                    write!(f, " {}", secs(t))?;
                }
                f.write_str(" (an operator can force)")
            }
            EventKind::NoPromotionCandidate { writer } => write!(
                f,
                "writer {} lost and no replica in a serving region qualifies",
                self.node(*writer)
            ),
            EventKind::Promoted { node, epoch } => {
                write!(f, "{} promoted: new writer at {epoch}", self.node(*node))
            }
            EventKind::WriterMoved { from, to, epoch } => write!(
                f,
                "writer is {} at {epoch} (was {}): adopted",
                self.node(*to),
                from.map_or("none", |n| self.node(n))
            ),
            EventKind::WriterRestored { node, epoch } => write!(
                f,
                "{} is the writer at {epoch} again: its guard fenced it while no writer record named it (the controller restarted), every node answers and none was promoted since; naming it lets its guard lift the fence",
                self.node(*node)
            ),
            EventKind::StalePrimary {
                node,
                epoch,
                current,
            } => write!(
                f,
                "{} claims primary at {} but the current is {current}: stale, fencing",
                self.node(*node),
                epoch.map_or_else(|| "no epoch".to_owned(), |e| e.to_string())
            ),
            EventKind::SwitchoverWaiting { node, lag_bytes } => write!(
                f,
                "switchover waits for {} to replay {lag_bytes} more bytes",
                self.node(*node)
            ),
            EventKind::FailoverCatchingUp { node, lag_bytes } => write!(
                f,
                "failover waits for {} to receive the fenced writer's last WAL: {lag_bytes} bytes behind, more than max_rpo allows",
                self.node(*node)
            ),
            EventKind::ProofVoided { node } => write!(
                f,
                "{} was seen as an unfenced primary after it was proven stopped: proof void, attempt abandoned",
                self.node(*node)
            ),
            EventKind::ActionFailed {
                id,
                action,
                kind,
                message,
                retry_in,
            } => {
                write!(
                    f,
                    "{action:?} action #{} failed ({kind:?}): {message}",
                    id.0
                )?;
                if let Some(d) = retry_in {
                    write!(f, "; re-sending in {}", secs(*d))?;
                }
                Ok(())
            }
            EventKind::Paused => f.write_str("automation paused by operator"),
            EventKind::Resumed => f.write_str("automation resumed by operator"),
            EventKind::Drained { region } => {
                write!(f, "{} drained by operator", self.region(*region))
            }
            EventKind::Undrained { region } => {
                write!(f, "{} undrained by operator", self.region(*region))
            }
            EventKind::CommandRefused { reason } => write!(f, "command refused: {reason}"),
            EventKind::StopProven { node, proof } => match proof {
                StopProof::FenceConfirmed => {
                    write!(f, "{} proven stopped: fence confirmed", self.node(*node))
                }
                StopProof::GuardLeaseExpired => write!(
                    f,
                    "{} proven stopped: its guard lease expired",
                    self.node(*node)
                ),
                StopProof::SynchronousStandby => write!(
                    f,
                    "{} cannot acknowledge a commit the candidate lacks: it requires the candidate as its synchronous standby (its guard fences it within the TTL)",
                    self.node(*node)
                ),
                StopProof::Forced => write!(
                    f,
                    "{} NOT proven stopped: promotion forced by operator (split-brain risk accepted)",
                    self.node(*node)
                ),
            },
            EventKind::PromotionUnproven {
                node,
                candidate,
                waited,
                guards,
                retry_in,
            } => {
                write!(
                    f,
                    "not promoting {}: {} is not proven stopped after {} (fence not confirmed{}); it may still take writes in its region",
                    self.node(*candidate),
                    self.node(*node),
                    secs(*waited),
                    if *guards {
                        ", guard lease still held"
                    } else {
                        ", and no node guards are configured (policy.guard_ttl)"
                    }
                )?;
                if let Some(d) = retry_in {
                    write!(f, "; trying again in {}", secs(*d))?;
                }
                write!(
                    f,
                    "; an operator who has confirmed {} is down can force-promote",
                    self.node(*node)
                )
            }
            EventKind::StepTimedOut { step, node } => write!(
                f,
                "promotion step {step} for {} timed out",
                self.node(*node)
            ),
            EventKind::PromotionAborted { node, reason } => write!(
                f,
                "promotion of {} abandoned: {reason}",
                self.node(*node)
            ),
            EventKind::NeedsOperator { writer, attempts } => write!(
                f,
                "NEEDS OPERATOR: writer {} lost and {attempts} promotion attempts failed; automation stopped retrying",
                self.node(*writer)
            ),
            EventKind::UnfenceRequested { node, epoch } => write!(
                f,
                "unfencing {} ({epoch}): it is still the writer",
                self.node(*node)
            ),
            EventKind::WriterDrainRequested {
                node,
                candidate,
                drain,
            } => write!(
                f,
                "switchover to {}: marking {} draining in the writer record so load balancers stop sending it new connections; it is fenced {} after the store confirms",
                self.node(*candidate),
                self.node(*node),
                secs(*drain)
            ),
            EventKind::WriterDraining { node, drain } => write!(
                f,
                "{} is draining: its /writer answers 503; fencing it in {} (policy.writer_drain), once load balancers have marked it down",
                self.node(*node),
                secs(*drain)
            ),
            EventKind::WriterUndrainRequested { node, reason } => write!(
                f,
                "lifting the drain of {}: {reason}; it takes new connections again",
                self.node(*node)
            ),
            EventKind::WriterClaimRequested { node, epoch } => write!(
                f,
                "claiming the writer record for {} ({epoch})",
                self.node(*node)
            ),
            EventKind::DatabaseDown { node, misses } => write!(
                f,
                "database {} down: {misses} observations in a row could not reach it",
                self.node(*node)
            ),
            EventKind::DatabaseDownVetoed {
                node,
                misses,
                witness,
                heard_ago,
            } => write!(
                f,
                "database {} not declared down: {misses} observations in a row could not reach it, \
                 but replica {} received its WAL stream {heard_ago:?} ago, after they began",
                self.node(*node),
                self.node(*witness)
            ),
            EventKind::DatabaseUp { node } => {
                write!(f, "database {} answers again", self.node(*node))
            }
            EventKind::SynchronousChanging {
                writer,
                standbys,
                step,
                reason,
            } => {
                write!(f, "synchronous standbys of {}: {step} ", self.node(*writer))?;
                self.nodes(f, *standbys)?;
                write!(f, " ({reason})")
            }
            EventKind::SynchronousRecorded { writer, standbys } => {
                if standbys.is_empty() {
                    write!(
                        f,
                        "writer {} replicates asynchronously: a failover may lose up to max_rpo",
                        self.node(*writer)
                    )
                } else {
                    write!(f, "writer {} requires ", self.node(*writer))?;
                    self.nodes(f, *standbys)?;
                    write!(
                        f,
                        " for every commit: promotable without waiting for its guard lease"
                    )
                }
            }
            EventKind::SynchronousBlocked { writer, standby } => write!(
                f,
                "writer {} still requires lost standby {} (strict synchronous mode): its commits wait until the standby returns or a replica can replace it",
                self.node(*writer),
                self.node(*standby)
            ),
            EventKind::SynchronousStalled {
                writer,
                standby,
                waited,
                behind,
            } => write!(
                f,
                "writer {}'s commits have waited {} ms for standby {}: it no longer acknowledges, and is not required again until it has received {behind}",
                self.node(*writer),
                waited.as_millis(),
                self.node(*standby)
            ),
            EventKind::PromotionResumed { node, epoch } => write!(
                f,
                "resuming the promotion of {} ({epoch}): the writer record names it, and the leader that claimed it did not finish",
                self.node(*node)
            ),
            EventKind::LeadershipChanged { token } => match token {
                Some(t) => write!(f, "this controller leads ({t})"),
                None => f.write_str("this controller does not lead: it acts on nothing"),
            },
            EventKind::GuardLeaseChanged { node, held } => write!(
                f,
                "guard lease of {} {}",
                self.node(*node),
                if *held { "held" } else { "EXPIRED" }
            ),
            EventKind::UsersFailing {
                region,
                rule,
                requests,
                errors,
                slow,
                consecutive_errors,
                window,
                judgements,
            } => {
                write!(f, "users of {} are failing: ", self.region(*region))?;
                match rule {
                    TrafficRule::ErrorRate { max } => write!(
                        f,
                        "{errors} of {requests} requests failed in the last {} ({:.0} %, above the {:.0} % limit)",
                        duration_serde::format(*window),
                        percent(*errors, *requests),
                        max * 100.0
                    )?,
                    TrafficRule::SlowRate { max, threshold } => write!(
                        f,
                        "{slow} of {requests} requests took over {} in the last {} ({:.0} %, above the {:.0} % limit)",
                        duration_serde::format(*threshold),
                        duration_serde::format(*window),
                        percent(*slow, *requests),
                        max * 100.0
                    )?,
                    TrafficRule::ConsecutiveErrors { limit } => write!(
                        f,
                        "{consecutive_errors} errors in a row (limit {limit}; {errors} of {requests} requests failed in the last {})",
                        duration_serde::format(*window)
                    )?,
                }
                write!(
                    f,
                    ", {judgements} reports in a row: marked down by passive health"
                )
            }
            EventKind::ResidencyAllDown { region, policy } => {
                let group = self.topology.region(*region).residency.as_deref().unwrap_or("(none)");
                write!(
                    f,
                    "every region of residency group {group} is out and its traffic may not leave the group: "
                )?;
                match policy {
                    AllDownPolicy::FailOpen => {
                        f.write_str("fail-open serves them all at base weight")
                    }
                    AllDownPolicy::FailClosed => f.write_str("fail-closed serves none of them"),
                }
            }
            EventKind::ResidencyRefused { writer, candidate } => {
                let group = |n: &NodeId| {
                    let r = self.topology.node_region(*n);
                    self.topology.region(r).residency.as_deref().unwrap_or("(none)")
                };
                write!(
                    f,
                    "promotion of {} refused by the residency rule: writer {} is in residency group {},                      the replica in group {}, and a region fails over only within its group                      (region.residency); an operator may force it",
                    self.node(*candidate),
                    self.node(*writer),
                    group(writer),
                    group(candidate)
                )
            }
            EventKind::UsersRecovered {
                region,
                requests,
                errors,
                judgements,
            } => {
                if *judgements == 0 {
                    write!(
                        f,
                        "users of {}: no failing report for a whole window and too few requests to judge ({errors} of {requests} failed): passive health no longer holds it down",
                        self.region(*region)
                    )
                } else {
                    write!(
                        f,
                        "users of {} recovered: {errors} of {requests} requests failed in the window, {judgements} healthy reports in a row",
                        self.region(*region)
                    )
                }
            }
        }
    }
}

/// `part` of `whole` in percent (0 for an empty whole).
fn percent(part: u32, whole: u32) -> f64 {
    if whole == 0 {
        0.0
    } else {
        f64::from(part) * 100.0 / f64::from(whole)
    }
}
