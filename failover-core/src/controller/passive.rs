//! Passive health: the service's traffic reports, aggregated per region over
//! `policy.passive.window` and judged by its thresholds. Each judgement
//! counts like a probe result against `fall`/`rise`, and a region whose
//! users fail goes through the same region evaluation as a probe quorum
//! (hold-down, damping, routing's safety rules), so there is one state
//! machine for a region's health, fed by two signals.

use std::collections::VecDeque;
use std::time::Instant;

use super::Controller;
use crate::{EventKind, PassivePolicy, RegionId, TrafficReport, TrafficRule};

/// Most reports kept per region; beyond it a report is merged into the
/// newest one kept, so many reporters cannot grow memory without bound.
const MAX_SAMPLES: usize = 256;

/// One report's counts.
#[derive(Clone, Copy, Debug)]
struct Sample {
    at: Instant,
    requests: u32,
    errors: u32,
    slow: u32,
}

/// The counts in a region's window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Counts {
    pub(super) requests: u32,
    pub(super) errors: u32,
    pub(super) slow: u32,
}

/// What the window says of a region's users.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Judgement {
    Failing(TrafficRule),
    Healthy,
    /// Fewer than `min_requests` in the window: no rate to judge.
    TooFew,
}

/// Passive health of one region.
#[derive(Clone, Debug)]
pub(super) struct PassiveTrack {
    /// `fall` failing judgements in a row said so, and `rise` healthy ones
    /// (or expiry) have not cleared it yet: the region is down.
    pub(super) failing: bool,
    fails: u32,
    oks: u32,
    samples: VecDeque<Sample>,
    /// The last failing judgement.
    last_failing: Option<Instant>,
}

impl PassiveTrack {
    pub(super) fn new(on: bool) -> Self {
        PassiveTrack {
            failing: false,
            fails: 0,
            oks: 0,
            samples: VecDeque::with_capacity(if on { MAX_SAMPLES } else { 0 }),
            last_failing: None,
        }
    }

    /// Drops the reports older than the window and sums the rest.
    fn counts(&mut self, now: Instant, policy: &PassivePolicy) -> Counts {
        while self
            .samples
            .front()
            .is_some_and(|s| now.saturating_duration_since(s.at) > policy.window)
        {
            self.samples.pop_front();
        }
        self.samples.iter().fold(Counts::default(), |c, s| Counts {
            requests: c.requests.saturating_add(s.requests),
            errors: c.errors.saturating_add(s.errors),
            slow: c.slow.saturating_add(s.slow),
        })
    }

    fn push(&mut self, sample: Sample) {
        let full = self.samples.len() >= MAX_SAMPLES;
        match self.samples.back_mut() {
            Some(back) if full => {
                back.requests = back.requests.saturating_add(sample.requests);
                back.errors = back.errors.saturating_add(sample.errors);
                back.slow = back.slow.saturating_add(sample.slow);
            }
            _ => self.samples.push_back(sample),
        }
    }
}

fn judge(policy: &PassivePolicy, counts: Counts, consecutive_errors: u32) -> Judgement {
    if let Some(limit) = policy.consecutive_5xx {
        if consecutive_errors >= limit {
            return Judgement::Failing(TrafficRule::ConsecutiveErrors { limit });
        }
    }
    if counts.requests < policy.min_requests || counts.requests == 0 {
        return Judgement::TooFew;
    }
    let requests = f64::from(counts.requests);
    if f64::from(counts.errors) / requests > policy.max_error_rate {
        return Judgement::Failing(TrafficRule::ErrorRate {
            max: policy.max_error_rate,
        });
    }
    if let Some(latency) = &policy.latency {
        if f64::from(counts.slow) / requests > latency.max_rate {
            return Judgement::Failing(TrafficRule::SlowRate {
                max: latency.max_rate,
                threshold: latency.threshold,
            });
        }
    }
    Judgement::Healthy
}

impl Controller {
    /// A traffic report: add it to the region's window, judge the window,
    /// count the judgement against `fall`/`rise`.
    pub(super) fn on_traffic(&mut self, now: Instant, report: TrafficReport) {
        let Some(policy) = self.policy.passive.clone() else {
            return;
        };
        let id = report.region;
        if id.index() >= self.passive.len() {
            return;
        }
        let (fall, rise) = (self.policy.fall, self.policy.rise);
        // A report from the future is taken as of now; one older than the
        // window says nothing about now.
        let at = report.at.min(now);
        if now.saturating_duration_since(at) > policy.window {
            return;
        }
        let track = &mut self.passive[id.index()];
        track.push(Sample {
            at,
            requests: report.requests,
            errors: report.errors.min(report.requests),
            slow: report.slow.min(report.requests),
        });
        let counts = track.counts(now, &policy);
        let kind = match judge(&policy, counts, report.consecutive_errors) {
            Judgement::Failing(rule) => {
                track.oks = 0;
                track.fails = track.fails.saturating_add(1);
                track.last_failing = Some(now);
                if track.failing || track.fails < fall {
                    return;
                }
                track.failing = true;
                EventKind::UsersFailing {
                    region: id,
                    rule,
                    requests: counts.requests,
                    errors: counts.errors,
                    slow: counts.slow,
                    consecutive_errors: report.consecutive_errors,
                    window: policy.window,
                    judgements: track.fails,
                }
            }
            Judgement::Healthy => {
                track.fails = 0;
                track.oks = track.oks.saturating_add(1);
                if !track.failing || track.oks < rise {
                    return;
                }
                track.failing = false;
                EventKind::UsersRecovered {
                    region: id,
                    requests: counts.requests,
                    errors: counts.errors,
                    judgements: track.oks,
                }
            }
            Judgement::TooFew => {
                self.expire_passive(now, id);
                return;
            }
        };
        self.notify(now, kind);
        self.evaluate_region(now, id);
    }

    /// Clears a failing judgement that nothing has confirmed for a whole
    /// window when too few requests remain to judge: a region drained by
    /// passive health gets no traffic, so without this it could never
    /// return. (It returns through hold-down and the ramp; failing again
    /// counts as a flap.) Called on every probe of the region and every
    /// report too small to judge.
    pub(super) fn expire_passive(&mut self, now: Instant, id: RegionId) {
        let Some(policy) = &self.policy.passive else {
            return;
        };
        let Some(track) = self.passive.get_mut(id.index()) else {
            return;
        };
        if !track.failing
            || track
                .last_failing
                .is_some_and(|t| now.saturating_duration_since(t) < policy.window)
        {
            return;
        }
        let counts = track.counts(now, policy);
        if counts.requests >= policy.min_requests {
            return;
        }
        track.failing = false;
        track.fails = 0;
        track.oks = 0;
        self.notify(
            now,
            EventKind::UsersRecovered {
                region: id,
                requests: counts.requests,
                errors: counts.errors,
                judgements: 0,
            },
        );
        self.evaluate_region(now, id);
    }

    /// Whether passive health holds `id` down.
    pub(super) fn users_failing(&self, id: RegionId) -> bool {
        self.passive.get(id.index()).is_some_and(|p| p.failing)
    }
}
