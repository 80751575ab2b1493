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
    /// A [`GuardSettings`](crate::GuardSettings) field breaks a rule.
    #[error("guard setting `{field}`: {reason}")]
    GuardSetting {
        /// The field.
        field: &'static str,
        /// The rule it breaks, with the values.
        reason: String,
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
    /// The TLS handshake with the node failed: its certificate is not
    /// trusted under the DSN's `sslmode` and `sslrootcert` (wrong root,
    /// wrong host name, expired), or it does not offer TLS where
    /// `sslmode=require` or stricter asks for it. Kind `Auth`.
    #[error("node {node}: TLS handshake failed: {reason}; check the DSN's sslmode and sslrootcert and the server's certificate")]
    Tls {
        /// The node's name.
        node: String,
        /// What rustls or the server said.
        reason: String,
    },
    /// A query failed on the server. Its kind follows its SQLSTATE
    /// ([`sqlstate_kind`]).
    #[error("node {node}: {operation} failed: {reason}")]
    Query {
        /// The node's name.
        node: String,
        /// What was being done.
        operation: &'static str,
        /// The five-character SQLSTATE the server sent (`55P03`), `None` if
        /// it sent none.
        sqlstate: Option<String>,
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
    #[error("node {node}: promotion refused, lag {lag_bytes:?} bytes (received {received:?}, reference {reference}) and replay delay {delay:?} exceed max_rpo {max:?}; force the promotion to accept the loss")]
    LagExceeded {
        /// The node's name.
        node: String,
        /// Bytes of WAL the candidate has not received (None: unknown).
        lag_bytes: Option<u64>,
        /// What the candidate received.
        received: Option<Lsn>,
        /// The old primary's last known position: the controller's, or with
        /// none given the best position a reachable node reports.
        reference: RpoReference,
        /// `now() - pg_last_xact_replay_timestamp()` on the candidate.
        delay: Option<Duration>,
        /// The limit.
        max: MaxRpo,
    },
    /// The RPO gate has a byte limit but no position to measure the loss
    /// from: no reference was given and no reachable node, the candidate
    /// included, reports a WAL position.
    #[error("node {node}: promotion refused, the loss cannot be bounded by max_rpo {max:?}: missing {missing}; give the old primary's position, or force the promotion to accept an unknown loss")]
    RpoUnknown {
        /// The candidate's name.
        node: String,
        /// What is missing.
        missing: String,
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
    /// A standby did not become a caught-up synchronous standby of the
    /// primary in time (`PgCluster::set_synchronous`).
    #[error("node {node}: standby {standby} is not a caught-up synchronous standby in time ({state}); is it streaming, with application_name = its node name?")]
    NotSynchronous {
        /// The primary's name.
        node: String,
        /// The standby's name.
        standby: String,
        /// What was last seen of it.
        state: String,
    },
    /// A synchronous-standby configuration under a leadership token older
    /// than the newest one that configured the node: a deposed leader.
    #[error("node {node}: synchronous configuration under {requested} refused, the node was configured under {recorded} (a newer leader)")]
    StaleToken {
        /// The node's name.
        node: String,
        /// The token of the refused request.
        requested: failover_core::FencingToken,
        /// The newest token recorded on the node.
        recorded: failover_core::FencingToken,
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
    /// Kind `Conflict`: the node answered, so it is not unreachable, and it
    /// may still accept writes; retry the fence, never treat it as proof.
    #[error("node {node}: fence not proven: {reason}")]
    FenceIncomplete {
        /// The node's name.
        node: String,
        /// What remained.
        reason: String,
    },
    /// A fence was lifted but the node did not become writable in time.
    /// Kind `Conflict`: retry the (idempotent) unfence.
    #[error("node {node}: unfence not complete: {reason}; retry the unfence")]
    UnfenceIncomplete {
        /// The node's name.
        node: String,
        /// What was seen.
        reason: String,
    },
    /// The guard's last resort, killing the node's server, failed.
    #[error("killing the PostgreSQL server of {data_dir} failed: {reason}")]
    Kill {
        /// The data directory.
        data_dir: String,
        /// What failed.
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

/// An RPO gate's reference position and where it came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RpoReference {
    /// The controller's last observation of the old primary.
    Controller(Lsn),
    /// A reachable primary's flushed WAL (the controller gave none).
    Flushed {
        /// The node it was read on.
        node: NodeId,
        /// The position.
        lsn: Lsn,
    },
    /// The most WAL a reachable replica received (the controller gave none).
    Received {
        /// The node it was read on.
        node: NodeId,
        /// The position.
        lsn: Lsn,
    },
    /// No position was known anywhere.
    Nowhere,
}

impl RpoReference {
    /// The position, if one was known.
    pub fn lsn(self) -> Option<Lsn> {
        match self {
            RpoReference::Controller(l)
            | RpoReference::Flushed { lsn: l, .. }
            | RpoReference::Received { lsn: l, .. } => Some(l),
            RpoReference::Nowhere => None,
        }
    }
}

impl std::fmt::Display for RpoReference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RpoReference::Controller(l) => write!(f, "{l} (the controller's)"),
            RpoReference::Flushed { node, lsn } => write!(f, "{lsn} (flushed on {node:?})"),
            RpoReference::Received { node, lsn } => write!(f, "{lsn} (received by {node:?})"),
            RpoReference::Nowhere => f.write_str("unknown"),
        }
    }
}

impl PgError {
    /// How core's runtime should treat this failure.
    ///
    /// The controller acts on [`PortErrorKind`]: `Unavailable` and `Timeout` mean
    /// "the node could not be reached", `Conflict` means "retry after
    /// re-reading", `Refused`/`Auth`/`Config`/`Malformed` stop the retries. A
    /// failure is `Unavailable` only when the node really could not be talked
    /// to — never when it answered and the step failed:
    /// - a fence that did not complete ([`PgError::FenceIncomplete`]) is
    ///   `Conflict`: the node answered, so it is not unreachable, and it is not
    ///   fenced either, so the fence proves nothing; trying again may finish it;
    /// - a server error ([`PgError::Query`]) is classified by its SQLSTATE with
    ///   [`sqlstate_kind`] (connection class `08`, shutdown `57P01..57P03`, I/O
    ///   error `58030` and too many connections `53300` are `Unavailable`;
    ///   serialization failure, deadlock and lock timeout are `Conflict`;
    ///   a cancelled statement is `Timeout`; missing privilege is `Auth`; SQL
    ///   this crate wrote that the server does not understand is `Malformed`;
    ///   every other refusal, read-only transactions included, is `Refused`).
    pub fn kind(&self) -> PortErrorKind {
        match self {
            PgError::Dsn { .. }
            | PgError::UnknownNode { .. }
            | PgError::NotInTopology { .. }
            | PgError::MissingDsn { .. }
            | PgError::GuardSetting { .. } => PortErrorKind::Config,
            PgError::Unreachable { .. } => PortErrorKind::Unavailable,
            PgError::Timeout { .. } => PortErrorKind::Timeout,
            PgError::Auth { .. } | PgError::Tls { .. } => PortErrorKind::Auth,
            PgError::Query { sqlstate, .. } => match sqlstate {
                Some(code) => sqlstate_kind(code),
                None => PortErrorKind::Refused,
            },
            // Not `Unavailable`: the node answered and was not fenced, so
            // this is no evidence that it stopped writing.
            PgError::FenceIncomplete { .. } | PgError::UnfenceIncomplete { .. } => {
                PortErrorKind::Conflict
            }
            PgError::Malformed { .. } => PortErrorKind::Malformed,
            PgError::NotAReplica { .. }
            | PgError::NotAPrimary { .. }
            | PgError::StaleEpoch { .. }
            | PgError::LagExceeded { .. }
            | PgError::RpoUnknown { .. }
            | PgError::NotCaughtUp { .. }
            | PgError::NotSynchronous { .. }
            | PgError::StaleToken { .. }
            | PgError::PromotionFailed { .. }
            | PgError::Rejoin { .. }
            | PgError::Kill { .. } => PortErrorKind::Refused,
        }
    }

    /// Classifies a `tokio_postgres` error from `operation` on `node`:
    /// rejected credentials and missing privileges become [`PgError::Auth`],
    /// SQLSTATEs that mean the node is not serving ([`sqlstate_kind`] says
    /// `Unavailable`) and errors without a server reply (I/O, closed
    /// connection) become [`PgError::Unreachable`], every other server error
    /// [`PgError::Query`] with its SQLSTATE.
    pub(crate) fn from_pg(node: &str, operation: &'static str, e: tokio_postgres::Error) -> Self {
        let node = node.to_owned();
        if let Some(db) = e.as_db_error() {
            let code = db.code().code();
            if code.starts_with("28") {
                return PgError::Auth {
                    node,
                    reason: db.message().to_owned(),
                };
            }
            match sqlstate_kind(code) {
                PortErrorKind::Auth => {
                    return PgError::Auth {
                        node,
                        reason: format!(
                            "{} during {operation}: the DSN's user must be a superuser",
                            db.message()
                        ),
                    }
                }
                PortErrorKind::Unavailable => {
                    return PgError::Unreachable {
                        node,
                        operation,
                        reason: format!("{} (SQLSTATE {code})", db.message()),
                    }
                }
                _ => {}
            }
            return PgError::Query {
                node,
                operation,
                sqlstate: Some(code.to_owned()),
                reason: format!("{} (SQLSTATE {code})", db.message()),
            };
        }
        if let Some(reason) = crate::tls::tls_failure(&e) {
            return PgError::Tls { node, reason };
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

/// The [`PortErrorKind`] of a server error, by its SQLSTATE (see the
/// [`PgError::kind`] for why):
///
/// | SQLSTATE | meaning | kind |
/// |---|---|---|
/// | `08xxx` | connection exception | `Unavailable` |
/// | `57P01` `57P02` `57P03` | admin / crash shutdown, cannot connect now | `Unavailable` |
/// | `58030` | I/O error | `Unavailable` |
/// | `53300` | too many connections | `Unavailable` |
/// | `40001` `40P01` `55P03` | serialization failure, deadlock, lock not available | `Conflict` |
/// | `57014` | statement cancelled (`statement_timeout`) | `Timeout` |
/// | `28xxx` `42501` | authorization, insufficient privilege | `Auth` |
/// | `42xxx` (other), `22xxx`, `0A000` | SQL the server does not accept: version mismatch | `Malformed` |
/// | anything else (`25006` read-only transaction, `P0001` raised, ...) | a refusal | `Refused` |
pub fn sqlstate_kind(code: &str) -> PortErrorKind {
    match code {
        "57P01" | "57P02" | "57P03" | "58030" | "53300" => PortErrorKind::Unavailable,
        c if c.starts_with("08") => PortErrorKind::Unavailable,
        "40001" | "40P01" | "55P03" => PortErrorKind::Conflict,
        "57014" => PortErrorKind::Timeout,
        "42501" => PortErrorKind::Auth,
        c if c.starts_with("28") => PortErrorKind::Auth,
        "0A000" => PortErrorKind::Malformed,
        c if c.starts_with("42") || c.starts_with("22") => PortErrorKind::Malformed,
        _ => PortErrorKind::Refused,
    }
}

impl From<PgError> for PortError {
    fn from(e: PgError) -> Self {
        PortError::new(e.kind(), e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_map_to_kinds_and_only_unreachability_is_unavailable() {
        let table = [
            ("08000", PortErrorKind::Unavailable),
            ("08006", PortErrorKind::Unavailable),
            ("08P01", PortErrorKind::Unavailable),
            ("57P01", PortErrorKind::Unavailable),
            ("57P02", PortErrorKind::Unavailable),
            ("57P03", PortErrorKind::Unavailable),
            ("58030", PortErrorKind::Unavailable),
            ("53300", PortErrorKind::Unavailable),
            ("40001", PortErrorKind::Conflict),
            ("40P01", PortErrorKind::Conflict),
            ("55P03", PortErrorKind::Conflict),
            ("57014", PortErrorKind::Timeout),
            ("42501", PortErrorKind::Auth),
            ("28P01", PortErrorKind::Auth),
            ("28000", PortErrorKind::Auth),
            ("42601", PortErrorKind::Malformed),
            ("42P01", PortErrorKind::Malformed),
            ("42883", PortErrorKind::Malformed),
            ("22P02", PortErrorKind::Malformed),
            ("0A000", PortErrorKind::Malformed),
            ("25006", PortErrorKind::Refused),
            ("P0001", PortErrorKind::Refused),
            ("23505", PortErrorKind::Refused),
            ("53100", PortErrorKind::Refused),
            ("XX000", PortErrorKind::Refused),
        ];
        for (code, kind) in table {
            assert_eq!(sqlstate_kind(code), kind, "SQLSTATE {code}");
            let e = PgError::Query {
                node: "pg-east".into(),
                operation: "fence",
                sqlstate: Some(code.into()),
                reason: format!("server said no (SQLSTATE {code})"),
            };
            assert_eq!(e.kind(), kind, "Query with SQLSTATE {code}");
            let port: PortError = e.into();
            assert_eq!(port.kind(), kind);
            assert!(port.to_string().contains("pg-east"), "{port}");
        }
        let no_state = PgError::Query {
            node: "pg-east".into(),
            operation: "fence",
            sqlstate: None,
            reason: "?".into(),
        };
        assert_eq!(no_state.kind(), PortErrorKind::Refused);
    }

    #[test]
    fn an_incomplete_fence_is_retryable_but_never_unreachable() {
        let e = PgError::FenceIncomplete {
            node: "pg-east".into(),
            reason: "1 application session(s) still present".into(),
        };
        assert_eq!(e.kind(), PortErrorKind::Conflict);
        assert!(e.kind().is_retryable());
        assert_ne!(e.kind(), PortErrorKind::Unavailable);
        assert_ne!(e.kind(), PortErrorKind::Timeout);
    }
}
