//! One writer, always (S1), with a live primary cut off: the controller loses
//! its path to pg-east (and pg-east's guard loses its path to the
//! controller's lease server), while a client *inside* us-east keeps writing
//! to pg-east directly. This is the split brain of issue 9: pg-east is
//! unreachable, not stopped. The runtime must promote pg-west only once
//! pg-east is proven stopped — here by its guard lease expiring, its guard
//! having fenced it — so after pg-west's first commit, pg-east acknowledges
//! nothing.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use failover::decision::{Config, EventKind, MaxRpo, NodeId, StopProof, SyncSet, Synchronous};
use failover::lease::LeaseServerConfig;
use failover::pg::PgCluster;
use failover::RuntimeBuilder;
use failover_testkit::postgres::writer::{connect, create_rows_table, missing_rows};
use failover_testkit::postgres::{PgTestCluster, PgTestNode};
use failover_testkit::proxy::TcpProxy;

/// Inserts rows into `dsn` until `stop`, reconnecting after errors, and
/// records when each commit was acknowledged.
fn writer(
    dsn: String,
    stop: Arc<AtomicBool>,
    acks: Arc<Mutex<Vec<(Instant, i64)>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut n: i64 = 0;
        let limit = Instant::now() + Duration::from_secs(120);
        while !stop.load(Ordering::SeqCst) && Instant::now() < limit {
            let Ok(client) = connect(&dsn).await else {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            while !stop.load(Ordering::SeqCst) && Instant::now() < limit {
                n += 1;
                match client
                    .execute("INSERT INTO rows (n) VALUES ($1)", &[&n])
                    .await
                {
                    Ok(_) => acks.lock().unwrap().push((Instant::now(), n)),
                    Err(_) => break,
                }
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_live_primary_acknowledges_nothing_after_the_new_primary_commits() {
    partition(Path::Refused, Proof::GuardLease).await;
}

/// The same over a silent path: the fence hangs until its timeout, which must
/// not hold up the promotion once the guard lease has expired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silently_partitioned_primary_acknowledges_nothing_after_the_new_primary_commits() {
    partition(Path::Silent, Proof::GuardLease).await;
}

/// Issue 17's settings: synchronous replication (pg-east requires pg-west)
/// and 200 ms probes with fall 2. pg-west is promoted on the synchronous
/// proof, without waiting for pg-east's guard lease, while pg-east is alive
/// and its in-region client keeps committing: from pg-west's promotion on,
/// pg-east's commits wait for a standby that no longer follows it, until
/// its guard fences it. So it acknowledges nothing after pg-west's first
/// commit, and pg-west has every commit pg-east acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_synchronous_replication_a_partitioned_primary_acknowledges_nothing_after_the_new_primary_commits(
) {
    partition(Path::Refused, Proof::SynchronousStandby).await;
}

/// What proves pg-east stopped in a partition run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Proof {
    /// Its guard lease expired (asynchronous replication).
    GuardLease,
    /// pg-west is the synchronous standby it requires.
    SynchronousStandby,
}

/// How the controller's path to pg-east fails.
#[derive(Clone, Copy, Debug)]
enum Path {
    /// Connections are refused: the fence fails within milliseconds.
    Refused,
    /// A black hole: the fence hangs until its timeout.
    Silent,
}

async fn partition(path: Path, proof: Proof) {
    let sync = proof == Proof::SynchronousStandby;
    let cluster = start_cluster().await;
    let (east, west) = (&cluster.nodes()[0], &cluster.nodes()[1]);
    let mut policy = partition_policy();
    if sync {
        // Sub-second detection (300 ms × fall 2), with the probe timeout of
        // the other partition tests: a loaded 2-core CI machine runs these
        // beside the whole suite.
        policy.synchronous = Synchronous::On;
        policy.fall = 2;
    }
    let config = Config::new(topology_with(true), policy.clone()).expect("valid config");

    // The controller reaches pg-east only through a path we can cut.
    let (db_path, regions, runtime) = runtime_with_a_path_to_east(&config, east, west).await;
    let leases = runtime.lease_server().expect("lease server").clone();
    // pg-east's guard sits in us-east: its path to the lease server is cut
    // with the rest of the region.
    let lease_path = TcpProxy::start(leases.local_addr())
        .await
        .expect("proxy to the lease server");
    let east_guard = start_guard(
        &format!("http://{}", lease_path.addr()),
        0,
        "pg-east",
        &east.admin_dsn(),
    );
    let west_guard = start_guard(&leases.url(), 1, "pg-west", &west.admin_dsn());
    wait_status(
        &runtime.handle(),
        Duration::from_secs(15),
        "both guard leases held",
        |_| leases.is_held(NodeId(0)) && leases.is_held(NodeId(1)),
    )
    .await;
    if sync {
        wait_status(
            &runtime.handle(),
            Duration::from_secs(60),
            "pg-west recorded as pg-east's synchronous standby",
            |s| s.controller.synchronous == SyncSet::of(NodeId(1)),
        )
        .await;
    }

    wait_steady(&runtime.handle()).await;
    let workload = Workload::start(east.app_dsn(), west.app_dsn()).await;

    // The partition: us-east is cut off from the controller (its API, its
    // database, its guard's lease path); inside us-east all still runs.
    // The controller's path to pg-east fails as `path` says (refused: its
    // fence fails within milliseconds, as in the report); the
    // guard's path to the lease server goes silent.
    let mut decisions = runtime.handle().subscribe_events();
    let cut_at = Instant::now();
    match path {
        Path::Refused => db_path.refuse(),
        Path::Silent => db_path.cut(),
    }
    lease_path.cut();
    regions.east.stop().await;

    wait_status(
        &runtime.handle(),
        Duration::from_secs(60),
        "pg-west promoted",
        |s| s.controller.writer == Some(NodeId(1)),
    )
    .await;
    let events: Vec<String> = runtime
        .handle()
        .status()
        .recent_events
        .into_iter()
        .collect();
    let acked = workload
        .finish(cut_at, &format!("{path:?} path, {proof:?}"), &events)
        .await;
    let mut proofs = Vec::new();
    while let Ok(event) = decisions.try_recv() {
        if let EventKind::StopProven {
            node: NodeId(0),
            proof,
        } = event.kind
        {
            proofs.push(proof);
        }
    }
    let expected = match proof {
        Proof::GuardLease => StopProof::GuardLeaseExpired,
        Proof::SynchronousStandby => StopProof::SynchronousStandby,
    };
    assert_eq!(proofs.first(), Some(&expected), "{events:#?}");
    if sync {
        // S2: no acknowledged commit is lost.
        let lost = missing_rows(&west.app_dsn(), &acked)
            .await
            .expect("read pg-west");
        assert!(
            lost.is_empty(),
            "acknowledged on pg-east, missing on pg-west: {lost:?}"
        );
    }
    drop(east_guard);
    drop(west_guard);
    runtime.shutdown().await;
}

/// pg-east + its replica pg-west, named as in the topology (so
/// `synchronous_standby_names` names pg-west), with the rows table.
async fn start_cluster() -> PgTestCluster {
    let cluster = tokio::task::spawn_blocking(|| {
        PgTestCluster::builder()
            .replicas(1)
            .names(["pg-east", "pg-west"])
            .start()
    })
    .await
    .expect("cluster task")
    .expect("PostgreSQL primary + replica start");
    create_rows_table(&cluster.nodes()[0].app_dsn())
        .await
        .expect("rows table");
    cluster
}

/// Automatic promotion with guards (2 s TTL) and a 64 MiB byte limit.
fn partition_policy() -> failover::decision::Policy {
    let mut policy = fast_policy();
    policy.auto_promote = true;
    policy.max_rpo = Some(MaxRpo::bytes(64 << 20));
    policy.guard_ttl = Some(GUARD_TTL);
    policy.proof_timeout = Duration::from_secs(10);
    policy
}

/// Synchronous replication (`on`) with sub-second detection: fall 2.
fn synchronous_policy() -> failover::decision::Policy {
    let mut policy = partition_policy();
    policy.synchronous = Synchronous::On;
    policy.fall = 2;
    policy
}

/// [`runtime_with_a_path_to_east`] under [`synchronous_policy`], with both
/// nodes' guards, once both leases are held and pg-west is recorded as
/// pg-east's synchronous standby.
async fn synchronous_runtime(
    east: &PgTestNode,
    west: &PgTestNode,
) -> (
    TcpProxy,
    TwoRegions,
    failover::Runtime,
    (failover::pg::NodeGuard, failover::pg::NodeGuard),
) {
    let config = Config::new(topology_with(true), synchronous_policy()).expect("valid config");
    let (db_path, regions, runtime) = runtime_with_a_path_to_east(&config, east, west).await;
    let leases = runtime.lease_server().expect("lease server").clone();
    let guards = (
        start_guard(&leases.url(), 0, "pg-east", &east.admin_dsn()),
        start_guard(&leases.url(), 1, "pg-west", &west.admin_dsn()),
    );
    wait_status(
        &runtime.handle(),
        Duration::from_secs(60),
        "guard leases held and pg-west recorded as pg-east's synchronous standby",
        |s| {
            leases.is_held(NodeId(0))
                && leases.is_held(NodeId(1))
                && s.controller.synchronous == SyncSet::of(NodeId(1))
        },
    )
    .await;
    (db_path, regions, runtime, guards)
}

/// A single-controller runtime with a lease server, whose only path to
/// pg-east is a proxy the test can cut.
async fn runtime_with_a_path_to_east(
    config: &Config,
    east: &PgTestNode,
    west: &PgTestNode,
) -> (TcpProxy, TwoRegions, failover::Runtime) {
    let db_path = TcpProxy::start(SocketAddr::from(([127, 0, 0, 1], east.port)))
        .await
        .expect("proxy to pg-east");
    let east_via_path = east.admin_dsn().replace(
        &format!("port={}", east.port),
        &format!("port={}", db_path.addr().port()),
    );
    let pg = PgCluster::new()
        .with_node(NodeId(0), "pg-east", &east_via_path)
        .expect("east DSN parses")
        .with_node(NodeId(1), "pg-west", &west.admin_dsn())
        .expect("west DSN parses");
    let regions = TwoRegions::start();
    let runtime = regions
        .run(
            RuntimeBuilder::new(config.clone())
                .database(Arc::new(pg))
                .guard_leases(
                    LeaseServerConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)), LEASE_SECRET)
                        .topology(config.topology()),
                ),
        )
        .await;
    (db_path, regions, runtime)
}

/// The same partition with three controllers on etcd (one per vantage):
/// every controller reaches pg-east only through the path that is cut, and
/// pg-east's guard reaches etcd only through paths cut with it. pg-west is
/// promoted by the leader once pg-east's guard lease has expired at etcd —
/// and after pg-west's first commit pg-east acknowledges nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_three_controllers_on_etcd_a_partitioned_primary_acknowledges_nothing_after_the_new_primary_commits(
) {
    use common::fleet::*;
    let (etcd, cluster) = tokio::join!(
        tokio::task::spawn_blocking(|| failover_testkit::etcd::EtcdCluster::start(3)),
        tokio::task::spawn_blocking(|| PgTestCluster::builder().replicas(1).start()),
    );
    let etcd = etcd.expect("etcd task").expect("etcd cluster starts");
    let cluster = cluster
        .expect("cluster task")
        .expect("PostgreSQL primary + replica start");
    let (east, west) = (&cluster.nodes()[0], &cluster.nodes()[1]);
    create_rows_table(&east.app_dsn())
        .await
        .expect("rows table");
    let endpoints = etcd.endpoints();

    let db_path = TcpProxy::start(SocketAddr::from(([127, 0, 0, 1], east.port)))
        .await
        .expect("proxy to pg-east");
    let east_via_path = east.admin_dsn().replace(
        &format!("port={}", east.port),
        &format!("port={}", db_path.addr().port()),
    );
    // pg-east's guard reaches every etcd member through a path of us-east.
    let mut guard_paths = Vec::new();
    for i in 0..etcd.len() {
        guard_paths.push(
            TcpProxy::start(etcd.client_addr(i))
                .await
                .expect("proxy to an etcd member"),
        );
    }
    let guard_endpoints: Vec<String> = guard_paths
        .iter()
        .map(|p| format!("http://{}", p.addr()))
        .collect();
    let regions = TwoRegions::start();
    let east_guard = guard(&guard_endpoints, 0, "pg-east", &east.admin_dsn()).await;
    let west_guard = guard(&endpoints, 1, "pg-west", &west.admin_dsn()).await;
    let mut controllers = Vec::new();
    for i in 0..VANTAGES.len() {
        controllers.push(
            start_controller(
                i,
                &endpoints,
                &east_via_path,
                &west.admin_dsn(),
                [regions.east.addr(), regions.west.addr()],
            )
            .await,
        );
    }
    let leader = one_leader(&controllers, Duration::from_secs(20)).await;
    wait_status(
        &controllers[leader].runtime.handle(),
        Duration::from_secs(15),
        "both guard leases held",
        |s| {
            ["pg-east", "pg-west"].iter().all(|n| {
                s.recent_events
                    .iter()
                    .any(|e| e == &format!("guard lease of {n} held"))
            })
        },
    )
    .await;
    for c in &controllers {
        wait_steady(&c.runtime.handle()).await;
    }

    let workload = Workload::start(east.app_dsn(), west.app_dsn()).await;
    let cut_at = Instant::now();
    db_path.refuse();
    for path in &guard_paths {
        path.cut();
    }
    regions.east.stop().await;

    let mut events = Vec::new();
    for c in &controllers {
        let status = wait_status(
            &c.runtime.handle(),
            Duration::from_secs(60),
            "pg-west promoted",
            |s| s.controller.writer == Some(NodeId(1)),
        )
        .await;
        if status.controller.leader.is_some() {
            events = status.recent_events.into_iter().collect();
        }
    }
    workload
        .finish(cut_at, "three controllers on etcd", &events)
        .await;
    assert!(
        events
            .iter()
            .any(|e| e.contains("pg-east proven stopped: its guard lease expired")),
        "{events:#?}"
    );
    drop(east_guard);
    drop(west_guard);
    for c in controllers {
        c.runtime.shutdown().await;
    }
}

/// Steady state before a partition: the controller behind `handle` has
/// seen pg-east as a primary and pg-west's lag behind it. (A controller that
/// never saw the writer's position cannot check a byte limit and refuses to
/// promote, by design; on a loaded machine the first observations can all
/// time out.)
async fn wait_steady(handle: &failover::RuntimeHandle) {
    wait_status(
        handle,
        Duration::from_secs(30),
        "pg-east seen as primary and pg-west's lag known",
        |s| {
            matches!(
                s.nodes.first().map(|n| &n.role),
                Some(failover::NodeRole::Primary { .. })
            ) && s.nodes.get(1).is_some_and(|n| n.lag_bytes.is_some())
        },
    )
    .await;
}

/// The two clients of a partition test: one inside us-east writing to
/// pg-east directly throughout, recording every acknowledged commit; one
/// committing on pg-west as the application as soon as it can.
struct Workload {
    stop: Arc<AtomicBool>,
    east_acks: Arc<Mutex<Vec<(Instant, i64)>>>,
    west_first: Arc<Mutex<Option<Instant>>>,
    east_writer: tokio::task::JoinHandle<()>,
    watcher: tokio::task::JoinHandle<()>,
}

impl Workload {
    /// Starts both clients and waits until pg-east has acknowledged 50 commits.
    async fn start(east_dsn: String, west_dsn: String) -> Workload {
        let stop = Arc::new(AtomicBool::new(false));
        let east_acks = Arc::new(Mutex::new(Vec::new()));
        let east_writer = writer(east_dsn, Arc::clone(&stop), Arc::clone(&east_acks));
        let west_first = Arc::new(Mutex::new(None::<Instant>));
        let watcher = {
            let first = Arc::clone(&west_first);
            let stop = Arc::clone(&stop);
            tokio::spawn(async move {
                let limit = Instant::now() + Duration::from_secs(120);
                let mut n: i64 = -1;
                while !stop.load(Ordering::SeqCst) && Instant::now() < limit {
                    if let Ok(client) = connect(&west_dsn).await {
                        n -= 1;
                        if client
                            .execute("INSERT INTO rows (n) VALUES ($1)", &[&n])
                            .await
                            .is_ok()
                        {
                            *first.lock().unwrap() = Some(Instant::now());
                            return;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
        };
        let warmup = Instant::now() + Duration::from_secs(20);
        while east_acks.lock().unwrap().len() < 50 {
            assert!(
                Instant::now() < warmup,
                "the in-region client never got going"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Workload {
            stop,
            east_acks,
            west_first,
            east_writer,
            watcher,
        }
    }

    /// Waits for pg-west's first application commit, keeps the in-region
    /// client going a second longer, stops both, and checks S1: after
    /// pg-west's first commit pg-east acknowledged nothing.
    /// Returns the ids of the rows pg-east acknowledged.
    async fn finish(self, cut_at: Instant, what: &str, events: &[String]) -> Vec<i64> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.west_first.lock().unwrap().is_none() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        self.stop.store(true, Ordering::SeqCst);
        self.east_writer.await.expect("east writer task");
        self.watcher.await.expect("watcher task");
        let first_west = self
            .west_first
            .lock()
            .unwrap()
            .expect("pg-west took an application commit");
        let acked = self.east_acks.lock().unwrap().clone();
        let acks: Vec<Instant> = acked.iter().map(|(t, _)| *t).collect();
        let after_cut = acks.iter().filter(|t| **t > cut_at).count();
        let last_east = acks
            .iter()
            .max()
            .copied()
            .expect("pg-east acknowledged writes");
        println!(
            "{what}: pg-east acknowledged {after_cut} commits after the cut, the last {:?} \
             after it; pg-west's first commit {:?} after the cut",
            last_east.saturating_duration_since(cut_at),
            first_west.saturating_duration_since(cut_at),
        );
        assert!(
            after_cut > 0,
            "the partitioned primary was alive and writing: the test means something"
        );
        let overlap = acks.iter().filter(|t| **t >= first_west).count();
        assert_eq!(
            overlap, 0,
            "pg-east acknowledged {overlap} commits after pg-west's first: two writers; {events:#?}"
        );
        acked.into_iter().map(|(_, n)| n).collect()
    }
}

/// The converse of the partitions above, at issue 17's settings: only the
/// controller's path to pg-east is cut (a loaded or cut-off controller),
/// while pg-east lives, its region serves, and pg-west — its synchronous
/// standby — keeps receiving its WAL. pg-west's stream vouches for pg-east
/// (`DatabaseDownVetoed`): nothing is fenced or promoted, and pg-east keeps
/// acknowledging commits. Then pg-east is killed: its stream ends, and
/// pg-west is promoted on the synchronous proof with no acknowledged commit
/// lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_synchronous_replication_a_controller_cut_off_from_a_live_writer_promotes_only_once_it_dies(
) {
    let cluster = start_cluster().await;
    let (east, west) = (&cluster.nodes()[0], &cluster.nodes()[1]);
    let (db_path, _regions, runtime, guards) = synchronous_runtime(east, west).await;

    let stop = Arc::new(AtomicBool::new(false));
    let acks = Arc::new(Mutex::new(Vec::new()));
    let east_writer = writer(east.app_dsn(), Arc::clone(&stop), Arc::clone(&acks));
    let mut events = runtime.handle().subscribe_events();
    db_path.cut();

    // The controller misses pg-east `fall` times; pg-west's stream vetoes.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = tokio::time::timeout(left, events.recv())
            .await
            .unwrap_or_else(|_| panic!("no DatabaseDownVetoed within 30 s: {seen:#?}"))
            .expect("event stream");
        let vetoed = matches!(
            event.kind,
            EventKind::DatabaseDownVetoed {
                node: NodeId(0),
                witness: NodeId(1),
                ..
            }
        );
        seen.push(event.kind);
        if vetoed {
            break;
        }
    }
    // While the veto holds, pg-east stays the writer and commits go on:
    // 200 more acknowledged commits, each waiting for pg-west.
    let before = acks.lock().unwrap().len();
    let deadline = Instant::now() + Duration::from_secs(30);
    while acks.lock().unwrap().len() < before + 200 {
        assert!(
            Instant::now() < deadline,
            "pg-east stopped acknowledging commits while vouched for"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    while let Ok(event) = events.try_recv() {
        seen.push(event.kind);
    }
    let moved = seen.iter().find(|e| {
        matches!(
            e,
            EventKind::DatabaseDown {
                node: NodeId(0),
                ..
            } | EventKind::StopProven { .. }
                | EventKind::WriterClaimRequested { .. }
        )
    });
    assert!(
        moved.is_none(),
        "the writer was moved while alive: {moved:?} in {seen:#?}"
    );
    assert_eq!(runtime.handle().status().controller.writer, Some(NodeId(0)));

    // Now pg-east dies: pg-west's stream ends and the proof follows.
    let killed = Instant::now();
    cluster.kill(0).expect("kill -9 pg-east");
    let status = wait_status(
        &runtime.handle(),
        Duration::from_secs(30),
        "pg-west promoted",
        |s| s.controller.writer == Some(NodeId(1)),
    )
    .await;
    println!(
        "vetoed while alive; pg-west promoted {:?} after pg-east was killed",
        killed.elapsed()
    );
    for e in &status.recent_events {
        println!("  {e}");
    }
    stop.store(true, Ordering::SeqCst);
    east_writer.await.expect("east writer task");
    while let Ok(event) = events.try_recv() {
        seen.push(event.kind);
    }
    assert!(
        seen.iter().any(|e| matches!(
            e,
            EventKind::StopProven {
                node: NodeId(0),
                proof: StopProof::SynchronousStandby
            }
        )),
        "{seen:#?}; {:#?}",
        status.recent_events
    );
    let acked: Vec<i64> = acks.lock().unwrap().iter().map(|(_, n)| *n).collect();
    let lost = missing_rows(&west.app_dsn(), &acked)
        .await
        .expect("read pg-west");
    assert!(
        lost.is_empty(),
        "acknowledged on pg-east, missing on pg-west: {lost:?}"
    );
    drop(guards);
    runtime.shutdown().await;
}

/// A cut on the replication path alone: pg-west, pg-east's synchronous
/// standby, streams through a proxy that starts refusing, while the
/// controller still reaches both nodes. pg-west answers every observation
/// as a healthy replica on pg-east's timeline, so before the stall rule it
/// stayed the required standby and every commit waited for as long as the
/// cut lasted (the three-controller drills saw 7.95 s gaps, the whole cut).
/// Now pg-east's own report of how long its commits wait drops pg-west
/// (synchronous mode `on`, no other replica: the writer goes on
/// asynchronously), the waiting commits are released, nothing is fenced or
/// promoted, and once the path heals and pg-west has caught up it is
/// required again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_synchronous_replication_a_standby_cut_from_the_writer_alone_is_dropped_and_required_again(
) {
    let cluster = start_cluster().await;
    let (east, west) = (&cluster.nodes()[0], &cluster.nodes()[1]);
    let stream = TcpProxy::start(SocketAddr::from(([127, 0, 0, 1], east.port)))
        .await
        .expect("proxy for pg-west's stream");
    let conninfo = cluster
        .psql(1, "SHOW primary_conninfo")
        .expect("pg-west's primary_conninfo");
    let via_proxy = conninfo.trim().replace(
        &format!("port={}", east.port),
        &format!("port={}", stream.addr().port()),
    );
    assert_ne!(via_proxy, conninfo.trim(), "{conninfo}");
    cluster
        .psql(
            1,
            &format!(
                "ALTER SYSTEM SET primary_conninfo = '{}'",
                via_proxy.replace('\'', "''")
            ),
        )
        .expect("point pg-west's stream at the proxy");
    cluster
        .psql(1, "SELECT pg_reload_conf()")
        .expect("reload pg-west");
    let deadline = Instant::now() + Duration::from_secs(30);
    let port = stream.addr().port().to_string();
    while cluster
        .psql(
            1,
            "SELECT sender_port FROM pg_stat_wal_receiver WHERE status = 'streaming'",
        )
        .expect("pg_stat_wal_receiver")
        .trim()
        != port
    {
        assert!(
            Instant::now() < deadline,
            "pg-west never streamed through the proxy"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let policy = synchronous_policy();
    let threshold = policy.interval * policy.fall;
    let (_db_path, _regions, runtime, guards) = synchronous_runtime(east, west).await;

    let stop = Arc::new(AtomicBool::new(false));
    let acks = Arc::new(Mutex::new(Vec::new()));
    let east_writer = writer(east.app_dsn(), Arc::clone(&stop), Arc::clone(&acks));
    let deadline = Instant::now() + Duration::from_secs(30);
    while acks.lock().unwrap().len() < 100 {
        assert!(Instant::now() < deadline, "pg-east acknowledged no commits");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut events = runtime.handle().subscribe_events();
    let cut = Instant::now();
    stream.refuse();

    let status = wait_status(
        &runtime.handle(),
        Duration::from_secs(30),
        "pg-west dropped from the writer's synchronous standbys",
        |s| s.controller.synchronous == SyncSet::EMPTY,
    )
    .await;
    let dropped = cut.elapsed();
    // The waiting commits are released: 100 more acknowledged.
    let released = acks.lock().unwrap().len();
    let deadline = Instant::now() + Duration::from_secs(30);
    while acks.lock().unwrap().len() < released + 100 {
        assert!(
            Instant::now() < deadline,
            "pg-east's commits still wait after pg-west was dropped: {:#?}",
            runtime.handle().status().recent_events
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let gap = {
        let acks = acks.lock().unwrap();
        acks.windows(2)
            .filter(|w| w[1].0 > cut)
            .map(|w| w[1].0.saturating_duration_since(w[0].0))
            .max()
            .expect("acks after the cut")
    };
    let mut seen = Vec::new();
    while let Ok(event) = events.try_recv() {
        seen.push(event.kind);
    }
    assert!(
        seen.iter().any(|e| matches!(
            e,
            EventKind::SynchronousStalled {
                writer: NodeId(0),
                standby: NodeId(1),
                waited,
                ..
            } if *waited >= threshold
        )),
        "{seen:#?}"
    );
    let moved = seen.iter().find(|e| {
        matches!(
            e,
            EventKind::DatabaseDown { .. }
                | EventKind::StopProven { .. }
                | EventKind::WriterClaimRequested { .. }
                | EventKind::Promoted { .. }
        )
    });
    assert!(
        moved.is_none(),
        "the writer was moved: {moved:?} in {seen:#?}"
    );
    assert_eq!(status.controller.writer, Some(NodeId(0)));

    // The path heals: pg-west catches up and is required again.
    let healed = Instant::now();
    stream.heal();
    wait_status(
        &runtime.handle(),
        Duration::from_secs(30),
        "pg-west required again once it caught up",
        |s| s.controller.synchronous == SyncSet::of(NodeId(1)),
    )
    .await;
    println!(
        "stall rule (fall × interval = {threshold:?}): cut → pg-west dropped {dropped:?}; \
         longest write gap after the cut {gap:?}; heal → required again {:?}",
        healed.elapsed()
    );
    stop.store(true, Ordering::SeqCst);
    east_writer.await.expect("east writer task");
    drop(guards);
    runtime.shutdown().await;
}
