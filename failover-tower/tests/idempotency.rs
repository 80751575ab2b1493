//! The idempotency layer on a real axum service with its records in a real
//! PostgreSQL: a retry takes effect once, a reused key with another payload
//! is refused, a concurrent duplicate gets 409, keys expire, and nothing runs
//! without its record.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use common::{connect, dead_port, postgres, send, serve, WAIT};
use failover_testkit::postgres::{PgTestCluster, APP_DATABASE};
use failover_tower::{IdempotencyLayer, IdempotencyLayerBuilder, IdempotentTx};
use http::Method;
use tokio::sync::{mpsc, Notify};

/// The service: `POST /orders` inserts a row through the layer's
/// transaction and answers 201 with its id. `hold` makes the first call say
/// it entered (after its insert) and wait for a release.
#[derive(Clone)]
struct Orders {
    /// The service's own database, for a request without a key (no
    /// transaction from the layer).
    dsn: String,
    calls: Arc<AtomicUsize>,
    hold: Option<(mpsc::Sender<()>, Arc<Notify>)>,
    /// Answer 503 on the first this many calls, after inserting.
    fail_first: usize,
}

async fn create(
    State(orders): State<Orders>,
    tx: Option<Extension<IdempotentTx>>,
    body: String,
) -> (StatusCode, [(&'static str, String); 1], String) {
    let call = orders.calls.fetch_add(1, Ordering::SeqCst);
    let insert = "INSERT INTO orders (body) VALUES ($1) RETURNING id";
    let inserted = match tx {
        Some(Extension(tx)) => tx
            .query_one(insert, &[&body])
            .await
            .map_err(|e| e.to_string()),
        None => connect(&orders.dsn)
            .await
            .query_one(insert, &[&body])
            .await
            .map_err(|e| e.to_string()),
    };
    let row = match inserted {
        Ok(row) => row,
        Err(error) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                [("location", String::new())],
                error,
            )
        }
    };
    if let Some((entered, release)) = orders.hold.as_ref().filter(|_| call == 0) {
        let released = release.notified();
        entered.send(()).await.expect("test listens");
        released.await;
    }
    if call < orders.fail_first {
        // The row inserted above must not survive this answer.
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [("location", String::new())],
            "try again".into(),
        );
    }
    let id: i64 = row.get(0);
    (
        StatusCode::CREATED,
        [("location", format!("/orders/{id}"))],
        format!("{{\"id\":{id}}}"),
    )
}

/// The service, whose first call says it entered (after its insert) and
/// waits for `release`.
fn holding(tk: &PgTestCluster) -> (Orders, mpsc::Receiver<()>, Arc<Notify>) {
    let (entered_tx, entered) = mpsc::channel(4);
    let release = Arc::new(Notify::new());
    let orders = Orders {
        dsn: tk.node(0).expect("node").app_dsn(),
        calls: Arc::new(AtomicUsize::new(0)),
        hold: Some((entered_tx, Arc::clone(&release))),
        fail_first: 0,
    };
    (orders, entered, release)
}

async fn setup(tk: &PgTestCluster) -> Arc<tokio_postgres::Client> {
    let db = connect(&tk.node(0).expect("node").app_dsn()).await;
    db.batch_execute("CREATE TABLE orders (id bigserial PRIMARY KEY, body text NOT NULL)")
        .await
        .expect("create orders");
    Arc::new(db)
}

fn builder(tk: &PgTestCluster) -> IdempotencyLayerBuilder {
    IdempotencyLayer::builder(&tk.node(0).expect("node").app_dsn()).expect("dsn")
}

fn app(orders: Orders, layer: IdempotencyLayer) -> Router {
    Router::new()
        .route("/orders", post(create).get(|| async { "[]" }))
        .with_state(orders)
        .layer(layer)
}

async fn count_orders(db: &tokio_postgres::Client) -> i64 {
    db.query_one("SELECT count(*) FROM orders", &[])
        .await
        .expect("count")
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_gets_the_stored_response_and_the_mutation_runs_once() {
    let tk = postgres().await;
    let db = setup(&tk).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let orders = Orders {
        dsn: tk.node(0).expect("node").app_dsn(),
        calls: Arc::clone(&calls),
        hold: None,
        fail_first: 0,
    };
    let addr = serve(app(orders, builder(&tk).build().expect("layer"))).await;

    let key = [("idempotency-key", "\"order-1\"")];
    let first = send(addr, Method::POST, "/orders", &key, "two apples").await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text());
    assert!(first.headers.get("idempotent-replayed").is_none());
    for _ in 0..3 {
        let retry = send(addr, Method::POST, "/orders", &key, "two apples").await;
        assert_eq!(retry.status, StatusCode::CREATED);
        assert_eq!(retry.body, first.body, "the same response");
        assert_eq!(retry.headers.get("location"), first.headers.get("location"));
        assert_eq!(
            retry.headers.get("content-type"),
            first.headers.get("content-type")
        );
        assert_eq!(
            retry
                .headers
                .get("idempotent-replayed")
                .map(|v| v.as_bytes()),
            Some(&b"true"[..])
        );
    }
    assert_eq!(count_orders(&db).await, 1, "four requests, one order");
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // The same key with another payload, or another path: 422, nothing runs.
    let other = send(addr, Method::POST, "/orders", &key, "three pears").await;
    assert_eq!(
        other.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        other.text()
    );
    let other = send(addr, Method::POST, "/orders?express=1", &key, "two apples").await;
    assert_eq!(other.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(count_orders(&db).await, 1);

    // A new key is a new order; no key passes; reads are not recorded.
    let second = send(
        addr,
        Method::POST,
        "/orders",
        &[("idempotency-key", "order-2")],
        "a melon",
    )
    .await;
    assert_eq!(second.status, StatusCode::CREATED);
    assert_ne!(second.body, first.body);
    assert_eq!(
        send(addr, Method::POST, "/orders", &[], "no key")
            .await
            .status,
        StatusCode::CREATED
    );
    assert_eq!(
        send(addr, Method::GET, "/orders", &key, "").await.status,
        StatusCode::OK
    );
    assert_eq!(count_orders(&db).await, 3);
    let rows: i64 = db
        .query_one(
            "SELECT count(*) FROM failover_idempotency WHERE state = 'completed'",
            &[],
        )
        .await
        .expect("count keys")
        .get(0);
    assert_eq!(rows, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrent_duplicate_gets_409_while_the_first_runs() {
    let tk = postgres().await;
    let db = setup(&tk).await;
    let (orders, mut entered, release) = holding(&tk);
    let addr = serve(app(orders, builder(&tk).build().expect("layer"))).await;
    let key = [("idempotency-key", "order-9")];

    let first =
        tokio::spawn(async move { send(addr, Method::POST, "/orders", &key, "a pear").await });
    tokio::time::timeout(WAIT, entered.recv())
        .await
        .expect("the first request runs")
        .expect("entered");

    // The first holds its transaction (and the key) until released: the
    // duplicate is answered while it does, so it did not wait for it.
    let asked = std::time::Instant::now();
    let duplicate = send(addr, Method::POST, "/orders", &key, "a pear").await;
    let waited = asked.elapsed();
    assert_eq!(
        duplicate.status,
        StatusCode::CONFLICT,
        "{}",
        duplicate.text()
    );
    assert_eq!(duplicate.retry_after(), Some(1));
    assert!(waited < Duration::from_secs(2), "the 409 took {waited:?}");
    // The first's payload is not visible until it commits: another payload
    // is a 409 too while it runs (and a 422 after).
    let other = send(addr, Method::POST, "/orders", &key, "a plum").await;
    assert_eq!(other.status, StatusCode::CONFLICT);
    // The lock is in the database, not in this process: another instance
    // of the service (its own layer and connections) sees it too.
    let second = serve(app(
        Orders {
            dsn: tk.node(0).expect("node").app_dsn(),
            calls: Arc::new(AtomicUsize::new(0)),
            hold: None,
            fail_first: 0,
        },
        builder(&tk).build().expect("layer"),
    ))
    .await;
    let elsewhere = send(second, Method::POST, "/orders", &key, "a pear").await;
    assert_eq!(
        elsewhere.status,
        StatusCode::CONFLICT,
        "{}",
        elsewhere.text()
    );
    assert_eq!(count_orders(&db).await, 0, "nothing committed yet");

    release.notify_one();
    let first = tokio::time::timeout(WAIT, first)
        .await
        .expect("first answers")
        .expect("join");
    assert_eq!(first.status, StatusCode::CREATED);
    let retry = send(addr, Method::POST, "/orders", &key, "a pear").await;
    assert_eq!(retry.body, first.body);
    let other = send(addr, Method::POST, "/orders", &key, "a plum").await;
    assert_eq!(other.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(count_orders(&db).await, 1);
}

/// `POST /strict`: inserts a row through the transaction, then runs a
/// statement that fails, then answers 201 (body `ok`) or a business 409
/// (body `reject`), as a handler that swallows the error would.
async fn strict(
    State(calls): State<Arc<AtomicUsize>>,
    Extension(tx): Extension<IdempotentTx>,
    body: String,
) -> (StatusCode, String) {
    calls.fetch_add(1, Ordering::SeqCst);
    tx.execute("INSERT INTO orders (body) VALUES ($1)", &[&body])
        .await
        .expect("insert");
    let failed = tx.query_one("SELECT 1 / 0", &[]).await;
    let error = failed.as_ref().err();
    assert!(
        error.is_some_and(|e| e.to_string().contains("division by zero")),
        "the server's words: {error:?}"
    );
    let code = error.and_then(|e| e.code()).cloned();
    assert_eq!(
        code,
        Some(failover_tower::tokio_postgres::error::SqlState::DIVISION_BY_ZERO)
    );
    if body == "reject" {
        (StatusCode::CONFLICT, "rejected".into())
    } else {
        (StatusCode::CREATED, "created".into())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_failed_statement_the_handlers_writes_never_commit() {
    let tk = postgres().await;
    let db = setup(&tk).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let app = Router::new()
        .route("/strict", post(strict))
        .with_state(Arc::clone(&calls))
        .layer(builder(&tk).build().expect("layer"));
    let addr = serve(app).await;

    // A 2xx after a failed statement would claim a write that cannot
    // commit: 500, nothing stored, and the retry runs again.
    let key = [("idempotency-key", "strict-1")];
    for run in 1..=2 {
        let answer = send(addr, Method::POST, "/strict", &key, "ok").await;
        assert_eq!(
            answer.status,
            StatusCode::INTERNAL_SERVER_ERROR,
            "{}",
            answer.text()
        );
        assert_eq!(calls.load(Ordering::SeqCst), run);
    }
    // A business refusal after it is stored, without the handler's row.
    let key = [("idempotency-key", "strict-2")];
    let refused = send(addr, Method::POST, "/strict", &key, "reject").await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.text());
    let replay = send(addr, Method::POST, "/strict", &key, "reject").await;
    assert_eq!(replay.status, StatusCode::CONFLICT);
    assert_eq!(replay.text(), "rejected");
    assert!(replay.headers.get("idempotent-replayed").is_some());
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(count_orders(&db).await, 0, "no row committed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_read_only_writer_gets_503_never_500_and_nothing_applies() {
    let tk = postgres().await;
    setup(&tk).await;
    let node = tk.node(0).expect("node");
    let admin = connect(&node.admin_dsn()).await;
    let appdb = connect(&format!("{} dbname={APP_DATABASE}", node.admin_dsn())).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let orders = Orders {
        dsn: node.app_dsn(),
        calls: Arc::clone(&calls),
        hold: None,
        fail_first: 0,
    };
    // A handler that answers 500 when its statement fails (as many do).
    let sloppy = Router::new()
        .route(
            "/orders",
            post(
                |Extension(tx): Extension<IdempotentTx>, body: String| async move {
                    match tx
                        .execute("INSERT INTO orders (body) VALUES ($1)", &[&body])
                        .await
                    {
                        Ok(_) => (StatusCode::CREATED, "created".to_owned()),
                        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
                    }
                },
            ),
        )
        .layer(builder(&tk).build().expect("layer"));
    // The DSN names the node alone: a connection lands on it read-only or not.
    let plain = serve(sloppy).await;
    // With `target_session_attrs=read-write`, a read-only node is refused.
    let read_write = serve(app(
        orders,
        IdempotencyLayer::builder(&format!(
            "{} target_session_attrs=read-write",
            node.app_dsn()
        ))
        .expect("dsn")
        .build()
        .expect("layer"),
    ))
    .await;
    for (addr, key) in [(plain, "f-1"), (read_write, "f-2")] {
        let warm = send(
            addr,
            Method::POST,
            "/orders",
            &[("idempotency-key", key)],
            "x",
        )
        .await;
        assert_eq!(warm.status, StatusCode::CREATED, "{}", warm.text());
    }

    // Fenced as a guard fences: read-only, and every session terminated.
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {APP_DATABASE} SET default_transaction_read_only = on"
        ))
        .await
        .expect("read-only");
    admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'app'",
            &[],
        )
        .await
        .expect("terminate");
    for (addr, key) in [(plain, "f-3"), (read_write, "f-4")] {
        let fenced = send(
            addr,
            Method::POST,
            "/orders",
            &[("idempotency-key", key)],
            "x",
        )
        .await;
        assert_eq!(
            fenced.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{key}: {}",
            fenced.text()
        );
        assert!(fenced.retry_after().is_some(), "{key}: Retry-After");
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "read-write: refused before the handler ran"
    );

    // Writable again (the new writer): the retries apply, once each.
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {APP_DATABASE} RESET default_transaction_read_only"
        ))
        .await
        .expect("writable");
    for (addr, key) in [(plain, "f-3"), (read_write, "f-4")] {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let answer = send(
                addr,
                Method::POST,
                "/orders",
                &[("idempotency-key", key)],
                "x",
            )
            .await;
            if answer.status == StatusCode::CREATED {
                break;
            }
            assert_eq!(
                answer.status,
                StatusCode::SERVICE_UNAVAILABLE,
                "{key}: {}",
                answer.text()
            );
            assert!(
                std::time::Instant::now() < deadline,
                "{key}: still {}",
                answer.text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let rows: i64 = appdb
        .query_one("SELECT count(*) FROM orders", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(rows, 4, "f-1 to f-4, once each");
}

/// The layer's connection to the writer, as the server sees it.
async fn layer_backends(admin: &tokio_postgres::Client) -> Vec<i32> {
    admin
        .query(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'idempotency-layer'",
            &[],
        )
        .await
        .expect("pg_stat_activity")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_killed_before_commit_answers_503_and_the_retry_applies_once() {
    let tk = postgres().await;
    let db = setup(&tk).await;
    let admin = connect(&tk.node(0).expect("node").admin_dsn()).await;
    let (orders, mut entered, release) = holding(&tk);
    let calls = Arc::clone(&orders.calls);
    let layer = IdempotencyLayer::builder(&format!(
        "{} application_name=idempotency-layer",
        tk.node(0).expect("node").app_dsn()
    ))
    .expect("dsn")
    .unavailable_retry_after(Duration::from_secs(2))
    .build()
    .expect("layer");
    let addr = serve(app(orders, layer)).await;
    let key = [("idempotency-key", "order-k")];

    // The handler has inserted its row and waits; the writer's session dies
    // (as on a crash or a fence) before the layer commits.
    let first =
        tokio::spawn(async move { send(addr, Method::POST, "/orders", &key, "a quince").await });
    tokio::time::timeout(WAIT, entered.recv())
        .await
        .expect("the first request runs")
        .expect("entered");
    let pids = layer_backends(&admin).await;
    assert_eq!(pids.len(), 1, "one connection in use: {pids:?}");
    admin
        .execute("SELECT pg_terminate_backend($1)", &[&pids[0]])
        .await
        .expect("terminate");
    release.notify_one();
    let first = tokio::time::timeout(WAIT, first)
        .await
        .expect("first answers")
        .expect("join");
    assert_eq!(
        first.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "not the handler's 201: it was never committed: {}",
        first.text()
    );
    assert_eq!(first.retry_after(), Some(2));
    assert_eq!(count_orders(&db).await, 0, "the row went with the session");

    // The retry runs once, on a new connection, and is then replayed.
    let retry = send(addr, Method::POST, "/orders", &key, "a quince").await;
    assert_eq!(retry.status, StatusCode::CREATED, "{}", retry.text());
    assert!(retry.headers.get("idempotent-replayed").is_none());
    let replay = send(addr, Method::POST, "/orders", &key, "a quince").await;
    assert_eq!(replay.body, retry.body);
    assert!(replay.headers.get("idempotent-replayed").is_some());
    assert_eq!(count_orders(&db).await, 1, "applied once");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5xx_is_not_stored_so_the_retry_runs_and_keys_expire() {
    let tk = postgres().await;
    let db = setup(&tk).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let orders = Orders {
        dsn: tk.node(0).expect("node").app_dsn(),
        calls: Arc::clone(&calls),
        hold: None,
        fail_first: 1,
    };
    let ttl = Duration::from_millis(1500);
    let layer = builder(&tk)
        .ttl(ttl)
        .sweep_interval(Duration::from_millis(1))
        .build()
        .expect("layer");
    let addr = serve(app(orders, layer)).await;
    let key = [("idempotency-key", "order-5")];

    // The first attempt fails with 503: not stored, the retry runs.
    let failed = send(addr, Method::POST, "/orders", &key, "a fig").await;
    assert_eq!(
        (failed.status, failed.text().as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "try again"),
        "the handler's own 503, not the layer's"
    );
    assert_eq!(
        count_orders(&db).await,
        0,
        "the handler inserted before answering 503: its row is rolled back"
    );
    let created = send(addr, Method::POST, "/orders", &key, "a fig").await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text());
    assert!(created.headers.get("idempotent-replayed").is_none());
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let replay = send(addr, Method::POST, "/orders", &key, "a fig").await;
    assert!(replay.headers.get("idempotent-replayed").is_some());

    // Wait until the database says the key expired (its own clock), then
    // the same key is a new request.
    let left: f64 = db
        .query_one(
            "SELECT extract(epoch FROM expires_at - now())::float8 FROM failover_idempotency WHERE key = 'order-5'",
            &[],
        )
        .await
        .expect("expiry")
        .get(0);
    assert!(
        left > 0.0 && left <= ttl.as_secs_f64(),
        "expires in {left} s"
    );
    tokio::time::sleep(Duration::from_secs_f64(left) + Duration::from_millis(50)).await;
    let again = send(addr, Method::POST, "/orders", &key, "a different fig").await;
    assert_eq!(
        again.status,
        StatusCode::CREATED,
        "an expired key is free: {}",
        again.text()
    );
    assert!(again.headers.get("idempotent-replayed").is_none());
    assert_eq!(count_orders(&db).await, 2);

    // Expired rows of other keys are swept by later requests.
    send(
        addr,
        Method::POST,
        "/orders",
        &[("idempotency-key", "order-6")],
        "kiwi",
    )
    .await;
    let expiry: f64 = db
        .query_one(
            "SELECT extract(epoch FROM max(expires_at) - now())::float8 FROM failover_idempotency",
            &[],
        )
        .await
        .expect("expiry")
        .get(0);
    tokio::time::sleep(Duration::from_secs_f64(expiry.max(0.0)) + Duration::from_millis(50)).await;
    send(
        addr,
        Method::POST,
        "/orders",
        &[("idempotency-key", "order-7")],
        "lime",
    )
    .await;
    let swept = tokio::time::timeout(WAIT, async {
        loop {
            let keys: Vec<String> = db
                .query("SELECT key FROM failover_idempotency ORDER BY key", &[])
                .await
                .expect("keys")
                .iter()
                .map(|r| r.get(0))
                .collect();
            if keys == ["order-7"] {
                return keys;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        swept.is_ok(),
        "expired keys order-5 and order-6 were not swept"
    );
}

/// The layer's first request creates its table. Several service instances
/// starting at once (and each instance's sweep, which races its first
/// request) create it together; a migration run by hand may too. None of
/// them may turn a request into a 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_creators_of_the_table_never_fail_a_request() {
    let tk = postgres().await;
    let db = setup(&tk).await;
    let dsn = tk.node(0).expect("node").app_dsn();
    let orders = || Orders {
        dsn: dsn.clone(),
        calls: Arc::new(AtomicUsize::new(0)),
        hold: None,
        fail_first: 0,
    };

    // Four instances, each with its own connections (its sweep's and its
    // request's: two each, kept idle, within the server's 40), send their
    // first request at once; three rounds, each on a table nobody created.
    for round in 0..3 {
        let table = format!("idem_race_{round}");
        let mut requests = Vec::new();
        for instance in 0..4 {
            let layer = builder(&tk)
                .table(table.clone())
                .sweep_interval(Duration::ZERO)
                .build()
                .expect("layer");
            let addr = serve(app(orders(), layer)).await;
            let key = format!("race-{round}-{instance}");
            requests.push(tokio::spawn(async move {
                send(
                    addr,
                    Method::POST,
                    "/orders",
                    &[("idempotency-key", &key)],
                    "a date",
                )
                .await
            }));
        }
        for request in requests {
            let reply = request.await.expect("request task");
            assert_eq!(
                reply.status,
                StatusCode::CREATED,
                "round {round}: {}",
                reply.text()
            );
        }
    }

    // A hand-run migration holds its CREATE TABLE open (without the
    // layer's lock) while the layer's first request arrives: the layer's
    // own CREATE waits for it, fails on the catalog once it commits, and
    // must still serve the request on that connection.
    let admin = connect(&format!("{dsn} application_name=migration")).await;
    admin
        .batch_execute(
            "BEGIN;
             CREATE TABLE idem_by_hand (
                 key text PRIMARY KEY,
                 fingerprint bytea NOT NULL,
                 owner text NOT NULL,
                 state text NOT NULL CHECK (state IN ('in_progress', 'completed')),
                 status smallint,
                 header_names text[],
                 header_values bytea[],
                 body bytea,
                 created_at timestamptz NOT NULL DEFAULT now(),
                 expires_at timestamptz NOT NULL
             );",
        )
        .await
        .expect("the migration's CREATE");
    let layer = IdempotencyLayer::builder(&format!("{dsn} application_name=idempotency-layer"))
        .expect("dsn")
        .table("idem_by_hand")
        .build()
        .expect("layer");
    let addr = serve(app(orders(), layer)).await;
    let request = tokio::spawn(async move {
        send(
            addr,
            Method::POST,
            "/orders",
            &[("idempotency-key", "by-hand")],
            "a lime",
        )
        .await
    });
    let blocked = tokio::time::timeout(WAIT, async {
        loop {
            let waiting: i64 = db
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity
                     WHERE application_name = 'idempotency-layer' AND wait_event_type = 'Lock'",
                    &[],
                )
                .await
                .expect("pg_stat_activity")
                .get(0);
            if waiting > 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(
        blocked.is_ok(),
        "the layer never waited for the migration's CREATE"
    );
    admin
        .batch_execute("COMMIT")
        .await
        .expect("commit the migration");
    let reply = request.await.expect("request task");
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    assert_eq!(count_orders(&db).await, 13);
}

/// With every connection in use, a request waits for one to come back to
/// the pool (an idle connection keeps its permit) rather than time out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_waiting_for_a_connection_gets_one_given_back() {
    let tk = postgres().await;
    let db = setup(&tk).await;
    let (orders, mut entered, release) = holding(&tk);
    let timeout = Duration::from_secs(6);
    let layer = builder(&tk)
        .max_connections(1)
        .statement_timeout(timeout)
        .build()
        .expect("layer");
    let addr = serve(app(orders, layer)).await;

    // The first request holds the only connection until released.
    let first = tokio::spawn(async move {
        send(
            addr,
            Method::POST,
            "/orders",
            &[("idempotency-key", "one")],
            "a plum",
        )
        .await
    });
    tokio::time::timeout(WAIT, entered.recv())
        .await
        .expect("the first request runs")
        .expect("entered");
    let second = tokio::spawn(async move {
        send(
            addr,
            Method::POST,
            "/orders",
            &[("idempotency-key", "two")],
            "a sloe",
        )
        .await
    });
    // Give the second a second to queue for the connection (if it has not
    // by then, the test only proves less); the first then finishes well
    // inside the second's wait, and its connection goes back to the pool.
    tokio::time::sleep(Duration::from_secs(1)).await;
    release.notify_one();
    let first = first.await.expect("first");
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text());
    let second = second.await.expect("second");
    assert_eq!(
        second.status,
        StatusCode::CREATED,
        "the second request did not get the connection the first gave back: {}",
        second.text()
    );
    assert_eq!(count_orders(&db).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_database_nothing_runs_and_the_answer_is_503() {
    let tk = postgres().await;
    setup(&tk).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let orders = Orders {
        dsn: tk.node(0).expect("node").app_dsn(),
        calls: Arc::clone(&calls),
        hold: None,
        fail_first: 0,
    };
    let port = dead_port().await;
    let nowhere =
        IdempotencyLayer::builder(&format!("host=127.0.0.1 port={port} user=app dbname=appdb"))
            .expect("dsn")
            .connect_timeout(Duration::from_secs(2))
            .unavailable_retry_after(Duration::from_secs(3))
            .build()
            .expect("layer");
    let addr = serve(app(orders.clone(), nowhere)).await;
    let answer = send(
        addr,
        Method::POST,
        "/orders",
        &[("idempotency-key", "k1")],
        "x",
    )
    .await;
    assert_eq!(
        answer.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        answer.text()
    );
    assert_eq!(answer.retry_after(), Some(3));
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "the mutation never runs without its record"
    );

    // The real database stops, then comes back: the layer reconnects.
    let addr = serve(app(
        orders,
        builder(&tk)
            .connect_timeout(Duration::from_secs(2))
            .build()
            .expect("layer"),
    ))
    .await;
    assert_eq!(
        send(
            addr,
            Method::POST,
            "/orders",
            &[("idempotency-key", "k2")],
            "x"
        )
        .await
        .status,
        StatusCode::CREATED
    );
    let tk = tokio::task::spawn_blocking(move || {
        tk.stop(0).expect("stop");
        tk
    })
    .await
    .expect("join");
    let answer = send(
        addr,
        Method::POST,
        "/orders",
        &[("idempotency-key", "k3")],
        "x",
    )
    .await;
    assert_eq!(
        answer.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        answer.text()
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let tk = tokio::task::spawn_blocking(move || {
        tk.start_node(0).expect("start");
        tk
    })
    .await
    .expect("join");
    let db = setup_again(&tk).await;
    // A client retries as told: for a second after a failed connection
    // attempt the layer answers 503 at once rather than try again.
    let mut answer = send(
        addr,
        Method::POST,
        "/orders",
        &[("idempotency-key", "k3")],
        "x",
    )
    .await;
    for _ in 0..10 {
        if answer.status != StatusCode::SERVICE_UNAVAILABLE {
            break;
        }
        let wait = answer.retry_after().expect("Retry-After on a 503");
        assert!(wait <= 3, "{wait}");
        tokio::time::sleep(Duration::from_secs(wait)).await;
        answer = send(
            addr,
            Method::POST,
            "/orders",
            &[("idempotency-key", "k3")],
            "x",
        )
        .await;
    }
    assert_eq!(
        answer.status,
        StatusCode::CREATED,
        "reconnected: {}",
        answer.text()
    );
    assert_eq!(count_orders(&db).await, 2);
}

/// A connection after a restart (the table exists).
async fn setup_again(tk: &PgTestCluster) -> tokio_postgres::Client {
    connect(&tk.node(0).expect("node").app_dsn()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_keys_missing_keys_and_large_bodies_are_refused_before_anything_runs() {
    // These answers come before the database is touched: a DSN to nowhere.
    let port = dead_port().await;
    let layer =
        IdempotencyLayer::builder(&format!("host=127.0.0.1 port={port} user=app dbname=appdb"))
            .expect("dsn")
            .required(true)
            .max_request_body(16)
            .build()
            .expect("layer");
    let app = Router::new()
        .route(
            "/orders",
            post(|| async { "created" }).get(|| async { "[]" }),
        )
        .layer(layer);
    let addr = serve(app).await;
    let missing = send(addr, Method::POST, "/orders", &[], "x").await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    assert!(
        missing.text().contains("Idempotency-Key"),
        "{}",
        missing.text()
    );
    for bad in ["\"unclosed", "\"\"", &"k".repeat(256)] {
        let answer = send(
            addr,
            Method::POST,
            "/orders",
            &[("idempotency-key", bad)],
            "x",
        )
        .await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{bad}: {}",
            answer.text()
        );
    }
    let large = send(
        addr,
        Method::POST,
        "/orders",
        &[("idempotency-key", "k")],
        &"x".repeat(17),
    )
    .await;
    assert_eq!(large.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        send(addr, Method::GET, "/orders", &[], "").await.status,
        StatusCode::OK
    );

    for (table, ok) in [
        ("failover_idempotency", true),
        ("app.keys_2", true),
        ("Keys", false),
        ("a;drop", false),
        ("1abc", false),
    ] {
        let built = IdempotencyLayer::builder("host=127.0.0.1 user=app")
            .expect("dsn")
            .table(table)
            .build();
        assert_eq!(built.is_ok(), ok, "{table}");
        if let Err(e) = built {
            assert!(e.to_string().contains("`table`"), "{e}");
        }
    }
}

#[test]
fn executions_replays_and_mismatches_are_counted() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // The current-thread runtime runs the server and the layer's tasks on
    // this thread, where the local recorder is installed.
    metrics::with_local_recorder(&recorder, || {
        runtime.block_on(async {
            let tk = postgres().await;
            setup(&tk).await;
            let orders = Orders {
                dsn: tk.node(0).expect("node").app_dsn(),
                calls: Arc::new(AtomicUsize::new(0)),
                hold: None,
                fail_first: 0,
            };
            let addr = serve(app(orders, builder(&tk).build().expect("layer"))).await;
            let key = [("idempotency-key", "m-1")];
            send(addr, Method::POST, "/orders", &key, "one").await;
            send(addr, Method::POST, "/orders", &key, "one").await;
            send(addr, Method::POST, "/orders", &key, "two").await;
            send(addr, Method::GET, "/orders", &[], "").await;
        })
    });
    let text = handle.render();
    for outcome in ["executed", "replayed", "mismatch", "passed"] {
        let line = format!("failover_tower_idempotency_total{{outcome=\"{outcome}\"}} 1");
        assert!(text.contains(&line), "missing {line:?} in:\n{text}");
    }
}
