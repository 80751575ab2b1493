//! ProbeScheduler driving real HttpProbes against regional APIs on loopback.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use failover_core::ports::Probe;
use failover_core::{ProbeOutcome, ProbeResult, RegionId, VantageId};
use failover_probe::{
    HttpProbe, HttpProbeConfig, PhaseSpread, ProbeScheduler, ProbeTarget, SchedulerConfig,
};
use failover_testkit::http::{ApiMode, RegionalApi};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// A real HTTP probe that also notes when each check started, to see the
/// schedule from the outside.
struct Timed {
    target: usize,
    inner: HttpProbe,
    starts: Arc<Mutex<Vec<(usize, Instant)>>>,
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

/// Drains results for `time`, returning them (the channel stays open).
async fn collect(rx: &mut mpsc::Receiver<ProbeResult>, time: Duration) -> Vec<ProbeResult> {
    let end = Instant::now() + time;
    let mut out = Vec::new();
    while let Ok(Some(r)) = tokio::time::timeout_at(end, rx.recv()).await {
        out.push(r);
    }
    out
}

/// 200 targets on one interval: in any interval-long window every target
/// fires about once, and no slice of the interval gets a burst.
async fn spacing_with_200_targets(phase: PhaseSpread) {
    let api = RegionalApi::start_http().unwrap();
    let (scheduler, mut rx) = ProbeScheduler::start(config(phase));
    let starts = Arc::new(Mutex::new(Vec::new()));
    let interval = Duration::from_millis(400);
    for target in 0..200 {
        let probe = Timed {
            target,
            inner: http_probe(&api, Duration::from_secs(2)),
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
    scheduler.shutdown().await;
    assert!(
        results.iter().all(|r| r.outcome.is_ok()),
        "a probe of a healthy API failed"
    );

    // Look at one full interval well after start-up.
    let from = t0 + interval;
    let to = from + interval;
    let starts = starts.lock().unwrap().clone();
    let window: Vec<&(usize, Instant)> = starts
        .iter()
        .filter(|(_, at)| *at >= from && *at < to)
        .collect();
    // Each target keeps its own rhythm: one start per interval.
    for target in 0..200 {
        let mine: Vec<Instant> = starts
            .iter()
            .filter(|(t, _)| *t == target)
            .map(|(_, at)| *at)
            .collect();
        assert!(
            mine.len() >= 2,
            "target {target} started {} times",
            mine.len()
        );
        for pair in mine.windows(2) {
            let gap = pair[1] - pair[0];
            assert!(
                gap >= interval / 2 && gap <= interval * 3 / 2,
                "target {target}: gap {gap:?} on a {interval:?} interval"
            );
        }
    }
    // 20 slices of 20 ms: 10 starts each if perfectly even. A burst (all
    // targets together) would put ~200 in one slice.
    let mut slices = [0u32; 20];
    for (_, at) in &window {
        let i = ((*at - from).as_millis() / 20) as usize;
        slices[i.min(19)] += 1;
    }
    let max = slices.iter().max().copied().unwrap_or(0);
    assert!(max <= 30, "starts per 20 ms slice: {slices:?}");
    assert!(
        slices.iter().filter(|&&n| n == 0).count() <= 2,
        "the interval is not covered: {slices:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn even_phases_spread_200_targets() {
    spacing_with_200_targets(PhaseSpread::Even).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jittered_phases_spread_200_targets() {
    spacing_with_200_targets(PhaseSpread::Jitter { seed: 42 }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_slower_than_interval_skips_slots_without_bursting() {
    let api = RegionalApi::start_http().unwrap();
    api.set_mode(ApiMode::Hang);
    let (scheduler, mut rx) = ProbeScheduler::start(config(PhaseSpread::Even));
    let starts = Arc::new(Mutex::new(Vec::new()));
    // Each probe takes its 250 ms response timeout; the interval is 100 ms.
    let probe = Timed {
        target: 0,
        inner: http_probe(&api, Duration::from_millis(250)),
        starts: Arc::clone(&starts),
    };
    let id = scheduler.add(ProbeTarget::new(
        RegionId(0),
        VantageId(0),
        Duration::from_millis(100),
        Arc::new(probe),
    ));
    let results = collect(&mut rx, Duration::from_millis(1400)).await;
    let stats = scheduler.target_stats(id).unwrap();
    let totals = scheduler.stats();
    scheduler.shutdown().await;

    assert!(results.len() >= 3, "{} results", results.len());
    assert!(results.iter().all(|r| !r.outcome.is_ok()));
    // Every probe overran two slots (at +100 and +200 ms), skipped, not run late.
    assert!(stats.skipped_slots >= 2 * (stats.probes - 1), "{stats:?}");
    assert_eq!(totals.skipped_slots, stats.skipped_slots);
    let starts: Vec<Instant> = starts.lock().unwrap().iter().map(|(_, t)| *t).collect();
    for pair in starts.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= Duration::from_millis(250),
            "a late slot ran in a burst: gap {gap:?}"
        );
    }
}

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
            Arc::new(http_probe(&api, Duration::from_secs(1))),
        ))
    };
    let a = add(0);
    let _b = add(1);
    let seen = collect(&mut rx, Duration::from_millis(300)).await;
    assert!(seen.iter().any(|r| r.region == RegionId(0)));
    assert!(seen.iter().any(|r| r.region == RegionId(1)));

    assert!(scheduler.remove(a).await);
    assert!(!scheduler.remove(a).await, "removing twice");
    assert!(scheduler.target_stats(a).is_none());
    // `remove` returned after the task ended: whatever it sent is queued now.
    while rx.try_recv().is_ok() {}
    let _c = add(2);
    let seen = collect(&mut rx, Duration::from_millis(300)).await;
    let late = seen.iter().filter(|r| r.region == RegionId(0)).count();
    assert_eq!(late, 0, "removed target kept probing");
    assert!(
        seen.iter().any(|r| r.region == RegionId(2)),
        "added target never ran"
    );
    assert!(seen.iter().all(|r| r.vantage == VantageId(1)));
    assert_eq!(scheduler.stats().targets, 2);
    scheduler.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_cancels_in_flight_probes_and_closes_the_channel() {
    let hanging = RegionalApi::start_http().unwrap();
    hanging.set_mode(ApiMode::Hang);
    let healthy = RegionalApi::start_http().unwrap();
    let (scheduler, mut rx) = ProbeScheduler::start(config(PhaseSpread::Even));
    for region in 0..20 {
        let api = if region % 2 == 0 { &hanging } else { &healthy };
        scheduler.add(ProbeTarget::new(
            RegionId(region),
            VantageId(0),
            Duration::from_millis(20),
            // Far longer than the test: only shutdown can end these probes.
            Arc::new(http_probe(api, Duration::from_secs(30))),
        ));
    }
    let seen = collect(&mut rx, Duration::from_millis(200)).await;
    assert!(!seen.is_empty());
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), scheduler.shutdown())
        .await
        .expect("shutdown waited for hanging probes");
    assert!(started.elapsed() < Duration::from_secs(5));
    // Every sender is gone: the receiver drains what was sent, then ends.
    let drained = tokio::time::timeout(Duration::from_secs(5), async {
        let mut n = 0;
        while rx.recv().await.is_some() {
            n += 1;
        }
        n
    })
    .await
    .expect("result channel stayed open after shutdown");
    assert!(drained < 10_000);
}

/// A real HTTP probe that tracks how many checks run at once.
struct Counted {
    inner: HttpProbe,
    now: Arc<std::sync::atomic::AtomicUsize>,
    peak: Arc<std::sync::atomic::AtomicUsize>,
}

#[async_trait]
impl Probe for Counted {
    async fn check(&self) -> ProbeOutcome {
        use std::sync::atomic::Ordering::SeqCst;
        let running = self.now.fetch_add(1, SeqCst) + 1;
        self.peak.fetch_max(running, SeqCst);
        let outcome = self.inner.check().await;
        self.now.fetch_sub(1, SeqCst);
        outcome
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_is_bounded() {
    let api = RegionalApi::start_http().unwrap();
    api.set_mode(ApiMode::Hang);
    let mut config = config(PhaseSpread::Even);
    config.max_concurrency = 3;
    let (scheduler, mut rx) = ProbeScheduler::start(config);
    let now = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let peak = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for region in 0..12 {
        let probe = Counted {
            inner: http_probe(&api, Duration::from_millis(150)),
            now: Arc::clone(&now),
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
    let peak = peak.load(std::sync::atomic::Ordering::SeqCst);
    scheduler.shutdown().await;
    assert_eq!(peak, 3, "at most 3 at once, and the limit was reached");
    // 3 slots × ~150 ms each over ~800 ms: far fewer than 12 targets × 16 slots.
    assert!(
        results.len() <= 3 * 800 / 150 + 3,
        "{} results",
        results.len()
    );
    assert!(stats.skipped_slots > 0, "waiting for a permit skips slots");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_jitter_varies_starts_but_keeps_the_rhythm() {
    let api = RegionalApi::start_http().unwrap();
    let (scheduler, mut rx) = ProbeScheduler::start(config(PhaseSpread::Even));
    let starts = Arc::new(Mutex::new(Vec::new()));
    let interval = Duration::from_millis(100);
    let probe = Timed {
        target: 0,
        inner: http_probe(&api, Duration::from_secs(1)),
        starts: Arc::clone(&starts),
    };
    let id = scheduler.add(
        ProbeTarget::new(RegionId(0), VantageId(0), interval, Arc::new(probe))
            .with_jitter(Duration::from_millis(40)),
    );
    let _ = collect(&mut rx, Duration::from_millis(1250)).await;
    let stats = scheduler.target_stats(id).unwrap();
    scheduler.shutdown().await;
    let starts: Vec<Instant> = starts.lock().unwrap().iter().map(|(_, t)| *t).collect();
    // The grid does not drift: one start per interval.
    assert!((9..=14).contains(&starts.len()), "{} starts", starts.len());
    assert_eq!(stats.skipped_slots, 0);
    let gaps: Vec<Duration> = starts.windows(2).map(|p| p[1] - p[0]).collect();
    // Jitter 0..40 ms: gaps lie within 100 ± 40 ms (plus scheduling slack)…
    assert!(
        gaps.iter()
            .all(|g| *g >= Duration::from_millis(30) && *g <= Duration::from_millis(200)),
        "{gaps:?}"
    );
    // …and are not all equal to the interval.
    let off = gaps
        .iter()
        .filter(|g| g.abs_diff(interval) > Duration::from_millis(8))
        .count();
    assert!(off >= 3, "no visible jitter: {gaps:?}");
}

/// A plug-in probe with a bug: panics on every other check.
struct Buggy {
    calls: std::sync::atomic::AtomicU32,
    inner: HttpProbe,
}

#[async_trait]
impl Probe for Buggy {
    async fn check(&self) -> ProbeOutcome {
        let n = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
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
    let calls = || buggy.calls.load(std::sync::atomic::Ordering::SeqCst);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut results = Vec::new();
    while results.len() < 3 || calls() < 6 {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(result)) => results.push(result),
            _ => break,
        }
    }
    scheduler.shutdown().await;
    let calls = calls();
    assert!(calls >= 6, "target stopped after the panic: {calls} calls");
    assert!(results.len() >= 3 && results.iter().all(|r| r.outcome.is_ok()));
}
