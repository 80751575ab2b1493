//! Retry with capped exponential backoff, and the time limits, for adapter calls.

use std::time::Duration;

/// How the runtime retries adapter calls that failed with a retryable error
/// ([`PortError::is_retryable`](failover_core::PortError::is_retryable)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Wait before the first retry.
    pub initial_backoff: Duration,
    /// Longest wait between retries (the backoff doubles up to this).
    pub max_backoff: Duration,
    /// Attempts at a promotion before it is reported failed. Weight plans are
    /// retried until applied or superseded: the latest plan must land.
    pub database_attempts: u32,
    /// Attempts at fencing the old primary. Default 1: an old primary that
    /// cannot be reached is the usual case in a regional outage, and the
    /// controller already decides what that means (promote with a greater
    /// epoch); retrying here would only delay the promotion.
    pub fence_attempts: u32,
    /// Longest one attempt at a weight plan (`TrafficRouter::apply`) or a
    /// fence may take; a call that outlives it fails with kind `Timeout`
    /// (retryable). Default 10 s.
    pub call_timeout: Duration,
    /// Longest one attempt at a promotion may take (it waits for the
    /// replica to replay and to accept writes). Default 90 s.
    pub promote_timeout: Duration,
}

impl Default for RetryPolicy {
    /// 100 ms doubling to 5 s; 5 attempts at a promotion, 1 at a fence;
    /// 10 s per router or fence call, 90 s per promotion.
    fn default() -> Self {
        RetryPolicy {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            database_attempts: 5,
            fence_attempts: 1,
            call_timeout: Duration::from_secs(10),
            promote_timeout: Duration::from_secs(90),
        }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt number `attempt` (1-based).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.saturating_sub(1).min(16);
        self.initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let r = RetryPolicy::default();
        assert_eq!(r.backoff(1), Duration::from_millis(100));
        assert_eq!(r.backoff(2), Duration::from_millis(200));
        assert_eq!(r.backoff(4), Duration::from_millis(800));
        assert_eq!(r.backoff(10), Duration::from_secs(5));
        assert_eq!(r.backoff(1000), Duration::from_secs(5));
    }
}
