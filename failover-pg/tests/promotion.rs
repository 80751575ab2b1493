//! Promotion against real streaming replication: zero loss with synchronous
//! replication, the RPO gate with asynchronous replication, fencing epochs.

mod common;

use std::time::Duration;

use failover_core::ports::DatabaseAdmin;
use failover_core::{Epoch, MaxRpo, NodeId, PortErrorKind, PromoteRequest, RpoGate};
use failover_pg::{rejoin, NodeRole, PgError, RejoinPlan, RpoReference};
use failover_testkit::postgres::PgTestCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_replication_kill_primary_then_promote_loses_no_acknowledged_row() {
    let tk = common::start(PgTestCluster::builder().replicas(1).synchronous(true)).await;
    let admin = common::admin(&tk);
    let (old, new) = (tk.node(0).unwrap().clone(), tk.node(1).unwrap().clone());
    common::create_table(&old.app_dsn()).await;

    let writer = common::Writer::start(old.app_dsn());
    writer.wait_acked(200).await;
    let reference = admin.status(NodeId(0)).await.unwrap().current_lsn;
    tk.kill(0).unwrap();
    let (acked, err) = writer.finish().await;
    assert!(err.is_some(), "the writer must have seen the primary die");
    assert!(acked.len() >= 200);

    assert_eq!(
        admin.observe(NodeId(0)).await.unwrap(),
        failover_core::NodeObservation::Unreachable
    );
    let lsn = admin
        .promote(&PromoteRequest {
            node: NodeId(1),
            epoch: Epoch(1),
            gate: RpoGate::Within {
                max: MaxRpo::bytes(16 << 20),
                reference,
            },
            synchronous: failover_core::Synchronous::Off,
        })
        .await
        .expect("promote the synchronous standby");
    assert!(lsn >= reference.unwrap());
    let st = admin.status(NodeId(1)).await.unwrap();
    assert_eq!(st.role, NodeRole::Primary);
    assert_eq!(st.timeline, 2, "promotion starts a new timeline");
    assert_eq!(st.epoch, Some(Epoch(1)));
    assert_eq!(admin.recorded_epoch().await.unwrap(), Some(Epoch(1)));

    common::assert_all_present(&new.app_dsn(), &acked).await;
    // The new primary takes writes from the application.
    let c = common::connect(&new.app_dsn()).await.unwrap();
    c.execute("INSERT INTO rows (n) VALUES (-1)", &[])
        .await
        .unwrap();

    // The crashed old primary rejoins: pg_rewind recovers it first.
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
    let rj = rejoin(&plan).await.expect("rejoin after crash");
    assert_eq!(rj.wal_receiver.sender_port, Some(new.port));
    let back = admin.status(NodeId(0)).await.unwrap();
    assert_eq!(back.role, NodeRole::Replica);
    common::assert_all_present(&old.app_dsn(), &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_replica_behind_max_rpo_is_refused_with_its_lag() {
    let tk = common::start(PgTestCluster::builder().replicas(1)).await;
    let admin = common::admin(&tk);
    let primary = tk.node(0).unwrap().clone();
    common::create_table(&primary.app_dsn()).await;

    // The replica replays the table's creation first, so it has a last
    // replayed commit to measure its delay from.
    let created = admin.status(NodeId(0)).await.unwrap().current_lsn;
    for _ in 0..500 {
        if admin.status(NodeId(1)).await.unwrap().replay_lsn >= created {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Real lag: the replica stops receiving (empty primary_conninfo stops the
    // WAL receiver) and replay is paused, then the primary writes ~1 MB.
    tk.psql(1, "ALTER SYSTEM SET primary_conninfo = ''")
        .unwrap();
    tk.psql(1, "SELECT pg_reload_conf()").unwrap();
    tk.psql(1, "SELECT pg_wal_replay_pause()").unwrap();
    for _ in 0..100 {
        if admin
            .status(NodeId(1))
            .await
            .unwrap()
            .wal_receiver
            .is_none()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let c = common::connect(&primary.app_dsn()).await.unwrap();
    c.execute(
        "INSERT INTO rows SELECT g FROM generate_series(1, 20000) g",
        &[],
    )
    .await
    .unwrap();
    let reference = admin.status(NodeId(0)).await.unwrap().current_lsn;
    let replica = admin.status(NodeId(1)).await.unwrap();
    let lag = replica.lag_bytes_behind(reference.unwrap()).unwrap();
    assert!(lag > 100_000, "expected real lag, got {lag} bytes");

    let err = admin
        .promote(&PromoteRequest {
            node: NodeId(1),
            epoch: Epoch(1),
            gate: RpoGate::Within {
                max: MaxRpo::bytes(64 * 1024),
                reference,
            },
            synchronous: failover_core::Synchronous::Off,
        })
        .await
        .expect_err("lag above max_rpo");
    assert_eq!(err.kind(), PortErrorKind::Refused);
    match &err {
        PgError::LagExceeded { lag_bytes, .. } => {
            assert!(lag_bytes.is_some_and(|l| l >= lag), "{err}")
        }
        other => panic!("expected LagExceeded, got {other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("lag") && text.contains(&format!("{}", lag_bytes_of(&err))),
        "{text}"
    );
    assert_eq!(
        admin.status(NodeId(1)).await.unwrap().role,
        NodeRole::Replica
    );

    // A time limit refuses too: replay is paused, so the delay only grows.
    // Wait until the replica itself reports a delay of a second or more.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let delay = admin.status(NodeId(1)).await.unwrap().replay_delay;
        if delay.is_some_and(|d| d >= Duration::from_secs(1)) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the paused replica's replay delay never reached 1 s: {delay:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let err = admin
        .promote(&PromoteRequest {
            node: NodeId(1),
            epoch: Epoch(1),
            gate: RpoGate::Within {
                max: MaxRpo {
                    bytes: None,
                    time: Some(Duration::from_millis(500)),
                },
                reference,
            },
            synchronous: failover_core::Synchronous::Off,
        })
        .await
        .expect_err("delay above max_rpo");
    assert!(
        matches!(err, PgError::LagExceeded { delay: Some(d), .. } if d >= Duration::from_secs(1)),
        "{err}"
    );

    // An operator can force it; the epoch is then recorded.
    admin
        .promote(&PromoteRequest {
            node: NodeId(1),
            epoch: Epoch(1),
            gate: RpoGate::Forced,
            synchronous: failover_core::Synchronous::Off,
        })
        .await
        .expect("forced promotion");
    assert_eq!(
        admin.status(NodeId(1)).await.unwrap().role,
        NodeRole::Primary
    );
}

fn lag_bytes_of(e: &PgError) -> u64 {
    match e {
        PgError::LagExceeded {
            lag_bytes: Some(l), ..
        } => *l,
        _ => 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_promotion_with_the_same_or_an_older_epoch_is_refused() {
    let tk = common::start(PgTestCluster::builder().replicas(2)).await;
    let admin = common::admin(&tk);
    let req = |node, epoch| PromoteRequest {
        node: NodeId(node),
        epoch: Epoch(epoch),
        gate: RpoGate::Forced,
        synchronous: failover_core::Synchronous::Off,
    };
    admin.promote(&req(1, 5)).await.expect("first promotion");
    // A retried call with the same request is idempotent.
    admin
        .promote(&req(1, 5))
        .await
        .expect("retry is idempotent");

    for stale in [5, 4] {
        let err = admin
            .promote(&req(2, stale))
            .await
            .expect_err("stale epoch");
        match &err {
            PgError::StaleEpoch {
                requested,
                recorded,
                recorded_on,
                ..
            } => {
                assert_eq!((*requested, *recorded), (Epoch(stale), Epoch(5)));
                assert_eq!(recorded_on, "node1");
            }
            other => panic!("expected StaleEpoch, got {other:?}"),
        }
        let text = err.to_string();
        assert!(
            text.contains(&format!("epoch {stale}")) && text.contains("epoch 5"),
            "{text}"
        );
        assert_eq!(err.kind(), PortErrorKind::Refused);
        let port_err = DatabaseAdmin::promote(&admin, &req(2, stale))
            .await
            .expect_err("port");
        assert_eq!(port_err.kind(), PortErrorKind::Refused);
        assert_eq!(
            admin.status(NodeId(2)).await.unwrap().role,
            NodeRole::Replica
        );
    }
    // A stale fence is refused too.
    let err = admin
        .fence(NodeId(1), Epoch(3))
        .await
        .expect_err("stale fence");
    assert!(matches!(err, PgError::StaleEpoch { .. }), "{err}");

    // A newer epoch is accepted, and the highest one is what a restarted
    // controller resumes after.
    admin.promote(&req(2, 6)).await.expect("newer epoch");
    assert_eq!(admin.recorded_epoch().await.unwrap(), Some(Epoch(6)));
}

/// Issue 10 item 2: `pg_promote` took effect but the call failed before the
/// epoch was recorded (here: recording the epoch outlives the client's
/// statement timeout). The retry of the same request used to get "not a
/// replica"; it must finish the job and return the same LSN, and another
/// epoch must never be recorded on the node this one promoted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promotion_retried_after_pg_promote_took_effect_records_its_epoch() {
    let tk = common::start(PgTestCluster::builder().replicas(1)).await;
    let full = common::admin(&tk);
    // The old primary is fenced at 1, the epoch its replica is promoted at.
    let fence = full.fence(NodeId(0), Epoch(1)).await.expect("fence");
    // Recording the epoch is slow for a while: 3 s inside the insert, longer
    // than the client waits for one statement.
    tk.psql(
        0,
        "BEGIN READ WRITE; \
         CREATE FUNCTION failover.slow() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN PERFORM pg_sleep(3); RETURN NEW; END $$; \
         CREATE TRIGGER slow BEFORE INSERT ON failover.epoch \
         FOR EACH ROW EXECUTE FUNCTION failover.slow(); COMMIT",
    )
    .unwrap();
    let replayed = |tk: &PgTestCluster| {
        tk.psql(1, "SELECT count(*) FROM pg_trigger WHERE tgname = 'slow'")
            .is_ok_and(|s| s.trim() == "1")
    };
    for _ in 0..500 {
        if replayed(&tk) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(replayed(&tk), "the trigger reached the replica");

    let node1 = tk.node(1).unwrap().clone();
    let short = failover_pg::PgCluster::new()
        .with_timeouts(failover_pg::PgTimeouts {
            connect: Duration::from_secs(5),
            statement: Duration::from_secs(1),
            promote: Duration::from_secs(60),
            catch_up: Duration::from_secs(30),
            peer_epoch: Duration::from_secs(5),
        })
        .with_node(NodeId(0), "node0", &tk.node(0).unwrap().admin_dsn())
        .unwrap()
        .with_node(NodeId(1), "node1", &node1.admin_dsn())
        .unwrap();
    let request = PromoteRequest {
        node: NodeId(1),
        epoch: Epoch(1),
        gate: RpoGate::CaughtUp {
            lsn: fence.flush_lsn.unwrap(),
        },
        synchronous: failover_core::Synchronous::Off,
    };
    let err = short
        .promote(&request)
        .await
        .expect_err("the epoch is not recorded in time");
    assert_eq!(err.kind(), PortErrorKind::Timeout, "{err}");
    assert_eq!(
        full.status(NodeId(1)).await.unwrap().role,
        NodeRole::Primary,
        "pg_promote took effect"
    );
    // The stuck insert ends on its own; then the retry can record.
    tk.psql(
        1,
        "BEGIN READ WRITE; DROP TRIGGER slow ON failover.epoch; COMMIT",
    )
    .unwrap();

    let lsn = DatabaseAdmin::promote(&full, &request)
        .await
        .expect("the retry of the same request completes the promotion");
    assert!(lsn >= fence.flush_lsn.unwrap());
    assert_eq!(full.status(NodeId(1)).await.unwrap().epoch, Some(Epoch(1)));
    assert_eq!(full.recorded_epoch().await.unwrap(), Some(Epoch(1)));
    // Once more: already recorded, same LSN.
    assert_eq!(full.promote(&request).await.expect("idempotent"), lsn);
    // The application role's LOGIN, revoked by the fence, is back.
    let c = common::connect(&node1.app_dsn())
        .await
        .expect("app logs in");
    c.batch_execute("CREATE TABLE after_retry (n int); INSERT INTO after_retry VALUES (1)")
        .await
        .expect("app writes");

    // A different, higher epoch on the node this one promoted: refused,
    // and nothing is recorded for it.
    let err = full
        .promote(&PromoteRequest {
            epoch: Epoch(2),
            ..request
        })
        .await
        .expect_err("node1 belongs to epoch 1");
    assert!(matches!(err, PgError::NotAReplica { .. }), "{err}");
    assert_eq!(err.kind(), PortErrorKind::Refused);
    assert_eq!(full.recorded_epoch().await.unwrap(), Some(Epoch(1)));
}

/// Issue 10 item 7: a controller restarted after the primary died has no
/// reference position. The byte gate used to refuse every candidate then,
/// for ever. Now it measures against the best position a reachable node
/// reports (failover-core's rule too): the best replica passes, one that
/// lags it by more than max_rpo is refused, naming where the reference came
/// from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_reference_the_gate_measures_against_the_best_reachable_node() {
    let tk = common::start(PgTestCluster::builder().replicas(2)).await;
    let admin = common::admin(&tk);
    let primary = tk.node(0).unwrap().clone();
    common::create_table(&primary.app_dsn()).await;
    let created = admin.status(NodeId(0)).await.unwrap().current_lsn;
    for n in [1, 2] {
        for _ in 0..500 {
            if admin.status(NodeId(n)).await.unwrap().replay_lsn >= created {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // node2 stops receiving; node1 keeps streaming ~1 MB more.
    tk.psql(2, "ALTER SYSTEM SET primary_conninfo = ''")
        .unwrap();
    tk.psql(2, "SELECT pg_reload_conf()").unwrap();
    for _ in 0..200 {
        if admin
            .status(NodeId(2))
            .await
            .unwrap()
            .wal_receiver
            .is_none()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let c = common::connect(&primary.app_dsn()).await.unwrap();
    c.execute(
        "INSERT INTO rows SELECT g FROM generate_series(1, 20000) g",
        &[],
    )
    .await
    .unwrap();
    let written = admin.status(NodeId(0)).await.unwrap().current_lsn.unwrap();
    for _ in 0..500 {
        if admin.status(NodeId(1)).await.unwrap().received() >= Some(written) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(admin.status(NodeId(1)).await.unwrap().received() >= Some(written));
    tk.kill(0).unwrap();

    let gate = RpoGate::Within {
        max: MaxRpo::bytes(64 * 1024),
        reference: None,
    };
    let err = admin
        .promote(&PromoteRequest {
            node: NodeId(2),
            epoch: Epoch(1),
            gate,
            synchronous: failover_core::Synchronous::Off,
        })
        .await
        .expect_err("node2 lags node1 by ~1 MB");
    match &err {
        PgError::LagExceeded {
            lag_bytes: Some(lag),
            reference,
            ..
        } => {
            assert!(*lag > 64 * 1024, "{err}");
            assert!(
                matches!(reference, RpoReference::Received { node: NodeId(1), lsn } if *lsn >= written),
                "{err}"
            );
        }
        other => panic!("expected LagExceeded, got {other:?}"),
    }
    assert!(err.to_string().contains("received by NodeId(1)"), "{err}");
    assert_eq!(err.kind(), PortErrorKind::Refused);

    let lsn = DatabaseAdmin::promote(
        &admin,
        &PromoteRequest {
            node: NodeId(1),
            epoch: Epoch(1),
            gate,
            synchronous: failover_core::Synchronous::Off,
        },
    )
    .await
    .expect("the best reachable replica passes the gate without a reference");
    assert!(lsn >= written);
}
