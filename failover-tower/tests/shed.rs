//! Shedding on a real axum service: at 167 % of capacity low-priority
//! requests are shed and critical ones all pass.

mod common;

use std::time::Duration;

use axum::routing::get;
use axum::Router;
use common::{send, serve, snapshot};
use failover_tower::{FailoverState, Priority, ShedLayer};
use http::{Method, StatusCode};

fn app(layer: ShedLayer) -> Router {
    Router::new()
        .route("/feed", get(|| async { "feed" }))
        .route("/checkout", get(|| async { "paid" }))
        .layer(layer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_167_percent_low_priority_is_shed_and_critical_passes() {
    // Both regions serve: 2.0 of peak capacity, 50 % loaded.
    let both = snapshot(&[("us-east", 100, 1.0), ("us-west", 100, 0.6)]);
    let (publisher, state) = FailoverState::channel(both);
    let addr = serve(app(
        ShedLayer::new(state.clone()).retry_after(Duration::from_secs(7))
    ))
    .await;

    for priority in ["low", "normal", "high", "critical"] {
        let answer = send(addr, Method::GET, "/feed", &[("x-priority", priority)], "").await;
        assert_eq!(answer.status, StatusCode::OK, "{priority} under capacity");
    }

    // us-east is lost: the standby built for 60 % of peak carries 167 %.
    let survivor = snapshot(&[("us-east", 0, 1.0), ("us-west", 100, 0.6)]);
    publisher.publish(survivor);
    assert_eq!((state.snapshot().load().ratio() * 100.0).round(), 167.0);

    let mut shed = 0;
    let mut passed = 0;
    for _ in 0..20 {
        let low = send(addr, Method::GET, "/feed", &[("x-priority", "low")], "").await;
        if low.status == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(low.retry_after(), Some(7));
            assert!(low.text().contains("167 %"), "{}", low.text());
            shed += 1;
        }
        let critical = send(
            addr,
            Method::GET,
            "/checkout",
            &[("x-priority", "critical")],
            "",
        )
        .await;
        assert_eq!(critical.status, StatusCode::OK, "critical must pass");
        passed += 1;
    }
    assert_eq!((shed, passed), (20, 20));
    // Normal (also the default for a missing or unknown header) passes at
    // the default threshold.
    for headers in [
        &[("x-priority", "normal")][..],
        &[],
        &[("x-priority", "urgent!")],
    ] {
        let answer = send(addr, Method::GET, "/feed", headers, "").await;
        assert_eq!(answer.status, StatusCode::OK, "{headers:?}");
    }
    // A stale state sheds by its last load.
    publisher.mark_stale("controller unreachable");
    let low = send(addr, Method::GET, "/feed", &[("x-priority", "low")], "").await;
    assert_eq!(low.status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_classifier_and_a_higher_threshold_shed_all_but_critical_paths() {
    let survivor = snapshot(&[("us-east", 0, 1.0), ("us-west", 100, 0.6)]);
    let (_publisher, state) = FailoverState::channel(survivor);
    let layer = ShedLayer::new(state)
        .shed_below(Priority::Critical)
        .classifier(|head| match head.uri.path() {
            "/checkout" => Priority::Critical,
            _ => Priority::High,
        });
    let addr = serve(app(layer)).await;
    let feed = send(
        addr,
        Method::GET,
        "/feed",
        &[("x-priority", "critical")],
        "",
    )
    .await;
    assert_eq!(
        feed.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "the classifier, not the header, decides"
    );
    let checkout = send(addr, Method::GET, "/checkout", &[], "").await;
    assert_eq!(checkout.status, StatusCode::OK);
}

#[test]
fn shed_and_served_requests_are_counted_by_priority() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // The current-thread runtime serves on this thread, where the local
    // recorder is installed.
    metrics::with_local_recorder(&recorder, || {
        runtime.block_on(async {
            let survivor = snapshot(&[("us-east", 0, 1.0), ("us-west", 100, 0.6)]);
            let (_publisher, state) = FailoverState::channel(survivor);
            let addr = serve(app(ShedLayer::new(state))).await;
            for priority in ["low", "low", "critical"] {
                send(addr, Method::GET, "/feed", &[("x-priority", priority)], "").await;
            }
        })
    });
    let text = handle.render();
    for line in [
        "failover_tower_shed_total{outcome=\"shed\",priority=\"low\"} 2",
        "failover_tower_shed_total{outcome=\"served\",priority=\"critical\"} 1",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
}
