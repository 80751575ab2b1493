//! Shared set-up for the end-to-end tests: two regions on loopback, each a
//! real HTTP API probed over real sockets, and the helpers to watch the
//! runtime's status and DNS answers with bounded waits.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use failover::core::{Config, Policy, Region, RegionId, RegionRole, Topology, VantageId};
use failover::probe::{HttpProbe, HttpProbeConfig};
use failover::{RuntimeBuilder, RuntimeHandle, RuntimeStatus};
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
    let mut east = Region::new("us-east", RegionRole::Active);
    east.records = vec![EAST_IP.parse().expect("literal")];
    let mut west = Region::new("us-west", RegionRole::Standby);
    west.capacity = 0.6;
    west.records = vec![WEST_IP.parse().expect("literal")];
    Topology::builder(SERVICE)
        .region(east)
        .region(west)
        .vantage("local")
        .build()
        .expect("valid topology")
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
    let addr = api.addr();
    let mut probe = HttpProbeConfig::new(addr.ip().to_string(), addr.port());
    probe.path = "/healthz".to_owned();
    probe.connect_timeout = policy.timeout / 2;
    probe.response_timeout = policy.timeout;
    Arc::new(HttpProbe::new(probe).expect("valid probe config"))
}

/// Adds an HTTP probe per region, from the single vantage.
pub fn with_probes(
    builder: RuntimeBuilder,
    east: &RegionalApi,
    west: &RegionalApi,
    policy: &Policy,
) -> RuntimeBuilder {
    builder
        .probe(EAST, VantageId(0), http_probe(east, policy))
        .probe(WEST, VantageId(0), http_probe(west, policy))
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
    let deadline = Instant::now() + limit;
    let mut last = Vec::new();
    while Instant::now() < deadline {
        let answer =
            tokio::task::spawn_blocking(move || failover_testkit::bind::dig(server, SERVICE, "A"))
                .await
                .expect("dig task");
        match answer {
            Ok(answer) if answer == [want] => return Instant::now(),
            Ok(answer) => last = answer,
            Err(error) => last = vec![error.to_string()],
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("DNS at {server} did not answer {want} within {limit:?}; last answer {last:?}");
}
