//! failover-core benchmarks: the cost of one steady-state probe event (2
//! regions; 1,000 regions × 3 vantages) and one simulated year of 10 s probes
//! across 10 regions.
//!
//! ```text
//! cargo bench --bench controller -- --measurement-time 3
//! ```

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use failover::decision::sim::Scenario;
use failover::decision::{
    Config, Controller, Input, Policy, ProbeOutcome, ProbeResult, Region, RegionId, RegionRole,
    Topology, VantageId,
};

fn config(regions: usize, vantages: usize) -> Config {
    let mut b = Topology::builder("api.example.com.");
    for i in 0..regions {
        b = b.region(Region::new(format!("r{i}"), RegionRole::Active));
    }
    for v in 0..vantages {
        b = b.vantage(format!("v{v}"));
    }
    let policy = Policy {
        jitter: Duration::ZERO,
        ..Policy::default()
    };
    Config::new(b.build().expect("topology"), policy).expect("config")
}

fn ok_probe(region: u32, vantage: u32, at: Instant) -> Input {
    Input::Probe(ProbeResult {
        region: RegionId(region),
        vantage: VantageId(vantage),
        at,
        outcome: ProbeOutcome::Ok {
            latency: Duration::from_millis(3),
        },
    })
}

fn probe_event(c: &mut Criterion, regions: usize, vantages: usize) {
    let t0 = Instant::now();
    let mut controller = Controller::new(config(regions, vantages), t0);
    for round in 0..3u64 {
        let now = t0 + Duration::from_secs(10 * round);
        for r in 0..regions as u32 {
            for v in 0..vantages as u32 {
                controller.handle(now, ok_probe(r, v, now));
            }
        }
        while controller.poll_action().is_some() {}
    }
    let (mut r, mut v) = (0u32, 0u32);
    let mut now = t0 + Duration::from_secs(40);
    let name = format!("probe_event/{regions}_regions_x_{vantages}_vantages");
    c.bench_function(&name, |b| {
        b.iter(|| {
            now += Duration::from_micros(1);
            controller.handle(now, black_box(ok_probe(r, v, now)));
            while let Some(action) = controller.poll_action() {
                black_box(action);
            }
            v += 1;
            if v == vantages as u32 {
                v = 0;
                r = (r + 1) % regions as u32;
            }
        })
    });
}

fn probe_events(c: &mut Criterion) {
    probe_event(c, 2, 1);
    probe_event(c, 1000, 3);
}

fn simulated_year(c: &mut Criterion) {
    let config = config(10, 1);
    let mut group = c.benchmark_group("sim");
    group.sample_size(10);
    group.bench_function("year_of_10s_probes_10_regions", |b| {
        b.iter(|| {
            let report = Scenario::new(config.clone(), 1)
                .duration(Duration::from_secs(365 * 24 * 3600))
                .run();
            assert!(report.probes > 31_000_000);
            black_box(report)
        })
    });
    group.finish();
}

criterion_group!(benches, probe_events, simulated_year);
criterion_main!(benches);
