//! A deterministic failover simulator: seeded scenarios (outages, recoveries,
//! flapping, probe loss, replication lag and write rate, a router outage) that
//! drive the real [`Controller`](crate::Controller) on simulated time and
//! report a timeline with the measured detection time, client cutover time
//! and data-loss window.
//!
//! Same scenario and seed → the same timeline, entry for entry.
//!
//! ```
//! use std::time::Duration;
//! use failover_core::{Config, sim::Scenario};
//!
//! let config = Config::from_toml(r#"
//!     service = "api.example.com."
//!     [[region]]
//!     name = "us-east"
//!     [[region]]
//!     name = "us-west"
//!     role = "standby"
//!     capacity = 0.6
//!     [policy]
//!     jitter = "0s"
//! "#).unwrap();
//! let east = config.topology().region_id("us-east").unwrap();
//! let report = Scenario::new(config, 42)
//!     .duration(Duration::from_secs(600))
//!     .outage(east, Duration::from_secs(60), Some(Duration::from_secs(300)))
//!     .run();
//! let detection = report.detection.unwrap();
//! assert!(detection <= Duration::from_secs(32));
//! ```

mod engine;
mod rng;

use std::fmt;
use std::time::{Duration, Instant};

pub use rng::SimRng;

use crate::objectives::RpoEstimate;
use crate::{Config, Event, NodeId, RegionId, RegionWeight, Topology};

/// Something that goes wrong during a scenario.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Fault {
    /// The region (its API and its database nodes) is unreachable from
    /// `from` until `until` (for ever when `None`).
    Outage {
        /// The region.
        region: RegionId,
        /// Start, from the beginning of the scenario.
        from: Duration,
        /// End, if it recovers.
        until: Option<Duration>,
    },
    /// The region alternates down and up every `period` between `from` and `until`.
    Flapping {
        /// The region.
        region: RegionId,
        /// Start (down first).
        from: Duration,
        /// End (up after).
        until: Duration,
        /// Length of each down and each up phase.
        period: Duration,
    },
    /// The traffic router (DNS) rejects updates in this window.
    RouterOutage {
        /// Start.
        from: Duration,
        /// End.
        until: Duration,
    },
}

impl Fault {
    /// Whether `region` is unreachable at `t` because of this fault.
    fn region_down(&self, region: RegionId, t: Duration) -> bool {
        match *self {
            Fault::Outage {
                region: r,
                from,
                until,
            } => r == region && t >= from && until.is_none_or(|u| t < u),
            Fault::Flapping {
                region: r,
                from,
                until,
                period,
            } => {
                r == region
                    && t >= from
                    && t < until
                    && !period.is_zero()
                    && ((t - from).as_nanos() / period.as_nanos()) % 2 == 0
            }
            Fault::RouterOutage { .. } => false,
        }
    }

    fn region(&self) -> Option<RegionId> {
        match *self {
            Fault::Outage { region, .. } | Fault::Flapping { region, .. } => Some(region),
            Fault::RouterOutage { .. } => None,
        }
    }

    fn start(&self) -> Duration {
        match *self {
            Fault::Outage { from, .. }
            | Fault::Flapping { from, .. }
            | Fault::RouterOutage { from, .. } => from,
        }
    }
}

/// A scenario to simulate; build it with the methods, then [`run`](Self::run).
#[derive(Clone, Debug)]
pub struct Scenario {
    /// The configuration the controller runs with.
    pub config: Config,
    /// The seed of every random choice (probe jitter, probe loss).
    pub seed: u64,
    /// How long to simulate.
    pub duration: Duration,
    /// Probability that a probe of a healthy region fails anyway.
    pub probe_loss: f64,
    /// How long a successful probe takes.
    pub probe_latency: Duration,
    /// How long applying a plan, fencing or promoting takes.
    pub actuation: Duration,
    /// Bytes per second the primary writes.
    pub write_rate: f64,
    /// How far replicas trail the primary.
    pub replication_lag: Duration,
    /// How often database nodes are observed (default: the probe interval).
    pub observe_every: Option<Duration>,
    /// What goes wrong.
    pub faults: Vec<Fault>,
    /// The instant simulated time starts at (events carry `start + offset`).
    pub start: Instant,
}

impl Scenario {
    /// A quiet scenario of one hour: no faults, no probe loss, 20 ms probes,
    /// 1 s actuation, 1 MB/s of writes, replicas 500 ms behind, starting now.
    pub fn new(config: Config, seed: u64) -> Self {
        Scenario {
            config,
            seed,
            duration: Duration::from_secs(3600),
            probe_loss: 0.0,
            probe_latency: Duration::from_millis(20),
            actuation: Duration::from_secs(1),
            write_rate: 1_000_000.0,
            replication_lag: Duration::from_millis(500),
            observe_every: None,
            faults: Vec::new(),
            start: Instant::now(),
        }
    }
    /// Sets the instant simulated time starts at: two runs of scenarios with
    /// the same seed and start give equal reports.
    pub fn start(mut self, start: Instant) -> Self {
        self.start = start;
        self
    }
    /// Sets how long to simulate.
    pub fn duration(mut self, d: Duration) -> Self {
        self.duration = d;
        self
    }
    /// Sets the probability that a healthy probe fails anyway (0.01 = 1 %).
    pub fn probe_loss(mut self, p: f64) -> Self {
        self.probe_loss = p;
        self
    }
    /// Sets the plan/fence/promote application time.
    pub fn actuation(mut self, d: Duration) -> Self {
        self.actuation = d;
        self
    }
    /// Sets the primary's write rate (bytes/s) and the replicas' lag.
    pub fn replication(mut self, write_rate: f64, lag: Duration) -> Self {
        self.write_rate = write_rate;
        self.replication_lag = lag;
        self
    }
    /// Adds an outage of `region` from `from` until `until` (for ever if `None`).
    pub fn outage(mut self, region: RegionId, from: Duration, until: Option<Duration>) -> Self {
        self.faults.push(Fault::Outage {
            region,
            from,
            until,
        });
        self
    }
    /// Adds flapping of `region`: down/up every `period` from `from` to `until`.
    pub fn flapping(
        mut self,
        region: RegionId,
        from: Duration,
        until: Duration,
        period: Duration,
    ) -> Self {
        self.faults.push(Fault::Flapping {
            region,
            from,
            until,
            period,
        });
        self
    }
    /// Adds a window in which the traffic router rejects updates.
    pub fn router_outage(mut self, from: Duration, until: Duration) -> Self {
        self.faults.push(Fault::RouterOutage { from, until });
        self
    }

    /// Runs the scenario against the real controller.
    pub fn run(&self) -> Report {
        engine::run(self)
    }
}

/// What happened at one moment of a simulation.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Happening {
    /// A region became unreachable (scenario fault).
    RegionFailed(RegionId),
    /// A region became reachable again (scenario fault ended).
    RegionRecovered(RegionId),
    /// The controller said something (a `Notify` action).
    Controller(Event),
    /// A weight plan became live at the traffic router.
    PlanApplied {
        /// Its generation.
        generation: u64,
        /// Its weights.
        weights: Vec<RegionWeight>,
    },
    /// The TTL of the plan before `generation` has run out: every client now
    /// resolves with this plan.
    ClientsCutOver {
        /// The plan now seen by every client.
        generation: u64,
    },
    /// A replica became primary, losing this much.
    DataLost {
        /// The new primary.
        node: NodeId,
        /// What was lost.
        loss: RpoEstimate,
    },
}

/// One entry of a [`Report`]'s timeline.
#[derive(Clone, Debug, PartialEq)]
pub struct TimelineEntry {
    /// Time since the start of the scenario.
    pub at: Duration,
    /// What happened.
    pub what: Happening,
}

/// The outcome of [`Scenario::run`].
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// Everything notable, in time order.
    pub timeline: Vec<TimelineEntry>,
    /// From the first region fault to the controller marking that region down.
    pub detection: Option<Duration>,
    /// From the first region fault until every client uses a plan without
    /// that region (plan applied + TTL).
    pub cutover: Option<Duration>,
    /// Data lost by the first promotion after the first fault.
    pub data_loss: Option<RpoEstimate>,
    /// Probe results fed to the controller.
    pub probes: u64,
    /// Actions (other than notifications) executed.
    pub actions: u64,
}

impl TimelineEntry {
    /// Renders the entry's event with names from `topology`.
    pub fn display<'a>(&'a self, topology: &'a Topology) -> impl fmt::Display + 'a {
        HappeningDisplay {
            what: &self.what,
            topology,
        }
    }
}

struct HappeningDisplay<'a> {
    what: &'a Happening,
    topology: &'a Topology,
}

impl fmt::Display for HappeningDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let region = |r: RegionId| {
            self.topology
                .regions()
                .get(r.index())
                .map_or("?", |r| r.name.as_str())
        };
        match self.what {
            Happening::RegionFailed(r) => write!(f, "{} fails (scenario)", region(*r)),
            Happening::RegionRecovered(r) => write!(f, "{} recovers (scenario)", region(*r)),
            Happening::Controller(e) => write!(f, "{}", e.display(self.topology)),
            Happening::PlanApplied {
                generation,
                weights,
            } => {
                write!(f, "plan #{generation} live in DNS:")?;
                for w in weights {
                    write!(f, " {}={}", region(w.region), w.weight)?;
                }
                Ok(())
            }
            Happening::ClientsCutOver { generation } => write!(
                f,
                "old answers expired (TTL): all clients on plan #{generation}"
            ),
            Happening::DataLost { node, loss } => write!(
                f,
                "{} took over missing {} bytes ({} ms of writes)",
                self.topology
                    .nodes()
                    .get(node.index())
                    .map_or("?", |n| n.name.as_str()),
                loss.bytes,
                loss.window.as_millis()
            ),
        }
    }
}
