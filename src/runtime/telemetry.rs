//! Metrics through the `metrics` facade. Names are prefixed `failover_`;
//! labels carry region, vantage and node names.
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `failover_region_health` (1 up, 0 down, -1 unknown) | gauge | region |
//! | `failover_region_weight` | gauge | region |
//! | `failover_epoch` | gauge | |
//! | `failover_region_probe_latency_seconds` | histogram | region, vantage |
//! | `failover_region_probe_failures_total` | counter | region, vantage, reason |
//! | `failover_failovers_total` (region marked down) | counter | region |
//! | `failover_promotions_total` | counter | node |
//! | `failover_promotion_refusals_total` | counter | node |
//! | `failover_replication_lag_bytes`, `failover_replication_delay_seconds` | gauge | node |
//! | `failover_database_unreachable_total` | counter | node |
//! | `failover_sync_wait_seconds` (how long a primary's commits have waited for a synchronous standby, its `sync_wait`; 0 when none waits) | gauge | node |
//! | `failover_events_total` | counter | kind |
//! | `failover_action_retries_total` | counter | action |
//! | `failover_action_attempt_failures_total` (each failed attempt) | counter | action |
//! | `failover_router_failures_total` (each failed attempt at a plan) | counter | |
//! | `failover_actions_abandoned_total` (at shutdown) | counter | |
//! | `failover_adapter_panics_total`, `failover_adapter_timeouts_total` | counter | call |
//! | `failover_task_deaths_total` | counter | task |
//! | `failover_audit_write_errors_total` | counter | |
//! | `failover_weight_plans_applied_total` | counter | |
//! | `failover_plan_desired_generation`, `failover_plan_applied_generation` | gauge | |
//! | `failover_region_applied_weight` (as the router last confirmed) | gauge | region |
//! | `failover_writer` (1 the writer, 0 the others) | gauge | node |
//! | `failover_leading` (1 while this controller leads), `failover_paused` | gauge | |
//! | `failover_max_rpo_bytes`, `failover_max_rpo_seconds` (when set) | gauge | |
//! | `failover_action_seconds` (first attempt to done or failed, retries included) | histogram | action, outcome |
//! | `failover_admin_commands_total` | counter | command, outcome |
//! | `failover_admin_refusals_total` | counter | status |
//! | `failover_writer_name_moves_total`, `failover_writer_name_failures_total` (each failed attempt) | counter | |
//!
//! Counters with known labels (retries and failed attempts per action,
//! failovers per region, promotions and refusals per node, router
//! failures) start at 0, so `rate()` and `increase()` work
//! before the first one. README's "Telemetry" table is this one.
//!
//! The adapters add their own (`failover_probe_*`, `failover_dns_*`, `failover_pg_*`).

use failover_core::{
    Event, EventKind, Health, Input, Lsn, NodeObservation, Policy, ProbeOutcome, Topology,
};

use super::status::RuntimeStatus;

/// The actions the workers run, as the `action` label names them.
pub(crate) const ACTIONS: [&str; 4] = ["set_weights", "fence", "promote", "unfence"];

/// The little state metrics need between inputs: the primary's last WAL
/// position, to express replicas' lag in bytes.
#[derive(Debug, Default)]
pub(crate) struct Telemetry {
    primary_lsn: Option<Lsn>,
}

impl Telemetry {
    /// Starts the counters whose labels are known at 0, and records the
    /// policy's limits.
    pub(crate) fn register(&mut self, topology: &Topology, policy: &Policy) {
        for action in ACTIONS {
            metrics::counter!("failover_action_retries_total", "action" => action).increment(0);
            metrics::counter!("failover_action_attempt_failures_total", "action" => action)
                .increment(0);
        }
        for region in topology.regions() {
            metrics::counter!("failover_failovers_total", "region" => region.name.clone())
                .increment(0);
        }
        for node in topology.nodes() {
            metrics::counter!("failover_promotions_total", "node" => node.name.clone())
                .increment(0);
            metrics::counter!("failover_promotion_refusals_total", "node" => node.name.clone())
                .increment(0);
        }
        metrics::counter!("failover_router_failures_total").increment(0);
        if let Some(rpo) = &policy.max_rpo {
            if let Some(bytes) = rpo.bytes {
                metrics::gauge!("failover_max_rpo_bytes").set(bytes as f64);
            }
            if let Some(time) = rpo.time {
                metrics::gauge!("failover_max_rpo_seconds").set(time.as_secs_f64());
            }
        }
    }

    pub(crate) fn record_input(&mut self, input: &Input, topology: &Topology) {
        match input {
            Input::Probe(result) => {
                // Ids come from the caller (`RuntimeHandle::report_probe`); the
                // controller ignores unknown ones, and so must the metrics.
                let (Some(region), Some(vantage)) = (
                    topology.regions().get(result.region.index()),
                    topology.vantages().get(result.vantage.index()),
                ) else {
                    return;
                };
                let (region, vantage) = (region.name.clone(), vantage.clone());
                match result.outcome {
                    ProbeOutcome::Ok { latency } => {
                        metrics::histogram!("failover_region_probe_latency_seconds", "region" => region, "vantage" => vantage)
                            .record(latency.as_secs_f64());
                    }
                    ProbeOutcome::Failed(failure) => {
                        metrics::counter!("failover_region_probe_failures_total", "region" => region, "vantage" => vantage,
                            "reason" => failure.to_string())
                        .increment(1);
                    }
                }
            }
            Input::Replication(status) => {
                let Some(node) = topology.nodes().get(status.node.index()) else {
                    return;
                };
                match status.observation {
                    NodeObservation::Primary {
                        current_lsn,
                        sync_wait,
                        ..
                    } => {
                        self.primary_lsn = Some(current_lsn);
                        metrics::gauge!("failover_replication_lag_bytes", "node" => node.name.clone()).set(0.0);
                        metrics::gauge!("failover_sync_wait_seconds", "node" => node.name.clone())
                            .set(sync_wait.map_or(0.0, |w| w.as_secs_f64()));
                    }
                    NodeObservation::Replica {
                        receive_lsn,
                        replay_lsn,
                        replay_delay,
                        ..
                    } => {
                        if let (Some(primary), Some(have)) =
                            (self.primary_lsn, receive_lsn.or(replay_lsn))
                        {
                            metrics::gauge!("failover_replication_lag_bytes", "node" => node.name.clone())
                                .set(primary.bytes_after(have) as f64);
                        }
                        if let Some(delay) = replay_delay {
                            metrics::gauge!("failover_replication_delay_seconds", "node" => node.name.clone())
                                .set(delay.as_secs_f64());
                        }
                    }
                    NodeObservation::Unreachable => {
                        metrics::counter!("failover_database_unreachable_total", "node" => node.name.clone()).increment(1);
                    }
                }
            }
            _ => {}
        }
    }

    pub(crate) fn record_event(&mut self, event: &Event, topology: &Topology) {
        metrics::counter!("failover_events_total", "kind" => event_kind_name(event)).increment(1);
        match &event.kind {
            EventKind::RegionDown { region, .. } | EventKind::UsersFailing { region, .. } => {
                metrics::counter!("failover_failovers_total", "region" => topology.region(*region).name.clone())
                    .increment(1);
            }
            EventKind::Promoted { node, .. } => {
                metrics::counter!("failover_promotions_total", "node" => topology.node(*node).name.clone())
                    .increment(1);
            }
            EventKind::PromotionRefused { node, .. } => {
                metrics::counter!("failover_promotion_refusals_total", "node" => topology.node(*node).name.clone())
                    .increment(1);
            }
            _ => {}
        }
    }

    /// Region health (1 up, 0 down, -1 unknown), desired and applied
    /// weights, plan generations, the writer, the epoch, leadership and
    /// pause as gauges.
    pub(crate) fn record_status(&mut self, view: &RuntimeStatus, topology: &Topology) {
        let status = &view.controller;
        let applied = view.router.applied.as_ref();
        for region in &status.regions {
            let name = topology.region(region.id).name.clone();
            let health = match region.health {
                Health::Up => 1.0,
                Health::Down => 0.0,
                Health::Unknown => -1.0,
            };
            metrics::gauge!("failover_region_health", "region" => name.clone()).set(health);
            metrics::gauge!("failover_region_weight", "region" => name.clone())
                .set(f64::from(region.weight));
            if let Some(weight) =
                applied.and_then(|plan| plan.weights.iter().find(|w| w.region == region.id))
            {
                metrics::gauge!("failover_region_applied_weight", "region" => name)
                    .set(f64::from(weight.weight));
            }
        }
        if let Some(plan) = &status.plan {
            metrics::gauge!("failover_plan_desired_generation").set(plan.generation as f64);
        }
        if let Some(plan) = applied {
            metrics::gauge!("failover_plan_applied_generation").set(plan.generation as f64);
        }
        for node in topology.node_ids() {
            let writer = if status.writer == Some(node) {
                1.0
            } else {
                0.0
            };
            metrics::gauge!("failover_writer", "node" => topology.node(node).name.clone())
                .set(writer);
        }
        metrics::gauge!("failover_epoch").set(status.epoch.0 as f64);
        metrics::gauge!("failover_leading").set(if status.leader.is_some() { 1.0 } else { 0.0 });
        metrics::gauge!("failover_paused").set(if status.paused { 1.0 } else { 0.0 });
    }
}

/// The variant name of an event's kind, for a low-cardinality metric label.
pub(crate) fn event_kind_name(event: &Event) -> String {
    let debug = format!("{:?}", event.kind);
    debug
        .split(|c: char| !c.is_alphanumeric() && c != '_')
        .next()
        .unwrap_or("Unknown")
        .to_owned()
}
