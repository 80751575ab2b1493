//! Passive health on a real axum service over HTTP: each response is
//! classified (5xx, slow) per region and the aggregates reach the sink at
//! most once per reporting period.

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::Path;
use axum::routing::get;
use axum::Router;
use common::{send, serve};
use failover_tower::{PassiveHealthLayer, RegionTraffic};
use http::{Method, StatusCode};
use tokio::sync::mpsc;

fn app(layer: PassiveHealthLayer) -> Router {
    Router::new()
        .route(
            "/status/{code}",
            get(|Path(code): Path<u16>| async move {
                StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST)
            }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(120)).await;
                "late"
            }),
        )
        .layer(layer)
}

/// Sums what the sink got per region until `requests` requests are in.
async fn collect(
    rx: &mut mpsc::Receiver<RegionTraffic>,
    region: &str,
    requests: u32,
) -> (u32, u32, u32, u32) {
    let mut sum = (0, 0, 0, 0);
    while sum.0 < requests {
        let t = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("an aggregate within 10 s")
            .expect("sink open");
        if &*t.region == region {
            sum.0 += t.requests;
            sum.1 += t.errors;
            sum.2 += t.slow;
            sum.3 = t.consecutive_errors;
        }
    }
    sum
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_are_classified_per_region_and_reported_in_aggregates() {
    let (tx, mut rx) = mpsc::channel(64);
    let layer = PassiveHealthLayer::builder("us-east")
        .slow_after(Duration::from_millis(100))
        .report_every(Duration::from_millis(50))
        .region_of(|head| {
            head.headers
                .get("x-upstream")
                .and_then(|v| v.to_str().ok())
                .map(Arc::from)
        })
        .sink(tx);
    let addr = serve(app(layer)).await;

    // us-east: 2 ok, 2 errors, 1 slow. us-west (by header): 1 error.
    for path in [
        "/status/200",
        "/status/500",
        "/status/404",
        "/status/503",
        "/slow",
    ] {
        send(addr, Method::GET, path, &[], "").await;
    }
    send(
        addr,
        Method::GET,
        "/status/502",
        &[("x-upstream", "us-west")],
        "",
    )
    .await;
    // Flush: the period has passed by now; one more request reports.
    tokio::time::sleep(Duration::from_millis(60)).await;
    send(addr, Method::GET, "/status/204", &[], "").await;

    let east = collect(&mut rx, "us-east", 6).await;
    assert_eq!(east, (6, 2, 1, 0), "requests, errors, slow, in a row");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_in_a_row_carry_across_reports_and_a_success_resets_them() {
    let (tx, mut rx) = mpsc::channel(64);
    let layer = PassiveHealthLayer::builder("us-east")
        .report_every(Duration::from_millis(1))
        .sink(tx);
    let addr = serve(app(layer)).await;
    let mut last = 0;
    for i in 1..=4 {
        tokio::time::sleep(Duration::from_millis(2)).await;
        let answer = send(addr, Method::GET, "/status/500", &[], "").await;
        assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR);
        last = collect(&mut rx, "us-east", 1).await.3;
        assert_eq!(last, i);
    }
    tokio::time::sleep(Duration::from_millis(2)).await;
    send(addr, Method::GET, "/status/200", &[], "").await;
    assert_eq!(collect(&mut rx, "us-east", 1).await, (1, 0, 0, 0));
    assert_eq!(last, 4);
}
