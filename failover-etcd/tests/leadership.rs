//! Two controllers on a real 3-member etcd cluster: one leader, growing
//! tokens, stale writes refused, takeover on resign and on a crash, intent
//! kept across a restart.

mod common;

use std::time::{Duration, Instant};

use common::*;
use failover_core::ports::Coordinator;
use failover_core::{
    CoordinationEvent, Epoch, FencingToken, Intent, NodeId, PortErrorKind, RegionId, WeightPlan,
    WriterRecord,
};
use failover_testkit::etcd::EtcdCluster;

fn rec(node: u32, epoch: u64) -> WriterRecord {
    WriterRecord::new(NodeId(node), Epoch(epoch))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_growing_tokens_stale_writes_refused_and_takeover() {
    let cluster = tokio::task::spawn_blocking(|| EtcdCluster::start(3))
        .await
        .unwrap()
        .expect("etcd cluster starts");
    let endpoints = cluster.endpoints();

    // Two controllers join: exactly one leads.
    let east = coordinator(&endpoints, "ctl-east", "east").await;
    let west = coordinator(&endpoints, "ctl-west", "west").await;
    let joined_east = east.join().await.expect("east joins");
    let joined_west = west.join().await.expect("west joins");
    assert_eq!(joined_east.first(), Some(&CoordinationEvent::Writer(None)));
    let t1 = joined_leadership(&joined_east).expect("the first to join leads");
    assert_eq!(joined_leadership(&joined_west), None, "only one leader");
    assert_eq!(east.token(), Some(t1));
    assert_eq!(west.token(), None);

    // The leader writes the record by compare-and-set; the peer sees it.
    east.set_writer(t1, None, rec(0, 1), None)
        .await
        .expect("first writer record");
    let mut cas = Vec::new();
    for epoch in 2..=21 {
        let start = Instant::now();
        east.set_writer(t1, Some(rec(0, epoch - 1)), rec(0, epoch), None)
            .await
            .expect("CAS under leadership");
        cas.push(start.elapsed());
    }
    cas.sort();
    println!(
        "set_writer CAS latency over {} runs: median {:?}, max {:?}",
        cas.len(),
        cas[cas.len() / 2],
        cas[cas.len() - 1]
    );
    wait_for(&west, Duration::from_secs(5), "writer record", |e| {
        *e == CoordinationEvent::Writer(Some(rec(0, 21)))
    })
    .await;

    // A write with the wrong expected record is refused.
    let e = east
        .set_writer(t1, Some(rec(0, 3)), rec(1, 22), None)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), PortErrorKind::Refused, "{e}");
    assert!(e.to_string().contains("not the expected"), "{e}");

    // A token that does not lead is refused, and changes nothing.
    let bogus = FencingToken(t1.0 + 1000);
    let e = west
        .set_writer(bogus, Some(rec(0, 21)), rec(1, 22), None)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), PortErrorKind::Refused, "{e}");
    let e = west
        .set_intent(bogus, &Intent::default())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), PortErrorKind::Refused, "{e}");

    let intent = Intent {
        drained: vec![RegionId(1)],
        paused: true,
    };
    east.set_intent(t1, &intent)
        .await
        .expect("leader stores intent");
    wait_for(&west, Duration::from_secs(5), "intent", |e| {
        *e == CoordinationEvent::Intent(intent.clone())
    })
    .await;

    // The leader stores its weight plan; the peer sees it, with the token.
    let mut plan = WeightPlan::in_region_order(7, Duration::from_secs(30), [0, 1]);
    plan.token = Some(t1);
    east.set_plan(t1, &plan)
        .await
        .expect("leader stores the plan");
    wait_for(&west, Duration::from_secs(5), "plan", |e| {
        *e == CoordinationEvent::Plan(plan.clone())
    })
    .await;
    let e = west.set_plan(bogus, &plan).await.unwrap_err();
    assert_eq!(e.kind(), PortErrorKind::Refused, "{e}");

    // The leader resigns: the other takes over with a greater token.
    let resigned = Instant::now();
    east.resign().await.expect("resign");
    let (ev, at) = wait_for(&west, Duration::from_secs(5), "leadership", |e| {
        matches!(e, CoordinationEvent::Leadership(Some(_)))
    })
    .await;
    let CoordinationEvent::Leadership(Some(t2)) = ev else {
        unreachable!()
    };
    println!("takeover after resign: {:?}", at - resigned);
    assert!(t2 > t1, "{t2} must exceed {t1}");

    // The deposed leader's token is refused and changes nothing.
    let e = east
        .set_writer(t1, Some(rec(0, 21)), rec(1, 22), None)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), PortErrorKind::Refused, "{e}");
    assert!(e.to_string().contains("no longer leads"), "{e}");
    let e = east.set_intent(t1, &Intent::default()).await.unwrap_err();
    assert_eq!(e.kind(), PortErrorKind::Refused, "{e}");
    let stale = WeightPlan::in_region_order(8, Duration::from_secs(30), [1, 0]);
    let e = east.set_plan(t1, &stale).await.unwrap_err();
    assert_eq!(e.kind(), PortErrorKind::Refused, "{e}");
    drop(east);

    // A restarted east controller finds writer and intent as they were.
    let east = coordinator(&endpoints, "ctl-east", "east").await;
    let joined = east.join().await.expect("east rejoins");
    assert!(
        joined.contains(&CoordinationEvent::Writer(Some(rec(0, 21)))),
        "{joined:?}"
    );
    assert!(
        joined.contains(&CoordinationEvent::Intent(intent.clone())),
        "{joined:?}"
    );
    assert!(
        joined.contains(&CoordinationEvent::Plan(plan.clone())),
        "the deposed leader's plan was not stored: {joined:?}"
    );
    assert_eq!(joined_leadership(&joined), None);

    // The leader crashes (no resign): east takes over once its lease expires.
    west.set_writer(t2, Some(rec(0, 21)), rec(1, 22), None)
        .await
        .expect("new leader's CAS");
    let crashed = Instant::now();
    drop(west);
    let (ev, at) = wait_for(&east, TTL + Duration::from_secs(4), "takeover", |e| {
        matches!(e, CoordinationEvent::Leadership(Some(_)))
    })
    .await;
    let CoordinationEvent::Leadership(Some(t3)) = ev else {
        unreachable!()
    };
    println!(
        "takeover after a crashed leader (lease_ttl {TTL:?}): {:?}",
        at - crashed
    );
    assert!(t3 > t2);
    let e = east
        .set_writer(t2, Some(rec(1, 22)), rec(0, 23), None)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), PortErrorKind::Refused, "{e}");
    east.set_writer(t3, Some(rec(1, 22)), rec(0, 23), None)
        .await
        .expect("new leader's CAS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_watch_over_a_compacted_revision_resyncs() {
    let mut cluster = tokio::task::spawn_blocking(|| EtcdCluster::start(3))
        .await
        .unwrap()
        .expect("etcd cluster starts");
    let endpoints = cluster.endpoints();
    // West talks to one follower only; east to the other two members.
    let leader = tokio::task::block_in_place(|| cluster.leader());
    let lone = (0..3).find(|&i| Some(i) != leader).unwrap();
    let others: Vec<String> = (0..3)
        .filter(|&i| i != lone)
        .map(|i| cluster.endpoint(i))
        .collect();
    let west = coordinator(&endpoints[lone..=lone], "ctl-west", "west").await;
    let east = coordinator(&others, "ctl-east", "east").await;
    let t = joined_leadership(&east.join().await.unwrap()).expect("east leads");
    west.join().await.unwrap();
    east.set_writer(t, None, rec(0, 1), None).await.unwrap();
    wait_for(&west, Duration::from_secs(5), "writer", |e| {
        *e == CoordinationEvent::Writer(Some(rec(0, 1)))
    })
    .await;

    // West's member goes away; meanwhile the writer changes and etcd
    // compacts its history past what west's watch has seen.
    tokio::task::block_in_place(|| cluster.stop_member(lone));
    east.set_writer(t, Some(rec(0, 1)), rec(1, 2), None)
        .await
        .unwrap();
    // A later write, so the compaction removes the writer change itself.
    east.set_intent(t, &Intent::default()).await.unwrap();
    let mut client = etcd_client::Client::connect(&others, None).await.unwrap();
    let revision = client
        .get("/", None)
        .await
        .unwrap()
        .header()
        .map(|h| h.revision())
        .unwrap();
    client
        .compact(
            revision,
            Some(etcd_client::CompactionOptions::new().with_physical()),
        )
        .await
        .expect("compact");

    // Back: west's watch cannot resume from its revision and resyncs.
    tokio::task::block_in_place(|| cluster.start_member(lone)).expect("member restarts");
    wait_for(&west, Duration::from_secs(10), "writer after resync", |e| {
        *e == CoordinationEvent::Writer(Some(rec(1, 2)))
    })
    .await;
}
