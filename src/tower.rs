//! The service side (feature `tower`): the `failover-tower` crate's layers
//! — write gate, shedding, idempotency keys, passive health — with
//! [`from_runtime`], the [`FailoverState`] of the runtime in this process,
//! and [`passive_health`], a [`PassiveHealthLayer`] that reports to it.
//!
//! A service in another process follows a controller's admin API instead,
//! with [`RemoteStatus`].

use std::time::{Duration, Instant};

use failover_core::objectives::promotion_bound;
use failover_core::{Config, Health, PromotionPhase, RegionId, TrafficReport};
use tokio::task::JoinHandle;

pub use failover_tower::*;

use crate::{NodeRole, RuntimeError, RuntimeHandle, RuntimeStatus};

/// How often the adapter checks that the runtime's tasks still run (a dead
/// driver publishes nothing more, so silence alone would not say it).
const HEALTH_CHECK: Duration = Duration::from_secs(1);

/// A [`FailoverState`] that follows the runtime behind `handle`, started
/// from `config` (the one the runtime was built with: region names and
/// capacities, and the policy's promotion bounds), for an instance in
/// `local_region` (`None`: not in a region of the topology).
///
/// Every status change is published: each region's health, desired weight
/// and capacity; the writer, its epoch and whether its node is fenced; a
/// promotion's phase, with a deadline from
/// [`promotion_bound`] counted
/// from when the phase was first seen. When the runtime stops or one of its
/// tasks dies, the state keeps the last status and is marked stale.
///
/// Spawns a task (call it inside a tokio runtime) that ends once every
/// clone of the state is dropped. An unknown `local_region` is
/// [`RuntimeError::Setup`].
pub fn from_runtime(
    handle: &RuntimeHandle,
    config: &Config,
    local_region: Option<&str>,
) -> Result<(FailoverState, JoinHandle<()>), RuntimeError> {
    let topology = config.topology();
    let local = match local_region {
        None => None,
        Some(name) => Some(topology.region_id(name).ok_or_else(|| {
            let known: Vec<&str> = topology.regions().iter().map(|r| r.name.as_str()).collect();
            RuntimeError::Setup(format!(
                "local_region {name:?} is not a region of the topology ({})",
                known.join(", ")
            ))
        })?),
    };
    let mut adapter = Adapter {
        config: config.clone(),
        local,
        phase: None,
    };
    let mut status = handle.watch_status();
    let first = adapter.snapshot(&status.borrow_and_update());
    let (publisher, state) = FailoverState::channel(first);
    let handle = handle.clone();
    let task = tokio::spawn(async move {
        let mut health = tokio::time::interval(HEALTH_CHECK);
        health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = publisher.closed() => return,
                changed = status.changed() => {
                    if changed.is_err() {
                        publisher.mark_stale("the failover runtime stopped");
                        publisher.closed().await;
                        return;
                    }
                    let snapshot = adapter.snapshot(&status.borrow_and_update());
                    publisher.publish(snapshot);
                }
                _ = health.tick() => {
                    if let Err(error) = handle.health() {
                        publisher.mark_stale(format!("the failover runtime is not running: {error}"));
                    }
                }
            }
        }
    });
    Ok((state, task))
}

/// A [`PassiveHealthLayer`] for an instance in `local_region` that reports
/// what its users see to the runtime behind `handle`
/// ([`RuntimeHandle::report_traffic`]), with the slow threshold of
/// `policy.passive.latency` in `config` (the runtime's), reporting every
/// `report_every`. The controller judges the reports only when
/// `policy.passive` is set.
///
/// Spawns a task (call it inside a tokio runtime) that forwards the
/// aggregates and ends when the runtime stops or every clone of the layer
/// is dropped; aggregates for a region not in the topology are dropped with
/// a warning. An unknown `local_region` is [`RuntimeError::Setup`].
pub fn passive_health(
    handle: &RuntimeHandle,
    config: &Config,
    local_region: &str,
    report_every: Duration,
) -> Result<(PassiveHealthLayer, JoinHandle<()>), RuntimeError> {
    let topology = config.topology().clone();
    if topology.region_id(local_region).is_none() {
        let known: Vec<&str> = topology.regions().iter().map(|r| r.name.as_str()).collect();
        return Err(RuntimeError::Setup(format!(
            "local_region {local_region:?} is not a region of the topology ({})",
            known.join(", ")
        )));
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel::<RegionTraffic>(1024);
    let mut builder = PassiveHealthLayer::builder(local_region).report_every(report_every);
    if let Some(latency) = config.policy().passive.as_ref().and_then(|p| p.latency) {
        builder = builder.slow_after(latency.threshold);
    }
    let handle = handle.clone();
    let task = tokio::spawn(async move {
        while let Some(traffic) = rx.recv().await {
            let Some(region) = topology.region_id(&traffic.region) else {
                tracing::warn!(region = %traffic.region, "passive health: traffic for a region not in the topology; dropped");
                continue;
            };
            let report = TrafficReport {
                region,
                at: traffic.at,
                requests: traffic.requests,
                errors: traffic.errors,
                slow: traffic.slow,
                consecutive_errors: traffic.consecutive_errors,
            };
            if handle.report_traffic(report).await.is_err() {
                return;
            }
        }
    });
    Ok((builder.sink(tx), task))
}

/// Turns runtime statuses into snapshots, remembering when each promotion
/// phase was first seen.
struct Adapter {
    config: Config,
    local: Option<RegionId>,
    phase: Option<(PromotionPhase, Option<Instant>)>,
}

impl Adapter {
    fn snapshot(&mut self, status: &RuntimeStatus) -> Snapshot {
        let topology = self.config.topology();
        let c = &status.controller;
        let mut snapshot = Snapshot::fresh();
        snapshot.regions = c
            .regions
            .iter()
            .map(|r| {
                let region = topology.region(r.id);
                let mut view = RegionView::new(region.name.clone());
                view.health = match r.health {
                    Health::Up => RegionHealth::Up,
                    Health::Down => RegionHealth::Down,
                    Health::Unknown => RegionHealth::Unknown,
                };
                view.weight = r.weight;
                view.drained = r.drained;
                view.capacity = region.capacity;
                view
            })
            .collect();
        snapshot.local = self
            .local
            .and_then(|id| snapshot.regions.get(id.index()).cloned());
        let mut writer = WriterView::default();
        writer.node = c.writer.map(|n| topology.node(n).name.clone());
        writer.epoch = c.epoch.0;
        writer.fenced = c.writer.is_some_and(|w| {
            status
                .nodes
                .iter()
                .any(|n| n.node == w && matches!(n.role, NodeRole::Primary { fenced: true, .. }))
        });
        snapshot.writer = writer;
        snapshot.promotion = match c.promotion {
            PromotionPhase::Idle => {
                self.phase = None;
                None
            }
            phase => {
                let deadline = match self.phase {
                    Some((seen, deadline)) if seen == phase => deadline,
                    _ => promotion_bound(self.config.policy(), phase).map(|b| Instant::now() + b),
                };
                self.phase = Some((phase, deadline));
                Some(PromotionView::new(phase_name(phase), deadline))
            }
        };
        snapshot
    }
}

/// The phase's word, as the admin API's `/status` says it.
fn phase_name(phase: PromotionPhase) -> &'static str {
    match phase {
        PromotionPhase::Idle => "idle",
        PromotionPhase::Fencing { .. } => "fencing",
        PromotionPhase::Claiming { .. } => "claiming",
        PromotionPhase::CatchingUp { .. } => "catching_up",
        PromotionPhase::Promoting { .. } => "promoting",
        PromotionPhase::Refused { .. } => "refused",
        PromotionPhase::Unproven { .. } => "unproven",
        PromotionPhase::NeedsOperator { .. } => "needs_operator",
        _ => "other",
    }
}
