//! The seed drill: us-east (active) fails and later recovers; us-west
//! (standby, provisioned at 60 % of peak) takes over. Runs the real
//! controller in the deterministic simulator — no servers needed — and prints
//! the timeline with the planner's bounds beside the measured values.
//!
//! ```text
//! cargo run --example drill            # seed 1
//! cargo run --example drill -- 7       # another seed
//! ```

use std::time::Duration;

use failover::decision::objectives::{self, Bounds, PlanTarget};
use failover::decision::sim::{Happening, Scenario};
use failover::decision::{Config, EventKind};

/// The seed deployment; a file so it can be copied as a starting point.
const CONFIG: &str = include_str!("drill.toml");

const ACTUATION: Duration = Duration::from_secs(1);
const WRITE_RATE: f64 = 2_000_000.0; // bytes/s
const LAG: Duration = Duration::from_millis(250);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let seed = std::env::args()
        .nth(1)
        .map(|s| s.parse::<u64>())
        .transpose()?
        .unwrap_or(1);
    let config = Config::from_toml(CONFIG)?;
    let topology = config.topology().clone();
    let policy = config.policy().clone();
    let east = topology.region_id("us-east").ok_or("no us-east")?;

    let fail_at = Duration::from_secs(120);
    let recover_at = Duration::from_secs(600);
    let report = Scenario::new(config, seed)
        .duration(Duration::from_secs(1000))
        .actuation(ACTUATION)
        .replication(WRITE_RATE, LAG)
        .outage(east, fail_at, Some(recover_at))
        .run();

    println!("failover drill (seed {seed}): us-east active, us-west standby at 60 % of peak");
    println!(
        "policy: probe every {}s (timeout {}s, jitter ≤{}s), down after {} misses, up after {} passes,",
        policy.interval.as_secs(),
        policy.timeout.as_secs(),
        policy.jitter.as_secs(),
        policy.fall,
        policy.rise
    );
    println!(
        "        DNS TTL {}s, hold-down {}s, failback {:?} % every {}s",
        policy.ttl.as_secs(),
        policy.hold_down.as_secs(),
        policy.ramp_steps,
        policy.ramp_interval.as_secs()
    );
    println!(
        "world:  us-east fails at t+{}s and recovers at t+{}s; {} MB/s of writes, replica {} ms behind\n",
        fail_at.as_secs(),
        recover_at.as_secs(),
        WRITE_RATE / 1e6,
        LAG.as_millis()
    );

    println!("{:>9}  {:<10} what", "time", "kind");
    println!("{:>9}  {:<10} {}", "-------", "----------", "-".repeat(60));
    for entry in &report.timeline {
        let tag = match &entry.what {
            Happening::RegionFailed(_) | Happening::RegionRecovered(_) => "WORLD",
            Happening::PlanApplied { .. } => "DNS",
            Happening::ClientsCutOver { .. } => "CLIENTS",
            Happening::DataLost { .. } => "DATABASE",
            Happening::Controller(e) => match e.kind {
                EventKind::ProbeFailed { .. }
                | EventKind::VantageDown { .. }
                | EventKind::VantageUp { .. } => "probe",
                EventKind::RegionDown { .. }
                | EventKind::RegionUp { .. }
                | EventKind::HeldDown { .. } => "HEALTH",
                EventKind::CapacityWarning { .. } => "WARNING",
                EventKind::RampStep { .. } => "FAILBACK",
                EventKind::WeightsChanged { .. } => "decide",
                EventKind::FencingRequested { .. }
                | EventKind::PromotionRequested { .. }
                | EventKind::Promoted { .. }
                | EventKind::StalePrimary { .. }
                | EventKind::PromotionRefused { .. } => "DATABASE",
                _ => "event",
            },
            _ => "",
        };
        println!(
            "t+{:>6.1}s  {:<10} {}",
            entry.at.as_secs_f64(),
            tag,
            entry.display(&topology)
        );
    }

    let bounds = Bounds::for_policy(&policy, ACTUATION);
    let load = objectives::load_after_losing(&topology, &[east]);
    let rpo = objectives::rpo_from_delay(LAG, WRITE_RATE);
    let secs = |d: Duration| format!("{:.1}s", d.as_secs_f64());
    let measured = |d: Option<Duration>| d.map_or("—".to_owned(), secs);
    let measured_load = report.timeline.iter().find_map(|e| match &e.what {
        Happening::Controller(ev) => match ev.kind {
            EventKind::CapacityWarning { load_percent } => Some(load_percent),
            _ => None,
        },
        _ => None,
    });
    let row = |what: &str, bound: String, got: String, how: String| {
        println!("{what:<26} {bound:>17}  {got:>16}   {how}");
    };
    println!();
    row(
        "objective",
        "planner bound".into(),
        "measured".into(),
        "bound from".into(),
    );
    row(
        &"-".repeat(26),
        "-".repeat(17),
        "-".repeat(16),
        "-".repeat(40),
    );
    row(
        "detection (fault → down)",
        format!(
            "{} .. {}",
            secs(bounds.best_detection),
            secs(bounds.worst_detection)
        ),
        measured(report.detection),
        format!(
            "{} × {}s interval + {}s timeout + {}s jitter",
            policy.fall,
            policy.interval.as_secs(),
            policy.timeout.as_secs(),
            policy.jitter.as_secs()
        ),
    );
    row(
        "client cutover",
        format!(
            "{} .. {}",
            secs(bounds.best_cutover),
            secs(bounds.worst_cutover)
        ),
        measured(report.cutover),
        format!(
            "detection + {}s DNS update + {}s TTL",
            ACTUATION.as_secs(),
            policy.ttl.as_secs()
        ),
    );
    // The database: writable again once the dead primary is proven stopped.
    // Its fence cannot be confirmed (the region is gone), so the proof is its
    // guard's lease expiring: detection + guard TTL + claim and promotion.
    let writable = report.timeline.iter().find_map(|e| match &e.what {
        Happening::Controller(ev) if matches!(ev.kind, EventKind::Promoted { .. }) => {
            Some(e.at.saturating_sub(fail_at))
        }
        _ => None,
    });
    match policy.guard_ttl {
        Some(guard_ttl) => row(
            "database writable",
            format!(
                "≤ {}",
                secs(objectives::database_cutover_unconfirmed(
                    bounds.worst_detection,
                    guard_ttl,
                    2 * ACTUATION
                ))
            ),
            measured(writable),
            format!(
                "detection + {}s guard TTL (proof) + {}s claim and promotion",
                guard_ttl.as_secs(),
                2 * ACTUATION.as_secs()
            ),
        ),
        None => row(
            "database writable",
            "never (no proof)".into(),
            measured(writable),
            "no guards: an unreachable primary is never replaced automatically".into(),
        ),
    }
    row(
        "database writable, fenced",
        format!(
            "≤ {}",
            secs(objectives::database_cutover_fenced(
                bounds.worst_detection,
                ACTUATION,
                2 * ACTUATION
            ))
        ),
        "—".into(),
        "if the old primary could still confirm its fence (a partial outage)".into(),
    );
    // A planned switchover (not simulated here): the writer drain comes
    // first, then fence, catch-up, claim and promotion.
    let switchover =
        objectives::SwitchoverBound::for_policy(&policy, ACTUATION, ACTUATION, 2 * ACTUATION);
    row(
        "planned switchover",
        format!("≤ {}", secs(switchover.total)),
        "—".into(),
        format!(
            "{}s writer drain (load balancers mark the writer down before its fence) + {}s fence + {}s catch-up + {}s claim and promotion",
            switchover.drain.as_secs_f64(),
            ACTUATION.as_secs(),
            ACTUATION.as_secs(),
            2 * ACTUATION.as_secs()
        ),
    );
    // Synchronous mode's price in availability: a standby that stops
    // acknowledging while it still answers holds every commit this long.
    row(
        "sync standby stalled",
        format!("≤ {}", secs(objectives::synchronous_stall(&policy))),
        "—".into(),
        format!(
            "synchronous on/strict, writes held: {} × {}s waiting + {}s to observe it + 2 steps ≤ {}s each (record drops it, writer requires another; ~0.1–0.3 s measured)",
            policy.fall,
            policy.interval.as_secs_f64(),
            policy.interval.as_secs_f64(),
            policy.step_timeout.as_secs_f64()
        ),
    );
    row(
        "data loss window (RPO)",
        format!("{} ms", rpo.window.as_millis()),
        report.data_loss.map_or("—".to_owned(), |l| {
            format!("{} ms, {} KB", l.window.as_millis(), l.bytes / 1000)
        }),
        format!(
            "replica lag {} ms × {} MB/s = {} KB",
            LAG.as_millis(),
            WRITE_RATE / 1e6,
            rpo.bytes / 1000
        ),
    );
    if let Some(guard_ttl) = policy.guard_ttl {
        let isolated = objectives::rpo_isolated_writer(LAG, guard_ttl, WRITE_RATE);
        row(
            "RPO, writer cut off alive",
            format!("{} ms", isolated.window.as_millis()),
            "—".into(),
            format!(
                "asynchronous: lag {} ms + {}s guard TTL (it acknowledges until its guard fences it) = {} KB; synchronous: 0",
                LAG.as_millis(),
                guard_ttl.as_secs(),
                isolated.bytes / 1000
            ),
        );
    }
    row(
        "us-west load at peak",
        format!(
            "{} %{}",
            load.percent(),
            if load.saturated() { " SATURATED" } else { "" }
        ),
        measured_load.map_or("—".to_owned(), |p| format!("{p} %")),
        "peak traffic / us-west capacity 0.6".to_owned(),
    );

    let target = PlanTarget {
        ttl: policy.ttl,
        timeout: policy.timeout,
        jitter: policy.jitter,
        actuation: ACTUATION,
        ..PlanTarget::default()
    };
    println!(
        "\nplanner: worst cutover ≤ {}s less a {:.0} % margin, TTL {}s, {:.1} % false probe failures, \
         {} loss bursts of {}s a year:",
        target.rto.as_secs(),
        target.margin * 100.0,
        target.ttl.as_secs(),
        target.false_failure * 100.0,
        target.burst.per_year,
        target.burst.duration.as_secs()
    );
    println!(
        "  {:>8}  {:>4}  {:>15}  {:>13}  {:>22}  {:>13}",
        "interval",
        "fall",
        "worst detection",
        "worst cutover",
        "false failovers / year",
        "probes / year"
    );
    for c in objectives::plan(&target).iter().take(4) {
        let rate = c.false_failovers_per_year;
        let rate = if rate < 0.001 {
            "< 0.001".to_owned()
        } else {
            format!("{rate:.3}")
        };
        println!(
            "  {:>7}s  {:>4}  {:>15}  {:>13}  {:>22}  {:>13}",
            c.interval.as_secs(),
            c.fall,
            secs(c.worst_detection),
            secs(c.worst_cutover),
            rate,
            c.probes_per_year
        );
        if let Some(warning) = c.warning {
            println!("            warning: {warning}");
        }
    }
    println!(
        "\n{} probe results and {} actions simulated.",
        report.probes, report.actions
    );
    Ok(())
}
