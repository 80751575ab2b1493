//! PostgreSQL in regions: a primary in `east`, a replica in `west` that
//! streams from east's region address over the east–west link, and a cut
//! of that link stops the stream until the heal; a paused primary answers
//! nothing until it is resumed.
//!
//! Skips, printing why, without root (no namespaces) or without PostgreSQL.

use std::time::{Duration, Instant};

use failover_testkit::net::Net;
use failover_testkit::postgres::{find_bindir, PgTestCluster};

/// How long replication may take to deliver a row on a healthy link.
const DELIVER: Duration = Duration::from_secs(30);
/// How long a row must stay missing on the replica while the link is cut.
const WITHHELD: Duration = Duration::from_secs(2);

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
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Connects from `region` to `dsn` and asks the server which address the
/// client came from, all within `within`.
fn app_query(net: &Net, region: &str, dsn: &str, within: Duration) -> Result<String, String> {
    let dsn = dsn.to_owned();
    net.block_on(region, move || async move {
        let query = async {
            let (client, connection) = tokio_postgres::connect(&dsn, tokio_postgres::NoTls)
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(connection);
            let row = client
                .query_one("SELECT host(inet_client_addr())", &[])
                .await
                .map_err(|e| e.to_string())?;
            Ok::<String, String>(row.get(0))
        };
        tokio::time::timeout(within, query)
            .await
            .map_err(|_| format!("no answer within {within:?}"))?
    })
    .expect("the client runs in its region")
}

#[test]
fn a_replica_in_west_streams_from_east_until_the_link_is_cut() {
    if let Err(e) = find_bindir() {
        eprintln!("skipped: {e}");
        return;
    }
    let net = match Net::builder().region("east").region("west").start() {
        Ok(net) => net,
        Err(e) if e.is_unsupported() => {
            eprintln!("skipped: {e}");
            return;
        }
        Err(e) => panic!("the net starts: {e}"),
    };
    let (east, west) = (
        net.region("east").expect("east"),
        net.region("west").expect("west"),
    );
    let cluster = PgTestCluster::builder()
        .replicas(1)
        .names(["pg-east", "pg-west"])
        .placements([east.placement(), west.placement()])
        .start()
        .expect("a primary in east and a replica in west start");

    // The replica streams from east's region address and the primary sees
    // it come from west's.
    let sender = cluster
        .psql(
            1,
            "SELECT sender_host FROM pg_stat_wal_receiver WHERE status = 'streaming'",
        )
        .expect("pg-west's receiver");
    assert_eq!(sender.trim(), east.addr().to_string());
    let client = cluster
        .psql(0, "SELECT host(client_addr) FROM pg_stat_replication")
        .expect("pg-east's senders");
    assert_eq!(client.trim(), west.addr().to_string());

    // An application in west reaches the primary at east's address, with
    // the application role's password.
    let dsn = cluster.node(0).expect("primary").app_dsn();
    let seen_from =
        app_query(&net, "west", &dsn, DELIVER).expect("the application connects from west");
    assert_eq!(seen_from, west.addr().to_string());

    let count = |node: usize| -> Option<u32> {
        cluster
            .psql(node, "SELECT count(*) FROM drill")
            .ok()
            .and_then(|s| s.trim().parse().ok())
    };
    cluster
        .psql(
            0,
            "CREATE TABLE drill (id int PRIMARY KEY); INSERT INTO drill VALUES (1)",
        )
        .expect("a write on the primary");
    assert!(
        eventually(DELIVER, || count(1) == Some(1)),
        "the row reaches west"
    );

    // Cut: the primary commits (asynchronous replication) and the replica
    // does not get it.
    net.cut("east", "west").expect("cut");
    cluster
        .psql(0, "INSERT INTO drill VALUES (2)")
        .expect("the primary commits while cut off");
    assert!(
        !eventually(WITHHELD, || count(1) != Some(1)),
        "nothing streams over a cut link: west has {:?} rows",
        count(1)
    );

    // Heal: the stream resumes and the row arrives.
    net.heal("east", "west").expect("heal");
    assert!(
        eventually(DELIVER, || count(1) == Some(2)),
        "the stream resumes after the heal: west has {:?} rows",
        count(1)
    );

    // A paused primary answers nothing (the kernel still accepts the
    // connection) until it is resumed.
    cluster.pause(0).expect("SIGSTOP the primary");
    let err = app_query(&net, "west", &dsn, WITHHELD).expect_err("a paused primary is silent");
    assert!(err.contains("no answer"), "{err}");
    cluster.resume(0).expect("SIGCONT the primary");
    app_query(&net, "west", &dsn, DELIVER).expect("a resumed primary answers");
}
