//! `failover::tower` against a real runtime: the failover state from the
//! runtime in this process (`from_runtime`) and from its admin API
//! (`RemoteStatus`) follow a drain to 167 % load, shedding follows it, and
//! both keep the last state, marked stale, when the runtime stops; during a
//! real switchover the write gate holds mutations within the planner's bound.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::admin::*;
use common::*;
use failover::decision::objectives::promotion_bound;
use failover::tower::{
    from_runtime, FailoverState, RemoteStatus, ShedLayer, Snapshot, WriteVerdict,
};
use failover::RuntimeError;
use failover_testkit::postgres::PgTestCluster;

const LIMIT: Duration = Duration::from_secs(30);

/// A promotion's phase as published, what was left of its bound, and the
/// gate's verdict on it.
type Seen = (String, Option<Duration>, WriteVerdict);

async fn until(
    state: &FailoverState,
    what: &str,
    ready: impl FnMut(&Snapshot) -> bool,
) -> Arc<Snapshot> {
    tokio::time::timeout(LIMIT, state.wait_for(ready))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "timed out waiting for: {what}; last: {:#?}",
                state.snapshot()
            )
        })
        .expect("the source runs")
}

fn weight(s: &Snapshot, region: &str) -> u32 {
    s.region(region).map_or(0, |r| r.weight)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_and_remote_state_follow_a_drain_and_go_stale_when_the_runtime_stops() {
    let f = Fixture::start(|_| {}).await;
    let config = config(topology(), fast_policy());
    let (local, local_task) =
        from_runtime(&f.runtime.handle(), &config, Some("us-west")).expect("known region");
    let (remote, _remote_task) = RemoteStatus::new(&format!("http://{}/status", f.admin))
        .expect("url")
        .token(ALICE)
        .local_region("us-west")
        .interval(Duration::from_millis(50))
        .spawn();
    for state in [&local, &remote] {
        let s = until(state, "us-east serving", |s| {
            !s.is_stale() && weight(s, "us-east") > 0
        })
        .await;
        assert_eq!(s.region("us-west").map(|r| r.capacity), Some(0.6), "{s:#?}");
        assert_eq!(s.local.as_ref().map(|r| r.name.as_str()), Some("us-west"));
        assert!(s.writer.node.is_none(), "no database in this topology");
        assert!(s.promotion.is_none());
    }

    // us-east drained: the standby built for 60 % of peak carries 167 %.
    let (code, body) = request(
        f.admin,
        "POST",
        "/commands/drain",
        Some(ALICE),
        br#"{"region": "us-east"}"#,
    )
    .await;
    assert_eq!(code, 202, "{body}");
    for state in [&local, &remote] {
        let s = until(state, "us-east drained, us-west serving", |s| {
            weight(s, "us-east") == 0 && weight(s, "us-west") > 0
        })
        .await;
        assert_eq!((s.load().ratio() * 100.0).round(), 167.0, "{s:#?}");
        assert!(s.region("us-east").is_some_and(|r| r.drained));
        assert!(s.local.as_ref().is_some_and(|r| r.serving()));
    }
    let shed = ShedLayer::new(local.clone());
    let app = axum::Router::new()
        .route("/feed", axum::routing::get(|| async { "feed" }))
        .layer(shed);
    let app_addr = serve_app(app).await;
    assert_eq!(get_status(app_addr, "/feed", "low").await, 503);
    assert_eq!(get_status(app_addr, "/feed", "critical").await, 200);

    // The runtime stops: both keep the last state and say so.
    f.stop().await;
    for (state, says) in [(&local, "stopped"), (&remote, "GET")] {
        let s = until(state, "stale", |s| s.is_stale()).await;
        let reason = &s.stale.as_ref().expect("stale").reason;
        assert!(reason.contains(says), "{reason}");
        assert_eq!(
            weight(&s, "us-west"),
            weight(&s, "us-west").max(1),
            "the last state is kept: {s:#?}"
        );
        assert!(s.region("us-east").is_some_and(|r| r.drained));
    }
    assert_eq!(
        get_status(app_addr, "/feed", "low").await,
        503,
        "a stale state sheds by its last load"
    );
    // The server holds a clone of the state, so the adapter waits on.
    assert!(!local_task.is_finished());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_local_region_is_refused_naming_it() {
    let f = Fixture::start(|_| {}).await;
    let config = config(topology(), fast_policy());
    let error =
        from_runtime(&f.runtime.handle(), &config, Some("eu-north")).expect_err("unknown region");
    assert!(matches!(error, RuntimeError::Setup(_)), "{error}");
    let text = error.to_string();
    assert!(
        text.contains("eu-north") && text.contains("us-east, us-west"),
        "{text}"
    );
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_a_switchover_the_gate_holds_writes_within_the_planners_bound() {
    let cluster = tokio::task::spawn_blocking(|| PgTestCluster::builder().replicas(1).start())
        .await
        .expect("cluster task")
        .expect("PostgreSQL primary + replica start");
    let f = Fixture::start_with(Some(&cluster), |_| {}).await;
    let mut policy = fast_policy();
    policy.auto_promote = true;
    policy.max_rpo = Some(failover::decision::MaxRpo::bytes(64 << 20));
    let config = config(topology_with(true), policy.clone());
    let (state, _task) =
        from_runtime(&f.runtime.handle(), &config, Some("us-east")).expect("state");
    let before = until(&state, "pg-east the writer", |s| {
        s.writer.node.as_deref() == Some("pg-east")
    })
    .await;
    let epoch = before.writer.epoch;

    // Record every state the adapter publishes, with the gate's verdict.
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let recorder = {
        let (state, seen) = (state.clone(), Arc::clone(&seen));
        tokio::spawn(async move {
            state
                .wait_for(|s| {
                    if let Some(p) = &s.promotion {
                        let now = Instant::now();
                        let verdict = WriteVerdict::of(s, now, Duration::from_secs(5));
                        seen.lock().expect("lock").push((
                            p.phase.clone(),
                            p.remaining(now),
                            verdict,
                        ));
                    }
                    false
                })
                .await
        })
    };

    // The operator switches over; on a loaded machine one observation of
    // pg-west may time out and the switchover be refused: try again (bounded).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let after = loop {
        let (code, body) = request(
            f.admin,
            "POST",
            "/commands/switchover",
            Some(ALICE),
            br#"{"to": "pg-west"}"#,
        )
        .await;
        assert_eq!(code, 202, "{body}");
        let moved = tokio::time::timeout(
            Duration::from_secs(15),
            state.wait_for(|s| s.writer.node.as_deref() == Some("pg-west")),
        )
        .await;
        if let Ok(Some(s)) = moved {
            break s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no switchover within 60 s: {:#?}",
            state.snapshot()
        );
    };
    assert!(after.writer.epoch > epoch, "a new epoch: {after:#?}");
    recorder.abort();

    let seen = seen.lock().expect("lock").clone();
    assert!(
        !seen.is_empty(),
        "the adapter published the promotion's phases"
    );
    for (phase, remaining, verdict) in &seen {
        let WriteVerdict::Closed { retry_after, .. } = verdict else {
            panic!("writes open during {phase}: {seen:?}");
        };
        // From its first phase (fencing) the whole promotion is bounded:
        // no later deadline exceeds that.
        let longest = promotion_bound(
            &policy,
            failover::decision::PromotionPhase::Fencing {
                node: failover::decision::NodeId(0),
                candidate: failover::decision::NodeId(1),
            },
        )
        .expect("bounded");
        assert!(
            remaining.is_some_and(|r| r <= longest),
            "{phase}: {remaining:?} within {longest:?}"
        );
        assert!(
            *retry_after <= longest,
            "{phase}: Retry-After {retry_after:?} within {longest:?}"
        );
    }
    f.stop().await;
}

async fn serve_app(app: axum::Router) -> std::net::SocketAddr {
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
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
            );
        }
    });
    addr
}

async fn get_status(addr: std::net::SocketAddr, path: &str, priority: &str) -> u16 {
    use http_body_util::{BodyExt, Empty};
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .expect("handshake");
    let conn = tokio::spawn(conn);
    let req = http::Request::get(path)
        .header("host", addr.to_string())
        .header("x-priority", priority)
        .body(Empty::<bytes::Bytes>::new())
        .expect("request");
    let response = tokio::time::timeout(LIMIT, sender.send_request(req))
        .await
        .expect("answer")
        .expect("response");
    let status = response.status().as_u16();
    let _ = response.into_body().collect().await;
    conn.abort();
    status
}
