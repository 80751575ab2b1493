//! Two live regions on loopback, shared by `examples/live.rs` and
//! `benches/failover_e2e.rs`: a regional HTTP API each, the embedded
//! authoritative DNS server, optionally a PostgreSQL primary (us-east) and
//! streaming replica (us-west), and the failover runtime wiring them.
#![allow(dead_code)]

use std::error::Error;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use failover::decision::ports::TrafficRouter;
use failover::decision::{
    Config, MaxRpo, Node, NodeId, Policy, Region, RegionId, RegionRole, Topology, VantageId,
};
use failover::dns::{EmbeddedConfig, EmbeddedDns, Selection};
use failover::lease::{LeaseClient, LeaseServerConfig};
use failover::pg::{GuardSettings, NodeGuard, PgCluster};
use failover::probe::{HttpProbe, HttpProbeConfig};
use failover::{Runtime, RuntimeBuilder};
use failover_testkit::http::RegionalApi;
use failover_testkit::postgres::PgTestCluster;
use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};

pub type BoxError = Box<dyn Error + Send + Sync>;

pub const SERVICE: &str = "api.failover.test.";
pub const EAST_IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 11));
pub const WEST_IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 12));
pub const EAST: RegionId = RegionId(0);
pub const WEST: RegionId = RegionId(1);
/// TTL of the node guards' leases: an unreachable primary is replaced once
/// its guard lease has expired, so this is part of the database cutover.
pub const GUARD_TTL: Duration = Duration::from_secs(2);
const LEASE_SECRET: &str = "live-example-guard-lease-secret";

/// Everything the live scenario runs.
pub struct LiveRegions {
    pub east: RegionalApi,
    pub west: RegionalApi,
    pub dns: EmbeddedDns,
    pub cluster: Option<PgTestCluster>,
    pub config: Config,
    pub runtime: Runtime,
    /// A guard next to each PostgreSQL node (pg-east, pg-west), leasing from
    /// the runtime; the region's death takes its guard with it.
    pub guards: std::sync::Mutex<Vec<Option<NodeGuard>>>,
}

/// us-east active, us-west standby at 60 % of peak; with a database, pg-east
/// (primary) and pg-west (replica) and automatic promotion within 16 MiB.
pub fn config(policy: Policy, with_database: bool) -> Result<Config, BoxError> {
    let mut east = Region::new("us-east", RegionRole::Active);
    east.records = vec![EAST_IP];
    let mut west = Region::new("us-west", RegionRole::Standby);
    west.capacity = 0.6;
    west.records = vec![WEST_IP];
    let mut builder = Topology::builder(SERVICE)
        .region(east)
        .region(west)
        .vantage("local");
    let mut policy = policy;
    if with_database {
        for (name, region, primary) in [("pg-east", "us-east", true), ("pg-west", "us-west", false)]
        {
            builder = builder.node(Node {
                name: name.into(),
                region: region.into(),
                priority: 0,
                primary,
            });
        }
        policy.auto_promote = true;
        policy.max_rpo = Some(MaxRpo::bytes(16 << 20));
        // Every node runs a guard: a primary that cannot be reached is
        // replaced once proven stopped, which its expired lease proves.
        policy.guard_ttl = Some(GUARD_TTL);
        policy.proof_timeout = GUARD_TTL * 5;
    }
    Ok(Config::new(builder.build()?, policy)?)
}

impl LiveRegions {
    /// Starts it all; `with_database` also starts PostgreSQL (seconds).
    pub async fn start(policy: Policy, with_database: bool) -> Result<LiveRegions, BoxError> {
        Self::start_routed(policy, with_database, None).await
    }

    /// Like [`start`](Self::start), with `router` applying the plans instead
    /// of the embedded DNS server (which still runs, unused).
    pub async fn start_routed(
        policy: Policy,
        with_database: bool,
        router: Option<Arc<dyn TrafficRouter>>,
    ) -> Result<LiveRegions, BoxError> {
        let cluster = if with_database {
            Some(
                // Named as in the topology: a replica's application_name is
                // what the writer's synchronous_standby_names names.
                tokio::task::spawn_blocking(|| {
                    PgTestCluster::builder()
                        .replicas(1)
                        .names(["pg-east", "pg-west"])
                        .start()
                })
                .await??,
            )
        } else {
            None
        };
        if let Some(cluster) = &cluster {
            create_app_table(cluster).await?;
        }
        let config = config(policy.clone(), with_database)?;
        let east = RegionalApi::start_named("us-east", None)?;
        let west = RegionalApi::start_named("us-west", None)?;
        let mut dns_config = EmbeddedConfig::new("failover.test.");
        dns_config.selection = Selection::AllServing;
        let dns = EmbeddedDns::bind(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            config.topology(),
            config.policy(),
            dns_config,
        )
        .await?;
        let mut builder = RuntimeBuilder::new(config.clone())
            .router(router.unwrap_or_else(|| Arc::new(dns.router())))
            .probe(EAST, VantageId(0), probe(&east, &policy)?)
            .probe(WEST, VantageId(0), probe(&west, &policy)?);
        if let Some(cluster) = &cluster {
            let nodes = cluster.nodes();
            builder = builder
                .database(Arc::new(
                    PgCluster::new()
                        .with_node(NodeId(0), "pg-east", &nodes[0].admin_dsn())?
                        .with_node(NodeId(1), "pg-west", &nodes[1].admin_dsn())?,
                ))
                .guard_leases(
                    LeaseServerConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)), LEASE_SECRET)
                        .topology(config.topology()),
                );
        }
        let runtime = builder.start().await?;
        let mut guards = Vec::new();
        if let (Some(cluster), Some(leases)) = (&cluster, runtime.lease_server()) {
            for (i, name) in ["pg-east", "pg-west"].into_iter().enumerate() {
                let node = NodeId(i as u32);
                let lease = LeaseClient::new(&leases.url(), LEASE_SECRET)?.with_node(node, name)?;
                let admin =
                    PgCluster::new().with_node(node, name, &cluster.nodes()[i].admin_dsn())?;
                guards.push(Some(NodeGuard::start(
                    node,
                    name,
                    GuardSettings::for_ttl(GUARD_TTL),
                    Arc::new(lease),
                    Arc::new(admin),
                )?));
            }
            // Ready once both guards hold their leases.
            let ready = Instant::now() + Duration::from_secs(15);
            while !(leases.is_held(NodeId(0)) && leases.is_held(NodeId(1))) {
                if Instant::now() > ready {
                    return Err("the node guards did not take their leases within 15 s".into());
                }
                let mut status = runtime.handle().watch_status();
                let _ = tokio::time::timeout(Duration::from_millis(200), status.changed()).await;
            }
        }
        Ok(LiveRegions {
            east,
            west,
            dns,
            cluster,
            config,
            runtime,
            guards: std::sync::Mutex::new(guards),
        })
    }

    /// Only us-east's API fails (its HTTP server stops accepting
    /// connections); pg-east and its guard stay up and reachable, so the
    /// controller can confirm pg-east's fence. Returns when it was done.
    pub async fn stop_east_api(&self) -> Instant {
        let at = Instant::now();
        self.east.stop().await;
        at
    }

    /// The region dies whole: its API stops accepting connections, its
    /// PostgreSQL primary gets SIGKILL and its node guard stops. Returns when it was done.
    pub async fn kill_east(&self) -> Result<Instant, BoxError> {
        let at = Instant::now();
        // pg-east's guard dies with its region (it shares fate with its node).
        if let Some(slot) = self
            .guards
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .first_mut()
        {
            slot.take();
        }
        self.east.stop().await;
        if let Some(cluster) = &self.cluster {
            cluster.kill(0)?;
        }
        Ok(at)
    }

    /// One uncached query to the embedded server for the service's A records.
    pub async fn resolve(&self) -> Result<Vec<IpAddr>, BoxError> {
        resolve(self.dns.local_addr()).await
    }

    /// Whether the application role (not a superuser) commits a write on
    /// pg-west now, over a new connection, as a reconnecting client would.
    /// The table was created on pg-east at start.
    pub async fn west_writable(&self) -> bool {
        let Some(cluster) = &self.cluster else {
            return false;
        };
        let attempt = app_execute(
            cluster.nodes()[1].app_dsn(),
            "INSERT INTO live_writes DEFAULT VALUES",
        );
        matches!(
            tokio::time::timeout(Duration::from_secs(1), attempt).await,
            Ok(Ok(()))
        )
    }
}

/// Runs `sql` as the application role over a new connection to `dsn`.
async fn app_execute(dsn: String, sql: &str) -> Result<(), tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(&dsn, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    client.batch_execute(sql).await
}

/// Creates the application's table on the primary (pg-east) as the
/// application role and waits (at most 15 s) until the replica has it.
async fn create_app_table(cluster: &PgTestCluster) -> Result<(), BoxError> {
    app_execute(
        cluster.nodes()[0].app_dsn(),
        "CREATE TABLE IF NOT EXISTS live_writes (at timestamptz DEFAULT now())",
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let probe = app_execute(
            cluster.nodes()[1].app_dsn(),
            "SELECT 1 FROM live_writes LIMIT 1",
        );
        if let Ok(Ok(())) = tokio::time::timeout(Duration::from_secs(1), probe).await {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err("the application table did not reach pg-west within 15 s".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An HTTP probe of `api`'s `/healthz`, with the policy's timeout split
/// into connect (half) and response timeouts.
pub fn probe(api: &RegionalApi, policy: &Policy) -> Result<Arc<HttpProbe>, BoxError> {
    let mut config = HttpProbeConfig::new(api.addr().ip().to_string(), api.addr().port());
    config.path = "/healthz".into();
    config.connect_timeout = policy.timeout / 2;
    config.response_timeout = policy.timeout;
    Ok(Arc::new(HttpProbe::new(config)?))
}

/// One uncached UDP query to `server` for the service's A records.
pub async fn resolve(server: SocketAddr) -> Result<Vec<IpAddr>, BoxError> {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    let id = (Instant::now().elapsed().subsec_nanos() & 0xFFFF) as u16;
    let mut query = Message::new(id, MessageType::Query, OpCode::Query);
    query.add_query(Query::query(Name::from_ascii(SERVICE)?, RecordType::A));
    socket.send_to(&query.to_vec()?, server).await?;
    let mut buf = vec![0u8; 4096];
    let (n, _) = tokio::time::timeout(Duration::from_secs(1), socket.recv_from(&mut buf)).await??;
    let reply = Message::from_vec(buf.get(..n).unwrap_or_default())?;
    let mut ips: Vec<IpAddr> = reply
        .answers
        .iter()
        .filter_map(|r| r.data.ip_addr())
        .collect();
    ips.sort();
    Ok(ips)
}
