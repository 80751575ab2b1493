//! Chaos drills on real servers in network namespaces, the CI short set
//! (issue 11): one drill per fault kind in single-controller, synchronous
//! mode, each asserting no lost acknowledged write, no two writers, no
//! stale DNS answer, and that nothing of the drill is left behind; and the
//! proof that the checker can fail: with the promotion rule loosened
//! (feature `chaos-unsafe`), a controller cut off from a live writer
//! promotes a second one, and the checker reports the overlap — while the
//! same drill with the rule intact has one writer.
//!
//! The harness is `examples/support/chaos/` (shared with `examples/chaos.rs`).
//! Skips, printing why, without root (no namespaces) or without PostgreSQL.

#[path = "../examples/support/chaos/mod.rs"]
mod chaos;

use std::time::Duration;

use chaos::drill::{self, DrillReport, DrillSpec};
use chaos::stack::StackConfig;
use chaos::{Controllers, Fault, Mode};

/// Why the drills cannot run here, if they cannot.
fn skip() -> Option<String> {
    if let Err(e) = failover_testkit::postgres::find_bindir() {
        return Some(format!("skipped: {e}"));
    }
    // Namespaces need root: the same check as `Net::builder().start()`,
    // without creating anything.
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(str::to_owned))
        })
        .unwrap_or_default();
    if uid != "0" {
        return Some("skipped: network namespaces need root (effective uid 0)".into());
    }
    None
}

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

/// Runs one drill, prints its line (and its events when it failed), and
/// checks that nothing of it was left behind.
async fn drill(spec: DrillSpec) -> DrillReport {
    let report = drill::run(&spec)
        .await
        .unwrap_or_else(|e| panic!("drill seed {} ({:?}): {e}", spec.seed, spec.fault));
    report.print();
    // Killed processes may take a moment to be reaped: bounded wait.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut left = report.footprint.leftovers();
    while !left.is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        left = report.footprint.leftovers();
    }
    assert!(
        left.is_empty(),
        "drill seed {} left behind: {left:#?}",
        report.seed
    );
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_drill_per_fault_kind_loses_no_acknowledged_write_and_never_has_two_writers() {
    if let Some(why) = skip() {
        eprintln!("{why}");
        return;
    }
    init_tracing();
    let mut reports = Vec::new();
    for (i, fault) in Controllers::One.faults().iter().copied().enumerate() {
        reports.push(
            drill(DrillSpec {
                seed: 1000 + i as u64,
                fault: Some(fault),
                stack: StackConfig::new(Mode::Sync),
            })
            .await,
        );
    }
    for r in &reports {
        // The two liveness and safety gaps the drills found have their own
        // tests below.
        assert_safe_sync_drill(r, Controllers::One);
    }
}

/// A synchronous drill's safety: no finding of S1, S2 or DNS, nothing lost,
/// no overlap, writes acknowledged, and the writer moved exactly when the
/// fault requires it. Liveness is reported, not asserted: a loaded machine
/// can stretch a drill past its convergence window.
fn assert_safe_sync_drill(r: &DrillReport, controllers: Controllers) {
    assert!(
        r.safety_failures().is_empty(),
        "{}: {:#?}\n{:#?}",
        r.line(),
        r.failures,
        r.events
    );
    assert_eq!(r.lost, 0, "{}", r.line());
    assert!(r.overlaps.is_empty(), "{}", r.line());
    assert!(r.acked > 0, "{}", r.line());
    let moved = r.writers.1.is_some_and(|w| w != r.writers.0);
    if let Some(must) = r.fault.moves_writer(controllers) {
        assert_eq!(moved, must, "{}: {:#?}", r.line(), r.events);
    }
    if !r.passed() {
        println!("liveness finding, seed {}: {:?}", r.seed, r.failures);
    }
}

/// A controller and an etcd member in every region (synchronous mode): the
/// writer's region cut off whole (its controller, its etcd member and its
/// clients with it; they keep writing to pg-east); the leading controller
/// crashed; the etcd leader member stopped and then the writer's machine
/// lost. No acknowledged write lost, never two writers, and the writer
/// moves exactly when the writer was lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_controllers_on_etcd_lose_no_acknowledged_write_and_never_have_two_writers() {
    if let Some(why) = skip() {
        eprintln!("{why}");
        return;
    }
    if let Err(e) = std::fs::metadata("/usr/bin/etcd") {
        eprintln!("skipped: /usr/bin/etcd: {e} (apt-get install etcd-server)");
        return;
    }
    init_tracing();
    for (seed, fault) in [
        (3000, Fault::IsolateWriterRegion),
        (3001, Fault::RestartController),
        (3002, Fault::EtcdMinorityKillWriter),
    ] {
        let r = drill(DrillSpec {
            seed,
            fault: Some(fault),
            stack: StackConfig::per_region(Mode::Sync),
        })
        .await;
        assert_safe_sync_drill(&r, Controllers::PerRegion);
    }
}

/// A liveness gap the drills found: a single controller that crashes for
/// longer than the guards' deadline (`ttl − margin`, 1.8 s here) came back
/// with an empty writer record at its in-process lease server, while
/// pg-east's guard had fenced pg-east at epoch 1 and the runtime resumed
/// after that recorded epoch: nothing named pg-east the writer again, so its
/// guard kept it fenced and writes stopped until an operator acted. Now the
/// controller names it again (`EventKind::WriterRestored`) once every node
/// answers and none is another primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_controller_gives_the_writer_back() {
    if let Some(why) = skip() {
        eprintln!("{why}");
        return;
    }
    init_tracing();
    let r = drill(DrillSpec {
        seed: 1004,
        fault: Some(Fault::RestartController),
        stack: StackConfig::new(Mode::Sync),
    })
    .await;
    assert!(
        r.passed(),
        "{}: {:#?}\n{:#?}",
        r.line(),
        r.failures,
        r.events
    );
    assert_eq!(r.writers.1, Some(r.writers.0), "{}", r.line());
}

/// A partial partition in asynchronous mode with 4 s guard leases: the
/// controller loses east (its API and pg-east), while pg-east lives on and
/// east's clients keep writing to it until its guard fences it.
fn partial_partition(unsafe_promote: bool) -> DrillSpec {
    let mut stack = StackConfig::new(Mode::Async);
    stack.guard_ttl = Duration::from_secs(4);
    stack.unsafe_promote = unsafe_promote;
    DrillSpec {
        seed: 2000,
        fault: Some(Fault::CutControllerFromWriter),
        stack,
    }
}

/// The control for the test below: with the promotion rule intact, the new
/// writer is promoted only once pg-east's guard lease expired (so its guard
/// fenced it): the checker finds one writer at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_promotion_rule_intact_a_controller_cut_from_a_live_writer_makes_no_second_writer()
{
    if let Some(why) = skip() {
        eprintln!("{why}");
        return;
    }
    init_tracing();
    let r = drill(partial_partition(false)).await;
    assert!(
        r.writers.1.is_some_and(|w| w != r.writers.0),
        "the writer moved: {}: {:#?}",
        r.line(),
        r.events
    );
    assert!(r.overlaps.is_empty(), "{}: {:#?}", r.line(), r.failures);
    assert!(r.passed(), "{}: {:#?}", r.line(), r.failures);
}

/// The checker can fail: with the promotion rule loosened (promote on
/// "unreachable" alone), the controller promotes while pg-east still takes
/// its region's writes, and the checker reports two writers.
#[cfg(feature = "chaos-unsafe")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_promotion_rule_loosened_the_checker_reports_two_writers() {
    if let Some(why) = skip() {
        eprintln!("{why}");
        return;
    }
    init_tracing();
    let r = drill(partial_partition(true)).await;
    assert!(
        !r.overlaps.is_empty(),
        "the loosened rule made no second writer the checker could see: {}: {:#?}",
        r.line(),
        r.events
    );
    assert!(
        r.failures.iter().any(|f| f.starts_with("S1:")),
        "{:#?}",
        r.failures
    );
}

/// An S1 gap the drills found: asynchronous replication, pg-east's
/// PostgreSQL frozen (SIGSTOP on every process) while its guard runs. A
/// fence cannot reach a frozen server; the guard's lease expired, the
/// controller took that as proof that pg-east stopped and promoted a
/// replica, and on SIGCONT pg-east acknowledged a client's commit before its
/// guard fenced it as stale: two writers, and a lost row. Now the guard kills
/// a server it cannot fence by its deadline (`NodeGuard::start_with_kill`),
/// before the lease can expire. (Synchronous mode was safe: the old writer
/// cannot acknowledge without the standby that was promoted.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_writer_that_wakes_after_the_failover_acknowledges_nothing() {
    if let Some(why) = skip() {
        eprintln!("{why}");
        return;
    }
    init_tracing();
    let r = drill(DrillSpec {
        seed: 101,
        fault: Some(Fault::PauseWriterDb),
        stack: StackConfig::new(Mode::Async),
    })
    .await;
    assert!(r.overlaps.is_empty(), "{}: {:#?}", r.line(), r.failures);
}

/// PostgreSQL crashes (kill -9) while its guard and machine live on, in
/// asynchronous mode, where only a stop proof lets the controller promote:
/// the guard finds no server in the data directory and lets its lease go,
/// so the failover happens (before, the live guard kept the lease and the
/// controller waited for an operator).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_whose_postgres_crashed_under_a_live_guard_fails_over() {
    if let Some(why) = skip() {
        eprintln!("{why}");
        return;
    }
    init_tracing();
    let r = drill(DrillSpec {
        seed: 102,
        fault: Some(Fault::CrashWriterDb),
        stack: StackConfig::new(Mode::Async),
    })
    .await;
    assert!(r.overlaps.is_empty(), "{}: {:#?}", r.line(), r.failures);
    assert!(r.passed(), "{}: {:#?}", r.line(), r.failures);
    assert_ne!(r.writers.1, Some(r.writers.0), "{}", r.line());
}
