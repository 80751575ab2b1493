//! The writer's DNS name, queried with `dig` over real sockets: from the
//! embedded server, and updated on a real BIND through RFC 2136 under the
//! leader's fencing token.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use failover_core::ports::WriterName;
use failover_core::{
    Epoch, FencingToken, Node, NodeId, Policy, PortErrorKind, Region, RegionRole, Topology,
};
use failover_dns::{
    DnsError, EmbeddedConfig, EmbeddedDns, Rfc2136Config, Rfc2136Router, WriterNameConfig,
};
use failover_testkit::bind::{dig, BindServer, BindZone};

const SERVICE: &str = "api.example.test.";
const WRITER: &str = "writer.db.example.test.";
const TOKEN_NAME: &str = "_failover.api.example.test.";
const PG_EAST: &str = "10.0.1.10";
const PG_EAST_V6: &str = "fd00::10";
const PG_WEST: &str = "10.0.2.10";
const EAST: NodeId = NodeId(0);
const WEST: NodeId = NodeId(1);

fn ip(s: &str) -> IpAddr {
    s.parse().expect("literal address")
}

fn node(name: &str, region: &str, primary: bool) -> Node {
    Node {
        name: name.into(),
        region: region.into(),
        priority: 0,
        primary,
    }
}

fn topology() -> Topology {
    let mut east = Region::new("east", RegionRole::Active);
    east.records = vec![ip("192.0.2.10")];
    let mut west = Region::new("west", RegionRole::Active);
    west.records = vec![ip("198.51.100.20")];
    Topology::builder(SERVICE)
        .region(east)
        .region(west)
        .node(node("pg-east", "east", true))
        .node(node("pg-west", "west", false))
        .build()
        .expect("valid topology")
}

fn writer_config() -> WriterNameConfig {
    WriterNameConfig::new(WRITER)
        .node("pg-east", [ip(PG_EAST), ip(PG_EAST_V6)])
        .node("pg-west", [ip(PG_WEST)])
}

async fn dig_async(server: SocketAddr, name: &str, rtype: &str) -> Vec<String> {
    let (name, rtype) = (name.to_owned(), rtype.to_owned());
    tokio::task::spawn_blocking(move || dig(server, &name, &rtype))
        .await
        .expect("dig task")
        .expect("dig runs")
}

fn stale(e: &DnsError) -> bool {
    matches!(e, DnsError::StaleToken { .. })
}

#[tokio::test]
async fn embedded_answers_the_writer_it_was_pointed_at_and_refuses_a_stale_token() {
    let topology = topology();
    let server = EmbeddedDns::bind(
        "127.0.0.1:0".parse().expect("addr"),
        &topology,
        &Policy::default(),
        EmbeddedConfig::new("example.test."),
    )
    .await
    .expect("embedded server binds");
    let addr = server.local_addr();
    let router = server.router();
    // Not served yet: the name does not exist.
    assert!(dig_async(addr, WRITER, "A").await.is_empty());
    router
        .serve_writer_name(&topology, &writer_config())
        .expect("writer name served");
    // No writer known yet: no records (not the configured primary, which
    // may have been fenced since).
    assert!(dig_async(addr, WRITER, "A").await.is_empty());
    assert_eq!(router.writer_node(), None);
    WriterName::point(&router, EAST, Epoch(0), Some(FencingToken(1)))
        .await
        .expect("pointed at pg-east");
    assert_eq!(dig_async(addr, WRITER, "A").await, vec![PG_EAST]);
    assert_eq!(dig_async(addr, WRITER, "AAAA").await, vec![PG_EAST_V6]);
    assert_eq!(router.writer_node(), Some(EAST));

    // The promotion completed: the name moves.
    WriterName::point(&router, WEST, Epoch(1), Some(FencingToken(2)))
        .await
        .expect("pointed at pg-west");
    assert_eq!(dig_async(addr, WRITER, "A").await, vec![PG_WEST]);
    assert!(dig_async(addr, WRITER, "AAAA").await.is_empty());
    // The service name still follows its plan.
    assert_eq!(dig_async(addr, SERVICE, "A").await.len(), 1);

    // A deposed leader's late update moves nothing back.
    let err = WriterName::point(&router, EAST, Epoch(0), Some(FencingToken(1)))
        .await
        .expect_err("stale token refused");
    assert_eq!(err.kind(), PortErrorKind::Refused, "{err}");
    assert_eq!(dig_async(addr, WRITER, "A").await, vec![PG_WEST]);
    // The same leader pointing again changes nothing.
    router
        .point_writer(WEST, Epoch(1), Some(FencingToken(2)))
        .expect("idempotent");
    assert_eq!(dig_async(addr, WRITER, "A").await, vec![PG_WEST]);
}

#[test]
fn writer_name_config_errors_name_the_field() {
    let topology = topology();
    let router_err = |config: WriterNameConfig| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let server = EmbeddedDns::bind(
                "127.0.0.1:0".parse().expect("addr"),
                &topology,
                &Policy::default(),
                EmbeddedConfig::new("example.test."),
            )
            .await
            .expect("binds");
            let e = server
                .router()
                .serve_writer_name(&topology, &config)
                .expect_err("refused");
            e.to_string()
        })
    };
    let outside = router_err(WriterNameConfig {
        name: "writer.example.org.".into(),
        ..writer_config()
    });
    assert!(outside.contains("writer_name.name"), "{outside}");
    let missing = router_err(WriterNameConfig::new(WRITER).node("pg-east", [ip(PG_EAST)]));
    assert!(
        missing.contains("writer_name.nodes") && missing.contains("pg-west"),
        "{missing}"
    );
    let unknown = router_err(writer_config().node("pg-north", [ip(PG_WEST)]));
    assert!(unknown.contains("pg-north"), "{unknown}");
}

/// BIND serving `example.test.` with the writer name on pg-east.
async fn start_bind() -> BindServer {
    tokio::task::spawn_blocking(|| {
        BindServer::start(
            BindZone::new("example.test")
                .record("api", ip("192.0.2.10"))
                .record("writer.db", ip(PG_EAST)),
        )
    })
    .await
    .expect("start task")
    .expect("named starts (install bind9 if missing)")
}

fn bind_router(bind: &BindServer) -> Rfc2136Router {
    let mut config =
        Rfc2136Config::new(bind.addr(), bind.zone(), bind.key_name(), bind.key_secret());
    config.timeout = Duration::from_secs(3);
    Rfc2136Router::new(config, &topology(), &Policy::default())
        .expect("valid config")
        .with_writer_name(&topology(), &writer_config())
        .expect("valid writer name")
}

#[tokio::test]
async fn rfc2136_moves_the_writer_name_under_the_token_and_refuses_a_stale_one() {
    let bind = start_bind().await;
    assert_eq!(dig_async(bind.addr(), WRITER, "A").await, vec![PG_EAST]);
    let leader = bind_router(&bind);
    let deposed = bind_router(&bind);

    leader
        .point_writer(WEST, Epoch(1), Some(FencingToken(2)))
        .await
        .expect("update lands");
    assert_eq!(dig_async(bind.addr(), WRITER, "A").await, vec![PG_WEST]);
    assert!(dig_async(bind.addr(), WRITER, "AAAA").await.is_empty());
    assert_eq!(
        dig_async(bind.addr(), TOKEN_NAME, "TXT").await,
        vec!["\"token=2\""],
        "the update raised the token record"
    );

    // An older leader's update is refused and changes nothing.
    let err = deposed
        .point_writer(EAST, Epoch(0), Some(FencingToken(1)))
        .await
        .expect_err("stale token refused");
    assert!(stale(&err), "{err}");
    assert_eq!(dig_async(bind.addr(), WRITER, "A").await, vec![PG_WEST]);

    // A newer leader moves it back, both address families.
    WriterName::point(&deposed, EAST, Epoch(3), Some(FencingToken(3)))
        .await
        .expect("newer leader's update lands");
    assert_eq!(dig_async(bind.addr(), WRITER, "A").await, vec![PG_EAST]);
    assert_eq!(
        dig_async(bind.addr(), WRITER, "AAAA").await,
        vec![PG_EAST_V6]
    );
    // Now the first leader is the deposed one.
    let err = WriterName::point(&leader, WEST, Epoch(1), Some(FencingToken(2)))
        .await
        .expect_err("refused");
    assert_eq!(err.kind(), PortErrorKind::Refused, "{err}");
    assert_eq!(dig_async(bind.addr(), WRITER, "A").await, vec![PG_EAST]);
}
