//! The tokio runtime: drives the sans-IO [`Controller`] exactly as its docs
//! say, executes its actions on the adapters with retry and backoff, feeds
//! every completion and failure back, and reports through `tracing`,
//! `metrics` and an append-only JSON-lines audit log.
//!
//! One task owns the controller. Everything else talks to it through one
//! bounded input channel, so inputs are handled strictly one at a time, in
//! arrival order, with `now` read once per input:
//!
//! ```text
//! probe scheduler ─┐                    ┌─▶ router worker  (SetWeights)
//! db observer ─────┼─▶ inputs ─▶ driver ┼─▶ database worker (Fence, Promote)
//! workers' reports ┤   (mpsc)  (owns    ├─▶ tracing + metrics + audit (Notify)
//! operator ────────┘            Controller) └─▶ status (watch)
//! ```

mod audit;
mod driver;
mod retry;
mod telemetry;
mod workers;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;

use failover_core::ports::{DatabaseAdmin, TrafficRouter};
use failover_core::{Command, Config, Controller, Epoch, Event, Input, ProbeResult, Status};
use failover_probe::{ProbeScheduler, ProbeTarget, SchedulerConfig};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;

pub use retry::RetryPolicy;

/// Errors of the runtime.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// The audit log could not be opened.
    #[error("cannot open audit log {path}: {source}")]
    AuditLog {
        /// The path given to [`RuntimeBuilder::audit_log`].
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The recorded fencing epoch could not be read at start-up, so the
    /// runtime cannot know which epochs are safe to use. Fix database access first.
    #[error("cannot read the recorded fencing epoch at start-up: {0}")]
    RecordedEpoch(failover_core::PortError),
    /// The configuration names database nodes but no database adapter was given.
    #[error("the topology has database nodes but no database adapter was given: call RuntimeBuilder::database")]
    NoDatabase,
    /// The configuration file could not be read.
    #[error("cannot read configuration file {path}: {source}")]
    ConfigFile {
        /// The path given to [`RuntimeBuilder::from_config_file`].
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The configuration is invalid; the error names the field and the rule.
    #[error("invalid configuration in {path}: {source}")]
    Config {
        /// The file it came from.
        path: PathBuf,
        /// What is wrong.
        source: failover_core::ConfigError,
    },
    /// The runtime has stopped; the handle can no longer send to it.
    #[error("the failover runtime has stopped")]
    Stopped,
}

/// What the status handle shows: the controller's view plus the runtime's.
#[derive(Clone, Debug)]
pub struct RuntimeStatus {
    /// Health, weights, writer, epoch and pause state, as the controller sees them.
    pub controller: Status,
    /// The most recent events, rendered with region and node names, oldest first.
    pub recent_events: VecDeque<String>,
}

/// Builds and starts a [`Runtime`].
pub struct RuntimeBuilder {
    config: Config,
    router: Option<Arc<dyn TrafficRouter>>,
    database: Option<Arc<dyn DatabaseAdmin>>,
    probes: Vec<ProbeTarget>,
    scheduler: SchedulerConfig,
    audit_log: Option<PathBuf>,
    retry: RetryPolicy,
    events_kept: usize,
    input_capacity: usize,
}

impl RuntimeBuilder {
    /// Starts from a validated configuration (see [`Config::from_toml`]).
    pub fn new(config: Config) -> Self {
        RuntimeBuilder {
            config,
            router: None,
            database: None,
            probes: Vec::new(),
            scheduler: SchedulerConfig::default(),
            audit_log: None,
            retry: RetryPolicy::default(),
            events_kept: 64,
            input_capacity: 4096,
        }
    }

    /// Reads and validates a TOML configuration file (see
    /// [`Config::from_toml`] for its shape).
    pub fn from_config_file(path: impl AsRef<std::path::Path>) -> Result<Self, RuntimeError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| RuntimeError::ConfigFile {
            path: path.to_owned(),
            source,
        })?;
        let config = Config::from_toml(&text).map_err(|source| RuntimeError::Config {
            path: path.to_owned(),
            source,
        })?;
        Ok(RuntimeBuilder::new(config))
    }

    /// The configuration the runtime will run with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The traffic router that applies weight plans (DNS, a load balancer).
    /// Without one, plans are decided and logged but applied nowhere.
    pub fn router(mut self, router: Arc<dyn TrafficRouter>) -> Self {
        self.router = Some(router);
        self
    }

    /// The database adapter that observes, fences and promotes nodes.
    /// Required when the topology has database nodes.
    pub fn database(mut self, database: Arc<dyn DatabaseAdmin>) -> Self {
        self.database = Some(database);
        self
    }

    /// Probes `region` from `vantage` with `probe` every `policy.interval`.
    pub fn probe(
        mut self,
        region: failover_core::RegionId,
        vantage: failover_core::VantageId,
        probe: Arc<dyn failover_core::ports::Probe>,
    ) -> Self {
        let interval = self.config.policy().interval;
        self.probes
            .push(ProbeTarget::new(region, vantage, interval, probe));
        self
    }

    /// Scheduler settings (concurrency, phase spread) for the probes.
    pub fn scheduler(mut self, config: SchedulerConfig) -> Self {
        self.scheduler = config;
        self
    }

    /// Appends a JSON-lines record of every event and action to this file.
    pub fn audit_log(mut self, path: impl Into<PathBuf>) -> Self {
        self.audit_log = Some(path.into());
        self
    }

    /// How adapter calls are retried (default: 100 ms doubling to 5 s).
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// How many recent events the status keeps (default 64).
    pub fn events_kept(mut self, n: usize) -> Self {
        self.events_kept = n.max(1);
        self
    }

    /// Starts the runtime on the current tokio runtime. Reads the recorded
    /// fencing epoch first, so a restarted controller never reuses one.
    pub async fn start(self) -> Result<Runtime, RuntimeError> {
        if !self.config.topology().nodes().is_empty() && self.database.is_none() {
            return Err(RuntimeError::NoDatabase);
        }
        let (audit, audit_task) = match &self.audit_log {
            Some(path) => {
                let (log, task) = audit::AuditLog::open(path).await?;
                (log, Some(task))
            }
            None => (audit::AuditLog::disabled(), None),
        };
        let interval = self.config.policy().interval;
        let timeout = self.config.policy().timeout;
        let nodes: Vec<_> = self.config.topology().node_ids().collect();
        let mut controller = Controller::new(self.config, std::time::Instant::now());
        if let Some(database) = &self.database {
            let floor = database
                .recorded_epoch()
                .await
                .map_err(RuntimeError::RecordedEpoch)?;
            if let Some(epoch) = floor {
                tracing::info!(%epoch, "resuming after the recorded fencing epoch");
                controller.set_epoch_floor(epoch);
            }
        }

        let (inputs_tx, inputs_rx) = mpsc::channel(self.input_capacity);
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let status0 = RuntimeStatus {
            controller: controller.status(),
            recent_events: VecDeque::new(),
        };
        let (status_tx, status_rx) = watch::channel(status0);
        let (events_tx, _) = broadcast::channel(1024);
        let mut tasks = Vec::new();

        let plans = self.router.map(|router| {
            let (tx, rx) = mpsc::unbounded_channel();
            tasks.push(tokio::spawn(workers::route(
                router,
                rx,
                inputs_tx.clone(),
                self.retry,
                audit.clone(),
                shutdown_rx.clone(),
            )));
            tx
        });
        let jobs = self.database.map(|database| {
            let (tx, rx) = mpsc::unbounded_channel();
            tasks.push(tokio::spawn(workers::administer(
                database.clone(),
                rx,
                inputs_tx.clone(),
                self.retry,
                audit.clone(),
                shutdown_rx.clone(),
            )));
            tasks.push(tokio::spawn(workers::observe(
                database,
                nodes,
                interval,
                timeout,
                inputs_tx.clone(),
                shutdown_rx.clone(),
            )));
            tx
        });

        let scheduler = if self.probes.is_empty() {
            None
        } else {
            let (scheduler, mut results) = ProbeScheduler::start(self.scheduler);
            for target in self.probes {
                scheduler.add(target);
            }
            let inputs = inputs_tx.clone();
            tasks.push(tokio::spawn(async move {
                while let Some(result) = results.recv().await {
                    if inputs.send(Input::Probe(result)).await.is_err() {
                        return;
                    }
                }
            }));
            Some(scheduler)
        };

        let driver = driver::Driver {
            controller,
            inputs: inputs_rx,
            plans,
            jobs,
            audit,
            status: status_tx,
            events: events_tx.clone(),
            events_kept: self.events_kept,
            telemetry: telemetry::Telemetry::default(),
        };
        let driver_task = tokio::spawn(driver.run(shutdown_rx));
        Ok(Runtime {
            handle: RuntimeHandle {
                inputs: inputs_tx,
                status: status_rx,
                events: events_tx,
            },
            shutdown: shutdown_tx,
            driver: Some(driver_task),
            scheduler,
            tasks,
            audit_task,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_file_error_names_the_file_and_the_field() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("failover.toml");
        std::fs::write(
            &path,
            "service = \"api.example.com.\"\n[[region]]\nname = \"us-east\"\n[policy]\nfall = 0\n",
        )
        .expect("write");
        let error = RuntimeBuilder::from_config_file(&path)
            .err()
            .expect("fall = 0 is rejected");
        let text = error.to_string();
        assert!(
            text.contains("failover.toml") && text.contains("policy.fall"),
            "{text}"
        );

        let missing = RuntimeBuilder::from_config_file(dir.path().join("nope.toml"))
            .err()
            .expect("a missing file is an error");
        assert!(
            matches!(missing, RuntimeError::ConfigFile { .. }),
            "{missing}"
        );
    }
}

/// A running failover controller. Call [`Runtime::shutdown`] to stop it and
/// wait for every task; dropping it stops the tasks without waiting (actions
/// in flight are abandoned, and the audit log may lose its last lines).
pub struct Runtime {
    handle: RuntimeHandle,
    shutdown: watch::Sender<bool>,
    driver: Option<JoinHandle<()>>,
    scheduler: Option<ProbeScheduler>,
    tasks: Vec<JoinHandle<()>>,
    audit_task: Option<JoinHandle<()>>,
}

impl Runtime {
    /// A cloneable handle for operator commands, probe results and status.
    pub fn handle(&self) -> RuntimeHandle {
        self.handle.clone()
    }

    /// Stops every task and waits for them: probes stop first, then the
    /// controller loop and the workers (actions in flight are abandoned at
    /// their next await point: they are idempotent, and a controller started
    /// next re-derives them), and the audit log is flushed.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(scheduler) = self.scheduler.take() {
            scheduler.shutdown().await;
        }
        if let Some(driver) = self.driver.take() {
            let _ = driver.await;
        }
        for task in std::mem::take(&mut self.tasks) {
            let _ = task.await;
        }
        if let Some(task) = self.audit_task.take() {
            // The writer ends once the last sender (held by the tasks above) is gone.
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), task).await;
        }
        tracing::info!("failover runtime stopped");
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        // After `shutdown` everything below is already empty.
        let _ = self.shutdown.send(true);
        // Dropping the scheduler drops each target's stop signal, which ends it.
        self.scheduler.take();
        for task in self.driver.take().into_iter().chain(self.tasks.drain(..)) {
            task.abort();
        }
    }
}

/// Talks to a running [`Runtime`]. Cheap to clone.
#[derive(Clone, Debug)]
pub struct RuntimeHandle {
    inputs: mpsc::Sender<Input>,
    status: watch::Receiver<RuntimeStatus>,
    events: broadcast::Sender<Event>,
}

impl RuntimeHandle {
    /// Sends an operator command (drain, undrain, switchover, force promote,
    /// pause, resume).
    pub async fn command(&self, command: Command) -> Result<(), RuntimeError> {
        self.inputs
            .send(Input::Command(command))
            .await
            .map_err(|_| RuntimeError::Stopped)
    }

    /// Feeds a probe result from a source of your own (for example a probe
    /// scheduler from `failover-probe`, or a check the library does not ship).
    pub async fn report_probe(&self, result: ProbeResult) -> Result<(), RuntimeError> {
        self.inputs
            .send(Input::Probe(result))
            .await
            .map_err(|_| RuntimeError::Stopped)
    }

    /// The latest status.
    pub fn status(&self) -> RuntimeStatus {
        self.status.borrow().clone()
    }

    /// A receiver that wakes on every status change.
    pub fn watch_status(&self) -> watch::Receiver<RuntimeStatus> {
        self.status.clone()
    }

    /// Every event from now on, as the controller emitted it (with its `at`
    /// instant), for alerting hooks and measurements. A receiver that falls
    /// more than 1,024 events behind loses the oldest (and is told so).
    pub fn subscribe_events(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// The fencing epoch the controller is at.
    pub fn epoch(&self) -> Epoch {
        self.status.borrow().controller.epoch
    }
}
