//! The failover state from a controller's admin API that cannot be
//! reached: it says so, and the write gate holds mutations while the
//! writer is unknown.

mod common;

use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use common::{dead_port, send, serve, WAIT};
use failover_tower::{RemoteStatus, WriteGateLayer};
use http::{Method, StatusCode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_that_cannot_be_reached_is_stale_and_says_why() {
    let port = dead_port().await;
    let started = Instant::now();
    let (state, task) = RemoteStatus::new(&format!("http://127.0.0.1:{port}/status"))
        .expect("url")
        .interval(Duration::from_millis(50))
        .timeout(Duration::from_millis(500))
        .spawn();
    let stale = tokio::time::timeout(
        WAIT,
        state.wait_for(|s| {
            s.stale
                .as_ref()
                .is_some_and(|s| s.reason.contains("connect"))
        }),
    )
    .await
    .expect("a failed poll within the bound")
    .expect("the source runs");
    let staleness = stale.stale.as_ref().expect("stale");
    assert!(
        staleness.since >= started,
        "stale since the start: never in contact"
    );
    assert!(
        staleness.reason.contains(&format!("127.0.0.1:{port}")),
        "{}",
        staleness.reason
    );
    assert!(stale.writer.node.is_none());

    let app = Router::new()
        .route(
            "/orders",
            get(|| async { "[]" }).post(|| async { "created" }),
        )
        .layer(WriteGateLayer::new(state.clone()));
    let addr = serve(app).await;
    assert_eq!(
        send(addr, Method::GET, "/orders", &[], "").await.status,
        StatusCode::OK
    );
    assert_eq!(
        send(addr, Method::POST, "/orders", &[], "{}").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );

    // The server holds its clone of the state, so the poller runs on.
    assert!(!task.is_finished());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_poller_ends_when_every_state_is_dropped() {
    let port = dead_port().await;
    let (state, task) = RemoteStatus::new(&format!("http://127.0.0.1:{port}/status"))
        .expect("url")
        .interval(Duration::from_millis(50))
        .spawn();
    let second = state.clone();
    drop(state);
    tokio::time::timeout(
        WAIT,
        second.wait_for(|s| s.stale.as_ref().is_some_and(|s| s.reason.contains("GET"))),
    )
    .await
    .expect("a poll within the bound");
    assert!(!task.is_finished());
    drop(second);
    tokio::time::timeout(WAIT, task)
        .await
        .expect("the poller ends")
        .expect("join");
}

#[test]
fn bad_urls_are_refused_naming_the_field() {
    for url in ["https://controller:9000/status", "not a url", "/status"] {
        let error = RemoteStatus::new(url).expect_err(url).to_string();
        assert!(error.contains("`url`"), "{error}");
    }
}
