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

/// A controller whose lease lapsed while it could not reach etcd changed its
/// vote meanwhile (the publication failed). When etcd is back it gets a new
/// lease and re-publishes its verdicts: the vote it holds now, never the
/// last one that landed before, or peers would count a vote it withdrew (a
/// region it sees down would be voted up again, by its name).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_lease_republishes_the_newest_vote_not_the_last_one_that_landed() {
    let mut cluster = tokio::task::spawn_blocking(|| EtcdCluster::start(3))
        .await
        .unwrap()
        .expect("etcd cluster starts");
    let (lone, east, west) = east_on_one_follower(&mut cluster).await;
    east.join().await.unwrap();
    west.join().await.unwrap();
    let vote = |health| Verdict {
        vantage: VantageId(0),
        region: RegionId(1),
        health,
    };
    let seen = |health| CoordinationEvent::Verdict {
        vantage: VantageId(0),
        region: RegionId(1),
        health,
    };

    east.publish_verdicts(&[vote(Health::Up)]).await.unwrap();
    wait_for(&west, Duration::from_secs(5), "east's up vote", |e| {
        *e == seen(Some(Health::Up))
    })
    .await;

    // East's member stops: its new vote cannot land, and its lease lapses.
    tokio::task::block_in_place(|| cluster.stop_member(lone));
    let e = east
        .publish_verdicts(&[vote(Health::Down)])
        .await
        .expect_err("no member reachable");
    println!("publishing without etcd: {e}");
    wait_for(&west, TTL + SLACK, "east's vote gone with its lease", |e| {
        *e == seen(None)
    })
    .await;

    // Back: a new lease, and the vote re-published under it is the newest.
    tokio::task::block_in_place(|| cluster.start_member(lone)).expect("member restarts");
    let (back, _) = wait_for(&west, Duration::from_secs(20), "east's vote again", |e| {
        matches!(
            e,
            CoordinationEvent::Verdict {
                vantage: VantageId(0),
                region: RegionId(1),
                health: Some(_)
            }
        )
    })
    .await;
    assert_eq!(
        back,
        seen(Some(Health::Down)),
        "the re-published vote must be the one east holds now"
    );
}
