//! [`GuardSettings`]: the guard's lease arithmetic, validated.

use std::net::SocketAddr;
use std::time::Duration;

use crate::PgError;

/// How a [`NodeGuard`](super::NodeGuard) holds its lease and when it fences.
///
/// The guard renews every [`renew_interval`](Self::renew_interval). From the
/// instant it *sent* the last successful renewal it has
/// `ttl − margin` before its deadline; it starts fencing
/// [`fence_budget`](Self::fence_budget) before that deadline, so that the
/// fence is done by then. The store expires the lease `ttl` after it
/// *received* that renewal, which is never earlier than it was sent: the
/// store sees the lease expire at least `margin` after the guard's deadline.
///
/// The [`margin`](Self::margin) absorbs what makes the guard's clock and the
/// store's disagree about "`ttl` later":
/// - **clock rate drift** — the two count on different oscillators. A
///   quartz clock is within ±100 ppm, and NTP slews at most 500 ppm, so over
///   one `ttl` the disagreement is at most `ρ·ttl` with `ρ ≤ 0.0005` (5 ms
///   for a 10 s lease). Both sides use monotonic clocks, so wall-clock steps
///   do not count; a suspended machine (whose monotonic clock stops) is a
///   process pause, below.
/// - **process pauses** — a guard stopped by the scheduler, a GC of a
///   neighbour, a VM steal or `SIGSTOP` does not run at its deadline. On
///   resume the guard checks the deadline *before anything else* (a reply
///   that arrived during the pause does not count: the deadline runs from
///   when the request was sent) and fences at once. The margin is the longest
///   pause the guard tolerates without the store's expiry overtaking its
///   fence; a longer pause is the case fate-sharing covers only if the pause
///   also froze PostgreSQL (same VM, same cgroup freeze).
/// - **the fence's own duration** is separate: [`fence_budget`] is how early
///   fencing starts, so a fence that takes up to the budget still completes
///   before the deadline.
///
/// Validation ([`validate`](Self::validate)) requires
/// `0 < margin < ttl`, `margin ≥ ttl / 1000` (twice the worst NTP slew),
/// `fence_budget > 0`, and `2 × renew_interval ≤ ttl − margin − fence_budget
/// − writer_drain`, so at least one retry fits between a failed renewal and
/// the moment the node endpoints start draining (and fencing must start).
///
/// With [`writer_drain`](Self::writer_drain) set, `/writer` answers 503 that
/// long before fencing starts when no renewal came: a load balancer that
/// checks `/writer` has marked the node down by the time it is fenced, so
/// no connection reaches a fenced node on an unplanned self-fence either.
///
/// [`fence_budget`]: Self::fence_budget
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuardSettings {
    /// Lease length asked of the store (default 10 s).
    pub ttl: Duration,
    /// Safety margin subtracted from `ttl` for the guard's own deadline
    /// (default 1 s). See the type docs for what it covers.
    pub margin: Duration,
    /// Time between renewals (default 2 s). Each renewal must complete
    /// within it, else it counts as failed.
    pub renew_interval: Duration,
    /// How long before its deadline the guard starts fencing: the longest a
    /// fence may take (default 2 s). With a kill switch
    /// ([`NodeGuard::start_with_kill`](super::NodeGuard::start_with_kill)),
    /// a fence not confirmed within three quarters of it is given up and the
    /// server killed: the kill (tens of milliseconds) has the last quarter
    /// and the [`margin`](Self::margin) before the store's expiry.
    pub fence_budget: Duration,
    /// Where to serve the node endpoints (`GET /writer`, `/replica`,
    /// `/health`) for load balancers, as Patroni's agent does; `None` (the
    /// default) serves nothing. Port 0 picks a free port:
    /// [`NodeGuard::http_addr`](super::NodeGuard::http_addr) tells which.
    /// See [`endpoints`](super::endpoints).
    pub http: Option<SocketAddr>,
    /// How long before fencing starts (its lease deadline less the fence
    /// budget) the node endpoints' `/writer` answers 503 when no renewal
    /// came, so a load balancer marks the node down before it is fenced.
    /// Set it to the time your load balancer needs (HAProxy: `inter × fall
    /// + inter`), as `policy.writer_drain` for a switchover. 0 (the
    /// default): `/writer` turns 503 with the fence.
    pub writer_drain: Duration,
}

impl Default for GuardSettings {
    fn default() -> Self {
        GuardSettings {
            ttl: Duration::from_secs(10),
            margin: Duration::from_secs(1),
            renew_interval: Duration::from_secs(2),
            fence_budget: Duration::from_secs(2),
            http: None,
            writer_drain: Duration::ZERO,
        }
    }
}

impl GuardSettings {
    /// Settings for a lease of `ttl`, the rest scaled from the defaults'
    /// proportions: margin `ttl/10`, fence budget `ttl/5`, renew interval
    /// `ttl/5` (2 s → 200 ms, 400 ms, 400 ms); no node endpoints, no drain.
    pub fn for_ttl(ttl: Duration) -> Self {
        GuardSettings {
            ttl,
            margin: ttl / 10,
            renew_interval: ttl / 5,
            fence_budget: ttl / 5,
            http: None,
            writer_drain: Duration::ZERO,
        }
    }

    /// Checks the rules in the type docs; the error names the field.
    pub fn validate(&self) -> Result<(), PgError> {
        let bad = |field: &'static str, reason: String| PgError::GuardSetting { field, reason };
        if self.ttl.is_zero() {
            return Err(bad("ttl", "must be above zero".into()));
        }
        if self.margin.is_zero() || self.margin >= self.ttl {
            return Err(bad(
                "margin",
                format!(
                    "{:?} must be above zero and below the ttl {:?}",
                    self.margin, self.ttl
                ),
            ));
        }
        if self.margin < self.ttl / 1000 {
            return Err(bad(
                "margin",
                format!(
                    "{:?} is below ttl/1000 = {:?}, twice the clock drift NTP may cause over one ttl",
                    self.margin,
                    self.ttl / 1000
                ),
            ));
        }
        if self.fence_budget.is_zero() {
            return Err(bad("fence_budget", "must be above zero".into()));
        }
        let usable = self.ttl - self.margin;
        if self.renew_interval >= usable {
            return Err(bad(
                "renew_interval",
                format!(
                    "{:?} must be well below ttl − margin = {usable:?}",
                    self.renew_interval
                ),
            ));
        }
        if self.fence_budget >= usable {
            return Err(bad(
                "fence_budget",
                format!(
                    "{:?} must be below ttl − margin = {usable:?}",
                    self.fence_budget
                ),
            ));
        }
        let before_fence = usable - self.fence_budget;
        if self.writer_drain >= before_fence {
            return Err(bad(
                "writer_drain",
                format!(
                    "{:?} must be below ttl − margin − fence_budget = {before_fence:?}: /writer would answer 503 right after a renewal",
                    self.writer_drain
                ),
            ));
        }
        if !self.renew_interval.is_zero()
            && !self.writer_drain.is_zero()
            && self.renew_interval * 2 > before_fence - self.writer_drain
        {
            return Err(bad(
                "writer_drain",
                format!(
                    "{:?} leaves no retry before the drain starts: twice the renew interval {:?} must fit in ttl − margin − fence_budget − writer_drain = {:?}",
                    self.writer_drain,
                    self.renew_interval,
                    before_fence - self.writer_drain
                ),
            ));
        }
        if self.renew_interval.is_zero() || self.renew_interval * 2 > usable - self.fence_budget {
            return Err(bad(
                "renew_interval",
                format!(
                    "{:?} leaves no retry: twice it must fit in ttl − margin − fence_budget = {:?}",
                    self.renew_interval,
                    usable - self.fence_budget
                ),
            ));
        }
        Ok(())
    }

    /// How long after sending a successful renewal the guard may count on
    /// it: `ttl − margin`.
    pub(crate) fn valid_for(&self) -> Duration {
        self.ttl - self.margin
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(s: GuardSettings) -> &'static str {
        match s.validate() {
            Err(PgError::GuardSetting { field, .. }) => field,
            other => panic!("expected a setting error, got {other:?}"),
        }
    }

    #[test]
    fn defaults_and_scaled_settings_are_valid() {
        assert!(GuardSettings::default().validate().is_ok());
        assert!(GuardSettings::for_ttl(Duration::from_secs(2))
            .validate()
            .is_ok());
    }

    #[test]
    fn each_rule_names_its_field() {
        let ok = GuardSettings::for_ttl(Duration::from_secs(2));
        assert_eq!(
            field(GuardSettings {
                ttl: Duration::ZERO,
                ..ok
            }),
            "ttl"
        );
        assert_eq!(
            field(GuardSettings {
                margin: Duration::ZERO,
                ..ok
            }),
            "margin"
        );
        assert_eq!(
            field(GuardSettings {
                margin: ok.ttl,
                ..ok
            }),
            "margin"
        );
        assert_eq!(
            field(GuardSettings {
                margin: Duration::from_micros(1),
                ..ok
            }),
            "margin"
        );
        assert_eq!(
            field(GuardSettings {
                fence_budget: Duration::ZERO,
                ..ok
            }),
            "fence_budget"
        );
        // renew interval ≥ ttl − margin
        assert_eq!(
            field(GuardSettings {
                renew_interval: ok.ttl - ok.margin,
                ..ok
            }),
            "renew_interval"
        );
        // below ttl − margin, but no retry fits before fencing must start
        assert_eq!(
            field(GuardSettings {
                renew_interval: Duration::from_millis(800),
                ..ok
            }),
            "renew_interval"
        );
        assert_eq!(
            field(GuardSettings {
                renew_interval: Duration::ZERO,
                ..ok
            }),
            "renew_interval"
        );
        // 2 s lease: 1.8 s usable, fencing starts at 1.4 s.
        assert_eq!(
            field(GuardSettings {
                writer_drain: Duration::from_millis(1400),
                ..ok
            }),
            "writer_drain"
        );
        // 400 ms renewals: two of them must fit in 1.4 s − drain.
        assert_eq!(
            field(GuardSettings {
                writer_drain: Duration::from_millis(700),
                ..ok
            }),
            "writer_drain"
        );
        assert!(GuardSettings {
            writer_drain: Duration::from_millis(600),
            ..ok
        }
        .validate()
        .is_ok());
    }
}
