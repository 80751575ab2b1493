//! A leader cut off from etcd steps down before its successor leads; what
//! etcd holds that does not parse is an error, never a panic.

mod common;

use std::time::{Duration, Instant};

use common::*;
use failover_core::ports::Coordinator;
use failover_core::{CoordinationEvent, Health, PortErrorKind, RegionId, VantageId};
use failover_testkit::etcd::EtcdCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_cut_off_steps_down_before_the_other_takes_over() {
    let mut cluster = tokio::task::spawn_blocking(|| EtcdCluster::start(3))
        .await
        .unwrap()
        .expect("etcd cluster starts");
    let (lone, east, west) = east_on_one_follower(&mut cluster).await;
    let t1 = joined_leadership(&east.join().await.unwrap()).expect("east leads");
    assert_eq!(joined_leadership(&west.join().await.unwrap()), None);

    // East's only member dies: east can no longer renew.
    tokio::task::block_in_place(|| cluster.stop_member(lone));
    let cut = Instant::now();
    let (east_lost, west_won) = tokio::join!(
        wait_for(&east, TTL + Duration::from_secs(2), "east's loss", |e| {
            matches!(e, CoordinationEvent::Leadership(None))
        }),
        wait_for(
            &west,
            TTL + Duration::from_secs(5),
            "west's leadership",
            |e| { matches!(e, CoordinationEvent::Leadership(Some(_))) }
        ),
    );
    let CoordinationEvent::Leadership(Some(t2)) = west_won.0 else {
        unreachable!()
    };
    println!(
        "cut-off leader stepped down after {:?}; the other led after {:?} (lease_ttl {TTL:?})",
        east_lost.1 - cut,
        west_won.1 - cut
    );
    assert!(t2 > t1);
    assert!(
        east_lost.1 < west_won.1,
        "the deposed leader must know before its successor leads"
    );
    assert!(east_lost.1 - cut <= TTL, "east stepped down within its TTL");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_values_from_etcd_are_errors_not_panics() {
    let cluster = tokio::task::spawn_blocking(|| EtcdCluster::start(3))
        .await
        .unwrap()
        .expect("etcd cluster starts");
    let endpoints = cluster.endpoints();
    let east = coordinator(&endpoints, "ctl-east", "east").await;
    east.join().await.unwrap();
    let mut client = etcd_client::Client::connect(&endpoints, None)
        .await
        .unwrap();

    // Garbage in the writer record: next_event reports Malformed, naming the key.
    client
        .put("/failover/api/writer", "not json", None)
        .await
        .unwrap();
    let e = next_error(&east).await;
    assert_eq!(e.kind(), PortErrorKind::Malformed, "{e}");
    assert!(e.to_string().contains("/failover/api/writer"), "{e}");
    client
        .put(
            "/failover/api/writer",
            r#"{"node":"pg-nowhere","epoch":1}"#,
            None,
        )
        .await
        .unwrap();
    let e = next_error(&east).await;
    assert!(e.to_string().contains("pg-nowhere"), "{e}");

    // Unknown names and bad verdicts are ignored; the coordinator goes on.
    for (key, value) in [
        ("/failover/api/guard/pg-nowhere", "x"),
        ("/failover/api/verdict/west/us-east", "\"sideways\""),
        ("/failover/api/verdict/nowhere/us-east", "\"down\""),
        ("/failover/api/verdict/west/us-east", "\"down\""),
    ] {
        client.put(key, value, None).await.unwrap();
    }
    let (ev, _) = wait_for(&east, Duration::from_secs(5), "a good verdict", |e| {
        matches!(e, CoordinationEvent::Verdict { .. })
    })
    .await;
    assert_eq!(
        ev,
        CoordinationEvent::Verdict {
            vantage: VantageId(1),
            region: RegionId(0),
            health: Some(Health::Down),
        },
        "only the readable verdict is reported"
    );

    // A controller that joins now is told which key to repair.
    let west = coordinator(&endpoints, "ctl-west", "west").await;
    let e = west.join().await.unwrap_err();
    assert_eq!(e.kind(), PortErrorKind::Malformed, "{e}");
    assert!(e.to_string().contains("/failover/api/writer"), "{e}");
}

async fn next_error(c: &failover_etcd::EtcdCoordinator) -> failover_core::PortError {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, c.next_event()).await {
            Ok(Err(e)) => return e,
            Ok(Ok(_)) => {}
            Err(_) => panic!("no error reported within 5 s"),
        }
    }
}
