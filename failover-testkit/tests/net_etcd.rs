//! etcd in regions: one member per region, raft over the links between
//! them. Isolating the leader's region leaves it without a leader while the
//! other two elect one; after the rejoin the whole cluster is healthy.
//!
//! Skips, printing why, without root (no namespaces) or without etcd.

use std::path::Path;
use std::time::{Duration, Instant};

use failover_testkit::etcd::{EtcdCluster, ETCD};
use failover_testkit::net::Net;

/// Bound on elections and health changes (etcd's election timeout is 1 s).
const SETTLE: Duration = Duration::from_secs(30);

/// Polls `check` until it holds, for at most `within`.
fn eventually(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if check() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn an_isolated_leader_loses_the_cluster_and_the_majority_elects_another() {
    if !Path::new(ETCD).exists() {
        eprintln!("skipped: {ETCD} not found (apt-get install etcd-server)");
        return;
    }
    let regions = ["east", "west", "south"];
    let mut builder = Net::builder();
    for r in regions {
        builder = builder.region(r);
    }
    let net = match builder.start() {
        Ok(net) => net,
        Err(e) if e.is_unsupported() => {
            eprintln!("skipped: {e}");
            return;
        }
        Err(e) => panic!("the net starts: {e}"),
    };
    let placements = net.regions().iter().map(|r| r.placement()).collect();
    let mut cluster = EtcdCluster::start_placed(placements).expect("one member per region");
    for (i, r) in net.regions().iter().enumerate() {
        assert_eq!(
            cluster.client_addr(i).ip(),
            r.addr(),
            "member {i} listens in {}",
            r.name()
        );
    }
    let mut leader = None;
    assert!(eventually(SETTLE, || {
        leader = cluster.leader();
        leader.is_some()
    }));
    let old = leader.expect("a leader");
    let others: Vec<usize> = (0..regions.len()).filter(|&i| i != old).collect();

    net.isolate(regions[old])
        .expect("isolate the leader's region");
    assert!(
        eventually(SETTLE, || {
            !cluster.is_healthy(old)
                && others.iter().all(|&i| cluster.is_healthy(i))
                && cluster.leader().is_some_and(|l| l != old)
        }),
        "the isolated {} sees no leader while the others elect one",
        regions[old]
    );

    net.rejoin(regions[old]).expect("rejoin");
    cluster
        .wait_healthy(SETTLE)
        .expect("after the rejoin every member is healthy");
    assert!(cluster.is_healthy(old));
}
