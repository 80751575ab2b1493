//! Promotion and switchover timings on real PostgreSQL (loopback).
//!
//! `cargo bench -p failover-pg --bench promote -- [RUNS]` (default 7 runs).
//! Each run starts a fresh primary + asynchronous replica (testkit) and
//! measures:
//! - promote-to-first-write: from the `promote()` call until an application
//!   session's INSERT has committed on the new primary (connect included);
//! - the `promote()` call alone;
//! - a switchover under a running writer: from the `switchover()` call until
//!   it returns (fence + catch-up + promote).
//!
//! Prints median and p99 (the maximum for fewer than 100 runs) in ms.

use std::str::FromStr;
use std::time::{Duration, Instant};

use failover_core::{Epoch, NodeId, PromoteRequest, RpoGate};
use failover_pg::PgCluster;
use failover_testkit::postgres::PgTestCluster;
use tokio_postgres::NoTls;

type BenchResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn admin(tk: &PgTestCluster) -> BenchResult<PgCluster> {
    let mut c = PgCluster::new();
    for (i, n) in tk.nodes().iter().enumerate() {
        c = c.with_node(NodeId(i as u32), &n.name, &n.admin_dsn())?;
    }
    Ok(c)
}

async fn app_client(dsn: &str) -> BenchResult<tokio_postgres::Client> {
    let (client, conn) = tokio_postgres::Config::from_str(dsn)?
        .connect(NoTls)
        .await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

async fn promote_run() -> BenchResult<(Duration, Duration)> {
    let tk = tokio::task::spawn_blocking(|| PgTestCluster::builder().replicas(1).start()).await??;
    let admin = admin(&tk)?;
    let new_dsn = tk.node(1)?.app_dsn();
    app_client(&tk.node(0)?.app_dsn())
        .await?
        .batch_execute("CREATE TABLE rows (n bigint PRIMARY KEY)")
        .await?;
    // Let the replica replay the CREATE TABLE so the first write can succeed.
    let target = admin.status(NodeId(0)).await?.current_lsn;
    for _ in 0..500 {
        if admin.status(NodeId(1)).await?.replay_lsn >= target {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = Instant::now();
    admin
        .promote(&PromoteRequest {
            node: NodeId(1),
            epoch: Epoch(1),
            gate: RpoGate::Forced,
            synchronous: failover_core::Synchronous::Off,
        })
        .await?;
    let promote = started.elapsed();
    let c = app_client(&new_dsn).await?;
    c.execute("INSERT INTO rows (n) VALUES (1)", &[]).await?;
    Ok((started.elapsed(), promote))
}

async fn switchover_run() -> BenchResult<Duration> {
    let tk = tokio::task::spawn_blocking(|| PgTestCluster::builder().replicas(1).start()).await??;
    let admin = admin(&tk)?;
    let writer = app_client(&tk.node(0)?.app_dsn()).await?;
    writer
        .batch_execute("CREATE TABLE rows (n bigint PRIMARY KEY)")
        .await?;
    let load = tokio::spawn(async move {
        for n in 0i64..1_000_000 {
            if writer
                .execute("INSERT INTO rows (n) VALUES ($1)", &[&n])
                .await
                .is_err()
            {
                return n;
            }
        }
        -1
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    admin.switchover(NodeId(0), NodeId(1), Epoch(1)).await?;
    let took = started.elapsed();
    let _ = tokio::time::timeout(Duration::from_secs(10), load).await;
    Ok(took)
}

fn summary(name: &str, mut v: Vec<Duration>) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let median = v.get(v.len() / 2).copied().unwrap_or_default();
    let p99_idx = ((v.len() as f64) * 0.99).ceil() as usize;
    let p99 = v
        .get(p99_idx.saturating_sub(1).min(v.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default();
    println!(
        "{name:<28} runs={:<3} median={:>8.1} ms  p99={:>8.1} ms  min={:>8.1} ms",
        v.len(),
        ms(median),
        ms(p99),
        ms(v.first().copied().unwrap_or_default())
    );
}

fn main() -> BenchResult<()> {
    // `cargo bench` passes `--bench`; the first plain number is the run count.
    let runs = std::env::args()
        .skip(1)
        .find_map(|a| a.parse::<usize>().ok())
        .unwrap_or(7)
        .max(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let (mut to_write, mut promote, mut switchover) = (vec![], vec![], vec![]);
        for _ in 0..runs {
            let (w, p) = promote_run().await?;
            to_write.push(w);
            promote.push(p);
            switchover.push(switchover_run().await?);
        }
        summary("promote -> first write", to_write);
        summary("promote() call", promote);
        summary("switchover under load", switchover);
        Ok(())
    })
}
