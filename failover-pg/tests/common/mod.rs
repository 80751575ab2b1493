//! Shared test support: a cluster adapter over a testkit cluster and a writer
//! task that records which rows were acknowledged.
#![allow(dead_code)]

use std::time::Duration;

use failover_core::NodeId;
use failover_pg::{PgCluster, PgTimeouts};
use failover_testkit::postgres::{PgTestCluster, PgTestClusterBuilder};

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
        // Loaded CI machines: a slow peer must still be read.
        peer_epoch: Duration::from_secs(5),
    });
    for (i, n) in tk.nodes().iter().enumerate() {
        c = c
            .with_node(NodeId(i as u32), &n.name, &n.admin_dsn())
            .expect("valid dsn");
    }
    c
}

#[allow(unused_imports)] // not every test binary connects by hand
pub use failover_testkit::postgres::writer::connect;

/// Creates the writer's table as the app role on `dsn`.
pub async fn create_table(dsn: &str) {
    failover_testkit::postgres::writer::create_rows_table(dsn)
        .await
        .expect("create table");
}

/// The testkit's writer, with the bounded wait these tests use.
pub struct Writer(failover_testkit::postgres::writer::RowWriter);

impl Writer {
    pub fn start(dsn: String) -> Writer {
        Writer(failover_testkit::postgres::writer::RowWriter::start(dsn))
    }

    pub fn acked_count(&self) -> usize {
        self.0.acked_count()
    }

    /// Waits until at least `n` rows are acknowledged (at most 30 s).
    pub async fn wait_acked(&self, n: usize) {
        if let Err(e) = self.0.wait_acked(n, Duration::from_secs(30)).await {
            panic!("{e}");
        }
    }

    /// Stops and returns (acknowledged rows, the error that ended it).
    pub async fn finish(self) -> (Vec<i64>, Option<String>) {
        self.0.finish().await
    }
}

/// Asserts every row in `acked` is present through `dsn`.
pub async fn assert_all_present(dsn: &str, acked: &[i64]) {
    let lost = failover_testkit::postgres::writer::missing_rows(dsn, acked)
        .await
        .expect("read rows from the new primary");
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged rows lost: {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(20)]
    );
}
