//! The task that owns the controller and runs its loop.
//!
//! It reads four sources, in this order of priority (a biased select):
//! operator commands, the workers' reports, the controller's timer, then
//! probe results and database observations. A command therefore never
//! waits behind a queue of probe results, and a completion never waits
//! behind either.
//!
//! At shutdown it stops reading commands and inputs, stops sending new
//! actions (each is recorded abandoned), and keeps reading the workers'
//! reports until every worker has exited, so the controller and the status
//! see the last completions.

use std::collections::HashMap;
use std::time::{Instant, SystemTime};

use failover_core::{Action, ActionFailure, ActionId, Command, Controller, Input, PortErrorKind};
use failover_core::{Event, WeightPlan};
use serde_json::json;
use tokio::sync::{broadcast, mpsc, watch};

use super::audit::AuditLog;
use super::coordination::StoreJob;
use super::status::RuntimeStatus;
use super::stop::StopSignal;
use super::telemetry::Telemetry;
use super::workers::router::PlanJob;
use super::workers::writer_name::WriterJob;
use super::workers::{abandon, DatabaseJob, Report, NOT_STARTED};

pub(crate) struct Driver {
    pub(crate) controller: Controller,
    pub(crate) commands: mpsc::Receiver<Command>,
    pub(crate) reports: mpsc::UnboundedReceiver<Report>,
    pub(crate) inputs: mpsc::Receiver<Input>,
    pub(crate) plans: Option<mpsc::UnboundedSender<PlanJob>>,
    pub(crate) jobs: Option<mpsc::UnboundedSender<DatabaseJob>>,
    /// Fences and unfences go to their own worker, so a fence of an
    /// unreachable node that hangs until its timeout never holds up a
    /// promotion the controller already has proof for.
    pub(crate) fences: Option<mpsc::UnboundedSender<DatabaseJob>>,
    /// Changes of the writer's synchronous standbys go to a third worker:
    /// waiting for a standby to catch up holds up no fence or promotion.
    pub(crate) syncs: Option<mpsc::UnboundedSender<DatabaseJob>>,
    pub(crate) audit: AuditLog,
    pub(crate) status: watch::Sender<RuntimeStatus>,
    pub(crate) events: broadcast::Sender<Event>,
    pub(crate) events_kept: usize,
    pub(crate) telemetry: Telemetry,
    /// The runtime's part of the status (the controller's is read on publish).
    pub(crate) view: RuntimeStatus,
    /// Plans sent to the router and not yet done or failed.
    pub(crate) plans_in_flight: HashMap<ActionId, WeightPlan>,
    /// Set when shutdown begins.
    pub(crate) draining: bool,
    /// Where writer claims go without a coordinator.
    pub(crate) writer_store: super::writer_store::WriterStore,
    /// The writer-name worker, when the writer's DNS name is served.
    pub(crate) writer_name: Option<mpsc::UnboundedSender<WriterJob>>,
    /// The leadership term the workers check before each attempt.
    pub(crate) term: watch::Sender<Option<failover_core::FencingToken>>,
    /// The coordination store's side, with a coordinator.
    pub(crate) coordination: Option<Coordination>,
}

/// The driver's links to the coordination store (see `super::coordination`).
pub(crate) struct Coordination {
    /// The store's changes, and its errors.
    pub(crate) events: mpsc::UnboundedReceiver<Result<failover_core::CoordinationEvent, String>>,
    /// The last store error shown, so a repeated one is shown once.
    pub(crate) last_error: Option<String>,
    /// Writes to the store.
    pub(crate) store: mpsc::UnboundedSender<StoreJob>,
    /// This controller's verdicts, for the publisher.
    pub(crate) verdicts: watch::Sender<Vec<failover_core::Verdict>>,
    /// This controller's vantage.
    pub(crate) vantage: failover_core::VantageId,
    /// The local DNS that serves the stored plan, if any.
    pub(crate) serve: Option<mpsc::UnboundedSender<PlanJob>>,
    /// Ids for the local DNS's plans (counting down from `u64::MAX`, apart
    /// from the controller's).
    pub(crate) serve_ids: u64,
    /// The local DNS that answers the writer's name, if any.
    pub(crate) serve_writer: Option<mpsc::UnboundedSender<WriterJob>>,
    /// The promoted writer last sent to it.
    pub(crate) served_writer: Option<(failover_core::NodeId, failover_core::Epoch)>,
    /// The intent the store holds, as last seen.
    pub(crate) stored_intent: failover_core::Intent,
    /// The intent last sent to the store by this controller.
    pub(crate) sent_intent: Option<failover_core::Intent>,
}

impl Coordination {
    async fn next(&mut self) -> Option<Result<failover_core::CoordinationEvent, String>> {
        self.events.recv().await
    }
}

/// The next store change, or never without a coordinator.
async fn next_change(
    coordination: &mut Option<Coordination>,
) -> Option<Result<failover_core::CoordinationEvent, String>> {
    match coordination {
        Some(c) => c.next().await,
        None => std::future::pending().await,
    }
}

impl Driver {
    /// The loop the Controller's docs prescribe: after every input or timeout,
    /// drain `poll_action` until it is empty, then wait for the next input or
    /// for `poll_timeout`, whichever comes first.
    pub(crate) async fn run(mut self, mut stop: StopSignal) {
        let mut dirty = true;
        loop {
            self.poll_actions(&mut dirty);
            let deadline = self.controller.poll_timeout();
            let sleep = async move {
                match deadline {
                    Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                () = stop.begun() => break,
                Some(command) = self.commands.recv() => self.on_command(command),
                Some(change) = next_change(&mut self.coordination) => {
                    self.on_change(change);
                    dirty = true;
                }
                Some(report) = self.reports.recv() => dirty |= self.on_report(report),
                () = sleep => self.controller.handle_timeout(Instant::now()),
                input = self.inputs.recv() => {
                    let Some(input) = input else { break };
                    dirty |= self.on_input(input);
                }
            }
        }
        self.drain(&mut dirty).await;
        tracing::debug!("controller loop ended");
    }

    /// Shutdown: no new inputs or actions; completions until the workers exit.
    async fn drain(&mut self, dirty: &mut bool) {
        self.draining = true;
        self.commands.close();
        self.inputs.close();
        // Closing the job channels tells the workers no more work comes.
        self.plans = None;
        self.jobs = None;
        self.fences = None;
        self.syncs = None;
        self.poll_actions(dirty);
        while let Some(report) = self.reports.recv().await {
            *dirty |= self.on_report(report);
            self.poll_actions(dirty);
        }
        *dirty = true;
        self.poll_actions(dirty);
    }

    fn on_command(&mut self, command: Command) {
        tracing::info!(?command, "operator command");
        self.audit
            .record("command", json!({"command": format!("{command:?}")}));
        let input = Input::Command(command);
        self.telemetry
            .record_input(&input, self.controller.topology());
        self.controller.handle(Instant::now(), input);
    }

    /// A change in the coordination store: the stored plan also goes to the
    /// local DNS, the stored intent is remembered; then the controller hears it.
    fn on_change(&mut self, change: Result<failover_core::CoordinationEvent, String>) {
        use failover_core::CoordinationEvent as Change;
        let change = match change {
            Ok(change) => change,
            Err(error) => {
                let Some(c) = &mut self.coordination else {
                    return;
                };
                if c.last_error.as_ref() != Some(&error) {
                    c.last_error = Some(error.clone());
                    let text = format!("coordination store: {error}");
                    tracing::warn!(event = %text, "decision");
                    self.audit
                        .record("coordination_error", json!({"error": error}));
                    self.remember(text);
                }
                return;
            }
        };
        if let Some(c) = &mut self.coordination {
            c.last_error = None;
            match &change {
                Change::Plan(plan) => {
                    if let Some(serve) = &c.serve {
                        c.serve_ids -= 1;
                        let _ = serve.send((ActionId(c.serve_ids), plan.clone()));
                    }
                }
                Change::Intent(intent) => c.stored_intent = intent.clone(),
                Change::Leadership(token) => {
                    tracing::warn!(token = ?token.map(|t| t.0), "coordination: leadership {}",
                        if token.is_some() { "gained" } else { "lost" });
                    self.audit
                        .record("leadership", json!({"token": token.map(|t| t.0)}));
                }
                _ => {}
            }
        }
        self.controller
            .handle(Instant::now(), Input::Coordination(change));
    }

    /// With a coordinator, after every input: the workers learn the current
    /// term, the publisher gets this controller's verdicts, and intent that
    /// this leader changed goes to the store.
    fn sync_coordination(&mut self) {
        let token = self.controller.token();
        self.term.send_if_modified(|t| {
            let changed = *t != token;
            *t = token;
            changed
        });
        let Some(c) = &mut self.coordination else {
            return;
        };
        let verdicts = self.controller.verdicts(c.vantage);
        c.verdicts.send_if_modified(|v| {
            let changed = *v != verdicts;
            if changed {
                *v = verdicts;
            }
            changed
        });
        if let Some(token) = token {
            let intent = self.controller.intent();
            if intent != c.stored_intent && c.sent_intent.as_ref() != Some(&intent) {
                c.sent_intent = Some(intent.clone());
                let _ = c.store.send(StoreJob::SetIntent { token, intent });
            }
        }
    }

    /// With a local writer name: points it at the promoted writer when
    /// that is a newer one than it names (checked after every input; an
    /// observation that changes nothing in the status can still be the
    /// one that shows a claimed node promoted).
    fn serve_local_writer_name(&mut self) {
        let Some(c) = &mut self.coordination else {
            return;
        };
        let Some(jobs) = &c.serve_writer else {
            return;
        };
        let Some((node, epoch)) = self.controller.promoted_writer() else {
            return;
        };
        if c.served_writer.is_some_and(|(_, served)| served >= epoch) {
            return;
        }
        c.served_writer = Some((node, epoch));
        let _ = jobs.send(WriterJob {
            node,
            name: self.controller.topology().node(node).name.clone(),
            epoch,
            term: None,
        });
    }

    /// Feeds a probe result or an observation to the controller; returns
    /// whether the runtime's own view changed (a node's role or lag).
    fn on_input(&mut self, input: Input) -> bool {
        self.telemetry
            .record_input(&input, self.controller.topology());
        let changed = match &input {
            Input::Probe(_) => {
                self.view.probe_results_handled += 1;
                false
            }
            Input::Replication(seen) => self.view.observe(seen),
            Input::Traffic(_) => {
                // Published: a service waits on it to know its reports
                // were judged (they come at most every few hundred ms).
                self.view.traffic_reports_handled += 1;
                true
            }
            _ => false,
        };
        self.controller.handle(Instant::now(), input);
        changed
    }

    /// Feeds a worker's report to the controller and the status; returns
    /// whether the status changed.
    fn on_report(&mut self, report: Report) -> bool {
        match report {
            Report::Finished(input) => {
                match &input {
                    Input::ActionDone { id } | Input::FenceDone { id, .. } => {
                        if let Some(plan) = self.plans_in_flight.remove(id) {
                            self.view.router.applied = Some(plan);
                            self.view.router.applied_at = Some(SystemTime::now());
                        }
                    }
                    Input::ActionFailed { id, .. } => {
                        self.plans_in_flight.remove(id);
                    }
                    _ => {}
                }
                self.controller.handle(Instant::now(), input);
                true
            }
            Report::AttemptFailed {
                id,
                action,
                attempt,
                error,
                retry_in,
            } => {
                let next = match retry_in {
                    Some(wait) => format!("retrying in {} ms", wait.as_millis()),
                    None => "not retrying".to_owned(),
                };
                let text = format!(
                    "{action} (action {}) attempt {attempt} failed: {error}; {next}",
                    id.0
                );
                if action == "set_weights" {
                    self.view.router.failed_attempts += 1;
                    self.view.router.last_failure = Some(text.clone());
                    metrics::counter!("failover_router_failures_total").increment(1);
                }
                self.remember(text);
                true
            }
        }
    }

    /// Drains `poll_action`, then publishes the status if anything changed.
    fn poll_actions(&mut self, dirty: &mut bool) {
        while let Some(action) = self.controller.poll_action() {
            *dirty = true;
            if let Some(input) = self.dispatch(action) {
                self.controller.handle(Instant::now(), input);
            }
        }
        self.serve_local_writer_name();
        if std::mem::take(dirty) {
            // A change of term, verdict or intent always comes with an
            // event, so only a dirty pass can have one to pass on.
            self.sync_coordination();
            let mut status = self.view.clone();
            status.controller = self.controller.status();
            self.telemetry
                .record_status(&status, self.controller.topology());
            self.status.send_replace(status);
        }
    }

    /// Executes one action; returns the input to feed back at once when it
    /// cannot be handed to its worker.
    fn dispatch(&mut self, action: Action) -> Option<Input> {
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
                if self.draining {
                    return self.not_sent(id, "the runtime is shutting down");
                }
                let Some(plans) = &self.plans else {
                    tracing::warn!(
                        generation = plan.generation,
                        "no traffic router configured; plan not applied"
                    );
                    return None;
                };
                self.plans_in_flight.insert(id, plan.clone());
                if plans.send((id, plan)).is_err() {
                    self.plans_in_flight.remove(&id);
                    return self.not_sent(id, "the router worker is not running");
                }
                None
            }
            Action::Fence { id, node, epoch } => {
                let name = &topology.node(node).name;
                tracing::warn!(action = id.0, node = %name, epoch = epoch.0, "fence old primary");
                self.audit.record(
                    "action",
                    json!({"action": id.0, "type": "fence", "node": name, "epoch": epoch.0}),
                );
                let term = self.controller.token();
                self.send_job(DatabaseJob::Fence {
                    id,
                    term,
                    node,
                    epoch,
                })
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
                let term = self.controller.token();
                self.send_job(DatabaseJob::Promote { id, term, request })
            }
            Action::Notify(event) => {
                // A writer learnt from the nodes (after a restart) is what
                // the guards must see named.
                if let failover_core::EventKind::WriterMoved { to, epoch, .. } = event.kind {
                    self.writer_store
                        .adopted(failover_core::WriterRecord::new(to, epoch));
                }
                // The writer's DNS name follows a promotion only once it
                // completed: after the fence, never to an unpromoted node.
                // Sent after the event is published, so nobody sees the
                // name move before the event.
                let writer_job = match event.kind {
                    failover_core::EventKind::Promoted { node, epoch }
                    | failover_core::EventKind::WriterMoved {
                        to: node, epoch, ..
                    } => Some(WriterJob {
                        node,
                        name: topology.node(node).name.clone(),
                        epoch,
                        term: self.controller.token(),
                    }),
                    _ => None,
                };
                let text = event.display(topology).to_string();
                let kind = super::telemetry::event_kind_name(&event);
                tracing::info!(kind = %kind, event = %text, "decision");
                self.telemetry.record_event(&event, topology);
                self.audit.record(
                    "event",
                    json!({"event": text, "detail": format!("{:?}", event.kind)}),
                );
                self.remember(text);
                // No subscriber is fine: events are also in the status and the log.
                let _ = self.events.send(event);
                if let (Some(job), Some(jobs)) = (writer_job, &self.writer_name) {
                    let _ = jobs.send(job);
                }
                None
            }
            Action::Unfence { id, node, epoch } => {
                let name = &topology.node(node).name;
                tracing::warn!(action = id.0, node = %name, epoch = epoch.0, "unfence the writer");
                self.audit.record(
                    "action",
                    json!({"action": id.0, "type": "unfence", "node": name, "epoch": epoch.0}),
                );
                let term = self.controller.token();
                self.send_job(DatabaseJob::Unfence {
                    id,
                    term,
                    node,
                    epoch,
                })
            }
            Action::SetSynchronous {
                id,
                node,
                epoch,
                standbys,
                token,
            } => {
                let name = &topology.node(node).name;
                let names: Vec<&str> = standbys
                    .iter()
                    .map(|n| topology.node(n).name.as_str())
                    .collect();
                tracing::warn!(action = id.0, node = %name, epoch = epoch.0, standbys = ?names, "set the writer's synchronous standbys");
                self.audit.record(
                    "action",
                    json!({"action": id.0, "type": "set_synchronous", "node": name,
                           "epoch": epoch.0, "standbys": names, "token": token.map(|t| t.0)}),
                );
                let term = self.controller.token();
                self.send_job(DatabaseJob::SetSynchronous {
                    id,
                    term,
                    node,
                    epoch,
                    standbys,
                    token,
                })
            }
            Action::SetWriter {
                id,
                token,
                expected,
                new,
                guard_absent,
            } => {
                let name = &topology.node(new.node).name;
                let sync: Vec<&str> = new
                    .sync
                    .iter()
                    .map(|n| topology.node(n).name.as_str())
                    .collect();
                tracing::warn!(action = id.0, node = %name, epoch = new.epoch.0, sync = ?sync, draining = new.draining, "claim the writer record");
                self.audit.record(
                    "action",
                    json!({"action": id.0, "type": "set_writer", "node": name,
                           "epoch": new.epoch.0, "sync": sync, "draining": new.draining,
                           "token": token.map(|t| t.0)}),
                );
                let Some(c) = &self.coordination else {
                    return Some(self.writer_store.claim(id, expected, new, guard_absent));
                };
                let job = StoreJob::SetWriter {
                    id,
                    token,
                    expected,
                    new,
                    guard_absent,
                };
                let sent = !self.draining && c.store.send(job).is_ok();
                if sent {
                    None
                } else if self.draining {
                    self.not_sent(id, "the runtime is shutting down")
                } else {
                    self.not_sent(id, "the coordination worker is not running")
                }
            }
            other => {
                // Never silence: the controller waits for every action's report.
                tracing::error!(action = ?other, "action of a kind this runtime does not execute");
                other
                    .id()
                    .and_then(|id| self.not_sent(id, "this runtime does not execute that action"))
            }
        }
    }

    fn send_job(&mut self, job: DatabaseJob) -> Option<Input> {
        let id = job.id();
        if self.draining {
            return self.not_sent(id, "the runtime is shutting down");
        }
        let queue = match job {
            DatabaseJob::Fence { .. } | DatabaseJob::Unfence { .. } => &self.fences,
            DatabaseJob::SetSynchronous { .. } => &self.syncs,
            DatabaseJob::Promote { .. } => &self.jobs,
        };
        match queue {
            Some(jobs) => match jobs.send(job) {
                Ok(()) => None,
                Err(_) => self.not_sent(id, "the database worker is not running"),
            },
            None => {
                tracing::error!(?job, "no database adapter configured; action dropped");
                None
            }
        }
    }

    /// An action that no worker will run: abandoned at shutdown, failed otherwise.
    fn not_sent(&mut self, id: ActionId, why: &str) -> Option<Input> {
        if self.draining {
            abandon(&self.audit, id, 0, NOT_STARTED);
            return None;
        }
        tracing::error!(action = id.0, why, "action cannot be executed");
        self.audit
            .record("action_failed", json!({"action": id.0, "error": why}));
        Some(Input::ActionFailed {
            id,
            failure: ActionFailure {
                kind: PortErrorKind::Unavailable,
                message: why.to_owned(),
            },
        })
    }

    fn remember(&mut self, text: String) {
        let recent = &mut self.view.recent_events;
        if recent.len() == self.events_kept {
            recent.pop_front();
        }
        recent.push_back(text);
    }
}
