//! The probe scheduler: every target on its own interval, phases spread
//! over the interval, bounded concurrency, no catch-up bursts.
//!
//! Each target gets a fixed slot grid `epoch + phase + k × interval`, where
//! `epoch` is the scheduler's start and `phase` a fraction of the interval
//! drawn from a low-discrepancy sequence (or seeded jitter). Because the grid
//! is anchored at one epoch, targets added at any time stay spread out among
//! the others. One task per target runs at most one probe at a time; when a
//! probe (or waiting for a concurrency permit, or a full result channel)
//! outlives its slot, the slots it overran are skipped and counted, never
//! run late in a burst.
//!
//! Metrics (through the `metrics` facade, recorded only if the application
//! installs a recorder):
//! - `failover_probe_schedule_lateness_seconds` (histogram): slot to probe start;
//! - `failover_probe_latency_seconds` (histogram): latency of successful probes;
//! - `failover_probe_results_total{outcome}` (counter): `ok`, `refused`,
//!   `connect_timeout`, `response_timeout`, `status`, `body_mismatch`, `tls`, …;
//! - `failover_probe_skipped_slots_total` (counter);
//! - `failover_probe_panics_total` (counter): checks that panicked (no result sent);
//! - `failover_probe_check_timeouts_total` (counter): checks cut off at
//!   [`ProbeTarget::timeout`] (reported as a response timeout);
//! - `failover_probe_targets` (gauge): targets running.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use failover_core::ports::Probe;
use failover_core::{ProbeFailure, ProbeOutcome, ProbeResult, RegionId, VantageId};
use futures::FutureExt;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Shortest interval a target may have; shorter ones are raised to it.
pub const MIN_INTERVAL: Duration = Duration::from_millis(1);

/// How target phases are placed within their interval.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum PhaseSpread {
    /// The k-th added target starts at fraction `van_der_corput(k)` of its
    /// interval (0, ½, ¼, ¾, ⅛, …): evenly spread for any number of targets,
    /// and still even as targets come and go. The default.
    #[default]
    Even,
    /// Uniformly random phases from a seeded generator (reproducible for a
    /// given seed and order of additions).
    Jitter {
        /// Seed of the phase generator.
        seed: u64,
    },
}

/// Scheduler-wide settings.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SchedulerConfig {
    /// Most probes running at once, over all targets. Default 256; values
    /// below 1 are raised to 1.
    pub max_concurrency: usize,
    /// Capacity of the result channel, in results. Default 1024. When the
    /// receiver falls behind, targets wait (and skip slots) rather than
    /// buffer without bound.
    pub channel_capacity: usize,
    /// How phases are spread. Default [`PhaseSpread::Even`].
    pub phase: PhaseSpread,
    /// Seed of the per-probe start jitter ([`ProbeTarget::jitter`]), so runs
    /// are reproducible. Default 0.
    pub jitter_seed: u64,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            max_concurrency: 256,
            channel_capacity: 1024,
            phase: PhaseSpread::Even,
            jitter_seed: 0,
        }
    }
}

/// One thing to probe: a probe, the region and vantage its results are for,
/// and how often to run it.
#[derive(Clone)]
pub struct ProbeTarget {
    /// Region the results are reported for.
    pub region: RegionId,
    /// Vantage the results are reported from.
    pub vantage: VantageId,
    /// Time between slots (at least [`MIN_INTERVAL`]).
    pub interval: Duration,
    /// Each probe starts a random `0..jitter` after its slot (the slot grid
    /// itself does not drift). Default zero; capped at half the interval
    /// so jitter alone never pushes a probe into the next slot.
    /// Matches `Policy::jitter`.
    pub jitter: Duration,
    /// Longest a check may run before the scheduler gives up on it and
    /// reports [`ProbeFailure::ResponseTimeout`]: a plug-in probe that hangs
    /// counts as a failure instead of stalling its target for ever. `None`
    /// (the default) trusts the probe's own timeouts. Matches `Policy::timeout`.
    pub timeout: Option<Duration>,
    /// The check to run.
    pub probe: Arc<dyn Probe>,
}

impl ProbeTarget {
    /// A target probing `region` from `vantage` every `interval`.
    pub fn new(
        region: RegionId,
        vantage: VantageId,
        interval: Duration,
        probe: Arc<dyn Probe>,
    ) -> ProbeTarget {
        ProbeTarget {
            region,
            vantage,
            interval,
            jitter: Duration::ZERO,
            timeout: None,
            probe,
        }
    }

    /// Fails a check that has not returned within `timeout`
    /// ([`ProbeFailure::ResponseTimeout`]).
    pub fn with_timeout(mut self, timeout: Duration) -> ProbeTarget {
        self.timeout = Some(timeout);
        self
    }

    /// Delays each probe by a random `0..jitter` after its slot.
    pub fn with_jitter(mut self, jitter: Duration) -> ProbeTarget {
        self.jitter = jitter;
        self
    }
}

impl std::fmt::Debug for ProbeTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProbeTarget")
            .field("region", &self.region)
            .field("vantage", &self.vantage)
            .field("interval", &self.interval)
            .field("jitter", &self.jitter)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Identifies a target within one scheduler, to remove it or read its stats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TargetId(pub u64);

/// Counters of one target, as of the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TargetStats {
    /// Probes completed (results sent or about to be).
    pub probes: u64,
    /// Slots skipped because the previous probe (or its wait) overran them.
    pub skipped_slots: u64,
    /// Largest delay between a slot and its probe starting.
    pub max_lateness: Duration,
}

/// Totals over all targets ever run by the scheduler, as of the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SchedulerStats {
    /// Targets running now.
    pub targets: usize,
    /// Probes completed.
    pub probes: u64,
    /// Slots skipped.
    pub skipped_slots: u64,
}

#[derive(Default)]
struct Counters {
    probes: AtomicU64,
    skipped: AtomicU64,
    max_lateness_ns: AtomicU64,
}

struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
    counters: Arc<Counters>,
}

/// What every target task shares. Holds no reference back to the scheduler,
/// so dropping the scheduler stops all tasks.
#[derive(Clone)]
struct TaskContext {
    permits: Arc<Semaphore>,
    results: mpsc::Sender<ProbeResult>,
    totals: Arc<Counters>,
}

/// Runs probe targets and sends their results on a bounded channel.
///
/// Create it with [`ProbeScheduler::start`] inside a tokio runtime; add and
/// remove targets at any time; call [`shutdown`](Self::shutdown) to stop
/// and await every task (dropping it also stops them, without waiting).
/// When every task has stopped and the scheduler is gone, the result
/// receiver sees the end of the channel.
pub struct ProbeScheduler {
    epoch: Instant,
    phase: PhaseSpread,
    jitter_seed: u64,
    context: TaskContext,
    targets: Mutex<HashMap<TargetId, Running>>,
    added: AtomicU64,
}

impl std::fmt::Debug for ProbeScheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProbeScheduler")
            .field("phase", &self.phase)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl ProbeScheduler {
    /// Starts an empty scheduler; returns it and the receiver of all results.
    pub fn start(config: SchedulerConfig) -> (ProbeScheduler, mpsc::Receiver<ProbeResult>) {
        let (tx, rx) = mpsc::channel(config.channel_capacity.max(1));
        let scheduler = ProbeScheduler {
            epoch: Instant::now(),
            phase: config.phase,
            jitter_seed: config.jitter_seed,
            context: TaskContext {
                permits: Arc::new(Semaphore::new(config.max_concurrency.max(1))),
                results: tx,
                totals: Arc::new(Counters::default()),
            },
            targets: Mutex::new(HashMap::new()),
            added: AtomicU64::new(0),
        };
        (scheduler, rx)
    }

    /// Starts running `target`; its first slot is at its phase within the
    /// current interval (at most one interval from now). Must be called
    /// inside a tokio runtime.
    pub fn add(&self, mut target: ProbeTarget) -> TargetId {
        target.interval = target.interval.max(MIN_INTERVAL);
        target.jitter = target.jitter.min(target.interval / 2);
        let k = self.added.fetch_add(1, Ordering::Relaxed);
        let id = TargetId(k);
        let fraction = match self.phase {
            PhaseSpread::Even => van_der_corput(k),
            PhaseSpread::Jitter { seed } => unit_from_bits(splitmix64(seed.wrapping_add(k))),
        };
        let first = self.first_slot(target.interval, fraction);
        let counters = Arc::new(Counters::default());
        let (stop, stopped) = oneshot::channel();
        tracing::debug!(target_id = k, region = %target.region, vantage = %target.vantage,
            interval_ms = target.interval.as_millis() as u64, phase = fraction, "probe target added");
        // Distinct, reproducible jitter stream per target.
        let jitter_state = splitmix64(self.jitter_seed ^ k.wrapping_mul(0xA076_1D64_78BD_642F));
        let task = tokio::spawn(run_target(
            target,
            first,
            jitter_state,
            self.context.clone(),
            Arc::clone(&counters),
            stopped,
        ));
        self.lock_targets().insert(
            id,
            Running {
                stop,
                task,
                counters,
            },
        );
        metrics::gauge!("failover_probe_targets").increment(1.0);
        id
    }

    /// Stops a target and waits for its task to end: after this returns, it
    /// sends no more results. Returns `false` if `id` was not running.
    pub async fn remove(&self, id: TargetId) -> bool {
        let running = self.lock_targets().remove(&id);
        match running {
            Some(running) => {
                stop_and_join(running).await;
                tracing::debug!(target_id = id.0, "probe target removed");
                true
            }
            None => false,
        }
    }

    /// Counters of one running target.
    pub fn target_stats(&self, id: TargetId) -> Option<TargetStats> {
        self.lock_targets()
            .get(&id)
            .map(|running| snapshot(&running.counters))
    }

    /// Totals over all targets.
    pub fn stats(&self) -> SchedulerStats {
        let totals = &self.context.totals;
        SchedulerStats {
            targets: self.lock_targets().len(),
            probes: totals.probes.load(Ordering::Relaxed),
            skipped_slots: totals.skipped.load(Ordering::Relaxed),
        }
    }

    /// Stops every target, waits for all tasks to end and closes the result
    /// channel (the receiver still gets results already sent).
    pub async fn shutdown(self) {
        let running: Vec<Running> = self.lock_targets().drain().map(|(_, r)| r).collect();
        let count = running.len();
        // Signal every target first, so none starts a new probe while
        // others are being joined.
        let mut tasks = Vec::with_capacity(count);
        for r in running {
            let _ = r.stop.send(());
            tasks.push(r.task);
        }
        for task in tasks {
            join(task).await;
        }
        tracing::debug!(targets = count, "probe scheduler shut down");
    }

    fn lock_targets(&self) -> std::sync::MutexGuard<'_, HashMap<TargetId, Running>> {
        self.targets.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The first slot `epoch + phase + k × interval` that is not in the past.
    fn first_slot(&self, interval: Duration, fraction: f64) -> Instant {
        let phase = interval.mul_f64(fraction.clamp(0.0, 1.0));
        let now = Instant::now();
        let mut slot = self.epoch + phase;
        if slot < now {
            let periods = (now - slot).as_nanos() / interval.as_nanos() + 1;
            slot += nanos(interval.as_nanos().saturating_mul(periods));
        }
        slot
    }
}

async fn stop_and_join(running: Running) {
    let _ = running.stop.send(());
    join(running.task).await;
}

async fn join(task: JoinHandle<()>) {
    if let Err(e) = task.await {
        if e.is_panic() {
            tracing::error!(error = %e, "probe target task panicked");
        }
    }
    metrics::gauge!("failover_probe_targets").decrement(1.0);
}

fn snapshot(c: &Counters) -> TargetStats {
    TargetStats {
        probes: c.probes.load(Ordering::Relaxed),
        skipped_slots: c.skipped.load(Ordering::Relaxed),
        max_lateness: Duration::from_nanos(c.max_lateness_ns.load(Ordering::Relaxed)),
    }
}

/// One target's life: wait for the slot, take a permit, probe, send, move
/// to the next slot that is still ahead.
async fn run_target(
    target: ProbeTarget,
    first: Instant,
    mut jitter_state: u64,
    ctx: TaskContext,
    counters: Arc<Counters>,
    stopped: oneshot::Receiver<()>,
) {
    let life = async {
        let interval = target.interval;
        let mut slot = first;
        loop {
            let start_at = if target.jitter.is_zero() {
                slot
            } else {
                jitter_state = splitmix64(jitter_state);
                slot + target.jitter.mul_f64(unit_from_bits(jitter_state))
            };
            tokio::time::sleep_until(start_at).await;
            let Ok(permit) = ctx.permits.acquire().await else {
                return;
            };
            let lateness = Instant::now().saturating_duration_since(start_at);
            metrics::histogram!("failover_probe_schedule_lateness_seconds")
                .record(lateness.as_secs_f64());
            let late_ns = u64::try_from(lateness.as_nanos()).unwrap_or(u64::MAX);
            counters
                .max_lateness_ns
                .fetch_max(late_ns, Ordering::Relaxed);

            // A panicking probe (any `Probe` may be plugged in) must not end
            // its target silently: log, count, skip this result, go on.
            let checked = check(&target).await;
            drop(permit);
            let Ok(outcome) = checked else {
                tracing::error!(region = %target.region, vantage = %target.vantage,
                    "probe panicked; no result for this slot");
                metrics::counter!("failover_probe_panics_total").increment(1);
                slot = next_slot(slot, interval, &counters, &ctx, &target);
                continue;
            };
            record_outcome(&outcome);
            counters.probes.fetch_add(1, Ordering::Relaxed);
            ctx.totals.probes.fetch_add(1, Ordering::Relaxed);
            let result = ProbeResult {
                region: target.region,
                vantage: target.vantage,
                at: Instant::now().into_std(),
                outcome,
            };
            if ctx.results.send(result).await.is_err() {
                tracing::debug!(region = %target.region, "result receiver gone; target stops");
                return;
            }

            slot = next_slot(slot, interval, &counters, &ctx, &target);
        }
    };
    // Stop on request or when the scheduler (holding the sender) is dropped.
    tokio::select! {
        _ = stopped => {}
        () = life => {}
    }
}

/// Runs one check under the target's timeout; `Err` if it panicked.
async fn check(target: &ProbeTarget) -> Result<ProbeOutcome, Box<dyn std::any::Any + Send>> {
    let checked = AssertUnwindSafe(target.probe.check()).catch_unwind();
    let Some(limit) = target.timeout else {
        return checked.await;
    };
    match tokio::time::timeout(limit, checked).await {
        Ok(outcome) => outcome,
        Err(_) => {
            tracing::warn!(region = %target.region, vantage = %target.vantage,
                timeout_ms = limit.as_millis() as u64,
                "probe did not return within its timeout; counted as a response timeout");
            metrics::counter!("failover_probe_check_timeouts_total").increment(1);
            Ok(ProbeOutcome::Failed(ProbeFailure::ResponseTimeout))
        }
    }
}

/// The first slot after `slot` that is still ahead; every slot already past
/// is skipped (and counted) instead of run late in a burst.
fn next_slot(
    slot: Instant,
    interval: Duration,
    counters: &Counters,
    ctx: &TaskContext,
    target: &ProbeTarget,
) -> Instant {
    let mut next = slot + interval;
    let now = Instant::now();
    if next < now {
        let missed = (now - next).as_nanos() / interval.as_nanos() + 1;
        next += nanos(interval.as_nanos().saturating_mul(missed));
        let missed = u64::try_from(missed).unwrap_or(u64::MAX);
        counters.skipped.fetch_add(missed, Ordering::Relaxed);
        ctx.totals.skipped.fetch_add(missed, Ordering::Relaxed);
        metrics::counter!("failover_probe_skipped_slots_total").increment(missed);
        tracing::debug!(region = %target.region, vantage = %target.vantage, missed,
            "probe overran its interval; slots skipped");
    }
    next
}

fn record_outcome(outcome: &ProbeOutcome) {
    let label = match outcome {
        ProbeOutcome::Ok { latency } => {
            metrics::histogram!("failover_probe_latency_seconds").record(latency.as_secs_f64());
            "ok"
        }
        ProbeOutcome::Failed(failure) => match failure {
            ProbeFailure::Refused => "refused",
            ProbeFailure::NameResolution => "name_resolution",
            ProbeFailure::ConnectTimeout => "connect_timeout",
            ProbeFailure::ResponseTimeout => "response_timeout",
            ProbeFailure::Status(_) => "status",
            ProbeFailure::BodyMismatch => "body_mismatch",
            ProbeFailure::Tls => "tls",
            ProbeFailure::Protocol => "protocol",
            ProbeFailure::Io => "io",
            _ => "other",
        },
    };
    metrics::counter!("failover_probe_results_total", "outcome" => label).increment(1);
}

fn nanos(n: u128) -> Duration {
    Duration::from_nanos(u64::try_from(n).unwrap_or(u64::MAX))
}

/// `k` with its bits mirrored after the binary point: 0, ½, ¼, ¾, ⅛, ⅝, …
fn van_der_corput(k: u64) -> f64 {
    unit_from_bits(k.reverse_bits())
}

/// Maps 64 random bits to `[0, 1)`.
fn unit_from_bits(bits: u64) -> f64 {
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// SplitMix64: a tiny, well-mixed generator; enough for phase jitter.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn even_phases_are_spread() {
        let mut phases: Vec<f64> = (0..200).map(van_der_corput).collect();
        phases.sort_by(f64::total_cmp);
        let max_gap = phases
            .windows(2)
            .map(|w| w[1] - w[0])
            .fold(1.0 - phases[199] + phases[0], f64::max);
        // 200 points: even spacing is 0.005; the sequence stays within 2×.
        assert!(max_gap <= 0.01, "max gap {max_gap}");
    }

    struct Hangs;

    #[async_trait::async_trait]
    impl Probe for Hangs {
        async fn check(&self) -> ProbeOutcome {
            std::future::pending().await
        }
    }

    #[tokio::test]
    async fn a_check_that_outlives_its_timeout_is_a_response_timeout() {
        let (scheduler, mut results) = ProbeScheduler::start(SchedulerConfig::default());
        let target = ProbeTarget::new(
            RegionId(0),
            VantageId(0),
            Duration::from_millis(50),
            Arc::new(Hangs),
        )
        .with_timeout(Duration::from_millis(20));
        scheduler.add(target);
        let result = tokio::time::timeout(Duration::from_secs(10), results.recv())
            .await
            .expect("a result despite the hung check")
            .expect("channel open");
        assert_eq!(
            result.outcome,
            ProbeOutcome::Failed(ProbeFailure::ResponseTimeout)
        );
        scheduler.shutdown().await;
    }

    #[test]
    fn jitter_is_seeded() {
        let a: Vec<u64> = (0..5).map(|k| splitmix64(7 + k)).collect();
        let b: Vec<u64> = (0..5).map(|k| splitmix64(7 + k)).collect();
        assert_eq!(a, b);
        assert!((0..1000)
            .map(|k| unit_from_bits(splitmix64(k)))
            .all(|f| (0.0..1.0).contains(&f)));
    }
}
