//! RTO/RPO arithmetic as pure functions: how long detection, client cutover
//! and database cutover take, how much data a promotion loses, how loaded the
//! survivors are, how often probes fail over by mistake (single failures and
//! loss bursts), and which interval/fall meet a target RTO with a margin, at
//! what cost in probes.
//!
//! The worked example: interval 10 s, fall 3, timeout 2 s, TTL 60 s gives a
//! worst detection of 32 s (~30 s) and a worst client cutover of ~90 s; a
//! standby provisioned at 60 % of peak carries 167 % of its capacity.
//!
//! ```
//! use std::time::Duration;
//! use failover_core::objectives::{Bounds, ProbeTiming, survivor_load};
//!
//! let timing = ProbeTiming {
//!     interval: Duration::from_secs(10),
//!     timeout: Duration::from_secs(2),
//!     jitter: Duration::ZERO,
//!     fall: 3,
//! };
//! let b = Bounds::new(&timing, Duration::from_secs(60), Duration::from_secs(1));
//! assert_eq!(b.worst_detection, Duration::from_secs(32));
//! assert_eq!(b.worst_cutover, Duration::from_secs(93));
//! assert_eq!(survivor_load(&[0.6]).percent(), 167);
//! ```

use std::time::Duration;

use crate::{Policy, PromotionPhase, RegionId, Topology};

/// Seconds in a (365-day) year.
pub const SECONDS_PER_YEAR: f64 = 365.0 * 24.0 * 3600.0;

/// The probe settings detection time depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeTiming {
    /// Time between probes of one target from one vantage.
    pub interval: Duration,
    /// Longest a failing probe takes to report (a black-holed target).
    pub timeout: Duration,
    /// Most a probe start is delayed at random.
    pub jitter: Duration,
    /// Consecutive failures to mark down.
    pub fall: u32,
}

impl ProbeTiming {
    /// The timing of a policy.
    pub fn from_policy(policy: &Policy) -> Self {
        ProbeTiming {
            interval: policy.interval,
            timeout: policy.timeout,
            jitter: policy.jitter,
            fall: policy.fall,
        }
    }
}

/// Worst detection time: the outage starts just after a probe passed, the next
/// `fall` probes each start up to `interval + jitter` apart and the last takes
/// the whole `timeout` to fail: `fall × interval + jitter + timeout`.
pub fn worst_detection(t: &ProbeTiming) -> Duration {
    t.interval.saturating_mul(t.fall) + t.jitter + t.timeout
}

/// Best detection time: the outage starts just before a probe and every probe
/// fails at once (connection refused), and jitter delayed the first failing
/// probe the most and the `fall`-th not at all: `(fall − 1) × interval −
/// jitter` (0 for `fall = 1`). A true lower bound: no run detects sooner.
pub fn best_detection(t: &ProbeTiming) -> Duration {
    let spacing = t.interval.saturating_mul(t.fall.saturating_sub(1));
    if t.fall > 1 {
        spacing.saturating_sub(t.jitter)
    } else {
        spacing
    }
}

/// Time until every client uses the new plan: detection, then the time to
/// apply the plan (`actuation`, e.g. a DNS update), then the DNS TTL during
/// which resolvers may still hand out the old answer.
pub fn client_cutover(detection: Duration, actuation: Duration, ttl: Duration) -> Duration {
    detection + actuation + ttl
}

/// Best and worst detection and cutover of a configuration, in one place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    /// [`best_detection`].
    pub best_detection: Duration,
    /// [`worst_detection`].
    pub worst_detection: Duration,
    /// Best detection + actuation (clients whose cache just expired).
    pub best_cutover: Duration,
    /// Worst detection + actuation + TTL.
    pub worst_cutover: Duration,
}

impl Bounds {
    /// Bounds for probe timing `t`, DNS `ttl` and plan application time `actuation`.
    pub fn new(t: &ProbeTiming, ttl: Duration, actuation: Duration) -> Self {
        let best = best_detection(t);
        let worst = worst_detection(t);
        Bounds {
            best_detection: best,
            worst_detection: worst,
            best_cutover: best + actuation,
            worst_cutover: client_cutover(worst, actuation, ttl),
        }
    }

    /// Bounds of a policy with plan application time `actuation`.
    pub fn for_policy(policy: &Policy, actuation: Duration) -> Self {
        Bounds::new(&ProbeTiming::from_policy(policy), policy.ttl, actuation)
    }
}

/// Data a promotion would lose.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RpoEstimate {
    /// WAL bytes not on the promoted replica.
    pub bytes: u64,
    /// The window of writes lost, in time.
    pub window: Duration,
}

/// Loss when the replica is `lag_bytes` behind and the primary writes
/// `write_rate` bytes per second: the window is `lag / rate`.
pub fn rpo_from_lag(lag_bytes: u64, write_rate: f64) -> RpoEstimate {
    let window = if write_rate > 0.0 && write_rate.is_finite() {
        Duration::try_from_secs_f64(lag_bytes as f64 / write_rate).unwrap_or(Duration::MAX)
    } else {
        Duration::ZERO
    };
    RpoEstimate {
        bytes: lag_bytes,
        window,
    }
}

/// Loss when the replica replays `delay` behind a primary writing `write_rate`
/// bytes per second: `delay × rate` bytes.
pub fn rpo_from_delay(delay: Duration, write_rate: f64) -> RpoEstimate {
    let bytes = (delay.as_secs_f64() * write_rate.max(0.0)).round();
    RpoEstimate {
        bytes: if bytes.is_finite() { bytes as u64 } else { 0 },
        window: delay,
    }
}

/// Loss with asynchronous replication when the writer is cut off from its
/// replicas but alive (a partition, not a crash): its replicas stop
/// receiving at the cut, while it keeps acknowledging its own region's
/// commits until its guard fences it — at most `guard_ttl` after the cut,
/// since the guard fences `ttl − margin` after the last renewal it sent,
/// which was sent before the cut. So the window is the replica's delay at
/// the cut plus the guard TTL, at `write_rate` bytes per second. The RPO
/// gate cannot see this part: it measures the lag it last observed, and the
/// commits acknowledged after the cut were never sent to any replica.
/// (A stalled PostgreSQL its guard cannot fence is not bounded by this; see
/// README's "One writer, always".) With synchronous replication none of
/// those commits is acknowledged: the loss is zero.
pub fn rpo_isolated_writer(delay: Duration, guard_ttl: Duration, write_rate: f64) -> RpoEstimate {
    rpo_from_delay(delay.saturating_add(guard_ttl), write_rate)
}

/// Load on surviving regions against their capacity.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SurvivorLoad {
    /// Peak load over the survivors' combined capacity (1.0 = exactly full).
    pub load: f64,
}

impl SurvivorLoad {
    /// Load in percent of capacity, rounded (167 for a 0.6 standby).
    pub fn percent(&self) -> u32 {
        let p = (self.load * 100.0).round();
        if p.is_finite() {
            p.clamp(0.0, f64::from(u32::MAX)) as u32
        } else {
            u32::MAX
        }
    }
    /// Whether the survivors cannot carry peak load.
    pub fn saturated(&self) -> bool {
        self.load > 1.0
    }
}

/// Load when the whole peak (1.0) lands on regions with these capacities
/// (fractions of peak each can carry).
pub fn survivor_load(capacities: &[f64]) -> SurvivorLoad {
    let total: f64 = capacities.iter().filter(|c| c.is_finite()).sum();
    SurvivorLoad {
        load: if total > 0.0 {
            1.0 / total
        } else {
            f64::INFINITY
        },
    }
}

/// Load on every region of `topology` except `lost`, at peak.
pub fn load_after_losing(topology: &Topology, lost: &[RegionId]) -> SurvivorLoad {
    let capacities: Vec<f64> = topology
        .region_ids()
        .filter(|r| !lost.contains(r))
        .map(|r| topology.region(r).capacity)
        .collect();
    survivor_load(&capacities)
}

/// A region that residency leaves without a failover target
/// ([`residency_gaps`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResidencyGap {
    /// The region.
    pub region: RegionId,
    /// Its residency group (`None`: the regions without one).
    pub group: Option<String>,
    /// No other region of its group carries traffic: when it is lost its
    /// users have nowhere to go (the group's all-down policy applies).
    pub traffic: bool,
    /// It holds database nodes, and no other region of its group does: a
    /// writer here is never replaced automatically.
    pub database: bool,
}

/// The regions that residency (`region.residency`) leaves with no target
/// for traffic or for the database, in topology order. Empty for a
/// topology whose every region has another in its group.
pub fn residency_gaps(topology: &Topology) -> Vec<ResidencyGap> {
    let has_node = |r: RegionId| topology.node_ids().any(|n| topology.node_region(n) == r);
    topology
        .region_ids()
        .filter_map(|r| {
            let others = || {
                topology
                    .region_ids()
                    .filter(move |o| *o != r && topology.same_residency(r, *o))
            };
            let traffic = !others().any(|o| topology.region(o).base_weight > 0);
            let database = has_node(r) && !others().any(has_node);
            (traffic || database).then(|| ResidencyGap {
                region: r,
                group: topology.region(r).residency.clone(),
                traffic,
                database,
            })
        })
        .collect()
}

/// Expected false failovers per year for one region probed from one vantage:
/// a false down needs `fall` consecutive false failures, each with probability
/// `p` (independent), after a success: `(year / interval) × (1 − p) × p^fall`.
/// A vantage quorum above one only lowers it.
pub fn false_failovers_per_year(p: f64, fall: u32, interval: Duration) -> f64 {
    if interval.is_zero() || !(0.0..=1.0).contains(&p) {
        return f64::NAN;
    }
    let probes = SECONDS_PER_YEAR / interval.as_secs_f64();
    let fall = i32::try_from(fall).unwrap_or(i32::MAX);
    probes * (1.0 - p) * p.powi(fall)
}

/// Probe runs over one probe interval at this many seconds a year.
pub fn probes_per_year(interval: Duration) -> f64 {
    if interval.is_zero() {
        f64::INFINITY
    } else {
        SECONDS_PER_YEAR / interval.as_secs_f64()
    }
}

/// Correlated probe failures: episodes in which *every* probe of a healthy
/// region fails for a while (a transit provider's brownout, a BGP
/// reconvergence, a flapping link near the vantage), so failures come in
/// runs, not one by one. During a burst of `duration`, probes every
/// `interval` see about `duration / interval` consecutive failures, however
/// small the independent per-probe rate is; a `fall × interval` shorter than
/// the burst fails the region over.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LossBurst {
    /// How many bursts a year one (region, vantage) pair sees.
    pub per_year: f64,
    /// How long each burst lasts.
    pub duration: Duration,
}

impl LossBurst {
    /// No correlated failures: the independent model alone.
    pub const NONE: LossBurst = LossBurst {
        per_year: 0.0,
        duration: Duration::ZERO,
    };
}

impl Default for LossBurst {
    /// One 30 s burst a month (12 a year). An assumption to replace with
    /// your own history: count the runs of consecutive probe failures
    /// against regions that were in fact healthy, and their lengths.
    fn default() -> Self {
        LossBurst {
            per_year: 12.0,
            duration: Duration::from_secs(30),
        }
    }
}

/// Probability that a burst of `duration` holds at least `fall` probe starts
/// of a target probed every `interval`, the burst starting at a uniformly
/// random phase of the probe schedule: `clamp((duration − (fall − 1) ×
/// interval) / interval, 0, 1)`. (A probe that starts just before the burst
/// and is still waiting when it begins is not counted: the bound is for
/// probes that start inside it.)
pub fn burst_covers(duration: Duration, fall: u32, interval: Duration) -> f64 {
    if interval.is_zero() {
        return 1.0;
    }
    let needed = f64::from(fall.saturating_sub(1)) * interval.as_secs_f64();
    ((duration.as_secs_f64() - needed) / interval.as_secs_f64()).clamp(0.0, 1.0)
}

/// Expected false failovers per year caused by loss bursts, for one region
/// probed from one vantage: `bursts a year × burst_covers(duration, fall,
/// interval)`. It depends on the detection window `fall × interval`, not on
/// how often one probes, so probing faster with a larger `fall` does not
/// lower it: only a window longer than the bursts does.
pub fn burst_false_failovers_per_year(burst: &LossBurst, fall: u32, interval: Duration) -> f64 {
    if !(burst.per_year.is_finite() && burst.per_year >= 0.0) {
        return f64::NAN;
    }
    burst.per_year * burst_covers(burst.duration, fall, interval)
}

/// False failovers a year below which two choices count as equally safe
/// (one per thousand years); the planner then prefers the cheaper one.
pub const NEGLIGIBLE_FALSE_FAILOVERS_PER_YEAR: f64 = 0.001;

/// What [`plan`] must meet, and what it assumes about the probes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PlanTarget {
    /// Worst client cutover allowed (the RTO of traffic).
    pub rto: Duration,
    /// Share of the RTO kept free (0.1 = plans use at most 90 % of it), for
    /// what the arithmetic leaves out: a slow DNS provider, a resolver that
    /// stretches the TTL, a scheduler running late. In `0.0..1.0`.
    pub margin: f64,
    /// DNS TTL.
    pub ttl: Duration,
    /// Probe timeout (intervals must exceed it).
    pub timeout: Duration,
    /// Probe jitter.
    pub jitter: Duration,
    /// Time to apply a plan (DNS update).
    pub actuation: Duration,
    /// Probability that one probe of a healthy region fails anyway, each
    /// probe independently of the others.
    pub false_failure: f64,
    /// Correlated failures: runs of failed probes against a healthy region.
    pub burst: LossBurst,
}

impl Default for PlanTarget {
    /// RTO 120 s with a 10 % margin; TTL 60 s, timeout 2 s and jitter 1 s
    /// as [`Policy::default`]; 1 s to apply a plan; a false-failure rate of
    /// **0.001** (one probe in a thousand fails against a healthy region: a
    /// probe over the public internet with a 2 s timeout sees about that
    /// from packet loss, overloaded hops and the target's own slow tails);
    /// and [`LossBurst::default`] (one 30 s burst a month). The policy
    /// defaults (10 s × fall 3) meet it: worst cutover 94 s ≤ 108 s.
    fn default() -> Self {
        PlanTarget {
            rto: Duration::from_secs(120),
            margin: 0.1,
            ttl: Duration::from_secs(60),
            timeout: Duration::from_secs(2),
            jitter: Duration::from_secs(1),
            actuation: Duration::from_secs(1),
            false_failure: 0.001,
            burst: LossBurst::default(),
        }
    }
}

impl PlanTarget {
    /// The RTO less the margin: the most a plan's worst cutover may take.
    pub fn budget(&self) -> Duration {
        let keep = (1.0 - self.margin).clamp(0.0, 1.0);
        self.rto.mul_f64(keep)
    }
}

/// Something an operator should know before choosing a [`PlanChoice`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PlanWarning {
    /// `fall = 1`: a single lost probe fails the region over.
    SingleProbeFallsOver,
}

impl std::fmt::Display for PlanWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PlanWarning::SingleProbeFallsOver => f.write_str(
                "fall = 1: a single lost probe fails the region over; \
                 raise the RTO or lower the TTL to afford fall ≥ 2",
            ),
        }
    }
}

/// One interval/fall choice that meets a [`PlanTarget`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PlanChoice {
    /// Probe interval.
    pub interval: Duration,
    /// Consecutive failures to mark down.
    pub fall: u32,
    /// Worst detection with this choice.
    pub worst_detection: Duration,
    /// Worst client cutover with this choice (≤ the target's
    /// [`budget`](PlanTarget::budget)).
    pub worst_cutover: Duration,
    /// Time left below the target RTO: `rto − worst_cutover`, at least the
    /// target's margin.
    pub headroom: Duration,
    /// Expected false failovers per year, independent failures and loss
    /// bursts together, for one region from one vantage.
    pub false_failovers_per_year: f64,
    /// The part of [`false_failovers_per_year`](Self::false_failovers_per_year)
    /// that loss bursts cause.
    pub burst_false_failovers_per_year: f64,
    /// The cost: probes a year for one region from one vantage (multiply by
    /// regions × vantages for the whole deployment).
    pub probes_per_year: u64,
    /// What to know before choosing it.
    pub warning: Option<PlanWarning>,
}

/// Intervals the planner considers, in milliseconds: sub-second ones (for a
/// database cutover under a second, with probes that answer in tens of
/// milliseconds) up to a minute. An interval must exceed the target's probe
/// timeout to be considered.
pub const PLAN_INTERVALS_MS: [u64; 14] = [
    100, 200, 250, 500, 1_000, 2_000, 3_000, 5_000, 10_000, 15_000, 20_000, 30_000, 45_000, 60_000,
];

/// Interval/fall choices whose worst cutover fits the target's budget (the
/// RTO less its margin): for each candidate interval above the timeout, the
/// largest `fall` (1..=10) that fits (more falls, fewer false failovers).
///
/// Sorted safest first: by expected false failovers per year (independent
/// failures plus loss bursts; rates below
/// [`NEGLIGIBLE_FALSE_FAILOVERS_PER_YEAR`] count as equal), then by cost in
/// probes a year, then by cutover. Because bursts fail every probe for a
/// while, a short interval with a large `fall` is no safer than a long one
/// with the same window, and costs more: the planner does not push to the
/// shortest interval. Empty when even fall 1 at 100 ms cannot meet the budget
/// (the TTL alone may exceed it).
pub fn plan(target: &PlanTarget) -> Vec<PlanChoice> {
    let budget = target.budget();
    let mut choices: Vec<PlanChoice> = PLAN_INTERVALS_MS
        .iter()
        .map(|ms| Duration::from_millis(*ms))
        .filter(|interval| *interval > target.timeout)
        .filter_map(|interval| {
            (1..=10u32)
                .rev()
                .map(|fall| choice(target, interval, fall))
                .find(|c| c.worst_cutover <= budget)
        })
        .collect();
    let rank = |c: &PlanChoice| {
        if c.false_failovers_per_year < NEGLIGIBLE_FALSE_FAILOVERS_PER_YEAR {
            0.0
        } else {
            c.false_failovers_per_year
        }
    };
    choices.sort_by(|a, b| {
        rank(a)
            .total_cmp(&rank(b))
            .then(a.probes_per_year.cmp(&b.probes_per_year))
            .then(a.worst_cutover.cmp(&b.worst_cutover))
    });
    choices
}

fn choice(target: &PlanTarget, interval: Duration, fall: u32) -> PlanChoice {
    let timing = ProbeTiming {
        interval,
        timeout: target.timeout,
        jitter: target.jitter,
        fall,
    };
    let worst_detection = worst_detection(&timing);
    let worst_cutover = client_cutover(worst_detection, target.actuation, target.ttl);
    let independent = false_failovers_per_year(target.false_failure, fall, interval);
    let bursts = burst_false_failovers_per_year(&target.burst, fall, interval);
    PlanChoice {
        interval,
        fall,
        worst_detection,
        worst_cutover,
        headroom: target.rto.saturating_sub(worst_cutover),
        false_failovers_per_year: independent + bursts,
        burst_false_failovers_per_year: bursts,
        probes_per_year: probes_per_year(interval).round() as u64,
        warning: (fall == 1).then_some(PlanWarning::SingleProbeFallsOver),
    }
}

// ---------------------------------------------------------------------------
// Database cutover
// ---------------------------------------------------------------------------

/// Time from the start of an outage of the writer's region until a replica
/// accepts writes, when the old writer **confirmed its fence**: `detection
/// + fence + promote`.
///
/// `fence` is how long the old writer takes to confirm it stopped taking
/// writes (read-only, sessions ended); `promote` is the promotion of the
/// candidate with its epoch recorded (`pg_promote(wait => true)` took about
/// 0.13 s on a test machine). The confirmed fence is the proof that no two
/// nodes take writes, so the promotion may start as soon as it arrives.
pub fn database_cutover_fenced(
    detection: Duration,
    fence: Duration,
    promote: Duration,
) -> Duration {
    detection.saturating_add(fence).saturating_add(promote)
}

/// Time from the start of an outage of the writer's region until a replica
/// accepts writes, when the old writer **cannot confirm a fence** (it is
/// unreachable, or the fence times out): `detection + guard_ttl + promote`.
///
/// "Unreachable" is not proof that the old writer stopped: in a partition it
/// may still serve its own region's clients. The proof is its guard's lease
/// expiring in the coordination store: a guard that cannot renew fences its
/// own node before `ttl − margin`, so once the lease has expired the node
/// takes no writes (or is dead). Its last renewal may come as late as the
/// moment the controller decides (the guard may still reach the store while
/// the region's API looks down), so the wait after detection is up to one
/// whole `guard_ttl`; the fence attempt runs during that wait, so its own
/// timeout adds nothing while it is below `guard_ttl`. This is the price of
/// never promoting on "unreachable" alone, and a short guard TTL is what
/// lowers it (at the cost of fencing a healthy writer during a brief store
/// outage).
pub fn database_cutover_unconfirmed(
    detection: Duration,
    guard_ttl: Duration,
    promote: Duration,
) -> Duration {
    detection.saturating_add(guard_ttl).saturating_add(promote)
}

/// Time from the start of an outage of the writer's region until a replica
/// accepts writes, when that replica is a **synchronous standby the old
/// writer required** (`policy.synchronous` on or strict, and the writer
/// record names it): `detection + promote`.
///
/// No fence and no guard lease is waited for: the old writer cannot
/// acknowledge a commit the standby lacks, and stops acknowledging anything
/// once the standby is promoted (its guard still fences it within the TTL).
/// The price is paid on every commit instead — one round trip to the
/// standby's region — and, in strict mode, writes stop while no standby can
/// be required.
pub fn database_cutover_synchronous(detection: Duration, promote: Duration) -> Duration {
    detection.saturating_add(promote)
}

/// Synchronous replication (`on` or `strict`): the longest the writer's
/// commits wait for a required standby that stopped acknowledging while it
/// still answers the controllers (its stream from the writer cut, a WAL
/// receiver that cannot reconnect, a stalled disk): `fall` × `interval` of
/// waiting before the stall counts, one `interval` until an observation of
/// the writer shows it, then two steps each within `step_timeout` — the
/// writer record drops the standby, then the writer requires another one
/// (or, in `on` mode with none left, none).
///
/// The first two terms are what a healthy cluster pays; the steps take
/// about 100–300 ms on a LAN (measured in `tests/e2e_partition.rs`). In
/// strict mode with no replica to take the standby's place, the commits
/// wait until it returns, and the controller says so
/// ([`EventKind::SynchronousBlocked`](crate::EventKind::SynchronousBlocked)).
pub fn synchronous_stall(policy: &Policy) -> Duration {
    policy
        .interval
        .saturating_mul(policy.fall.saturating_add(1))
        .saturating_add(policy.step_timeout.saturating_mul(2))
}

/// With controllers in every region, the worst time from losing the
/// leading controller until a successor leads: `store_election +
/// lease_ttl`.
///
/// A successor takes over once the leader's lease has expired in the
/// store, up to `lease_ttl` after its last keep-alive. When the store's own
/// leader went with it (the lost region held the etcd leader, or the fault
/// is in etcd itself), the store first elects a new leader
/// (`store_election`, up to twice etcd's `--election-timeout` as etcd
/// randomizes it, 2 s by default), and etcd's new leader grants every
/// lease its whole TTL again. Pass zero when the store's leader survives.
///
/// A failover that loses the leader takes `max(detection, takeover)` before
/// its promotion starts (detection runs on every controller meanwhile):
/// add it to the cutover bounds above in place of the detection.
pub fn leader_takeover(lease_ttl: Duration, store_election: Duration) -> Duration {
    store_election.saturating_add(lease_ttl)
}

/// The most time the rest of a database promotion can take from the moment
/// the controller enters `phase`, by the controller's own deadlines: a
/// switchover's drain (`policy.writer_drain`, after marking the record
/// within `policy.step_timeout`), the proof that the old writer stopped
/// within `policy.proof_timeout`, then
/// each later step within `policy.step_timeout`: catching up (a switchover's
/// replay of everything, or a failover's candidate receiving the fenced
/// writer's last WAL), claiming the writer record, the promotion itself. A phase past that
/// bound has failed, and the controller says so.
///
/// `None` for a phase with no bound: nothing in progress (`Idle`), or one
/// that waits for an operator or a retry after a backoff (`Refused`,
/// `Unproven`, `NeedsOperator`). Services use it for `Retry-After` while
/// the writer moves (`failover-tower`'s write gate).
pub fn promotion_bound(policy: &Policy, phase: PromotionPhase) -> Option<Duration> {
    let step = policy.step_timeout;
    match phase {
        // A switchover's drain, then its fence and the rest.
        PromotionPhase::Draining { .. } => Some(
            policy
                .writer_drain
                .saturating_add(step)
                .saturating_add(policy.proof_timeout)
                .saturating_add(step.saturating_mul(3)),
        ),
        PromotionPhase::Fencing { .. } => {
            Some(policy.proof_timeout.saturating_add(step.saturating_mul(3)))
        }
        PromotionPhase::CatchingUp { .. } => Some(step.saturating_mul(3)),
        PromotionPhase::Claiming { .. } => Some(step.saturating_mul(2)),
        PromotionPhase::Promoting { .. } => Some(step),
        PromotionPhase::Idle
        | PromotionPhase::Refused { .. }
        | PromotionPhase::Unproven { .. }
        | PromotionPhase::NeedsOperator { .. } => None,
    }
}

/// The bound of a **planned switchover**, from the operator's command until
/// the target accepts writes, and what it is made of.
///
/// `drain` is `policy.writer_drain`: the old writer is marked draining and
/// left running while load balancers mark it down, so that no connection
/// reaches it once it is fenced. It is paid on every switchover, and new
/// connections find no writer from its start: it buys "no connection reaches
/// a fenced node" with time, never with data (the old writer keeps
/// committing on its open sessions until the fence).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SwitchoverBound {
    /// `policy.writer_drain`.
    pub drain: Duration,
    /// The old writer's fence, confirmed.
    pub fence: Duration,
    /// The target replaying the old writer's final WAL.
    pub catch_up: Duration,
    /// Claiming the writer record and promoting the target.
    pub promote: Duration,
    /// From the fence until the target accepts writes: no node takes writes.
    pub writes_paused: Duration,
    /// From the command until the target accepts writes: `drain + fence +
    /// catch_up + promote`.
    pub total: Duration,
}

impl SwitchoverBound {
    /// The bound for a drain of `drain`, a fence of `fence`, a catch-up of
    /// `catch_up` and a claim and promotion of `promote`.
    pub fn new(drain: Duration, fence: Duration, catch_up: Duration, promote: Duration) -> Self {
        let writes_paused = fence.saturating_add(catch_up).saturating_add(promote);
        SwitchoverBound {
            drain,
            fence,
            catch_up,
            promote,
            writes_paused,
            total: drain.saturating_add(writes_paused),
        }
    }

    /// The bound with the policy's `writer_drain`.
    pub fn for_policy(
        policy: &Policy,
        fence: Duration,
        catch_up: Duration,
        promote: Duration,
    ) -> Self {
        SwitchoverBound::new(policy.writer_drain, fence, catch_up, promote)
    }

    /// The bound in a sentence, with every term named: the planner's
    /// explanation of where a switchover's time goes.
    pub fn explanation(&self) -> String {
        let s = |d: Duration| crate::duration_serde::format(d);
        let drain = if self.drain.is_zero() {
            "no writer drain (policy.writer_drain = 0: the old writer is fenced at once, and a load balancer may still send it connections until its checks see the fence)".to_owned()
        } else {
            format!(
                "{} writer drain (policy.writer_drain: the old writer answers 503 on /writer and keeps its sessions while load balancers mark it down, so no connection reaches it once fenced)",
                s(self.drain)
            )
        };
        format!(
            "planned switchover ≤ {}: {drain} + {} fence + {} catch-up + {} claim and promotion; writes pause for {} (fence to promotion), new connections find no writer for all {}",
            s(self.total),
            s(self.fence),
            s(self.catch_up),
            s(self.promote),
            s(self.writes_paused),
            s(self.total)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed() -> ProbeTiming {
        ProbeTiming {
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(2),
            jitter: Duration::ZERO,
            fall: 3,
        }
    }

    #[test]
    fn promotion_bound_shrinks_as_the_phases_advance() {
        use crate::NodeId;
        let policy = Policy {
            proof_timeout: Duration::from_secs(30),
            step_timeout: Duration::from_secs(10),
            writer_drain: Duration::from_secs(5),
            ..Policy::default()
        };
        let (old, new) = (NodeId(0), NodeId(1));
        let bound = |phase| promotion_bound(&policy, phase);
        // Drain 5 s after a 10 s mark, then the fencing bound.
        assert_eq!(
            bound(PromotionPhase::Draining {
                node: old,
                candidate: new,
            }),
            Some(Duration::from_secs(75))
        );
        let fencing = PromotionPhase::Fencing {
            node: old,
            candidate: new,
        };
        assert_eq!(bound(fencing), Some(Duration::from_secs(60)));
        assert_eq!(
            bound(PromotionPhase::CatchingUp { node: new }),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            bound(PromotionPhase::Claiming { node: new }),
            Some(Duration::from_secs(20))
        );
        assert_eq!(
            bound(PromotionPhase::Promoting { node: new }),
            Some(Duration::from_secs(10))
        );
        assert_eq!(bound(PromotionPhase::Idle), None);
        assert_eq!(bound(PromotionPhase::Refused { node: new }), None);
    }

    #[test]
    fn worked_example_detection_and_cutover() {
        let t = seed();
        assert_eq!(worst_detection(&t), Duration::from_secs(32));
        assert_eq!(best_detection(&t), Duration::from_secs(20));
        let b = Bounds::new(&t, Duration::from_secs(60), Duration::ZERO);
        assert_eq!(b.worst_cutover, Duration::from_secs(92));
        assert_eq!(b.best_cutover, Duration::from_secs(20));
        let jittered = ProbeTiming {
            jitter: Duration::from_secs(1),
            ..t
        };
        assert_eq!(worst_detection(&jittered), Duration::from_secs(33));
        // Jitter can bring the first and the last failing probe closer.
        assert_eq!(best_detection(&jittered), Duration::from_secs(19));
        let once = ProbeTiming {
            fall: 1,
            ..jittered
        };
        assert_eq!(best_detection(&once), Duration::ZERO);
    }

    #[test]
    fn standby_at_sixty_percent_is_saturated_at_167_percent() {
        let load = survivor_load(&[0.6]);
        assert_eq!(load.percent(), 167);
        assert!(load.saturated());
        assert!(!survivor_load(&[0.6, 0.6]).saturated());
        assert!(survivor_load(&[]).saturated());
    }

    #[test]
    fn rpo_from_lag_and_delay() {
        let r = rpo_from_lag(2_000_000, 1_000_000.0);
        assert_eq!(r.window, Duration::from_secs(2));
        let r = rpo_from_delay(Duration::from_millis(1500), 2_000.0);
        assert_eq!(r.bytes, 3_000);
        assert_eq!(rpo_from_lag(10, 0.0).window, Duration::ZERO);
    }

    #[test]
    fn an_isolated_writer_adds_its_guard_ttl_to_the_loss_window() {
        // 250 ms of replica delay, a 15 s guard TTL, 2 MB/s.
        let r = rpo_isolated_writer(Duration::from_millis(250), Duration::from_secs(15), 2e6);
        assert_eq!(r.window, Duration::from_millis(15_250));
        assert_eq!(r.bytes, 30_500_000);
        assert_eq!(
            rpo_isolated_writer(Duration::MAX, Duration::from_secs(1), 1.0).window,
            Duration::MAX
        );
    }

    #[test]
    fn false_failovers_fall_with_more_consecutive_failures() {
        let ten = Duration::from_secs(10);
        let one = false_failovers_per_year(0.001, 1, ten);
        let three = false_failovers_per_year(0.001, 3, ten);
        assert!((one - 3_150.0).abs() < 5.0, "{one}");
        assert!(three < 0.01 && three > 0.0, "{three}");
        assert!(false_failovers_per_year(0.5, 3, Duration::ZERO).is_nan());
    }

    #[test]
    fn planner_meets_the_target_and_prefers_fewer_false_failovers() {
        let target = PlanTarget {
            rto: Duration::from_secs(95),
            margin: 0.0,
            ttl: Duration::from_secs(60),
            timeout: Duration::from_secs(2),
            jitter: Duration::ZERO,
            actuation: Duration::from_secs(1),
            false_failure: 0.01,
            burst: LossBurst::NONE,
        };
        let choices = plan(&target);
        assert!(!choices.is_empty());
        assert!(choices.iter().all(|c| c.worst_cutover <= target.rto));
        let rank = |c: &PlanChoice| {
            c.false_failovers_per_year
                .max(NEGLIGIBLE_FALSE_FAILOVERS_PER_YEAR)
        };
        assert!(choices.windows(2).all(|w| rank(&w[0]) <= rank(&w[1])));
        let ten = choices
            .iter()
            .find(|c| c.interval == Duration::from_secs(10))
            .unwrap();
        assert_eq!(ten.fall, 3, "10 s × 3 + 2 s + 1 s + 60 s = 93 s ≤ 95 s");
        // A TTL longer than the RTO cannot be met.
        assert!(plan(&PlanTarget {
            rto: Duration::from_secs(30),
            ..target
        })
        .is_empty());
    }
}
