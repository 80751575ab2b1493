//! The task that owns the controller and runs its loop.

use std::collections::VecDeque;

use failover_core::{Action, Controller, Input};
use serde_json::json;
use tokio::sync::{broadcast, mpsc, watch};

use super::audit::AuditLog;
use super::telemetry::Telemetry;
use super::workers::DatabaseJob;
use super::RuntimeStatus;

pub(crate) struct Driver {
    pub(crate) controller: Controller,
    pub(crate) inputs: mpsc::Receiver<Input>,
    pub(crate) plans:
        Option<mpsc::UnboundedSender<(failover_core::ActionId, failover_core::WeightPlan)>>,
    pub(crate) jobs: Option<mpsc::UnboundedSender<DatabaseJob>>,
    pub(crate) audit: AuditLog,
    pub(crate) status: watch::Sender<RuntimeStatus>,
    pub(crate) events: broadcast::Sender<failover_core::Event>,
    pub(crate) events_kept: usize,
    pub(crate) telemetry: Telemetry,
}

impl Driver {
    /// The loop the Controller's docs prescribe: after every input or timeout,
    /// drain `poll_action` until it is empty, then wait for the next input or
    /// for `poll_timeout`, whichever comes first.
    pub(crate) async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut recent = VecDeque::with_capacity(self.events_kept);
        loop {
            let mut changed = false;
            while let Some(action) = self.controller.poll_action() {
                changed = true;
                self.dispatch(action, &mut recent);
            }
            if changed {
                let status = RuntimeStatus {
                    controller: self.controller.status(),
                    recent_events: recent.clone(),
                };
                self.telemetry
                    .record_status(&status.controller, self.controller.topology());
                self.status.send_replace(status);
            }
            let deadline = self.controller.poll_timeout();
            let sleep = async move {
                match deadline {
                    Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = shutdown.changed() => break,
                input = self.inputs.recv() => {
                    let Some(input) = input else { break };
                    self.telemetry.record_input(&input, self.controller.topology());
                    if let Input::Command(command) = &input {
                        tracing::info!(?command, "operator command");
                        self.audit.record("command", json!({"command": format!("{command:?}")}));
                    }
                    self.controller.handle(std::time::Instant::now(), input);
                }
                _ = sleep => self.controller.handle_timeout(std::time::Instant::now()),
            }
        }
        tracing::debug!("controller loop ended");
    }

    fn dispatch(&mut self, action: Action, recent: &mut VecDeque<String>) {
        let topology = self.controller.topology();
        match action {
            Action::SetWeights { id, plan } => {
                let weights: Vec<_> = plan
                    .weights
                    .iter()
                    .map(|w| json!({"region": topology.region(w.region).name, "weight": w.weight}))
                    .collect();
                tracing::info!(action = id.0, generation = plan.generation, ttl_s = plan.ttl.as_secs(), weights = %json!(weights), "set weights");
                self.audit.record(
                    "action",
                    json!({"action": id.0, "type": "set_weights", "generation": plan.generation,
                           "ttl_s": plan.ttl.as_secs(), "weights": weights}),
                );
                match &self.plans {
                    Some(plans) => {
                        let _ = plans.send((id, plan));
                    }
                    None => tracing::warn!(
                        generation = plan.generation,
                        "no traffic router configured; plan not applied"
                    ),
                }
            }
            Action::Fence { id, node, epoch } => {
                let name = &topology.node(node).name;
                tracing::warn!(action = id.0, node = %name, epoch = epoch.0, "fence old primary");
                self.audit.record(
                    "action",
                    json!({"action": id.0, "type": "fence", "node": name, "epoch": epoch.0}),
                );
                self.send_job(DatabaseJob::Fence { id, node, epoch });
            }
            Action::Promote { id, request } => {
                let name = &topology.node(request.node).name;
                tracing::warn!(action = id.0, node = %name, epoch = request.epoch.0, gate = ?request.gate, "promote replica");
                metrics::counter!("failover_promotions_requested_total").increment(1);
                self.audit.record(
                    "action",
                    json!({"action": id.0, "type": "promote", "node": name, "epoch": request.epoch.0,
                           "gate": format!("{:?}", request.gate)}),
                );
                self.send_job(DatabaseJob::Promote { id, request });
            }
            Action::Notify(event) => {
                let text = event.display(topology).to_string();
                let kind = super::telemetry::event_kind_name(&event);
                tracing::info!(kind = %kind, event = %text, "decision");
                self.telemetry.record_event(&event, topology);
                self.audit.record(
                    "event",
                    json!({"event": text, "detail": format!("{:?}", event.kind)}),
                );
                if recent.len() == self.events_kept {
                    recent.pop_front();
                }
                recent.push_back(text);
                // No subscriber is fine: events are also in the status and the log.
                let _ = self.events.send(event);
            }
            other => {
                tracing::warn!(action = ?other, "action of a kind this runtime does not execute");
            }
        }
    }

    fn send_job(&self, job: DatabaseJob) {
        match &self.jobs {
            Some(jobs) => {
                let _ = jobs.send(job);
            }
            None => tracing::error!(?job, "no database adapter configured; action dropped"),
        }
    }
}
