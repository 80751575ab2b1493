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
            synchronous: failover_core::Synchronous::Off,
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

/// Issue 9: a fence that meets a lock held by someone else failed as a
/// client-side timeout or `Unavailable`, which the controller read as
/// "unreachable". The node answered: it is a `Conflict`, retryable, and the
/// node stays unfenced (so nothing may be promoted on it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fence_blocked_by_a_lock_is_a_conflict_not_unavailable() {
    let tk = common::start(PgTestCluster::builder().replicas(0)).await;
    let node = tk.node(0).unwrap().clone();
    let admin = failover_pg::PgCluster::new()
        .with_timeouts(failover_pg::PgTimeouts {
            connect: std::time::Duration::from_secs(5),
            statement: std::time::Duration::from_secs(2),
            ..Default::default()
        })
        .with_node(NodeId(0), &node.name, &node.admin_dsn())
        .unwrap();
    // Creates the epoch tables; then another session holds their lock.
    admin.fence(NodeId(0), Epoch(1)).await.expect("first fence");
    let holder = common::connect(&node.admin_dsn()).await.unwrap();
    holder
        .batch_execute(
            "SET default_transaction_read_only = off; BEGIN; \
             LOCK TABLE failover.fence IN ACCESS EXCLUSIVE MODE",
        )
        .await
        .unwrap();

    let err = admin
        .fence(NodeId(0), Epoch(2))
        .await
        .expect_err("the fence cannot take its lock");
    assert_eq!(err.kind(), failover_core::PortErrorKind::Conflict, "{err}");
    assert!(err.kind().is_retryable());
    assert!(
        matches!(&err, failover_pg::PgError::Query { sqlstate: Some(s), .. } if s == "55P03"),
        "{err:?}"
    );
    assert!(err.to_string().contains("node0"), "{err}");
    let port: failover_core::PortError = err.into();
    assert_eq!(port.kind(), failover_core::PortErrorKind::Conflict);

    // Released: the retry completes.
    drop(holder);
    admin
        .fence(NodeId(0), Epoch(2))
        .await
        .expect("retry after the lock is gone");
}

/// Issue 10 item 6: a fence whose promotion did not happen is lifted, and
/// the application role logs in and commits again; a stale unfence (a
/// later fence or promotion owns the node) is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfence_gives_writes_back_and_refuses_a_stale_epoch() {
    let tk = common::start(PgTestCluster::builder().replicas(1)).await;
    let admin = common::admin(&tk);
    let old = tk.node(0).unwrap().clone();
    common::create_table(&old.app_dsn()).await;

    let report = admin.fence(NodeId(0), Epoch(2)).await.expect("fence");
    assert_eq!(report.roles_revoked, vec![APP_ROLE.to_string()]);
    assert!(common::connect(&old.app_dsn()).await.is_err(), "fenced");

    // A stale epoch: the fence at 2 belongs to a later attempt than 1.
    let err = admin
        .unfence(NodeId(0), Epoch(1))
        .await
        .expect_err("stale unfence");
    assert!(
        matches!(
            err,
            failover_pg::PgError::StaleEpoch {
                recorded: Epoch(2),
                ..
            }
        ),
        "{err}"
    );
    let port = DatabaseAdmin::unfence(&admin, NodeId(0), Epoch(1))
        .await
        .expect_err("stale unfence through the port");
    assert_eq!(port.kind(), failover_core::PortErrorKind::Refused);
    assert!(
        common::connect(&old.app_dsn()).await.is_err(),
        "still fenced"
    );

    // A replica is not a writer to unfence.
    let err = admin
        .unfence(NodeId(1), Epoch(2))
        .await
        .expect_err("replica");
    assert!(
        matches!(err, failover_pg::PgError::NotAPrimary { .. }),
        "{err}"
    );

    // The promotion at 2 did not happen: lift the fence.
    let lifted = admin.unfence(NodeId(0), Epoch(2)).await.expect("unfence");
    assert_eq!(lifted.roles_restored, vec![APP_ROLE.to_string()]);
    assert!(lifted.was_read_only, "{lifted:?}");
    let c = common::connect(&old.app_dsn())
        .await
        .expect("app logs in again");
    c.batch_execute("BEGIN; INSERT INTO rows (n) VALUES (42); COMMIT")
        .await
        .expect("app commits again");
    assert_eq!(count_rows(&tk, 0), 1);
    match admin.observe(NodeId(0)).await.unwrap() {
        NodeObservation::Primary { fenced, .. } => assert!(!fenced),
        other => panic!("expected a primary, got {other:?}"),
    }
    // Idempotent, also through the port.
    DatabaseAdmin::unfence(&admin, NodeId(0), Epoch(2))
        .await
        .expect("again through the port");
    let again = admin.unfence(NodeId(0), Epoch(2)).await.expect("again");
    assert!(
        again.roles_restored.is_empty() && !again.was_read_only,
        "{again:?}"
    );

    // Once another node was promoted at the fence's epoch, the old writer
    // may not be unfenced: that would make two writers.
    admin.fence(NodeId(0), Epoch(3)).await.expect("fence again");
    admin
        .promote(&PromoteRequest {
            node: NodeId(1),
            epoch: Epoch(3),
            gate: RpoGate::Forced,
            synchronous: failover_core::Synchronous::Off,
        })
        .await
        .expect("promotion at 3");
    let err = admin
        .unfence(NodeId(0), Epoch(3))
        .await
        .expect_err("node1 owns epoch 3");
    assert!(
        matches!(&err, failover_pg::PgError::StaleEpoch { recorded_on, .. } if recorded_on.contains("node1")),
        "{err}"
    );
    assert!(
        common::connect(&old.app_dsn()).await.is_err(),
        "still fenced"
    );
}
