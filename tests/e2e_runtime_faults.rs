//! End to end: the runtime survives plug-ins that hang or panic, spreads
//! probe rounds by the policy's jitter, and handles operator commands ahead
//! of queued probe results. Real HTTP APIs, real embedded DNS read with `dig`.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use common::*;
use failover::decision::ports::{PortError, Probe, TrafficRouter};
use failover::decision::{
    Command, Health, ProbeOutcome, ProbeResult, RegionWeight, VantageId, WeightPlan,
};
use failover::dns::{EmbeddedConfig, EmbeddedDns, EmbeddedRouter, Selection};
use failover::probe::HttpProbe;
use failover::RuntimeBuilder;
use futures::FutureExt;

/// A user's own probe: the real HTTP probe, which hangs for ever once told to
/// (as a plug-in with a forgotten timeout does), and which notes when each
/// check starts.
struct PlugInProbe {
    http: Arc<HttpProbe>,
    hang: AtomicBool,
    starts: Mutex<Vec<Instant>>,
}

impl PlugInProbe {
    fn new(http: Arc<HttpProbe>) -> Arc<PlugInProbe> {
        Arc::new(PlugInProbe {
            http,
            hang: AtomicBool::new(false),
            starts: Mutex::new(Vec::new()),
        })
    }

    fn starts(&self) -> Vec<Instant> {
        self.starts.lock().expect("starts lock").clone()
    }
}

#[async_trait]
impl Probe for PlugInProbe {
    async fn check(&self) -> ProbeOutcome {
        self.starts
            .lock()
            .expect("starts lock")
            .push(Instant::now());
        if self.hang.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        self.http.check().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_plug_in_probe_counts_as_a_failure_and_its_region_goes_down() {
    let policy = fast_policy();
    let regions = TwoRegions::start();
    let east = PlugInProbe::new(http_probe(&regions.east, &policy));
    let runtime = RuntimeBuilder::new(config(topology(), policy.clone()))
        .probe(EAST, VantageId(0), east.clone())
        .probe(WEST, VantageId(0), http_probe(&regions.west, &policy))
        .start()
        .await
        .expect("runtime starts");
    let handle = runtime.handle();
    wait_status(&handle, Duration::from_secs(15), "us-east up", |s| {
        s.controller.regions[EAST.index()].health == Health::Up
    })
    .await;

    east.hang.store(true, Ordering::SeqCst);
    // fall 3 × interval 300 ms + timeout 150 ms ≈ 1.05 s; generous bound.
    wait_status(&handle, Duration::from_secs(10), "us-east down", |s| {
        s.controller.regions[EAST.index()].health == Health::Down
    })
    .await;
    let events = handle.status().recent_events;
    assert!(
        events
            .iter()
            .any(|e| e.contains("us-east") && e.contains("timeout")),
        "the down event says the probe timed out: {events:#?}"
    );
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_rounds_start_within_the_policys_jitter_and_never_burst() {
    let mut policy = fast_policy();
    policy.interval = Duration::from_millis(400);
    policy.jitter = Duration::from_millis(150);
    let regions = TwoRegions::start();
    let east = PlugInProbe::new(http_probe(&regions.east, &policy));
    let runtime = RuntimeBuilder::new(config(topology(), policy.clone()))
        .probe(EAST, VantageId(0), east.clone())
        .probe(WEST, VantageId(0), http_probe(&regions.west, &policy))
        .start()
        .await
        .expect("runtime starts");
    let deadline = Instant::now() + Duration::from_secs(30);
    while east.starts().len() < 14 {
        assert!(Instant::now() < deadline, "14 probe rounds within 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    runtime.shutdown().await;

    let starts = east.starts();
    let interval = policy.interval.as_secs_f64();
    // Start k is at slot k plus its jitter: its offset from the grid through
    // the first start is jitter_k - jitter_0, within ±150 ms (< interval / 2,
    // so the slot number is unambiguous).
    let offsets: Vec<f64> = starts
        .iter()
        .map(|t| {
            let since = t.duration_since(starts[0]).as_secs_f64();
            since - (since / interval).round() * interval
        })
        .collect();
    let spread = offsets.iter().copied().fold(f64::MIN, f64::max)
        - offsets.iter().copied().fold(f64::MAX, f64::min);
    assert!(
        spread >= 0.05,
        "start offsets spread over {:.0} ms; with 150 ms of jitter 14 rounds spread \
         over more than 50 ms (offsets {offsets:?})",
        spread * 1e3
    );
    // No catch-up bursts: consecutive rounds are at least interval - jitter apart.
    let closest = starts
        .windows(2)
        .map(|w| w[1].duration_since(w[0]))
        .min()
        .expect("several starts");
    assert!(
        closest >= policy.interval - policy.jitter - Duration::from_millis(30),
        "two rounds {closest:?} apart"
    );
}

/// A user's own router around the real embedded one, with a bug: it panics
/// on its first plan after `panic_once` is set.
struct BuggyRouter {
    inner: EmbeddedRouter,
    panic_once: AtomicBool,
}

#[async_trait]
impl TrafficRouter for BuggyRouter {
    async fn apply(&self, plan: &WeightPlan) -> Result<(), PortError> {
        if self.panic_once.swap(false, Ordering::SeqCst) {
            let weights: Vec<u32> = plan.weights.iter().map(|w| w.weight).collect();
            panic!("plug-in router bug on weights {weights:?}");
        }
        self.inner.apply(plan).await
    }

    async fn read_back(&self) -> Result<Vec<RegionWeight>, PortError> {
        self.inner.read_back().await
    }
}

async fn embedded_dns(policy: &failover::decision::Policy) -> EmbeddedDns {
    let mut dns = EmbeddedConfig::new(ZONE);
    dns.selection = Selection::AllServing;
    EmbeddedDns::bind(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        &topology(),
        policy,
        dns,
    )
    .await
    .expect("embedded DNS binds on loopback")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_router_fails_one_action_and_the_next_plan_still_lands() {
    let policy = fast_policy();
    let regions = TwoRegions::start();
    let dns = embedded_dns(&policy).await;
    let router = Arc::new(BuggyRouter {
        inner: dns.router(),
        panic_once: AtomicBool::new(false),
    });
    let dir = tempfile::tempdir().expect("temp dir");
    let audit = dir.path().join("audit.jsonl");
    let runtime = regions
        .run(
            RuntimeBuilder::new(config(topology(), policy.clone()))
                .router(router.clone())
                .audit_log(&audit),
        )
        .await;
    let handle = runtime.handle();
    wait_answer(dns.local_addr(), EAST_IP, Duration::from_secs(5)).await;

    router.panic_once.store(true, Ordering::SeqCst);
    regions.east.stop().await;
    // The first plan draining us-east panics in the router; the controller
    // re-issues it after its backoff, and the worker is still there to apply it.
    wait_answer(dns.local_addr(), WEST_IP, Duration::from_secs(15)).await;
    handle.health().expect("no task of the runtime died");
    let status = handle.status();
    assert!(
        status
            .recent_events
            .iter()
            .any(|e| e.contains("router.apply panicked") && e.contains("plug-in router bug")),
        "the panic is reported as a failed action: {:#?}",
        status.recent_events
    );
    runtime.shutdown().await;
    let log = std::fs::read_to_string(&audit).expect("audit log");
    assert!(
        log.lines()
            .any(|l| l.contains("\"action_failed\"") && l.contains("panicked")),
        "the audit log has the failed action: {log}"
    );
    dns.shutdown().await;
}

/// Fills the input channel with probe results without letting the driver
/// run (this test runs on one thread and does not await while filling),
/// then sends a command: it must be handled before the queued results.
#[tokio::test]
async fn an_operator_command_is_handled_before_a_full_queue_of_probe_results() {
    const CAPACITY: usize = 1000;
    let policy = fast_policy();
    let runtime = RuntimeBuilder::new(config(topology(), policy))
        .input_capacity(CAPACITY)
        .start()
        .await
        .expect("runtime starts");
    let handle = runtime.handle();
    let ok = |region| ProbeResult {
        region,
        vantage: VantageId(0),
        at: Instant::now(),
        outcome: ProbeOutcome::Ok {
            latency: Duration::from_millis(1),
        },
    };
    let mut sent = 0u64;
    for _ in 0..3 {
        for region in [EAST, WEST] {
            handle.report_probe(ok(region)).await.expect("running");
            sent += 1;
        }
    }
    wait_status(&handle, Duration::from_secs(10), "both regions up", |s| {
        s.controller.regions.iter().all(|r| r.health == Health::Up)
    })
    .await;

    // Fill the queue to the brim; no await, so the driver cannot drain it.
    while tokio::task::unconstrained(handle.report_probe(ok(EAST)))
        .now_or_never()
        .is_some()
    {
        sent += 1;
    }
    handle
        .command(Command::Drain(WEST))
        .await
        .expect("command accepted");
    let drained = wait_status(&handle, Duration::from_secs(10), "us-west drained", |s| {
        s.controller.regions[WEST.index()].drained
    })
    .await;
    let queued_ahead = sent - drained.probe_results_handled;
    assert!(
        queued_ahead >= CAPACITY as u64 / 2,
        "the drain was handled after {} of {sent} probe results: only {queued_ahead} \
         were still queued, so the command waited behind the queue",
        drained.probe_results_handled
    );
    runtime.shutdown().await;
}
