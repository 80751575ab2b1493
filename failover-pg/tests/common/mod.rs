//! Shared test support: a cluster adapter over a testkit cluster and a writer
//! task that records which rows were acknowledged.
#![allow(dead_code)]

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use failover_core::NodeId;
use failover_pg::{PgCluster, PgTimeouts};
use failover_testkit::postgres::{PgTestCluster, PgTestClusterBuilder};
use tokio_postgres::NoTls;

/// Starts a testkit cluster off the async runtime's worker.
pub async fn start(builder: PgTestClusterBuilder) -> PgTestCluster {
    tokio::task::spawn_blocking(move || builder.start())
        .await
        .expect("join")
        .expect("start test cluster")
}

/// The adapter for every node of `tk`, node i = NodeId(i).
pub fn admin(tk: &PgTestCluster) -> PgCluster {
    admin_with_catch_up(tk, Duration::from_secs(60))
}

/// Like [`admin`] with a given catch-up limit.
pub fn admin_with_catch_up(tk: &PgTestCluster, catch_up: Duration) -> PgCluster {
    let mut c = PgCluster::new().with_timeouts(PgTimeouts {
        connect: Duration::from_secs(5),
        statement: Duration::from_secs(15),
        promote: Duration::from_secs(60),
        catch_up,
    });
    for (i, n) in tk.nodes().iter().enumerate() {
        c = c
            .with_node(NodeId(i as u32), &n.name, &n.admin_dsn())
            .expect("valid dsn");
    }
    c
}

/// Connects with a DSN, spawning the connection task.
pub async fn connect(dsn: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let mut cfg = tokio_postgres::Config::from_str(dsn)?;
    cfg.connect_timeout(Duration::from_secs(5));
    let (client, conn) = cfg.connect(NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// Creates the writer's table as the app role on `dsn`.
pub async fn create_table(dsn: &str) {
    let c = connect(dsn).await.expect("connect app");
    c.batch_execute("CREATE TABLE IF NOT EXISTS rows (n bigint PRIMARY KEY)")
        .await
        .expect("create table");
}

/// A task inserting 1, 2, 3, … into `rows` as fast as acknowledged.
pub struct Writer {
    pub acked: Arc<Mutex<Vec<i64>>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Option<String>>,
}

impl Writer {
    /// Starts writing through `dsn`; stops at the first error (recorded) or
    /// when told, and after 60 s at most.
    pub fn start(dsn: String) -> Writer {
        let acked = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, s) = (acked.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let client = match connect(&dsn).await {
                Ok(c) => c,
                Err(e) => return Some(e.to_string()),
            };
            let started = Instant::now();
            let mut n = 0i64;
            while !s.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(60) {
                n += 1;
                let r = tokio::time::timeout(
                    Duration::from_secs(10),
                    client.execute("INSERT INTO rows (n) VALUES ($1)", &[&n]),
                )
                .await;
                match r {
                    Ok(Ok(_)) => a.lock().unwrap().push(n),
                    Ok(Err(e)) => return Some(e.to_string()),
                    Err(_) => return Some("insert timed out".into()),
                }
            }
            None
        });
        Writer { acked, stop, task }
    }

    pub fn acked_count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// Waits until at least `n` rows are acknowledged (bounded).
    pub async fn wait_acked(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.acked_count() < n {
            assert!(
                Instant::now() < deadline,
                "writer stalled at {}",
                self.acked_count()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops and returns (acknowledged rows, the error that ended it).
    pub async fn finish(self) -> (Vec<i64>, Option<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let err = tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("writer ends")
            .expect("writer join");
        let acked = self.acked.lock().unwrap().clone();
        (acked, err)
    }
}

/// Asserts every row in `acked` is present through `dsn`.
pub async fn assert_all_present(dsn: &str, acked: &[i64]) {
    let c = connect(dsn).await.expect("connect to new primary");
    let rows = c.query("SELECT n FROM rows", &[]).await.expect("read rows");
    let present: std::collections::HashSet<i64> = rows.iter().map(|r| r.get(0)).collect();
    let lost: Vec<i64> = acked
        .iter()
        .copied()
        .filter(|n| !present.contains(n))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged rows lost: {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(20)]
    );
}
