//! Shared set-up for the end-to-end tests: two regions on loopback, each a
//! real HTTP API probed over real sockets, and the helpers to watch the
//! runtime's status and DNS answers with bounded waits.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use failover::decision::{
    Config, Health, Node, Policy, Region, RegionId, RegionRole, Topology, VantageId,
};
use failover::probe::{HttpProbe, HttpProbeConfig};
use failover::{Runtime, RuntimeBuilder, RuntimeHandle, RuntimeStatus};
use failover_testkit::http::RegionalApi;

pub const SERVICE: &str = "api.failover.test.";
pub const ZONE: &str = "failover.test.";
pub const EAST_IP: &str = "127.0.0.11";
pub const WEST_IP: &str = "127.0.0.12";
pub const EAST: RegionId = RegionId(0);
pub const WEST: RegionId = RegionId(1);

/// us-east active (record 127.0.0.11) and us-west standby at 60 % of peak
/// (record 127.0.0.12), one vantage.
pub fn topology() -> Topology {
    topology_with(false)
}

/// [`topology`], plus PostgreSQL nodes pg-east (primary) and pg-west when
/// `database` is set.
pub fn topology_with(database: bool) -> Topology {
    let mut east = Region::new("us-east", RegionRole::Active);
    east.records = vec![EAST_IP.parse().expect("literal")];
    let mut west = Region::new("us-west", RegionRole::Standby);
    west.capacity = 0.6;
    west.records = vec![WEST_IP.parse().expect("literal")];
    let mut builder = Topology::builder(SERVICE)
        .region(east)
        .region(west)
        .vantage("local");
    if database {
        for (name, region, primary) in [("pg-east", "us-east", true), ("pg-west", "us-west", false)]
        {
            builder = builder.node(Node {
                name: name.into(),
                region: region.into(),
                priority: 0,
                primary,
            });
        }
    }
    builder.build().expect("valid topology")
}

/// Fast probes: every 300 ms, 150 ms timeout, fall 3, rise 2, TTL 1 s.
pub fn fast_policy() -> Policy {
    Policy {
        interval: Duration::from_millis(300),
        timeout: Duration::from_millis(150),
        jitter: Duration::ZERO,
        fall: 3,
        rise: 2,
        ttl: Duration::from_secs(1),
        hold_down: Duration::from_millis(500),
        ramp_steps: vec![50, 100],
        ramp_interval: Duration::from_millis(300),
        ..Policy::default()
    }
}

pub fn config(topology: Topology, policy: Policy) -> Config {
    Config::new(topology, policy).expect("valid config")
}

/// An HTTP probe of `api` with the policy's timeout split into connect and
/// response timeouts.
pub fn http_probe(api: &RegionalApi, policy: &Policy) -> Arc<HttpProbe> {
    http_probe_at(api.addr(), policy)
}

/// An HTTP probe of the regional API at `addr` (see [`http_probe`]).
pub fn http_probe_at(addr: SocketAddr, policy: &Policy) -> Arc<HttpProbe> {
    let mut probe = HttpProbeConfig::new(addr.ip().to_string(), addr.port());
    probe.path = "/healthz".to_owned();
    probe.connect_timeout = policy.timeout / 2;
    probe.response_timeout = policy.timeout;
    Arc::new(HttpProbe::new(probe).expect("valid probe config"))
}

/// The two regional APIs, healthy.
pub struct TwoRegions {
    pub east: RegionalApi,
    pub west: RegionalApi,
}

impl TwoRegions {
    pub fn start() -> TwoRegions {
        TwoRegions {
            east: RegionalApi::start_named("us-east", None).expect("east API"),
            west: RegionalApi::start_named("us-west", None).expect("west API"),
        }
    }

    /// Adds an HTTP probe per region (from the single vantage), starts the
    /// runtime and waits until us-east is up.
    pub async fn run(&self, builder: RuntimeBuilder) -> Runtime {
        let policy = builder.config().policy().clone();
        let runtime = builder
            .probe(EAST, VantageId(0), http_probe(&self.east, &policy))
            .probe(WEST, VantageId(0), http_probe(&self.west, &policy))
            .start()
            .await
            .expect("runtime starts");
        wait_status(
            &runtime.handle(),
            Duration::from_secs(15),
            "us-east up",
            |s| s.controller.regions[EAST.index()].health == Health::Up,
        )
        .await;
        runtime
    }
}

/// Waits (at most `limit`) until `check` holds for the runtime's status.
pub async fn wait_status(
    handle: &RuntimeHandle,
    limit: Duration,
    what: &str,
    check: impl Fn(&RuntimeStatus) -> bool,
) -> RuntimeStatus {
    let mut rx = handle.watch_status();
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        {
            let status = rx.borrow_and_update();
            if check(&status) {
                return status.clone();
            }
        }
        match tokio::time::timeout_at(deadline, rx.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => panic!("runtime stopped while waiting for: {what}"),
            Err(_) => panic!(
                "timed out after {limit:?} waiting for: {what}; last events: {:#?}",
                handle.status().recent_events
            ),
        }
    }
}

/// Queries `server` for the service's A records with `dig` until `want` is
/// the answer (at most `limit`, every 20 ms), returning when it first was.
pub async fn wait_answer(server: SocketAddr, want: &str, limit: Duration) -> Instant {
    wait_name_answer(server, SERVICE, want, limit).await
}

/// [`wait_answer`] for any `name`'s A records.
pub async fn wait_name_answer(
    server: SocketAddr,
    name: &'static str,
    want: &str,
    limit: Duration,
) -> Instant {
    let deadline = Instant::now() + limit;
    let mut last = Vec::new();
    while Instant::now() < deadline {
        let answer =
            tokio::task::spawn_blocking(move || failover_testkit::bind::dig(server, name, "A"))
                .await
                .expect("dig task");
        match answer {
            Ok(answer) if answer == [want] => return Instant::now(),
            Ok(answer) => last = answer,
            Err(error) => last = vec![error.to_string()],
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "DNS at {server} did not answer {want} for {name} within {limit:?}; last answer {last:?}"
    );
}

/// TTL of the node guards' leases in the end-to-end tests. A guard that
/// cannot renew fences its node at TTL − fence budget − margin (2.8 s
/// here): long enough that the scheduling stalls of a 2-core machine at
/// load 12–15 (renewals seen 1.4 s late) do not fence a healthy writer in
/// the middle of a test, as they did with 2 s.
pub const GUARD_TTL: Duration = Duration::from_secs(4);

/// The guards' settings in the end-to-end tests: [`GUARD_TTL`], renewed
/// every 400 ms, so one stalled renewal is followed by several more before
/// the guard would fence.
pub fn guard_settings() -> failover::pg::GuardSettings {
    let mut settings = failover::pg::GuardSettings::for_ttl(GUARD_TTL);
    settings.renew_interval = Duration::from_millis(400);
    settings
}
/// The lease server's shared secret in the end-to-end tests.
pub const LEASE_SECRET: &str = "e2e-guard-lease-secret";

/// A `NodeGuard` next to one node (`index` in the topology), leasing from the
/// lease server at `url` and fencing its node through `dsn`. Like a
/// deployed guard (`examples/guard.rs`), it knows every node's name, so it
/// can read a writer record that names another node.
pub fn start_guard(url: &str, index: u32, name: &str, dsn: &str) -> failover::pg::NodeGuard {
    use failover::decision::NodeId;
    let node = NodeId(index);
    let lease = failover::lease::LeaseClient::new(url, LEASE_SECRET)
        .and_then(|c| c.with_node(NodeId(0), "pg-east"))
        .and_then(|c| c.with_node(NodeId(1), "pg-west"))
        .and_then(|c| c.with_node(node, name))
        .expect("lease client");
    let admin = failover::pg::PgCluster::new()
        .with_node(node, name, dsn)
        .expect("guard DSN parses");
    failover::pg::NodeGuard::start(
        node,
        name,
        guard_settings(),
        Arc::new(lease),
        Arc::new(admin),
    )
    .expect("guard starts")
}

pub mod admin;
pub mod fleet;
