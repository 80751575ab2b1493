//! The crate's one error type and its mapping onto core's [`PortError`].

use std::time::Duration;

use failover_core::{Epoch, Lsn, MaxRpo, NodeId, PortError, PortErrorKind};

/// Everything that can go wrong talking to, fencing, promoting or rejoining a
/// PostgreSQL node. Each variant names the node (by its configured name) and
/// says what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PgError {
    /// A node's DSN did not parse.
    #[error(
        "node {node}: DSN field `{field}` is invalid: {reason}; fix the node's connection string"
    )]
    Dsn {
        /// The node's name.
        node: String,
        /// The offending DSN field (`dsn` when the parser did not say which).
        field: String,
        /// The parser's message.
        reason: String,
    },
    /// A DSN was given for a name the topology does not have.
    #[error(
        "node {name} has a DSN but is not in the topology; add it as a [[node]] or remove the DSN"
    )]
    NotInTopology {
        /// The name given.
        name: String,
    },
    /// A topology node has no DSN.
    #[error("node {node} is in the topology but has no DSN; give one")]
    MissingDsn {
        /// The node's name.
        node: String,
    },
    /// The cluster has no node with this id.
    #[error("{node} is not configured in this PgCluster; add it with PgCluster::with_node")]
    UnknownNode {
        /// The id asked for.
        node: NodeId,
    },
    /// The node could not be reached (refused, reset, closed, DNS).
    #[error("node {node} is unreachable during {operation}: {reason}")]
    Unreachable {
        /// The node's name.
        node: String,
        /// What was being done.
        operation: &'static str,
        /// The underlying error.
        reason: String,
    },
    /// The node did not answer within the configured time.
    #[error("node {node}: {operation} timed out after {after:?}")]
    Timeout {
        /// The node's name.
        node: String,
        /// What was being done.
        operation: &'static str,
        /// The limit that passed.
        after: Duration,
    },
    /// The server rejected the credentials.
    #[error("node {node} rejected the credentials: {reason}; check user and password in its DSN and pg_hba.conf")]
    Auth {
        /// The node's name.
        node: String,
        /// The server's message.
        reason: String,
    },
    /// A query failed on the server.
    #[error("node {node}: {operation} failed: {reason}")]
    Query {
        /// The node's name.
        node: String,
        /// What was being done.
        operation: &'static str,
        /// The server's message (with SQLSTATE when known).
        reason: String,
    },
    /// The server answered something this crate cannot interpret.
    #[error("node {node}: unexpected reply to {operation}: {reason}")]
    Malformed {
        /// The node's name.
        node: String,
        /// What was being done.
        operation: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// Promotion was asked for a node that is not in recovery.
    #[error("node {node} is not a replica (pg_is_in_recovery() is false); promote a streaming replica instead")]
    NotAReplica {
        /// The node's name.
        node: String,
    },
    /// A switchover was asked from a node that is not the primary.
    #[error(
        "node {node} is not a primary (it is in recovery); switch over from the current primary"
    )]
    NotAPrimary {
        /// The node's name.
        node: String,
    },
    /// The epoch is not above one already recorded: a stale controller.
    #[error("node {node}: {requested} refused, {recorded} is already recorded on node {recorded_on}; resume after the recorded epoch")]
    StaleEpoch {
        /// The node the request was for.
        node: String,
        /// The epoch asked for.
        requested: Epoch,
        /// The highest epoch found.
        recorded: Epoch,
        /// Where it was found.
        recorded_on: String,
    },
    /// The candidate is further behind than the RPO gate allows.
    #[error("node {node}: promotion refused, lag {lag_bytes:?} bytes (received {received:?}, reference {reference:?}) and replay delay {delay:?} exceed max_rpo {max:?}; force the promotion to accept the loss")]
    LagExceeded {
        /// The node's name.
        node: String,
        /// Bytes of WAL the candidate has not received (None: unknown).
        lag_bytes: Option<u64>,
        /// What the candidate received.
        received: Option<Lsn>,
        /// The old primary's last known position.
        reference: Option<Lsn>,
        /// `now() - pg_last_xact_replay_timestamp()` on the candidate.
        delay: Option<Duration>,
        /// The limit.
        max: MaxRpo,
    },
    /// A planned switchover's candidate did not replay up to the old primary's
    /// final position in time.
    #[error("node {node}: replayed only up to {replayed:?}, needs {required} for a zero-loss switchover (waited {waited:?})")]
    NotCaughtUp {
        /// The node's name.
        node: String,
        /// The replay position reached.
        replayed: Option<Lsn>,
        /// The position required.
        required: Lsn,
        /// How long it waited.
        waited: Duration,
    },
    /// `pg_promote` returned false or the node stayed in recovery.
    #[error("node {node}: promotion did not complete: {reason}")]
    PromotionFailed {
        /// The node's name.
        node: String,
        /// What was seen.
        reason: String,
    },
    /// A fence could not be proven (some session of a fenced role survived).
    #[error("node {node}: fence not proven: {reason}")]
    FenceIncomplete {
        /// The node's name.
        node: String,
        /// What remained.
        reason: String,
    },
    /// A rejoin step failed on the local data directory.
    #[error("rejoin of {data_dir}: {step} failed: {reason}")]
    Rejoin {
        /// The data directory.
        data_dir: String,
        /// The step (`pg_ctl stop`, `pg_rewind`, ...).
        step: &'static str,
        /// Exit status and output, or the I/O error.
        reason: String,
    },
}

impl PgError {
    /// How core's runtime should treat this failure.
    pub fn kind(&self) -> PortErrorKind {
        match self {
            PgError::Dsn { .. }
            | PgError::UnknownNode { .. }
            | PgError::NotInTopology { .. }
            | PgError::MissingDsn { .. } => PortErrorKind::Config,
            PgError::Unreachable { .. } => PortErrorKind::Unavailable,
            PgError::Timeout { .. } => PortErrorKind::Timeout,
            PgError::Auth { .. } => PortErrorKind::Auth,
            PgError::Query { .. } | PgError::FenceIncomplete { .. } => PortErrorKind::Unavailable,
            PgError::Malformed { .. } => PortErrorKind::Malformed,
            PgError::NotAReplica { .. }
            | PgError::NotAPrimary { .. }
            | PgError::StaleEpoch { .. }
            | PgError::LagExceeded { .. }
            | PgError::NotCaughtUp { .. }
            | PgError::PromotionFailed { .. }
            | PgError::Rejoin { .. } => PortErrorKind::Refused,
        }
    }

    /// Classifies a `tokio_postgres` error from `operation` on `node`.
    pub(crate) fn from_pg(node: &str, operation: &'static str, e: tokio_postgres::Error) -> Self {
        use tokio_postgres::error::SqlState;
        let node = node.to_owned();
        if let Some(db) = e.as_db_error() {
            let code = db.code();
            if *code == SqlState::INVALID_PASSWORD
                || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
            {
                return PgError::Auth {
                    node,
                    reason: db.message().to_owned(),
                };
            }
            if *code == SqlState::INSUFFICIENT_PRIVILEGE {
                return PgError::Auth {
                    node,
                    reason: format!(
                        "{} during {operation}: the DSN's user must be a superuser",
                        db.message()
                    ),
                };
            }
            if *code == SqlState::CANNOT_CONNECT_NOW
                || *code == SqlState::ADMIN_SHUTDOWN
                || *code == SqlState::CRASH_SHUTDOWN
                || *code == SqlState::TOO_MANY_CONNECTIONS
            {
                return PgError::Unreachable {
                    node,
                    operation,
                    reason: db.message().to_owned(),
                };
            }
            return PgError::Query {
                node,
                operation,
                reason: format!("{} (SQLSTATE {})", db.message(), code.code()),
            };
        }
        let text = e.to_string();
        if text.contains("password missing") || text.contains("authentication") {
            return PgError::Auth { node, reason: text };
        }
        PgError::Unreachable {
            node,
            operation,
            reason: text,
        }
    }
}

impl From<PgError> for PortError {
    fn from(e: PgError) -> Self {
        PortError::new(e.kind(), e)
    }
}
