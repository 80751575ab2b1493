//! RTO/RPO arithmetic as pure functions: how long detection and client
//! cutover take, how much data a promotion loses, how loaded the survivors
//! are, how often probes fail over by mistake, and which interval/fall meet a
//! target RTO.
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

use crate::{Policy, RegionId, Topology};

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
/// fails at once (connection refused): `(fall − 1) × interval`.
pub fn best_detection(t: &ProbeTiming) -> Duration {
    t.interval.saturating_mul(t.fall.saturating_sub(1))
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

/// What [`plan`] must meet.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PlanTarget {
    /// Worst client cutover allowed (the RTO of traffic).
    pub rto: Duration,
    /// DNS TTL.
    pub ttl: Duration,
    /// Probe timeout (intervals must exceed it).
    pub timeout: Duration,
    /// Probe jitter.
    pub jitter: Duration,
    /// Time to apply a plan (DNS update).
    pub actuation: Duration,
    /// Probability that one probe of a healthy region fails anyway.
    pub false_failure: f64,
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
    /// Worst client cutover with this choice (≤ the target RTO).
    pub worst_cutover: Duration,
    /// Expected false failovers per year with this choice.
    pub false_failovers_per_year: f64,
}

/// Intervals the planner considers, in seconds.
pub const PLAN_INTERVALS: [u64; 10] = [1, 2, 3, 5, 10, 15, 20, 30, 45, 60];

/// Interval/fall choices whose worst cutover meets the target: for each
/// candidate interval above the timeout, the largest `fall` (1..=10) that
/// fits (more falls, fewer false failovers). Sorted by false failovers per
/// year, then cutover. Empty when even fall 1 at 1 s cannot meet it (the TTL
/// alone may exceed the RTO).
pub fn plan(target: &PlanTarget) -> Vec<PlanChoice> {
    let mut choices: Vec<PlanChoice> = PLAN_INTERVALS
        .iter()
        .map(|s| Duration::from_secs(*s))
        .filter(|interval| *interval > target.timeout)
        .filter_map(|interval| {
            (1..=10u32)
                .rev()
                .map(|fall| {
                    let timing = ProbeTiming {
                        interval,
                        timeout: target.timeout,
                        jitter: target.jitter,
                        fall,
                    };
                    let worst_detection = worst_detection(&timing);
                    PlanChoice {
                        interval,
                        fall,
                        worst_detection,
                        worst_cutover: client_cutover(
                            worst_detection,
                            target.actuation,
                            target.ttl,
                        ),
                        false_failovers_per_year: false_failovers_per_year(
                            target.false_failure,
                            fall,
                            interval,
                        ),
                    }
                })
                .find(|c| c.worst_cutover <= target.rto)
        })
        .collect();
    choices.sort_by(|a, b| {
        a.false_failovers_per_year
            .total_cmp(&b.false_failovers_per_year)
            .then(a.worst_cutover.cmp(&b.worst_cutover))
    });
    choices
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
            ttl: Duration::from_secs(60),
            timeout: Duration::from_secs(2),
            jitter: Duration::ZERO,
            actuation: Duration::from_secs(1),
            false_failure: 0.01,
        };
        let choices = plan(&target);
        assert!(!choices.is_empty());
        assert!(choices.iter().all(|c| c.worst_cutover <= target.rto));
        assert!(choices
            .windows(2)
            .all(|w| w[0].false_failovers_per_year <= w[1].false_failovers_per_year));
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
