//! Passive health: what the service's own users experienced, as a health
//! signal next to the probes (Envoy's outlier detection). A service reports
//! request outcomes per upstream region ([`TrafficReport`]); the controller
//! aggregates them over [`PassivePolicy::window`] and judges each region by
//! the thresholds here.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::{duration_serde, ConfigError, RegionId};

/// Thresholds of passive health (`[policy.passive]`). Off unless the table is
/// present (`Policy::passive` is `None` by default).
///
/// A report that finds the region failing counts like a failed probe, and
/// one that finds it healthy like a successful one: `policy.fall` failing
/// judgements in a row mark the region's users failing, which takes the
/// region down the same way a probe quorum does (hold-down, flap damping,
/// `min_serving_regions` and `all_down` apply); `policy.rise` healthy ones
/// in a row clear it. A region's window is judged failing when, over at
/// least `min_requests` requests, the error rate exceeds `max_error_rate` or
/// the slow rate exceeds `latency.max_rate`; or when a reporter saw
/// `consecutive_5xx` errors in a row (whatever the count). When no report
/// has judged the region failing for a whole window and too few requests
/// remain in it to judge (a drained region gets no traffic), the failing
/// judgement expires and the probes alone decide again.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PassivePolicy {
    /// How far back request outcomes count.
    #[serde(with = "duration_serde")]
    pub window: Duration,
    /// Fewest requests in the window for a rate to be judged at all.
    pub min_requests: u32,
    /// Share of requests (0–1) that may fail (5xx, or no response) before the
    /// region is judged failing; the rate must be above it.
    pub max_error_rate: f64,
    /// Errors in a row, seen by one reporter, that judge the region failing
    /// whatever the request count. `None`: no such rule.
    pub consecutive_5xx: Option<u32>,
    /// A latency rule, if any.
    pub latency: Option<LatencyRule>,
}

impl Default for PassivePolicy {
    /// A 30 s window, at least 20 requests, more than 25 % errors, 5
    /// consecutive errors, no latency rule.
    fn default() -> Self {
        PassivePolicy {
            window: Duration::from_secs(30),
            min_requests: 20,
            max_error_rate: 0.25,
            consecutive_5xx: Some(5),
            latency: None,
        }
    }
}

/// Slow requests as a failure signal (`[policy.passive.latency]`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencyRule {
    /// A request slower than this counts as slow. Reporters classify with
    /// it (the facade's passive-health layer is configured from it).
    #[serde(with = "duration_serde")]
    pub threshold: Duration,
    /// Share of requests (0–1) that may be slow before the region is judged
    /// failing; the rate must be above it.
    pub max_rate: f64,
}

impl PassivePolicy {
    /// Checks every rule; errors name the field under `policy.passive`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.window.is_zero() {
            return Err(ConfigError::invalid(
                "policy.passive.window",
                "must be greater than 0",
            ));
        }
        if self.min_requests == 0 {
            return Err(ConfigError::invalid(
                "policy.passive.min_requests",
                "must be at least 1, got 0: a single request must not judge a region",
            ));
        }
        check_rate("policy.passive.max_error_rate", self.max_error_rate)?;
        if self.consecutive_5xx == Some(0) {
            return Err(ConfigError::invalid(
                "policy.passive.consecutive_5xx",
                "must be at least 1, got 0 (leave it out for no such rule)",
            ));
        }
        if let Some(latency) = &self.latency {
            if latency.threshold.is_zero() {
                return Err(ConfigError::invalid(
                    "policy.passive.latency.threshold",
                    "must be greater than 0",
                ));
            }
            check_rate("policy.passive.latency.max_rate", latency.max_rate)?;
        }
        Ok(())
    }
}

fn check_rate(field: &'static str, rate: f64) -> Result<(), ConfigError> {
    if !(rate > 0.0 && rate < 1.0) {
        return Err(ConfigError::invalid(
            field,
            format!("must be a share between 0 and 1 (exclusive), got {rate}"),
        ));
    }
    Ok(())
}

/// What one reporter (a service instance) saw of the requests served by
/// one region since its previous report, for
/// [`Input::Traffic`](crate::Input::Traffic).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrafficReport {
    /// The region that served (or was to serve) the requests.
    pub region: RegionId,
    /// When the reporter took the counts (the driver's clock): the end of
    /// the period they cover.
    pub at: Instant,
    /// Requests completed in the period.
    pub requests: u32,
    /// Of those, how many failed (a 5xx status, or no response).
    pub errors: u32,
    /// Of those, how many took longer than the latency threshold.
    pub slow: u32,
    /// Errors in a row at the end of the period, counting across periods
    /// (0 when the last request succeeded).
    pub consecutive_errors: u32,
}

/// Which passive-health rule judged a region's users failing, with its limit.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum TrafficRule {
    /// The error rate over the window was above `max` (a share, 0–1).
    ErrorRate {
        /// `policy.passive.max_error_rate`.
        max: f64,
    },
    /// The slow rate over the window was above `max` (a share, 0–1).
    SlowRate {
        /// `policy.passive.latency.max_rate`.
        max: f64,
        /// `policy.passive.latency.threshold`.
        threshold: Duration,
    },
    /// A reporter saw at least `limit` errors in a row.
    ConsecutiveErrors {
        /// `policy.passive.consecutive_5xx`.
        limit: u32,
    },
}
