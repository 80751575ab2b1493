//! How the controller decides: probe timing, thresholds, quorum, failback ramp,
//! damping, all-down behaviour, safety rule, DNS TTL and the RPO gate.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{duration_serde, ConfigError, PassivePolicy, SyncSet, Topology};

/// What a region's health is before it has been evaluated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InitialHealth {
    /// Unknown until `rise` successes or `fall` failures decide it. Unknown
    /// regions keep their configured weight in the first plan but never count
    /// as healthy for promotion.
    Unknown,
    /// Assume up (serve) until `fall` failures.
    Up,
    /// Assume down (drained) until `rise` successes.
    Down,
}

/// What to do when no region is healthy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AllDownPolicy {
    /// Serve every region at its base weight: probes are more likely wrong than
    /// every region at once (Route 53's and Envoy's "panic" behaviour).
    FailOpen,
    /// Serve nothing.
    FailClosed,
}

/// What makes an automatic promotion move the writer away from its node.
/// Database health is its own signal: the writer's database is down when its
/// guard lease expired, or when `fall` observations in a row could not reach
/// it. Either way a promotion still needs proof that the old writer stopped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MoveWriterOn {
    /// The writer's region is down by the API probes, or its database is
    /// down (the default): the writer follows the traffic.
    #[default]
    RegionOrDatabase,
    /// Only the writer's database being down: an outage of the API alone
    /// drains the region's traffic but leaves the writer where it is, and
    /// the surviving regions' APIs write to it across regions.
    Database,
}

/// Whether the writer replicates synchronously, and what happens when its
/// synchronous standby is lost — the runtime manages the writer's
/// `synchronous_standby_names`, as Patroni's `synchronous_mode` does.
///
/// With synchronous replication, the standby the writer requires has every
/// commit the writer acknowledged, so it may be promoted without waiting for
/// the old writer's guard lease (the third proof, besides a confirmed fence
/// and an expired guard lease): no acknowledged loss, and a database cutover
/// without the guard TTL. The price is commit latency (one round trip to the
/// standby's region) and, in strict mode, availability.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Synchronous {
    /// Asynchronous replication (the default): `synchronous_standby_names`
    /// is left as configured, promotions need a confirmed fence or an
    /// expired guard lease, and the loss is bounded by `max_rpo`.
    #[default]
    Off,
    /// The writer requires one synchronous standby, chosen among healthy
    /// replicas in other regions; only it may be promoted automatically.
    /// A standby is lost when `fall` observations in a row miss it, or when
    /// the writer reports a commit waiting `fall` × `interval` for it
    /// (reachable, but no longer acknowledging: see
    /// [`EventKind::SynchronousStalled`](crate::EventKind::SynchronousStalled)).
    /// When it is lost and no other replica can replace it, the writer falls
    /// back to asynchronous replication so writes go on — first in the
    /// writer record (so no promotion relies on it), then on the writer,
    /// with an event saying so; `max_rpo` applies until a standby is
    /// required again.
    On,
    /// As `On`, but the writer never falls back to asynchronous
    /// replication: with no standby to require, commits wait (writes stop)
    /// rather than be acknowledged by the writer alone. A new writer starts
    /// requiring any one standby (`'*'`).
    Strict,
}

/// The most data a promotion may lose. Both limits apply when both are set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaxRpo {
    /// Most WAL bytes the candidate may be behind the last known primary position.
    #[serde(default)]
    pub bytes: Option<u64>,
    /// Most replay delay the candidate may have.
    #[serde(default, with = "duration_serde::option")]
    pub time: Option<Duration>,
}

impl MaxRpo {
    /// A limit in bytes only.
    pub const fn bytes(bytes: u64) -> Self {
        MaxRpo {
            bytes: Some(bytes),
            time: None,
        }
    }
    /// Whether a candidate behind by `lag_bytes` and `delay` is within the limit.
    /// An unknown delay passes only when no time limit is set.
    pub fn admits(&self, lag_bytes: u64, delay: Option<Duration>) -> bool {
        let bytes_ok = self.bytes.is_none_or(|max| lag_bytes <= max);
        let time_ok = match (self.time, delay) {
            (None, _) => true,
            (Some(max), Some(d)) => d <= max,
            (Some(_), None) => false,
        };
        bytes_ok && time_ok
    }
}

/// The decision policy. Every duration is written in TOML as `"10s"`, `"500ms"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// Time between probes of one target from one vantage.
    #[serde(with = "duration_serde")]
    pub interval: Duration,
    /// Longest a probe may take; must be below `interval`.
    #[serde(with = "duration_serde")]
    pub timeout: Duration,
    /// Random spread added to each probe's start, at most this much.
    #[serde(with = "duration_serde")]
    pub jitter: Duration,
    /// Consecutive failures that mark a (region, vantage) down.
    pub fall: u32,
    /// Consecutive successes that mark a (region, vantage) up.
    pub rise: u32,
    /// Vantages that must agree a region is down. `None` = a majority.
    pub quorum: Option<u32>,
    /// Health before the first evaluation.
    pub initial_health: InitialHealth,
    /// Failback ramp: percentages of base weight, strictly increasing, ending at 100.
    pub ramp_steps: Vec<u8>,
    /// Time spent on each ramp step.
    #[serde(with = "duration_serde")]
    pub ramp_interval: Duration,
    /// Least time a region stays out of rotation after it was marked down.
    #[serde(with = "duration_serde")]
    pub hold_down: Duration,
    /// Window in which down-transitions are counted for flap damping.
    #[serde(with = "duration_serde")]
    pub flap_window: Duration,
    /// Down-transitions within `flap_window` after which the region is held out
    /// until it has been stable for a whole window.
    pub flap_limit: u32,
    /// What to serve when every region is down.
    pub all_down: AllDownPolicy,
    /// Never drain below this many serving regions on probe evidence alone
    /// (operator drains may).
    pub min_serving_regions: u32,
    /// TTL of the DNS answers.
    #[serde(with = "duration_serde")]
    pub ttl: Duration,
    /// Promote a replica automatically when the writer is lost (see
    /// `move_writer_on`).
    pub auto_promote: bool,
    /// What counts as losing the writer: its region or its database
    /// (`"region-or-database"`, the default), or its database only
    /// (`"database"`).
    pub move_writer_on: MoveWriterOn,
    /// Most data an automatic promotion may lose. Required when `auto_promote`.
    pub max_rpo: Option<MaxRpo>,
    /// TTL of the node guards' leases (see `failover_pg::NodeGuard`), when every
    /// database node runs a guard. An expired guard lease proves its node
    /// stopped taking writes, so a writer that cannot be reached can still be
    /// replaced — after this TTL. `None`: no guards; only a confirmed fence
    /// proves the old writer stopped, and an unreachable writer is never
    /// replaced automatically.
    #[serde(with = "duration_serde::option")]
    pub guard_ttl: Option<Duration>,
    /// How long a promotion waits for proof that the old writer stopped (its
    /// fence confirmed, or its guard lease expired) before it is refused.
    /// Must exceed `guard_ttl`.
    #[serde(with = "duration_serde")]
    pub proof_timeout: Duration,
    /// Deadline of each other promotion step: claiming the writer record,
    /// a switchover's catch-up, the promotion itself.
    #[serde(with = "duration_serde")]
    pub step_timeout: Duration,
    /// How long a planned switchover drains the old writer before fencing
    /// it: the writer record is marked draining, its guard's `/writer`
    /// answers 503, and a load balancer stops sending it new connections —
    /// so no connection reaches it once its fence begins. Set it to the time
    /// your load balancer needs to mark a server down plus the guards'
    /// renew interval (a guard reads the mark at its next renewal) —
    /// HAProxy: `inter × fall + inter` (one interval for a check already in
    /// flight) `+ renew_interval`. 0 (the default) fences at once. Added to the switchover's bound
    /// ([`SwitchoverBound`](crate::objectives::SwitchoverBound)). At most
    /// `step_timeout`.
    #[serde(with = "duration_serde")]
    pub writer_drain: Duration,
    /// Failed promotion attempts in a row after which the controller stops
    /// retrying on its own and says an operator is needed.
    pub max_attempts: u32,
    /// A vantage's vote expires when it has reported nothing for this many
    /// intervals; expired votes count neither up nor down, so a dead vantage
    /// cannot pin a region up. 0 = votes never expire.
    pub vote_expiry: u32,
    /// Synchronous replication (`"off"`, `"on"`, `"strict"`): see
    /// [`Synchronous`]. Needs `auto_promote`'s `max_rpo` all the same (it
    /// bounds loss while `on` runs asynchronously).
    pub synchronous: Synchronous,
    /// Passive health (`[policy.passive]`): request outcomes reported by
    /// the service itself judge a region next to the probes. `None` (the
    /// default): off.
    pub passive: Option<PassivePolicy>,
}

impl Default for Policy {
    /// 10 s interval, 2 s timeout, 1 s jitter, fall 3, rise 2, majority quorum,
    /// unknown initial health, ramp 10/25/50/100 % every 30 s, 60 s hold-down,
    /// 3 flaps per 10 min, fail-open, min 1 serving region, TTL 60 s, no automatic
    /// promotion (the writer follows its region or its database), no guards, 30 s to prove the old writer stopped, 60 s per
    /// other promotion step, no writer drain before a switchover's fence, 3
    /// attempts before an operator is needed, votes expire after 3 silent
    /// intervals, no passive health.
    fn default() -> Self {
        Policy {
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(2),
            jitter: Duration::from_secs(1),
            fall: 3,
            rise: 2,
            quorum: None,
            initial_health: InitialHealth::Unknown,
            ramp_steps: vec![10, 25, 50, 100],
            ramp_interval: Duration::from_secs(30),
            hold_down: Duration::from_secs(60),
            flap_window: Duration::from_secs(600),
            flap_limit: 3,
            all_down: AllDownPolicy::FailOpen,
            min_serving_regions: 1,
            ttl: Duration::from_secs(60),
            auto_promote: false,
            move_writer_on: MoveWriterOn::RegionOrDatabase,
            max_rpo: None,
            guard_ttl: None,
            proof_timeout: Duration::from_secs(30),
            step_timeout: Duration::from_secs(60),
            writer_drain: Duration::ZERO,
            max_attempts: 3,
            vote_expiry: 3,
            synchronous: Synchronous::Off,
            passive: None,
        }
    }
}

impl Policy {
    /// Checks every rule against the topology it will run with.
    pub fn validate(&self, topology: &Topology) -> Result<(), ConfigError> {
        if self.interval.is_zero() {
            return Err(ConfigError::invalid(
                "policy.interval",
                "must be greater than 0",
            ));
        }
        if self.timeout.is_zero() {
            return Err(ConfigError::invalid(
                "policy.timeout",
                "must be greater than 0",
            ));
        }
        if self.timeout >= self.interval {
            return Err(ConfigError::invalid(
                "policy.timeout",
                format!(
                    "must be less than policy.interval ({} ≥ {})",
                    duration_serde::format(self.timeout),
                    duration_serde::format(self.interval)
                ),
            ));
        }
        if self.jitter >= self.interval {
            return Err(ConfigError::invalid(
                "policy.jitter",
                "must be less than policy.interval",
            ));
        }
        if self.fall == 0 {
            return Err(ConfigError::invalid(
                "policy.fall",
                "must be at least 1, got 0",
            ));
        }
        if self.rise == 0 {
            return Err(ConfigError::invalid(
                "policy.rise",
                "must be at least 1, got 0",
            ));
        }
        let vantages = topology.vantages().len() as u32;
        if let Some(q) = self.quorum {
            if q == 0 || q > vantages {
                return Err(ConfigError::invalid(
                    "policy.quorum",
                    format!("must be between 1 and the number of vantages ({vantages}), got {q}"),
                ));
            }
        }
        if self.ramp_steps.is_empty() {
            return Err(ConfigError::invalid(
                "policy.ramp_steps",
                "must not be empty; use [100] for no ramp",
            ));
        }
        if self.ramp_steps.windows(2).any(|w| w[0] >= w[1]) || self.ramp_steps[0] == 0 {
            return Err(ConfigError::invalid(
                "policy.ramp_steps",
                format!(
                    "must be strictly increasing percentages above 0, got {:?}",
                    self.ramp_steps
                ),
            ));
        }
        if self.ramp_steps.last() != Some(&100) {
            return Err(ConfigError::invalid(
                "policy.ramp_steps",
                format!(
                    "must end at 100 (% of base weight), got {:?}",
                    self.ramp_steps
                ),
            ));
        }
        if self.ramp_steps.len() > 1 && self.ramp_interval.is_zero() {
            return Err(ConfigError::invalid(
                "policy.ramp_interval",
                "must be greater than 0 when there is more than one ramp step",
            ));
        }
        if self.flap_limit == 0 {
            return Err(ConfigError::invalid(
                "policy.flap_limit",
                "must be at least 1, got 0",
            ));
        }
        let regions = topology.regions().len() as u32;
        if self.min_serving_regions > regions {
            return Err(ConfigError::invalid(
                "policy.min_serving_regions",
                format!(
                    "{} is more than the number of regions ({regions})",
                    self.min_serving_regions
                ),
            ));
        }
        if self.ttl.is_zero() {
            return Err(ConfigError::invalid("policy.ttl", "must be greater than 0"));
        }
        if self.ttl.as_secs() > u64::from(u32::MAX) {
            return Err(ConfigError::invalid(
                "policy.ttl",
                "must fit a DNS TTL (u32 seconds)",
            ));
        }
        if self.auto_promote {
            match self.max_rpo {
                None => {
                    return Err(ConfigError::invalid(
                        "policy.max_rpo",
                        "is required when policy.auto_promote is true",
                    ))
                }
                Some(MaxRpo {
                    bytes: None,
                    time: None,
                }) => {
                    return Err(ConfigError::invalid(
                        "policy.max_rpo",
                        "must set bytes, time or both when policy.auto_promote is true",
                    ))
                }
                Some(_) => {}
            }
        }
        if let Some(ttl) = self.guard_ttl {
            if ttl <= self.interval {
                return Err(ConfigError::invalid(
                    "policy.guard_ttl",
                    format!(
                        "must be longer than policy.interval ({} ≤ {}): a guard renews several times per lease",
                        duration_serde::format(ttl),
                        duration_serde::format(self.interval)
                    ),
                ));
            }
            if self.proof_timeout <= ttl {
                return Err(ConfigError::invalid(
                    "policy.proof_timeout",
                    format!(
                        "must be longer than policy.guard_ttl ({} ≤ {}), or an expired guard lease could never prove anything",
                        duration_serde::format(self.proof_timeout),
                        duration_serde::format(ttl)
                    ),
                ));
            }
        }
        if self.proof_timeout.is_zero() {
            return Err(ConfigError::invalid(
                "policy.proof_timeout",
                "must be greater than 0",
            ));
        }
        if self.step_timeout.is_zero() {
            return Err(ConfigError::invalid(
                "policy.step_timeout",
                "must be greater than 0",
            ));
        }
        if self.writer_drain > self.step_timeout {
            return Err(ConfigError::invalid(
                "policy.writer_drain",
                format!(
                    "must be at most policy.step_timeout ({} > {}): the drain is one step of a switchover, and an operator waits for it",
                    duration_serde::format(self.writer_drain),
                    duration_serde::format(self.step_timeout)
                ),
            ));
        }
        if self.max_attempts == 0 {
            return Err(ConfigError::invalid(
                "policy.max_attempts",
                "must be at least 1, got 0",
            ));
        }
        if self.synchronous != Synchronous::Off {
            if self.guard_ttl.is_none() {
                return Err(ConfigError::invalid(
                    "policy.synchronous",
                    "needs policy.guard_ttl: a synchronous standby is promoted without waiting for the old writer, and its guard is what stops it within the TTL (a client that cancels its wait for the standby leaves a local commit behind)",
                ));
            }
            let nodes = topology.nodes().len();
            if nodes < 2 || nodes > SyncSet::CAPACITY as usize {
                return Err(ConfigError::invalid(
                    "policy.synchronous",
                    format!(
                        "needs between 2 and {} database nodes, the topology has {nodes}",
                        SyncSet::CAPACITY
                    ),
                ));
            }
        }
        if let Some(passive) = &self.passive {
            passive.validate()?;
        }
        Ok(())
    }

    /// Vantages that must agree a region is down, for this many vantages.
    pub fn effective_quorum(&self, vantages: usize) -> u32 {
        self.quorum.unwrap_or(vantages as u32 / 2 + 1)
    }
}
