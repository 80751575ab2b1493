//! Health tracking: fall/rise hysteresis per (region, vantage), the vantage
//! quorum per region, hold-down and flap damping. Edge-triggered: only a
//! crossed threshold produces an event; a steady probe touches two counters.

use std::collections::VecDeque;
use std::time::Instant;

use super::{later, Controller};
use crate::{EventKind, Health, ProbeOutcome, ProbeResult, RegionId};

/// Consecutive-result counters of one (region, vantage).
#[derive(Clone, Copy, Debug)]
pub(super) struct VantageTrack {
    pub(super) state: Health,
    fails: u32,
    oks: u32,
    /// When the newest result was taken (its `ProbeResult::at`), or a peer
    /// controller's verdict arrived.
    last: Option<Instant>,
    /// A peer's verdict that was withdrawn (its publisher's lease ended):
    /// it counts neither way until the peer publishes again.
    withdrawn: bool,
    /// The vote is a peer controller's published verdict: it lives as long
    /// as its publisher's lease (withdrawn when that ends), not by age, since
    /// a peer republishes only when its verdict changes.
    leased: bool,
}

impl VantageTrack {
    /// Whether this vantage has reported anything (a probe result or a verdict).
    pub(super) fn reported(&self) -> bool {
        self.last.is_some() && !self.withdrawn
    }

    /// Whether the vote is a peer controller's verdict.
    pub(super) fn leased(&self) -> bool {
        self.leased
    }

    pub(super) fn new(state: Health) -> Self {
        VantageTrack {
            state,
            fails: 0,
            oks: 0,
            last: None,
            withdrawn: false,
            leased: false,
        }
    }
}

/// Everything the controller keeps about one region.
#[derive(Clone, Debug)]
pub(super) struct RegionTrack {
    /// What the vantage quorum says.
    pub(super) health: Health,
    /// What routing acts on: `health`, frozen while automation is paused.
    pub(super) routed: Health,
    pub(super) drained: bool,
    /// End of hold-down after the last down-transition.
    pub(super) held_until: Option<Instant>,
    /// End of flap damping.
    pub(super) damped_until: Option<Instant>,
    /// Times of recent down-transitions (at most `flap_limit`).
    downs: VecDeque<Instant>,
    /// Failback ramp step index, while ramping.
    pub(super) ramp: Option<usize>,
    pub(super) ramp_next: Option<Instant>,
    /// Whether routing considered it eligible at the last recompute.
    pub(super) eligible: bool,
    /// Kept serving by the safety rule.
    pub(super) safety_held: bool,
    /// Every region of its residency group is out (set on the group's
    /// first region only), so the group's all-down policy applies.
    pub(super) group_all_down: bool,
}

impl RegionTrack {
    pub(super) fn new(initial: Health, flap_limit: usize) -> Self {
        RegionTrack {
            health: initial,
            routed: initial,
            drained: false,
            held_until: None,
            damped_until: None,
            // Capped: a huge configured limit must not reserve huge memory.
            downs: VecDeque::with_capacity(flap_limit.min(16) + 1),
            ramp: None,
            ramp_next: None,
            eligible: false,
            safety_held: false,
            group_all_down: false,
        }
    }

    /// The later of hold-down and damping ends, if any is set.
    pub(super) fn out_until(&self) -> Option<Instant> {
        match (self.held_until, self.damped_until) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether hold-down or damping keeps it out at `now`.
    pub(super) fn is_held(&self, now: Instant) -> bool {
        self.out_until().is_some_and(|t| now < t)
    }
}

impl Controller {
    pub(super) fn on_probe(&mut self, now: Instant, probe: ProbeResult) {
        let region = probe.region.index();
        let vantage = probe.vantage.index();
        if region >= self.regions.len() || vantage >= self.vantage_count {
            return;
        }
        self.expire_passive(now, probe.region);
        let (fall, rise) = (self.policy.fall, self.policy.rise);
        let expiring = self.policy.vote_expiry > 0;
        let region_health = self.regions[region].health;
        let track = &mut self.vantages[region * self.vantage_count + vantage];
        // A result taken before the newest one we hold arrived late: it says
        // nothing about now.
        if track.last.is_some_and(|last| probe.at < last) {
            return;
        }
        track.last = Some(probe.at);
        track.withdrawn = false;
        track.leased = false;
        let kind = match probe.outcome {
            ProbeOutcome::Ok { .. } => {
                track.fails = 0;
                track.oks = track.oks.saturating_add(1);
                if track.state == Health::Up && expiring && region_health != Health::Up {
                    // Another vantage's vote may have expired meanwhile.
                    self.evaluate_region(now, probe.region);
                    return;
                }
                if track.state == Health::Up || track.oks < rise {
                    return;
                }
                track.state = Health::Up;
                EventKind::VantageUp {
                    region: probe.region,
                    vantage: probe.vantage,
                    consecutive: track.oks,
                }
            }
            ProbeOutcome::Failed(failure) => {
                track.oks = 0;
                track.fails = track.fails.saturating_add(1);
                if track.state == Health::Down {
                    if expiring && region_health != Health::Down {
                        self.evaluate_region(now, probe.region);
                    }
                    return;
                }
                if track.fails < fall {
                    if track.fails == 1 {
                        let consecutive = track.fails;
                        self.notify(
                            now,
                            EventKind::ProbeFailed {
                                region: probe.region,
                                vantage: probe.vantage,
                                failure,
                                consecutive,
                                fall,
                            },
                        );
                    }
                    return;
                }
                track.state = Health::Down;
                EventKind::VantageDown {
                    region: probe.region,
                    vantage: probe.vantage,
                    failure,
                    consecutive: track.fails,
                }
            }
        };
        self.notify(now, kind);
        self.evaluate_region(now, probe.region);
    }

    /// A peer controller's verdict on a region (published through the
    /// coordination store): it is that vantage's vote, as fresh as its
    /// arrival; `None` withdraws it (the peer's lease ended).
    pub(super) fn on_verdict(
        &mut self,
        now: Instant,
        vantage: crate::VantageId,
        region: RegionId,
        health: Option<Health>,
    ) {
        if region.index() >= self.regions.len() || vantage.index() >= self.vantage_count {
            return;
        }
        let track = &mut self.vantages[region.index() * self.vantage_count + vantage.index()];
        let before = (track.state, track.withdrawn);
        match health {
            Some(h) => {
                track.state = h;
                track.withdrawn = false;
                track.leased = true;
                track.last = Some(now);
            }
            None => track.withdrawn = true,
        }
        if (track.state, track.withdrawn) != before {
            self.evaluate_region(now, region);
        }
    }

    /// Applies the vantage quorum after a vantage changed its vote.
    ///
    /// Votes older than `vote_expiry` intervals (by their results' `at`)
    /// have expired: they count neither way, and the quorum is taken among
    /// the vantages still reporting (a majority of them, or the configured
    /// quorum when that many remain). So a dead vantage cannot pin a region
    /// up, and with no vantage reporting the region keeps its state. A
    /// region whose users fail (passive health) is down whatever the votes.
    pub(super) fn evaluate_region(&mut self, now: Instant, id: RegionId) {
        let base = id.index() * self.vantage_count;
        let expiry = self.policy.interval.saturating_mul(self.policy.vote_expiry);
        let fresh = |v: &&VantageTrack| {
            !v.withdrawn
                && (expiry.is_zero()
                    || v.leased
                    || v.last
                        .is_none_or(|at| now.saturating_duration_since(at) <= expiry))
        };
        let votes = &self.vantages[base..base + self.vantage_count];
        let live = votes.iter().filter(fresh).count() as u32;
        let down = votes
            .iter()
            .filter(fresh)
            .filter(|v| v.state == Health::Down)
            .count() as u32;
        let up = votes
            .iter()
            .filter(fresh)
            .filter(|v| v.state == Health::Up)
            .count() as u32;
        let total = self.vantage_count as u32;
        let quorum = if live == total {
            self.quorum
        } else {
            self.quorum
                .min(self.policy.effective_quorum(live as usize))
                .max(1)
        };
        let passive = self.users_failing(id);
        let region = &self.regions[id.index()];
        let next = if passive {
            // Its users fail: down whatever the probes say.
            Health::Down
        } else if live == 0 {
            region.health
        } else if down >= quorum {
            Health::Down
        } else if up > live - quorum.min(live) {
            Health::Up
        } else {
            region.health
        };
        if next == region.health {
            return;
        }
        self.regions[id.index()].health = next;
        match next {
            Health::Down => {
                // Down by passive health alone: `UsersFailing` said why.
                if down >= quorum || !passive {
                    self.notify(
                        now,
                        EventKind::RegionDown {
                            region: id,
                            down_votes: down,
                            vantages: live,
                            quorum,
                        },
                    );
                }
                self.record_down(now, id);
            }
            Health::Up => {
                self.notify(
                    now,
                    EventKind::RegionUp {
                        region: id,
                        up_votes: up,
                        vantages: live,
                    },
                );
                let region = &self.regions[id.index()];
                if let Some(until) = region.out_until().filter(|t| now < *t) {
                    if region.damped_until.is_none_or(|d| d <= now) {
                        self.notify(now, EventKind::HeldDown { region: id, until });
                    }
                }
            }
            Health::Unknown => {}
        }
        if !self.paused {
            self.regions[id.index()].routed = next;
            self.recompute(now);
            self.evaluate_writer(now);
        }
    }

    /// Starts hold-down and counts the flap.
    fn record_down(&mut self, now: Instant, id: RegionId) {
        let hold = self.policy.hold_down;
        let window = self.policy.flap_window;
        let limit = self.policy.flap_limit as usize;
        let region = &mut self.regions[id.index()];
        region.held_until = Some(later(now, hold));
        while region
            .downs
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > window)
        {
            region.downs.pop_front();
        }
        if region.downs.len() >= limit {
            region.downs.pop_front();
        }
        region.downs.push_back(now);
        let already = region.damped_until.is_some_and(|t| now < t);
        if region.downs.len() >= limit || already {
            let until = later(now, window);
            region.damped_until = Some(until);
            let flaps = region.downs.len() as u32;
            self.notify(
                now,
                EventKind::FlapDamped {
                    region: id,
                    flaps,
                    until,
                },
            );
        }
    }
}
