//! Every call into a plug-in adapter (router, database) runs under a
//! timeout and `catch_unwind`: an adapter that hangs fails with kind
//! `Timeout`, one that panics fails with kind `Malformed` and a message
//! saying so, and the worker that called it lives on.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use failover_core::{PortError, PortErrorKind};
use futures::FutureExt;

/// Why a guarded adapter call failed without the adapter saying so.
#[derive(Debug, thiserror::Error)]
pub(crate) enum GuardError {
    /// The adapter panicked.
    #[error("{call} panicked (a bug in the adapter): {message}")]
    Panicked {
        /// e.g. `router.apply`.
        call: &'static str,
        /// The panic's payload, if it was a string.
        message: String,
    },
    /// The adapter did not return in time.
    #[error("{call} did not return within {limit_ms} ms")]
    TimedOut {
        /// e.g. `database.promote`.
        call: &'static str,
        /// The limit, in milliseconds.
        limit_ms: u64,
    },
}

/// Runs one adapter call; `call` names it in errors, logs and metrics
/// (`failover_adapter_panics_total{call}`, `failover_adapter_timeouts_total{call}`).
pub(crate) async fn guarded<T>(
    call: &'static str,
    limit: Duration,
    work: impl Future<Output = Result<T, PortError>>,
) -> Result<T, PortError> {
    match tokio::time::timeout(limit, AssertUnwindSafe(work).catch_unwind()).await {
        Ok(Ok(result)) => result,
        Ok(Err(payload)) => {
            let message = panic_message(payload.as_ref());
            tracing::error!(call, %message, "adapter panicked; the action fails, the worker goes on");
            metrics::counter!("failover_adapter_panics_total", "call" => call).increment(1);
            Err(PortError::new(
                PortErrorKind::Malformed,
                GuardError::Panicked { call, message },
            ))
        }
        Err(_) => {
            let limit_ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
            tracing::warn!(call, limit_ms, "adapter call timed out");
            metrics::counter!("failover_adapter_timeouts_total", "call" => call).increment(1);
            Err(PortError::new(
                PortErrorKind::Timeout,
                GuardError::TimedOut { call, limit_ms },
            ))
        }
    }
}

/// The text of a panic payload (`panic!` with a literal or a format string).
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_adapter_call_is_a_failed_call_with_the_panic_message() {
        let error = guarded("router.apply", Duration::from_secs(1), async {
            if true {
                panic!("plug-in bug {}", 7);
            }
            Ok::<(), PortError>(())
        })
        .await
        .expect_err("a panic is an error");
        assert_eq!(error.kind(), PortErrorKind::Malformed);
        let text = error.to_string();
        assert!(
            text.contains("router.apply panicked") && text.contains("plug-in bug 7"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_hung_adapter_call_times_out() {
        let error = guarded(
            "database.fence",
            Duration::from_millis(20),
            std::future::pending::<Result<(), PortError>>(),
        )
        .await
        .expect_err("a hung call is an error");
        assert_eq!(error.kind(), PortErrorKind::Timeout);
        assert!(error
            .to_string()
            .contains("database.fence did not return within 20 ms"));
    }
}
