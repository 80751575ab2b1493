//! [`RuntimeBuilder`]: the configuration, the adapters, the probes and the
//! runtime's own settings, then [`RuntimeBuilder::start`].

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use failover_core::ports::{Coordinator, DatabaseAdmin, TrafficRouter};
use failover_core::{Config, Controller, Input};
#[cfg(feature = "probe")]
use failover_probe::{ProbeScheduler, ProbeTarget, SchedulerConfig};
use tokio::sync::{broadcast, mpsc, watch};

use super::audit::AuditLog;
use super::coordination::{forward_events, publish_verdicts, store_worker, StoreRouter};
use super::driver::Coordination;
use super::driver::Driver;
use super::handle::RuntimeHandle;
use super::retry::RetryPolicy;
use super::status::RuntimeStatus;
use super::stop::StopSignal;
use super::supervisor::{supervise, Deaths, DRIVER};
use super::telemetry::Telemetry;
use super::workers::{database, observer, router, writer_name, Term};
use super::writer_store::WriterStore;
use super::{Runtime, RuntimeError};

/// Builds and starts a [`Runtime`].
pub struct RuntimeBuilder {
    config: Config,
    router: Option<Arc<dyn TrafficRouter>>,
    database: Option<Arc<dyn DatabaseAdmin>>,
    #[cfg(feature = "probe")]
    probes: Vec<ProbeTarget>,
    #[cfg(feature = "probe")]
    scheduler: SchedulerConfig,
    audit_log: Option<PathBuf>,
    audit_fsync: bool,
    retry: RetryPolicy,
    events_kept: usize,
    input_capacity: usize,
    shutdown_deadline: Duration,
    guard_leases: Option<crate::lease::LeaseServerConfig>,
    coordinator: Option<Arc<dyn Coordinator>>,
    serve: Option<Arc<dyn TrafficRouter>>,
    serve_writer_name: Option<Arc<dyn failover_core::ports::WriterName>>,
    #[cfg(feature = "admin")]
    admin: Option<super::admin::AdminConfig>,
    writer_name: Option<Arc<dyn failover_core::ports::WriterName>>,
    #[cfg(feature = "chaos-unsafe")]
    unsafe_no_stop_proof: bool,
}

impl RuntimeBuilder {
    /// Starts from a validated configuration (see [`Config::from_toml`]).
    pub fn new(config: Config) -> Self {
        RuntimeBuilder {
            config,
            router: None,
            database: None,
            #[cfg(feature = "probe")]
            probes: Vec::new(),
            #[cfg(feature = "probe")]
            scheduler: SchedulerConfig::default(),
            audit_log: None,
            audit_fsync: false,
            retry: RetryPolicy::default(),
            events_kept: 64,
            input_capacity: 4096,
            shutdown_deadline: Duration::from_secs(10),
            guard_leases: None,
            coordinator: None,
            serve: None,
            serve_writer_name: None,
            #[cfg(feature = "admin")]
            admin: None,
            writer_name: None,
            #[cfg(feature = "chaos-unsafe")]
            unsafe_no_stop_proof: false,
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

    #[cfg(feature = "probe")]
    #[cfg_attr(docsrs, doc(cfg(feature = "probe")))]
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
    #[cfg(feature = "probe")]
    #[cfg_attr(docsrs, doc(cfg(feature = "probe")))]
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
    /// `failover_pg::NodeGuard` that leases from
    /// [`Runtime::lease_server`]'s URL. The controller then learns when a
    /// guard lease expires — proof that its node stopped writing — and
    /// claims the writer record here before each promotion. Set
    /// `policy.guard_ttl` to the guards' TTL so the planner and the
    /// promotion deadline count it.
    pub fn guard_leases(mut self, config: crate::lease::LeaseServerConfig) -> Self {
        self.guard_leases = Some(config);
        self
    }

    /// Runs this controller as one of several — one per region — that
    /// coordinate through `coordinator` (e.g. `failover::etcd::EtcdCoordinator`).
    ///
    /// - Every controller probes every region from its own vantage
    ///   ([`Coordinator::vantage`]; give [`probe`](Self::probe) that vantage)
    ///   and publishes its verdicts; each counts the others' as votes, so the
    ///   vantage quorum counts controllers.
    /// - Only the leader acts. Every side effect carries its fencing token:
    ///   the writer record is claimed by compare-and-set under it, the weight
    ///   plan is stored under it (and carries it to the router, whose
    ///   receiving side refuses an older one), and a job queued under a term
    ///   that has ended is dropped before it starts.
    /// - Operator commands go to the leader ([`RuntimeHandle::command`]
    ///   refuses them elsewhere); their intent (drains, pause) is stored, so
    ///   it survives restarts and leader changes.
    /// - Node guards lease from the store (e.g. `failover::etcd::EtcdGuardLease`),
    ///   not from [`guard_leases`](Self::guard_leases), which this excludes.
    ///
    /// At [`Runtime::shutdown`] the controller resigns, so a successor takes
    /// over at once rather than after the leader lease's TTL.
    ///
    /// [`RuntimeHandle::command`]: super::RuntimeHandle::command
    pub fn coordinator(mut self, coordinator: Arc<dyn Coordinator>) -> Self {
        self.coordinator = Some(coordinator);
        self
    }

    /// With a [`coordinator`](Self::coordinator): the local DNS (typically
    /// this controller's embedded server, `failover::dns::EmbeddedDns`) that
    /// serves the plan stored in the coordination store. Every controller —
    /// leader or not — applies each stored plan to it, so DNS keeps answering
    /// with the current plan when any one region, the leader's included, is
    /// lost. (Without a coordinator, give the local DNS to
    /// [`router`](Self::router) instead.)
    pub fn serve(mut self, local: Arc<dyn TrafficRouter>) -> Self {
        self.serve = Some(local);
        self
    }

    /// With a [`coordinator`](Self::coordinator): the local DNS that answers
    /// the writer's name in this controller's region (typically this
    /// controller's embedded server, after `serve_writer_name`). Every
    /// controller — leader or not — points it at the writer the store
    /// records, but only once that node itself is seen promoted
    /// (`Controller::promoted_writer`): never at a claimed candidate still
    /// in recovery, nor back at an older epoch. So each region answers the
    /// writer's name while the leader's region is lost, as it does the
    /// stored plan ([`serve`](Self::serve)). It lags the leader's
    /// [`writer_name`](Self::writer_name) by at most one observation
    /// interval.
    pub fn serve_writer_name(mut self, local: Arc<dyn failover_core::ports::WriterName>) -> Self {
        self.serve_writer_name = Some(local);
        self
    }

    /// Serves the operator's HTTP API on `listen` to holders of `auth`'s
    /// tokens (see [`admin`](super::admin) for its endpoints), with the
    /// default limits; [`admin_config`](Self::admin_config) sets TLS, limits
    /// and the metrics recorder. Commands are audit-logged with the caller's
    /// token name; give an [`audit_log`](Self::audit_log) to keep them
    /// (and serve `/history`).
    #[cfg(feature = "admin")]
    #[cfg_attr(docsrs, doc(cfg(feature = "admin")))]
    pub fn admin(self, listen: std::net::SocketAddr, auth: super::admin::AdminAuth) -> Self {
        self.admin_config(super::admin::AdminConfig::new(listen, auth))
    }

    /// Serves the operator's HTTP API with these settings (see [`admin`](Self::admin)).
    #[cfg(feature = "admin")]
    #[cfg_attr(docsrs, doc(cfg(feature = "admin")))]
    pub fn admin_config(mut self, config: super::admin::AdminConfig) -> Self {
        self.admin = Some(config);
        self
    }

    /// The writer's DNS name (like `writer.db.example.com.`): after every
    /// completed promotion (`Promoted`, or a promoted writer adopted from
    /// the nodes, `WriterMoved`) the runtime points it at the new writer,
    /// under the leader's fencing token, retrying until it lands or a newer
    /// promotion supersedes it. Never before the promotion completed, so
    /// never before the old writer was fenced nor at an unpromoted node.
    /// A fresh deployment (no recorded epoch) starts by pointing it at the
    /// configured primary. Typically `failover::dns::EmbeddedRouter` (after
    /// `serve_writer_name`) or `failover::dns::Rfc2136Router` (built
    /// `with_writer_name`). With a [`coordinator`](Self::coordinator), only
    /// the leader moves it (each job carries its term), so give it the one
    /// DNS all controllers share (RFC 2136), not each controller's embedded
    /// server.
    pub fn writer_name(mut self, target: Arc<dyn failover_core::ports::WriterName>) -> Self {
        self.writer_name = Some(target);
        self
    }

    /// **Test-only, unsafe** (feature `chaos-unsafe`): the controller
    /// promotes on "unreachable" alone, without proof that the old writer
    /// stopped (see `failover_core::Controller::unsafe_promote_without_stop_proof`).
    /// It breaks "one writer, always" on purpose, so that the chaos drills
    /// (`tests/chaos.rs`) can show their checker reports two writers. Never
    /// call it outside such a test.
    #[cfg(feature = "chaos-unsafe")]
    pub fn unsafe_promote_without_stop_proof(mut self) -> Self {
        self.unsafe_no_stop_proof = true;
        self
    }

    /// Starts the runtime on the current tokio runtime. Reads the recorded
    /// fencing epoch first, so a restarted controller never reuses one.
    pub async fn start(self) -> Result<Runtime, RuntimeError> {
        if !self.config.topology().nodes().is_empty() && self.database.is_none() {
            return Err(RuntimeError::NoDatabase);
        }
        self.check_coordination()?;
        #[cfg(feature = "admin")]
        let admin = match self.admin {
            Some(config) => Some(super::admin::AdminServer::bind(config).await?),
            None => None,
        };
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
        let coordinated = self.coordinator.is_some();
        #[cfg(feature = "admin")]
        let admin_topology = self.config.topology().clone();
        #[cfg(feature = "admin")]
        let admin_policy = self.config.policy().clone();
        let controller = Controller::restore(
            self.config,
            std::time::Instant::now(),
            failover_core::Restored {
                epoch_floor: floor.unwrap_or_default(),
                coordinated,
                ..failover_core::Restored::default()
            },
        );
        #[cfg(feature = "chaos-unsafe")]
        let controller = {
            let mut controller = controller;
            if self.unsafe_no_stop_proof {
                tracing::warn!("runtime: the promotion rule is loosened (chaos-unsafe): promotions need no proof that the old writer stopped");
                controller.unsafe_promote_without_stop_proof();
            }
            controller
        };
        // Join before anything runs: the store's state (writer record, guard
        // leases, verdicts, intent, plan, leadership) comes first.
        let (changes_tx, changes_rx) = mpsc::unbounded_channel();
        if let Some(coordinator) = &self.coordinator {
            // Published with leadership, so followers can name where the
            // leader's admin API answers.
            #[cfg(feature = "admin")]
            if let Some(url) = admin.as_ref().and_then(|a| a.url()) {
                coordinator.advertise_admin(&url);
            }
            let joined = coordinator
                .join()
                .await
                .map_err(RuntimeError::Coordinator)?;
            tracing::info!(changes = joined.len(), "joined the coordination store");
            for change in joined {
                let _ = changes_tx.send(Ok(change));
            }
        }
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
        let status0 = RuntimeStatus::new(controller.status(), controller.topology().node_ids());
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

        let (term_tx, term_rx) = watch::channel(controller.token());
        let term = Term::new(term_rx, coordinated);
        // With a coordinator the leader's plans go to the store first, then
        // to the user's router.
        let leader_router: Option<Arc<dyn TrafficRouter>> = match &self.coordinator {
            Some(coordinator) => Some(Arc::new(StoreRouter {
                coordinator: coordinator.clone(),
                then: self.router,
            })),
            None => self.router,
        };
        let plans = leader_router.map(|adapter| {
            let (tx, rx) = mpsc::unbounded_channel();
            let work = router::route(
                adapter,
                rx,
                reports_tx.clone(),
                self.retry,
                term.clone(),
                audit.clone(),
                stop.clone(),
            );
            tasks.push(spawn("router worker", Box::pin(work)));
            tx
        });
        let writer_name = self.writer_name.map(|target| {
            let (tx, rx) = mpsc::unbounded_channel();
            let work = writer_name::follow(
                target,
                rx,
                self.retry,
                term.clone(),
                audit.clone(),
                stop.clone(),
            );
            tasks.push(spawn("writer name worker", Box::pin(work)));
            // As for the guards' record: a fresh deployment's writer is the
            // configured primary; after a promotion (a recorded epoch) the
            // writer is learnt from the nodes first (`WriterMoved`).
            if floor.is_none() {
                if let Some(writer) = controller.writer() {
                    let _ = tx.send(writer_name::WriterJob {
                        node: writer,
                        name: controller.topology().node(writer).name.clone(),
                        epoch: failover_core::Epoch(0),
                        term: controller.token(),
                    });
                }
            }
            tx
        });
        let mut fences = None;
        let mut syncs = None;
        let jobs = self.database.map(|adapter| {
            let (tx, rx) = mpsc::unbounded_channel();
            let work = database::administer(
                adapter.clone(),
                rx,
                reports_tx.clone(),
                self.retry,
                term.clone(),
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
                term.clone(),
                audit.clone(),
                stop.clone(),
            );
            tasks.push(spawn("fence worker", Box::pin(work)));
            fences = Some(fence_tx);
            let (sync_tx, sync_rx) = mpsc::unbounded_channel();
            let work = database::administer(
                adapter.clone(),
                sync_rx,
                reports_tx.clone(),
                self.retry,
                term.clone(),
                audit.clone(),
                stop.clone(),
            );
            tasks.push(spawn("synchronous standby worker", Box::pin(work)));
            syncs = Some(sync_tx);
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
        let coordination = match &self.coordinator {
            Some(coordinator) => {
                let work = forward_events(coordinator.clone(), changes_tx, stop.clone());
                tasks.push(spawn("coordination forwarder", Box::pin(work)));
                let (store_tx, store_rx) = mpsc::unbounded_channel();
                let work = store_worker(
                    coordinator.clone(),
                    store_rx,
                    reports_tx.clone(),
                    term.clone(),
                    self.retry.call_timeout,
                    audit.clone(),
                    stop.clone(),
                );
                tasks.push(spawn("coordination worker", Box::pin(work)));
                let (verdicts_tx, verdicts_rx) = watch::channel(Vec::new());
                let work = publish_verdicts(
                    coordinator.clone(),
                    verdicts_rx,
                    self.retry.call_timeout,
                    stop.clone(),
                );
                tasks.push(spawn("verdict publisher", Box::pin(work)));
                let serve = self.serve.map(|local| {
                    let (tx, rx) = mpsc::unbounded_channel();
                    // The local DNS follows the store whoever leads; its
                    // attempts are logged, counted and audited, and the
                    // controller never waits for them.
                    let (ignored, _) = mpsc::unbounded_channel();
                    let (_, always) = watch::channel(None);
                    let work = router::route(
                        local,
                        rx,
                        ignored,
                        self.retry,
                        Term::new(always, false),
                        audit.clone(),
                        stop.clone(),
                    );
                    tasks.push(spawn("local DNS worker", Box::pin(work)));
                    tx
                });
                let serve_writer = self.serve_writer_name.map(|local| {
                    let (tx, rx) = mpsc::unbounded_channel();
                    // As for the plan: the local writer name follows the
                    // store whoever leads (the driver sends only promoted
                    // writers, at rising epochs).
                    let (_, always) = watch::channel(None);
                    let work = writer_name::follow(
                        local,
                        rx,
                        self.retry,
                        Term::new(always, false),
                        audit.clone(),
                        stop.clone(),
                    );
                    tasks.push(spawn("local writer name worker", Box::pin(work)));
                    tx
                });
                Some(Coordination {
                    events: changes_rx,
                    store: store_tx,
                    verdicts: verdicts_tx,
                    vantage: coordinator.vantage(),
                    serve,
                    serve_ids: u64::MAX,
                    serve_writer,
                    served_writer: None,
                    last_error: None,
                    stored_intent: failover_core::Intent::default(),
                    sent_intent: None,
                })
            }
            None => None,
        };
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

        #[cfg(feature = "probe")]
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

        let mut telemetry = Telemetry::default();
        telemetry.register(controller.topology(), controller.policy());
        let driver = Driver {
            controller,
            commands: commands_rx,
            reports: reports_rx,
            inputs: inputs_rx,
            plans,
            jobs,
            fences,
            syncs,
            audit: audit.clone(),
            status: status_tx,
            events: events_tx.clone(),
            events_kept: self.events_kept,
            telemetry,
            view: status0,
            plans_in_flight: HashMap::new(),
            draining: false,
            writer_store: writer_store.clone(),
            writer_name,
            term: term_tx,
            coordination,
        };
        let driver_task = spawn(DRIVER, Box::pin(driver.run(stop.clone())));
        let handle = RuntimeHandle {
            commands: commands_tx,
            inputs: inputs_tx,
            status: status_rx,
            events: events_tx,
            deaths,
            coordinated,
            coordinator: self.coordinator.clone().map(super::handle::CoordinatorRef),
        };
        #[cfg(feature = "admin")]
        let admin = admin.map(|bound| {
            bound.serve(
                handle.clone(),
                admin_topology,
                admin_policy,
                audit.clone(),
                self.audit_log.clone(),
            )
        });
        Ok(Runtime {
            handle,
            stop: stop_tx,
            shutdown_deadline: self.shutdown_deadline,
            driver: Some(driver_task),
            #[cfg(feature = "probe")]
            scheduler,
            tasks,
            audit_task,
            lease_server: match writer_store {
                WriterStore::Leases(server) => Some(server),
                WriterStore::Controller => None,
            },
            coordinator: self.coordinator,
            #[cfg(feature = "admin")]
            admin,
        })
    }

    /// Rejects settings that do not go together, naming them.
    fn check_coordination(&self) -> Result<(), RuntimeError> {
        let Some(coordinator) = &self.coordinator else {
            if self.serve.is_some() {
                return Err(RuntimeError::Setup(
                    "RuntimeBuilder::serve needs RuntimeBuilder::coordinator; without a coordinator, pass the local DNS to RuntimeBuilder::router".into(),
                ));
            }
            if self.serve_writer_name.is_some() {
                return Err(RuntimeError::Setup(
                    "RuntimeBuilder::serve_writer_name needs RuntimeBuilder::coordinator; without a coordinator, pass the local DNS to RuntimeBuilder::writer_name".into(),
                ));
            }
            return Ok(());
        };
        if self.guard_leases.is_some() {
            return Err(RuntimeError::Setup(
                "RuntimeBuilder::guard_leases and RuntimeBuilder::coordinator exclude each other: with a coordinator, node guards lease from its store".into(),
            ));
        }
        let vantage = coordinator.vantage();
        let topology = self.config.topology();
        if vantage.index() >= topology.vantages().len() {
            return Err(RuntimeError::Setup(format!(
                "the coordinator's vantage (index {}) is not in the topology's vantages {:?}",
                vantage.index(),
                topology.vantages()
            )));
        }
        #[cfg(feature = "probe")]
        if let Some(target) = self.probes.iter().find(|t| t.vantage != vantage) {
            let name = |v: failover_core::VantageId| {
                topology
                    .vantages()
                    .get(v.index())
                    .cloned()
                    .unwrap_or_else(|| format!("#{}", v.index()))
            };
            return Err(RuntimeError::Setup(format!(
                "RuntimeBuilder::probe: a probe of region {} is from vantage `{}`, but this controller is vantage `{}` (the coordinator's); each controller probes from its own vantage and hears the others' verdicts",
                topology.region(target.region).name,
                name(target.vantage),
                name(vantage)
            )));
        }
        Ok(())
    }
}

/// A task of the runtime, before it is supervised and spawned.
type Task = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

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

/// Passes the scheduler's results to the controller until shutdown begins.
#[cfg(feature = "probe")]
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
