//! ProbeScheduler: its schedule on tokio's paused clock, and its life with
//! real HttpProbes against regional APIs on loopback.
//!
//! Two kinds of test, and no fixed sleep before an assertion in either:
//! - **Scheduling logic** (spacing, skipped slots, the concurrency bound,
//!   start jitter) runs on tokio's paused clock with a check that takes a
//!   set time on that clock. The test owns time, so the schedule it sees is
//!   exact and a loaded machine cannot move it. The scheduler cannot tell
//!   that check from a real one: it only sees the `Probe` trait and the clock.
//! - **Real I/O** (adding and removing targets, shutdown under hanging
//!   probes, a panicking plug-in) uses real HTTP probes of a real API on the
//!   wall clock, and waits for the event it needs with a generous bound.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use failover_core::ports::Probe;
use failover_core::{ProbeFailure, ProbeOutcome, ProbeResult, RegionId, VantageId};
use failover_probe::{
    HttpProbe, HttpProbeConfig, PhaseSpread, ProbeScheduler, ProbeTarget, SchedulerConfig,
};
use failover_testkit::http::{ApiMode, RegionalApi};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// Start times of checks, by target, on tokio's clock.
type Starts = Arc<Mutex<Vec<(usize, Instant)>>>;

/// A check that takes `latency` on tokio's clock and then reports `outcome`.
/// Under the paused clock this makes the probe's duration exact.
struct Takes {
    latency: Duration,
    outcome: ProbeOutcome,
}

#[async_trait]
impl Probe for Takes {
    async fn check(&self) -> ProbeOutcome {
        tokio::time::sleep(self.latency).await;
        self.outcome
    }
}

fn healthy_after(latency: Duration) -> Arc<dyn Probe> {
    Arc::new(Takes {
        latency,
        outcome: ProbeOutcome::Ok { latency },
    })
}

/// Wraps a probe and notes when each check started, to see the schedule
/// from the outside.
struct Timed {
    target: usize,
    inner: Arc<dyn Probe>,
    starts: Starts,
}

#[async_trait]
impl Probe for Timed {
    async fn check(&self) -> ProbeOutcome {
        self.starts
            .lock()
            .unwrap()
            .push((self.target, Instant::now()));
        self.inner.check().await
    }
}

/// Wraps a probe and tracks how many checks run at once.
struct Counted {
    inner: Arc<dyn Probe>,
    running: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
}

#[async_trait]
impl Probe for Counted {
    async fn check(&self) -> ProbeOutcome {
        let running = self.running.fetch_add(1, SeqCst) + 1;
        self.peak.fetch_max(running, SeqCst);
        let outcome = self.inner.check().await;
        self.running.fetch_sub(1, SeqCst);
        outcome
    }
}

fn http_probe(api: &RegionalApi, response_timeout: Duration) -> HttpProbe {
    let mut config = HttpProbeConfig::new("127.0.0.1", api.addr().port());
    config.response_timeout = response_timeout;
    HttpProbe::new(config).unwrap()
}

fn config(phase: PhaseSpread) -> SchedulerConfig {
    let mut config = SchedulerConfig::default();
    config.phase = phase;
    config.channel_capacity = 4096;
    config
}

/// Drains results for `time` on tokio's clock (used on the paused clock
/// only, where `time` is exact), returning them; the channel stays open.
async fn collect(rx: &mut mpsc::Receiver<ProbeResult>, time: Duration) -> Vec<ProbeResult> {
    let end = Instant::now() + time;
    let mut out = Vec::new();
    while let Ok(Some(r)) = tokio::time::timeout_at(end, rx.recv()).await {
        out.push(r);
    }
    out
}

/// Receives results until `done` holds for those received so far; panics
/// with `what` if that takes longer than `limit` (a generous bound for real
/// I/O on a loaded machine) or the channel closes.
async fn collect_until(
    rx: &mut mpsc::Receiver<ProbeResult>,
    limit: Duration,
    what: &str,
    done: impl Fn(&[ProbeResult]) -> bool,
) -> Vec<ProbeResult> {
    let deadline = Instant::now() + limit;
    let mut out = Vec::new();
    while !done(&out) {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(r)) => out.push(r),
            Ok(None) => panic!("result channel closed while waiting for {what}"),
            Err(_) => panic!("no {what} within {limit:?}; {} results: {out:?}", out.len()),
        }
    }
    out
}

fn count(results: &[ProbeResult], region: u32) -> usize {
    results
        .iter()
        .filter(|r| r.region == RegionId(region))
        .count()
}

// ---------------------------------------------------------------------------
// Scheduling logic, on the paused clock
// ---------------------------------------------------------------------------

/// 200 targets on one interval: every target keeps its own exact rhythm,
/// any interval-long window holds each target exactly once, and no slice of
/// the interval gets a burst.
async fn spacing_with_200_targets(phase: PhaseSpread, max_per_slice: u32, empty_slices: usize) {
    let (scheduler, mut rx) = ProbeScheduler::start(config(phase));
    let starts = Starts::default();
    let interval = Duration::from_millis(400);
    for target in 0..200 {
        let probe = Timed {
            target,
            inner: healthy_after(Duration::from_millis(5)),
            starts: Arc::clone(&starts),
        };
        scheduler.add(ProbeTarget::new(
            RegionId(target as u32 % 3),
            VantageId(0),
            interval,
            Arc::new(probe),
        ));
    }
    let t0 = Instant::now();
    let results = collect(&mut rx, Duration::from_millis(1300)).await;
    let stats = scheduler.stats();
    scheduler.shutdown().await;
    assert!(
        results.iter().all(|r| r.outcome.is_ok()),
        "a healthy check failed"
    );
    assert_eq!(stats.skipped_slots, 0, "5 ms checks never overrun 400 ms");

    let starts = starts.lock().unwrap().clone();
    for target in 0..200 {
        let mine: Vec<Instant> = starts
            .iter()
            .filter(|(t, _)| *t == target)
            .map(|(_, at)| *at)
            .collect();
        // Phases lie in [0, 400 ms): starts at phase, +400, +800, +1200.
        assert!(
            (3..=4).contains(&mine.len()),
            "target {target} started {} times in 1.3 s",
            mine.len()
        );
        assert!(mine[0] < t0 + interval, "target {target} started late");
        for pair in mine.windows(2) {
            assert_eq!(pair[1] - pair[0], interval, "target {target} drifted");
        }
    }

    // One full interval after start-up: each target exactly once.
    let from = t0 + interval;
    let to = from + interval;
    let window: Vec<&(usize, Instant)> = starts
        .iter()
        .filter(|(_, at)| *at >= from && *at < to)
        .collect();
    let mut seen: Vec<usize> = window.iter().map(|(t, _)| *t).collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..200).collect::<Vec<_>>(), "one start per target");
    // 20 slices of 20 ms: 10 starts each if perfectly even. A burst (all
    // targets together) would put 200 in one slice.
    let mut slices = [0u32; 20];
    for (_, at) in &window {
        let i = ((*at - from).as_millis() / 20) as usize;
        slices[i.min(19)] += 1;
    }
    let max = slices.iter().max().copied().unwrap_or(0);
    assert!(max <= max_per_slice, "starts per 20 ms slice: {slices:?}");
    assert!(
        slices.iter().filter(|&&n| n == 0).count() <= empty_slices,
        "the interval is not covered: {slices:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn even_phases_spread_200_targets() {
    // The van der Corput phases: within twice the even share everywhere.
    spacing_with_200_targets(PhaseSpread::Even, 20, 0).await;
}

#[tokio::test(start_paused = true)]
async fn jittered_phases_spread_200_targets() {
    // Seeded uniform phases: lumpier than even ones, but no burst.
    spacing_with_200_targets(PhaseSpread::Jitter { seed: 42 }, 30, 2).await;
}

#[tokio::test(start_paused = true)]
async fn probe_slower_than_interval_skips_slots_without_bursting() {
    let (scheduler, mut rx) = ProbeScheduler::start(config(PhaseSpread::Even));
    let starts = Starts::default();
    // Each check takes 250 ms; the interval is 100 ms.
    let probe = Timed {
        target: 0,
        inner: Arc::new(Takes {
            latency: Duration::from_millis(250),
            outcome: ProbeOutcome::Failed(ProbeFailure::ResponseTimeout),
        }),
        starts: Arc::clone(&starts),
    };
    let id = scheduler.add(ProbeTarget::new(
        RegionId(0),
        VantageId(0),
        Duration::from_millis(100),
        Arc::new(probe),
    ));
    let t0 = Instant::now();
    let results = collect(&mut rx, Duration::from_millis(1400)).await;
    let stats = scheduler.target_stats(id).unwrap();
    let totals = scheduler.stats();
    scheduler.shutdown().await;

    // Checks at 0, 300, 600, 900 ms have finished; the one at 1200 runs.
    assert_eq!(results.len(), 4, "{results:?}");
    assert!(results.iter().all(|r| !r.outcome.is_ok()));
    assert_eq!(stats.probes, 4, "{stats:?}");
    // Every check overran two slots (at +100 and +200 ms): skipped, not run late.
    assert_eq!(stats.skipped_slots, 2 * stats.probes, "{stats:?}");
    assert_eq!(totals.skipped_slots, stats.skipped_slots);
    let starts: Vec<Duration> = starts
        .lock()
        .unwrap()
        .iter()
        .map(|(_, t)| *t - t0)
        .collect();
    let grid: Vec<Duration> = (0..5).map(|k| Duration::from_millis(300 * k)).collect();
    assert_eq!(
        starts, grid,
        "each check starts on the first slot after the last one ended"
    );
}

#[tokio::test(start_paused = true)]
async fn concurrency_is_bounded() {
    let mut config = config(PhaseSpread::Even);
    config.max_concurrency = 3;
    let (scheduler, mut rx) = ProbeScheduler::start(config);
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    for region in 0..12 {
        let probe = Counted {
            inner: healthy_after(Duration::from_millis(150)),
            running: Arc::clone(&running),
            peak: Arc::clone(&peak),
        };
        scheduler.add(ProbeTarget::new(
            RegionId(region),
            VantageId(0),
            Duration::from_millis(50),
            Arc::new(probe),
        ));
    }
    let results = collect(&mut rx, Duration::from_millis(800)).await;
    let stats = scheduler.stats();
    // Read before shutdown: cancelled checks never count themselves out.
    let peak = peak.load(SeqCst);
    scheduler.shutdown().await;
    assert_eq!(peak, 3, "at most 3 at once, and the limit was reached");
    // 3 permits × 150 ms each over 800 ms: 5 full rounds of 3, far fewer
    // than 12 targets × 16 slots.
    assert_eq!(results.len(), 15, "{results:?}");
    assert!(stats.skipped_slots > 0, "waiting for a permit skips slots");
}

#[tokio::test(start_paused = true)]
async fn start_jitter_varies_starts_but_keeps_the_rhythm() {
    let (scheduler, mut rx) = ProbeScheduler::start(config(PhaseSpread::Even));
    let starts = Starts::default();
    let interval = Duration::from_millis(100);
    let jitter = Duration::from_millis(40);
    let probe = Timed {
        target: 0,
        inner: healthy_after(Duration::from_millis(1)),
        starts: Arc::clone(&starts),
    };
    let id = scheduler.add(
        ProbeTarget::new(RegionId(0), VantageId(0), interval, Arc::new(probe)).with_jitter(jitter),
    );
    let t0 = Instant::now();
    let _ = collect(&mut rx, Duration::from_millis(1250)).await;
    let stats = scheduler.target_stats(id).unwrap();
    scheduler.shutdown().await;
    let starts: Vec<Duration> = starts
        .lock()
        .unwrap()
        .iter()
        .map(|(_, t)| *t - t0)
        .collect();
    // The grid does not drift: the k-th start lies in [k × 100, k × 100 + 40) ms.
    assert_eq!(starts.len(), 13, "slots 0, 100, … 1200 ms: {starts:?}");
    for (k, start) in starts.iter().enumerate() {
        let slot = interval * k as u32;
        assert!(
            *start >= slot && *start < slot + jitter,
            "start {k} at {start:?}, off its slot {slot:?} by more than the jitter"
        );
    }
    assert_eq!(stats.skipped_slots, 0);
    // …and the starts are not all on their slots.
    let gaps: Vec<Duration> = starts.windows(2).map(|p| p[1] - p[0]).collect();
    let off = gaps
        .iter()
        .filter(|g| g.abs_diff(interval) > Duration::from_millis(8))
        .count();
    assert!(off >= 3, "no visible jitter: {gaps:?}");
}

// ---------------------------------------------------------------------------
// Real HTTP probes on the wall clock: wait for events, never for a window
// ---------------------------------------------------------------------------

/// Bound on waits for real probes; they take milliseconds when all is well.
const PATIENCE: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targets_can_be_added_and_removed_while_running() {
    let api = RegionalApi::start_http().unwrap();
    let (scheduler, mut rx) = ProbeScheduler::start(config(PhaseSpread::Even));
    let interval = Duration::from_millis(40);
    let add = |region: u32| {
        scheduler.add(ProbeTarget::new(
            RegionId(region),
            VantageId(1),
            interval,
            Arc::new(http_probe(&api, Duration::from_secs(5))),
        ))
    };
    let a = add(0);
    let _b = add(1);
    collect_until(&mut rx, PATIENCE, "3 results of each target", |seen| {
        count(seen, 0) >= 3 && count(seen, 1) >= 3
    })
    .await;

    assert!(scheduler.remove(a).await);
    assert!(!scheduler.remove(a).await, "removing twice");
    assert!(scheduler.target_stats(a).is_none());
    // `remove` returned after the task ended: whatever it sent is queued now.
    while rx.try_recv().is_ok() {}
    let _c = add(2);
    // Nothing from region 0 while the new target runs 5 times: that spans
    // at least 4 of the removed target's 40 ms intervals, however slow the
    // machine is.
    let seen = collect_until(&mut rx, PATIENCE, "5 results of the new target", |seen| {
        count(seen, 2) >= 5
    })
    .await;
    assert_eq!(count(&seen, 0), 0, "removed target kept probing");
    assert!(seen.iter().all(|r| r.vantage == VantageId(1)));
    assert!(seen.iter().all(|r| r.outcome.is_ok()), "{seen:?}");
    assert_eq!(scheduler.stats().targets, 2);
    scheduler.shutdown().await;
}

/// Wraps a probe and counts checks that have started (and not returned).
struct InFlight {
    inner: HttpProbe,
    started: watch::Sender<usize>,
}

#[async_trait]
impl Probe for InFlight {
    async fn check(&self) -> ProbeOutcome {
        self.started.send_modify(|n| *n += 1);
        let outcome = self.inner.check().await;
        self.started.send_modify(|n| *n -= 1);
        outcome
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_cancels_in_flight_probes_and_closes_the_channel() {
    let hanging = RegionalApi::start_http().unwrap();
    hanging.set_mode(ApiMode::Hang);
    let healthy = RegionalApi::start_http().unwrap();
    let (scheduler, mut rx) = ProbeScheduler::start(config(PhaseSpread::Even));
    let (started, mut in_flight) = watch::channel(0usize);
    for region in 0..20 {
        let api = if region % 2 == 0 { &hanging } else { &healthy };
        scheduler.add(ProbeTarget::new(
            RegionId(region),
            VantageId(0),
            Duration::from_millis(20),
            // Far longer than the test: only shutdown can end the hanging ones.
            Arc::new(InFlight {
                inner: http_probe(api, Duration::from_secs(600)),
                started: started.clone(),
            }),
        ));
    }
    // Every hanging target is inside a check, and the healthy ones report.
    tokio::time::timeout(PATIENCE, in_flight.wait_for(|n| *n >= 10))
        .await
        .expect("the 10 hanging checks started")
        .expect("probes alive");
    collect_until(&mut rx, PATIENCE, "a healthy result", |seen| {
        seen.iter().any(|r| r.outcome.is_ok())
    })
    .await;
    tokio::time::timeout(PATIENCE, scheduler.shutdown())
        .await
        .expect("shutdown waited for hanging probes (600 s timeouts)");
    // Every sender is gone: the receiver drains what was sent, then ends.
    let drained = tokio::time::timeout(PATIENCE, async {
        let mut n = 0;
        while rx.recv().await.is_some() {
            n += 1;
        }
        n
    })
    .await
    .expect("result channel stayed open after shutdown");
    assert!(drained <= 4096, "at most a channel's worth was queued");
}

/// A plug-in probe with a bug: panics on every other check.
struct Buggy {
    calls: std::sync::atomic::AtomicU32,
    inner: HttpProbe,
}

#[async_trait]
impl Probe for Buggy {
    async fn check(&self) -> ProbeOutcome {
        let n = self.calls.fetch_add(1, SeqCst);
        assert!(n % 2 == 0, "deliberate bug in a plug-in probe (call {n})");
        self.inner.check().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_probe_does_not_end_its_target() {
    let api = RegionalApi::start_http().unwrap();
    let (scheduler, mut rx) = ProbeScheduler::start(config(PhaseSpread::Even));
    let buggy = Arc::new(Buggy {
        calls: std::sync::atomic::AtomicU32::new(0),
        inner: http_probe(&api, Duration::from_secs(1)),
    });
    scheduler.add(ProbeTarget::new(
        RegionId(0),
        VantageId(0),
        Duration::from_millis(30),
        Arc::clone(&buggy) as Arc<dyn Probe>,
    ));
    // Wait for the checks themselves, not for a fixed window: each
    // deliberate panic runs the panic hook (a symbolized backtrace when
    // RUST_BACKTRACE is set), which on a loaded machine can take longer than
    // many 30 ms intervals. A target that ends after a panic never gets here.
    let calls = || buggy.calls.load(SeqCst);
    let results = collect_until(&mut rx, PATIENCE, "3 results after 3 panics", |seen| {
        seen.len() >= 3 && calls() >= 6
    })
    .await;
    scheduler.shutdown().await;
    assert!(results.iter().all(|r| r.outcome.is_ok()), "{results:?}");
}
