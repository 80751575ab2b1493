//! The guards' node endpoints (`/writer`, `/replica`, `/health`) over real
//! HTTP, on real PostgreSQL (testkit primary pg-east + streaming replica
//! pg-west), each guard leasing from the real lease server over loopback.
//!
//! Waits are for events (the guard's status channel) or for an endpoint's
//! answer to change, polled with a generous limit; no fixed sleeps.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use failover::decision::{Epoch, NodeId, PromoteRequest, RpoGate};
use failover::lease::{LeaseClient, LeaseServer, LeaseServerConfig};
use failover::pg::{GuardSettings, GuardStatus, NodeGuard, PgCluster};
use failover_testkit::postgres::PgTestCluster;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

const EAST: NodeId = NodeId(0);
const WEST: NodeId = NodeId(1);
const TTL: Duration = Duration::from_secs(2);
const SECRET: &str = "guard-http-test-secret-0123456789";
const LIMIT: Duration = Duration::from_secs(20);

struct Setup {
    cluster: Arc<PgTestCluster>,
    server: LeaseServer,
    east: NodeGuard,
    west: NodeGuard,
}

fn guard(server: &LeaseServer, node: NodeId, name: &str, dsn: &str) -> NodeGuard {
    let lease = LeaseClient::new(&server.url(), SECRET)
        .expect("client")
        .with_node(EAST, "pg-east")
        .expect("east name")
        .with_node(WEST, "pg-west")
        .expect("west name")
        .with_timeout(Duration::from_millis(300))
        .expect("timeout");
    let pg = PgCluster::new().with_node(node, name, dsn).expect("dsn");
    let settings = GuardSettings {
        http: Some("127.0.0.1:0".parse().expect("addr")),
        ..GuardSettings::for_ttl(TTL)
    };
    NodeGuard::start(node, name, settings, Arc::new(lease), Arc::new(pg)).expect("guard starts")
}

async fn setup() -> Setup {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
    let cluster = tokio::task::spawn_blocking(|| PgTestCluster::builder().replicas(1).start())
        .await
        .expect("join")
        .expect("cluster starts");
    let cluster = Arc::new(cluster);
    let (server, _events) = LeaseServer::start(
        LeaseServerConfig::new("127.0.0.1:0".parse().expect("addr"), SECRET)
            .node(EAST, "pg-east")
            .node(WEST, "pg-west"),
    )
    .await
    .expect("lease server starts");
    server.set_writer_at(EAST, Epoch(0));
    let east_dsn = cluster.node(0).expect("east").admin_dsn();
    let west_dsn = cluster.node(1).expect("west").admin_dsn();
    let east = guard(&server, EAST, "pg-east", &east_dsn);
    let west = guard(&server, WEST, "pg-west", &west_dsn);
    wait_status(
        &east.watch(),
        "pg-east: lease held, an unfenced primary that took writes as the writer",
        |s| s.lease_held && s.fenced == Some(false) && s.writer_epoch == Some(Epoch(0)),
    )
    .await;
    wait_status(&west.watch(), "pg-west: lease held, a replica", |s| {
        s.lease_held && s.replica
    })
    .await;
    Setup {
        cluster,
        server,
        east,
        west,
    }
}

async fn wait_status(
    rx: &watch::Receiver<GuardStatus>,
    what: &str,
    f: impl Fn(&GuardStatus) -> bool,
) -> GuardStatus {
    let mut rx = rx.clone();
    match tokio::time::timeout(LIMIT, async {
        rx.wait_for(|s| f(s)).await.map(|s| s.clone())
    })
    .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(_)) => panic!("guard stopped while waiting for: {what}"),
        Err(_) => panic!("not seen within {LIMIT:?}: {what}; last {:?}", *rx.borrow()),
    }
}

/// One real HTTP/1.1 request; the status code and the body.
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::time::timeout(LIMIT, tokio::net::TcpStream::connect(addr))
        .await
        .expect("connect in time")
        .expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.expect("send");
    let mut raw = Vec::new();
    tokio::time::timeout(LIMIT, stream.read_to_end(&mut raw))
        .await
        .expect("answer in time")
        .expect("read");
    let text = String::from_utf8(raw).expect("utf-8 answer");
    let code = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (code, body)
}

/// Asks until `f` holds for the answer (the state it waits for comes from
/// PostgreSQL, which has no channel to wait on).
async fn get_until(
    addr: SocketAddr,
    path: &str,
    what: &str,
    f: impl Fn(u16, &str) -> bool,
) -> (u16, String) {
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let (code, body) = get(addr, path).await;
        if f(code, &body) {
            return (code, body);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not seen within {LIMIT:?}: {what}; last answer {code} {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Setup {
    fn east_http(&self) -> SocketAddr {
        self.east.http_addr().expect("east serves")
    }

    fn west_http(&self) -> SocketAddr {
        self.west.http_addr().expect("west serves")
    }

    async fn psql(&self, node: usize, sql: &'static str) -> String {
        let c = Arc::clone(&self.cluster);
        tokio::task::spawn_blocking(move || c.psql(node, sql))
            .await
            .expect("join")
            .unwrap_or_else(|e| panic!("psql on node {node}: {e}"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_is_200_only_on_the_named_unfenced_primary_and_503_once_its_guard_fences_it() {
    let s = setup().await;
    let (code, body) = get(s.east_http(), "/writer").await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"reason\":\"writer at epoch 0\""), "{body}");
    assert!(body.contains("\"node\":\"pg-east\""), "{body}");

    let (code, body) = get(s.west_http(), "/writer").await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("\"reason\":\"replica\""), "{body}");

    // The record names pg-west at a new epoch: pg-east's guard fences it as
    // a stale primary, and from then on /writer refuses it.
    s.server.set_writer_at(WEST, Epoch(1));
    wait_status(&s.east.watch(), "pg-east fenced by its guard", |st| {
        st.fenced == Some(true)
    })
    .await;
    let (code, body) = get(s.east_http(), "/writer").await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("\"reason\":\"fenced\""), "{body}");
    // pg-west is named but not promoted: still no writer there.
    let (code, body) = get(s.west_http(), "/writer").await;
    assert_eq!(code, 503, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_turns_503_when_the_lease_is_lost() {
    let s = setup().await;
    assert_eq!(get(s.east_http(), "/writer").await.0, 200);
    // Cut off from the store: the guard fences before its lease can expire,
    // and /writer answers 503 once the lease it counts on has run out.
    s.server.close_listener();
    let (_, body) = get_until(s.east_http(), "/writer", "/writer 503", |code, _| {
        code == 503
    })
    .await;
    // The reason depends on where the guard's fence is when the check runs:
    // the lease run out, the node fenced, or the check's own session ended
    // by the fence terminating every session ("unreachable ... 57P01").
    assert!(
        body.contains("no lease")
            || body.contains("\"reason\":\"fenced\"")
            || body.contains("57P01"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_is_200_within_max_lag_and_503_beyond_it() {
    let s = setup().await;
    let west = s.west_http();
    let (code, body) = get(west, "/replica").await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = get(s.east_http(), "/replica").await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("not a replica"), "{body}");
    let (code, body) = get(west, "/replica?max_lag=1MB").await;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("max_lag"), "{body}");

    // Received but not replayed: pause replay on pg-west, write ~3 MB of WAL.
    s.psql(1, "SELECT pg_wal_replay_pause()").await;
    s.psql(
        0,
        "CREATE TABLE lag_fill AS SELECT g, repeat('x', 100) AS pad FROM generate_series(1, 20000) g",
    )
    .await;
    let (_, body) = get_until(
        west,
        "/replica?max_lag=1000",
        "lag beyond 1000 bytes",
        |code, _| code == 503,
    )
    .await;
    assert!(body.contains("\"reason\":\"lag "), "{body}");
    assert!(body.contains(" > 1000\""), "{body}");
    let (code, body) = get(west, "/replica?max_lag=1000000000").await;
    assert_eq!(code, 200, "a generous limit still takes it: {body}");
    assert!(body.contains("\"lag_bytes\":"), "{body}");

    s.psql(1, "SELECT pg_wal_replay_resume()").await;
    get_until(
        west,
        "/replica?max_lag=1000",
        "caught up again",
        |code, _| code == 200,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_503_once_postgres_is_stopped() {
    let s = setup().await;
    let (code, body) = get(s.east_http(), "/health").await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = get(s.west_http(), "/health").await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("a replica"), "{body}");
    let c = Arc::clone(&s.cluster);
    tokio::task::spawn_blocking(move || c.stop(0))
        .await
        .expect("join")
        .expect("pg-east stops");
    let (code, body) = get(s.east_http(), "/health").await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("unreachable"), "{body}");
    let (code, _) = get(s.east_http(), "/writer").await;
    assert_eq!(code, 503);
    let (code, body) = get(s.east_http(), "/nowhere").await;
    assert_eq!(code, 404, "{body}");
}

// ---------------------------------------------------------------------------
// examples/haproxy: the example configuration, checked by HAProxy itself and
// run in front of the cluster above.

const HAPROXY_EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/haproxy/haproxy.cfg");

/// The Debian `haproxy` binary, or `None` with the reason printed.
fn haproxy() -> Option<&'static str> {
    match std::process::Command::new("haproxy").arg("-v").output() {
        Ok(out) if out.status.success() => Some("haproxy"),
        _ => {
            eprintln!(
                "SKIPPED: haproxy is not installed (apt-get install -y haproxy; scripts/test installs it)"
            );
            None
        }
    }
}

#[test]
fn haproxy_accepts_the_example_configuration() {
    let Some(bin) = haproxy() else { return };
    let out = std::process::Command::new(bin)
        .args(["-c", "-f", HAPROXY_EXAMPLE])
        .output()
        .expect("haproxy runs");
    assert!(
        out.status.success(),
        "haproxy -c refused {HAPROXY_EXAMPLE}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The example with this test's addresses: every replacement must apply, so
/// the example keeps the shape the test runs.
fn local_config(example: &str, east: (u16, u16), west: (u16, u16), ports: [u16; 3]) -> String {
    let swaps = [
        ("bind *:5000", format!("bind 127.0.0.1:{}", ports[0])),
        ("bind *:5001", format!("bind 127.0.0.1:{}", ports[1])),
        ("bind *:7000", format!("bind 127.0.0.1:{}", ports[2])),
        (
            "10.0.1.10:5432 maxconn 500 check port 8008",
            format!("127.0.0.1:{} maxconn 500 check port {}", east.0, east.1),
        ),
        (
            "10.0.2.10:5432 maxconn 500 check port 8008",
            format!("127.0.0.1:{} maxconn 500 check port {}", west.0, west.1),
        ),
    ];
    let mut cfg = example.to_owned();
    for (from, to) in swaps {
        assert!(cfg.contains(from), "the example no longer has {from:?}");
        cfg = cfg.replace(from, &to);
    }
    cfg
}

/// Which node a new connection through `port` reaches (its `port` setting),
/// or the error.
async fn reached(port: u16) -> Result<u16, String> {
    let dsn = format!("host=127.0.0.1 port={port} user=postgres dbname=postgres connect_timeout=2");
    let connect = tokio_postgres::connect(&dsn, tokio_postgres::NoTls);
    let (client, conn) = match tokio::time::timeout(Duration::from_secs(3), connect).await {
        Ok(Ok(pair)) => pair,
        Ok(Err(e)) => return Err(e.to_string()),
        Err(_) => return Err("connect timed out".into()),
    };
    let task = tokio::spawn(conn);
    let row = client
        .query_one("SELECT current_setting('port')", &[])
        .await
        .map_err(|e| e.to_string());
    drop(client);
    task.abort();
    row?.get::<_, String>(0).parse().map_err(|e| format!("{e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_with_the_example_routes_clients_to_the_writer_and_follows_a_switchover() {
    let Some(bin) = haproxy() else { return };
    let s = setup().await;
    let east_port = s.cluster.node(0).expect("east").port;
    let west_port = s.cluster.node(1).expect("west").port;
    let example = std::fs::read_to_string(HAPROXY_EXAMPLE).expect("example readable");
    let dir = tempfile::tempdir().expect("tempdir");
    let ports = [free_port(), free_port(), free_port()];
    let cfg = local_config(
        &example,
        (east_port, s.east_http().port()),
        (west_port, s.west_http().port()),
        ports,
    );
    let path = dir.path().join("haproxy.cfg");
    std::fs::write(&path, cfg).expect("config written");
    let mut proxy = tokio::process::Command::new(bin)
        .arg("-db")
        .arg("-f")
        .arg(&path)
        .kill_on_drop(true)
        .spawn()
        .expect("haproxy starts");
    let writer = ports[0];

    // The writer port reaches pg-east once HAProxy's checks mark it up.
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        if let Ok(Some(status)) = proxy.try_wait() {
            panic!("haproxy exited: {status}");
        }
        match reached(writer).await {
            Ok(p) => {
                assert_eq!(
                    p, east_port,
                    "the writer port reached a node that is not the writer"
                );
                break;
            }
            Err(e) => assert!(
                tokio::time::Instant::now() < deadline,
                "no connection through HAProxy within {LIMIT:?}: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Switchover, in the order the controller keeps: fence pg-east at epoch
    // 1, name pg-west at epoch 1, promote it once it replayed pg-east's
    // final flush position (zero loss).
    let pg = PgCluster::new()
        .with_node(
            EAST,
            "pg-east",
            &s.cluster.node(0).expect("east").admin_dsn(),
        )
        .expect("east dsn")
        .with_node(
            WEST,
            "pg-west",
            &s.cluster.node(1).expect("west").admin_dsn(),
        )
        .expect("west dsn");
    let fence = pg.fence(EAST, Epoch(1)).await.expect("pg-east fenced");
    let fenced = tokio::time::Instant::now();
    s.server.set_writer_at(WEST, Epoch(1));
    pg.promote(&PromoteRequest {
        node: WEST,
        epoch: Epoch(1),
        gate: RpoGate::CaughtUp {
            lsn: fence.flush_lsn.expect("a fenced primary's flush position"),
        },
        synchronous: failover::decision::Synchronous::Off,
    })
    .await
    .expect("pg-west promoted");
    let promoted = tokio::time::Instant::now();

    // HAProxy takes the fenced pg-east out within fall 2 × inter 1 s (5 s
    // allowed here, for a loaded machine); new connections reach pg-west
    // once it is marked up (rise 2 × inter 1 s), and never pg-east again.
    let window = Duration::from_secs(5);
    let mut first_west = None;
    let mut last_east = None;
    let mut after_west = 0;
    let deadline = tokio::time::Instant::now() + LIMIT;
    while after_west < 10 {
        match reached(writer).await {
            Ok(p) if p == east_port => {
                assert!(
                    first_west.is_none(),
                    "a connection reached the fenced pg-east after pg-west"
                );
                let since = fenced.elapsed();
                assert!(
                    since < window,
                    "HAProxy still sent a connection to the fenced pg-east {since:?} after its fence"
                );
                last_east = Some(since);
            }
            Ok(p) => {
                assert_eq!(p, west_port);
                first_west.get_or_insert_with(|| promoted.elapsed());
                after_west += 1;
            }
            Err(e) => assert!(
                tokio::time::Instant::now() < deadline,
                "no connection reached pg-west within {LIMIT:?} of its promotion: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "haproxy: last connection to the fenced pg-east {last_east:?} after its fence; \
         first to the new writer {:?} after its promotion",
        first_west.expect("reached")
    );
    let _ = proxy.kill().await;
}
