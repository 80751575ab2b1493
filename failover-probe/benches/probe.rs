//! Probe throughput, scheduling lateness and memory per target.
//!
//! `cargo bench -p failover-probe --bench probe -- --measurement-time 3`
//!
//! 1. criterion: HttpProbe checks per second over fresh connections against
//!    a local regional API, beside a bare connect + GET + read + close loop
//!    doing the same exchange by hand, both at 1 and 16 in flight; and an
//!    HTTPS probe (fresh TLS handshake each) at 16 in flight.
//! 2. printed: scheduling lateness percentiles for 1,000 targets on a 1 s
//!    interval (from the scheduler's own lateness histogram, captured by a
//!    small `metrics` recorder).
//! 3. printed: heap bytes per target, from a counting global allocator.
//!
//! 2 and 3 run only under `cargo bench` (not `cargo test --benches`); to run
//! only them, give a filter that matches no criterion benchmark:
//! `cargo bench -p failover-probe --bench probe -- lateness`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use failover_core::ports::Probe;
use failover_core::{RegionId, VantageId};
use failover_probe::{
    HttpProbe, HttpProbeConfig, ProbeScheduler, ProbeTarget, SchedulerConfig, TlsSettings,
};
use failover_testkit::http::RegionalApi;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;

// ---------------------------------------------------------------- allocator

/// Counts live heap bytes so memory per target is measured, not guessed.
/// The only unsafe code in the project: a pass-through to the system allocator.
struct CountingAlloc;

static LIVE_BYTES: AtomicI64 = AtomicI64::new(0);

#[allow(unsafe_code)]
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as i64, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

// ---------------------------------------------------------------- lateness recorder

/// Keeps every sample of the scheduler's lateness histogram.
#[derive(Default)]
struct Samples(Mutex<Vec<f64>>);

impl metrics::HistogramFn for Samples {
    fn record(&self, value: f64) {
        if let Ok(mut v) = self.0.lock() {
            v.push(value);
        }
    }
}

struct LatenessRecorder(Arc<Samples>);

impl metrics::Recorder for LatenessRecorder {
    fn describe_counter(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_gauge(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_histogram(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn register_counter(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        metrics::Counter::noop()
    }
    fn register_gauge(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        metrics::Gauge::noop()
    }
    fn register_histogram(
        &self,
        key: &metrics::Key,
        _: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        if key.name() == "failover_probe_schedule_lateness_seconds" {
            metrics::Histogram::from_arc(Arc::clone(&self.0))
        } else {
            metrics::Histogram::noop()
        }
    }
}

// ---------------------------------------------------------------- throughput

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// The same exchange as a fresh-connection probe, by hand: the ceiling.
async fn bare_get(addr: std::net::SocketAddr, request: &[u8]) -> bool {
    let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
        return false;
    };
    let _ = stream.set_nodelay(true);
    if stream.write_all(request).await.is_err() {
        return false;
    }
    let mut buf = Vec::with_capacity(256);
    stream.read_to_end(&mut buf).await.is_ok() && buf.starts_with(b"HTTP/1.1 200")
}

/// Runs `iters` checks with `in_flight` workers; returns the elapsed time.
async fn run_concurrent<F, Fut>(iters: u64, in_flight: u64, check: F) -> Duration
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let start = Instant::now();
    let mut workers = Vec::new();
    for w in 0..in_flight {
        let share = iters / in_flight + u64::from(w < iters % in_flight);
        let check = check.clone();
        workers.push(tokio::spawn(async move {
            for _ in 0..share {
                assert!(check().await, "check against the healthy API failed");
            }
        }));
    }
    for w in workers {
        w.await.expect("worker");
    }
    start.elapsed()
}

fn throughput(c: &mut Criterion) {
    let rt = runtime();
    let api = rt
        .block_on(async { RegionalApi::start_http() })
        .expect("API");
    let addr = api.addr();
    let probe =
        Arc::new(HttpProbe::new(HttpProbeConfig::new("127.0.0.1", addr.port())).expect("probe"));
    let request: Arc<[u8]> =
        format!("GET / HTTP/1.1\r\nhost: {addr}\r\nuser-agent: bare\r\nconnection: close\r\n\r\n")
            .into_bytes()
            .into();

    let mut group = c.benchmark_group("fresh_connection_checks");
    group.throughput(Throughput::Elements(1));
    for in_flight in [1u64, 16] {
        group.bench_with_input(
            BenchmarkId::new("bare_connect_get_close", in_flight),
            &in_flight,
            |b, &n| {
                b.iter_custom(|iters| {
                    let request = Arc::clone(&request);
                    rt.block_on(run_concurrent(iters, n, move || {
                        let request = Arc::clone(&request);
                        async move { bare_get(addr, &request).await }
                    }))
                })
            },
        );
        group.bench_with_input(
            BenchmarkId::new("http_probe", in_flight),
            &in_flight,
            |b, &n| {
                b.iter_custom(|iters| {
                    let probe = Arc::clone(&probe);
                    rt.block_on(run_concurrent(iters, n, move || {
                        let probe = Arc::clone(&probe);
                        async move { probe.check().await.is_ok() }
                    }))
                })
            },
        );
    }
    group.finish();
    drop(api);

    // HTTPS: a fresh TLS 1.3 handshake per check (ECDSA P-256 test CA).
    let tls_api = rt
        .block_on(async { RegionalApi::start_https("api.bench.test") })
        .expect("HTTPS API");
    let ca = tls_api.ca().expect("test CA").ca_der().clone();
    let config = HttpProbeConfig::new("127.0.0.1", tls_api.addr().port())
        .with_tls(TlsSettings::with_ca_der(ca).server_name("api.bench.test"));
    let tls_probe = Arc::new(HttpProbe::new(config).expect("HTTPS probe"));
    let mut group = c.benchmark_group("fresh_connection_checks");
    group.throughput(Throughput::Elements(1));
    group.bench_function(BenchmarkId::new("https_probe", 16), |b| {
        b.iter_custom(|iters| {
            let probe = Arc::clone(&tls_probe);
            rt.block_on(run_concurrent(iters, 16, move || {
                let probe = Arc::clone(&probe);
                async move { probe.check().await.is_ok() }
            }))
        })
    });
    group.finish();
}

criterion_group!(benches, throughput);

// ---------------------------------------------------------------- lateness, memory

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// A probe that answers at once: isolates the scheduler's own lateness
/// from the work of real HTTP probes sharing the same two cores.
struct Instant0;

#[async_trait::async_trait]
impl Probe for Instant0 {
    async fn check(&self) -> failover_core::ProbeOutcome {
        failover_core::ProbeOutcome::Ok {
            latency: Duration::ZERO,
        }
    }
}

fn lateness(samples: &Arc<Samples>, http: bool) {
    // The API gets its own single-thread runtime, as a remote region would
    // not share the prober's worker threads.
    let server_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("server runtime");
    let api = server_rt
        .block_on(async { RegionalApi::start_http() })
        .expect("API");
    let server_thread = {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let handle = std::thread::spawn(move || {
            server_rt.block_on(async {
                let _ = stopped.await;
            })
        });
        (stop, handle)
    };
    let rt = runtime();
    rt.block_on(async {
        let (scheduler, mut rx) = ProbeScheduler::start(SchedulerConfig::default());
        let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
        let targets = 1000;
        for t in 0..targets {
            let probe: Arc<dyn Probe> = if http {
                Arc::new(HttpProbe::new(HttpProbeConfig::new("127.0.0.1", api.addr().port())).expect("probe"))
            } else {
                Arc::new(Instant0)
            };
            scheduler.add(ProbeTarget::new(
                RegionId(t % 5),
                VantageId(t % 3),
                Duration::from_secs(1),
                probe,
            ));
        }
        // Discard the first interval (start-up), then measure five.
        tokio::time::sleep(Duration::from_secs(1)).await;
        samples.0.lock().expect("samples").clear();
        tokio::time::sleep(Duration::from_secs(5)).await;
        let stats = scheduler.stats();
        scheduler.shutdown().await;
        let _ = drain.await;
        let mut v = samples.0.lock().expect("samples").clone();
        v.sort_by(f64::total_cmp);
        let ms = |x: f64| x * 1e3;
        println!(
            "scheduling lateness, {targets} targets, 1 s interval, {}: \
             n={} p50={:.3} ms p99={:.3} ms p99.9={:.3} ms max={:.3} ms; probes={} skipped_slots={}",
            if http { "HttpProbe to a local API" } else { "instant probe" },
            v.len(),
            ms(percentile(&v, 0.50)),
            ms(percentile(&v, 0.99)),
            ms(percentile(&v, 0.999)),
            ms(v.last().copied().unwrap_or(f64::NAN)),
            stats.probes,
            stats.skipped_slots,
        );
    });
    drop(api);
    let _ = server_thread.0.send(());
    let _ = server_thread.1.join();
}

fn memory_per_target() {
    let rt = runtime();
    rt.block_on(async {
        let n = 10_000u32;
        let config = HttpProbeConfig::new("127.0.0.1", 9);
        let (scheduler, _rx) = ProbeScheduler::start(SchedulerConfig::default());
        let hour = Duration::from_secs(3600);

        let shared: Arc<dyn Probe> = Arc::new(HttpProbe::new(config.clone()).expect("probe"));
        let before = LIVE_BYTES.load(Ordering::Relaxed);
        for t in 0..n {
            scheduler.add(ProbeTarget::new(
                RegionId(t),
                VantageId(0),
                hour,
                Arc::clone(&shared),
            ));
        }
        tokio::task::yield_now().await;
        let scheduled_only = (LIVE_BYTES.load(Ordering::Relaxed) - before) as f64 / f64::from(n);

        let before = LIVE_BYTES.load(Ordering::Relaxed);
        for t in 0..n {
            let probe = HttpProbe::new(config.clone()).expect("probe");
            scheduler.add(ProbeTarget::new(
                RegionId(t),
                VantageId(1),
                hour,
                Arc::new(probe),
            ));
        }
        tokio::task::yield_now().await;
        let with_probe = (LIVE_BYTES.load(Ordering::Relaxed) - before) as f64 / f64::from(n);
        scheduler.shutdown().await;
        println!(
            "memory per target ({n} idle targets): {scheduled_only:.0} B scheduled (shared probe), \
             {with_probe:.0} B with its own HttpProbe (plain HTTP)"
        );
    });
}

/// Bare loop and HttpProbe in alternating rounds, so drifting background
/// load (other builds on the machine) hits both alike; prints the ratio.
fn interleaved_ratio() {
    let rt = runtime();
    let api = rt
        .block_on(async { RegionalApi::start_http() })
        .expect("API");
    let addr = api.addr();
    let probe =
        Arc::new(HttpProbe::new(HttpProbeConfig::new("127.0.0.1", addr.port())).expect("probe"));
    let request: Arc<[u8]> =
        format!("GET / HTTP/1.1\r\nhost: {addr}\r\nuser-agent: bare\r\nconnection: close\r\n\r\n")
            .into_bytes()
            .into();
    for in_flight in [1u64, 16] {
        let (rounds, per_round) = (20, 2_000u64);
        let (mut bare, mut probed) = (Duration::ZERO, Duration::ZERO);
        for _ in 0..rounds {
            let r = Arc::clone(&request);
            bare += rt.block_on(run_concurrent(per_round, in_flight, move || {
                let r = Arc::clone(&r);
                async move { bare_get(addr, &r).await }
            }));
            let p = Arc::clone(&probe);
            probed += rt.block_on(run_concurrent(per_round, in_flight, move || {
                let p = Arc::clone(&p);
                async move { p.check().await.is_ok() }
            }));
        }
        let total = (rounds * per_round) as f64;
        let bare_rate = total / bare.as_secs_f64();
        let probe_rate = total / probed.as_secs_f64();
        println!(
            "interleaved, {in_flight} in flight, {rounds}×{per_round} each: bare {bare_rate:.0}/s, \
             HttpProbe {probe_rate:.0}/s = {:.0} % of bare",
            100.0 * probe_rate / bare_rate
        );
    }
}

fn main() {
    let samples = Arc::new(Samples::default());
    if metrics::set_global_recorder(LatenessRecorder(Arc::clone(&samples))).is_err() {
        eprintln!("a metrics recorder was already set; lateness not measured");
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
    if std::env::args().any(|a| a == "--bench") {
        interleaved_ratio();
        lateness(&samples, true);
        lateness(&samples, false);
        memory_per_target();
    }
}
