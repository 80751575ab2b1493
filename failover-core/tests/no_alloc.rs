//! Proves that a steady-state probe event does not touch the heap: a counting
//! global allocator counts the allocations made on this test's thread while
//! probes are handled and the action queue is drained.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::{Duration, Instant};

use failover_core::{
    Config, Controller, Input, Policy, ProbeFailure, ProbeOutcome, ProbeResult, Region, RegionId,
    RegionRole, Topology, VantageId,
};

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: defers every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

fn count() {
    // `try_with`: the thread-locals may be gone while the thread exits.
    let _ = COUNTING.try_with(|on| {
        if on.get() {
            let _ = COUNT.try_with(|c| c.set(c.get() + 1));
        }
    });
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn allocations_during(f: impl FnOnce()) -> u64 {
    COUNT.with(|c| c.set(0));
    COUNTING.with(|on| on.set(true));
    f();
    COUNTING.with(|on| on.set(false));
    COUNT.with(|c| c.get())
}

fn controller(regions: usize, vantages: usize, t0: Instant) -> Controller {
    let mut b = Topology::builder("api.example.com.");
    for i in 0..regions {
        b = b.region(Region::new(format!("r{i}"), RegionRole::Active));
    }
    for v in 0..vantages {
        b = b.vantage(format!("v{v}"));
    }
    let config = Config::new(b.build().unwrap(), Policy::default()).unwrap();
    Controller::new(config, t0)
}

fn probe(c: &mut Controller, now: Instant, region: u32, vantage: u32, ok: bool) {
    let outcome = if ok {
        ProbeOutcome::Ok {
            latency: Duration::from_millis(3),
        }
    } else {
        ProbeOutcome::Failed(ProbeFailure::ResponseTimeout)
    };
    c.handle(
        now,
        Input::Probe(ProbeResult {
            region: RegionId(region),
            vantage: VantageId(vantage),
            at: now,
            outcome,
        }),
    );
    while c.poll_action().is_some() {}
}

#[test]
fn steady_state_probe_events_do_not_allocate() {
    for (regions, vantages) in [(2usize, 1usize), (2, 3), (1000, 3)] {
        let t0 = Instant::now();
        let mut c = controller(regions, vantages, t0);
        // Warm up: every (region, vantage) up; drain the plans this causes.
        for round in 0..3u64 {
            let now = t0 + Duration::from_secs(10 * round);
            for r in 0..regions as u32 {
                for v in 0..vantages as u32 {
                    probe(&mut c, now, r, v, true);
                }
            }
        }
        let mut now = t0 + Duration::from_secs(40);
        let allocations = allocations_during(|| {
            for i in 0..20_000u32 {
                now += Duration::from_millis(1);
                let r = i % regions as u32;
                let v = (i / regions as u32) % vantages as u32;
                // Every 7th probe is a single miss (an early-warning event,
                // below `fall`): still no allocation.
                probe(&mut c, now, r, v, i % 7 != 0);
            }
        });
        assert_eq!(
            allocations, 0,
            "{regions} regions × {vantages} vantages: {allocations} allocations in 20,000 probe events"
        );
        // The counter works: a threshold crossing that issues a plan allocates.
        let crossing = allocations_during(|| {
            for _ in 0..3 {
                now += Duration::from_secs(10);
                for v in 0..vantages as u32 {
                    probe(&mut c, now, 0, v, false);
                }
            }
        });
        assert!(crossing > 0, "a new weight plan is a fresh Vec");
    }
}
