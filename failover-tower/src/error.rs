//! The crate's errors.

use std::time::Duration;

/// What went wrong in this crate: a setting, the idempotency store, or
/// the remote status source.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A setting is invalid: the field and the rule.
    #[error("invalid `{field}`: {rule}")]
    Config {
        /// The setting.
        field: &'static str,
        /// The rule it breaks, and the value.
        rule: String,
    },
    /// The idempotency store's database failed.
    #[error("idempotency store: {what} on the writer failed: {source}")]
    Database {
        /// What the store was doing.
        what: &'static str,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The idempotency store's database did not answer in time.
    #[error("idempotency store: {what} on the writer took longer than {after:?}")]
    DatabaseTimeout {
        /// What the store was doing.
        what: &'static str,
        /// The limit.
        after: Duration,
    },
    /// The idempotency store failed to connect less than a second ago; it
    /// tries again after that.
    #[error("idempotency store: the writer was unreachable a moment ago ({reason}); trying again shortly")]
    Unavailable {
        /// The last connection failure.
        reason: String,
    },
    /// A key kept appearing and disappearing while it was claimed (other
    /// requests with it failing over and over).
    #[error(
        "idempotency store: the key was released and taken again three times while claiming it"
    )]
    KeyChurn,
    /// The remote controller's status could not be read.
    #[error("remote status from {url}: {reason}")]
    Remote {
        /// The status URL.
        url: String,
        /// What failed.
        reason: String,
    },
}
