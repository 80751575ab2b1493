//! Fencing against a real primary: after `fence`, no application write
//! commits on the old primary — open transactions, new sessions and sessions
//! that try to switch read-only off all fail.

mod common;

use failover_core::ports::DatabaseAdmin;
use failover_core::{Epoch, NodeId, NodeObservation, PromoteRequest, RpoGate};
use failover_testkit::postgres::{PgTestCluster, APP_ROLE};

fn count_rows(tk: &PgTestCluster, node: usize) -> i64 {
    app_db_count(tk, node)
}

fn app_db_count(tk: &PgTestCluster, node: usize) -> i64 {
    tk.psql_db(node, "appdb", "SELECT count(*) FROM rows")
        .expect("count rows")
        .trim()
        .parse()
        .expect("a number")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_application_write_commits_after_fence() {
    let tk = common::start(PgTestCluster::builder().replicas(1)).await;
    let admin = common::admin(&tk);
    let old = tk.node(0).unwrap().clone();
    common::create_table(&old.app_dsn()).await;

    // An open read-write transaction, an idle session that will try to turn
    // read-only off, and a writer under load.
    let open_tx = common::connect(&old.app_dsn()).await.unwrap();
    open_tx
        .batch_execute("BEGIN; INSERT INTO rows (n) VALUES (-100)")
        .await
        .unwrap();
    let idle = common::connect(&old.app_dsn()).await.unwrap();
    let writer = common::Writer::start(old.app_dsn());
    writer.wait_acked(100).await;

    let report = admin.fence(NodeId(0), Epoch(1)).await.expect("fence");
    assert_eq!(report.roles_revoked, vec![APP_ROLE.to_string()]);
    // The open transaction and the idle session at least; the writer may
    // already have quit on the read-only error.
    assert!(report.sessions_terminated >= 2, "{report:?}");
    assert!(report.flush_lsn.is_some());
    let after_fence = count_rows(&tk, 0);

    let (acked, err) = writer.finish().await;
    assert!(err.is_some(), "writer must be cut off by the fence");
    assert!(
        open_tx.batch_execute("COMMIT").await.is_err(),
        "open transaction must not commit"
    );
    assert!(idle
        .batch_execute(
            "SET default_transaction_read_only = off; INSERT INTO rows (n) VALUES (-200)"
        )
        .await
        .is_err());
    let relogin = common::connect(&old.app_dsn()).await;
    let msg = relogin.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        !msg.is_empty(),
        "the application role must not log in again"
    );
    // Even a superuser's new session starts read-only (second layer).
    let su = tk.psql_db(0, "appdb", "INSERT INTO rows (n) VALUES (-300)");
    assert!(
        su.is_err(),
        "superuser default transaction must be read-only: {su:?}"
    );

    assert_eq!(
        count_rows(&tk, 0),
        after_fence,
        "no write committed after the fence"
    );
    let present = tk
        .psql_db(0, "appdb", "SELECT count(*) FROM rows WHERE n < 0")
        .unwrap();
    assert_eq!(present.trim(), "0", "no fenced write is present");
    assert!(after_fence as usize >= acked.len());

    match admin.observe(NodeId(0)).await.unwrap() {
        NodeObservation::Primary { fenced, epoch, .. } => {
            assert!(fenced);
            assert_eq!(
                epoch, None,
                "a fence's epoch is not a promotion: never reported as the node's epoch"
            );
        }
        other => panic!("expected a fenced primary, got {other:?}"),
    }
    // Fencing again with the same epoch is harmless.
    admin
        .fence(NodeId(0), Epoch(1))
        .await
        .expect("idempotent fence");

    // The replica, promoted with the fence's epoch once it has everything,
    // lifts the NOLOGIN it inherited through WAL and takes application writes.
    admin
        .promote(&PromoteRequest {
            node: NodeId(1),
            epoch: Epoch(1),
            gate: RpoGate::CaughtUp {
                lsn: report.flush_lsn.unwrap(),
            },
        })
        .await
        .expect("promote after fence");
    assert_eq!(app_db_count(&tk, 1), after_fence);
    common::assert_all_present(&tk.node(1).unwrap().app_dsn(), &acked).await;
    let c = common::connect(&tk.node(1).unwrap().app_dsn())
        .await
        .unwrap();
    c.execute("INSERT INTO rows (n) VALUES (-1)", &[])
        .await
        .unwrap();
    match admin.observe(NodeId(1)).await.unwrap() {
        NodeObservation::Primary { epoch, fenced, .. } => {
            assert!(!fenced);
            assert_eq!(epoch, Some(Epoch(1)), "the promotion's epoch is reported");
        }
        other => panic!("expected the promoted primary, got {other:?}"),
    }
}
