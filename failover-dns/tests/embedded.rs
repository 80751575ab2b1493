//! The embedded authoritative server, queried over real sockets with `dig`,
//! hickory-resolver and raw hickory-proto messages.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use failover_core::ports::TrafficRouter;
use failover_core::{
    AllDownPolicy, FencingToken, Policy, PortErrorKind, Region, RegionId, RegionRole, RegionWeight,
    Topology, WeightPlan,
};
use failover_dns::{DnsError, EmbeddedConfig, EmbeddedDns, Selection};
use failover_testkit::bind::{dig, dig_raw};
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::Resolver;

const SERVICE: &str = "api.example.test.";
const EAST_V4: &str = "192.0.2.10";
const EAST_V6: &str = "2001:db8::10";
const WEST_V4: &str = "198.51.100.20";

fn topology() -> Topology {
    let mut east = Region::new("east", RegionRole::Active);
    east.records = vec![ip(EAST_V4), ip(EAST_V6)];
    let mut west = Region::new("west", RegionRole::Active);
    west.records = vec![ip(WEST_V4)];
    Topology::builder(SERVICE)
        .region(east)
        .region(west)
        .build()
        .expect("valid topology")
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("literal address")
}

fn plan(generation: u64, ttl_secs: u64, east: u32, west: u32) -> WeightPlan {
    WeightPlan::in_region_order(generation, Duration::from_secs(ttl_secs), [east, west])
}

async fn start(selection: Selection, all_down: AllDownPolicy) -> EmbeddedDns {
    let policy = Policy {
        all_down,
        ttl: Duration::from_secs(30),
        ..Policy::default()
    };
    let mut config = EmbeddedConfig::new("example.test.");
    config.selection = selection;
    config.seed = 7;
    EmbeddedDns::bind(
        "127.0.0.1:0".parse().expect("addr"),
        &topology(),
        &policy,
        config,
    )
    .await
    .expect("embedded server binds")
}

/// `dig` runs a blocking process: keep it off the runtime's workers.
async fn dig_async(server: SocketAddr, name: &str, rtype: &str) -> Vec<String> {
    let (name, rtype) = (name.to_owned(), rtype.to_owned());
    tokio::task::spawn_blocking(move || dig(server, &name, &rtype))
        .await
        .expect("dig task")
        .expect("dig runs")
}

async fn dig_raw_async(server: SocketAddr, args: &[&str]) -> String {
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        dig_raw(server, &refs)
    })
    .await
    .expect("dig task")
    .expect("dig runs")
}

/// One raw UDP query; returns the response code and the answer addresses.
async fn query(server: SocketAddr, name: &str, rtype: RecordType) -> (ResponseCode, Vec<String>) {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let mut msg = Message::new(0x4242, MessageType::Query, OpCode::Query);
    msg.add_query(Query::query(Name::from_ascii(name).expect("name"), rtype));
    socket
        .send_to(&msg.to_vec().expect("encode"), server)
        .await
        .expect("send");
    let mut buf = vec![0u8; 4096];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut buf))
        .await
        .expect("answer within 5 s")
        .expect("recv");
    let reply = Message::from_vec(&buf[..n]).expect("well-formed reply");
    assert_eq!(reply.metadata.id, 0x4242);
    let mut addrs: Vec<String> = reply
        .answers
        .iter()
        .filter_map(|r| r.data.ip_addr().map(|ip| ip.to_string()))
        .collect();
    addrs.sort();
    (reply.metadata.response_code, addrs)
}

fn resolver(server: SocketAddr, tcp: bool) -> Resolver<TokioRuntimeProvider> {
    let mut ns = if tcp {
        NameServerConfig::tcp(server.ip())
    } else {
        NameServerConfig::udp(server.ip())
    };
    for c in &mut ns.connections {
        c.port = server.port();
    }
    let mut opts = ResolverOpts::default();
    opts.cache_size = 0;
    opts.attempts = 1;
    opts.timeout = Duration::from_secs(3);
    Resolver::builder_with_config(
        ResolverConfig::from_name_servers(vec![ns]),
        TokioRuntimeProvider::default(),
    )
    .with_options(opts)
    .build()
    .expect("resolver builds")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dig_sees_serving_records_with_the_policy_ttl_over_udp_and_tcp() {
    let server = start(Selection::AllServing, AllDownPolicy::FailOpen).await;
    let addr = server.local_addr();
    server
        .router()
        .apply(&plan(1, 45, 100, 100))
        .await
        .expect("apply");

    // dig's lines come back sorted.
    assert_eq!(dig_async(addr, SERVICE, "A").await, vec![EAST_V4, WEST_V4]);
    assert_eq!(
        dig_async(addr, SERVICE, "AAAA").await,
        vec![EAST_V6.to_owned()]
    );
    let answer = dig_raw_async(addr, &[SERVICE, "A", "+noall", "+answer", "+tcp"]).await;
    let ttls: Vec<&str> = answer
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    assert_eq!(ttls, vec!["45", "45"], "dig +tcp answer: {answer}");
    let flags = dig_raw_async(addr, &[SERVICE, "A"]).await;
    assert!(
        flags.contains("flags: qr aa"),
        "authoritative answer expected: {flags}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apex_has_soa_and_ns_unknown_names_get_nxdomain_foreign_names_refused() {
    let server = start(Selection::AllServing, AllDownPolicy::FailOpen).await;
    let addr = server.local_addr();

    let soa = dig_async(addr, "example.test.", "SOA").await;
    assert_eq!(soa.len(), 1, "{soa:?}");
    assert!(
        soa[0].starts_with("ns1.example.test. hostmaster.example.test. "),
        "{soa:?}"
    );
    assert_eq!(
        dig_async(addr, "example.test.", "NS").await,
        vec!["ns1.example.test."]
    );

    let nx = dig_raw_async(addr, &["nope.example.test.", "A"]).await;
    assert!(nx.contains("status: NXDOMAIN"), "{nx}");
    assert!(
        nx.contains("IN\tSOA"),
        "negative answer carries the SOA: {nx}"
    );
    let refused = dig_raw_async(addr, &["www.example.org.", "A"]).await;
    assert!(refused.contains("status: REFUSED"), "{refused}");
    // The service name exists: other types are NODATA, not NXDOMAIN.
    let nodata = dig_raw_async(addr, &[SERVICE, "TXT"]).await;
    assert!(
        nodata.contains("status: NOERROR") && nodata.contains("ANSWER: 0"),
        "{nodata}"
    );
    // A name below the service name is unknown.
    let (code, _) = query(addr, "deep.api.example.test.", RecordType::A).await;
    assert_eq!(code, ResponseCode::NXDomain);
    assert!(server.queries_answered() >= 6, "every query is counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hickory_resolver_sees_each_plan_on_the_next_query() {
    let server = start(Selection::AllServing, AllDownPolicy::FailOpen).await;
    let addr = server.local_addr();
    let router = server.router();
    for tcp in [false, true] {
        let resolver = resolver(addr, tcp);
        router.apply(&plan(1, 60, 100, 0)).await.expect("apply");
        let lookup = resolver
            .lookup(SERVICE, RecordType::A)
            .await
            .expect("lookup");
        let got: Vec<String> = lookup
            .answers()
            .iter()
            .filter_map(|r| r.data.ip_addr())
            .map(|i| i.to_string())
            .collect();
        assert_eq!(got, vec![EAST_V4], "tcp={tcp}");
        assert!(lookup.answers().iter().all(|r| r.ttl == 60));

        router.apply(&plan(2, 5, 0, 100)).await.expect("apply");
        let lookup = resolver
            .lookup(SERVICE, RecordType::A)
            .await
            .expect("lookup");
        let got: Vec<String> = lookup
            .answers()
            .iter()
            .filter_map(|r| r.data.ip_addr())
            .map(|i| i.to_string())
            .collect();
        assert_eq!(got, vec![WEST_V4], "tcp={tcp}");
        assert!(lookup.answers().iter().all(|r| r.ttl == 5));
        // West has no IPv6 address: NODATA for AAAA.
        let aaaa = resolver.lookup(SERVICE, RecordType::AAAA).await;
        assert!(
            aaaa.map(|l| l.answers().is_empty()).unwrap_or(true),
            "tcp={tcp}"
        );
    }
    assert_eq!(
        router.read_back().await.expect("read back"),
        plan(2, 5, 0, 100).weights
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_swaps_are_atomic_under_concurrent_queries() {
    let server = start(Selection::AllServing, AllDownPolicy::FailOpen).await;
    let addr = server.local_addr();
    let router = server.router();
    let both_sorted = vec![EAST_V4.to_owned(), WEST_V4.to_owned()];
    let valid: Vec<Vec<String>> = vec![vec![EAST_V4.to_owned()], both_sorted.clone()];

    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let stop = stop.clone();
        let router = router.clone();
        tokio::spawn(async move {
            let mut generation = 0;
            while !stop.load(Ordering::Relaxed) && generation < 100_000 {
                generation += 1;
                let west = if generation % 2 == 0 { 100 } else { 0 };
                router
                    .apply(&plan(generation, 30, 100, west))
                    .await
                    .expect("apply");
                tokio::task::yield_now().await;
            }
            generation
        })
    };
    let mut seen = BTreeMap::new();
    for _ in 0..300 {
        let (code, addrs) = query(addr, SERVICE, RecordType::A).await;
        assert_eq!(code, ResponseCode::NoError);
        assert!(
            valid.contains(&addrs),
            "answer mixes or loses plans: {addrs:?}"
        );
        *seen.entry(addrs).or_insert(0u32) += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = swapper.await.expect("swapper");
    assert!(swaps > 1, "the plan must have changed during the queries");
    // After the swapper stops, the very next query reflects its last plan.
    let last_west = swaps % 2 == 0;
    let (_, addrs) = query(addr, SERVICE, RecordType::A).await;
    assert_eq!(
        addrs,
        if last_west {
            both_sorted
        } else {
            vec![EAST_V4.to_owned()]
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_choice_follows_the_weights() {
    let server = start(Selection::Weighted, AllDownPolicy::FailOpen).await;
    let addr = server.local_addr();
    server
        .router()
        .apply(&plan(1, 30, 75, 25))
        .await
        .expect("apply");
    let (mut east, mut west) = (0u32, 0u32);
    const N: u32 = 2000;
    for _ in 0..N {
        let (code, addrs) = query(addr, SERVICE, RecordType::A).await;
        assert_eq!(code, ResponseCode::NoError);
        match addrs.as_slice() {
            [a] if a == EAST_V4 => east += 1,
            [a] if a == WEST_V4 => west += 1,
            other => panic!("a weighted answer is one region's records, got {other:?}"),
        }
    }
    let share = f64::from(east) / f64::from(N);
    // 75 % expected; ±6 points is > 6 standard deviations at N = 2000.
    assert!(
        (0.69..=0.81).contains(&share),
        "east share {share} (east {east}, west {west})"
    );
    // AAAA: only east has IPv6, so every AAAA answer is east's whatever the draw.
    let (_, v6) = query(addr, SERVICE, RecordType::AAAA).await;
    assert_eq!(v6, vec![EAST_V6]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_everything_keeps_serving_under_fail_open_and_empties_under_fail_closed() {
    let open = start(Selection::AllServing, AllDownPolicy::FailOpen).await;
    open.router()
        .apply(&plan(1, 30, 0, 100))
        .await
        .expect("apply");
    open.router()
        .apply(&plan(2, 30, 0, 0))
        .await
        .expect("apply");
    assert_eq!(
        dig_async(open.local_addr(), SERVICE, "A").await,
        vec![WEST_V4]
    );
    assert_eq!(
        open.router().read_back().await.expect("read"),
        plan(1, 30, 0, 100).weights
    );

    let closed = start(Selection::AllServing, AllDownPolicy::FailClosed).await;
    closed
        .router()
        .apply(&plan(1, 30, 0, 0))
        .await
        .expect("apply");
    let out = dig_raw_async(closed.local_addr(), &[SERVICE, "A"]).await;
    assert!(
        out.contains("status: NOERROR") && out.contains("ANSWER: 0"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applying_the_live_plan_again_changes_nothing() {
    let server = start(Selection::AllServing, AllDownPolicy::FailOpen).await;
    let router = server.router();
    router.apply(&plan(1, 30, 100, 0)).await.expect("apply");
    let soa_before = dig_async(server.local_addr(), "example.test.", "SOA").await;
    router
        .apply(&plan(2, 30, 100, 0))
        .await
        .expect("apply again");
    assert_eq!(router.plans_applied(), 1);
    assert_eq!(
        dig_async(server.local_addr(), "example.test.", "SOA").await,
        soa_before
    );
    router
        .apply(&plan(3, 30, 0, 100))
        .await
        .expect("apply change");
    assert_eq!(router.plans_applied(), 2);
    assert_ne!(
        dig_async(server.local_addr(), "example.test.", "SOA").await,
        soa_before,
        "serial must move"
    );
}

/// A deposed leader's late plan (an older fencing token) is refused and
/// changes no answer; the current term's plans and a single controller's
/// plans (no token) still apply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_under_an_older_token_is_refused_and_the_answers_stay() {
    let server = start(Selection::AllServing, AllDownPolicy::FailOpen).await;
    let addr = server.local_addr();
    let router = server.router();
    let under = |generation, east, west, token| {
        let mut p = plan(generation, 30, east, west);
        p.token = Some(FencingToken(token));
        p
    };
    router
        .apply(&under(1, 100, 0, 5))
        .await
        .expect("token 5 applies");
    router
        .apply(&under(2, 0, 100, 7))
        .await
        .expect("token 7 applies");
    assert_eq!(
        dig_async(addr, SERVICE, "A").await,
        vec![WEST_V4.to_owned()]
    );
    let applied = router.plans_applied();

    let err = router
        .apply(&under(3, 100, 0, 5))
        .await
        .expect_err("token 5 is older than 7");
    eprintln!("older token: {err}");
    assert_eq!(err.kind(), PortErrorKind::Refused, "{err}");
    assert!(!err.is_retryable());
    let text = err.to_string();
    assert!(
        text.contains("token 5") && text.contains("token 7") && text.contains("newer leader"),
        "{text}"
    );
    assert_eq!(router.plans_applied(), applied);
    assert_eq!(
        dig_async(addr, SERVICE, "A").await,
        vec![WEST_V4.to_owned()]
    );
    assert!(dig_async(addr, SERVICE, "AAAA").await.is_empty());
    assert_eq!(
        router.read_back().await.expect("read back"),
        vec![
            RegionWeight {
                region: RegionId(0),
                weight: 0
            },
            RegionWeight {
                region: RegionId(1),
                weight: 100
            },
        ]
    );

    // Equal and newer tokens apply; a plan without a token always does.
    router
        .apply(&under(4, 100, 100, 7))
        .await
        .expect("token 7 again");
    router.apply(&under(5, 100, 0, 9)).await.expect("token 9");
    assert_eq!(
        dig_async(addr, SERVICE, "A").await,
        vec![EAST_V4.to_owned()]
    );
    router
        .apply(&plan(6, 30, 0, 100))
        .await
        .expect("no token: single controller");
    assert_eq!(
        dig_async(addr, SERVICE, "A").await,
        vec![WEST_V4.to_owned()]
    );
}

#[tokio::test]
async fn bad_configuration_names_the_field() {
    let err = EmbeddedDns::bind(
        "127.0.0.1:0".parse().expect("addr"),
        &topology(),
        &Policy::default(),
        EmbeddedConfig::new("other.test."),
    )
    .await
    .expect_err("service outside the zone");
    assert!(
        matches!(
            err,
            DnsError::Config {
                field: "embedded.zone",
                ..
            }
        ),
        "{err}"
    );

    let server = start(Selection::AllServing, AllDownPolicy::FailOpen).await;
    let mut bad = plan(1, 30, 1, 1);
    bad.weights.push(RegionWeight {
        region: RegionId(9),
        weight: 1,
    });
    let err = server
        .router()
        .apply(&bad)
        .await
        .expect_err("unknown region");
    assert_eq!(err.kind(), failover_core::PortErrorKind::Config);
    let (_, addrs) = query(server.local_addr(), SERVICE, RecordType::A).await;
    assert_eq!(
        addrs.len(),
        2,
        "a rejected plan leaves the live one in place"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutting_down_stops_answering() {
    let server = start(Selection::AllServing, AllDownPolicy::FailOpen).await;
    let addr = server.local_addr();
    let (code, _) = query(addr, SERVICE, RecordType::A).await;
    assert_eq!(code, ResponseCode::NoError);
    server.shutdown().await;
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let mut msg = Message::new(1, MessageType::Query, OpCode::Query);
    msg.add_query(Query::query(
        Name::from_ascii(SERVICE).expect("name"),
        RecordType::A,
    ));
    let _ = socket.send_to(&msg.to_vec().expect("encode"), addr).await;
    let mut buf = [0u8; 512];
    let got = tokio::time::timeout(Duration::from_millis(500), socket.recv_from(&mut buf)).await;
    assert!(!matches!(got, Ok(Ok(_))), "no answer after shutdown");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "TCP closed too"
    );
}

/// Issue 10 item 15: a router whose server was dropped (or shut down) must
/// not accept plans as if they were served: `apply` fails with an
/// `Unavailable` error that says the server stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_refuses_plans_once_its_server_is_dropped_or_shut_down() {
    for graceful in [false, true] {
        let server = start(Selection::AllServing, AllDownPolicy::FailOpen).await;
        let addr = server.local_addr();
        let router = server.router();
        router
            .apply(&plan(1, 30, 0, 100))
            .await
            .expect("the running server takes plans");
        assert!(router.is_serving());
        if graceful {
            server.shutdown().await;
        } else {
            drop(server);
        }
        assert!(!router.is_serving(), "graceful: {graceful}");
        let err = router
            .apply(&plan(2, 30, 100, 0))
            .await
            .expect_err("no server answers any more");
        assert_eq!(err.kind(), PortErrorKind::Unavailable, "{err}");
        let text = err.to_string();
        assert!(
            text.contains("embedded DNS server") && text.contains("stopped"),
            "{text}"
        );
        assert!(text.contains(&addr.to_string()), "names the server: {text}");
        let err = router.read_back().await.expect_err("nothing is served");
        assert_eq!(err.kind(), PortErrorKind::Unavailable);
        assert!(matches!(
            router.set_plan(&plan(3, 30, 100, 0)),
            Err(DnsError::Stopped { .. })
        ));
        assert_eq!(
            router.plans_applied(),
            1,
            "the refused plans changed nothing"
        );
    }
}
