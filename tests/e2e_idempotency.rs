//! A retried POST across a real failover: an axum service with the
//! `Idempotency` layer writes through the layer's transaction to PostgreSQL
//! with synchronous replication; a client sends keyed POSTs and retries each
//! (same key, same body) through the cutover while the primary is killed
//! (`kill -9`) and the runtime promotes the replica. On the new writer every
//! key has exactly one row, and every acknowledged key is there.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::Extension;
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use common::*;
use failover::decision::{Config, MaxRpo, NodeId};
use failover::dns::{EmbeddedConfig, EmbeddedDns};
use failover::lease::LeaseServerConfig;
use failover::tower::{IdempotencyLayer, IdempotentTx};
use failover::RuntimeBuilder;
use failover_testkit::postgres::{PgTestCluster, PgTestNode, APP_DATABASE, APP_PASSWORD, APP_ROLE};
use http::StatusCode;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

/// Keys the client sends, each once acknowledged.
const KEYS: usize = 200;
/// Requests in flight at once.
const CLIENTS: usize = 8;
/// Acknowledged keys before the primary is killed.
const KILL_AFTER: usize = 60;
/// Bound on the whole run, from the first request.
const RUN_LIMIT: Duration = Duration::from_secs(120);

/// The service's POST: one row per order, written through the layer's
/// transaction, so the row and the key's record commit together.
async fn create(Extension(tx): Extension<IdempotentTx>, body: String) -> (StatusCode, String) {
    let key = tx.key().to_owned();
    match tx
        .query_one(
            "INSERT INTO orders (key, body) VALUES ($1, $2) RETURNING id",
            &[&key, &body],
        )
        .await
    {
        Ok(row) => {
            let id: i64 = row.get(0);
            (StatusCode::CREATED, format!("{{\"id\":{id}}}"))
        }
        Err(error) => (StatusCode::SERVICE_UNAVAILABLE, error.to_string()),
    }
}

/// The application's DSN over both nodes, on whichever takes writes.
fn writer_dsn(nodes: &[PgTestNode]) -> String {
    format!(
        "host={},{} port={},{} user={APP_ROLE} password={APP_PASSWORD} dbname={APP_DATABASE} \
         target_session_attrs=read-write",
        nodes[0].host, nodes[1].host, nodes[0].port, nodes[1].port
    )
}

/// What the client saw.
#[derive(Default)]
struct Seen {
    /// Key → when it was acknowledged (2xx), and whether the acknowledged
    /// attempt started after the kill.
    acked: HashMap<String, (Instant, bool)>,
    /// Keys that got a retryable answer (503, 409, connection failure) after
    /// the kill and were acknowledged later: the retries that crossed the
    /// cutover.
    retried_across: usize,
    /// Attempts answered with each status (0: no HTTP answer).
    answers: HashMap<u16, usize>,
    /// Keys refused for good (a non-retryable 4xx): must stay empty.
    refused: Vec<(String, u16, String)>,
}

/// One POST on a fresh connection: status, Retry-After, body; `Err` when no
/// answer came (the service is in this process, so this is rare).
async fn post_order(addr: SocketAddr, key: &str, body: &str) -> Result<(u16, String), String> {
    let attempt = async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let req = http::Request::post("/orders")
            .header("host", addr.to_string())
            .header("idempotency-key", key)
            .body(Full::new(Bytes::copy_from_slice(body.as_bytes())))
            .map_err(|e| e.to_string())?;
        let response = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(Duration::from_secs(15), attempt)
        .await
        .map_err(|_| "no answer within 15 s".to_owned())?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_key_takes_effect_once_across_a_killed_primary_and_a_promotion() {
    let cluster = tokio::task::spawn_blocking(|| {
        PgTestCluster::builder()
            .replicas(1)
            .synchronous(true)
            .start()
    })
    .await
    .expect("cluster task")
    .expect("PostgreSQL primary + synchronous replica start");
    let nodes = cluster.nodes().to_vec();
    let (db, conn) = tokio_postgres::connect(&nodes[0].app_dsn(), tokio_postgres::NoTls)
        .await
        .expect("connect to the primary");
    tokio::spawn(conn);
    // No unique constraint on `key`: a second apply would be a second row.
    db.batch_execute(
        "CREATE TABLE orders (id bigserial PRIMARY KEY, key text NOT NULL, body text NOT NULL)",
    )
    .await
    .expect("create orders");
    drop(db);

    // The runtime, as in production: probes, guards on both nodes, and a
    // promotion once the dead primary is proven stopped.
    let mut policy = fast_policy();
    policy.auto_promote = true;
    policy.max_rpo = Some(MaxRpo::bytes(64 << 20));
    policy.guard_ttl = Some(GUARD_TTL);
    policy.proof_timeout = Duration::from_secs(10);
    let config = Config::new(topology_with(true), policy.clone()).expect("valid config");
    let pg = fleet::pg_admin(&nodes[0].admin_dsn(), &nodes[1].admin_dsn());
    let regions = TwoRegions::start();
    let dns = EmbeddedDns::bind(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        config.topology(),
        &policy,
        EmbeddedConfig::new(ZONE),
    )
    .await
    .expect("embedded DNS");
    let runtime = regions
        .run(
            RuntimeBuilder::new(config.clone())
                .router(Arc::new(dns.router()))
                .database(Arc::new(pg))
                .guard_leases(
                    LeaseServerConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)), LEASE_SECRET)
                        .topology(config.topology()),
                ),
        )
        .await;
    let leases = runtime.lease_server().expect("lease server runs").clone();
    let east_guard = start_guard(&leases.url(), 0, "pg-east", &nodes[0].admin_dsn());
    let west_guard = start_guard(&leases.url(), 1, "pg-west", &nodes[1].admin_dsn());
    wait_status(
        &runtime.handle(),
        Duration::from_secs(15),
        "both guard leases held",
        |_| leases.is_held(NodeId(0)) && leases.is_held(NodeId(1)),
    )
    .await;

    // The service: one instance, its idempotency records and its orders
    // on whichever node takes writes.
    let layer = IdempotencyLayer::builder(&writer_dsn(&nodes))
        .expect("dsn")
        .connect_timeout(Duration::from_secs(2))
        .build()
        .expect("layer");
    let app = Router::new().route("/orders", post(create)).layer(layer);
    let addr = serve_app(app).await;

    // The client: KEYS keys, CLIENTS at a time; each key retried with the
    // same body until a non-retryable answer.
    let seen = Arc::new(Mutex::new(Seen::default()));
    let killed_at: Arc<Mutex<Option<Instant>>> = Arc::default();
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let (seen, killed_at, next) =
            (Arc::clone(&seen), Arc::clone(&killed_at), Arc::clone(&next));
        clients.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= KEYS {
                    return;
                }
                let key = format!("order-{i}");
                let body = format!("{{\"item\":{i}}}");
                let mut retried_after_kill = false;
                while started.elapsed() < RUN_LIMIT {
                    let sent = Instant::now();
                    let answer = post_order(addr, &key, &body).await;
                    let kill = *killed_at.lock().expect("lock");
                    let after_kill = kill.is_some_and(|k| sent >= k);
                    let status = answer.as_ref().map_or(0, |(s, _)| *s);
                    let done = {
                        let mut s = seen.lock().expect("lock");
                        *s.answers.entry(status).or_default() += 1;
                        match status {
                            200..=299 => {
                                if retried_after_kill {
                                    s.retried_across += 1;
                                }
                                s.acked.insert(key.clone(), (Instant::now(), after_kill));
                                true
                            }
                            0 | 408 | 409 | 429 | 500..=599 => {
                                if kill.is_some_and(|k| Instant::now() >= k) {
                                    retried_after_kill = true;
                                }
                                false
                            }
                            _ => {
                                let text = answer.map(|(_, t)| t).unwrap_or_default();
                                s.refused.push((key.clone(), status, text));
                                true
                            }
                        }
                    };
                    if done {
                        break;
                    }
                    // A client that retries promptly (well under the
                    // layer's Retry-After of 1 s), to press on the cutover.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }));
    }

    // Midway, the writer's region dies: its API, its guard and its primary.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (acked, answers) = {
            let s = seen.lock().expect("lock");
            (s.acked.len(), format!("{:?}", s.answers))
        };
        if acked >= KILL_AFTER {
            break;
        }
        if Instant::now() >= deadline {
            let sessions = cluster
                .psql(
                    0,
                    "SELECT application_name, state, wait_event_type, wait_event, left(query, 60) \
                     FROM pg_stat_activity WHERE backend_type = 'client backend'; \
                     SELECT application_name, state, sync_state, replay_lsn FROM pg_stat_replication",
                )
                .unwrap_or_else(|e| e.to_string());
            panic!(
                "{acked} keys acknowledged in 60 s before the kill; answers {answers}; \
                 on the primary:\n{sessions}"
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(east_guard);
    regions.east.stop().await;
    // From the moment the postmaster is gone: a request sent after it can
    // only be acknowledged by the new writer.
    tokio::task::block_in_place(|| cluster.kill(0)).expect("kill -9 the primary");
    let kill = Instant::now();
    *killed_at.lock().expect("lock") = Some(kill);
    let acked_at_kill = seen.lock().expect("lock").acked.len();
    let promoted = wait_status(
        &runtime.handle(),
        Duration::from_secs(30),
        "pg-west promoted",
        |s| s.controller.writer == Some(NodeId(1)),
    )
    .await;
    let promoted_after = kill.elapsed();
    assert!(promoted.controller.epoch.0 >= 1);

    for client in clients {
        client.await.expect("client task");
    }
    let s = std::mem::take(&mut *seen.lock().expect("lock"));
    let first_ack_after_kill = s
        .acked
        .values()
        .filter(|(_, after)| *after)
        .map(|(at, _)| at.duration_since(kill))
        .min();
    let mut answers: Vec<_> = s.answers.iter().map(|(k, v)| (*k, *v)).collect();
    answers.sort_unstable();
    eprintln!(
        "e2e_idempotency: {} keys acknowledged ({acked_at_kill} before the kill); \
         {} keys retried across the cutover; kill → pg-west promoted {:.3} s; \
         kill → first acknowledged POST on the new writer {:?}; answers by status \
         (0 = no answer) {answers:?}; run {:.1} s",
        s.acked.len(),
        s.retried_across,
        promoted_after.as_secs_f64(),
        first_ack_after_kill.map(|d| d.as_secs_f64()),
        started.elapsed().as_secs_f64(),
    );
    assert!(s.refused.is_empty(), "refused for good: {:?}", s.refused);
    let missing: Vec<String> = (0..KEYS)
        .map(|i| format!("order-{i}"))
        .filter(|k| !s.acked.contains_key(k))
        .collect();
    assert!(
        missing.is_empty(),
        "{} keys never acknowledged within {RUN_LIMIT:?} (answers {answers:?}): {missing:?}",
        missing.len()
    );
    assert!(
        s.retried_across > 0,
        "no retry crossed the cutover: the test did not exercise the failover"
    );
    // Without a restart, the layer finds the new writer soon after the
    // promotion: a failed connection attempt is retried after 1 s, and a
    // connection takes at most the connect timeout (2 s) per host.
    let reached = first_ack_after_kill.expect("no key was acknowledged by the new writer");
    assert!(
        reached <= promoted_after + Duration::from_secs(10),
        "the new writer took the first POST {reached:?} after the kill, \
         {promoted_after:?} after which it was promoted"
    );

    // On the new writer: exactly one row per key.
    let (db, conn) = tokio_postgres::connect(&nodes[1].app_dsn(), tokio_postgres::NoTls)
        .await
        .expect("connect to the new writer");
    tokio::spawn(conn);
    let rows = db
        .query("SELECT key, count(*) FROM orders GROUP BY key", &[])
        .await
        .expect("count rows");
    let counts: HashMap<String, i64> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let wrong: Vec<(String, i64)> = (0..KEYS)
        .map(|i| format!("order-{i}"))
        .map(|k| {
            let n = counts.get(&k).copied().unwrap_or(0);
            (k, n)
        })
        .filter(|(_, n)| *n != 1)
        .collect();
    assert!(
        wrong.is_empty(),
        "keys without exactly one row on the new writer: {wrong:?}"
    );
    assert_eq!(counts.len(), KEYS, "no rows for keys never sent");
    drop(west_guard);
    runtime.shutdown().await;
    dns.shutdown().await;
}

async fn serve_app(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    // axum's own `serve` is behind its `tokio` feature, which the facade
    // does not enable: hyper serves the router.
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let service = hyper_util::service::TowerToHyperService::new(app.clone());
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    addr
}
