//! End to end with real PostgreSQL: the writer's region dies (API and
//! primary together), the runtime promotes the replica in the surviving
//! region, and a controller restarted afterwards adopts the new writer from
//! the epoch it reads back instead of promoting a second time.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use failover::decision::{Config, Health, MaxRpo, NodeId, VantageId};
use failover::dns::{EmbeddedConfig, EmbeddedDns, WriterNameConfig};
use failover::lease::LeaseServerConfig;
use failover::pg::PgCluster;
use failover::RuntimeBuilder;
use failover_testkit::postgres::PgTestCluster;

fn audit_records(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .expect("audit log exists")
        .lines()
        .map(|l| serde_json::from_str(l).expect("every audit line is JSON"))
        .collect()
}

fn promotions(records: &[serde_json::Value]) -> usize {
    records
        .iter()
        .filter(|r| r["record"] == "action" && r["type"] == "promote")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_controller_adopts_the_promoted_writer_without_promoting_again() {
    let cluster = tokio::task::spawn_blocking(|| PgTestCluster::builder().replicas(1).start())
        .await
        .expect("cluster task")
        .expect("PostgreSQL primary + replica start");
    let mut policy = fast_policy();
    policy.auto_promote = true;
    policy.max_rpo = Some(MaxRpo::bytes(64 << 20));
    // Every node runs a guard: the dead primary is proven stopped when its
    // guard lease expires, never merely because it is unreachable.
    policy.guard_ttl = Some(GUARD_TTL);
    policy.proof_timeout = Duration::from_secs(10);
    let config = Config::new(topology_with(true), policy.clone()).expect("valid config");
    let pg = || {
        Arc::new(
            PgCluster::new()
                .with_node(NodeId(0), "pg-east", &cluster.nodes()[0].admin_dsn())
                .expect("east DSN parses")
                .with_node(NodeId(1), "pg-west", &cluster.nodes()[1].admin_dsn())
                .expect("west DSN parses"),
        )
    };
    let regions = TwoRegions::start();
    let dns = EmbeddedDns::bind(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        config.topology(),
        &policy,
        EmbeddedConfig::new(ZONE),
    )
    .await
    .expect("embedded DNS");
    let dir = tempfile::tempdir().expect("temp dir");
    let first_log = dir.path().join("first.jsonl");
    let second_log = dir.path().join("second.jsonl");

    let first = regions
        .run(
            RuntimeBuilder::new(config.clone())
                .router(Arc::new(dns.router()))
                .database(pg())
                .audit_log(&first_log)
                .guard_leases(
                    LeaseServerConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)), LEASE_SECRET)
                        .topology(config.topology()),
                ),
        )
        .await;
    let leases = first.lease_server().expect("lease server runs").clone();
    let east_guard = start_guard(&leases.url(), 0, "pg-east", &cluster.nodes()[0].admin_dsn());
    let west_guard = start_guard(&leases.url(), 1, "pg-west", &cluster.nodes()[1].admin_dsn());
    wait_status(
        &first.handle(),
        Duration::from_secs(15),
        "both guard leases held",
        |_| leases.is_held(NodeId(0)) && leases.is_held(NodeId(1)),
    )
    .await;

    // The region dies whole: its API, its primary and the primary's guard.
    drop(east_guard);
    regions.east.stop().await;
    cluster.kill(0).expect("kill -9 the primary");
    let promoted = wait_status(
        &first.handle(),
        Duration::from_secs(30),
        "pg-west promoted",
        |s| s.controller.writer == Some(NodeId(1)),
    )
    .await;
    let epoch = promoted.controller.epoch;
    assert!(epoch.0 >= 1, "the promotion carries an epoch: {epoch}");
    wait_answer(dns.local_addr(), WEST_IP, Duration::from_secs(5)).await;
    let events: Vec<String> = first.handle().status().recent_events.into_iter().collect();
    assert!(
        events
            .iter()
            .any(|e| e.contains("pg-east proven stopped: its guard lease expired")),
        "promoted on proof, not on unreachability: {events:#?}"
    );
    assert!(
        west_guard.status().fenced != Some(true),
        "pg-west's guard keeps its node writable: the record names it"
    );
    drop(west_guard);
    first.shutdown().await;
    assert_eq!(
        promotions(&audit_records(&first_log)),
        1,
        "exactly one promotion"
    );

    // A new controller, from the same configuration (which still names
    // pg-east as the initial primary), must read the epoch back and adopt
    // pg-west, not promote again.
    // Its own DNS serves the writer name: it must never name the fenced,
    // dead pg-east that the configuration still calls the primary.
    let writer_dns = EmbeddedDns::bind(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        config.topology(),
        &policy,
        EmbeddedConfig::new(ZONE),
    )
    .await
    .expect("embedded DNS for the writer name");
    writer_dns
        .router()
        .serve_writer_name(
            config.topology(),
            &WriterNameConfig::new(WRITER_NAME)
                .node("pg-east", [PG_EAST_IP.parse().expect("literal")])
                .node("pg-west", [PG_WEST_IP.parse().expect("literal")]),
        )
        .expect("writer name served");
    let second = RuntimeBuilder::new(config)
        .router(Arc::new(dns.router()))
        .writer_name(Arc::new(writer_dns.router()))
        .database(pg())
        .audit_log(&second_log)
        .probe(EAST, VantageId(0), http_probe(&regions.east, &policy))
        .probe(WEST, VantageId(0), http_probe(&regions.west, &policy))
        .start()
        .await
        .expect("second runtime starts");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let answer = dig_writer(writer_dns.local_addr()).await;
        if answer == [PG_WEST_IP] {
            break;
        }
        assert!(
            answer.is_empty(),
            "after a restart the writer name named {answer:?} before the adopted writer pg-west"
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "the writer name never named the adopted writer pg-west"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let adopted = wait_status(
        &second.handle(),
        Duration::from_secs(15),
        "pg-west adopted",
        |s| {
            s.controller.writer == Some(NodeId(1))
                && s.controller.regions[EAST.index()].health == Health::Down
        },
    )
    .await;
    assert_eq!(
        adopted.controller.epoch, epoch,
        "the epoch is read back, not reinvented"
    );
    // Nothing must happen here, so give a wrong decision ample time: six
    // more probe rounds, counted as requests us-west's API served (not a
    // wall-clock window, which a loaded machine could shrink to nothing;
    // the runtime publishes its status only when something changes, so its
    // counters are no clock either).
    let served = regions.west.requests();
    let deadline = tokio::time::Instant::now() + policy.interval * 6 + Duration::from_secs(60);
    while regions.west.requests() < served + 6 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "us-west was probed {} times in {:?}",
            regions.west.requests() - served,
            policy.interval * 6 + Duration::from_secs(60)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = second.handle().status();
    assert_eq!(status.controller.writer, Some(NodeId(1)));
    assert_eq!(status.controller.epoch, epoch);
    second.shutdown().await;
    let records = audit_records(&second_log);
    assert_eq!(promotions(&records), 0, "no second promotion: {records:#?}");
    assert_eq!(dig_writer(writer_dns.local_addr()).await, [PG_WEST_IP]);
    // Every move of the writer name, as audited: only to pg-west.
    let moves: Vec<&serde_json::Value> = records
        .iter()
        .filter(|r| r["record"] == "writer_name")
        .map(|r| &r["node"])
        .collect();
    assert_eq!(moves, [&serde_json::json!("pg-west")], "{records:#?}");
    writer_dns.shutdown().await;
    dns.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_switchover_through_the_runtime_loses_no_acknowledged_row() {
    use failover::decision::{Command, EventKind};
    use failover_testkit::postgres::writer::{create_rows_table, missing_rows, RowWriter};

    let cluster = tokio::task::spawn_blocking(|| PgTestCluster::builder().replicas(1).start())
        .await
        .expect("cluster task")
        .expect("PostgreSQL primary + replica start");
    let nodes = cluster.nodes();
    let mut policy = fast_policy();
    policy.auto_promote = true;
    policy.max_rpo = Some(MaxRpo::bytes(64 << 20));
    let config = Config::new(topology_with(true), policy.clone()).expect("valid config");
    let pg = PgCluster::new()
        .with_node(NodeId(0), "pg-east", &nodes[0].admin_dsn())
        .expect("east DSN parses")
        .with_node(NodeId(1), "pg-west", &nodes[1].admin_dsn())
        .expect("west DSN parses");
    // The writer's DNS name, on the embedded server: pg-east's address
    // until the promotion completed, then pg-west's.
    let dns = EmbeddedDns::bind(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        config.topology(),
        &policy,
        EmbeddedConfig::new(ZONE),
    )
    .await
    .expect("embedded DNS");
    let writer_name = WriterNameConfig::new(WRITER_NAME)
        .node("pg-east", [PG_EAST_IP.parse().expect("literal")])
        .node("pg-west", [PG_WEST_IP.parse().expect("literal")]);
    let writer_dns = dns.router();
    writer_dns
        .serve_writer_name(config.topology(), &writer_name)
        .expect("writer name served");
    let regions = TwoRegions::start();
    let runtime = regions
        .run(
            RuntimeBuilder::new(config)
                .database(Arc::new(pg))
                .writer_name(Arc::new(writer_dns)),
        )
        .await;
    let handle = runtime.handle();
    let mut events = handle.subscribe_events();
    // A fresh deployment: the runtime points it at the configured primary.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while dig_writer(dns.local_addr()).await != [PG_EAST_IP] {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the writer name never named the configured primary pg-east"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let watcher = tokio::spawn(watch_writer_name(
        dns.local_addr(),
        handle.subscribe_events(),
    ));

    create_rows_table(&nodes[0].app_dsn())
        .await
        .expect("rows table");
    let writer = RowWriter::start(nodes[0].app_dsn());
    writer
        .wait_acked(200, Duration::from_secs(30))
        .await
        .expect("writes flow");

    // On a loaded machine one observation of pg-west can time out (150 ms),
    // and a switchover to a node not seen as a replica is refused: then the
    // operator tries again, as this test does (bounded).
    let mut replies = handle.subscribe_events();
    let tries = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        handle
            .command(Command::Switchover { to: NodeId(1) })
            .await
            .expect("runtime takes commands");
        let reply = loop {
            let event = tokio::time::timeout_at(tries, replies.recv())
                .await
                .expect("the switchover is started or refused within 30 s")
                .expect("events flow");
            match event.kind {
                EventKind::FencingRequested { .. } => break None,
                EventKind::CommandRefused { reason } => break Some(reason),
                _ => {}
            }
        };
        match reply {
            None => break,
            Some(reason) => {
                assert!(
                    reason.contains("not seen as a replica"),
                    "switchover refused: {reason}"
                );
                tokio::time::sleep(policy.interval).await;
            }
        }
    }
    let switched = wait_status(
        &handle,
        Duration::from_secs(30),
        "pg-west is the writer",
        |s| s.controller.writer == Some(NodeId(1)),
    )
    .await;
    // Fencing cut the writer off the old primary; everything it was told
    // was committed must be on the new one.
    let (acked, ended) = writer.finish().await;
    assert!(
        ended.is_some(),
        "the fence stopped the writer on the old primary"
    );
    assert!(acked.len() >= 200);
    let lost = missing_rows(&nodes[1].app_dsn(), &acked)
        .await
        .expect("read the new primary");
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged rows lost",
        lost.len(),
        acked.len()
    );
    assert!(switched.controller.epoch.0 >= 1);

    let mut fenced_before_promoted = (false, false);
    let mut seen = Vec::new();
    while let Ok(event) = events.try_recv() {
        seen.push(format!("{:?}", event.kind));
        match event.kind {
            EventKind::FencingRequested { .. } => fenced_before_promoted.0 = true,
            // Not `Promoted`: when the observer sees pg-west as primary
            // before the promotion call returns, the writer is adopted
            // (`WriterMoved`) and `Promoted` may come after this loop.
            EventKind::PromotionRequested { .. } => {
                fenced_before_promoted.1 = fenced_before_promoted.0
            }
            _ => {}
        }
    }
    assert!(
        fenced_before_promoted.1,
        "the old primary was fenced before the promotion: {seen:#?} {:#?}",
        handle.status().recent_events
    );
    let moved = tokio::time::timeout(Duration::from_secs(30), watcher)
        .await
        .expect("the writer name moves within 30 s of the switchover")
        .expect("watcher");
    eprintln!("writer name: {moved}");
    // Traffic stays where it was: a planned database switchover moves the writer, not the regions.
    assert_eq!(
        handle.status().controller.regions[EAST.index()].health,
        Health::Up
    );
    runtime.shutdown().await;
    dns.shutdown().await;
}

const WRITER_NAME: &str = "writer.db.failover.test.";
const PG_EAST_IP: &str = "127.0.1.10";
const PG_WEST_IP: &str = "127.0.1.20";

async fn dig_writer(server: SocketAddr) -> Vec<String> {
    tokio::task::spawn_blocking(move || failover_testkit::bind::dig(server, WRITER_NAME, "A"))
        .await
        .expect("dig task")
        .expect("dig runs")
}

/// Queries the writer name with `dig` every 20 ms: pg-east's address until
/// it changes; when it first answers pg-west's, the old writer's fence and
/// the completed promotion (`Promoted`, or `WriterMoved` when the observer
/// saw pg-west primary at its new epoch first) must already have been
/// published. Any other answer fails. Returns what it saw.
async fn watch_writer_name(
    server: SocketAddr,
    mut events: tokio::sync::broadcast::Receiver<failover::decision::Event>,
) -> String {
    use failover::decision::EventKind;
    let (mut fenced, mut promoted) = (false, false);
    let mut queries = 0u32;
    loop {
        let answer = dig_writer(server).await;
        queries += 1;
        // Events published before this answer was read.
        while let Ok(event) = events.try_recv() {
            match event.kind {
                EventKind::FencingRequested { .. } => fenced = true,
                EventKind::Promoted {
                    node: NodeId(1), ..
                }
                | EventKind::WriterMoved { to: NodeId(1), .. } => promoted = true,
                _ => {}
            }
        }
        if answer == [PG_WEST_IP] {
            assert!(
                fenced && promoted,
                "the writer name moved to pg-west before {}",
                if fenced {
                    "its promotion completed"
                } else {
                    "pg-east was fenced"
                }
            );
            return format!("pg-east's address for {queries} queries, then pg-west's after the fence and the promotion");
        }
        assert_eq!(
            answer,
            [PG_EAST_IP],
            "the writer name answers only the writer"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Residency on real servers: us-east and us-west are in different
/// residency groups. The writer's region dies whole, as above, and its
/// guard lease expires (the proof that would let pg-west be promoted), but
/// pg-west is in another group: the promotion is refused, the event names
/// the rule, nothing is promoted and pg-west stays a replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cross_group_promotion_is_refused_on_real_servers() {
    let cluster = tokio::task::spawn_blocking(|| PgTestCluster::builder().replicas(1).start())
        .await
        .expect("cluster task")
        .expect("PostgreSQL primary + replica start");
    let mut policy = fast_policy();
    policy.auto_promote = true;
    policy.max_rpo = Some(MaxRpo::bytes(64 << 20));
    policy.guard_ttl = Some(GUARD_TTL);
    policy.proof_timeout = Duration::from_secs(10);
    let mut builder = failover::decision::Topology::builder(SERVICE);
    for (region, group) in topology_with(true)
        .regions()
        .iter()
        .zip(["america-east", "america-west"])
    {
        let mut region = region.clone();
        region.residency = Some(group.to_owned());
        builder = builder.region(region);
    }
    for node in topology_with(true).nodes() {
        builder = builder.node(node.clone());
    }
    let config = Config::new(
        builder.vantage("local").build().expect("valid topology"),
        policy,
    )
    .expect("valid config");
    let pg = Arc::new(
        PgCluster::new()
            .with_node(NodeId(0), "pg-east", &cluster.nodes()[0].admin_dsn())
            .expect("east DSN parses")
            .with_node(NodeId(1), "pg-west", &cluster.nodes()[1].admin_dsn())
            .expect("west DSN parses"),
    );
    let regions = TwoRegions::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("audit.jsonl");
    let runtime = regions
        .run(
            RuntimeBuilder::new(config.clone())
                .database(pg)
                .audit_log(&log)
                .guard_leases(
                    LeaseServerConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)), LEASE_SECRET)
                        .topology(config.topology()),
                ),
        )
        .await;
    let leases = runtime.lease_server().expect("lease server runs").clone();
    let east_guard = start_guard(&leases.url(), 0, "pg-east", &cluster.nodes()[0].admin_dsn());
    let west_guard = start_guard(&leases.url(), 1, "pg-west", &cluster.nodes()[1].admin_dsn());
    let handle = runtime.handle();
    wait_status(
        &handle,
        Duration::from_secs(15),
        "both guard leases held",
        |_| leases.is_held(NodeId(0)) && leases.is_held(NodeId(1)),
    )
    .await;

    drop(east_guard);
    regions.east.stop().await;
    cluster.kill(0).expect("kill -9 the primary");
    let seen = wait_status(
        &handle,
        Duration::from_secs(30),
        "the residency refusal, after pg-east's guard lease expired",
        |s| {
            let has = |text: &str| s.recent_events.iter().any(|e| e.contains(text));
            has("guard lease of pg-east EXPIRED") && has("refused by the residency rule")
        },
    )
    .await;
    let refusal = seen
        .recent_events
        .iter()
        .find(|e| e.contains("refused by the residency rule"))
        .expect("just seen");
    assert!(
        refusal.contains("pg-west")
            && refusal.contains("group america-east")
            && refusal.contains("region.residency"),
        "{refusal}"
    );
    // The proof a promotion needs is there (the lease expired), and nothing
    // moved: without residency pg-east would have been fenced as soon as
    // its region was down, and pg-west promoted once the lease expired.
    let after = handle.status();
    assert!(
        !after.recent_events.iter().any(|e| e.contains("fence")),
        "{:#?}",
        after.recent_events
    );
    assert_eq!(after.controller.writer, Some(NodeId(0)));
    assert_eq!(
        after.controller.regions[WEST.index()].health,
        Health::Up,
        "pg-west's region is healthy: only residency refused it"
    );
    let in_recovery = tokio::task::spawn_blocking(move || {
        let answer = cluster.psql(1, "SELECT pg_is_in_recovery()");
        drop(cluster);
        answer
    })
    .await
    .expect("psql task")
    .expect("psql on pg-west");
    assert_eq!(in_recovery.trim(), "t", "pg-west is still a replica");
    drop(west_guard);
    runtime.shutdown().await;
    let records = audit_records(&log);
    assert_eq!(promotions(&records), 0, "nothing promoted");
    assert!(
        !records
            .iter()
            .any(|r| r["record"] == "action" && r["type"] == "fence"),
        "nothing fenced"
    );
}
