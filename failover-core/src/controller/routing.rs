//! Routing: from health, drains, hold-down and ramps to a complete weight
//! plan, with the all-down policy, the safety rule and the capacity check.

use std::time::Instant;

use super::timers::{Timer, TimerReason};
use super::{later, Controller};
use crate::{Action, AllDownPolicy, EventKind, Health, RegionId, RegionRole, WeightPlan};

impl Controller {
    /// Whether region `i` may take traffic at `now`, health and holds permitting.
    fn eligible(&self, i: usize, now: Instant) -> bool {
        let r = &self.regions[i];
        !r.drained && r.routed != Health::Down && !r.is_held(now)
    }

    pub(super) fn init_eligibility(&mut self, now: Instant) {
        for i in 0..self.regions.len() {
            self.regions[i].eligible = self.eligible(i, now);
        }
    }

    /// Re-derives eligibility, ramps and the plan; issues a new plan when any
    /// weight differs from the last one. Allocates only when the plan changes.
    pub(super) fn recompute(&mut self, now: Instant) {
        let steps = self.policy.ramp_steps.len();
        for i in 0..self.regions.len() {
            let eligible = self.eligible(i, now);
            let region = &mut self.regions[i];
            if eligible && !region.eligible {
                if steps > 1 {
                    region.ramp = Some(0);
                    region.ramp_next = Some(later(now, self.policy.ramp_interval));
                    let percent = self.policy.ramp_steps[0];
                    self.notify(
                        now,
                        EventKind::RampStep {
                            region: RegionId(i as u32),
                            percent,
                        },
                    );
                }
            } else if !eligible && region.eligible {
                if let Some(step) = region.ramp.take() {
                    region.ramp_next = None;
                    if region.routed == Health::Down {
                        let percent = self.policy.ramp_steps[step];
                        self.notify(
                            now,
                            EventKind::FailbackAborted {
                                region: RegionId(i as u32),
                                percent,
                            },
                        );
                    }
                }
            }
            self.regions[i].eligible = eligible;
        }
        self.compute_weights();
        self.apply_floors(now);
        let changed = match &self.plan {
            None => true,
            Some(plan) => plan
                .weights
                .iter()
                .zip(&self.scratch)
                .any(|(old, new)| old.weight != *new),
        };
        if changed {
            self.issue_plan(now);
        }
        self.arm_region_timers(now);
    }

    /// Weights from eligibility and ramps, into `self.scratch`. A standby
    /// takes the share the active regions of its residency group cannot
    /// (with no residency configured, that is every active region).
    fn compute_weights(&mut self) {
        let regions = self.topology.regions();
        let percent = |i: usize| -> u32 {
            let r = &self.regions[i];
            if !r.eligible {
                return 0;
            }
            r.ramp
                .and_then(|s| self.policy.ramp_steps.get(s))
                .map_or(100, |p| u32::from(*p))
        };
        for (i, region) in regions.iter().enumerate() {
            let share = match region.role {
                RegionRole::Active => percent(i),
                RegionRole::Standby => {
                    let mut active_share = 0;
                    for (j, other) in regions.iter().enumerate() {
                        if other.role == RegionRole::Active
                            && other.base_weight > 0
                            && other.residency == region.residency
                        {
                            active_share = active_share.max(percent(j));
                        }
                    }
                    percent(i) * (100 - active_share) / 100
                }
            };
            self.scratch[i] = scaled(region.base_weight, share);
        }
    }

    /// All-down policy and the `min_serving_regions` safety rule.
    fn apply_floors(&mut self, now: Instant) {
        if self.scratch.iter().all(|w| *w == 0) {
            if !self.all_down {
                self.all_down = true;
                self.notify(
                    now,
                    EventKind::AllDown {
                        policy: self.policy.all_down,
                    },
                );
            }
            if self.policy.all_down == AllDownPolicy::FailOpen {
                for (i, region) in self.topology.regions().iter().enumerate() {
                    if !self.regions[i].drained {
                        self.scratch[i] = region.base_weight;
                    }
                }
            }
            return;
        }
        self.all_down = false;
        if self.topology.has_residency() {
            self.apply_residency_floors(now);
        }
        let min = self.policy.min_serving_regions;
        let mut serving = self.scratch.iter().filter(|w| **w > 0).count() as u32;
        for i in 0..self.regions.len() {
            let previous = self
                .plan
                .as_ref()
                .map_or(0, |p| p.weight(RegionId(i as u32)));
            let region = &self.regions[i];
            let keep = serving < min
                && self.scratch[i] == 0
                && previous > 0
                && !region.drained
                && !region.eligible;
            if keep {
                self.scratch[i] = previous;
                serving += 1;
                if !self.regions[i].safety_held {
                    self.regions[i].safety_held = true;
                    self.notify(
                        now,
                        EventKind::SafetyHold {
                            region: RegionId(i as u32),
                            min_serving: min,
                        },
                    );
                }
            } else if self.scratch[i] > 0 || region.drained || region.eligible {
                self.regions[i].safety_held = false;
            }
        }
    }

    /// Issues `self.scratch` as a new plan generation.
    fn issue_plan(&mut self, now: Instant) {
        // Above this controller's last plan and above any plan a previous
        // leader stored, so generations never repeat across leaders.
        let generation = self
            .plan
            .as_ref()
            .map_or(0, |p| p.generation)
            .max(self.stored_generation)
            + 1;
        let plan =
            WeightPlan::in_region_order(generation, self.policy.ttl, self.scratch.iter().copied());
        self.plan = Some(plan);
        self.timers.stop(Timer::RetryWeights);
        self.weights_backoff = std::time::Duration::ZERO;
        self.send_plan(now, false);
        self.check_capacity(now);
    }

    /// Queues the desired plan as a `SetWeights` with a fresh id.
    fn send_plan(&mut self, now: Instant, retry: bool) {
        // A controller that does not lead decides but changes nothing; the
        // plan is sent when it gains leadership.
        if !self.leading() {
            return;
        }
        let Some(mut plan) = self.plan.clone() else {
            return;
        };
        if self.coordinated {
            plan.token = self.leader;
        }
        let id = self.next_id();
        self.plan_action = Some(id);
        let serving = plan.serving().count() as u32;
        self.notify(
            now,
            EventKind::WeightsChanged {
                generation: plan.generation,
                serving,
                retry,
            },
        );
        self.actions.push_back(Action::SetWeights { id, plan });
    }

    /// Re-sends the desired plan after its application failed.
    pub(super) fn resend_plan(&mut self, now: Instant) {
        self.send_plan(now, true);
    }

    /// Warns once when the serving regions cannot carry peak load.
    fn check_capacity(&mut self, now: Instant) {
        let Some(plan) = &self.plan else { return };
        let total = plan.total();
        if total == 0 {
            return;
        }
        let mut worst: f64 = 0.0;
        for w in plan.weights.iter().filter(|w| w.weight > 0) {
            let share = f64::from(w.weight) / total as f64;
            let capacity = self.topology.region(w.region).capacity;
            let load = if capacity > 0.0 {
                share / capacity
            } else {
                f64::INFINITY
            };
            worst = worst.max(load);
        }
        let saturated = worst > 1.0;
        if saturated && !self.saturated {
            let load_percent = (worst * 100.0).round().min(f64::from(u32::MAX)) as u32;
            self.notify(now, EventKind::CapacityWarning { load_percent });
        }
        self.saturated = saturated;
    }

    pub(super) fn on_ramp_timer(&mut self, now: Instant) {
        let last = self.policy.ramp_steps.len().saturating_sub(1);
        for i in 0..self.regions.len() {
            let region = &mut self.regions[i];
            let (Some(step), Some(due)) = (region.ramp, region.ramp_next) else {
                continue;
            };
            if due > now {
                continue;
            }
            let step = step + 1;
            if step >= last {
                region.ramp = None;
                region.ramp_next = None;
            } else {
                region.ramp = Some(step);
                region.ramp_next = Some(later(now, self.policy.ramp_interval));
            }
            let percent = self.policy.ramp_steps[step.min(last)];
            self.notify(
                now,
                EventKind::RampStep {
                    region: RegionId(i as u32),
                    percent,
                },
            );
        }
        self.recompute(now);
    }

    /// Arms the ramp and release timers from the regions' deadlines.
    fn arm_region_timers(&mut self, now: Instant) {
        let ramp = self.regions.iter().filter_map(|r| r.ramp_next).min();
        match ramp {
            Some(at) => self.timers.set(Timer::Ramp, at, TimerReason::FailbackRamp),
            None => self.timers.stop(Timer::Ramp),
        }
        // Only future releases matter; a past one would wake us for nothing.
        let release = self
            .regions
            .iter()
            .filter(|r| !r.eligible)
            .filter_map(|r| r.out_until())
            .filter(|t| *t > now)
            .min();
        match release {
            Some(at) => self.timers.set(Timer::Release, at, TimerReason::HoldDown),
            None => self.timers.stop(Timer::Release),
        }
    }

    pub(super) fn drain(&mut self, now: Instant, id: RegionId) {
        let Some(region) = self.regions.get(id.index()) else {
            return;
        };
        if region.drained {
            return;
        }
        let others_serve = self
            .topology
            .regions()
            .iter()
            .enumerate()
            .any(|(i, r)| i != id.index() && r.base_weight > 0 && !self.regions[i].drained);
        if !others_serve {
            self.notify(
                now,
                EventKind::CommandRefused {
                    reason: "draining it would leave no undrained region with weight",
                },
            );
            return;
        }
        self.regions[id.index()].drained = true;
        self.notify(now, EventKind::Drained { region: id });
        self.recompute(now);
        self.evaluate_writer(now);
    }

    pub(super) fn undrain(&mut self, now: Instant, id: RegionId) {
        let Some(region) = self.regions.get_mut(id.index()) else {
            return;
        };
        if !region.drained {
            return;
        }
        region.drained = false;
        self.notify(now, EventKind::Undrained { region: id });
        self.recompute(now);
    }
}

/// `base × percent / 100`, rounded up so a non-zero share never becomes 0.
fn scaled(base: u32, percent: u32) -> u32 {
    let w = (u64::from(base) * u64::from(percent)).div_ceil(100);
    w.min(u64::from(u32::MAX)) as u32
}
