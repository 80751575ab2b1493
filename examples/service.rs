//! An API service that degrades, sheds, deduplicates and reports what its
//! users see through a failover: an axum router behind the four
//! `failover::tower` layers, following the failover runtime in the same
//! process.
//!
//! ```sh
//! cargo run --example service --features full
//! ```
//!
//! It starts what the `live` example starts — two regional APIs (us-east
//! active, us-west standby at 60 % of peak), the embedded DNS server,
//! PostgreSQL primary and replica with their guards, and the runtime — with
//! passive health on, then serves an `/orders` API "in us-east" on
//! loopback behind:
//!
//! - `PassiveHealthLayer` (`failover::tower::passive_health`): every
//!   response counted for us-east and reported to the runtime;
//! - `WriteGateLayer`: mutations get `503` + `Retry-After` while the writer
//!   moves;
//! - `ShedLayer`: low priority gets `503` while the serving regions carry
//!   more than their capacity;
//! - `IdempotencyLayer`: `Idempotency-Key` records in PostgreSQL on the
//!   writer (`target_session_attrs=read-write` over both nodes); the POST
//!   handler inserts its order through the layer's transaction
//!   (`Extension<IdempotentTx>`), so the order and the key's record commit
//!   together and a retry across a failover applies it once.
//!
//! Then it plays a gray failure: us-east's handler starts failing half its
//! requests while its `/healthz` keeps passing. The runtime drains us-east
//! on what the users see, us-west carries 167 % of its capacity, and the
//! service sheds its low-priority requests while critical ones pass.

#[path = "support/regions.rs"]
mod regions;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::Extension;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use failover::decision::{EventKind, PassivePolicy, Policy};
use failover::tower::{
    from_runtime, passive_health, tokio_postgres, IdempotencyLayer, IdempotentTx, ShedLayer,
    WriteGateLayer, WriteVerdict, IDEMPOTENCY_KEY, REPLAYED_HEADER,
};
use http::StatusCode;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use regions::{BoxError, LiveRegions, EAST};

fn policy() -> Policy {
    Policy {
        interval: Duration::from_millis(500),
        timeout: Duration::from_millis(250),
        jitter: Duration::ZERO,
        fall: 3,
        rise: 2,
        ttl: Duration::from_secs(1),
        hold_down: Duration::from_secs(2),
        ramp_steps: vec![10, 25, 50, 100],
        ramp_interval: Duration::from_secs(1),
        // Users' requests judge a region too: more than 25 % errors over
        // at least 20 requests in 5 s.
        passive: Some(PassivePolicy {
            window: Duration::from_secs(5),
            min_requests: 20,
            max_error_rate: 0.25,
            ..PassivePolicy::default()
        }),
        ..Policy::default()
    }
}

/// The application's DSN over both nodes, on whichever takes writes.
fn writer_dsn(cluster: &failover_testkit::postgres::PgTestCluster) -> String {
    let port = |i: usize| {
        let dsn = cluster.nodes()[i].app_dsn();
        dsn.split_whitespace()
            .find_map(|kv| kv.strip_prefix("port=").map(str::to_owned))
            .unwrap_or_default()
    };
    let first = cluster.nodes()[0].app_dsn();
    let rest: Vec<&str> = first
        .split_whitespace()
        .filter(|kv| !kv.starts_with("host=") && !kv.starts_with("port="))
        .collect();
    format!(
        "host=127.0.0.1,127.0.0.1 port={},{} {} target_session_attrs=read-write",
        port(0),
        port(1),
        rest.join(" ")
    )
}

/// Serves `app` on loopback (hyper; axum's own `serve` is not compiled in).
async fn serve(app: Router) -> Result<SocketAddr, BoxError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let service = hyper_util::service::TowerToHyperService::new(app.clone());
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service),
            );
        }
    });
    Ok(addr)
}

/// One request; returns the status, a header's value and the body.
async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(StatusCode, Option<String>, String), BoxError> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let response = sender
        .send_request(req.body(Full::new(Bytes::new()))?)
        .await?;
    let status = response.status();
    let replayed = response
        .headers()
        .get(REPLAYED_HEADER)
        .or_else(|| response.headers().get("retry-after"))
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = response.into_body().collect().await?.to_bytes();
    Ok((
        status,
        replayed,
        String::from_utf8_lossy(&body).into_owned(),
    ))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), BoxError> {
    println!("starting two regions, DNS, PostgreSQL and the runtime …");
    let live = LiveRegions::start(policy(), true).await?;
    let handle = live.runtime.handle();
    let cluster = live.cluster.as_ref().ok_or("PostgreSQL did not start")?;

    // The four layers, following the runtime in this process.
    let (state, _state_task) = from_runtime(&handle, &live.config, Some("us-east"))?;
    let (passive, _passive_task) =
        passive_health(&handle, &live.config, "us-east", Duration::from_millis(200))?;
    // The service's own table, on the writer (it replicates).
    let (db, connection) =
        tokio_postgres::connect(&writer_dsn(cluster), tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    db.batch_execute("CREATE TABLE IF NOT EXISTS orders (id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT now())")
        .await?;
    // Every POST needs a key, so every POST handler gets the transaction.
    let idempotency = IdempotencyLayer::builder(&writer_dsn(cluster))?
        .required(true)
        .build()?;
    let failing = Arc::new(AtomicBool::new(false));
    let app = Router::new()
        .route(
            "/orders",
            get({
                let failing = Arc::clone(&failing);
                let calls = AtomicU64::new(0);
                let calls = Arc::new(calls);
                move || {
                    let n = calls.fetch_add(1, Ordering::Relaxed);
                    let fail = failing.load(Ordering::Relaxed) && n % 2 == 0;
                    async move {
                        if fail {
                            (StatusCode::INTERNAL_SERVER_ERROR, "a gray failure")
                        } else {
                            (StatusCode::OK, "[]")
                        }
                    }
                }
            })
            // The order and the key's record commit together: only writes
            // through the transaction are exactly-once.
            .post(|Extension(tx): Extension<IdempotentTx>| async move {
                match tx
                    .query_one("INSERT INTO orders DEFAULT VALUES RETURNING id", &[])
                    .await
                {
                    Ok(row) => (
                        StatusCode::CREATED,
                        format!("order #{}", row.get::<_, i64>(0)),
                    ),
                    // Asks for a retry: the layer rolls back, nothing is stored.
                    Err(error) => (StatusCode::SERVICE_UNAVAILABLE, error.to_string()),
                }
            }),
        )
        .layer(idempotency)
        .layer(ShedLayer::new(state.clone()))
        .layer(WriteGateLayer::new(state.clone()))
        .layer(passive);
    let addr = serve(app).await?;
    println!("the us-east API listens on http://{addr}/orders");

    state
        .wait_for(|s| !s.is_stale() && s.writer.node.is_some())
        .await
        .ok_or("the runtime stopped")?;
    let now = state.snapshot();
    println!(
        "writer {} at epoch {}; load {:.0} % of capacity; write gate: {:?}",
        now.writer.node.as_deref().unwrap_or("?"),
        now.writer.epoch,
        now.load().ratio() * 100.0,
        WriteVerdict::of(&now, Instant::now(), Duration::from_secs(5))
    );

    // A retried POST takes effect once.
    let key = [(IDEMPOTENCY_KEY, "order-42")];
    let (status, _, body) = call(addr, "POST", "/orders", &key).await?;
    println!("POST /orders (key order-42)            → {status} {body}");
    let (status, replayed, body) = call(addr, "POST", "/orders", &key).await?;
    println!(
        "POST /orders (key order-42, a retry)   → {status} {body} (replayed: {})",
        replayed.as_deref().unwrap_or("no")
    );
    let orders: i64 = db
        .query_one("SELECT count(*) FROM orders", &[])
        .await?
        .get(0);
    println!("orders in the database: {orders}");

    // A gray failure: us-east's handler fails half its requests; its
    // /healthz still passes.
    println!("\nus-east starts failing half its requests; its /healthz keeps passing …");
    let mut events = handle.subscribe_events();
    failing.store(true, Ordering::Relaxed);
    let start = Instant::now();
    let users = tokio::spawn(async move {
        loop {
            let _ = call(addr, "GET", "/orders", &[("x-priority", "critical")]).await;
        }
    });
    let topology = live.config.topology().clone();
    loop {
        let event = tokio::time::timeout(Duration::from_secs(30), events.recv())
            .await
            .map_err(|_| "us-east was not drained within 30 s")??;
        if matches!(event.kind, EventKind::UsersFailing { region, .. } if region == EAST) {
            println!(
                "{:>6.3} s  {}",
                start.elapsed().as_secs_f64(),
                event.display(&topology)
            );
            break;
        }
    }
    users.abort();
    failing.store(false, Ordering::Relaxed);
    let drained = state
        .wait_for(|s| s.region("us-east").is_some_and(|r| r.weight == 0))
        .await
        .ok_or("the runtime stopped")?;
    println!(
        "us-east weight 0, us-west carries {:.0} % of its capacity",
        drained.load().ratio() * 100.0
    );
    for priority in ["low", "critical"] {
        let (status, retry_after, body) =
            call(addr, "GET", "/orders", &[("x-priority", priority)]).await?;
        println!(
            "GET /orders (priority {priority:<8}) → {status} {}{}",
            body.lines().next().unwrap_or(""),
            retry_after
                .map(|s| format!(" (Retry-After: {s})"))
                .unwrap_or_default()
        );
    }
    live.runtime.shutdown().await;
    Ok(())
}
