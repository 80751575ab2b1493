//! The guards' node endpoints (`/writer`, `/replica`, `/health`) over real
//! HTTP, on real PostgreSQL (testkit primary pg-east + streaming replica
//! pg-west), each guard leasing from the real lease server over loopback.
//!
//! Waits are for events (the guard's status channel) or for an endpoint's
//! answer to change, polled with a generous limit; no fixed sleeps.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use failover::decision::{Epoch, NodeId, PromoteRequest, RpoGate, WriterRecord};
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

fn guard(
    server: &LeaseServer,
    node: NodeId,
    name: &str,
    dsn: &str,
    writer_drain: Duration,
) -> NodeGuard {
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
        writer_drain,
        ..GuardSettings::for_ttl(TTL)
    };
    NodeGuard::start(node, name, settings, Arc::new(lease), Arc::new(pg)).expect("guard starts")
}

async fn setup() -> Setup {
    setup_with(Duration::ZERO).await
}

/// As [`setup`], pg-east's guard draining `/writer` for `east_drain` before
/// its own fence.
async fn setup_with(east_drain: Duration) -> Setup {
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
    let east = guard(&server, EAST, "pg-east", &east_dsn, east_drain);
    let west = guard(&server, WEST, "pg-west", &west_dsn, Duration::ZERO);
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
async fn writer_is_503_while_the_record_marks_it_draining_and_replica_is_unaffected() {
    let s = setup().await;
    assert_eq!(get(s.east_http(), "/writer").await.0, 200);
    // A switchover marks the writer draining: the guard reads it at its next
    // renewal, and /writer refuses while the node still takes writes.
    s.server
        .set_writer(Some(WriterRecord::new(EAST, Epoch(0)).with_draining(true)));
    let (_, body) = get_until(
        s.east_http(),
        "/writer",
        "/writer 503 draining",
        |code, _| code == 503,
    )
    .await;
    assert!(body.contains("draining for switchover"), "{body}");
    assert_eq!(
        s.east.status().fenced,
        Some(false),
        "draining is not fencing: pg-east still takes writes"
    );
    s.psql(0, "CREATE TABLE IF NOT EXISTS drained_but_writable (x int)")
        .await;
    let (code, body) = get(s.west_http(), "/replica").await;
    assert_eq!(code, 200, "/replica is unaffected: {body}");
    // The drain lifted (an aborted switchover): the writer is served again.
    s.server.set_writer_at(EAST, Epoch(0));
    get_until(s.east_http(), "/writer", "/writer 200 again", |code, _| {
        code == 200
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_turns_503_for_the_drain_before_the_guards_own_fence() {
    // 2 s lease: fencing starts 1.4 s after the last renewal was sent;
    // /writer drains from 0.8 s.
    let drain = Duration::from_millis(600);
    let s = setup_with(drain).await;
    assert_eq!(get(s.east_http(), "/writer").await.0, 200);
    s.server.close_listener();
    let cut = tokio::time::Instant::now();
    let (_, body) = get_until(s.east_http(), "/writer", "/writer 503", |code, _| {
        code == 503
    })
    .await;
    let draining = cut.elapsed();
    assert!(
        body.contains("draining: no lease renewal"),
        "the first 503 is the drain, not the fence: {body}"
    );
    assert_eq!(
        s.east.status().fenced,
        Some(false),
        "not fenced yet while draining"
    );
    wait_status(&s.east.watch(), "pg-east fenced by its guard", |st| {
        st.fenced == Some(true)
    })
    .await;
    let fenced = cut.elapsed();
    eprintln!(
        "guard drain: /writer 503 {draining:?} after the store was cut off, fenced {fenced:?} after"
    );
    assert!(
        fenced > draining,
        "the drain comes before the fence ({draining:?} vs {fenced:?})"
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

/// HAProxy running the example (addresses swapped for loopback ones).
struct Proxy {
    child: tokio::process::Child,
    /// The writer port.
    writer: u16,
    /// The stats page.
    stats: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Proxy {
    /// Starts HAProxy in front of `east` and `west` (PostgreSQL port, guard
    /// HTTP port) and waits until it has settled on pg-east up and the
    /// replica pg-west down: HAProxy 2.6 starts every server up until
    /// `fall` checks fail (see the example's README).
    async fn start(bin: &str, east: (u16, u16), west: (u16, u16)) -> Proxy {
        let example = std::fs::read_to_string(HAPROXY_EXAMPLE).expect("example readable");
        let dir = tempfile::tempdir().expect("tempdir");
        let ports = [free_port(), free_port(), free_port()];
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, local_config(&example, east, west, ports)).expect("config written");
        let child = tokio::process::Command::new(bin)
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .kill_on_drop(true)
            .spawn()
            .expect("haproxy starts");
        let mut proxy = Proxy {
            child,
            writer: ports[0],
            stats: SocketAddr::from(([127, 0, 0, 1], ports[2])),
            _dir: dir,
        };
        let deadline = tokio::time::Instant::now() + LIMIT;
        loop {
            proxy.alive();
            if tokio::net::TcpStream::connect(proxy.stats).await.is_ok() {
                let east = haproxy_status(proxy.stats, "pg-east").await;
                let west = haproxy_status(proxy.stats, "pg-west").await;
                if east.starts_with("UP (") && west.starts_with("DOWN") {
                    return proxy;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "HAProxy has not settled on pg-east up, pg-west down within {LIMIT:?}: {east}, {west}"
                );
            } else {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "HAProxy's stats page not up within {LIMIT:?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn alive(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("haproxy exited: {status}");
        }
    }

    async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// One new connection through HAProxy: when it began and which node it
/// reached.
#[derive(Clone, Debug)]
struct Sample {
    at: tokio::time::Instant,
    /// When its answer came.
    done: tokio::time::Instant,
    reached: Result<u16, String>,
}

/// Opens new connections through `port` one after another until told to
/// stop, recording each.
async fn sample_writer(
    port: u16,
    samples: Arc<std::sync::Mutex<Vec<Sample>>>,
    mut stop: watch::Receiver<bool>,
) {
    while !*stop.borrow() {
        let at = tokio::time::Instant::now();
        let reached = reached(port).await;
        let done = tokio::time::Instant::now();
        samples
            .lock()
            .expect("samples")
            .push(Sample { at, done, reached });
        // A short pause: HAProxy refuses at once while no server is up, and
        // the guards' checks need connections of their own.
        tokio::select! {
            _ = stop.changed() => {}
            () = tokio::time::sleep(Duration::from_millis(10)) => {}
        }
    }
}

/// A server's status in `postgres-writer` on HAProxy's stats page (`UP`,
/// `DOWN`, `UP 1/2` going down, ...), with its last check in parentheses.
async fn haproxy_status(stats: SocketAddr, server: &str) -> String {
    // HTTP/1.0, so the CSV comes whole rather than in chunks.
    let mut stream = tokio::time::timeout(LIMIT, tokio::net::TcpStream::connect(stats))
        .await
        .expect("connect to HAProxy's stats in time")
        .expect("connect to HAProxy's stats");
    stream
        .write_all(b"GET /;csv HTTP/1.0\r\n\r\n")
        .await
        .expect("send");
    let mut raw = Vec::new();
    tokio::time::timeout(LIMIT, stream.read_to_end(&mut raw))
        .await
        .expect("stats in time")
        .expect("read stats");
    let text = String::from_utf8(raw).expect("utf-8 stats");
    let csv = text.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    let mut lines = csv.lines().skip_while(|l| !l.starts_with("# pxname"));
    let header: Vec<&str> = lines
        .next()
        .unwrap_or("")
        .trim_start_matches("# ")
        .split(',')
        .collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .unwrap_or_else(|| panic!("no {name} column in HAProxy's CSV: {csv}"))
    };
    let (px, sv, status, last) = (col("pxname"), col("svname"), col("status"), col("last_chk"));
    lines
        .map(|l| l.split(',').collect::<Vec<_>>())
        .find(|f| f.get(px) == Some(&"postgres-writer") && f.get(sv) == Some(&server))
        .and_then(|f| {
            let status = f.get(status)?;
            Some(format!("{status} ({})", f.get(last).unwrap_or(&"")))
        })
        .unwrap_or_else(|| panic!("no postgres-writer/{server} row in HAProxy's CSV: {csv}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_with_the_example_routes_clients_to_the_writer_and_follows_a_switchover() {
    let Some(bin) = haproxy() else { return };
    let s = setup().await;
    let east_port = s.cluster.node(0).expect("east").port;
    let west_port = s.cluster.node(1).expect("west").port;
    let mut proxy = Proxy::start(
        bin,
        (east_port, s.east_http().port()),
        (west_port, s.west_http().port()),
    )
    .await;
    let writer = proxy.writer;
    assert_eq!(
        reached(writer).await,
        Ok(east_port),
        "the writer port reaches the writer"
    );

    // Switchover, in the order the controller keeps with policy.writer_drain:
    // mark the writer record draining (pg-east's /writer turns 503 at its
    // guard's next renewal), wait the drain — HAProxy: inter × fall + inter
    // = 3 s, plus the guard's renew interval (0.4 s) to read the mark — then
    // fence pg-east at epoch 1, name pg-west at epoch 1, promote it once it
    // replayed pg-east's final flush position (zero loss).
    let drain = Duration::from_millis(3_400);
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
    let stats = proxy.stats;
    // Sample the writer port without pause from here on: every new
    // connection, when it started and which node it reached.
    let samples: Arc<std::sync::Mutex<Vec<Sample>>> = Arc::default();
    let (stop_tx, stop_rx) = watch::channel(false);
    let sampler = tokio::spawn(sample_writer(writer, Arc::clone(&samples), stop_rx));
    wait_samples(&samples, east_port, None, 1, "a connection reaches pg-east").await;
    let drain_start = tokio::time::Instant::now();
    s.server
        .set_writer(Some(WriterRecord::new(EAST, Epoch(0)).with_draining(true)));
    // HAProxy's own view, for the numbers (and a loaded machine: the fence
    // waits for HAProxy as well as for the drain).
    let deadline = drain_start + LIMIT;
    let marked_down = loop {
        let status = haproxy_status(stats, "pg-east").await;
        if status.starts_with("DOWN") {
            eprintln!("haproxy: pg-east {status}");
            break drain_start.elapsed();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "HAProxy did not mark the draining pg-east down within {LIMIT:?}: {status}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    tokio::time::sleep_until(drain_start + drain).await;
    let fence_began = tokio::time::Instant::now();
    let fence = pg.fence(EAST, Epoch(1)).await.expect("pg-east fenced");
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

    // New connections reach pg-west once HAProxy marks it up (rise 2 ×
    // inter 1 s); wait for ten of them.
    let deadline = promoted + LIMIT;
    loop {
        let reached_west = samples
            .lock()
            .expect("samples")
            .iter()
            .filter(|s| s.at > promoted && s.reached == Ok(west_port))
            .count();
        if reached_west >= 10 {
            break;
        }
        proxy.alive();
        assert!(
            tokio::time::Instant::now() < deadline,
            "no 10 connections reached pg-west within {LIMIT:?} of its promotion"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop_tx.send(true);
    sampler.await.expect("sampler");
    let samples = samples.lock().expect("samples").clone();

    // Strict: no connection begun after the fence began reached pg-east.
    let late: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.at >= fence_began && s.reached == Ok(east_port))
        .collect();
    assert!(
        late.is_empty(),
        "{} new connections reached pg-east after its fence began, the first begun {:?} and the last {:?} after it",
        late.len(),
        late.first().map(|s| s.at - fence_began),
        late.last().map(|s| s.at - fence_began)
    );
    let last_east = samples
        .iter()
        .filter(|s| s.reached == Ok(east_port))
        .map(|s| s.at)
        .max()
        .expect("pg-east was reached before the drain");
    let first_west = samples
        .iter()
        .filter(|s| s.reached == Ok(west_port))
        .map(|s| s.done)
        .min()
        .expect("pg-west reached");
    assert!(
        samples.iter().all(|s| s.reached.is_err()
            || s.reached == Ok(east_port)
            || (s.reached == Ok(west_port) && s.done > fence_began)),
        "the writer port reached pg-east, then pg-west once it could be the writer, and nothing else"
    );
    eprintln!(
        "haproxy: drain began, HAProxy marked pg-east down {marked_down:?} later (the drain is {drain:?}); \
         last connection reached pg-east {:?} after the drain began, {:?} before its fence; \
         the new writer answered first {:?} after the fence began (fence and promotion took {:?}); \
         {} connections sampled",
        last_east.saturating_duration_since(drain_start),
        fence_began.saturating_duration_since(last_east),
        first_west.saturating_duration_since(fence_began),
        promoted.saturating_duration_since(fence_began),
        samples.len()
    );
    proxy.stop().await;
}

/// The whole path, driven by a runtime: an operator's switchover with
/// `policy.writer_drain`, the runtime's in-process lease server holding the
/// writer record, each node's guard serving `/writer` to HAProxy. The
/// controller marks pg-east draining, waits the drain, fences it and
/// promotes pg-west; a client opening connections through HAProxy without
/// pause never reaches pg-east once its fence began.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_in_front_of_a_runtime_switchover_with_writer_drain_never_reaches_the_fenced_writer(
) {
    use failover::decision::{Command, Config, EventKind, MaxRpo};
    use failover::RuntimeBuilder;

    let Some(bin) = haproxy() else { return };
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
    let (east_port, west_port) = (cluster.nodes()[0].port, cluster.nodes()[1].port);
    // HAProxy: inter 1 s × fall 2 + inter 1 s, plus the guards' renew
    // interval (0.4 s) to read the mark.
    let drain = Duration::from_millis(3_400);
    let mut policy = common::fast_policy();
    policy.auto_promote = true;
    policy.max_rpo = Some(MaxRpo::bytes(64 << 20));
    policy.guard_ttl = Some(TTL);
    policy.proof_timeout = Duration::from_secs(10);
    policy.writer_drain = drain;
    let config = Config::new(common::topology_with(true), policy.clone()).expect("valid config");
    let pg = PgCluster::new()
        .with_node(EAST, "pg-east", &cluster.nodes()[0].admin_dsn())
        .expect("east dsn")
        .with_node(WEST, "pg-west", &cluster.nodes()[1].admin_dsn())
        .expect("west dsn");
    let regions = common::TwoRegions::start();
    let runtime = regions
        .run(
            RuntimeBuilder::new(config.clone())
                .database(Arc::new(pg))
                .guard_leases(
                    LeaseServerConfig::new("127.0.0.1:0".parse().expect("addr"), SECRET)
                        .topology(config.topology()),
                ),
        )
        .await;
    let handle = runtime.handle();
    let leases = runtime.lease_server().expect("lease server runs").clone();
    let east = guard(
        &leases,
        EAST,
        "pg-east",
        &cluster.nodes()[0].admin_dsn(),
        Duration::ZERO,
    );
    let west = guard(
        &leases,
        WEST,
        "pg-west",
        &cluster.nodes()[1].admin_dsn(),
        Duration::ZERO,
    );
    wait_status(&east.watch(), "pg-east the writer with its lease", |s| {
        s.lease_held && s.fenced == Some(false) && s.writer_epoch == Some(Epoch(0))
    })
    .await;
    wait_status(&west.watch(), "pg-west a replica with its lease", |s| {
        s.lease_held && s.replica
    })
    .await;
    let mut proxy = Proxy::start(
        bin,
        (east_port, east.http_addr().expect("east serves").port()),
        (west_port, west.http_addr().expect("west serves").port()),
    )
    .await;

    let samples: Arc<std::sync::Mutex<Vec<Sample>>> = Arc::default();
    let (stop_tx, stop_rx) = watch::channel(false);
    let sampler = tokio::spawn(sample_writer(proxy.writer, Arc::clone(&samples), stop_rx));
    wait_samples(&samples, east_port, None, 1, "a connection reaches pg-east").await;

    // The operator's switchover (retried while pg-west is not yet seen as a
    // replica, as an operator would).
    let mut events = handle.subscribe_events();
    let tries = tokio::time::Instant::now() + LIMIT;
    let drain_at = 'command: loop {
        handle
            .command(Command::Switchover { to: WEST })
            .await
            .expect("the runtime takes commands");
        loop {
            let event = tokio::time::timeout_at(tries, events.recv())
                .await
                .expect("the switchover starts within the limit")
                .expect("events flow");
            match event.kind {
                EventKind::WriterDrainRequested { .. } => break 'command event.at,
                EventKind::CommandRefused { reason } => {
                    assert!(
                        reason.contains("not seen as a replica"),
                        "refused: {reason}"
                    );
                    tokio::time::sleep(policy.interval).await;
                    break;
                }
                _ => {}
            }
        }
    };
    let mut fence_at = None;
    // HAProxy's view while the drain runs, for the numbers.
    let mut marked_down = None;
    while fence_at.is_none() {
        proxy.alive();
        if marked_down.is_none()
            && haproxy_status(proxy.stats, "pg-east")
                .await
                .starts_with("DOWN")
        {
            marked_down = Some(std::time::Instant::now() - drain_at);
        }
        match tokio::time::timeout(Duration::from_millis(20), events.recv()).await {
            Err(_) => {}
            Ok(Ok(event)) => match event.kind {
                EventKind::FencingRequested { node, .. } if node == EAST => {
                    fence_at = Some(event.at)
                }
                EventKind::PromotionAborted { .. } | EventKind::StepTimedOut { .. } => {
                    panic!("the switchover failed: {:?}", handle.status().recent_events)
                }
                _ => {}
            },
            Ok(Err(e)) => panic!("events: {e}"),
        }
        assert!(
            std::time::Instant::now() < drain_at + LIMIT,
            "no fence within {LIMIT:?} of the drain: {:?}",
            handle.status().recent_events
        );
    }
    let fence_at = fence_at.expect("fenced");
    common::wait_status(&handle, LIMIT, "pg-west is the writer", |s| {
        s.controller.writer == Some(WEST)
    })
    .await;
    let promoted = tokio::time::Instant::now();
    wait_samples(
        &samples,
        west_port,
        Some(promoted),
        10,
        "10 new connections reach pg-west",
    )
    .await;
    let _ = stop_tx.send(true);
    sampler.await.expect("sampler");
    let samples = samples.lock().expect("samples").clone();

    assert!(
        fence_at - drain_at >= drain,
        "the fence waited the drain: {:?}",
        fence_at - drain_at
    );
    let fence_began = tokio::time::Instant::from_std(fence_at);
    let late: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.at >= fence_began && s.reached == Ok(east_port))
        .collect();
    assert!(
        late.is_empty(),
        "{} new connections reached pg-east after its fence began, the first begun {:?} after it",
        late.len(),
        late.first().map(|s| s.at - fence_began)
    );
    let drain_began = tokio::time::Instant::from_std(drain_at);
    let last_east = samples
        .iter()
        .filter(|s| s.reached == Ok(east_port))
        .map(|s| s.at)
        .max()
        .expect("pg-east reached");
    eprintln!(
        "runtime switchover: HAProxy marked pg-east down {marked_down:?} after the drain began \
         (writer_drain {drain:?}); last new connection to pg-east began {:?} after the drain began, \
         {:?} before the fence; {} connections sampled",
        last_east.saturating_duration_since(drain_began),
        fence_began.saturating_duration_since(last_east),
        samples.len()
    );
    proxy.stop().await;
    drop(east);
    drop(west);
    runtime.shutdown().await;
}

/// Waits until `n` samples begun after `after` reached `port`.
async fn wait_samples(
    samples: &std::sync::Mutex<Vec<Sample>>,
    port: u16,
    after: Option<tokio::time::Instant>,
    n: usize,
    what: &str,
) {
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let seen = samples
            .lock()
            .expect("samples")
            .iter()
            .filter(|s| after.is_none_or(|a| s.at > a) && s.reached == Ok(port))
            .count();
        if seen >= n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not seen within {LIMIT:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
