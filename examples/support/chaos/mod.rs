//! Chaos drills on real servers in network namespaces (issue 11), shared by
//! `examples/chaos.rs` (the long, randomized run) and `tests/chaos.rs` (the
//! short CI set) through `#[path]`.
//!
//! It lives here rather than in `failover-testkit` because it wires the
//! root crate's runtime, lease server and guards, and the testkit must not
//! depend on the facade (DESIGN.md: testkit → nothing of ours but core
//! types).
//!
//! One drill ([`drill::run`]):
//!
//! 1. [`stack::Stack`] starts three regions (`east`, `west`, `south`) as
//!    namespaces; in each a PostgreSQL node (pg-east the primary) with its
//!    guard and the regional HTTP API; one controller — the runtime with the
//!    lease server and the embedded DNS (service and writer name) — in
//!    `south`, or ([`Controllers::PerRegion`]) a controller with its
//!    embedded DNS and an etcd member in every region, coordinated through
//!    etcd, the guards leasing from it.
//! 2. [`workload::Workload`]: a client per region resolves the writer name
//!    through the embedded DNS and inserts rows with unique ids, recording
//!    each acknowledged one; a sampler per region resolves the service name
//!    every 100 ms; a watcher on the host attempts a marker commit on every
//!    node every 100 ms over its unix socket (which no cut separates).
//! 3. A [`Fault`] drawn from a seeded [`Rng`] is injected; the drill waits
//!    for the failover (or the planner's worst bound + slack), heals, waits
//!    for convergence, and [`check::check`] reports lost acknowledged writes,
//!    overlapping writers, stale DNS answers and the measured times against
//!    the planner's bounds.
#![allow(dead_code)]

pub mod check;
pub mod drill;
pub mod stack;
pub mod workload;

use std::fmt;
use std::str::FromStr;

/// Replication mode of a drill's cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `policy.synchronous = On`: the writer requires one standby; no
    /// acknowledged write may be lost.
    Sync,
    /// Asynchronous replication: a loss within `max_rpo` is allowed and reported.
    Async,
}

impl FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "sync" => Ok(Mode::Sync),
            "async" => Ok(Mode::Async),
            other => Err(format!("mode {other:?}: expected sync or async")),
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Sync => "sync",
            Mode::Async => "async",
        })
    }
}

/// How many controllers a drill's stack runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Controllers {
    /// One controller, in `south`, with the lease server the guards lease
    /// from and the only embedded DNS.
    One,
    /// A controller, an embedded DNS and an etcd member in every region;
    /// the controllers coordinate through etcd (one leads) and the guards
    /// lease from it.
    PerRegion,
}

impl Controllers {
    /// The faults a stack of this kind can take, in the summary's order.
    pub fn faults(self) -> &'static [Fault] {
        match self {
            Controllers::One => &Fault::ALL[..6],
            Controllers::PerRegion => &Fault::ALL,
        }
    }
}

impl FromStr for Controllers {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "1" => Ok(Controllers::One),
            "3" => Ok(Controllers::PerRegion),
            other => Err(format!(
                "controllers {other:?}: expected 1 (one controller) or 3 (one per region, through etcd)"
            )),
        }
    }
}

impl fmt::Display for Controllers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Controllers::One => "1ctl",
            Controllers::PerRegion => "3ctl",
        })
    }
}

/// A fault a drill injects on the writer or the controller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Fault {
    /// `kill -9` of the writer's PostgreSQL (postmaster and children). It
    /// stays down: rejoining it is an operator's step (`failover_pg::rejoin`).
    KillWriterDb,
    /// `SIGSTOP` of the writer's PostgreSQL until the failover (or the
    /// worst bound + slack), then `SIGCONT`: a frozen VM that wakes up.
    PauseWriterDb,
    /// Every link of the writer's region cut; its clients keep writing
    /// inside it. Healed with `rejoin`.
    IsolateWriterRegion,
    /// Only the link between the controller's region and the writer's cut:
    /// a partial partition (the writer still replicates to the third region).
    CutControllerFromWriter,
    /// The controller (runtime, lease server, embedded DNS) dropped as by a
    /// crash, and started again on the same addresses. With a controller
    /// per region, the leader.
    RestartController,
    /// `kill -9` of the writer's PostgreSQL while its guard lives on (the
    /// machine is fine): the guard must let its lease go, or the controller
    /// never gets its proof that the node stopped.
    CrashWriterDb,
    /// With a controller per region only: the etcd leader member stopped
    /// (a minority of the store), then the writer's machine lost as in
    /// `KillWriterDb`: the failover must go through the remaining majority.
    EtcdMinorityKillWriter,
}

impl Fault {
    /// Every fault kind, in the order of the summary table.
    pub const ALL: [Fault; 7] = [
        Fault::KillWriterDb,
        Fault::PauseWriterDb,
        Fault::IsolateWriterRegion,
        Fault::CutControllerFromWriter,
        Fault::RestartController,
        Fault::CrashWriterDb,
        Fault::EtcdMinorityKillWriter,
    ];

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Fault::KillWriterDb => "kill-writer-db",
            Fault::PauseWriterDb => "pause-writer-db",
            Fault::IsolateWriterRegion => "isolate-writer-region",
            Fault::CutControllerFromWriter => "cut-controller-from-writer",
            Fault::RestartController => "restart-controller",
            Fault::CrashWriterDb => "crash-writer-db",
            Fault::EtcdMinorityKillWriter => "etcd-minority-kill-writer",
        }
    }

    /// Whether the writer must move (`Some(true)`), must stay
    /// (`Some(false)`), or may do either (`None`). It must move when the
    /// writer's database or region is lost to the controllers, and stay
    /// when a controller restarts. With a controller per region, a cut
    /// between the leader's region and the writer's leaves the region up
    /// (only one vantage of three sees it down), but the leader may still
    /// fail the database over: it cannot reach the writer, and with
    /// synchronous replication (or a lapsed guard lease) it has its proof.
    pub fn moves_writer(self, controllers: Controllers) -> Option<bool> {
        match self {
            Fault::RestartController => Some(false),
            Fault::CutControllerFromWriter if controllers == Controllers::PerRegion => None,
            _ => Some(true),
        }
    }
}

impl FromStr for Fault {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Fault::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Fault::ALL.iter().map(|f| f.name()).collect();
                format!("fault {s:?}: expected one of {}", names.join(", "))
            })
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// splitmix64: a tiny deterministic generator, so a drill's seed replays it
/// exactly (same fault, same timings) without a dependency.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// A duration in `lo..hi` milliseconds.
    pub fn millis(&mut self, lo: u64, hi: u64) -> std::time::Duration {
        std::time::Duration::from_millis(lo + self.below(hi.saturating_sub(lo).max(1)))
    }
}

/// The seed of drill `i` of a run seeded `seed`: `seed + i`, so drill `i`
/// replays alone with `--drills 1 --seed <seed + i>`.
pub fn drill_seed(seed: u64, i: u64) -> u64 {
    seed.wrapping_add(i)
}
