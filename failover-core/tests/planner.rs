//! The planner and the cutover bounds (issue 10 item 16, issue 9 item 5):
//! table and property-style tests over the pure functions of `objectives`.

use std::time::Duration;

use failover_core::objectives::{
    self, burst_covers, database_cutover_fenced, database_cutover_unconfirmed, plan, Bounds,
    LossBurst, PlanTarget, PlanWarning, NEGLIGIBLE_FALSE_FAILOVERS_PER_YEAR, PLAN_INTERVALS_MS,
};
use failover_core::Policy;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// A grid of targets: tight and loose RTOs, short and long TTLs, margins,
/// with and without loss bursts.
fn targets() -> Vec<PlanTarget> {
    let mut out = Vec::new();
    for rto in [20, 45, 60, 90, 94, 120, 300, 600] {
        for ttl in [5, 30, 60] {
            for margin in [0.0, 0.1, 0.25] {
                for burst in [LossBurst::NONE, LossBurst::default()] {
                    out.push(PlanTarget {
                        rto: secs(rto),
                        ttl: secs(ttl),
                        margin,
                        burst,
                        ..PlanTarget::default()
                    });
                }
            }
        }
    }
    out
}

#[test]
fn the_default_target_documents_its_false_failure_rate_and_fits_the_default_policy() {
    let target = PlanTarget::default();
    assert_eq!(target.false_failure, 0.001);
    assert_eq!(target.rto, secs(120));
    assert_eq!(target.budget(), secs(108), "10 % margin");
    let policy = Policy::default();
    assert_eq!(
        (target.ttl, target.timeout, target.jitter),
        (policy.ttl, policy.timeout, policy.jitter)
    );
    let bounds = Bounds::for_policy(&policy, target.actuation);
    assert!(bounds.worst_cutover <= target.budget(), "{bounds:?}");
    assert!(!plan(&target).is_empty());
}

/// Issue 10 item 16: no choice spends the whole RTO. With RTO 94 s and a 10 %
/// margin, 10 s × fall 3 (worst cutover 94 s) is no longer offered.
#[test]
fn plans_keep_a_margin_below_the_rto() {
    for target in targets() {
        for c in plan(&target) {
            assert!(
                c.worst_cutover <= target.rto.mul_f64(1.0 - target.margin),
                "{c:?} for {target:?}"
            );
            assert_eq!(c.headroom, target.rto - c.worst_cutover);
            assert!(c.headroom >= target.rto.mul_f64(target.margin), "{c:?}");
        }
    }
    let tight = PlanTarget {
        rto: secs(94),
        ..PlanTarget::default()
    };
    let choices = plan(&tight);
    assert!(
        choices
            .iter()
            .all(|c| !(c.interval == secs(10) && c.fall == 3)),
        "94 s of 94 s leaves no margin: {choices:?}"
    );
    let ten = choices.iter().find(|c| c.interval == secs(10)).unwrap();
    assert_eq!(ten.fall, 2, "10 s × 2 + 3 s + 1 s + 60 s = 84 s ≤ 84.6 s");
}

/// Issue 10 item 16: a choice with fall = 1 carries a warning, and only it.
#[test]
fn fall_of_one_comes_with_a_warning() {
    let mut seen_fall_one = false;
    for target in targets() {
        for c in plan(&target) {
            if c.fall == 1 {
                seen_fall_one = true;
                assert_eq!(c.warning, Some(PlanWarning::SingleProbeFallsOver), "{c:?}");
            } else {
                assert_eq!(c.warning, None, "{c:?}");
            }
        }
    }
    assert!(seen_fall_one, "the grid has targets only fall 1 can meet");
    let text = PlanWarning::SingleProbeFallsOver.to_string();
    assert!(
        text.contains("fall = 1") && text.contains("single lost probe"),
        "{text}"
    );
}

/// Issue 10 item 16: with loss bursts, the shortest interval above the 2 s
/// timeout, 3 s with fall 10 (a 30 s window: ten probes inside any 30 s
/// burst), is rated for what it is, twelve false failovers a year, and ranks
/// below a 10 s interval whose 40 s window outlasts the bursts at a third of
/// the probes. Under the independent model alone it ranked first (1e-23 a
/// year).
#[test]
fn loss_bursts_keep_the_planner_from_pushing_to_the_shortest_interval() {
    let target = PlanTarget::default();
    let choices = plan(&target);
    let position = |s| {
        choices
            .iter()
            .position(|c| c.interval == secs(s))
            .unwrap_or_else(|| panic!("no {s} s choice in {choices:?}"))
    };
    let fast = &choices[position(3)];
    assert_eq!(fast.fall, 10);
    assert!(
        (fast.burst_false_failovers_per_year - 12.0).abs() < 1e-9,
        "every 30 s burst covers ten 3 s probes: {fast:?}"
    );
    let ten = &choices[position(10)];
    assert_eq!(ten.fall, 4);
    assert_eq!(ten.burst_false_failovers_per_year, 0.0, "{ten:?}");
    assert!(position(10) < position(3), "{choices:#?}");
    let best = &choices[0];
    assert_ne!(best.interval, secs(3), "{choices:#?}");
    assert!(
        best.interval * best.fall > target.burst.duration,
        "the best window outlasts a burst: {best:?}"
    );
    assert!(best.false_failovers_per_year < NEGLIGIBLE_FALSE_FAILOVERS_PER_YEAR);
}

/// The burst formula agrees with counting probe starts inside a burst over
/// many evenly spread phases of the probe schedule.
#[test]
fn burst_cover_probability_matches_counting_probes() {
    const PHASES: u32 = 2_000;
    for interval_ms in [500u64, 1_000, 3_000, 5_000, 10_000] {
        for duration_ms in [0u64, 700, 5_000, 12_500, 30_000, 45_000] {
            for fall in 1..=6u32 {
                let interval = Duration::from_millis(interval_ms);
                let duration = Duration::from_millis(duration_ms);
                let mut hits = 0u32;
                for k in 0..PHASES {
                    // Probe starts at first, first + I, ... inside [0, burst).
                    let (i, d) = (interval_ms as f64, duration_ms as f64);
                    let first = i * (f64::from(k) + 0.5) / f64::from(PHASES);
                    let mut starts = 0u32;
                    let mut at = first;
                    while at < d {
                        starts += 1;
                        at += i;
                    }
                    if starts >= fall {
                        hits += 1;
                    }
                }
                let counted = f64::from(hits) / f64::from(PHASES);
                let formula = burst_covers(duration, fall, interval);
                assert!(
                    (counted - formula).abs() <= 1.0 / f64::from(PHASES) + 1e-9,
                    "interval {interval:?}, burst {duration:?}, fall {fall}: counted {counted}, formula {formula}"
                );
            }
        }
    }
}

/// Issue 10 item 16: each choice shows its cost in probes a year.
#[test]
fn every_choice_shows_its_cost_in_probes_a_year() {
    for target in targets() {
        for c in plan(&target) {
            let expected = (objectives::SECONDS_PER_YEAR / c.interval.as_secs_f64()).round() as u64;
            assert_eq!(c.probes_per_year, expected, "{c:?}");
        }
    }
    let target = PlanTarget::default();
    let choices = plan(&target);
    let three = choices.iter().find(|c| c.interval == secs(3)).unwrap();
    assert_eq!(three.probes_per_year, 10_512_000);
    let ten = choices.iter().find(|c| c.interval == secs(10)).unwrap();
    assert_eq!(ten.probes_per_year, 3_153_600);
    // Equally safe choices: the cheaper ranks first.
    for w in choices.windows(2) {
        let safe = |f: f64| f < NEGLIGIBLE_FALSE_FAILOVERS_PER_YEAR;
        if safe(w[0].false_failovers_per_year) && safe(w[1].false_failovers_per_year) {
            assert!(w[0].probes_per_year <= w[1].probes_per_year, "{w:?}");
        }
    }
    assert!(PLAN_INTERVALS_MS.contains(&10_000));
}

/// Issue 9 item 5: the database cutover with a confirmed fence and without.
#[test]
fn database_cutover_bounds_with_and_without_a_confirmed_fence() {
    let ms = Duration::from_millis;
    // (detection, fence, guard ttl, promote) → (fenced, unconfirmed)
    let table = [
        // The worked example: 32 s worst detection, a fence in 0.5 s, a 10 s
        // guard lease, pg_promote in 0.13 s.
        (
            (secs(32), ms(500), secs(10), ms(130)),
            (ms(32_630), ms(42_130)),
        ),
        // Fast probes, a short lease.
        ((ms(1_500), ms(40), secs(3), ms(43)), (ms(1_583), ms(4_543))),
        // Nothing but the promotion.
        (
            (Duration::ZERO, Duration::ZERO, Duration::ZERO, ms(130)),
            (ms(130), ms(130)),
        ),
    ];
    for ((detection, fence, ttl, promote), (fenced, unconfirmed)) in table {
        assert_eq!(database_cutover_fenced(detection, fence, promote), fenced);
        assert_eq!(
            database_cutover_unconfirmed(detection, ttl, promote),
            unconfirmed
        );
    }
    // Properties over a grid: the lease wait replaces the fence, nothing else
    // changes, and each bound grows with each of its parts.
    let grid = [0u64, 1, 130, 2_000, 30_000];
    for d in grid {
        for f in grid {
            for t in grid {
                for p in grid {
                    let (d, f, t, p) = (ms(d), ms(f), ms(t), ms(p));
                    let fenced = database_cutover_fenced(d, f, p);
                    let unconfirmed = database_cutover_unconfirmed(d, t, p);
                    assert_eq!(fenced - f, unconfirmed - t);
                    assert!(fenced >= d + p && unconfirmed >= d + p);
                    assert!(database_cutover_fenced(d + ms(1), f, p) > fenced);
                    assert!(database_cutover_unconfirmed(d, t + ms(1), p) > unconfirmed);
                }
            }
        }
    }
    // Saturates rather than overflowing.
    assert_eq!(
        database_cutover_unconfirmed(Duration::MAX, secs(1), secs(1)),
        Duration::MAX
    );
}

/// Issue 17: sub-second probes are among the planner's choices when the RTO
/// needs them, and it says what they cost in false failovers.
#[test]
fn sub_second_probes_are_chosen_when_the_rto_needs_them_with_their_odds() {
    let ms = Duration::from_millis;
    let target = PlanTarget {
        rto: ms(2_000),
        margin: 0.0,
        ttl: ms(1_000),
        timeout: ms(100),
        jitter: Duration::ZERO,
        actuation: ms(50),
        false_failure: 0.0001,
        burst: LossBurst::NONE,
    };
    let choices = plan(&target);
    assert!(!choices.is_empty());
    assert!(
        choices.iter().all(|c| c.interval < ms(1_000)),
        "only sub-second intervals meet a 2 s RTO with a 1 s TTL: {choices:?}"
    );
    let two = choices
        .iter()
        .find(|c| c.interval == ms(200))
        .expect("200 ms is a choice");
    // 200 ms × fall 4 + 100 ms = 0.9 s detection; + 50 ms + 1 s TTL = 1.95 s.
    assert_eq!(two.fall, 4);
    assert_eq!(two.worst_cutover, ms(1_950));
    // The odds: (1 − p) × p^fall per probe, 157.68 M probes a year.
    let expected = 157_680_000.0 * (1.0 - 1e-4) * 1e-16;
    assert!(
        (two.false_failovers_per_year - expected).abs() < expected * 1e-6,
        "{}",
        two.false_failovers_per_year
    );
    // The writer's cutover with a synchronous standby as the proof: no TTL.
    assert_eq!(
        failover_core::objectives::database_cutover_synchronous(ms(400), ms(150)),
        ms(550)
    );
}

/// How long commits may wait for a synchronous standby that stalls while it
/// still answers: fall × interval of waiting, one interval to see it, two
/// steps (record, reconfigure).
#[test]
fn a_stalled_synchronous_standby_costs_fall_plus_one_intervals_and_two_steps() {
    let ms = Duration::from_millis;
    let mut policy = Policy {
        interval: ms(300),
        fall: 2,
        step_timeout: ms(2_000),
        ..Policy::default()
    };
    assert_eq!(objectives::synchronous_stall(&policy), ms(900 + 4_000));
    policy.fall = 3;
    assert_eq!(objectives::synchronous_stall(&policy), ms(1_200 + 4_000));
}

/// A planned switchover's bound carries the writer drain, and its
/// explanation names it.
#[test]
fn the_switchover_bound_adds_the_writer_drain_and_says_so() {
    use objectives::SwitchoverBound;
    let ms = Duration::from_millis;
    let none = SwitchoverBound::new(Duration::ZERO, ms(500), ms(200), ms(300));
    assert_eq!(none.total, secs(1));
    assert_eq!(none.writes_paused, secs(1));
    assert!(
        none.explanation().contains("no writer drain"),
        "{}",
        none.explanation()
    );
    let policy = Policy {
        writer_drain: ms(1_500),
        ..Policy::default()
    };
    let drained = SwitchoverBound::for_policy(&policy, ms(500), ms(200), ms(300));
    assert_eq!(drained.total, ms(2_500), "the drain is added to the bound");
    assert_eq!(
        drained.writes_paused,
        secs(1),
        "the drain pauses no write: the old writer runs until its fence"
    );
    let text = drained.explanation();
    assert!(text.starts_with("planned switchover ≤ 2500ms"), "{text}");
    assert!(
        text.contains("1500ms writer drain (policy.writer_drain"),
        "{text}"
    );
}
