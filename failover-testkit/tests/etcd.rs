//! The etcd cluster of the testkit: a leader is found, and a killed member
//! comes back with its data.

use std::time::Duration;

use failover_testkit::etcd::EtcdCluster;

#[test]
fn three_members_elect_a_leader_and_a_killed_member_rejoins() {
    let mut cluster = EtcdCluster::start(3).expect("etcd cluster starts");
    assert_eq!(cluster.endpoints().len(), 3);
    let first = cluster.leader().expect("a healthy cluster has a leader");

    // Kill the leader: the other two elect a new one.
    cluster.stop_member(first);
    assert!(!cluster.is_running(first));
    cluster
        .wait_healthy(Duration::from_secs(20))
        .expect("two members stay healthy");
    let mut second = None;
    for _ in 0..200 {
        second = cluster.leader();
        if second.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let second = second.expect("the two survivors elect a leader");
    assert_ne!(second, first);

    // The killed member restarts with its data and the cluster is whole.
    cluster.start_member(first).expect("member restarts");
    assert!(cluster.is_running(first));
    cluster
        .wait_healthy(Duration::from_secs(20))
        .expect("all three healthy");
    let dir = cluster.dir().to_owned();
    drop(cluster);
    assert!(!dir.exists(), "the data dirs are removed on drop");
}
