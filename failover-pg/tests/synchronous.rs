//! `PgCluster::set_synchronous` against real streaming replication: once it
//! returns, every commit the primary acknowledges is on the standby; the
//! promotion of that standby loses no acknowledged commit; a promoted node
//! starts in the mode it is told.

mod common;

use std::time::{Duration, Instant};

use failover_core::{
    Epoch, FencingToken, NodeId, PortErrorKind, PromoteRequest, RpoGate, SyncSet, Synchronous,
};
use failover_pg::{PgError, ReplicaLag};
use failover_testkit::postgres::PgTestCluster;

async fn setting(dsn: &str) -> String {
    let c = common::connect(dsn).await.expect("connect");
    let row = c
        .query_one("SELECT current_setting('synchronous_standby_names')", &[])
        .await
        .expect("show");
    row.get(0)
}

/// Row `n` commits on `dsn` without waiting for a standby (30 s at most).
async fn commits_without_a_standby(dsn: &str, n: i64) {
    let c = common::connect(dsn).await.expect("connect");
    tokio::time::timeout(
        Duration::from_secs(30),
        c.execute("INSERT INTO rows (n) VALUES ($1)", &[&n]),
    )
    .await
    .expect("a commit is not held for a standby")
    .expect("the insert commits");
}

fn standby<'a>(replicas: &'a [ReplicaLag], name: &str) -> Option<&'a ReplicaLag> {
    replicas.iter().find(|r| r.application_name == name)
}

/// Waits (at most 30 s) until a backend on `dsn`'s node waits for a
/// synchronous standby (`wait_event = 'SyncRep'`).
async fn wait_for_syncrep(dsn: &str) {
    let c = common::connect(dsn).await.expect("connect");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let row = c
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'",
                &[],
            )
            .await
            .expect("pg_stat_activity");
        if row.get::<_, i64>(0) > 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no commit waited for the standby"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_required_standby_holds_every_commit_until_it_is_dropped() {
    let tk = common::start(PgTestCluster::builder().replicas(1)).await;
    let admin = common::admin(&tk);
    let primary = tk.node(0).unwrap().clone();
    let replica_name = tk.node(1).unwrap().name.clone();
    common::create_table(&primary.app_dsn()).await;
    assert_eq!(
        setting(&primary.admin_dsn()).await,
        "",
        "starts asynchronous"
    );

    admin
        .set_synchronous(
            NodeId(0),
            Epoch(0),
            SyncSet::of(NodeId(1)),
            Some(FencingToken(7)),
        )
        .await
        .expect("require the replica");
    // A deposed leader's late "require nothing" (an older token) is refused
    // and changes nothing.
    let err = admin
        .set_synchronous(NodeId(0), Epoch(0), SyncSet::EMPTY, Some(FencingToken(3)))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            PgError::StaleToken {
                requested: FencingToken(3),
                recorded: FencingToken(7),
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        setting(&primary.admin_dsn()).await,
        format!("FIRST 1 (\"{replica_name}\")")
    );
    let st = admin.status(NodeId(0)).await.unwrap();
    let r = standby(&st.replicas, &replica_name).expect("streaming");
    assert_eq!(
        (r.state.as_str(), r.sync_state.as_str()),
        ("streaming", "sync")
    );
    assert_eq!(st.sync_wait, None, "no commit waits");

    // The standby stops: a commit now waits for it (never acknowledged).
    tk.kill(1).unwrap();
    let app = primary.app_dsn();
    let insert = tokio::spawn(async move {
        let c = common::connect(&app).await.expect("connect");
        c.execute("INSERT INTO rows (n) VALUES (1)", &[]).await
    });
    wait_for_syncrep(&primary.admin_dsn()).await;
    assert!(!insert.is_finished(), "acknowledged without its standby");
    // The observation says how long the oldest commit has waited, and it
    // grows while the commit waits (what the core's stall rule reads).
    let first = admin.status(NodeId(0)).await.unwrap().sync_wait;
    let first = first.expect("a commit waits for the standby");
    let deadline = Instant::now() + Duration::from_secs(30);
    let later = loop {
        let st = admin.status(NodeId(0)).await.unwrap();
        let waited = st.sync_wait.expect("the commit still waits");
        if waited >= first + Duration::from_millis(200) {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "the wait did not grow: {waited:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(matches!(
        later.observation(),
        failover_core::NodeObservation::Primary {
            sync_wait: Some(w),
            ..
        } if w >= first
    ));

    // Dropping the standby releases it: the writer goes on asynchronously.
    admin
        .set_synchronous(NodeId(0), Epoch(0), SyncSet::EMPTY, Some(FencingToken(7)))
        .await
        .expect(
            "drop the standby (the same leader; the token write never waits for the lost standby)",
        );
    let done = tokio::time::timeout(Duration::from_secs(30), insert)
        .await
        .expect("released once no standby is required")
        .expect("task");
    done.expect("the insert commits");
    assert_eq!(setting(&primary.admin_dsn()).await, "");
    assert_eq!(admin.status(NodeId(0)).await.unwrap().sync_wait, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_synchronous_refuses_what_it_cannot_make_true() {
    let tk = common::start(PgTestCluster::builder().replicas(1)).await;
    let admin = common::admin_with_catch_up(&tk, Duration::from_millis(500));

    // Not a primary.
    let err = admin
        .set_synchronous(NodeId(1), Epoch(0), SyncSet::of(NodeId(0)), None)
        .await
        .unwrap_err();
    assert!(matches!(err, PgError::NotAPrimary { .. }), "{err}");
    // Another epoch than the node carries.
    let err = admin
        .set_synchronous(NodeId(0), Epoch(3), SyncSet::of(NodeId(1)), None)
        .await
        .unwrap_err();
    assert!(matches!(err, PgError::StaleEpoch { .. }), "{err}");
    // A standby that is not there never becomes synchronous: refused in
    // time, naming it (and the port error is not retried as is).
    tk.kill(1).unwrap();
    let err = admin
        .set_synchronous(NodeId(0), Epoch(0), SyncSet::of(NodeId(1)), None)
        .await
        .unwrap_err();
    let name = &tk.node(1).unwrap().name;
    match &err {
        PgError::NotSynchronous { standby, state, .. } => {
            assert_eq!(standby, name);
            assert_eq!(state, "not connected");
        }
        other => panic!("{other}"),
    }
    let port: failover_core::PortError = err.into();
    assert_eq!(port.kind(), PortErrorKind::Refused);
    // The refused setting is not left behind: the writer still
    // acknowledges commits without the standby that is not there.
    let primary = tk.node(0).unwrap().clone();
    assert_eq!(setting(&primary.admin_dsn()).await, "");
    // A coordinated leader's attempt (with its token) is put back too.
    let err = admin
        .set_synchronous(
            NodeId(0),
            Epoch(0),
            SyncSet::of(NodeId(1)),
            Some(FencingToken(7)),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, PgError::NotSynchronous { .. }), "{err}");
    assert_eq!(setting(&primary.admin_dsn()).await, "");
    common::create_table(&primary.app_dsn()).await;
    commits_without_a_standby(&primary.app_dsn(), -2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_required_standby_is_promoted_with_every_acknowledged_commit_and_starts_asynchronous() {
    let tk = common::start(PgTestCluster::builder().replicas(1)).await;
    let admin = common::admin(&tk);
    let (old, new) = (tk.node(0).unwrap().clone(), tk.node(1).unwrap().clone());
    common::create_table(&old.app_dsn()).await;
    admin
        .set_synchronous(NodeId(0), Epoch(0), SyncSet::of(NodeId(1)), None)
        .await
        .expect("require the replica");

    let writer = common::Writer::start(old.app_dsn());
    writer.wait_acked(200).await;
    tk.kill(0).unwrap();
    let (acked, err) = writer.finish().await;
    assert!(err.is_some(), "the writer must have seen the primary die");

    // No reference position, no lag check: the synchronous gate.
    admin
        .promote(&PromoteRequest {
            node: NodeId(1),
            epoch: Epoch(1),
            gate: RpoGate::Synchronous,
            synchronous: Synchronous::On,
        })
        .await
        .expect("promote the required standby");
    common::assert_all_present(&new.app_dsn(), &acked).await;
    assert_eq!(
        setting(&new.admin_dsn()).await,
        "",
        "on: the new writer starts asynchronous, with no standby yet"
    );
    // So it takes the application's writes at once.
    commits_without_a_standby(&new.app_dsn(), -1).await;
}

/// `sync_wait` is not a long statement's age while the standby replies.
/// A statement that ran 4 s before its commit began waiting (replay paused
/// on the standby and `synchronous_commit = remote_apply`, so the commit
/// waits for good) has `query_start` 4 s back; the standby still streams and
/// replies every second (`wal_receiver_status_interval`), so the wait
/// reported is capped by its last reply, and a healthy standby is not
/// mistaken for a stalled one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_statements_age_is_not_a_stall_while_the_standby_replies() {
    let tk = common::start(PgTestCluster::builder().replicas(1)).await;
    let admin = common::admin(&tk);
    let (primary, replica) = (tk.node(0).unwrap().clone(), tk.node(1).unwrap().clone());
    common::create_table(&primary.app_dsn()).await;
    admin
        .set_synchronous(NodeId(0), Epoch(0), SyncSet::of(NodeId(1)), None)
        .await
        .expect("require the replica");
    let r = common::connect(&replica.admin_dsn())
        .await
        .expect("connect");
    r.batch_execute("SELECT pg_wal_replay_pause()")
        .await
        .expect("pause replay");

    let app = primary.app_dsn();
    let insert = tokio::spawn(async move {
        let c = common::connect(&app).await.expect("connect");
        c.batch_execute(
            "SET synchronous_commit = remote_apply; \
             INSERT INTO rows (n) SELECT 1 FROM pg_sleep(4)",
        )
        .await
    });
    wait_for_syncrep(&primary.admin_dsn()).await;
    let p = common::connect(&primary.admin_dsn())
        .await
        .expect("connect");
    let age: f64 = p
        .query_one(
            "SELECT extract(epoch FROM now() - min(query_start))::float8 \
             FROM pg_stat_activity WHERE wait_event = 'SyncRep'",
            &[],
        )
        .await
        .expect("the waiting statement's age")
        .get(0);
    assert!(
        age >= 4.0,
        "the statement ran {age} s before its commit waited"
    );
    for _ in 0..5 {
        let st = admin.status(NodeId(0)).await.unwrap();
        let waited = st.sync_wait.expect("a commit waits");
        assert!(
            waited < Duration::from_secs(3),
            "{waited:?}: the statement's age, not the standby's silence"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    r.batch_execute("SELECT pg_wal_replay_resume()")
        .await
        .expect("resume replay");
    tokio::time::timeout(Duration::from_secs(30), insert)
        .await
        .expect("released once the standby applies")
        .expect("task")
        .expect("the insert commits");
}
