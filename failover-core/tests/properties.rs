//! Property tests over random sequences of probes, replication observations,
//! action outcomes, commands and the passing of time.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use failover_core::{
    Action, ActionFailure, ActionId, Command, Config, Controller, EventKind, Input, Lsn, MaxRpo,
    Node, NodeId, NodeObservation, Policy, PortErrorKind, ProbeFailure, ProbeOutcome, ProbeResult,
    Region, RegionId, RegionRole, ReplicationStatus, RpoGate, Topology, VantageId,
};
use proptest::prelude::*;

const MAX_RPO: u64 = 1_000;

fn config() -> Config {
    let mut b = Topology::builder("api.example.com.")
        .region(Region::new("a", RegionRole::Active))
        .region(Region::new("b", RegionRole::Active))
        .region(Region::new("c", RegionRole::Standby))
        .vantage("v1")
        .vantage("v2");
    for (i, region) in ["a", "b", "c"].iter().enumerate() {
        b = b.node(Node {
            name: format!("pg-{region}"),
            region: (*region).into(),
            priority: i as u32,
            primary: i == 0,
        });
    }
    let policy = Policy {
        fall: 2,
        rise: 2,
        hold_down: Duration::from_secs(20),
        ramp_steps: vec![10, 50, 100],
        ramp_interval: Duration::from_secs(10),
        flap_limit: 2,
        flap_window: Duration::from_secs(120),
        auto_promote: true,
        max_rpo: Some(MaxRpo::bytes(MAX_RPO)),
        ..Policy::default()
    };
    Config::new(b.build().unwrap(), policy).unwrap()
}

#[derive(Clone, Debug)]
enum Op {
    Probe { region: u32, vantage: u32, ok: bool },
    Advance { secs: u64 },
    Primary { node: u32, lsn: u64 },
    Replica { node: u32, lsn: u64 },
    Unreachable { node: u32 },
    Complete { fail: bool },
    Command(Command),
}

fn op() -> impl Strategy<Value = Op> {
    let region = 0..3u32;
    let node = 0..3u32;
    prop_oneof![
        10 => (region.clone(), 0..2u32, prop::bool::weighted(0.6))
            .prop_map(|(region, vantage, ok)| Op::Probe { region, vantage, ok }),
        3 => (1..30u64).prop_map(|secs| Op::Advance { secs }),
        2 => (node.clone(), 0..5_000u64).prop_map(|(node, lsn)| Op::Primary { node, lsn }),
        3 => (node.clone(), 0..5_000u64).prop_map(|(node, lsn)| Op::Replica { node, lsn }),
        1 => node.clone().prop_map(|node| Op::Unreachable { node }),
        4 => prop::bool::weighted(0.2).prop_map(|fail| Op::Complete { fail }),
        1 => prop_oneof![
            region.clone().prop_map(|r| Command::Drain(RegionId(r))),
            region.prop_map(|r| Command::Undrain(RegionId(r))),
            node.clone().prop_map(|n| Command::ForcePromote { node: NodeId(n) }),
            node.prop_map(|n| Command::Switchover { to: NodeId(n) }),
            Just(Command::Pause),
            Just(Command::Resume),
        ]
        .prop_map(Op::Command),
    ]
}

/// One step of a run: the op, the actions it produced, and whether health
/// or drains changed.
#[derive(Debug, PartialEq)]
struct Step {
    actions: Vec<Action>,
    health_changed: bool,
}

fn run(ops: &[Op], t0: Instant) -> Vec<Step> {
    let mut c = Controller::new(config(), t0);
    let mut now = t0;
    let mut pending: VecDeque<ActionId> = VecDeque::new();
    let mut steps = Vec::new();
    let drain = |c: &mut Controller, pending: &mut VecDeque<ActionId>| {
        let mut out = Vec::new();
        while let Some(a) = c.poll_action() {
            if let Some(id) = a.id() {
                pending.push_back(id);
            }
            out.push(a);
        }
        out
    };
    drain(&mut c, &mut pending);
    for op in ops {
        let before: Vec<_> = c
            .status()
            .regions
            .iter()
            .map(|r| (r.health, r.drained))
            .collect();
        let input = match op {
            Op::Probe {
                region,
                vantage,
                ok,
            } => Some(Input::Probe(ProbeResult {
                region: RegionId(*region),
                vantage: VantageId(*vantage),
                at: now,
                outcome: if *ok {
                    ProbeOutcome::Ok {
                        latency: Duration::from_millis(5),
                    }
                } else {
                    ProbeOutcome::Failed(ProbeFailure::Refused)
                },
            })),
            Op::Advance { secs } => {
                now += Duration::from_secs(*secs);
                None
            }
            Op::Primary { node, lsn } => Some(obs(
                *node,
                now,
                NodeObservation::Primary {
                    timeline: 1,
                    current_lsn: Lsn(*lsn),
                    epoch: None,
                    fenced: false,
                },
            )),
            Op::Replica { node, lsn } => Some(obs(
                *node,
                now,
                NodeObservation::Replica {
                    timeline: 1,
                    receive_lsn: Some(Lsn(*lsn)),
                    replay_lsn: Some(Lsn(*lsn)),
                    replay_delay: None,
                },
            )),
            Op::Unreachable { node } => Some(obs(*node, now, NodeObservation::Unreachable)),
            Op::Complete { fail } => pending.pop_front().map(|id| {
                if *fail {
                    Input::ActionFailed {
                        id,
                        failure: ActionFailure {
                            kind: PortErrorKind::Unavailable,
                            message: "x".into(),
                        },
                    }
                } else {
                    Input::ActionDone { id }
                }
            }),
            Op::Command(command) => Some(Input::Command(*command)),
        };
        let mut actions = Vec::new();
        match input {
            Some(input) => c.handle(now, input),
            None if !matches!(op, Op::Advance { .. }) => {} // nothing pending to complete
            None => {
                // Time passed: run the deadlines, as a driver would.
                while let Some(at) = c.poll_timeout().filter(|at| *at <= now) {
                    c.handle_timeout(at.max(t0));
                    actions.extend(drain(&mut c, &mut pending));
                }
            }
        }
        actions.extend(drain(&mut c, &mut pending));
        let after: Vec<_> = c
            .status()
            .regions
            .iter()
            .map(|r| (r.health, r.drained))
            .collect();
        steps.push(Step {
            actions,
            health_changed: before != after,
        });
    }
    steps
}

fn obs(node: u32, at: Instant, observation: NodeObservation) -> Input {
    Input::Replication(ReplicationStatus {
        node: NodeId(node),
        at,
        observation,
    })
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(op(), 1..200)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn the_same_inputs_always_give_the_same_actions(ops in ops()) {
        let t0 = Instant::now();
        prop_assert_eq!(run(&ops, t0), run(&ops, t0));
    }

    #[test]
    fn with_fail_open_no_plan_routes_nothing(ops in ops()) {
        for step in run(&ops, Instant::now()) {
            for action in &step.actions {
                if let Action::SetWeights { plan, .. } = action {
                    prop_assert!(plan.total() > 0, "{plan:?}");
                    prop_assert_eq!(plan.weights.len(), 3);
                }
            }
        }
    }

    #[test]
    fn no_promotion_beyond_max_rpo_unless_forced(ops in ops()) {
        let steps = run(&ops, Instant::now());
        let mut forced = false;
        for step in &steps {
            for action in &step.actions {
                match action {
                    Action::Notify(e) => if let EventKind::PromotionRequested { lag_bytes, forced: f, .. } = e.kind {
                        prop_assert!(f || lag_bytes.is_some_and(|l| l <= MAX_RPO), "lag {lag_bytes:?} > {MAX_RPO}");
                        forced = f;
                    },
                    Action::Promote { request, .. } => {
                        prop_assert_eq!(forced, request.gate == RpoGate::Forced);
                        if let RpoGate::Within { max, .. } = request.gate {
                            prop_assert_eq!(max, MaxRpo::bytes(MAX_RPO));
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    #[test]
    fn epochs_strictly_increase_with_one_primary_each(ops in ops()) {
        let mut last = None;
        let mut told: BTreeMap<u64, NodeId> = BTreeMap::new();
        for step in run(&ops, Instant::now()) {
            for action in &step.actions {
                if let Action::Promote { request, .. } = action {
                    // An epoch is spent only by a promotion that happened, so a
                    // retry may reuse it — but never for another node.
                    prop_assert!(last.is_none_or(|l| request.epoch >= l), "{:?} after {last:?}", request.epoch);
                    last = Some(request.epoch);
                    let before = told.insert(request.epoch.0, request.node);
                    prop_assert!(before.is_none_or(|n| n == request.node), "{:?} promoted {before:?} and {:?}", request.epoch, request.node);
                }
            }
        }
    }

    #[test]
    fn no_weight_change_without_a_health_or_command_change(ops in ops()) {
        let steps = run(&ops, Instant::now());
        for (op, step) in ops.iter().zip(&steps) {
            let changed_weights = step.actions.iter().any(|a| matches!(a, Action::SetWeights { .. }));
            match op {
                Op::Probe { .. } => prop_assert!(!changed_weights || step.health_changed, "{op:?}: {:?}", step.actions),
                Op::Primary { .. } | Op::Replica { .. } | Op::Unreachable { .. } | Op::Complete { .. } => {
                    prop_assert!(!changed_weights, "{op:?}: {:?}", step.actions)
                }
                // Commands and the passing of time (ramp steps, hold-down ends,
                // re-sending a failed plan) may change weights.
                Op::Command(_) | Op::Advance { .. } => {}
            }
        }
    }
}

/// The generated sequences reach the interesting states (not a vacuous pass).
#[test]
fn generated_sequences_reach_promotions_and_refusals() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let (mut auto, mut forced, mut refused, mut drained) = (0, 0, 0, 0);
    for _ in 0..300 {
        let ops = ops().new_tree(&mut runner).unwrap().current();
        for step in run(&ops, Instant::now()) {
            for a in &step.actions {
                if let Action::Notify(e) = a {
                    match e.kind {
                        EventKind::PromotionRequested { forced: false, .. } => auto += 1,
                        EventKind::PromotionRequested { forced: true, .. } => forced += 1,
                        EventKind::PromotionRefused { .. } => refused += 1,
                        EventKind::RegionDown { .. } => drained += 1,
                        _ => {}
                    }
                }
            }
        }
    }
    eprintln!("auto {auto}, forced {forced}, refused {refused}, region downs {drained}");
    assert!(auto > 0 && forced > 0 && refused > 0 && drained > 0);
}
