//! An application-like writer for data-loss tests: it inserts 1, 2, 3, … into
//! a `rows` table as the application role and records every row whose
//! commit was acknowledged, so a test can check that none is missing after a
//! failover.

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio_postgres::{Client, NoTls};

/// Connects with a libpq-style DSN (5 s connect timeout), driving the
/// connection on its own task.
pub async fn connect(dsn: &str) -> Result<Client, tokio_postgres::Error> {
    let mut config = tokio_postgres::Config::from_str(dsn)?;
    config.connect_timeout(Duration::from_secs(5));
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// Creates the writer's `rows (n bigint PRIMARY KEY)` table through `dsn`.
pub async fn create_rows_table(dsn: &str) -> Result<(), tokio_postgres::Error> {
    connect(dsn)
        .await?
        .batch_execute("CREATE TABLE IF NOT EXISTS rows (n bigint PRIMARY KEY)")
        .await
}

/// The acknowledged rows in `acked` that are not in `rows` through `dsn`.
pub async fn missing_rows(dsn: &str, acked: &[i64]) -> Result<Vec<i64>, tokio_postgres::Error> {
    let rows = connect(dsn).await?.query("SELECT n FROM rows", &[]).await?;
    let present: std::collections::HashSet<i64> = rows.iter().map(|r| r.get(0)).collect();
    Ok(acked
        .iter()
        .copied()
        .filter(|n| !present.contains(n))
        .collect())
}

/// A task inserting numbered rows as fast as they are acknowledged.
pub struct RowWriter {
    acked: Arc<Mutex<Vec<i64>>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Option<String>>,
}

impl RowWriter {
    /// Starts writing through `dsn`. It stops at the first error (kept, see
    /// [`finish`](Self::finish)), when told, or after 60 s at most.
    pub fn start(dsn: String) -> RowWriter {
        let acked = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (record, stopped) = (acked.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let client = match connect(&dsn).await {
                Ok(client) => client,
                Err(e) => return Some(e.to_string()),
            };
            let started = Instant::now();
            let mut n = 0i64;
            while !stopped.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(60) {
                n += 1;
                let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&n];
                let insert = client.execute("INSERT INTO rows (n) VALUES ($1)", &params);
                match tokio::time::timeout(Duration::from_secs(10), insert).await {
                    Ok(Ok(_)) => record
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(n),
                    Ok(Err(e)) => return Some(e.to_string()),
                    Err(_) => return Some("insert timed out after 10 s".into()),
                }
            }
            None
        });
        RowWriter { acked, stop, task }
    }

    /// Rows acknowledged so far.
    pub fn acked_count(&self) -> usize {
        self.acked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Waits until at least `n` rows are acknowledged, at most `limit`.
    pub async fn wait_acked(&self, n: usize, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        while self.acked_count() < n {
            if Instant::now() >= deadline || self.task.is_finished() {
                return Err(format!(
                    "writer stalled at {} of {n} rows",
                    self.acked_count()
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// Stops the writer and returns the acknowledged rows and the error that
    /// ended it, if one did.
    pub async fn finish(self) -> (Vec<i64>, Option<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let error = match tokio::time::timeout(Duration::from_secs(30), self.task).await {
            Ok(Ok(error)) => error,
            Ok(Err(join)) => Some(format!("writer task failed: {join}")),
            Err(_) => Some("writer did not stop within 30 s".into()),
        };
        let acked = self
            .acked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        (acked, error)
    }
}
