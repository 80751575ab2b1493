//! Planned switchover under write load with asynchronous replication: no
//! acknowledged row is lost, and the old primary rejoins as a streaming
//! replica of the new one through pg_rewind.

mod common;

use std::time::{Duration, Instant};

use failover_core::{Epoch, NodeId};
use failover_pg::{rejoin, NodeRole, RejoinPlan};
use failover_testkit::postgres::PgTestCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchover_under_load_loses_nothing_and_old_primary_rejoins() {
    let tk = common::start(PgTestCluster::builder().replicas(1)).await;
    let admin = common::admin(&tk);
    let (old, new) = (tk.node(0).unwrap().clone(), tk.node(1).unwrap().clone());
    common::create_table(&old.app_dsn()).await;

    let writer = common::Writer::start(old.app_dsn());
    writer.wait_acked(300).await;
    let report = admin
        .switchover(NodeId(0), NodeId(1), Epoch(1))
        .await
        .expect("switchover");
    let (acked, err) = writer.finish().await;
    assert!(err.is_some(), "the writer must be cut off by the fence");
    assert!(report.promoted_lsn >= report.final_lsn, "{report:?}");
    common::assert_all_present(&new.app_dsn(), &acked).await;

    let st = admin.status(NodeId(1)).await.unwrap();
    assert_eq!(
        (st.role, st.timeline, st.epoch),
        (NodeRole::Primary, 2, Some(Epoch(1)))
    );

    // Rejoin the old primary (fenced, still running) as a replica of node1.
    let plan = RejoinPlan {
        bindir: tk.bindir().to_path_buf(),
        data_dir: old.data_dir.clone(),
        os_user: Some("postgres".into()),
        source_conninfo: format!("{} dbname=postgres", new.replication_conninfo()),
        primary_conninfo: format!("{} application_name=node0", new.replication_conninfo()),
        local_dsn: old.admin_dsn(),
        log_file: Some(old.log_file.clone()),
        step_timeout: Duration::from_secs(60),
    };
    let rj = rejoin(&plan).await.expect("rejoin");
    assert!(
        rj.rewound,
        "the old primary's shutdown checkpoint diverged: {rj:?}"
    );
    assert_eq!(rj.wal_receiver.status, "streaming");
    assert_eq!(rj.wal_receiver.sender_port, Some(new.port));

    let st = admin.status(NodeId(0)).await.unwrap();
    assert_eq!(st.role, NodeRole::Replica);
    assert_eq!(st.timeline, 2);

    // A write on the new primary reaches the rejoined node.
    let c = common::connect(&new.app_dsn()).await.unwrap();
    c.execute("INSERT INTO rows (n) VALUES (-42)", &[])
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let seen = tk
            .psql_db(0, "appdb", "SELECT count(*) FROM rows WHERE n = -42")
            .unwrap();
        if seen.trim() == "1" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "rejoined node does not replay new writes"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let primary = admin.status(NodeId(1)).await.unwrap();
    assert!(primary
        .replicas
        .iter()
        .any(|r| r.application_name == "node0" && r.state == "streaming"));
}
