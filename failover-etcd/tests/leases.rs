//! Guard leases and verdicts live exactly as long as their leases, on a real
//! 3-member etcd cluster.

mod common;

use std::time::{Duration, Instant};

use common::*;
use failover_core::ports::{Coordinator, GuardLease};
use failover_core::{
    CoordinationEvent, Epoch, Health, NodeId, PortErrorKind, RegionId, VantageId, Verdict,
    WriterRecord,
};
use failover_etcd::EtcdGuardLease;
use failover_testkit::etcd::EtcdCluster;

/// How late after its TTL an expiry may show: etcd checks for expired
/// leases every 500 ms and revokes through consensus; plus the watch.
const SLACK: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guard_lease_shows_lost_after_ttl_never_before() {
    let cluster = tokio::task::spawn_blocking(|| EtcdCluster::start(3))
        .await
        .unwrap()
        .expect("etcd cluster starts");
    let endpoints = cluster.endpoints();
    let east = coordinator(&endpoints, "ctl-east", "east").await;
    let joined = east.join().await.expect("join");
    assert!(
        joined.contains(&CoordinationEvent::GuardLease {
            node: NodeId(0),
            held: false
        }),
        "no guard yet: {joined:?}"
    );
    let token = joined_leadership(&joined).expect("sole controller leads");
    let rec = WriterRecord::new(NodeId(0), Epoch(1));
    east.set_writer(token, None, rec, None).await.unwrap();

    let guard = EtcdGuardLease::connect(&config(&endpoints, "-", "east"), topology())
        .await
        .unwrap();
    // A TTL etcd cannot grant is refused before any request, naming it.
    let e = guard
        .renew(NodeId(0), Duration::from_millis(1500))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), PortErrorKind::Config);
    assert!(e.to_string().contains("`guard_ttl`"), "{e}");
    let e = guard.renew(NodeId(9), TTL).await.unwrap_err();
    assert_eq!(e.kind(), PortErrorKind::Config, "{e}");

    // The guard renews a few times; each renewal returns the writer record.
    for _ in 0..4 {
        let writer = guard.renew(NodeId(0), TTL).await.expect("renew");
        assert_eq!(writer, Some(rec));
        tokio::time::sleep(TTL / 3).await;
    }
    wait_for(&east, Duration::from_secs(5), "guard lease held", |e| {
        *e == CoordinationEvent::GuardLease {
            node: NodeId(0),
            held: true,
        }
    })
    .await;

    // While pg-east's guard holds its lease, a claim that needs it gone is
    // refused in the same transaction, and changes nothing.
    let next = WriterRecord::new(NodeId(1), Epoch(2));
    let e = east
        .set_writer(token, Some(rec), next, Some(NodeId(0)))
        .await
        .expect_err("the old writer's guard still holds its lease");
    assert_eq!(e.kind(), PortErrorKind::Refused, "{e}");
    assert!(e.to_string().contains("held again"), "{e}");
    let last_sent = Instant::now();
    assert_eq!(guard.renew(NodeId(0), TTL).await.expect("renew"), Some(rec));

    // It stops renewing: the lease shows lost after TTL, within TTL + slack.
    let (_, lost_at) = wait_for(&east, TTL + SLACK, "guard lease lost", |e| {
        *e == CoordinationEvent::GuardLease {
            node: NodeId(0),
            held: false,
        }
    })
    .await;
    let after = lost_at - last_sent;
    println!("guard lease (ttl {TTL:?}) reported lost {after:?} after the last renewal was sent");
    assert!(after >= TTL, "lost after {after:?}, before the TTL {TTL:?}");
    // Gone: now the same claim succeeds.
    east.set_writer(token, Some(rec), next, Some(NodeId(0)))
        .await
        .expect("the old writer's guard lease is gone");

    // Renewing again re-grants it; release gives it up at once.
    guard.renew(NodeId(1), TTL).await.expect("renew pg-west");
    wait_for(&east, Duration::from_secs(5), "pg-west held", |e| {
        *e == CoordinationEvent::GuardLease {
            node: NodeId(1),
            held: true,
        }
    })
    .await;
    let released = Instant::now();
    guard.release(NodeId(1)).await.expect("release");
    let (_, at) = wait_for(&east, Duration::from_secs(2), "pg-west released", |e| {
        *e == CoordinationEvent::GuardLease {
            node: NodeId(1),
            held: false,
        }
    })
    .await;
    assert!(at - released < TTL, "release must not wait for the TTL");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verdicts_vanish_when_their_controller_lease_ends() {
    let cluster = tokio::task::spawn_blocking(|| EtcdCluster::start(3))
        .await
        .unwrap()
        .expect("etcd cluster starts");
    let endpoints = cluster.endpoints();
    let east = coordinator(&endpoints, "ctl-east", "east").await;
    let west = coordinator(&endpoints, "ctl-west", "west").await;
    east.join().await.unwrap();
    west.join().await.unwrap();

    let verdicts = [
        Verdict {
            vantage: VantageId(0),
            region: RegionId(0),
            health: Health::Down,
        },
        Verdict {
            vantage: VantageId(0),
            region: RegionId(1),
            health: Health::Up,
        },
    ];
    east.publish_verdicts(&verdicts).await.expect("publish");
    for v in verdicts {
        wait_for(&west, Duration::from_secs(5), "peer verdict", |e| {
            *e == CoordinationEvent::Verdict {
                vantage: v.vantage,
                region: v.region,
                health: Some(v.health),
            }
        })
        .await;
    }
    // A controller publishes only its own vantage.
    let e = west.publish_verdicts(&verdicts).await.unwrap_err();
    assert_eq!(e.kind(), PortErrorKind::Config, "{e}");
    // Replacing the set withdraws what is no longer in it.
    east.publish_verdicts(&verdicts[..1]).await.unwrap();
    wait_for(&west, Duration::from_secs(5), "withdrawn verdict", |e| {
        *e == CoordinationEvent::Verdict {
            vantage: VantageId(0),
            region: RegionId(1),
            health: None,
        }
    })
    .await;

    // East crashes: its verdicts vanish with its lease.
    let crashed = Instant::now();
    drop(east);
    let (_, at) = wait_for(&west, TTL + SLACK, "vanished verdict", |e| {
        *e == CoordinationEvent::Verdict {
            vantage: VantageId(0),
            region: RegionId(0),
            health: None,
        }
    })
    .await;
    println!(
        "verdicts of a crashed controller vanished after {:?}",
        at - crashed
    );
}
