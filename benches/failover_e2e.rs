//! End-to-end failover time on loopback, with real sockets, real PostgreSQL
//! and a real etcd cluster. Every time is measured **from the fault
//! injection** (the instant just before the fault is done), and "writable"
//! means a commit by the application role on pg-west after the runtime
//! reported the promotion done (issue 16's rules).
//!
//! ```sh
//! cargo bench --bench failover_e2e --features full                       # every mode, 5 runs each
//! FAILOVER_E2E_MODE=lease FAILOVER_E2E_RUNS=10 cargo bench --bench failover_e2e --features full
//! FAILOVER_E2E_INTERVAL_MS=1000 cargo bench --bench failover_e2e --features full   # probe interval
//! ```
//!
//! Modes (`FAILOVER_E2E_MODE`, default `all`):
//!
//! - `dns`: traffic only. us-east's API stops; fault → us-east down, fault →
//!   the embedded DNS answers us-west, beside the planner's [best, worst]
//!   detection.
//! - `fence`: us-east's API stops while pg-east (and its guard) stay up and
//!   reachable: the controller fences pg-east, the node confirms it, and
//!   pg-west is promoted. Goal: writable ≤ detection + 100 ms.
//! - `lease`: us-east dies whole: API stopped, pg-east's postmaster and
//!   children SIGKILLed, its guard dropped. No fence can be confirmed; the
//!   proof is the guard lease (TTL 2 s) expiring at the controller's lease
//!   server (single-controller runtime with `guard_leases`). Goal: writable ≤
//!   detection + guard TTL + 500 ms.
//! - `sync`: as `lease`, with synchronous replication (`policy.synchronous =
//!   "on"`: pg-east requires pg-west for every commit, and the writer record
//!   says so) and sub-second detection (interval 200 ms, timeout 100 ms,
//!   fall 2; `FAILOVER_E2E_SYNC_INTERVAL_MS` changes the interval). The
//!   proof is the synchronous standby, so no guard lease is waited for. A
//!   writer commits rows on pg-east as the application role until the kill;
//!   every row it saw acknowledged must be on pg-west. Goal: fault →
//!   writable, median ≤ 1.0 s, 0 acknowledged rows lost.
//! - `soak`: the `sync` settings with every region healthy for
//!   `FAILOVER_SOAK_SECS` (default 1800) and a writer committing on pg-east
//!   throughout. Counts probe failures (the measured false-failure rate p),
//!   regions marked down, databases marked down and promotions — every one a
//!   false failover — and prints the planner's expected count for that p
//!   beside them. Not part of `all`.
//! - `takeover`: three in-process controllers on a 3-member etcd cluster
//!   (leader lease TTL 2 s, margin 500 ms), without database nodes. The
//!   leader's `Runtime` is dropped without `shutdown` (no resign; its etcd
//!   session stops); fault → another controller's status names a leader.
//!
//! Each run starts fresh servers (one etcd cluster is shared by the takeover
//! runs, each run under its own service name), waits for steady state, and
//! injects the fault at a different phase of the probe interval. DNS is
//! polled every 5 ms, pg-west every ~5 ms once the promotion is reported.
//! Nothing here asserts a speed: the results are printed.

#[path = "../examples/support/regions.rs"]
mod regions;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use failover::decision::{
    Config, Event, EventKind, Health, NodeId, Policy, Region, RegionRole, StopProof, SyncSet,
    Synchronous, Topology, VantageId,
};
use failover::dns::{EmbeddedConfig, EmbeddedDns, Selection};
use failover::etcd::{EtcdConfig, EtcdCoordinator};
use failover::{Runtime, RuntimeBuilder, RuntimeHandle};
use failover_testkit::etcd::EtcdCluster;
use failover_testkit::http::RegionalApi;
use failover_testkit::postgres::writer;
use regions::{BoxError, LiveRegions, EAST, EAST_IP, GUARD_TTL, SERVICE, WEST, WEST_IP};
use tokio::sync::broadcast::{self, error::TryRecvError};

/// Leader lease TTL and margin of the takeover mode (as in the tests).
const LEASE_TTL: Duration = Duration::from_secs(2);
const LEASE_MARGIN: Duration = Duration::from_millis(500);
/// The controllers' vantages in the takeover mode.
const VANTAGES: [&str; 3] = ["east", "west", "central"];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Dns,
    Fence,
    Lease,
    Sync,
    Soak,
    Takeover,
}

fn policy(interval: Duration) -> Policy {
    Policy {
        interval,
        timeout: interval / 2,
        jitter: Duration::ZERO,
        fall: 3,
        rise: 2,
        ttl: Duration::from_secs(1),
        ..Policy::default()
    }
}

/// min / median / max of `values`, one line.
fn summary(name: &str, mut values: Vec<Duration>) {
    if values.is_empty() {
        println!("{name:<48} (no value)");
        return;
    }
    values.sort();
    let median = values[values.len() / 2];
    println!(
        "{name:<48} min {:>6.3} s   median {:>6.3} s   max {:>6.3} s   (n = {})",
        values[0].as_secs_f64(),
        median.as_secs_f64(),
        values[values.len() - 1].as_secs_f64(),
        values.len()
    );
}

/// The next event, if one is queued; a lagging receiver skips what it lost.
fn next_event(events: &mut broadcast::Receiver<Event>) -> Option<Event> {
    loop {
        match events.try_recv() {
            Ok(event) => return Some(event),
            Err(TryRecvError::Lagged(n)) => println!("  (event receiver lagged by {n})"),
            Err(TryRecvError::Empty | TryRecvError::Closed) => return None,
        }
    }
}

/// Waits (at most 30 s) until us-east is up and, with a database, pg-east is
/// the known writer.
async fn steady(handle: &RuntimeHandle, with_database: bool, sync: bool) -> Result<(), BoxError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = handle.status();
        if status.controller.regions[EAST.index()].health == Health::Up
            && (!with_database || status.controller.writer == Some(NodeId(0)))
            && (!sync || status.controller.synchronous == SyncSet::of(NodeId(1)))
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(
                "no steady state (us-east up, pg-east the writer, pg-west its synchronous standby in sync mode) within 30 s"
                    .into(),
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ------------------------------------------------------------------------
// dns / fence / lease: the two live regions of examples/support/regions.rs.

/// One run of a regions mode; every time is from the fault.
struct RegionRun {
    /// First failed probe of us-east, from the fault.
    first_miss: Duration,
    /// us-east marked down.
    down: Duration,
    /// The embedded DNS answers us-west only.
    dns: Duration,
    /// The proof that pg-east stopped, and when.
    proof: Option<(Duration, StopProof)>,
    /// The runtime reported pg-west promoted.
    promoted: Option<Duration>,
    /// First application-role commit on pg-west after that.
    writable: Option<Duration>,
    /// Sync mode: rows the writer saw acknowledged on pg-east, and how many
    /// of them pg-west lacks.
    acked: Option<(usize, usize)>,
}

async fn region_run(mode: Mode, policy: &Policy, phase: Duration) -> Result<RegionRun, BoxError> {
    let with_database = mode != Mode::Dns;
    let live = LiveRegions::start(policy.clone(), with_database).await?;
    let result = region_measure(&live, mode, with_database, phase).await;
    live.runtime.shutdown().await;
    live.dns.shutdown().await;
    // `live.cluster` and the guards stop when `live` drops here.
    result
}

async fn region_measure(
    live: &LiveRegions,
    mode: Mode,
    with_database: bool,
    phase: Duration,
) -> Result<RegionRun, BoxError> {
    let handle = live.runtime.handle();
    steady(&handle, with_database, mode == Mode::Sync).await?;
    let nodes = live.cluster.as_ref().map(|c| c.nodes().to_vec());
    let writer = match (&nodes, mode) {
        (Some(nodes), Mode::Sync) => {
            writer::create_rows_table(&nodes[0].app_dsn()).await?;
            let w = writer::RowWriter::start(nodes[0].app_dsn());
            w.wait_acked(100, Duration::from_secs(30)).await?;
            Some(w)
        }
        _ => None,
    };
    tokio::time::sleep(phase).await;
    let mut events = handle.subscribe_events();
    let fault = match mode {
        Mode::Lease | Mode::Sync => live.kill_east().await?,
        _ => live.stop_east_api().await,
    };
    let (mut first_miss, mut down, mut dns) = (None, None, None);
    let (mut proof, mut promoted, mut writable) = (None, None, None);
    let deadline = fault + Duration::from_secs(60);
    loop {
        while let Some(event) = next_event(&mut events) {
            match event.kind {
                EventKind::ProbeFailed { region, .. } if region == EAST => {
                    first_miss.get_or_insert(event.at);
                }
                EventKind::RegionDown { region, .. } if region == EAST => {
                    down.get_or_insert(event.at);
                }
                EventKind::StopProven {
                    node: NodeId(0),
                    proof: p,
                } => {
                    proof.get_or_insert((event.at, p));
                }
                EventKind::Promoted {
                    node: NodeId(1), ..
                } => {
                    promoted.get_or_insert(event.at);
                }
                // A retried step explains a slow run: show it.
                EventKind::ActionFailed { .. } | EventKind::StepTimedOut { .. } => println!(
                    "  t+{:.3} s: {}",
                    event.at.saturating_duration_since(fault).as_secs_f64(),
                    event.display(live.config.topology())
                ),
                _ => {}
            }
        }
        if dns.is_none() && live.resolve().await.unwrap_or_default() == [WEST_IP] {
            dns = Some(Instant::now());
        }
        // Writable counts only after the runtime reported the promotion.
        if promoted.is_some() && writable.is_none() && live.west_writable().await {
            writable = Some(Instant::now());
        }
        if down.is_some() && dns.is_some() && (!with_database || writable.is_some()) {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "not done 60 s after the fault: down {down:?}, DNS {dns:?}, proof {proof:?}, \
                 promoted {promoted:?}, writable {writable:?}; recent events: {:?}",
                handle.status().recent_events
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let acked = match (writer, &nodes) {
        (Some(w), Some(nodes)) => {
            let (acked, _) = w.finish().await;
            let lost = writer::missing_rows(&nodes[1].app_dsn(), &acked).await?;
            Some((acked.len(), lost.len()))
        }
        _ => None,
    };
    let since = |t: Instant| t.saturating_duration_since(fault);
    Ok(RegionRun {
        acked,
        first_miss: since(first_miss.ok_or("no failed probe of us-east was seen")?),
        down: since(down.ok_or("us-east was never marked down")?),
        dns: since(dns.ok_or("DNS never switched")?),
        proof: proof.map(|(at, p)| (since(at), p)),
        promoted: promoted.map(since),
        writable: writable.map(since),
    })
}

async fn region_mode(mode: Mode, runs: usize, policy: &Policy) -> Result<(), BoxError> {
    let interval_ms = policy.interval.as_millis() as u64;
    let mut results = Vec::new();
    for i in 0..runs {
        // Spread the fault over the probe interval.
        let phase = Duration::from_millis((i as u64 * interval_ms / runs as u64) % interval_ms);
        let run = region_run(mode, policy, phase).await?;
        let opt =
            |d: Option<Duration>| d.map_or("-".to_owned(), |d| format!("{:.3}", d.as_secs_f64()));
        println!(
            "run {:>2} (phase {:>3} ms): first miss {:.3}, down {:.3}, DNS {:.3}, proof {}, promoted {}, writable {} s",
            i + 1,
            phase.as_millis(),
            run.first_miss.as_secs_f64(),
            run.down.as_secs_f64(),
            run.dns.as_secs_f64(),
            run.proof
                .map_or("-".to_owned(), |(at, p)| format!("{p:?} at {:.3}", at.as_secs_f64())),
            opt(run.promoted),
            opt(run.writable),
        );
        if let Some((acked, lost)) = run.acked {
            println!(
                "        {acked} rows acknowledged on pg-east, {lost} of them missing on pg-west"
            );
        }
        results.push(run);
    }
    println!();
    let all = |f: &dyn Fn(&RegionRun) -> Option<Duration>| -> Vec<Duration> {
        results.iter().filter_map(f).collect()
    };
    summary("fault → us-east down (detection)", all(&|r| Some(r.down)));
    if mode == Mode::Dns {
        summary("fault → DNS answers us-west", all(&|r| Some(r.dns)));
        summary(
            "DNS after detection (goal ≤ 100 ms)",
            all(&|r| Some(r.dns.saturating_sub(r.down))),
        );
        // The planner's bounds for detection, and the grid's true floor: a
        // probe in flight at the fault fails too, so the streak can start
        // up to `timeout` (and jitter) before the planner's best assumes.
        let bounds = failover::decision::objectives::Bounds::for_policy(policy, Duration::ZERO);
        let floor = bounds
            .best_detection
            .saturating_sub(policy.jitter + policy.timeout);
        println!(
            "{:<48} best {:.3} s   worst {:.3} s   (grid floor {:.3} s)",
            "planner: detection",
            bounds.best_detection.as_secs_f64(),
            bounds.worst_detection.as_secs_f64(),
            floor.as_secs_f64()
        );
        return Ok(());
    }
    let proofs: Vec<String> = results
        .iter()
        .map(|r| r.proof.map_or("none".to_owned(), |(_, p)| format!("{p:?}")))
        .collect();
    println!(
        "{:<48} {}",
        "proof that pg-east stopped, per run",
        proofs.join(", ")
    );
    summary("fault → stop proven", all(&|r| r.proof.map(|(at, _)| at)));
    summary(
        "fault → promotion reported (Promoted)",
        all(&|r| r.promoted),
    );
    summary(
        "fault → first app-role commit on pg-west",
        all(&|r| r.writable),
    );
    summary("fault → DNS answers us-west", all(&|r| Some(r.dns)));
    if mode == Mode::Sync {
        let lost: usize = results.iter().filter_map(|r| r.acked.map(|a| a.1)).sum();
        let acked: usize = results.iter().filter_map(|r| r.acked.map(|a| a.0)).sum();
        println!(
            "{:<48} {lost} of {acked} (goal 0)",
            "acknowledged rows lost, all runs"
        );
        summary(
            "fault → writable (goal: median ≤ 1.0 s)",
            all(&|r| r.writable),
        );
    }
    let goal = match mode {
        Mode::Fence => "≤ 100 ms".to_owned(),
        Mode::Sync => "no guard TTL: the standby is the proof".to_owned(),
        _ => format!("≤ TTL {:.1} s + 0.5 s", GUARD_TTL.as_secs_f64()),
    };
    summary(
        &format!("writable after detection (goal {goal})"),
        all(&|r| r.writable.map(|w| w.saturating_sub(r.down))),
    );
    // Where the time after detection goes.
    summary(
        "  detection → stop proven",
        all(&|r| r.proof.map(|(at, _)| at.saturating_sub(r.down))),
    );
    summary(
        "  stop proven → promotion reported",
        all(&|r| Some(r.promoted?.saturating_sub(r.proof?.0))),
    );
    summary(
        "  promotion reported → app-role commit",
        all(&|r| Some(r.writable?.saturating_sub(r.promoted?))),
    );
    Ok(())
}

/// Issue 17's settings: synchronous replication, `interval` probes with half
/// of it as timeout, fall 2.
fn sync_policy(base: &Policy, interval: Duration) -> Policy {
    let mut sync = base.clone();
    sync.interval = interval;
    sync.timeout = interval / 2;
    sync.fall = 2;
    sync.synchronous = Synchronous::On;
    sync
}

/// Every region healthy for `duration`, a writer on pg-east: counts what
/// would be a false failover, and what the planner predicts for the
/// measured probe-failure rate.
async fn soak(policy: Policy, duration: Duration) -> Result<(), BoxError> {
    println!(
        "== soak: all regions healthy for {} s, synchronous replication, interval {} ms, \
         timeout {} ms, fall {}; a writer commits on pg-east throughout ==",
        duration.as_secs(),
        policy.interval.as_millis(),
        policy.timeout.as_millis(),
        policy.fall
    );
    let live = LiveRegions::start(policy.clone(), true).await?;
    let handle = live.runtime.handle();
    steady(&handle, true, true).await?;
    let nodes = live.cluster.as_ref().ok_or("no cluster")?.nodes().to_vec();
    writer::create_rows_table(&nodes[0].app_dsn()).await?;
    let w = writer::RowWriter::start(nodes[0].app_dsn());
    let mut events = handle.subscribe_events();
    let started = Instant::now();
    let (mut probe_failures, mut regions_down, mut databases_down) = (0u64, 0u64, 0u64);
    let (mut promotions, mut sync_changes, mut vetoed) = (0u64, 0u64, 0u64);
    while started.elapsed() < duration {
        while let Some(event) = next_event(&mut events) {
            let line = || {
                println!(
                    "  t+{:.1} s: {}",
                    started.elapsed().as_secs_f64(),
                    event.display(live.config.topology())
                )
            };
            match event.kind {
                EventKind::ProbeFailed { .. } => probe_failures += 1,
                EventKind::RegionDown { .. } => {
                    regions_down += 1;
                    line();
                }
                EventKind::DatabaseDown { .. } => {
                    databases_down += 1;
                    line();
                }
                EventKind::DatabaseDownVetoed { .. } => {
                    vetoed += 1;
                    line();
                }
                EventKind::Promoted { .. } => {
                    promotions += 1;
                    line();
                }
                EventKind::SynchronousChanging { .. } => {
                    sync_changes += 1;
                    line();
                }
                _ => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (acked, error) = w.finish().await;
    let elapsed = started.elapsed();
    live.runtime.shutdown().await;
    live.dns.shutdown().await;
    // Two regions probed from one vantage.
    let probes = 2.0 * elapsed.as_secs_f64() / policy.interval.as_secs_f64();
    let p = probe_failures as f64 / probes;
    let per_year =
        failover::decision::objectives::false_failovers_per_year(p, policy.fall, policy.interval);
    let year = 365.0 * 24.0 * 3600.0;
    let predicted = 2.0 * per_year * elapsed.as_secs_f64() / year;
    println!();
    println!("{:<48} {:.0} s", "soak length", elapsed.as_secs_f64());
    println!(
        "{:<48} {probe_failures} of ~{probes:.0} (p = {p:.2e})",
        "probe failures (all regions healthy)"
    );
    println!(
        "{:<48} {regions_down} region(s) down, {databases_down} database(s) down, {promotions} promotion(s) (goal 0)",
        "false failovers"
    );
    println!(
        "{:<48} {vetoed} (the writer unreachable, a replica's stream vouching for it)",
        "database-down detections vetoed"
    );
    println!(
        "{:<48} {predicted:.2e} in this soak ({per_year:.2e} a year per region)",
        "planner's prediction for the measured p"
    );
    println!(
        "{:<48} {sync_changes}",
        "synchronous standby changes after steady state"
    );
    println!(
        "{:<48} {} (writer stopped by: {})",
        "commits acknowledged on pg-east",
        acked.len(),
        error.as_deref().unwrap_or("the end of the soak")
    );
    Ok(())
}

// ------------------------------------------------------------------------
// takeover: three controllers on a 3-member etcd cluster.

fn fleet_topology() -> Result<Topology, BoxError> {
    let mut east = Region::new("us-east", RegionRole::Active);
    east.records = vec![EAST_IP];
    let mut west = Region::new("us-west", RegionRole::Standby);
    west.capacity = 0.6;
    west.records = vec![WEST_IP];
    let mut builder = Topology::builder(SERVICE).region(east).region(west);
    for v in VANTAGES {
        builder = builder.vantage(v);
    }
    Ok(builder.build()?)
}

/// One controller: its runtime and its embedded DNS (which the stored plan
/// is served from).
struct Controller {
    runtime: Runtime,
    _dns: EmbeddedDns,
}

async fn start_controller(
    index: usize,
    service: &str,
    endpoints: &[String],
    policy: &Policy,
    apis: [&RegionalApi; 2],
) -> Result<Controller, BoxError> {
    let topology = fleet_topology()?;
    let name = VANTAGES[index];
    let mut etcd = EtcdConfig::new(
        endpoints.iter().cloned(),
        service,
        format!("ctl-{name}"),
        name,
    );
    etcd.lease_ttl = LEASE_TTL;
    etcd.lease_margin = LEASE_MARGIN;
    etcd.connect_timeout = Duration::from_millis(500);
    etcd.request_timeout = Duration::from_secs(1);
    let coordinator = EtcdCoordinator::connect(etcd, topology.clone(), policy).await?;
    let mut dns_config = EmbeddedConfig::new("failover.test.");
    dns_config.selection = Selection::AllServing;
    let dns = EmbeddedDns::bind(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        &topology,
        policy,
        dns_config,
    )
    .await?;
    let vantage = VantageId(index as u32);
    let runtime = RuntimeBuilder::new(Config::new(topology, policy.clone())?)
        .coordinator(Arc::new(coordinator))
        .serve(Arc::new(dns.router()))
        .probe(EAST, vantage, regions::probe(apis[0], policy)?)
        .probe(WEST, vantage, regions::probe(apis[1], policy)?)
        .start()
        .await?;
    Ok(Controller { runtime, _dns: dns })
}

/// The index of the one controller that leads, waiting at most `limit`.
async fn one_leader(controllers: &[Controller], limit: Duration) -> Result<usize, BoxError> {
    let deadline = Instant::now() + limit;
    loop {
        let leaders: Vec<usize> = (0..controllers.len())
            .filter(|&i| {
                controllers[i]
                    .runtime
                    .handle()
                    .status()
                    .controller
                    .leader
                    .is_some()
            })
            .collect();
        if let [one] = leaders[..] {
            return Ok(one);
        }
        if Instant::now() > deadline {
            return Err(format!("no single leader within {limit:?}: {leaders:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn takeover_run(
    run: usize,
    endpoints: &[String],
    policy: &Policy,
    apis: [&RegionalApi; 2],
    phase: Duration,
) -> Result<Duration, BoxError> {
    // A service name per run: no key of an earlier run is in the way.
    let service = format!("bench{run}");
    let mut controllers = Vec::new();
    for i in 0..VANTAGES.len() {
        controllers.push(start_controller(i, &service, endpoints, policy, apis).await?);
    }
    let leader = one_leader(&controllers, Duration::from_secs(20)).await?;
    // Let the leader settle (plan stored, keep-alives running).
    tokio::time::sleep(policy.interval * 2 + phase).await;
    let crashed = controllers.remove(leader);
    let crash = Instant::now();
    // No `shutdown`: the tasks stop, the etcd session with them, no resign.
    drop(crashed);
    let result = one_leader(&controllers, LEASE_TTL + Duration::from_secs(10))
        .await
        .map(|_| crash.elapsed());
    for c in controllers {
        c.runtime.shutdown().await;
    }
    result
}

async fn takeover_mode(runs: usize, policy: &Policy) -> Result<(), BoxError> {
    let etcd = tokio::task::spawn_blocking(|| EtcdCluster::start(3)).await??;
    let endpoints = etcd.endpoints();
    let east = RegionalApi::start_named("us-east", None)?;
    let west = RegionalApi::start_named("us-west", None)?;
    let mut results = Vec::new();
    for i in 0..runs {
        // Spread the crash over a second against the keep-alive schedule.
        let phase = Duration::from_millis((i as u64 * 1000 / runs as u64) % 1000);
        let took = takeover_run(i, &endpoints, policy, [&east, &west], phase).await?;
        println!(
            "run {:>2} (phase {:>3} ms): crash → successor leads {:.3} s",
            i + 1,
            phase.as_millis(),
            took.as_secs_f64()
        );
        results.push(took);
    }
    println!();
    summary(
        &format!(
            "crash → successor leads (lease TTL {:.0} s)",
            LEASE_TTL.as_secs_f64()
        ),
        results,
    );
    // `etcd` stops its members and removes its directory when dropped.
    drop(etcd);
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // `cargo bench` passes --bench; `cargo test --benches` does not: then
    // this is a compile check only.
    if !std::env::args().any(|a| a == "--bench") {
        return Ok(());
    }
    let env = |name: &str| std::env::var(name).ok();
    let runs: usize = env("FAILOVER_E2E_RUNS")
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(5);
    let interval = Duration::from_millis(
        env("FAILOVER_E2E_INTERVAL_MS")
            .and_then(|v| v.parse().ok())
            .filter(|&ms| ms >= 100)
            .unwrap_or(500),
    );
    let modes = match env("FAILOVER_E2E_MODE").as_deref().unwrap_or("all") {
        "all" => vec![
            Mode::Dns,
            Mode::Fence,
            Mode::Lease,
            Mode::Sync,
            Mode::Takeover,
        ],
        "dns" => vec![Mode::Dns],
        "fence" => vec![Mode::Fence],
        "lease" => vec![Mode::Lease],
        "sync" => vec![Mode::Sync],
        "soak" => vec![Mode::Soak],
        "takeover" => vec![Mode::Takeover],
        other => {
            return Err(format!(
                "FAILOVER_E2E_MODE={other}: expected dns, fence, lease, sync, soak, takeover or all"
            )
            .into())
        }
    };
    let sync_interval = Duration::from_millis(
        env("FAILOVER_E2E_SYNC_INTERVAL_MS")
            .and_then(|v| v.parse().ok())
            .filter(|&ms| ms >= 50)
            .unwrap_or(200),
    );
    let with_database = failover_testkit::postgres::find_bindir().is_ok();
    let policy = policy(interval);
    println!(
        "end-to-end failover from the fault: interval {} ms, timeout {} ms, fall {}, DNS TTL {} s, {runs} runs per mode",
        policy.interval.as_millis(),
        policy.timeout.as_millis(),
        policy.fall,
        policy.ttl.as_secs()
    );
    for mode in modes {
        println!();
        match mode {
            Mode::Dns => {
                println!("== dns: us-east's API stops (traffic only) ==");
                region_mode(mode, runs, &policy).await?;
            }
            Mode::Fence | Mode::Lease | Mode::Sync | Mode::Soak if !with_database => {
                println!(
                    "(no PostgreSQL found: the fence, lease, sync and soak modes are skipped)"
                );
            }
            Mode::Soak => {
                let secs = env("FAILOVER_SOAK_SECS")
                    .and_then(|v| v.parse().ok())
                    .filter(|&s: &u64| s > 0)
                    .unwrap_or(1800);
                soak(
                    sync_policy(&policy, sync_interval),
                    Duration::from_secs(secs),
                )
                .await?;
            }
            Mode::Sync => {
                let sync = sync_policy(&policy, sync_interval);
                println!(
                    "== sync: us-east dies whole (API stopped, pg-east SIGKILL, guard dropped); \
                     synchronous replication (pg-west required), interval {} ms, timeout {} ms, \
                     fall {}; single controller with guard_leases, guard TTL {} s ==",
                    sync.interval.as_millis(),
                    sync.timeout.as_millis(),
                    sync.fall,
                    GUARD_TTL.as_secs()
                );
                region_mode(mode, runs, &sync).await?;
            }
            Mode::Fence => {
                println!(
                    "== fence: us-east's API stops, pg-east stays up (fence confirmed); \
                     single controller, guard TTL {} s ==",
                    GUARD_TTL.as_secs()
                );
                region_mode(mode, runs, &policy).await?;
            }
            Mode::Lease => {
                println!(
                    "== lease: us-east dies whole (API stopped, pg-east SIGKILL, guard dropped); \
                     single controller with guard_leases, guard TTL {} s ==",
                    GUARD_TTL.as_secs()
                );
                region_mode(mode, runs, &policy).await?;
            }
            Mode::Takeover => {
                println!(
                    "== takeover: 3 controllers on a 3-member etcd, lease TTL {} s, margin {} ms; \
                     the leader's Runtime dropped without shutdown ==",
                    LEASE_TTL.as_secs(),
                    LEASE_MARGIN.as_millis()
                );
                takeover_mode(runs, &policy).await?;
            }
        }
    }
    Ok(())
}
