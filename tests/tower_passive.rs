//! Passive health end to end: a real runtime probes two regional APIs whose
//! `/healthz` passes, while an axum service in us-east — with
//! `failover::tower::passive_health` in front of its handler — returns 500
//! on half its requests. The runtime drains us-east on what the users see;
//! a single slow request drains nothing.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use common::admin::request;
use common::*;
use failover::decision::{EventKind, Health, LatencyRule, PassivePolicy, Policy};
use failover::runtime::admin::{AdminAuth, AdminConfig};
use failover::tower::{passive_health, AdminTrafficSink, PassiveHealthLayer};
use failover::{RuntimeBuilder, RuntimeHandle, RuntimeStatus};
use http::StatusCode;

const WINDOW: Duration = Duration::from_secs(3);

/// [`fast_policy`] with passive health: a 3 s window, at least 20
/// requests, more than 25 % errors; slower than 200 ms is slow, more than
/// half slow fails.
fn policy() -> Policy {
    Policy {
        passive: Some(PassivePolicy {
            window: WINDOW,
            min_requests: 20,
            max_error_rate: 0.25,
            consecutive_5xx: None,
            latency: Some(LatencyRule {
                threshold: Duration::from_millis(200),
                max_rate: 0.5,
            }),
        }),
        ..fast_policy()
    }
}

/// The us-east service: `/orders` fails every other request when
/// `failing`, `/report` is slow.
async fn serve_east(layer: PassiveHealthLayer, failing: bool) -> SocketAddr {
    let calls = Arc::new(AtomicU64::new(0));
    let app = Router::new()
        .route(
            "/orders",
            get(move || {
                let n = calls.fetch_add(1, Ordering::Relaxed);
                async move {
                    if failing && n % 2 == 0 {
                        StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        StatusCode::OK
                    }
                }
            }),
        )
        .route(
            "/report",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                StatusCode::OK
            }),
        )
        .layer(layer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    // axum's own `serve` needs its `tokio` feature; hyper serves it here.
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let service = hyper_util::service::TowerToHyperService::new(app.clone());
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service),
            );
        }
    });
    addr
}

fn east(status: &RuntimeStatus) -> (Health, u32) {
    let r = &status.controller.regions[EAST.index()];
    (r.health, r.weight)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_5xx_in_us_east_drains_it_while_its_probes_pass() {
    let policy = policy();
    let config = config(topology(), policy.clone());
    let regions = TwoRegions::start();
    let runtime = regions.run(RuntimeBuilder::new(config.clone())).await;
    let handle = runtime.handle();
    let (layer, _task) = passive_health(&handle, &config, "us-east", Duration::from_millis(100))
        .expect("known region");
    half_5xx_drains_us_east(&handle, &regions, &policy, layer).await;
}

/// The service runs in "another process": its aggregates reach the
/// runtime only through the admin API's `POST /traffic`, posted by
/// `AdminTrafficSink`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_5xx_reported_over_the_admin_api_drains_us_east() {
    const TOKEN: &str = "service-traffic-token-0123456789";
    let policy = policy();
    let config = config(topology(), policy.clone());
    let regions = TwoRegions::start();
    let admin = AdminConfig::new(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        AdminAuth::new().token("orders-service", TOKEN),
    );
    let runtime = regions
        .run(RuntimeBuilder::new(config.clone()).admin_config(admin))
        .await;
    let handle = runtime.handle();
    let url = format!(
        "http://{}",
        runtime.admin_addr().expect("the admin API listens")
    );
    let (sink, _tasks) = AdminTrafficSink::builder(&[url])
        .expect("a valid URL")
        .token(TOKEN)
        .spawn();
    let layer = PassiveHealthLayer::builder("us-east")
        .report_every(Duration::from_millis(100))
        .slow_after(Duration::from_millis(200))
        .sink(sink);
    let before = handle.status().traffic_reports_handled;
    half_5xx_drains_us_east(&handle, &regions, &policy, layer).await;
    assert!(
        handle.status().traffic_reports_handled > before,
        "the runtime handled the posted reports"
    );
}

/// Half of us-east's `/orders` answers are 500 while its `/healthz`
/// passes: the runtime behind `handle` drains us-east on what `layer`
/// reports, within the window, and no probe saw it down.
async fn half_5xx_drains_us_east(
    handle: &RuntimeHandle,
    regions: &TwoRegions,
    policy: &Policy,
    layer: PassiveHealthLayer,
) {
    wait_status(handle, Duration::from_secs(15), "both regions up", |s| {
        s.controller.regions.iter().all(|r| r.health == Health::Up)
    })
    .await;
    let mut events = handle.subscribe_events();
    let addr = serve_east(layer, true).await;

    // Users keep calling us-east; half of their requests fail.
    let start = Instant::now();
    let users = tokio::spawn(async move {
        loop {
            request(addr, "GET", "/orders", None, b"").await;
        }
    });
    let drained = wait_status(handle, Duration::from_secs(30), "us-east drained", |s| {
        east(s) == (Health::Down, 0)
    })
    .await;
    let took = start.elapsed();
    users.abort();

    // Within the window plus fall reports (every 100 ms); 2 s more for
    // scheduling on a loaded machine.
    let bound = WINDOW + Duration::from_millis(100) * policy.fall + Duration::from_secs(2);
    assert!(took <= bound, "drained after {took:?}, bound {bound:?}");
    assert!(
        drained.controller.regions[WEST.index()].weight > 0,
        "us-west takes the traffic"
    );
    // The probes passed all along: what drained it was its users.
    let mut failing = None;
    while let Ok(event) = events.try_recv() {
        match event.kind {
            EventKind::UsersFailing {
                region,
                requests,
                errors,
                ..
            } if region == EAST => failing = Some((requests, errors)),
            EventKind::VantageDown { region, .. } | EventKind::RegionDown { region, .. }
                if region == EAST =>
            {
                panic!("a probe saw us-east down: {event:?}")
            }
            _ => {}
        }
    }
    let (requests, errors) = failing.expect("a UsersFailing event for us-east");
    assert!(
        requests >= 20,
        "judged over at least min_requests: {requests}"
    );
    assert!(
        (0.4..=0.6).contains(&(f64::from(errors) / f64::from(requests))),
        "{errors} of {requests}"
    );
    let (code, _) = request(regions.east.addr(), "GET", "/healthz", None, b"").await;
    assert_eq!(code, 200, "us-east's health endpoint still passes");
    assert!(drained
        .recent_events
        .iter()
        .any(|e| e.contains("users of us-east are failing")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_slow_request_drains_nothing() {
    let policy = policy();
    let config = config(topology(), policy.clone());
    let regions = TwoRegions::start();
    let runtime = regions.run(RuntimeBuilder::new(config.clone())).await;
    let handle = runtime.handle();
    wait_status(&handle, Duration::from_secs(15), "both regions up", |s| {
        s.controller.regions.iter().all(|r| r.health == Health::Up)
    })
    .await;
    let mut events = handle.subscribe_events();
    let (layer, _task) = passive_health(&handle, &config, "us-east", Duration::from_millis(100))
        .expect("known region");
    let addr = serve_east(layer, false).await;

    // One slow request alone, reported on its own …
    let (code, _) = request(addr, "GET", "/report", None, b"").await;
    assert_eq!(code, 200);
    // … then enough fast ones to judge the window, until the runtime has
    // handled reports for a whole second after the slow one.
    let before = handle.status().traffic_reports_handled;
    let users = tokio::spawn(async move {
        loop {
            request(addr, "GET", "/orders", None, b"").await;
        }
    });
    let after = wait_status(&handle, Duration::from_secs(30), "ten more reports", |s| {
        s.traffic_reports_handled >= before + 10
    })
    .await;
    users.abort();
    assert_eq!(east(&after).0, Health::Up);
    assert!(east(&after).1 > 0, "us-east still serves");
    while let Ok(event) = events.try_recv() {
        assert!(
            !matches!(event.kind, EventKind::UsersFailing { .. }),
            "{event:?}"
        );
    }
}
