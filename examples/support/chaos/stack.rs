//! The drill's servers: three regions in namespaces, a PostgreSQL node with
//! its guard and the regional API in each; one controller in `south`, or a
//! controller and an etcd member in every region.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use failover::decision::{
    Config, Health, MaxRpo, Node, NodeId, Policy, Region, RegionId, RegionRole, Synchronous,
    Topology, VantageId,
};
use failover::dns::{EmbeddedConfig, EmbeddedDns, Selection, WriterNameConfig};
use failover::etcd::{EtcdConfig, EtcdCoordinator, EtcdGuardLease};
use failover::lease::{LeaseClient, LeaseServerConfig};
use failover::pg::{GuardSettings, NodeGuard, NodeKill, PgCluster};
use failover::probe::{HttpProbe, HttpProbeConfig};
use failover::{Runtime, RuntimeBuilder, RuntimeHandle};
use failover_testkit::etcd::EtcdCluster;
use failover_testkit::http::RegionalApi;
use failover_testkit::net::{Net, RegionService};
use failover_testkit::postgres::{PgTestCluster, APP_DATABASE, APP_PASSWORD, APP_ROLE};

use super::{Controllers, Mode};

/// A boxed error for the harness: every failure names what failed.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The regions, in topology order; node `i` (pg-<region>) lives in region `i`.
pub const REGIONS: [&str; 3] = ["east", "west", "south"];
/// Database node names, by region.
pub const NODES: [&str; 3] = ["pg-east", "pg-west", "pg-south"];
/// The region the single controller runs in.
pub const CONTROLLER_REGION: &str = "south";
/// Its index in [`REGIONS`].
pub const CONTROLLER_INDEX: usize = 2;
/// The service name the regional records answer for.
pub const SERVICE: &str = "api.chaos.test.";
/// The writer name that points at the current writer.
pub const WRITER: &str = "writer.chaos.test.";
const ZONE: &str = "chaos.test.";
/// Ports on the region addresses (each region has its own address, so the
/// ports are the same in every net and never collide with another run's).
const API_PORT: u16 = 8080;
const DNS_PORT: u16 = 5353;
const LEASE_PORT: u16 = 7070;
const LEASE_SECRET: &str = "chaos-drill-guard-lease-secret";
/// The controllers' leader lease at etcd, per region mode: a successor
/// takes over at most this long after a leader is lost (etcd's TTLs are
/// whole seconds; 2 s is what the e2e fleet tests use on this machine).
pub const LEADER_TTL: Duration = Duration::from_secs(2);
/// How long etcd takes to elect its own leader after losing it: up to
/// twice its `--election-timeout` (1 s by default), which it randomizes.
pub const ETCD_ELECTION: Duration = Duration::from_secs(2);

/// What to start.
#[derive(Clone, Debug)]
pub struct StackConfig {
    /// Replication mode.
    pub mode: Mode,
    /// One controller, or one per region through etcd.
    pub controllers: Controllers,
    /// The guards' lease TTL (the promotion proof without a fence or a
    /// synchronous standby).
    pub guard_ttl: Duration,
    /// Test-only: promote without proof that the old writer stopped (see
    /// `RuntimeBuilder::unsafe_promote_without_stop_proof`, feature
    /// `chaos-unsafe`). Only for the test that shows the checker fails.
    pub unsafe_promote: bool,
}

impl StackConfig {
    /// The default drill stack: 2 s guard leases, the real promotion rule.
    pub fn new(mode: Mode) -> StackConfig {
        StackConfig {
            mode,
            controllers: Controllers::One,
            guard_ttl: Duration::from_secs(2),
            unsafe_promote: false,
        }
    }

    /// [`new`](Self::new) with a controller and an etcd member per region,
    /// and 4 s guard leases. While etcd elects a new leader (up to
    /// [`ETCD_ELECTION`]) no lease is renewed, so 2 s leases had every
    /// guard fence its node at each etcd election; a 4 s lease rides one
    /// out, as in the e2e fleet tests.
    pub fn per_region(mode: Mode) -> StackConfig {
        StackConfig {
            controllers: Controllers::PerRegion,
            guard_ttl: Duration::from_secs(4),
            ..StackConfig::new(mode)
        }
    }

    /// The regions that run a controller.
    pub fn controller_regions(&self) -> Vec<usize> {
        match self.controllers {
            Controllers::One => vec![CONTROLLER_INDEX],
            Controllers::PerRegion => (0..REGIONS.len()).collect(),
        }
    }
}

/// The drills' policy: 400 ms probes, 250 ms timeout, fall 3, rise 2, TTL
/// 1 s; automatic promotion within 16 MiB; guards; synchronous per mode.
pub fn policy(config: &StackConfig) -> Policy {
    Policy {
        interval: Duration::from_millis(400),
        timeout: Duration::from_millis(250),
        jitter: Duration::ZERO,
        fall: 3,
        rise: 2,
        ttl: Duration::from_secs(1),
        hold_down: Duration::from_secs(1),
        ramp_steps: vec![50, 100],
        ramp_interval: Duration::from_millis(500),
        auto_promote: true,
        max_rpo: Some(MaxRpo::bytes(16 << 20)),
        guard_ttl: Some(config.guard_ttl),
        proof_timeout: config.guard_ttl * 5,
        synchronous: match config.mode {
            Mode::Sync => Synchronous::On,
            Mode::Async => Synchronous::Off,
        },
        ..Policy::default()
    }
}

/// The controller's parts that run on its region thread.
pub struct ControllerParts {
    /// The runtime (with the lease server).
    pub runtime: Runtime,
    /// The embedded DNS: service records and the writer name.
    pub dns: EmbeddedDns,
}

/// Everything a drill runs. Fields drop in order: the controllers, the
/// guards, the APIs, etcd, PostgreSQL, and the namespaces last.
pub struct Stack {
    /// By region (`None`: no controller there, or it is down).
    controllers: Vec<Option<RegionService<ControllerParts>>>,
    guards: Vec<Option<RegionService<NodeGuard>>>,
    apis: Vec<RegionService<RegionalApi>>,
    /// A member per region, with a controller per region.
    pub etcd: Option<EtcdCluster>,
    /// The PostgreSQL nodes, node `i` in region `i`.
    pub cluster: PgTestCluster,
    /// The namespaces.
    pub net: Net,
    /// Topology and policy.
    pub config: Config,
    /// What was started.
    pub stack_config: StackConfig,
}

/// What a caller checks after dropping the stack: nothing of it may remain.
#[derive(Clone, Debug)]
pub struct Footprint {
    /// Namespace name prefix (`fo<pid>-<seq>-`).
    pub netns_prefix: String,
    /// The PostgreSQL postmasters' pids.
    pub pids: Vec<u32>,
    /// The cluster's temp dir.
    pub dir: PathBuf,
    /// The postmasters' System V shared memory segments (line 7 of
    /// `postmaster.pid`), which a SIGKILLed postmaster leaves behind.
    pub shm_ids: Vec<u64>,
    /// The etcd cluster's temp dir, with a controller per region.
    pub etcd_dir: Option<PathBuf>,
}

impl Stack {
    /// Starts it all and waits until the writer (pg-east) is known, every
    /// region is up, every guard holds its lease, the writer name answers
    /// and (sync mode) a synchronous standby is required. Blocks: call it
    /// from a multi-threaded runtime (it uses `block_in_place`).
    pub async fn start(stack_config: StackConfig) -> Result<Stack, BoxError> {
        let net = tokio::task::block_in_place(|| {
            let mut builder = Net::builder();
            for r in REGIONS {
                builder = builder.region(r);
            }
            builder.start()
        })?;
        let placements: Vec<_> = REGIONS
            .iter()
            .map(|r| net.region(r).map(|r| r.placement()))
            .collect::<Result<_, _>>()?;
        let cluster = tokio::task::block_in_place(|| {
            PgTestCluster::builder()
                .replicas(REGIONS.len() - 1)
                .names(NODES)
                .placements(placements.clone())
                .start()
        })?;
        let etcd = match stack_config.controllers {
            Controllers::One => None,
            Controllers::PerRegion => Some(tokio::task::block_in_place(|| {
                let mut etcd = EtcdCluster::start_placed(placements)?;
                etcd.wait_healthy(Duration::from_secs(30))?;
                Ok::<_, io::Error>(etcd)
            })?),
        };
        let topology = topology(&net, stack_config.controllers)?;
        let config = Config::new(topology, policy(&stack_config))?;
        let mut stack = Stack {
            controllers: (0..REGIONS.len()).map(|_| None).collect(),
            guards: Vec::new(),
            apis: Vec::new(),
            etcd,
            cluster,
            net,
            config,
            stack_config,
        };
        stack.create_tables().await?;
        for r in REGIONS {
            let addr = SocketAddr::from((stack.net.addr(r)?, API_PORT));
            let name = r.to_owned();
            let api = tokio::task::block_in_place(|| {
                stack.net.serve(r, move || async move {
                    RegionalApi::start_at(&name, None, addr)
                })
            })?;
            stack.apis.push(api);
        }
        for i in stack.stack_config.controller_regions() {
            stack.start_controller(i)?;
        }
        for i in 0..NODES.len() {
            let guard = stack.start_guard(i)?;
            stack.guards.push(Some(guard));
        }
        stack.wait_ready(Duration::from_secs(60)).await?;
        Ok(stack)
    }

    /// What to check for after the drop.
    pub fn footprint(&self) -> Footprint {
        Footprint {
            netns_prefix: self.net.prefix().to_owned(),
            pids: self
                .cluster
                .nodes()
                .iter()
                .filter_map(|n| n.postmaster_pid())
                .collect(),
            dir: self
                .cluster
                .socket_dir()
                .parent()
                .map(PathBuf::from)
                .unwrap_or_default(),
            shm_ids: self
                .cluster
                .nodes()
                .iter()
                .filter_map(|n| {
                    let text = std::fs::read_to_string(n.data_dir.join("postmaster.pid")).ok()?;
                    text.lines().nth(6)?.split_whitespace().nth(1)?.parse().ok()
                })
                .collect(),
            etcd_dir: self.etcd.as_ref().map(|e| e.dir().to_path_buf()),
        }
    }

    /// The acting controller's handle: the single controller, or the
    /// leader (the highest token, should a deposed one not know yet).
    /// `None` while it is down or nobody leads.
    pub fn handle(&self) -> Option<RuntimeHandle> {
        self.leader().and_then(|i| self.handle_of(i))
    }

    /// Controller `i`'s handle (`None`: none there, or down).
    pub fn handle_of(&self, i: usize) -> Option<RuntimeHandle> {
        self.controllers
            .get(i)?
            .as_ref()
            .map(|c| c.runtime.handle())
    }

    /// The region of the acting controller (see [`handle`](Self::handle)).
    pub fn leader(&self) -> Option<usize> {
        match self.stack_config.controllers {
            Controllers::One => self.controllers[CONTROLLER_INDEX]
                .as_ref()
                .map(|_| CONTROLLER_INDEX),
            Controllers::PerRegion => (0..REGIONS.len())
                .filter_map(|i| {
                    let token = self.handle_of(i)?.status().controller.leader?;
                    Some((token, i))
                })
                .max()
                .map(|(_, i)| i),
        }
    }

    /// Whether `node`'s guard lease is held: the single controller's lease
    /// server's view, or (etcd) the guard's own.
    pub fn lease_held(&self, node: NodeId) -> bool {
        match self.stack_config.controllers {
            Controllers::One => self.controllers[CONTROLLER_INDEX]
                .as_ref()
                .and_then(|c| c.runtime.lease_server().map(|l| l.is_held(node)))
                .unwrap_or(false),
            Controllers::PerRegion => self
                .guards
                .get(node.index())
                .and_then(Option::as_ref)
                .is_some_and(|g| g.status().lease_held),
        }
    }

    /// The embedded DNS server region `i`'s clients ask: the single
    /// controller's, or their own region's.
    pub fn dns_addr(&self, i: usize) -> Result<SocketAddr, BoxError> {
        let region = match self.stack_config.controllers {
            Controllers::One => CONTROLLER_REGION,
            Controllers::PerRegion => REGIONS[i],
        };
        Ok(SocketAddr::from((self.net.addr(region)?, DNS_PORT)))
    }

    /// Region `i`'s address (also its service record and its node's host).
    pub fn region_addr(&self, i: usize) -> Result<Ipv4Addr, BoxError> {
        Ok(self.net.addr(REGIONS[i])?)
    }

    /// A libpq DSN of node `i` over its unix socket, as `user`.
    pub fn local_dsn(&self, i: usize, app: bool) -> String {
        let node = &self.cluster.nodes()[i];
        let dir = self.cluster.socket_dir();
        if app {
            format!(
                "host={} port={} user={APP_ROLE} password={APP_PASSWORD} dbname={APP_DATABASE}",
                dir.display(),
                node.port
            )
        } else {
            format!(
                "host={} port={} user=postgres dbname={APP_DATABASE}",
                dir.display(),
                node.port
            )
        }
    }

    /// The application DSN of node `i` over TCP, at its region's address
    /// (what the regional clients use).
    pub fn app_dsn(&self, i: usize) -> String {
        self.cluster.nodes()[i].app_dsn()
    }

    /// Crashes region `i`'s controller: its region thread and everything
    /// on it (runtime, lease server, DNS, etcd session) stop at once, with
    /// no shutdown and no resignation.
    pub fn crash_controller(&mut self, i: usize) {
        if let Some(slot) = self.controllers.get_mut(i) {
            slot.take();
        }
    }

    /// Starts region `i`'s controller (again) on the same addresses.
    pub fn start_controller(&mut self, i: usize) -> Result<(), BoxError> {
        let region = REGIONS[i];
        let addr = self.net.addr(region)?;
        let config = self.config.clone();
        let mut writer_name = WriterNameConfig::new(WRITER);
        let mut dsns = Vec::new();
        let mut probes = Vec::new();
        for (i, name) in NODES.iter().enumerate() {
            let ip = IpAddr::V4(self.region_addr(i)?);
            writer_name = writer_name.node(*name, [ip]);
            dsns.push(self.cluster.nodes()[i].admin_dsn());
            probes.push(SocketAddr::from((ip, API_PORT)));
        }
        let unsafe_promote = self.stack_config.unsafe_promote;
        let etcd = self.etcd_endpoints();
        let controller = tokio::task::block_in_place(|| {
            self.net.serve(region, move || async move {
                let place = Place {
                    region: i,
                    addr,
                    etcd,
                };
                start_controller(config, place, writer_name, dsns, probes, unsafe_promote)
                    .await
                    .map_err(|e| io::Error::other(e.to_string()))
            })
        })?;
        self.controllers[i] = Some(controller);
        Ok(())
    }

    /// The etcd members' client URLs (`None` with one controller).
    fn etcd_endpoints(&self) -> Option<Vec<String>> {
        self.etcd.as_ref().map(EtcdCluster::endpoints)
    }

    fn start_guard(&self, i: usize) -> Result<RegionService<NodeGuard>, BoxError> {
        let url = format!("http://{}:{LEASE_PORT}", self.net.addr(CONTROLLER_REGION)?);
        let etcd = self.etcd_endpoints();
        let topology = self.config.topology().clone();
        let dsn = self.cluster.nodes()[i].admin_dsn();
        let data_dir = self.cluster.nodes()[i].data_dir.clone();
        let ttl = self.stack_config.guard_ttl;
        let guard = tokio::task::block_in_place(|| {
            self.net.serve(REGIONS[i], move || async move {
                let node = NodeId(i as u32);
                let name = NODES[i];
                let start = async {
                    let lease: Arc<dyn failover::decision::ports::GuardLease> = match etcd {
                        Some(endpoints) => Arc::new(
                            EtcdGuardLease::connect(
                                &etcd_config(endpoints, "-", REGIONS[i]),
                                topology,
                            )
                            .await?,
                        ),
                        None => {
                            // It must know every node's name: the writer
                            // record it reads back names any of them.
                            let mut lease = LeaseClient::new(&url, LEASE_SECRET)?;
                            for (n, other) in NODES.iter().enumerate() {
                                lease = lease.with_node(NodeId(n as u32), other)?;
                            }
                            Arc::new(lease)
                        }
                    };
                    let admin = PgCluster::new().with_node(node, name, &dsn)?;
                    // It runs on its node's machine: a server it cannot
                    // fence in time (frozen), it kills. A fence takes two
                    // termination rounds 100 ms apart and was measured at
                    // 310–480 ms on this 2-core machine under load 5–10,
                    // so a 2 s lease's default budget (400 ms, three
                    // quarters for the fence) killed healthy writers, and
                    // 800 ms still did once at load 10. So 1.2 s, 900 ms
                    // of it for the fence: with a 2 s lease the largest the
                    // settings allow with renewals every 300 ms
                    // (2 × 300 ms ≤ ttl − margin − budget).
                    let mut settings = GuardSettings::for_ttl(ttl);
                    settings.renew_interval =
                        settings.renew_interval.min(Duration::from_millis(300));
                    let most = ttl
                        .saturating_sub(settings.margin)
                        .saturating_sub(settings.renew_interval * 2);
                    settings.fence_budget = settings
                        .fence_budget
                        .max(most.min(Duration::from_millis(1200)));
                    Ok::<_, BoxError>(NodeGuard::start_with_kill(
                        node,
                        name,
                        settings,
                        lease,
                        Arc::new(admin),
                        NodeKill::new(&data_dir)?,
                    )?)
                };
                start.await.map_err(|e| io::Error::other(e.to_string()))
            })
        })?;
        Ok(guard)
    }

    /// Re-points every replica except `old` at the new writer `new`
    /// (`primary_conninfo` and a reload; the timeline switch follows from
    /// `recovery_target_timeline = 'latest'`), as a replica manager
    /// (Patroni's followers) would after a failover. The runtime does not do
    /// this itself: without it, a third node keeps following the dead
    /// writer, and in synchronous mode the new writer is configured to
    /// require it anyway (see the drill report). Returns the nodes re-pointed.
    pub fn follow_writer(&self, new: usize, old: usize) -> Vec<usize> {
        let mut done = Vec::new();
        let node = &self.cluster.nodes()[new];
        for n in (0..NODES.len()).filter(|n| *n != new && *n != old) {
            let in_recovery = self
                .cluster
                .psql(n, "SELECT pg_is_in_recovery()")
                .map(|s| s.trim() == "t")
                .unwrap_or(false);
            if !in_recovery {
                continue;
            }
            let sql = format!(
                "ALTER SYSTEM SET primary_conninfo = 'host={} port={} user=postgres application_name={}'",
                node.host, node.port, NODES[n]
            );
            if self.cluster.psql(n, &sql).is_ok()
                && self.cluster.psql(n, "SELECT pg_reload_conf()").is_ok()
            {
                done.push(n);
            }
        }
        done
    }

    /// Stops node `i`'s guard (as its region's death would).
    pub fn stop_guard(&mut self, i: usize) {
        if let Some(slot) = self.guards.get_mut(i) {
            slot.take();
        }
    }

    /// Creates `rows` and `markers` on the primary as the application role
    /// and waits until both replicas have them.
    async fn create_tables(&self) -> Result<(), BoxError> {
        let primary = failover_testkit::postgres::writer::connect(&self.local_dsn(0, true)).await?;
        primary
            .batch_execute(
                "CREATE TABLE rows (id bigint PRIMARY KEY, at timestamptz DEFAULT now());
                 CREATE TABLE markers (node text, at timestamptz DEFAULT now())",
            )
            .await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        for (i, name) in NODES.iter().enumerate().skip(1) {
            loop {
                let seen = async {
                    let c = failover_testkit::postgres::writer::connect(&self.local_dsn(i, true))
                        .await?;
                    c.query("SELECT 1 FROM markers LIMIT 1", &[]).await
                };
                if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(2), seen).await {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(format!("the tables did not reach {name} within 30 s").into());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }

    /// Waits (at most `limit`) until the acting controller is steady (one
    /// leads, with a controller per region): pg-east the writer, every
    /// region up, every guard lease held, (sync) a standby required, and
    /// the writer name answering at every controller's DNS.
    pub async fn wait_ready(&self, limit: Duration) -> Result<(), BoxError> {
        let deadline = Instant::now() + limit;
        let sync = self.stack_config.mode == Mode::Sync;
        loop {
            let handle = self.handle();
            let why = match &handle {
                None => Some("no controller leads yet".to_owned()),
                Some(handle) => {
                    let s = handle.status();
                    if s.controller.writer.is_none() {
                        Some("no writer yet".to_owned())
                    } else if let Some(r) = s
                        .controller
                        .regions
                        .iter()
                        .position(|r| r.health != Health::Up)
                    {
                        Some(format!("{} not up", REGIONS[r]))
                    } else if let Some(n) =
                        (0..NODES.len()).find(|n| !self.lease_held(NodeId(*n as u32)))
                    {
                        Some(format!("{}'s guard lease not held", NODES[n]))
                    } else if sync && s.controller.synchronous == Default::default() {
                        Some("no synchronous standby required yet".to_owned())
                    } else {
                        None
                    }
                }
            };
            let mut why = why;
            if why.is_none() {
                for i in self.stack_config.controller_regions() {
                    match self.net_resolve(i, WRITER).await {
                        Ok(a) if !a.is_empty() => {}
                        other => {
                            why = Some(format!(
                                "the writer name at {}'s DNS answers {other:?}",
                                REGIONS[i]
                            ));
                            break;
                        }
                    }
                }
            }
            let Some(why) = why else { return Ok(()) };
            if Instant::now() > deadline {
                let events = handle.map(|h| h.status().recent_events);
                return Err(format!(
                    "the stack was not ready within {limit:?}: {why}; events: {events:#?}"
                )
                .into());
            }
            // Polled: the condition spans several controllers and guards.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Resolves `name` at region `i`'s clients' DNS, from region `i`.
    async fn net_resolve(&self, i: usize, name: &'static str) -> Result<Vec<IpAddr>, String> {
        let dns = self.dns_addr(i).map_err(|e| e.to_string())?;
        tokio::task::block_in_place(|| {
            self.net.block_on(REGIONS[i], move || async move {
                super::workload::resolve(dns, name).await
            })
        })
        .map_err(|e| e.to_string())?
    }
}

/// Where a controller runs: its region (index), that region's address, and
/// the etcd members' URLs with a controller per region.
struct Place {
    region: usize,
    addr: Ipv4Addr,
    etcd: Option<Vec<String>>,
}

/// Settings for etcd: the controllers' and the guards' (a guard ignores
/// `controller`, `vantage` and the lease settings). Short timeouts: a
/// member cut off or stopped must not hold a request for long.
fn etcd_config(endpoints: Vec<String>, controller: &str, vantage: &str) -> EtcdConfig {
    let mut c = EtcdConfig::new(endpoints, "chaos", controller, vantage);
    c.lease_ttl = LEADER_TTL;
    c.lease_margin = Duration::from_millis(500);
    c.connect_timeout = Duration::from_millis(500);
    c.request_timeout = Duration::from_secs(1);
    c
}

/// east (active), west (standby), south (standby); each region's record is
/// its address; a vantage per controller; pg-east the primary.
fn topology(net: &Net, controllers: Controllers) -> Result<Topology, BoxError> {
    let mut builder = Topology::builder(SERVICE);
    for (i, r) in REGIONS.iter().enumerate() {
        let role = if i == 0 {
            RegionRole::Active
        } else {
            RegionRole::Standby
        };
        let mut region = Region::new(*r, role);
        region.records = vec![IpAddr::V4(net.addr(r)?)];
        builder = builder.region(region);
    }
    match controllers {
        Controllers::One => builder = builder.vantage(CONTROLLER_REGION),
        Controllers::PerRegion => {
            for r in REGIONS {
                builder = builder.vantage(r);
            }
        }
    }
    for (i, r) in REGIONS.iter().enumerate() {
        builder = builder.node(Node {
            name: NODES[i].into(),
            region: (*r).into(),
            priority: 0,
            primary: i == 0,
        });
    }
    Ok(builder.build()?)
}

/// A controller, on its region's thread: embedded DNS (service and writer
/// name), the runtime, an HTTP probe per region from its vantage; and the
/// lease server for the guards (one controller) or the etcd coordinator
/// (one per region: each serves the stored plan and writer).
async fn start_controller(
    config: Config,
    place: Place,
    writer_name: WriterNameConfig,
    dsns: Vec<String>,
    probes: Vec<SocketAddr>,
    unsafe_promote: bool,
) -> Result<ControllerParts, BoxError> {
    let mut dns_config = EmbeddedConfig::new(ZONE);
    dns_config.selection = Selection::AllServing;
    let addr = place.addr;
    let dns = EmbeddedDns::bind(
        SocketAddr::from((addr, DNS_PORT)),
        config.topology(),
        config.policy(),
        dns_config,
    )
    .await?;
    dns.router()
        .serve_writer_name(config.topology(), &writer_name)?;
    let mut pg = PgCluster::new();
    for (i, dsn) in dsns.iter().enumerate() {
        pg = pg.with_node(NodeId(i as u32), NODES[i], dsn)?;
    }
    let policy = config.policy().clone();
    let builder = RuntimeBuilder::new(config.clone()).database(Arc::new(pg));
    let (mut builder, vantage) = match place.etcd {
        None => (
            builder
                .router(Arc::new(dns.router()))
                .writer_name(Arc::new(dns.router()))
                .guard_leases(
                    LeaseServerConfig::new(SocketAddr::from((addr, LEASE_PORT)), LEASE_SECRET)
                        .topology(config.topology()),
                ),
            VantageId(0),
        ),
        Some(endpoints) => {
            let region = REGIONS[place.region];
            let coordinator = EtcdCoordinator::connect(
                etcd_config(endpoints, &format!("ctl-{region}"), region),
                config.topology().clone(),
                &policy,
            )
            .await?;
            (
                builder
                    .coordinator(Arc::new(coordinator))
                    .serve(Arc::new(dns.router()))
                    .serve_writer_name(Arc::new(dns.router())),
                VantageId(place.region as u32),
            )
        }
    };
    for (i, target) in probes.iter().enumerate() {
        let mut probe = HttpProbeConfig::new(target.ip().to_string(), target.port());
        probe.path = "/healthz".into();
        probe.connect_timeout = policy.timeout / 2;
        probe.response_timeout = policy.timeout;
        builder = builder.probe(
            RegionId(i as u32),
            vantage,
            Arc::new(HttpProbe::new(probe)?),
        );
    }
    if unsafe_promote {
        builder = loosen(builder)?;
    }
    let runtime = builder.start().await?;
    Ok(ControllerParts { runtime, dns })
}

#[cfg(feature = "chaos-unsafe")]
fn loosen(builder: RuntimeBuilder) -> Result<RuntimeBuilder, BoxError> {
    Ok(builder.unsafe_promote_without_stop_proof())
}

#[cfg(not(feature = "chaos-unsafe"))]
fn loosen(_: RuntimeBuilder) -> Result<RuntimeBuilder, BoxError> {
    Err("unsafe_promote needs the chaos-unsafe feature (--features chaos-unsafe)".into())
}

impl Footprint {
    /// What of the stack is still there (call after dropping it): its
    /// namespaces (their veth pairs go with them), live postmasters, the
    /// cluster's temp dir, and any veth of ours in the host's namespace.
    pub fn leftovers(&self) -> Vec<String> {
        let mut left = Vec::new();
        if let Ok(entries) = std::fs::read_dir("/var/run/netns") {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with(&self.netns_prefix) {
                    left.push(format!("namespace {name}"));
                }
            }
        }
        for pid in &self.pids {
            // Still a live postgres (not a zombie being reaped, not another
            // program that got the pid since).
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let live_postgres = stat.contains("(postgres)")
                && !stat
                    .rsplit(')')
                    .next()
                    .is_some_and(|rest| rest.trim_start().starts_with('Z'));
            if live_postgres {
                left.push(format!("process {pid} (a postmaster)"));
            }
        }
        if self.dir.exists() {
            left.push(format!("temp dir {}", self.dir.display()));
        }
        if let Some(dir) = self.etcd_dir.as_ref().filter(|d| d.exists()) {
            left.push(format!("etcd temp dir {}", dir.display()));
        }
        if let Ok(out) = std::process::Command::new("ipcs").arg("-m").output() {
            let text = String::from_utf8_lossy(&out.stdout);
            for id in &self.shm_ids {
                let listed = text
                    .lines()
                    .any(|l| l.split_whitespace().nth(1) == Some(&id.to_string()));
                if listed {
                    left.push(format!("System V shared memory segment {id}"));
                }
            }
        }
        if let Ok(out) = std::process::Command::new("ip")
            .args(["-o", "link"])
            .output()
        {
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                if REGIONS.iter().any(|r| line.contains(&format!(" to-{r}@"))) {
                    left.push(format!("veth in the host's namespace: {line}"));
                }
            }
        }
        left
    }
}
