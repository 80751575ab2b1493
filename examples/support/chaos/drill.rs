//! One drill: start the stack, run the workload, inject a fault, wait for
//! the failover (or the worst bound + slack), heal, converge, check.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use failover::decision::objectives::{
    database_cutover_synchronous, database_cutover_unconfirmed, leader_takeover, Bounds,
};
use failover::decision::{Event, EventKind, NodeId};

use super::check::{self, Overlap};
use super::stack::{
    BoxError, Footprint, Stack, StackConfig, CONTROLLER_INDEX, ETCD_ELECTION, LEADER_TTL, NODES,
    REGIONS,
};
use super::workload::{Commit, Workload};
use super::{Controllers, Fault, Mode, Rng};

/// The promotion itself (claim + `pg_promote` + epoch), as the planner's
/// database bounds count it (examples/live.rs uses the same budget).
pub const PROMOTE: Duration = Duration::from_millis(1500);
/// Added to the planner's worst bound before a drill stops waiting for the
/// failover.
pub const SLACK: Duration = Duration::from_secs(5);
/// After detection + TTL + this, no DNS answer may name the drained region.
pub const DNS_SLACK: Duration = Duration::from_secs(1);
/// Client rows the new writer must acknowledge before the heal, and the
/// final writer after it (the workload goes on meanwhile, so a resumed or
/// rejoined old writer has time to misbehave where the checker sees it).
const ACKS_AFTER: usize = 10;

/// What a drill runs.
#[derive(Clone, Debug)]
pub struct DrillSpec {
    /// Its seed: the fault (unless given) and the timings.
    pub seed: u64,
    /// The fault, or `None` to draw one from the seed.
    pub fault: Option<Fault>,
    /// The stack.
    pub stack: StackConfig,
}

/// The planner's bounds for a drill's policy.
#[derive(Clone, Copy, Debug)]
pub struct DrillBounds {
    /// Best detection (`(fall − 1) × interval`).
    pub best_detection: Duration,
    /// Worst detection (`fall × interval + timeout`).
    pub worst_detection: Duration,
    /// Worst time until the new writer takes writes: detection + promotion
    /// (sync), or detection + guard TTL + promotion (async).
    pub worst_writable: Duration,
    /// With a controller per region: the worst time until a successor
    /// leads when the fault takes the leader, and the etcd leader, with it
    /// (`objectives::leader_takeover`); zero with one controller.
    pub takeover: Duration,
    /// [`worst_writable`](Self::worst_writable) when the fault takes the
    /// leader: the promotion starts after `max(detection, takeover)`.
    pub worst_writable_takeover: Duration,
}

/// What a drill measured and what the checker found.
#[derive(Clone, Debug)]
pub struct DrillReport {
    /// The seed that replays it.
    pub seed: u64,
    /// The fault injected.
    pub fault: Fault,
    /// Replication mode.
    pub mode: Mode,
    /// One controller, or one per region.
    pub controllers: Controllers,
    /// The controller's writer before and after (`None`: none known at the end).
    pub writers: (usize, Option<usize>),
    /// Fault → first `RegionDown` / `DatabaseDown` of the writer.
    pub detection: Option<Duration>,
    /// Fault → first commit acknowledged by a new writer (sent after the fault).
    pub writable: Option<Duration>,
    /// Longest stretch after the fault with no commit acknowledged anywhere.
    pub write_gap: Duration,
    /// The planner's bounds.
    pub bounds: DrillBounds,
    /// The bound `writable` is held to: with a controller per region and a
    /// fault that takes the leader, the one with the takeover.
    pub writable_bound: Duration,
    /// Acknowledged client rows.
    pub acked: usize,
    /// Acknowledged client rows missing on the final writer.
    pub lost: usize,
    /// The lost rows' acknowledgements, from the fault: (earliest, latest),
    /// each negative when before the fault, in milliseconds.
    pub loss_window: Option<(i128, i128)>,
    /// WAL bytes the promoted replica was behind the last known primary
    /// position, as the controller's RPO gate saw it (`PromotionRequested`).
    pub promoted_lag: Option<u64>,
    /// Intervals in which two nodes committed.
    pub overlaps: Vec<Overlap>,
    /// DNS answers naming the drained region after detection + TTL + slack.
    pub stale_dns: usize,
    /// Violations, each a sentence; empty when the drill passed.
    pub failures: Vec<String>,
    /// The controller's decisions, relative to the fault.
    pub events: Vec<String>,
    /// Stack start-up time.
    pub setup: Duration,
    /// The whole drill, start-up and tear-down included.
    pub took: Duration,
    /// What the stack left to check after its drop.
    pub footprint: Footprint,
}

impl DrillReport {
    /// Whether the checker found nothing.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// The safety findings: two writers (S1), acknowledged writes lost in
    /// synchronous mode (S2), stale DNS answers — not liveness ones.
    pub fn safety_failures(&self) -> Vec<&String> {
        self.failures
            .iter()
            .filter(|f| !f.starts_with("liveness:"))
            .collect()
    }

    /// Prints the drill's line and, when it failed, its findings and the
    /// controller's decisions.
    pub fn print(&self) {
        println!("{}", self.line());
        if !self.passed() {
            for f in &self.failures {
                println!("    {f}");
            }
            for e in &self.events {
                println!("      {e}");
            }
        }
    }

    /// One line for the drill.
    pub fn line(&self) -> String {
        let ms = |d: Option<Duration>| d.map_or("-".to_owned(), |d| format!("{}ms", d.as_millis()));
        format!(
            "seed {:<6} {:<5} {} {:<27} {} writer {}→{}  detect {:>7} (≤{}ms)  writable {:>7} (≤{}ms)  gap {}ms  acked {} lost {}  overlaps {}  stale-dns {}  [{:.1}s]",
            self.seed,
            self.mode,
            self.controllers,
            self.fault.name(),
            if self.passed() { "ok  " } else { "FAIL" },
            NODES[self.writers.0],
            self.writers.1.map_or("?", |w| NODES[w]),
            ms(self.detection),
            self.bounds.worst_detection.as_millis(),
            ms(self.writable),
            self.writable_bound.as_millis(),
            self.write_gap.as_millis(),
            self.acked,
            self.lost,
            self.overlaps.len(),
            self.stale_dns,
            self.took.as_secs_f64(),
        )
    }
}

/// The bounds for `config`'s policy.
pub fn bounds(config: &StackConfig) -> DrillBounds {
    let policy = super::stack::policy(config);
    let b = Bounds::for_policy(&policy, Duration::ZERO);
    let writable = |detection| match config.mode {
        Mode::Sync => database_cutover_synchronous(detection, PROMOTE),
        Mode::Async => database_cutover_unconfirmed(detection, config.guard_ttl, PROMOTE),
    };
    let takeover = match config.controllers {
        Controllers::One => Duration::ZERO,
        Controllers::PerRegion => leader_takeover(LEADER_TTL, ETCD_ELECTION),
    };
    DrillBounds {
        best_detection: b.best_detection,
        worst_detection: b.worst_detection,
        worst_writable: writable(b.worst_detection),
        takeover,
        worst_writable_takeover: writable(b.worst_detection.max(takeover)),
    }
}

/// Runs one drill. An `Err` is a harness failure (a server did not start,
/// a bounded wait for the stack ran out), not a checker finding.
pub async fn run(spec: &DrillSpec) -> Result<DrillReport, BoxError> {
    let started = Instant::now();
    let mut rng = Rng::new(spec.seed);
    let faults = spec.stack.controllers.faults();
    let drawn = faults[rng.below(faults.len() as u64) as usize];
    let fault = spec.fault.unwrap_or(drawn);
    let warmup = rng.millis(1000, 3000);
    // Longer than the guards' deadline (ttl − margin): they fence their nodes.
    let controller_down = rng.millis(2000, 4000);
    let bounds = bounds(&spec.stack);

    let mut stack = Stack::start(spec.stack.clone()).await?;
    let setup = started.elapsed();
    let footprint = stack.footprint();
    let topology = stack.config.topology().clone();
    let ttl = stack.config.policy().ttl;
    let log = EventLog::default();
    for i in spec.stack.controller_regions() {
        log.follow(&stack, i);
    }
    let initial = writer(&stack).ok_or("no writer after start")?;

    let workload = Workload::start(&stack)?;
    workload
        .wait_client_acks(initial, started, ACKS_AFTER, Duration::from_secs(30))
        .await?;
    // The workload runs a drawn while before the fault (the drill's
    // randomized phase, not a wait for an event).
    tokio::time::sleep(warmup).await;

    // The region a cut separates from the writer's: the single
    // controller's, or the leader's (another region when the leader is in
    // the writer's).
    let cut_from = match spec.stack.controllers {
        Controllers::One => CONTROLLER_INDEX,
        Controllers::PerRegion => stack
            .leader()
            .filter(|l| *l != initial)
            .unwrap_or((initial + 1) % REGIONS.len()),
    };
    // The controller a restart crashes: the single one, or the leader.
    let restarted = stack.leader().unwrap_or(CONTROLLER_INDEX);
    // Whether the fault takes the leading controller (and, in these drills,
    // the etcd leader: the members and controllers share regions), so the
    // failover waits for a successor.
    let leader_lost = spec.stack.controllers == Controllers::PerRegion
        && match fault {
            Fault::IsolateWriterRegion => stack.leader() == Some(initial),
            Fault::RestartController | Fault::EtcdMinorityKillWriter => true,
            _ => false,
        };
    let (writable_bound, takeover) = if leader_lost {
        (bounds.worst_writable_takeover, bounds.takeover)
    } else {
        (bounds.worst_writable, Duration::ZERO)
    };
    // The etcd member a minority fault stops: the etcd leader.
    let etcd_stopped = stack.etcd.as_mut().and_then(|e| e.leader()).unwrap_or(0);

    let fault_at = Instant::now();
    let writer_region = REGIONS[initial];
    match fault {
        Fault::KillWriterDb => {
            // The guard shares its node's fate (its deployment requirement):
            // the machine is gone, not only the postmaster.
            stack.stop_guard(initial);
            tokio::task::block_in_place(|| stack.cluster.kill(initial))?;
        }
        Fault::PauseWriterDb => tokio::task::block_in_place(|| stack.cluster.pause(initial))?,
        Fault::CrashWriterDb => tokio::task::block_in_place(|| stack.cluster.kill(initial))?,
        Fault::IsolateWriterRegion => {
            tokio::task::block_in_place(|| stack.net.isolate(writer_region))?
        }
        Fault::CutControllerFromWriter => {
            tokio::task::block_in_place(|| stack.net.cut(REGIONS[cut_from], writer_region))?
        }
        Fault::RestartController => stack.crash_controller(restarted),
        Fault::EtcdMinorityKillWriter => {
            let etcd = stack.etcd.as_mut().ok_or("etcd-minority needs etcd")?;
            tokio::task::block_in_place(|| etcd.stop_member(etcd_stopped));
            stack.stop_guard(initial);
            tokio::task::block_in_place(|| stack.cluster.kill(initial))?;
        }
    }

    // Wait for the failover, or the worst bound + slack.
    if fault == Fault::RestartController {
        tokio::time::sleep(controller_down).await;
        stack.start_controller(restarted)?;
        log.follow(&stack, restarted);
    } else {
        let limit = fault_at + writable_bound + SLACK;
        wait_writer(&stack, |w| w.is_some_and(|w| w != initial), limit).await;
        if let Some(new) = writer(&stack).filter(|w| *w != initial) {
            tokio::task::block_in_place(|| stack.follow_writer(new, initial));
            // Bounded: a new writer that never takes the clients' writes is
            // reported by the checker (writable: none), not waited for.
            let _ = workload
                .wait_client_acks(new, fault_at, ACKS_AFTER, Duration::from_secs(15))
                .await;
        }
    }

    // Heal.
    let heal_at = Instant::now();
    match fault {
        Fault::KillWriterDb | Fault::CrashWriterDb | Fault::RestartController => {}
        Fault::EtcdMinorityKillWriter => {
            if let Some(etcd) = stack.etcd.as_mut() {
                tokio::task::block_in_place(|| etcd.start_member(etcd_stopped))?;
            }
        }
        Fault::PauseWriterDb => {
            // Its guard kills a server it cannot fence by its lease
            // deadline: then nothing is left to resume.
            if stack.cluster.is_running(initial) {
                tokio::task::block_in_place(|| stack.cluster.resume(initial))?
            }
        }
        Fault::IsolateWriterRegion => {
            tokio::task::block_in_place(|| stack.net.rejoin(writer_region))?
        }
        Fault::CutControllerFromWriter => {
            tokio::task::block_in_place(|| stack.net.heal(REGIONS[cut_from], writer_region))?
        }
    }

    // Converge: the final writer takes the clients' writes after the heal.
    let converge = Duration::from_secs(15);
    let deadline = Instant::now() + converge;
    let final_writer = loop {
        let w = writer(&stack);
        if let Some(w) = w {
            if workload
                .wait_client_acks(w, heal_at, ACKS_AFTER, Duration::from_millis(500))
                .await
                .is_ok()
                && writer(&stack) == Some(w)
            {
                break Some(w);
            }
        }
        if Instant::now() > deadline {
            break None;
        }
    };
    let records = workload.finish().await;
    let commits = records.commits();
    let answers = records.answers();
    let events = log.events();

    // Check.
    let mut failures = Vec::new();
    if final_writer.is_none() {
        let per_node: Vec<String> = (0..NODES.len())
            .map(|n| {
                let rows = commits.iter().filter(|c| c.node == n && c.sent >= heal_at);
                let (clients, markers) = rows.fold((0, 0), |(r, m), c| {
                    if c.id.is_some() {
                        (r + 1, m)
                    } else {
                        (r, m + 1)
                    }
                });
                format!("{}: {clients} rows, {markers} markers", NODES[n])
            })
            .collect();
        failures.push(format!(
            "liveness: no writer took the clients' writes within {converge:?} of the heal (controller's writer {:?}; after the heal {})",
            writer(&stack).map(|w| NODES[w]),
            per_node.join(", ")
        ));
    }
    // The loss is counted on the controller's writer even when it takes no
    // writes (a liveness failure): its rows are what a client reads.
    let end_writer = final_writer.or_else(|| writer(&stack));
    // A final writer that cannot be read (its server killed by its guard
    // and not back, say) is a liveness finding, not a harness error.
    let present = match end_writer {
        Some(w) => match rows_on(&stack, w).await {
            Ok(rows) => Some(rows),
            Err(e) => {
                failures.push(format!(
                    "liveness: the final writer {} cannot be read: {e}",
                    NODES[w]
                ));
                None
            }
        },
        None => None,
    };
    let acked_rows = commits.iter().filter(|c| c.id.is_some()).count();
    let lost = match &present {
        Some(present) => check::lost(&commits, present),
        None => Vec::new(),
    };
    if spec.stack.mode == Mode::Sync && !lost.is_empty() {
        failures.push(format!(
            "S2: {} acknowledged rows missing on the final writer {} (synchronous mode: must be 0), e.g. {:?}",
            lost.len(),
            end_writer.map_or("?", |w| NODES[w]),
            lost.iter().take(5).map(|(id, _)| id).collect::<Vec<_>>()
        ));
    }
    let overlaps = check::overlaps(&commits, NODES.len());
    for o in &overlaps {
        failures.push(format!(
            "S1: {} acknowledged {} commits sent after {}'s first commit, from t+{}ms to t+{}ms: two writers",
            NODES[o.old],
            o.commits,
            NODES[o.new],
            o.from.saturating_duration_since(fault_at).as_millis(),
            o.to.saturating_duration_since(fault_at).as_millis(),
        ));
    }
    let region_down = first_event(
        &events,
        fault_at,
        |k| matches!(k, EventKind::RegionDown { region, .. } if region.index() == initial),
    );
    // With a DNS per region, the writer's region cut off whole keeps its
    // own DNS, which cannot hear the store and answers with the last plan
    // (its own region): its clients can reach nothing else anyway. Those
    // answers are not counted; every other region's are.
    let cut_off = match (fault, spec.stack.controllers) {
        (Fault::IsolateWriterRegion, Controllers::PerRegion) => Some(initial),
        _ => None,
    };
    let stale = match region_down {
        Some(at) => {
            let drained: Vec<IpAddr> = vec![IpAddr::V4(stack.region_addr(initial)?)];
            let heard: Vec<_> = answers
                .iter()
                .filter(|a| Some(a.region) != cut_off)
                .cloned()
                .collect();
            // No plan changes before someone leads.
            let decided = at.max(fault_at + takeover);
            check::stale_answers(&heard, &drained, decided + ttl + DNS_SLACK, heal_at)
        }
        None => Vec::new(),
    };
    if let Some(a) = stale.first() {
        failures.push(format!(
            "DNS: {} answers named drained {} after detection + TTL + {DNS_SLACK:?}, the first at t+{}ms from {}",
            stale.len(),
            REGIONS[initial],
            a.at.saturating_duration_since(fault_at).as_millis(),
            REGIONS[a.region],
        ));
    }
    let database_down = first_event(
        &events,
        fault_at,
        |k| matches!(k, EventKind::DatabaseDown { node, .. } if node.index() == initial),
    );
    let detection = [region_down, database_down]
        .into_iter()
        .flatten()
        .min()
        .map(|at| at.saturating_duration_since(fault_at));
    let writable = end_writer
        .filter(|w| *w != initial)
        .and_then(|w| first_commit(&commits, w, fault_at))
        .map(|at| at.saturating_duration_since(fault_at));
    let from_fault = |at: Instant| -> i128 {
        if at >= fault_at {
            at.duration_since(fault_at).as_millis() as i128
        } else {
            -(fault_at.duration_since(at).as_millis() as i128)
        }
    };
    let loss_window = match (
        lost.iter().map(|(_, at)| *at).min(),
        lost.iter().map(|(_, at)| *at).max(),
    ) {
        (Some(a), Some(b)) => Some((from_fault(a), from_fault(b))),
        _ => None,
    };
    let promoted_lag = events
        .iter()
        .filter(|(_, e)| e.at >= fault_at)
        .find_map(|(_, e)| match e.kind {
            EventKind::PromotionRequested { lag_bytes, .. } => lag_bytes,
            _ => None,
        });
    let write_gap = check::longest_gap(&commits, fault_at, heal_at.max(fault_at));
    let event_lines = events
        .iter()
        .map(|(by, e)| {
            let t = e.at.saturating_duration_since(fault_at);
            let sign = if e.at < fault_at { "-" } else { "+" };
            let t = if e.at < fault_at {
                fault_at.saturating_duration_since(e.at)
            } else {
                t
            };
            format!(
                "t{sign}{:.3}s  {by:<5} {}",
                t.as_secs_f64(),
                e.display(&topology)
            )
        })
        .collect();

    tokio::task::block_in_place(|| drop(stack));
    Ok(DrillReport {
        seed: spec.seed,
        fault,
        mode: spec.stack.mode,
        controllers: spec.stack.controllers,
        writers: (initial, end_writer),
        detection,
        writable,
        write_gap,
        bounds,
        writable_bound,
        acked: acked_rows,
        lost: lost.len(),
        loss_window,
        promoted_lag,
        overlaps,
        stale_dns: stale.len(),
        failures,
        events: event_lines,
        setup,
        took: started.elapsed(),
        footprint,
    })
}

/// The acting controller's writer now (`None` while no controller acts).
fn writer(stack: &Stack) -> Option<usize> {
    stack
        .handle()
        .and_then(|h| h.status().controller.writer)
        .map(NodeId::index)
}

/// Waits until `check` holds for the acting controller's writer, or
/// `deadline`. Polled every 20 ms: which controller acts can change.
async fn wait_writer(stack: &Stack, check: impl Fn(Option<usize>) -> bool, deadline: Instant) {
    while !check(writer(stack)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The first event after `since` whose kind matches.
fn first_event(
    events: &[(&str, Event)],
    since: Instant,
    pick: impl Fn(&EventKind) -> bool,
) -> Option<Instant> {
    events
        .iter()
        .filter(|(_, e)| e.at >= since && pick(&e.kind))
        .map(|(_, e)| e.at)
        .min()
}

/// When `node` first acknowledged a commit sent after `since`.
fn first_commit(commits: &[Commit], node: usize, since: Instant) -> Option<Instant> {
    commits
        .iter()
        .filter(|c| c.node == node && c.sent >= since)
        .map(|c| c.acked)
        .min()
}

/// The ids in node `w`'s `rows` (as the superuser over its unix socket,
/// which a fence does not refuse).
async fn rows_on(stack: &Stack, w: usize) -> Result<HashSet<i64>, BoxError> {
    let dsn = stack.local_dsn(w, false);
    let read = async {
        let client = failover_testkit::postgres::writer::connect(&dsn).await?;
        let rows = client.query("SELECT id FROM rows", &[]).await?;
        Ok::<_, BoxError>(rows.iter().map(|r| r.get::<_, i64>(0)).collect())
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .map_err(|_| format!("reading rows on {} took over 30 s", NODES[w]))?
}

/// The controllers' events, each with its controller's region, across
/// restarts.
#[derive(Clone, Default)]
struct EventLog(Arc<Mutex<Vec<(&'static str, Event)>>>);

impl EventLog {
    /// Records every event of region `i`'s controller from now on.
    fn follow(&self, stack: &Stack, i: usize) {
        let Some(handle) = stack.handle_of(i) else {
            return;
        };
        let log = Arc::clone(&self.0);
        let by = REGIONS[i];
        let mut rx = handle.subscribe_events();
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(e) => log
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push((by, e)),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => return,
                }
            }
        });
    }

    fn events(&self) -> Vec<(&'static str, Event)> {
        let mut events = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        events.sort_by_key(|(_, e)| e.at);
        events
    }
}
