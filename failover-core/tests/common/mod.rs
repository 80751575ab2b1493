//! A test driver that owns the clock: simulated time only (a base `Instant`
//! plus offsets), and a log of every action the controller asked for.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use failover_core::{
    Action, ActionFailure, ActionId, Command, Config, Controller, EventKind, Health, Input, Lsn,
    MaxRpo, Node, NodeObservation, Policy, PortErrorKind, ProbeFailure, ProbeOutcome, ProbeResult,
    Region, RegionRole, ReplicationStatus, Topology,
};

/// us-east active (capacity 1.0), us-west standby (capacity 0.6), one database
/// node in each (pg-east primary), probed from `vantages`.
pub fn seed_topology(vantages: &[&str]) -> Topology {
    let mut west = Region::new("us-west", RegionRole::Standby);
    west.capacity = 0.6;
    let mut builder = Topology::builder("api.example.com.")
        .region(Region::new("us-east", RegionRole::Active))
        .region(west)
        .node(Node {
            name: "pg-east".into(),
            region: "us-east".into(),
            priority: 0,
            primary: true,
        })
        .node(Node {
            name: "pg-west".into(),
            region: "us-west".into(),
            priority: 0,
            primary: false,
        });
    for v in vantages {
        builder = builder.vantage(*v);
    }
    builder.build().expect("valid seed topology")
}

/// Interval 10 s, fall 3, rise 2, TTL 60 s, hold-down 60 s, ramp every 30 s.
pub fn seed_policy() -> Policy {
    Policy {
        jitter: Duration::ZERO,
        ..Policy::default()
    }
}

pub fn seed_config() -> Config {
    Config::new(seed_topology(&[]), seed_policy()).expect("valid seed config")
}

pub fn auto_promote(mut policy: Policy, max_bytes: u64) -> Policy {
    policy.auto_promote = true;
    policy.max_rpo = Some(MaxRpo::bytes(max_bytes));
    // Every node runs a guard with a 30 s lease; a writer that is not proven
    // stopped within 60 s is not replaced.
    policy.guard_ttl = Some(Duration::from_secs(30));
    policy.proof_timeout = Duration::from_secs(60);
    policy
}

pub struct Drill {
    pub c: Controller,
    pub t0: Instant,
    pub now: Instant,
    /// Every action polled so far, with its time offset in seconds.
    pub log: Vec<(u64, Action)>,
    /// Acknowledge `SetWeights` automatically.
    pub ack_weights: bool,
    /// Acknowledge `SetWriter` (the in-process store's compare-and-set) automatically.
    pub ack_claims: bool,
    /// Where this drill's log was before the last step.
    mark: usize,
}

impl Drill {
    pub fn new(config: Config) -> Self {
        let t0 = Instant::now();
        let c = Controller::new(config, t0);
        let mut drill = Drill {
            c,
            t0,
            now: t0,
            log: Vec::new(),
            ack_weights: true,
            ack_claims: true,
            mark: 0,
        };
        drill.drain();
        drill
    }

    pub fn secs(&self) -> u64 {
        (self.now - self.t0).as_secs()
    }

    /// Polls every action; acknowledges weight plans when `ack_weights`.
    pub fn drain(&mut self) {
        while let Some(action) = self.c.poll_action() {
            let at = self.secs();
            let ack = match &action {
                Action::SetWeights { id, .. } if self.ack_weights => Some(*id),
                Action::SetWriter { id, .. } if self.ack_claims => Some(*id),
                _ => None,
            };
            self.log.push((at, action));
            if let Some(id) = ack {
                self.c.handle(self.now, Input::ActionDone { id });
            }
        }
    }

    /// Moves the clock to `t0 + secs`, running every timer on the way.
    pub fn advance_to(&mut self, secs: u64) {
        let target = self.t0 + Duration::from_secs(secs);
        for _ in 0..10_000 {
            match self.c.poll_timeout() {
                Some(at) if at <= target => {
                    self.now = self.now.max(at);
                    self.c.handle_timeout(self.now);
                    self.drain();
                }
                _ => break,
            }
        }
        self.now = self.now.max(target);
    }

    pub fn input(&mut self, input: Input) {
        self.mark = self.log.len();
        self.c.handle(self.now, input);
        self.drain();
    }

    pub fn probe(&mut self, region: &str, vantage: &str, ok: bool) {
        let topo = self.c.topology();
        let region = topo.region_id(region).expect("region");
        let vantage = topo.vantage_id(vantage).expect("vantage");
        let outcome = if ok {
            ProbeOutcome::Ok {
                latency: Duration::from_millis(20),
            }
        } else {
            ProbeOutcome::Failed(ProbeFailure::ConnectTimeout)
        };
        self.input(Input::Probe(ProbeResult {
            region,
            vantage,
            at: self.now,
            outcome,
        }));
    }

    /// One probe round from every vantage, at `secs`.
    pub fn round(&mut self, secs: u64, region: &str, ok: bool) {
        self.advance_to(secs);
        let vantages: Vec<String> = self.c.topology().vantages().to_vec();
        for v in vantages {
            self.probe(region, &v, ok);
        }
    }

    /// `n` probe rounds of `region`, every 10 s from `from`.
    pub fn rounds(&mut self, from: u64, n: u64, region: &str, ok: bool) {
        for i in 0..n {
            self.round(from + 10 * i, region, ok);
        }
    }

    pub fn command(&mut self, command: Command) {
        self.input(Input::Command(command));
    }

    pub fn observe(&mut self, node: &str, observation: NodeObservation) {
        let node = self.c.topology().node_id(node).expect("node");
        self.input(Input::Replication(ReplicationStatus {
            node,
            at: self.now,
            observation,
        }));
    }

    pub fn replica(&mut self, node: &str, lsn: u64) {
        self.observe(
            node,
            NodeObservation::Replica {
                timeline: 1,
                receive_lsn: Some(Lsn(lsn)),
                replay_lsn: Some(Lsn(lsn)),
                replay_delay: Some(Duration::ZERO),
                upstream_heard: None,
            },
        );
    }

    pub fn primary(&mut self, node: &str, lsn: u64, epoch: Option<u64>) {
        self.observe(
            node,
            NodeObservation::Primary {
                timeline: 1,
                current_lsn: Lsn(lsn),
                epoch: epoch.map(failover_core::Epoch),
                fenced: false,
                sync_wait: None,
            },
        );
    }

    /// `node` seen as a fenced primary on timeline 1.
    pub fn fenced_primary(&mut self, node: &str, lsn: u64, epoch: Option<u64>) {
        self.observe(
            node,
            NodeObservation::Primary {
                timeline: 1,
                current_lsn: Lsn(lsn),
                epoch: epoch.map(failover_core::Epoch),
                fenced: true,
                sync_wait: None,
            },
        );
    }

    pub fn done(&mut self, id: ActionId) {
        self.input(Input::ActionDone { id });
    }

    pub fn fail(&mut self, id: ActionId, kind: PortErrorKind) {
        self.input(Input::ActionFailed {
            id,
            failure: ActionFailure {
                kind,
                message: "injected by the test".into(),
            },
        });
    }

    /// Every event so far.
    pub fn events(&self) -> Vec<EventKind> {
        self.log
            .iter()
            .filter_map(|(_, a)| match a {
                Action::Notify(e) => Some(e.kind.clone()),
                _ => None,
            })
            .collect()
    }

    /// Events produced by the last input.
    pub fn last_events(&self) -> Vec<EventKind> {
        self.log[self.mark..]
            .iter()
            .filter_map(|(_, a)| match a {
                Action::Notify(e) => Some(e.kind.clone()),
                _ => None,
            })
            .collect()
    }

    /// Non-notify actions produced by the last input.
    pub fn last_actions(&self) -> Vec<Action> {
        self.log[self.mark..]
            .iter()
            .filter(|(_, a)| !matches!(a, Action::Notify(_)))
            .map(|(_, a)| a.clone())
            .collect()
    }

    /// Weights of the desired plan, in region order.
    pub fn weights(&self) -> Vec<u32> {
        self.c
            .plan()
            .map(|p| p.weights.iter().map(|w| w.weight).collect())
            .unwrap_or_default()
    }

    pub fn health(&self, region: &str) -> Health {
        let id = self.c.topology().region_id(region).expect("region");
        self.c.status().regions[id.index()].health
    }

    /// Every weight plan issued, as (seconds, weights).
    pub fn plans(&self) -> Vec<(u64, Vec<u32>)> {
        self.log
            .iter()
            .filter_map(|(t, a)| match a {
                Action::SetWeights { plan, .. } => {
                    Some((*t, plan.weights.iter().map(|w| w.weight).collect()))
                }
                _ => None,
            })
            .collect()
    }

    /// The last action of this kind, panicking with the log when absent.
    pub fn last_fence(&self) -> (ActionId, failover_core::NodeId, failover_core::Epoch) {
        self.log
            .iter()
            .rev()
            .find_map(|(_, a)| match a {
                Action::Fence { id, node, epoch } => Some((*id, *node, *epoch)),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no fence in {:#?}", self.log))
    }

    pub fn last_promote(&self) -> (ActionId, failover_core::PromoteRequest) {
        self.log
            .iter()
            .rev()
            .find_map(|(_, a)| match a {
                Action::Promote { id, request } => Some((*id, *request)),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no promote in {:#?}", self.log))
    }

    pub fn promotes(&self) -> usize {
        self.log
            .iter()
            .filter(|(_, a)| matches!(a, Action::Promote { .. }))
            .count()
    }
}
