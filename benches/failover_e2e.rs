//! End-to-end failover time on loopback, with real sockets and (when the
//! machine has it) real PostgreSQL: from the first failed probe of the dying
//! region to (a) the authoritative DNS answer switching and (b) the promoted
//! replica committing a write. Interval 1 s, fall 3, TTL 1 s.
//!
//! ```sh
//! cargo bench --bench failover_e2e            # 10 runs
//! FAILOVER_E2E_RUNS=20 cargo bench --bench failover_e2e
//! ```
//!
//! Each run starts fresh regions (and a fresh primary + replica), waits for
//! steady state, kills us-east at a random phase of the probe interval and
//! polls DNS every 5 ms and the replica every 10 ms.

#[path = "../examples/support/regions.rs"]
mod regions;

use std::time::{Duration, Instant};

use failover::decision::{EventKind, Health, Policy};
use regions::{BoxError, LiveRegions, EAST, WEST_IP};

struct Run {
    detection: Duration,
    dns: Duration,
    writable: Option<Duration>,
}

fn policy() -> Policy {
    Policy {
        interval: Duration::from_secs(1),
        timeout: Duration::from_millis(500),
        jitter: Duration::ZERO,
        fall: 3,
        rise: 2,
        ttl: Duration::from_secs(1),
        ..Policy::default()
    }
}

async fn one_run(with_database: bool, phase: Duration) -> Result<Run, BoxError> {
    let live = LiveRegions::start(policy(), with_database).await?;
    let handle = live.runtime.handle();
    let steady = Instant::now() + Duration::from_secs(30);
    while handle.status().controller.regions[EAST.index()].health != Health::Up {
        if Instant::now() > steady {
            return Err("us-east never became healthy".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(phase).await;
    let mut events = handle.subscribe_events();
    live.kill_east().await?;
    let mut first_failure = None;
    let mut down = None;
    let mut dns = None;
    let mut writable = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        while let Ok(event) = events.try_recv() {
            match event.kind {
                EventKind::ProbeFailed { region, .. }
                    if region == EAST && first_failure.is_none() =>
                {
                    first_failure = Some(event.at)
                }
                EventKind::RegionDown { region, .. } if region == EAST => down = Some(event.at),
                _ => {}
            }
        }
        if dns.is_none() && live.resolve().await.unwrap_or_default() == [WEST_IP] {
            dns = Some(Instant::now());
        }
        if with_database && down.is_some() && writable.is_none() && live.west_writable().await {
            writable = Some(Instant::now());
        }
        if dns.is_some() && (!with_database || writable.is_some()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    live.runtime.shutdown().await;
    live.dns.shutdown().await;
    let first = first_failure.ok_or("no failed probe was seen")?;
    Ok(Run {
        detection: down.ok_or("us-east was never marked down")? - first,
        dns: dns.ok_or("DNS never switched")? - first,
        writable: writable.map(|w| w - first),
    })
}

fn summary(name: &str, mut values: Vec<Duration>) {
    if values.is_empty() {
        return;
    }
    values.sort();
    let median = values[values.len() / 2];
    let max = values[values.len() - 1];
    println!(
        "{name:<34} median {:>7.3} s   max {:>7.3} s   (n = {})",
        median.as_secs_f64(),
        max.as_secs_f64(),
        values.len()
    );
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // `cargo bench` passes --bench; `cargo test --benches` does not: then
    // this is a compile check only.
    if !std::env::args().any(|a| a == "--bench") {
        return Ok(());
    }
    let runs: usize = std::env::var("FAILOVER_E2E_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let with_database = failover_testkit::postgres::find_bindir().is_ok();
    println!(
        "end-to-end failover, interval 1 s, fall 3, TTL 1 s, {runs} runs, {}",
        if with_database {
            "with PostgreSQL"
        } else {
            "traffic only (no PostgreSQL found)"
        }
    );
    let mut results = Vec::new();
    for i in 0..runs {
        // Spread the kill over the probe interval.
        let phase = Duration::from_millis((i as u64 * 1000 / runs as u64) % 1000);
        let run = one_run(with_database, phase).await?;
        println!(
            "run {:>2}: detection {:.3} s, DNS {:.3} s, writable {}",
            i + 1,
            run.detection.as_secs_f64(),
            run.dns.as_secs_f64(),
            run.writable
                .map_or("-".into(), |w| format!("{:.3} s", w.as_secs_f64()))
        );
        results.push(run);
    }
    println!();
    summary(
        "detection (first miss → down)",
        results.iter().map(|r| r.detection).collect(),
    );
    summary(
        "(a) first miss → DNS switched",
        results.iter().map(|r| r.dns).collect(),
    );
    summary(
        "(b) first miss → primary writable",
        results.iter().filter_map(|r| r.writable).collect(),
    );
    summary(
        "DNS after detection",
        results
            .iter()
            .map(|r| r.dns.saturating_sub(r.detection))
            .collect(),
    );
    summary(
        "writable after detection",
        results
            .iter()
            .filter_map(|r| r.writable.map(|w| w.saturating_sub(r.detection)))
            .collect(),
    );
    Ok(())
}
