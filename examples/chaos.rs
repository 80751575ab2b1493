//! Randomized chaos drills on real servers in network namespaces (issue
//! 11): three regions (east, west, south), a PostgreSQL node with its guard
//! and a regional API in each; one controller with the embedded DNS in
//! south, or (`--controllers 3`) a controller with its embedded DNS and an
//! etcd member in every region; a workload in every region; a fault per
//! drill; a checker.
//!
//! ```sh
//! # needs root (network namespaces) and PostgreSQL
//! cargo run --release --example chaos --features full,ctl -- --drills 20 --seed 1
//! cargo run --release --example chaos --features full,ctl -- --drills 5 --seed 7 --mode async
//! cargo run --release --example chaos --features full,ctl -- --drills 1 --seed 3 --fault isolate-writer-region
//! cargo run --release --example chaos --features full,ctl -- --drills 20 --seed 1 --controllers 3
//! ```
//!
//! One line per drill, then a summary table per fault kind: detection and
//! writable times (p50, max) against the planner's bounds, acknowledged
//! writes lost, overlapping writers. A failing drill prints its seed, the
//! checker's findings, the controller's decisions and the command that
//! replays it. Exits non-zero if any drill failed.

#[path = "support/chaos/mod.rs"]
mod chaos;

use std::collections::BTreeMap;
use std::time::Duration;

use chaos::drill::{self, DrillReport, DrillSpec};
use chaos::stack::StackConfig;
use chaos::{Controllers, Fault, Mode};
use clap::Parser;

/// Randomized chaos drills with a checker (issue 11).
#[derive(Parser, Debug)]
#[command(name = "chaos")]
struct Args {
    /// How many drills to run.
    #[arg(long, default_value_t = 5)]
    drills: u64,
    /// The run's seed; drill i uses seed + i, and replays alone with that seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Replication: sync (no acknowledged loss allowed) or async (loss
    /// within max_rpo, reported).
    #[arg(long, default_value = "sync")]
    mode: Mode,
    /// Controllers: 1 (in south, with the guards' lease server) or 3 (one
    /// per region, each with an etcd member, coordinated through etcd).
    #[arg(long, default_value = "1")]
    controllers: Controllers,
    /// Inject only this fault (kill-writer-db, pause-writer-db,
    /// isolate-writer-region, cut-controller-from-writer, restart-controller,
    /// crash-writer-db; with 3 controllers also etcd-minority-kill-writer)
    /// instead of drawing one per drill.
    #[arg(long)]
    fault: Option<Fault>,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .init();
    }
    if let Some(f) = args
        .fault
        .filter(|f| !args.controllers.faults().contains(f))
    {
        eprintln!("--fault {f} needs --controllers 3");
        return std::process::ExitCode::from(2);
    }
    let config = match args.controllers {
        Controllers::One => StackConfig::new(args.mode),
        Controllers::PerRegion => StackConfig::per_region(args.mode),
    };
    let b = drill::bounds(&config);
    println!(
        "chaos: {} drills, seed {}, {} mode, {}; planner: detection {}–{} ms, writable ≤ {} ms",
        args.drills,
        args.seed,
        args.mode,
        match args.controllers {
            Controllers::One => "1 controller (south)",
            Controllers::PerRegion => "3 controllers (one per region, etcd)",
        },
        b.best_detection.as_millis(),
        b.worst_detection.as_millis(),
        b.worst_writable.as_millis()
    );
    let mut reports = Vec::new();
    let mut errors = Vec::new();
    for i in 0..args.drills {
        let seed = chaos::drill_seed(args.seed, i);
        let spec = DrillSpec {
            seed,
            fault: args.fault,
            stack: config.clone(),
        };
        match drill::run(&spec).await {
            Ok(report) => {
                report.print();
                if !report.passed() {
                    println!("    replay: {}", replay(&args, seed, report.fault));
                }
                reports.push(report);
            }
            Err(e) => {
                println!("seed {seed:<6} ERROR {e}");
                println!("    replay: {}", replay_seed(&args, seed));
                errors.push(seed);
            }
        }
    }
    summary(&reports, &config, args.mode);
    let failed: Vec<u64> = reports
        .iter()
        .filter(|r| !r.passed())
        .map(|r| r.seed)
        .chain(errors.iter().copied())
        .collect();
    if failed.is_empty() {
        println!("all {} drills passed", reports.len());
        std::process::ExitCode::SUCCESS
    } else {
        println!("failed seeds: {failed:?}");
        std::process::ExitCode::FAILURE
    }
}

fn replay(args: &Args, seed: u64, fault: Fault) -> String {
    format!(
        "cargo run --release --example chaos --features full,ctl -- --drills 1 --seed {seed} --mode {} --controllers {} --fault {fault}",
        args.mode,
        controllers_arg(args)
    )
}

fn replay_seed(args: &Args, seed: u64) -> String {
    let fault = args
        .fault
        .map(|f| format!(" --fault {f}"))
        .unwrap_or_default();
    format!(
        "cargo run --release --example chaos --features full,ctl -- --drills 1 --seed {seed} --mode {} --controllers {}{fault}",
        args.mode,
        controllers_arg(args)
    )
}

fn controllers_arg(args: &Args) -> u32 {
    match args.controllers {
        Controllers::One => 1,
        Controllers::PerRegion => 3,
    }
}

fn ms(d: Option<Duration>) -> String {
    d.map_or("-".into(), |d| format!("{}", d.as_millis()))
}

/// p50 and max of the measured values (`None` when none).
fn p50_max(mut values: Vec<Duration>) -> (Option<Duration>, Option<Duration>) {
    values.sort();
    (
        values
            .get(values.len() / 2)
            .copied()
            .filter(|_| !values.is_empty()),
        values.last().copied(),
    )
}

fn summary(reports: &[DrillReport], config: &StackConfig, mode: Mode) {
    let b = drill::bounds(config);
    let mut by_fault: BTreeMap<Fault, Vec<&DrillReport>> = BTreeMap::new();
    for r in reports {
        by_fault.entry(r.fault).or_default().push(r);
    }
    println!();
    println!(
        "{:<27} {:>6} {:>5} {:>6} | {:>8} {:>8} {:>8} | {:>8} {:>8} {:>8} | {:>6} {:>6} {:>8}",
        "fault",
        "drills",
        "pass",
        "moved",
        "det p50",
        "det max",
        "bound",
        "wr p50",
        "wr max",
        "bound",
        "acked",
        "lost",
        "overlaps"
    );
    for (fault, rs) in &by_fault {
        let (dp50, dmax) = p50_max(rs.iter().filter_map(|r| r.detection).collect());
        let (wp50, wmax) = p50_max(rs.iter().filter_map(|r| r.writable).collect());
        println!(
            "{:<27} {:>6} {:>5} {:>6} | {:>8} {:>8} {:>8} | {:>8} {:>8} {:>8} | {:>6} {:>6} {:>8}",
            fault.name(),
            rs.len(),
            rs.iter().filter(|r| r.passed()).count(),
            rs.iter()
                .filter(|r| r.writers.1.is_some_and(|w| w != r.writers.0))
                .count(),
            ms(dp50),
            ms(dmax),
            b.worst_detection.as_millis(),
            ms(wp50),
            ms(wmax),
            rs.iter()
                .map(|r| r.writable_bound)
                .max()
                .unwrap_or(b.worst_writable)
                .as_millis(),
            rs.iter().map(|r| r.acked).sum::<usize>(),
            rs.iter().map(|r| r.lost).sum::<usize>(),
            rs.iter().map(|r| r.overlaps.len()).sum::<usize>(),
        );
    }
    println!("(times in ms from the fault; bound: the planner's worst detection, and worst writable = detection + {}promotion {} ms)",
        if mode == Mode::Async { format!("guard TTL {} ms + ", config.guard_ttl.as_millis()) } else { String::new() },
        drill::PROMOTE.as_millis());
    if !b.takeover.is_zero() {
        println!("(with a controller per region, a fault that takes the leader and the etcd leader waits for a successor: detection is replaced by max(detection, takeover {} ms = etcd election {} ms + leader lease {} ms))",
            b.takeover.as_millis(),
            chaos::stack::ETCD_ELECTION.as_millis(),
            chaos::stack::LEADER_TTL.as_millis());
    }
    if mode == Mode::Async {
        println!("\nasync loss per fault (max_rpo 16 MiB; the RPO gate's lag at promotion; lost rows' acknowledgements from the fault):");
        for (fault, rs) in &by_fault {
            let lost: usize = rs.iter().map(|r| r.lost).sum();
            let lag = rs.iter().filter_map(|r| r.promoted_lag).max();
            let first = rs.iter().filter_map(|r| r.loss_window.map(|w| w.0)).min();
            let last = rs.iter().filter_map(|r| r.loss_window.map(|w| w.1)).max();
            println!(
                "  {:<27} lost {lost:>5} rows in {} of {} drills; max lag at promotion {} bytes; lost rows acknowledged {} .. {} ms from the fault",
                fault.name(),
                rs.iter().filter(|r| r.lost > 0).count(),
                rs.len(),
                lag.map_or("-".into(), |l| l.to_string()),
                first.map_or("-".into(), |v| v.to_string()),
                last.map_or("-".into(), |v| v.to_string()),
            );
        }
    }
    let (s50, smax) = p50_max(reports.iter().map(|r| r.setup).collect());
    let (t50, tmax) = p50_max(reports.iter().map(|r| r.took).collect());
    println!(
        "one drill: p50 {:.1} s (max {:.1} s), of which stack start-up p50 {:.1} s (max {:.1} s)",
        t50.unwrap_or_default().as_secs_f64(),
        tmax.unwrap_or_default().as_secs_f64(),
        s50.unwrap_or_default().as_secs_f64(),
        smax.unwrap_or_default().as_secs_f64()
    );
}
