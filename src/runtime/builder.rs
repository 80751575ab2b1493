//! [`RuntimeBuilder`]: the configuration, the adapters, the probes and the
//! runtime's own settings, then [`RuntimeBuilder::start`].

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use failover_core::ports::{DatabaseAdmin, TrafficRouter};
use failover_core::{Config, Controller, Input};
use failover_probe::{ProbeScheduler, ProbeTarget, SchedulerConfig};
use tokio::sync::{broadcast, mpsc, watch};

use super::audit::AuditLog;
use super::driver::Driver;
use super::handle::RuntimeHandle;
use super::retry::RetryPolicy;
use super::status::RuntimeStatus;
use super::stop::StopSignal;
use super::supervisor::{supervise, Deaths, DRIVER};
use super::telemetry::Telemetry;
use super::workers::{database, observer, router};
use super::writer_store::WriterStore;
use super::{Runtime, RuntimeError};

/// Builds and starts a [`Runtime`].
pub struct RuntimeBuilder {
    config: Config,
    router: Option<Arc<dyn TrafficRouter>>,
    database: Option<Arc<dyn DatabaseAdmin>>,
    probes: Vec<ProbeTarget>,
    scheduler: SchedulerConfig,
    audit_log: Option<PathBuf>,
    audit_fsync: bool,
    retry: RetryPolicy,
    events_kept: usize,
    input_capacity: usize,
    shutdown_deadline: Duration,
    guard_leases: Option<crate::lease::LeaseServerConfig>,
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
            audit_fsync: false,
            retry: RetryPolicy::default(),
            events_kept: 64,
            input_capacity: 4096,
            shutdown_deadline: Duration::from_secs(10),
            guard_leases: None,
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

    /// Probes `region` from `vantage` with `probe` every `policy.interval`,
    /// each round starting a random `0..policy.jitter` after its slot (the
    /// scheduler's seeded generator, see [`SchedulerConfig::jitter_seed`]).
    /// A check that has not returned within `policy.timeout` counts as a
    /// failure (a response timeout), so a hung probe cannot keep its region up.
    pub fn probe(
        mut self,
        region: failover_core::RegionId,
        vantage: failover_core::VantageId,
        probe: Arc<dyn failover_core::ports::Probe>,
    ) -> Self {
        let policy = self.config.policy();
        let target = ProbeTarget::new(region, vantage, policy.interval, probe)
            .with_jitter(policy.jitter)
            .with_timeout(policy.timeout);
        self.probes.push(target);
        self
    }

    /// Scheduler settings (concurrency, phase spread, jitter seed) for the probes.
    pub fn scheduler(mut self, config: SchedulerConfig) -> Self {
        self.scheduler = config;
        self
    }

    /// Appends a JSON-lines record of every event and action to this file.
    pub fn audit_log(mut self, path: impl Into<PathBuf>) -> Self {
        self.audit_log = Some(path.into());
        self
    }

    /// Whether each batch of audit records is `fdatasync`ed before the next
    /// (default off: records are flushed to the OS, and synced at shutdown).
    pub fn audit_fsync(mut self, fsync: bool) -> Self {
        self.audit_fsync = fsync;
        self
    }

    /// How adapter calls are retried and how long each may take (default:
    /// 100 ms doubling to 5 s; 10 s per call, 90 s per promotion).
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// How many recent events the status keeps (default 64).
    pub fn events_kept(mut self, n: usize) -> Self {
        self.events_kept = n.max(1);
        self
    }

    /// Capacity, in inputs, of the channel carrying probe results and
    /// database observations to the controller (default 4096). Operator
    /// commands and action completions have channels of their own.
    pub fn input_capacity(mut self, n: usize) -> Self {
        self.input_capacity = n.max(1);
        self
    }

    /// How long [`Runtime::shutdown`] lets actions in flight finish before
    /// abandoning them (default 10 s).
    pub fn shutdown_deadline(mut self, deadline: Duration) -> Self {
        self.shutdown_deadline = deadline;
        self
    }

    /// Serves the node guards' leases from this controller (the
    /// single-controller default's coordination store, see
    /// [`crate::lease`]): every database node runs a
    /// [`NodeGuard`](failover_pg::NodeGuard) that leases from
    /// [`Runtime::lease_server`]'s URL. The controller then learns when a
    /// guard lease expires — proof that its node stopped writing — and
    /// claims the writer record here before each promotion. Set
    /// `policy.guard_ttl` to the guards' TTL so the planner and the
    /// promotion deadline count it.
    pub fn guard_leases(mut self, config: crate::lease::LeaseServerConfig) -> Self {
        self.guard_leases = Some(config);
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
                let (log, task) = AuditLog::open(path, self.audit_fsync).await?;
                (log, Some(task))
            }
            None => (AuditLog::disabled(), None),
        };
        let interval = self.config.policy().interval;
        let timeout = self.config.policy().timeout;
        let nodes: Vec<_> = self.config.topology().node_ids().collect();
        let mut floor = None;
        if let Some(database) = &self.database {
            floor = database
                .recorded_epoch()
                .await
                .map_err(RuntimeError::RecordedEpoch)?;
            if let Some(epoch) = floor {
                tracing::info!(%epoch, "resuming after the recorded fencing epoch");
            }
        }
        let controller = Controller::restore(
            self.config,
            std::time::Instant::now(),
            failover_core::Restored {
                epoch_floor: floor.unwrap_or_default(),
                ..failover_core::Restored::default()
            },
        );
        let leases = match self.guard_leases {
            Some(config) => {
                let (server, events) = crate::lease::LeaseServer::start(config)
                    .await
                    .map_err(RuntimeError::LeaseServer)?;
                // A fresh deployment's writer is the configured primary at
                // epoch 0. After a promotion (a recorded epoch) the writer is
                // learnt from the nodes first; until then guards see no record.
                if floor.is_none() {
                    if let Some(writer) = controller.writer() {
                        server.set_writer_at(writer, failover_core::Epoch(0));
                    }
                }
                Some((Arc::new(server), events))
            }
            None => None,
        };

        let (inputs_tx, inputs_rx) = mpsc::channel(self.input_capacity);
        let (commands_tx, commands_rx) = mpsc::channel(64);
        let (reports_tx, reports_rx) = mpsc::unbounded_channel();
        let (stop_tx, stop) = StopSignal::new();
        let deaths = Deaths::default();
        let status0 = RuntimeStatus::new(controller.status());
        let (status_tx, status_rx) = watch::channel(status0.clone());
        let (events_tx, _) = broadcast::channel(1024);
        let mut tasks = Vec::new();
        let spawn = |name: &'static str, work: Task| {
            tokio::spawn(supervise(
                name,
                work,
                deaths.clone(),
                audit.clone(),
                stop.clone(),
            ))
        };

        let plans = self.router.map(|adapter| {
            let (tx, rx) = mpsc::unbounded_channel();
            let work = router::route(
                adapter,
                rx,
                reports_tx.clone(),
                self.retry,
                audit.clone(),
                stop.clone(),
            );
            tasks.push(spawn("router worker", Box::pin(work)));
            tx
        });
        let mut fences = None;
        let jobs = self.database.map(|adapter| {
            let (tx, rx) = mpsc::unbounded_channel();
            let work = database::administer(
                adapter.clone(),
                rx,
                reports_tx.clone(),
                self.retry,
                audit.clone(),
                stop.clone(),
            );
            tasks.push(spawn("database worker", Box::pin(work)));
            let (fence_tx, fence_rx) = mpsc::unbounded_channel();
            let work = database::administer(
                adapter.clone(),
                fence_rx,
                reports_tx.clone(),
                self.retry,
                audit.clone(),
                stop.clone(),
            );
            tasks.push(spawn("fence worker", Box::pin(work)));
            fences = Some(fence_tx);
            let work = observer::observe(
                adapter,
                nodes,
                interval,
                timeout,
                inputs_tx.clone(),
                stop.clone(),
            );
            tasks.push(spawn("database observer", Box::pin(work)));
            tx
        });
        // Only the workers hold report senders: the driver reads reports
        // until they have all exited.
        drop(reports_tx);

        let writer_store = match leases {
            Some((server, events)) => {
                let work = forward_coordination(events, inputs_tx.clone(), stop.clone());
                tasks.push(spawn("guard lease forwarder", Box::pin(work)));
                WriterStore::Leases(server)
            }
            None => WriterStore::Controller,
        };

        let scheduler = if self.probes.is_empty() {
            None
        } else {
            let (scheduler, results) = ProbeScheduler::start(self.scheduler);
            for target in self.probes {
                scheduler.add(target);
            }
            let work = forward_probe_results(results, inputs_tx.clone(), stop.clone());
            tasks.push(spawn("probe forwarder", Box::pin(work)));
            Some(scheduler)
        };

        let driver = Driver {
            controller,
            commands: commands_rx,
            reports: reports_rx,
            inputs: inputs_rx,
            plans,
            jobs,
            fences,
            audit: audit.clone(),
            status: status_tx,
            events: events_tx.clone(),
            events_kept: self.events_kept,
            telemetry: Telemetry::default(),
            view: status0,
            plans_in_flight: HashMap::new(),
            draining: false,
            writer_store: writer_store.clone(),
        };
        let driver_task = spawn(DRIVER, Box::pin(driver.run(stop.clone())));
        Ok(Runtime {
            handle: RuntimeHandle {
                commands: commands_tx,
                inputs: inputs_tx,
                status: status_rx,
                events: events_tx,
                deaths,
            },
            stop: stop_tx,
            shutdown_deadline: self.shutdown_deadline,
            driver: Some(driver_task),
            scheduler,
            tasks,
            audit_task,
            lease_server: match writer_store {
                WriterStore::Leases(server) => Some(server),
                WriterStore::Controller => None,
            },
        })
    }
}

/// A task of the runtime, before it is supervised and spawned.
type Task = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Passes the scheduler's results to the controller until shutdown begins.
/// Feeds guard lease transitions to the controller.
async fn forward_coordination(
    mut events: mpsc::UnboundedReceiver<failover_core::CoordinationEvent>,
    inputs: mpsc::Sender<Input>,
    mut stop: StopSignal,
) {
    loop {
        let event = tokio::select! {
            biased;
            () = stop.begun() => return,
            event = events.recv() => event,
        };
        let Some(event) = event else { return };
        if inputs.send(Input::Coordination(event)).await.is_err() {
            return;
        }
    }
}

async fn forward_probe_results(
    mut results: mpsc::Receiver<failover_core::ProbeResult>,
    inputs: mpsc::Sender<Input>,
    mut stop: StopSignal,
) {
    loop {
        let result = tokio::select! {
            biased;
            () = stop.begun() => return,
            result = results.recv() => result,
        };
        let Some(result) = result else { return };
        if inputs.send(Input::Probe(result)).await.is_err() {
            return;
        }
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
