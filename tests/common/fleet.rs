//! Controllers in every region, for the end-to-end tests: three vantages
//! (east, west, central), each an in-process runtime coordinated through
//! etcd, with PostgreSQL nodes guarded through etcd and an embedded DNS per
//! controller serving the stored plan.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use failover::decision::{
    Config, MaxRpo, Node, NodeId, Policy, Region, RegionRole, Topology, VantageId,
};
use failover::dns::{EmbeddedConfig, EmbeddedDns, Selection, WriterNameConfig};
use failover::etcd::{EtcdConfig, EtcdCoordinator, EtcdGuardLease};
use failover::pg::{NodeGuard, PgCluster};
use failover::{Runtime, RuntimeBuilder};
use failover_testkit::postgres::PgTestCluster;

use super::*;

/// The controllers' leader lease TTL (etcd's least whole-second TTL is 1 s;
/// 2 s leaves room for a loaded CI machine).
pub const LEASE_TTL: Duration = Duration::from_secs(2);
pub const VANTAGES: [&str; 3] = ["east", "west", "central"];
/// The writer's name every controller's embedded DNS answers, and the
/// addresses it gives for pg-east and pg-west.
pub const WRITER_NAME: &str = "writer.failover.test.";
pub const PG_EAST_IP: &str = "127.0.0.21";
pub const PG_WEST_IP: &str = "127.0.0.22";

pub fn fleet_topology() -> Topology {
    let mut east = Region::new("us-east", RegionRole::Active);
    east.records = vec![EAST_IP.parse().expect("literal")];
    let mut west = Region::new("us-west", RegionRole::Standby);
    west.capacity = 0.6;
    west.records = vec![WEST_IP.parse().expect("literal")];
    let mut builder = Topology::builder(SERVICE).region(east).region(west);
    for v in VANTAGES {
        builder = builder.vantage(v);
    }
    for (name, region, primary) in [("pg-east", "us-east", true), ("pg-west", "us-west", false)] {
        builder = builder.node(Node {
            name: name.into(),
            region: region.into(),
            priority: 0,
            primary,
        });
    }
    builder.build().expect("valid topology")
}

pub fn fleet_policy() -> Policy {
    let mut policy = fast_policy();
    policy.auto_promote = true;
    policy.max_rpo = Some(MaxRpo::bytes(64 << 20));
    policy.guard_ttl = Some(GUARD_TTL);
    policy.proof_timeout = Duration::from_secs(10);
    policy
}

pub fn etcd_config(endpoints: &[String], controller: &str, vantage: &str) -> EtcdConfig {
    let mut c = EtcdConfig::new(endpoints.iter().cloned(), "api", controller, vantage);
    c.lease_ttl = LEASE_TTL;
    c.lease_margin = Duration::from_millis(500);
    c.connect_timeout = Duration::from_millis(500);
    c.request_timeout = Duration::from_secs(1);
    c
}

pub fn pg(cluster: &PgTestCluster) -> PgCluster {
    let (east, west) = (&cluster.nodes()[0], &cluster.nodes()[1]);
    pg_admin(&east.admin_dsn(), &west.admin_dsn())
}

/// The database adapter for pg-east at `east` and pg-west at `west`.
pub fn pg_admin(east: &str, west: &str) -> PgCluster {
    PgCluster::new()
        .with_node(NodeId(0), "pg-east", east)
        .expect("east DSN parses")
        .with_node(NodeId(1), "pg-west", west)
        .expect("west DSN parses")
}

/// One controller: its runtime and its embedded DNS.
pub struct Controller {
    pub name: &'static str,
    pub runtime: Runtime,
    pub dns: EmbeddedDns,
}

pub async fn start_controller(
    index: usize,
    endpoints: &[String],
    east_dsn: &str,
    west_dsn: &str,
    apis: [SocketAddr; 2],
) -> Controller {
    start_controller_with(index, endpoints, east_dsn, west_dsn, apis, |b| b).await
}

/// [`start_controller`], with `tune` applied to the builder last.
pub async fn start_controller_with(
    index: usize,
    endpoints: &[String],
    east_dsn: &str,
    west_dsn: &str,
    apis: [SocketAddr; 2],
    tune: impl FnOnce(RuntimeBuilder) -> RuntimeBuilder,
) -> Controller {
    let name = VANTAGES[index];
    let policy = fleet_policy();
    let config = Config::new(fleet_topology(), policy.clone()).expect("valid config");
    let coordinator = EtcdCoordinator::connect(
        etcd_config(endpoints, &format!("ctl-{name}"), name),
        fleet_topology(),
        &policy,
    )
    .await
    .expect("valid etcd settings");
    let mut dns_config = EmbeddedConfig::new(ZONE);
    dns_config.selection = Selection::AllServing;
    let dns = EmbeddedDns::bind(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        &fleet_topology(),
        &policy,
        dns_config,
    )
    .await
    .expect("embedded DNS binds on loopback");
    dns.router()
        .serve_writer_name(
            &fleet_topology(),
            &WriterNameConfig::new(WRITER_NAME)
                .node("pg-east", [PG_EAST_IP.parse().expect("literal")])
                .node("pg-west", [PG_WEST_IP.parse().expect("literal")]),
        )
        .expect("writer name served");
    let vantage = VantageId(index as u32);
    let builder = RuntimeBuilder::new(config)
        .database(Arc::new(pg_admin(east_dsn, west_dsn)))
        .coordinator(Arc::new(coordinator))
        .serve(Arc::new(dns.router()))
        .serve_writer_name(Arc::new(dns.router()))
        .probe(EAST, vantage, http_probe_at(apis[0], &policy))
        .probe(WEST, vantage, http_probe_at(apis[1], &policy));
    let runtime = tune(builder).start().await.expect("runtime starts");
    Controller { name, runtime, dns }
}

pub async fn guard(endpoints: &[String], index: u32, name: &str, dsn: &str) -> NodeGuard {
    let lease = EtcdGuardLease::connect(&etcd_config(endpoints, "-", "east"), fleet_topology())
        .await
        .expect("guard's etcd settings");
    let admin = PgCluster::new()
        .with_node(NodeId(index), name, dsn)
        .expect("guard DSN parses");
    NodeGuard::start(
        NodeId(index),
        name,
        guard_settings(),
        Arc::new(lease),
        Arc::new(admin),
    )
    .expect("guard starts")
}

/// Which of `controllers` leads, waiting until exactly one does.
pub async fn one_leader(controllers: &[Controller], limit: Duration) -> usize {
    let deadline = Instant::now() + limit;
    loop {
        let leaders: Vec<usize> = controllers
            .iter()
            .enumerate()
            .filter(|(_, c)| c.runtime.handle().status().controller.leader.is_some())
            .map(|(i, _)| i)
            .collect();
        if leaders.len() == 1 {
            return leaders[0];
        }
        assert!(
            Instant::now() < deadline,
            "no single leader within {limit:?}: leaders {leaders:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What every fleet runs on: a 3-member etcd cluster, PostgreSQL pg-east
/// (primary) and pg-west (replica) with a guard each on etcd, and the two
/// regional APIs.
pub struct Base {
    pub etcd: failover_testkit::etcd::EtcdCluster,
    pub cluster: PgTestCluster,
    pub regions: TwoRegions,
    pub guards: Vec<NodeGuard>,
}

impl Base {
    pub async fn start() -> Base {
        let (etcd, cluster) = tokio::join!(
            tokio::task::spawn_blocking(|| failover_testkit::etcd::EtcdCluster::start(3)),
            tokio::task::spawn_blocking(|| PgTestCluster::builder().replicas(1).start()),
        );
        let etcd = etcd.expect("etcd task").expect("etcd cluster starts");
        let cluster = cluster
            .expect("cluster task")
            .expect("PostgreSQL primary + replica start");
        let endpoints = etcd.endpoints();
        let regions = TwoRegions::start();
        let guards = vec![
            guard(&endpoints, 0, "pg-east", &cluster.nodes()[0].admin_dsn()).await,
            guard(&endpoints, 1, "pg-west", &cluster.nodes()[1].admin_dsn()).await,
        ];
        Base {
            etcd,
            cluster,
            regions,
            guards,
        }
    }

    /// The regional APIs' addresses, us-east first.
    pub fn apis(&self) -> [SocketAddr; 2] {
        [self.regions.east.addr(), self.regions.west.addr()]
    }

    /// Starts controller `index` (of [`VANTAGES`]) in this process.
    pub async fn controller(&self, index: usize) -> Controller {
        self.controller_with(index, |b| b).await
    }

    /// [`Base::controller`], with `tune` applied to the builder last.
    pub async fn controller_with(
        &self,
        index: usize,
        tune: impl FnOnce(RuntimeBuilder) -> RuntimeBuilder,
    ) -> Controller {
        start_controller_with(
            index,
            &self.etcd.endpoints(),
            &self.cluster.nodes()[0].admin_dsn(),
            &self.cluster.nodes()[1].admin_dsn(),
            self.apis(),
            tune,
        )
        .await
    }
}
