//! With one of three etcd members down everything works; with two down,
//! writes fail as Unavailable/Timeout and the leader steps down by its
//! local deadline. Bad endpoints and TTLs get errors that name them.

mod common;

use std::net::{Ipv4Addr, TcpListener};
use std::time::{Duration, Instant};

use common::*;
use failover_core::ports::{Coordinator, GuardLease};
use failover_core::{
    CoordinationEvent, Epoch, Intent, NodeId, Policy, PortErrorKind, WriterRecord,
};
use failover_etcd::{EtcdCoordinator, EtcdGuardLease};
use failover_testkit::etcd::EtcdCluster;

fn rec(epoch: u64) -> WriterRecord {
    WriterRecord::new(NodeId(0), Epoch(epoch))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minority_down_works_majority_down_refuses_and_leader_steps_down() {
    let mut cluster = tokio::task::spawn_blocking(|| EtcdCluster::start(3))
        .await
        .unwrap()
        .expect("etcd cluster starts");
    let endpoints = cluster.endpoints();
    let east = coordinator(&endpoints, "ctl-east", "east").await;
    let west = coordinator(&endpoints, "ctl-west", "west").await;
    let t1 = joined_leadership(&east.join().await.unwrap()).expect("east leads");
    west.join().await.unwrap();
    let guard = EtcdGuardLease::connect(&config(&endpoints, "-", "east"), topology())
        .await
        .unwrap();
    guard.renew(NodeId(0), TTL).await.expect("guard renews");
    east.set_writer(t1, None, rec(1), None).await.unwrap();

    // One member (a minority, a follower, so no election) down: writes,
    // renewals and leadership go on.
    let leader = tokio::task::block_in_place(|| cluster.leader());
    let first = (0..3).find(|&i| Some(i) != leader).unwrap();
    let second = (0..3).find(|&i| i != first).unwrap();
    tokio::task::block_in_place(|| cluster.stop_member(first));
    let down = Instant::now();
    east.set_writer(t1, Some(rec(1)), rec(2), None)
        .await
        .expect("CAS with a minority down");
    east.set_intent(t1, &Intent::default())
        .await
        .expect("intent with a minority down");
    guard.renew(NodeId(0), TTL).await.expect("guard renews");
    wait_for(&west, Duration::from_secs(5), "writer record", |e| {
        *e == CoordinationEvent::Writer(Some(rec(2)))
    })
    .await;
    // Keep renewing the guard while watching that east keeps leading for
    // more than a whole TTL.
    while down.elapsed() < TTL * 2 {
        guard.renew(NodeId(0), TTL).await.expect("guard renews");
        none_within(&east, TTL / 3, "leadership loss", |e| {
            matches!(e, CoordinationEvent::Leadership(None))
        })
        .await;
    }
    assert_eq!(east.token(), Some(t1), "east still leads");

    // Two members (a majority) down: writes fail as Unavailable/Timeout and
    // east reports Leadership(None) by its local deadline.
    tokio::task::block_in_place(|| cluster.stop_member(second));
    let majority_down = Instant::now();
    // An etcd leader answers keep-alives on its own until it notices it
    // lost the quorum (one election timeout), so the local deadline may
    // still move for a moment: sample it until the loss is reported.
    let mut deadline = east
        .leadership_deadline()
        .expect("east leads with a deadline");
    let lost = loop {
        tokio::select! {
            ev = east.next_event() => {
                if matches!(ev, Ok(CoordinationEvent::Leadership(None))) {
                    break Instant::now();
                }
            }
            () = tokio::time::sleep(Duration::from_millis(20)) => {
                if let Some(d) = east.leadership_deadline() {
                    deadline = d;
                }
            }
        }
        assert!(
            majority_down.elapsed() < TTL + Duration::from_secs(3),
            "east still leads {:?} after the majority went down",
            majority_down.elapsed()
        );
    };
    println!(
        "leader stepped down {:?} after the majority went down (lease_ttl {TTL:?}, margin 500ms), {:?} after its last deadline",
        lost - majority_down,
        lost.saturating_duration_since(deadline)
    );
    assert!(
        lost <= deadline + Duration::from_millis(250),
        "stepped down {:?} past its deadline",
        lost - deadline
    );
    let start = Instant::now();
    let e = east
        .set_writer(t1, Some(rec(2)), rec(3), None)
        .await
        .unwrap_err();
    println!(
        "set_writer with the majority down failed after {:?}: {e}",
        start.elapsed()
    );
    assert!(
        matches!(
            e.kind(),
            PortErrorKind::Unavailable | PortErrorKind::Timeout
        ),
        "{e}"
    );
    let e = guard.renew(NodeId(0), TTL).await.unwrap_err();
    assert!(
        matches!(
            e.kind(),
            PortErrorKind::Unavailable | PortErrorKind::Timeout
        ),
        "{e}"
    );
    let e = east.set_intent(t1, &Intent::default()).await.unwrap_err();
    assert!(
        matches!(
            e.kind(),
            PortErrorKind::Unavailable | PortErrorKind::Timeout | PortErrorKind::Refused
        ),
        "{e}"
    );

    // The members come back: someone leads again with a greater token, and
    // the old token is refused.
    tokio::task::block_in_place(|| {
        cluster.start_member(first).expect("first member restarts");
        cluster
            .start_member(second)
            .expect("second member restarts");
    });
    let mut next = None;
    let limit = Instant::now() + Duration::from_secs(15);
    while next.is_none() && Instant::now() < limit {
        next = east.token().or(west.token());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let t2 = next.expect("a controller leads again");
    assert!(t2 > t1);
    let e = east
        .set_writer(t1, Some(rec(2)), rec(3), None)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), PortErrorKind::Refused, "{e}");
}

#[tokio::test]
async fn unreachable_or_wrong_endpoints_are_named() {
    // Nothing listens on a freshly released port.
    let closed = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap();
    // This one accepts connections but never speaks gRPC.
    let silent = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let silent_addr = silent.local_addr().unwrap();
    for endpoint in [format!("http://{closed}"), format!("http://{silent_addr}")] {
        let c = coordinator(std::slice::from_ref(&endpoint), "ctl-east", "east").await;
        let start = Instant::now();
        let e = c.join().await.unwrap_err();
        assert!(
            matches!(
                e.kind(),
                PortErrorKind::Unavailable | PortErrorKind::Timeout
            ),
            "{e}"
        );
        assert!(
            e.to_string().contains(&endpoint),
            "{e} must name {endpoint}"
        );
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "bounded by request_timeout"
        );
    }

    let e = EtcdCoordinator::connect(
        config(&["127.0.0.1:2379".to_owned()], "ctl-east", "east"),
        topology(),
        &policy(),
    )
    .await
    .err()
    .expect("an endpoint without scheme is refused");
    assert!(e.to_string().contains("`endpoints`"), "{e}");
    assert_eq!(e.kind(), PortErrorKind::Config);
    let e = EtcdCoordinator::connect(
        config(&["http://127.0.0.1:2379".to_owned()], "ctl-east", "nowhere"),
        topology(),
        &policy(),
    )
    .await
    .err()
    .expect("an unknown vantage is refused");
    assert!(e.to_string().contains("nowhere"), "{e}");
}

#[tokio::test]
async fn invalid_ttls_name_the_setting() {
    let endpoints = ["http://127.0.0.1:2379".to_owned()];
    let mut c = config(&endpoints, "ctl-east", "east");
    c.lease_ttl = Duration::from_millis(1500);
    let e = EtcdCoordinator::connect(c, topology(), &policy())
        .await
        .err()
        .expect("sub-second TTL refused");
    assert!(e.to_string().contains("`lease_ttl`"), "{e}");

    // A TTL shorter than (or too close to) the probe interval.
    let slow = Policy {
        interval: Duration::from_secs(2),
        ..policy()
    };
    let e = EtcdCoordinator::connect(config(&endpoints, "ctl-east", "east"), topology(), &slow)
        .await
        .err()
        .expect("TTL within 2 × interval refused");
    let text = e.to_string();
    assert!(
        text.contains("`lease_ttl`") && text.contains("`policy.interval`"),
        "{text}"
    );
    assert_eq!(e.kind(), PortErrorKind::Config);

    let mut c = config(&endpoints, "ctl-east", "east");
    c.lease_margin = Duration::from_secs(1);
    let e = EtcdCoordinator::connect(c, topology(), &policy())
        .await
        .err()
        .expect("margin too large for the TTL");
    assert!(e.to_string().contains("`lease_margin`"), "{e}");
}
