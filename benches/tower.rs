//! Per-request cost of the `failover::tower` layers on a hello-world axum
//! service called in-process (`tower::ServiceExt::oneshot`), against the
//! bare service in the same run: write gate + shedding + passive health +
//! idempotency on a GET (not a mutation: every layer lets it through), and
//! separately the idempotency round trips of a keyed POST (its one
//! transaction: open, run the handler, store and commit; or a replay)
//! against a real PostgreSQL started by the testkit.
//!
//! ```text
//! cargo bench --features full --bench tower -- --measurement-time 5
//! ```

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::routing::get;
use axum::Router;
use criterion::{criterion_group, criterion_main, Criterion};
use failover::tower::{
    FailoverState, IdempotencyLayer, PassiveHealthLayer, RegionTraffic, RegionView, ShedLayer,
    Snapshot, WriteGateLayer, WriterView,
};
use failover_testkit::postgres::PgTestCluster;
use http::{Method, Request, StatusCode};
use tower::ServiceExt;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A state in which everything passes: a known writer, no promotion, two
/// regions serving well under capacity.
fn calm_state() -> FailoverState {
    let mut snapshot = Snapshot::fresh();
    for name in ["us-east", "us-west"] {
        let mut region = RegionView::new(name);
        region.weight = 100;
        snapshot.regions.push(region);
    }
    let mut writer = WriterView::default();
    writer.node = Some("pg-east".into());
    writer.epoch = 1;
    snapshot.writer = writer;
    let (publisher, state) = FailoverState::channel(snapshot.clone());
    publisher.publish(snapshot);
    // The state keeps its last value once the publisher is gone.
    std::mem::forget(publisher);
    state
}

fn bare() -> Router {
    Router::new().route(
        "/hello",
        get(|| async { "hello" }).post(|| async { "created" }),
    )
}

fn passive() -> PassiveHealthLayer {
    PassiveHealthLayer::builder("us-east")
        .slow_after(Duration::from_millis(500))
        .sink(|traffic: RegionTraffic| {
            black_box(traffic);
        })
}

fn get_hello() -> Request<Body> {
    Request::builder()
        .uri("/hello")
        .body(Body::empty())
        .expect("request")
}

fn layers(c: &mut Criterion) {
    let rt = runtime();
    let state = calm_state();
    // Nothing connects until a keyed mutation: a GET never touches it.
    let idempotency = IdempotencyLayer::builder("host=127.0.0.1 port=1 user=none dbname=none")
        .expect("dsn")
        .build()
        .expect("layer");
    let plain = bare();
    let layered = {
        let _guard = rt.enter();
        bare()
            .layer(idempotency)
            .layer(passive())
            .layer(ShedLayer::new(state.clone()))
            .layer(WriteGateLayer::new(state))
    };
    let mut group = c.benchmark_group("tower_layers_get");
    group.bench_function("bare", |b| {
        b.iter(|| {
            let response = rt
                .block_on(plain.clone().oneshot(get_hello()))
                .expect("infallible");
            assert_eq!(response.status(), StatusCode::OK);
            black_box(response)
        })
    });
    group.bench_function("write_gate+shed+passive_health+idempotency", |b| {
        b.iter(|| {
            let response = rt
                .block_on(layered.clone().oneshot(get_hello()))
                .expect("infallible");
            assert_eq!(response.status(), StatusCode::OK);
            black_box(response)
        })
    });
    // Each layer alone, to see where the cost is.
    let alone: [(&str, Router); 4] = {
        let _guard = rt.enter();
        let state = calm_state();
        [
            (
                "write_gate",
                bare().layer(WriteGateLayer::new(state.clone())),
            ),
            ("shed", bare().layer(ShedLayer::new(state))),
            ("passive_health", bare().layer(passive())),
            (
                "idempotency",
                bare().layer(
                    IdempotencyLayer::builder("host=127.0.0.1 port=1 user=none dbname=none")
                        .expect("dsn")
                        .build()
                        .expect("layer"),
                ),
            ),
        ]
    };
    for (name, app) in alone {
        group.bench_function(name, |b| {
            b.iter(|| {
                let response = rt
                    .block_on(app.clone().oneshot(get_hello()))
                    .expect("infallible");
                assert_eq!(response.status(), StatusCode::OK);
                black_box(response)
            })
        });
    }
    group.finish();
}

fn idempotency_round_trip(c: &mut Criterion) {
    let cluster = PgTestCluster::builder()
        .start()
        .expect("PostgreSQL starts (the testkit runs it as the postgres user)");
    let dsn = cluster.node(0).expect("node 0").app_dsn();
    let rt = runtime();
    let app = {
        let _guard = rt.enter();
        bare().layer(
            IdempotencyLayer::builder(&dsn)
                .expect("dsn")
                .build()
                .expect("layer"),
        )
    };
    let keys = AtomicU64::new(0);
    let post = |key: Option<String>| {
        let mut req = Request::builder().method(Method::POST).uri("/hello");
        if let Some(key) = key {
            req = req.header("idempotency-key", key);
        }
        req.body(Body::from("{\"n\":1}")).expect("request")
    };
    // A fresh cluster per run: keys only need to be unique within it.
    let run = std::process::id();
    // Warm the connection and create the table.
    let first = rt
        .block_on(app.clone().oneshot(post(Some(format!("warm-{run}")))))
        .expect("infallible");
    assert_eq!(first.status(), StatusCode::OK);

    let mut group = c.benchmark_group("idempotency_post");
    group.bench_function("post_without_key", |b| {
        b.iter(|| {
            let response = rt
                .block_on(app.clone().oneshot(post(None)))
                .expect("infallible");
            assert_eq!(response.status(), StatusCode::OK);
            black_box(response)
        })
    });
    group.bench_function("post_new_key_one_transaction", |b| {
        b.iter(|| {
            let key = format!("bench-{run}-{}", keys.fetch_add(1, Ordering::Relaxed));
            let response = rt
                .block_on(app.clone().oneshot(post(Some(key))))
                .expect("infallible");
            assert_eq!(response.status(), StatusCode::OK);
            black_box(response)
        })
    });
    group.bench_function("post_replayed_key", |b| {
        b.iter(|| {
            let response = rt
                .block_on(app.clone().oneshot(post(Some(format!("warm-{run}")))))
                .expect("infallible");
            assert_eq!(response.status(), StatusCode::OK);
            black_box(response)
        })
    });
    group.finish();
    drop(app);
    drop(rt);
    drop(cluster);
}

criterion_group!(benches, layers, idempotency_round_trip);
criterion_main!(benches);
