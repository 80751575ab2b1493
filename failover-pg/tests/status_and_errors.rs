//! Replication status and bad input against a real primary + replica.

mod common;

use std::net::TcpListener;

use failover_core::ports::DatabaseAdmin;
use failover_core::{Epoch, NodeId, NodeObservation, PortErrorKind, PromoteRequest, RpoGate};
use failover_pg::{NodeRole, PgCluster, PgError};
use failover_testkit::postgres::{PgTestCluster, APP_DATABASE, APP_ROLE};

fn closed_port() -> u16 {
    // Bound then released: nothing listens there afterwards.
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_roles_lsns_and_lag_and_bad_input_is_typed() {
    let tk = common::start(PgTestCluster::builder().replicas(1)).await;
    let admin = common::admin(&tk);
    common::create_table(&tk.node(0).unwrap().app_dsn()).await;

    let primary = admin.status(NodeId(0)).await.expect("primary status");
    assert_eq!(primary.role, NodeRole::Primary);
    assert_eq!(primary.timeline, 1);
    assert!(primary.current_lsn.is_some_and(|l| l.0 > 0));
    assert!(!primary.fenced);
    assert_eq!(primary.epoch, None);
    assert_eq!(primary.replicas.len(), 1, "{primary:?}");
    assert_eq!(primary.replicas[0].application_name, "node1");
    assert_eq!(primary.replicas[0].state, "streaming");

    let replica = admin.status(NodeId(1)).await.expect("replica status");
    assert_eq!(replica.role, NodeRole::Replica);
    assert_eq!(replica.timeline, 1);
    assert!(replica.receive_lsn.is_some() && replica.replay_lsn.is_some());
    assert_eq!(
        replica.retrieve_retry_interval,
        Some(std::time::Duration::from_millis(50)),
        "the testkit's setting, read back"
    );
    let wr = replica.wal_receiver.clone().expect("wal receiver");
    assert_eq!(wr.status, "streaming");
    assert_eq!(wr.sender_port, Some(tk.node(0).unwrap().port));
    assert!(replica
        .lag_bytes_behind(primary.current_lsn.unwrap())
        .is_some());

    match admin.observe(NodeId(0)).await.expect("observe primary") {
        NodeObservation::Primary {
            timeline, fenced, ..
        } => {
            assert_eq!((timeline, fenced), (1, false))
        }
        other => panic!("expected primary, got {other:?}"),
    }
    assert!(matches!(
        admin.observe(NodeId(1)).await.expect("observe replica"),
        NodeObservation::Replica {
            receive_lsn: Some(_),
            ..
        }
    ));

    // Not a replica: promoting the primary is refused with a typed error.
    let err = admin
        .promote(&PromoteRequest {
            node: NodeId(0),
            epoch: Epoch(1),
            gate: RpoGate::Forced,
            synchronous: failover_core::Synchronous::Off,
        })
        .await
        .expect_err("promoting a primary");
    assert!(
        matches!(err, PgError::NotAReplica { ref node } if node == "node0"),
        "{err}"
    );
    assert_eq!(err.kind(), PortErrorKind::Refused);

    // A zero-loss gate the replica cannot reach in time: refused, still a replica.
    let impatient = common::admin_with_catch_up(&tk, std::time::Duration::from_millis(300));
    let err = impatient
        .promote(&PromoteRequest {
            node: NodeId(1),
            epoch: Epoch(1),
            gate: RpoGate::CaughtUp {
                lsn: failover_core::Lsn(u64::MAX / 2),
            },
            synchronous: failover_core::Synchronous::Off,
        })
        .await
        .expect_err("cannot catch up");
    assert!(matches!(err, PgError::NotCaughtUp { .. }), "{err}");
    assert_eq!(err.kind(), PortErrorKind::Refused);
    assert_eq!(
        admin.status(NodeId(1)).await.unwrap().role,
        NodeRole::Replica
    );

    // Switchover needs a primary as source and a replica as target.
    let err = admin
        .switchover(NodeId(1), NodeId(0), Epoch(1))
        .await
        .expect_err("to a primary");
    assert!(matches!(err, PgError::NotAReplica { .. }), "{err}");
    let err = admin
        .switchover(NodeId(1), NodeId(1), Epoch(1))
        .await
        .expect_err("from a replica");
    assert!(matches!(err, PgError::NotAPrimary { .. }), "{err}");
    assert!(
        !admin.status(NodeId(0)).await.unwrap().fenced,
        "nothing was fenced"
    );

    // Unreachable node: observe says Unreachable, the rest are Unavailable errors.
    let port = closed_port();
    let bad = PgCluster::new()
        .with_node(
            NodeId(0),
            "gone",
            &format!("host=127.0.0.1 port={port} user=postgres"),
        )
        .unwrap()
        .with_node(
            NodeId(1),
            "wrong-password",
            &format!(
                "host=127.0.0.1 port={} user={APP_ROLE} password=wrong dbname={APP_DATABASE}",
                tk.node(0).unwrap().port
            ),
        )
        .unwrap();
    assert_eq!(
        bad.observe(NodeId(0))
            .await
            .expect("unreachable is not an error"),
        NodeObservation::Unreachable
    );
    let err = bad.status(NodeId(0)).await.expect_err("unreachable");
    assert!(
        matches!(err, PgError::Unreachable { ref node, .. } if node == "gone"),
        "{err}"
    );
    let err = DatabaseAdmin::fence(&bad, NodeId(0), Epoch(1))
        .await
        .expect_err("fence unreachable");
    assert_eq!(err.kind(), PortErrorKind::Unavailable);

    // Wrong credentials: a typed Auth error, from observe too.
    let err = DatabaseAdmin::observe(&bad, NodeId(1))
        .await
        .expect_err("wrong password");
    assert_eq!(err.kind(), PortErrorKind::Auth, "{err}");
    assert!(matches!(
        err.inner().downcast_ref::<PgError>(),
        Some(PgError::Auth { node, .. }) if node == "wrong-password"
    ));

    // A DSN whose user is not a superuser cannot fence: an Auth error.
    let app_only = PgCluster::new()
        .with_node(NodeId(0), "app-user", &tk.node(0).unwrap().app_dsn())
        .unwrap();
    let err = app_only
        .fence(NodeId(0), Epoch(1))
        .await
        .expect_err("not a superuser");
    assert_eq!(err.kind(), PortErrorKind::Auth, "{err}");

    // Unknown node id: a configuration error.
    let err = DatabaseAdmin::observe(&bad, NodeId(7))
        .await
        .expect_err("unknown node");
    assert_eq!(err.kind(), PortErrorKind::Config);

    // recorded_epoch with nothing recorded anywhere.
    assert_eq!(admin.recorded_epoch().await.expect("epoch"), None);

    // A byte gate without a reference is measured against the best
    // reachable position: see promotion.rs,
    // without_a_reference_the_gate_measures_against_the_best_reachable_node.
}

#[test]
fn dsn_that_does_not_parse_is_a_typed_error_naming_node_and_field() {
    let err = PgCluster::new()
        .with_node(NodeId(0), "east", "host=127.0.0.1 port=notaport")
        .expect_err("bad port");
    match &err {
        PgError::Dsn { node, field, .. } => {
            assert_eq!((node.as_str(), field.as_str()), ("east", "port"))
        }
        other => panic!("expected Dsn, got {other:?}"),
    }
    assert_eq!(err.kind(), PortErrorKind::Config);
    assert!(err.to_string().contains("east") && err.to_string().contains("port"));

    let err = PgCluster::new()
        .with_node(NodeId(0), "west", "host='unterminated")
        .expect_err("unterminated quote");
    assert!(
        matches!(err, PgError::Dsn { ref node, .. } if node == "west"),
        "{err}"
    );

    let err = PgCluster::new()
        .with_node(NodeId(0), "west", "user=postgres")
        .expect_err("no host");
    assert!(
        matches!(err, PgError::Dsn { ref field, .. } if field == "host"),
        "{err}"
    );

    let err = PgCluster::new()
        .with_node(NodeId(0), "west", "bogus_option=1 host=x")
        .expect_err("unknown option");
    assert!(
        matches!(err, PgError::Dsn { ref field, .. } if field == "bogus_option"),
        "{err}"
    );
}

/// Issue 10 item 10: rejoin's `primary_conninfo` goes through two quoting
/// layers (libpq values, the configuration file). A quote, a backslash and a
/// newline in a value reach the streaming replica's libpq unchanged: the
/// server reads the file, and the primary sees the replica under that exact
/// application_name (PostgreSQL shows the newline as `?`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_conninfo_with_quotes_backslashes_and_newlines_reaches_libpq() {
    let tk = common::start(PgTestCluster::builder().replicas(1)).await;
    let (primary, replica) = (tk.node(0).unwrap().clone(), tk.node(1).unwrap().clone());
    let name = "it's a \\ test\nok";
    let port = primary.port.to_string();
    let conninfo = failover_pg::conninfo::conninfo([
        ("host", "127.0.0.1"),
        ("port", port.as_str()),
        ("user", "postgres"),
        ("application_name", name),
    ]);
    let auto = replica.data_dir.join("postgresql.auto.conf");
    let old = std::fs::read_to_string(&auto).unwrap();
    std::fs::write(&auto, failover_pg::standby_auto_conf(&old, &conninfo)).unwrap();
    tk.psql(1, "SELECT pg_reload_conf()").unwrap();

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut seen = String::new();
    while std::time::Instant::now() < deadline {
        seen = tk
            .psql(0, "SELECT application_name FROM pg_stat_replication")
            .unwrap();
        if seen.trim_end_matches('\n').starts_with("it's a \\ test") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let seen = seen.trim_end_matches('\n');
    assert!(
        seen == "it's a \\ test?ok" || seen == "it's a \\ test\\x0aok",
        "replica streams as {seen:?}; server log: {:?}",
        std::fs::read_to_string(&replica.log_file)
            .unwrap_or_default()
            .lines()
            .rev()
            .take(3)
            .collect::<Vec<_>>()
    );
    let shown = tk.psql(1, "SHOW primary_conninfo").unwrap();
    assert_eq!(shown.trim_end_matches('\n'), conninfo);
}

/// What the replica says about its stream from the primary.
async fn upstream_heard(admin: &PgCluster) -> Option<std::time::Duration> {
    match admin.observe(NodeId(1)).await.expect("observe replica") {
        NodeObservation::Replica { upstream_heard, .. } => upstream_heard,
        other => panic!("expected a replica, got {other:?}"),
    }
}

/// The controller's witness for an unreachable writer: a replica whose WAL
/// receiver streams and heard from the primary recently. Kill -9 of the
/// primary ends the stream, so the witness is gone within moments.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_vouches_for_its_primary_only_while_the_stream_lives() {
    use std::time::{Duration, Instant};
    let tk = common::start(PgTestCluster::builder().replicas(1)).await;
    let admin = common::admin(&tk);
    let dsn = tk.node(0).unwrap().app_dsn();
    common::create_table(&dsn).await;
    let writer = common::Writer::start(dsn);
    writer.wait_acked(5).await;

    // A primary taking writes sends WAL all the time: the last message is fresh.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match upstream_heard(&admin).await {
            Some(age) if age < Duration::from_secs(2) => break,
            other => assert!(
                Instant::now() < deadline,
                "the streaming replica never reported a fresh message: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    tk.kill(0).expect("kill -9 the primary");
    let killed = Instant::now();
    let deadline = killed + Duration::from_secs(30);
    while upstream_heard(&admin).await.is_some() {
        assert!(
            Instant::now() < deadline,
            "the replica still reports a live stream 30 s after its primary was killed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "witness gone {:?} after kill -9 of the primary",
        killed.elapsed()
    );
    let _ = writer.finish().await;
}

/// Observations reuse one session per node (no backend fork per interval),
/// and a session the server ended — terminated, or the node restarted — is
/// replaced within the same call: no observation fails for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observations_keep_one_session_per_node_and_replace_a_lost_one_at_once() {
    let tk = common::start(PgTestCluster::builder()).await;
    let node = tk.node(0).unwrap();
    let dsn = node.admin_dsn().replace(
        "application_name=failover-admin",
        "application_name=observer-test",
    );
    let admin = PgCluster::new()
        .with_node(NodeId(0), "pg-one", &dsn)
        .expect("dsn parses");
    let sessions = || {
        tk.psql(
            0,
            "SELECT count(*) || ' ' || coalesce(max(pid), 0) FROM pg_stat_activity \
             WHERE application_name = 'observer-test'",
        )
        .expect("psql")
        .trim()
        .to_owned()
    };
    admin.observe(NodeId(0)).await.expect("first observation");
    let first = sessions();
    assert!(first.starts_with("1 "), "{first}");
    for _ in 0..20 {
        admin.observe(NodeId(0)).await.expect("observation");
    }
    assert_eq!(sessions(), first, "20 observations, one session");

    // The server ends the session (as a fence does): the next observation
    // opens another and succeeds.
    tk.psql(
        0,
        "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity \
         WHERE application_name = 'observer-test'",
    )
    .expect("terminate");
    admin
        .observe(NodeId(0))
        .await
        .expect("observation after the session was terminated");
    let second = sessions();
    assert!(second.starts_with("1 ") && second != first, "{second}");

    // The node restarts: the same.
    tk.stop(0).expect("stop");
    assert!(
        admin.status(NodeId(0)).await.is_err(),
        "a stopped node is unreachable"
    );
    tk.start_node(0).expect("start");
    admin
        .observe(NodeId(0))
        .await
        .expect("observation after a restart");
    assert!(sessions().starts_with("1 "));
}

/// An observation that finds a replica opens a spare session to it in the
/// background, and a promotion starts on that spare (one connect saved on
/// the critical path): once promoted, the spare is gone and only the
/// observation session is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promotion_starts_on_the_spare_session_an_observation_opened() {
    use std::time::{Duration, Instant};
    let tk = common::start(PgTestCluster::builder().replicas(1)).await;
    let replica = tk.node(1).unwrap();
    let dsn = replica.admin_dsn().replace(
        "application_name=failover-admin",
        "application_name=spare-test",
    );
    let admin = PgCluster::new()
        .with_node(NodeId(1), "pg-replica", &dsn)
        .expect("dsn parses");
    let count = || {
        tk.psql(
            1,
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'spare-test'",
        )
        .expect("psql")
        .trim()
        .parse::<u32>()
        .expect("a count")
    };
    let wait_for = |n: u32, what: &'static str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        async move {
            while count() != n {
                assert!(Instant::now() < deadline, "{what}: {} sessions", count());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    assert!(matches!(
        admin.observe(NodeId(1)).await.expect("observe"),
        NodeObservation::Replica { .. }
    ));
    wait_for(2, "the observation session and a spare").await;
    admin
        .promote(&PromoteRequest {
            node: NodeId(1),
            epoch: Epoch(1),
            gate: RpoGate::Forced,
            synchronous: failover_core::Synchronous::Off,
        })
        .await
        .expect("promoted");
    // Had the promotion opened its own connection, the spare would still
    // be idle here.
    wait_for(1, "the spare was used by the promotion and closed").await;
}
