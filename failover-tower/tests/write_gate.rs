//! The write gate on a real axum service: during a promotion mutations get
//! 503 with a Retry-After within the planner's bound, and reads pass.

mod common;

use std::time::Duration;

use axum::routing::get;
use axum::Router;
use common::{promoting, send, serve, snapshot};
use failover_tower::{FailoverState, MutationClassifier, Snapshot, WriteGateLayer};
use http::{Method, StatusCode};
use metrics_exporter_prometheus::PrometheusBuilder;

fn app(state: FailoverState) -> Router {
    Router::new()
        .route(
            "/orders",
            get(|| async { "[]" }).post(|| async { "created" }),
        )
        .route("/search", axum::routing::post(|| async { "found" }))
        .layer(
            WriteGateLayer::new(state).classifier(MutationClassifier::with(|head| {
                failover_tower::is_mutating(head.method) && head.uri.path() != "/search"
            })),
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_a_promotion_writes_get_503_within_the_bound_and_reads_pass() {
    let normal = snapshot(&[("us-east", 100, 1.0), ("us-west", 100, 1.0)]);
    let (publisher, state) = FailoverState::channel(normal.clone());
    let addr = serve(app(state)).await;

    assert_eq!(
        send(addr, Method::POST, "/orders", &[], "{}").await.status,
        StatusCode::OK
    );

    // The writer moves: the planner bounds the rest at 12.5 s.
    let bound = Duration::from_millis(12_500);
    publisher.publish(promoting(normal.clone(), "fencing", bound));
    let refused = send(addr, Method::POST, "/orders", &[], "{}").await;
    assert_eq!(
        refused.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        refused.text()
    );
    let retry_after = refused.retry_after().expect("Retry-After");
    assert!(
        (1..=13).contains(&retry_after),
        "Retry-After {retry_after} s must be within the bound rounded up (13 s)"
    );
    assert!(refused.text().contains("fencing"), "{}", refused.text());
    for method in [Method::PUT, Method::PATCH, Method::DELETE] {
        let answer = send(addr, method.clone(), "/orders", &[], "{}").await;
        assert!(
            answer.status == StatusCode::SERVICE_UNAVAILABLE,
            "{method} during a promotion: {}",
            answer.status
        );
    }
    // Reads pass, and so does what the classifier says only reads.
    let read = send(addr, Method::GET, "/orders", &[], "").await;
    assert_eq!((read.status, read.text().as_str()), (StatusCode::OK, "[]"));
    let search = send(addr, Method::POST, "/search", &[], "{}").await;
    assert_eq!(search.status, StatusCode::OK);

    // A bound that ran out still says to retry after at least 1 s.
    publisher.publish(promoting(normal.clone(), "promoting", Duration::ZERO));
    let late = send(addr, Method::POST, "/orders", &[], "{}").await;
    assert_eq!(late.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(late.retry_after(), Some(1));

    // The new writer: writes pass again.
    let mut after = normal.clone();
    after.writer.node = Some("pg-west".to_owned());
    after.writer.epoch = 2;
    publisher.publish(after);
    assert_eq!(
        send(addr, Method::POST, "/orders", &[], "{}").await.status,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_writer_or_an_unknown_one_while_stale_holds_writes() {
    let normal = snapshot(&[("us-east", 100, 1.0)]);
    let (publisher, state) = FailoverState::channel(Snapshot::unknown());
    let addr = serve(app(state)).await;

    // Before any contact: the writer is unknown and the state stale.
    let first = send(addr, Method::POST, "/orders", &[], "{}").await;
    assert_eq!(first.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(first.retry_after(), Some(5), "the fallback Retry-After");
    assert_eq!(
        send(addr, Method::GET, "/orders", &[], "").await.status,
        StatusCode::OK
    );

    // Fenced writer.
    let mut fenced = normal.clone();
    fenced.writer.fenced = true;
    publisher.publish(fenced);
    let answer = send(addr, Method::POST, "/orders", &[], "{}").await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(answer.text().contains("fenced"), "{}", answer.text());

    // Contact lost with a known, unfenced writer: the last state holds,
    // writes pass (the database itself refuses a fenced node's writes).
    publisher.publish(normal.clone());
    publisher.mark_stale("controller unreachable");
    assert!(publisher.current().is_stale());
    assert_eq!(
        send(addr, Method::POST, "/orders", &[], "{}").await.status,
        StatusCode::OK
    );

    // Contact lost with no writer known: writes wait.
    let mut unknown = normal.clone();
    unknown.writer.node = None;
    publisher.publish(unknown);
    assert_eq!(
        send(addr, Method::POST, "/orders", &[], "{}").await.status,
        StatusCode::OK,
        "fresh, no writer: no database to protect"
    );
    publisher.mark_stale("controller unreachable");
    let answer = send(addr, Method::POST, "/orders", &[], "{}").await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(answer.text().contains("stale"), "{}", answer.text());
}

#[test]
fn every_decision_is_counted() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // The current-thread runtime runs the server on this thread, where the
    // local recorder is installed.
    metrics::with_local_recorder(&recorder, || {
        runtime.block_on(async {
            let normal = snapshot(&[("us-east", 100, 1.0)]);
            let (publisher, state) = FailoverState::channel(normal.clone());
            let addr = serve(app(state)).await;
            send(addr, Method::GET, "/orders", &[], "").await;
            send(addr, Method::POST, "/orders", &[], "{}").await;
            publisher.publish(promoting(normal, "claiming", Duration::from_secs(3)));
            send(addr, Method::POST, "/orders", &[], "{}").await;
            send(addr, Method::POST, "/orders", &[], "{}").await;
        })
    });
    let text = handle.render();
    for (outcome, n) in [("read", 1), ("open", 1), ("promotion", 2)] {
        let line = format!("failover_tower_write_gate_total{{outcome=\"{outcome}\"}} {n}");
        assert!(text.contains(&line), "missing {line:?} in:\n{text}");
    }
}
