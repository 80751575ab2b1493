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
    #[error("idempotency store: {what} on the writer failed: {}", detail(source))]
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
    /// The handler used an [`IdempotentTx`](crate::IdempotentTx) after the
    /// layer had ended its transaction (a task the handler spawned, say):
    /// nothing ran.
    #[error("idempotency: the request's transaction has already ended; the statement did not run")]
    TransactionEnded,
    /// The remote controller's status could not be read.
    #[error("remote status from {url}: {reason}")]
    Remote {
        /// The status URL.
        url: String,
        /// What failed.
        reason: String,
    },
}

impl Error {
    /// Whether this failure says the writer is gone or no longer takes
    /// writes: the connection broke, the server shut down or terminated the
    /// session (a fence does), or the node is read-only (a fenced or demoted
    /// primary, a replica). Then no connection to it is reused, and the next
    /// request connects again. A timeout alone is not enough: a loaded
    /// writer is slow on every connection, and reconnecting them all would
    /// only add to its load.
    pub(crate) fn writer_suspect(&self) -> bool {
        match self {
            Error::Database { source, .. } => {
                if source.is_closed() {
                    return true;
                }
                match source.code() {
                    // An I/O error; not a client-side one (a row count, a
                    // type conversion), which leaves the connection fine.
                    None => {
                        let mut cause = std::error::Error::source(source);
                        while let Some(e) = cause {
                            if e.is::<std::io::Error>() {
                                return true;
                            }
                            cause = e.source();
                        }
                        false
                    }
                    Some(code) => {
                        let code = code.code();
                        code.starts_with("08")
                            || code.starts_with("57P")
                            || code
                                == tokio_postgres::error::SqlState::READ_ONLY_SQL_TRANSACTION.code()
                    }
                }
            }
            Error::Unavailable { .. } => true,
            Error::DatabaseTimeout { .. }
            | Error::Config { .. }
            | Error::TransactionEnded
            | Error::Remote { .. } => false,
        }
    }

    /// Whether the connection this failure happened on cannot be used any
    /// more: the writer is suspect, or a statement timed out (it may still
    /// be running).
    pub(crate) fn connection_unusable(&self) -> bool {
        self.writer_suspect() || matches!(self, Error::DatabaseTimeout { .. })
    }

    /// Whether this failure aborted the server's transaction: the server
    /// refused a statement, or the connection is gone. A client-side error
    /// (the wrong number of rows, a type conversion) did not.
    pub(crate) fn aborts_transaction(&self) -> bool {
        match self {
            Error::Database { source, .. } => source.code().is_some() || self.connection_unusable(),
            _ => self.connection_unusable(),
        }
    }

    /// The SQLSTATE of a failure PostgreSQL reported (a constraint violation,
    /// a read-only node…), for a handler that answers by it.
    pub fn code(&self) -> Option<&tokio_postgres::error::SqlState> {
        match self {
            Error::Database { source, .. } => source.code(),
            _ => None,
        }
    }
}

/// The server's own words for a database error (the driver's `Display`
/// says only "db error"), or the driver's for anything else.
fn detail(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        None => error.to_string(),
    }
}
