//! The crate's one error type and its mapping onto core's [`PortError`].

use std::time::Duration;

use failover_core::{PortError, PortErrorKind};

/// Everything that can go wrong configuring or talking to etcd. Each variant
/// names the setting, the endpoints or the key, and says what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EtcdError {
    /// A setting breaks a rule of its own.
    #[error("etcd setting `{setting}` = {value} is invalid: {rule}")]
    Setting {
        /// The setting's name (`endpoints`, `lease_ttl`, ...).
        setting: &'static str,
        /// The value given, as written.
        value: String,
        /// The rule it breaks and what to do.
        rule: String,
    },
    /// A lease TTL too short for the probe interval.
    #[error("etcd setting `{setting}` = {ttl:?} is too short for `policy.interval` = {interval:?}: a lease must last at least 2 × policy.interval ({min:?}) so one slow probe round cannot cost it; raise `{setting}` or lower `policy.interval`")]
    TtlTooShort {
        /// The lease setting (`lease_ttl`, `guard_ttl`).
        setting: &'static str,
        /// Its value.
        ttl: Duration,
        /// The policy's probe interval.
        interval: Duration,
        /// The least TTL allowed.
        min: Duration,
    },
    /// A name used in the store is not in the topology.
    #[error("{what} `{name}` is not in the topology; {hint}")]
    UnknownName {
        /// What kind of name (`vantage`, `node`, `region`).
        what: &'static str,
        /// The name or id given.
        name: String,
        /// What to do.
        hint: &'static str,
    },
    /// No etcd endpoint could be reached, or the cluster is not serving
    /// (no leader, not enough members).
    #[error("etcd at {endpoints} unavailable during {operation}: {reason}; check that the endpoints are right and a majority of members runs")]
    Unavailable {
        /// The configured endpoints.
        endpoints: String,
        /// What was being done.
        operation: &'static str,
        /// The client's or server's message.
        reason: String,
    },
    /// etcd did not answer within the configured time.
    #[error("etcd at {endpoints}: {operation} timed out after {after:?} (request_timeout); check that the endpoints are right and a majority of members runs")]
    Timeout {
        /// The configured endpoints.
        endpoints: String,
        /// What was being done.
        operation: &'static str,
        /// The limit that passed.
        after: Duration,
    },
    /// etcd rejected the credentials or the operation's permissions.
    #[error("etcd at {endpoints} refused {operation} (authentication): {reason}")]
    Auth {
        /// The configured endpoints.
        endpoints: String,
        /// What was being done.
        operation: &'static str,
        /// The server's message.
        reason: String,
    },
    /// A conditional write's comparison failed: a stale token or an
    /// unexpected writer record. Nothing was changed.
    #[error("{operation} refused: {reason}")]
    Refused {
        /// What was being done.
        operation: &'static str,
        /// Which condition failed.
        reason: String,
    },
    /// Something the request relied on is gone at etcd (gRPC `NotFound`,
    /// such as a lease that expired meanwhile). Retry after re-reading.
    #[error("etcd at {endpoints}: {operation} found something gone: {reason}")]
    Gone {
        /// The configured endpoints.
        endpoints: String,
        /// What was being done.
        operation: &'static str,
        /// The server's message.
        reason: String,
    },
    /// A key under the service prefix holds something this crate cannot read.
    #[error("etcd key {key} holds an unreadable value: {reason}; rewrite or delete the key")]
    Malformed {
        /// The full key.
        key: String,
        /// What was wrong.
        reason: String,
    },
}

impl EtcdError {
    /// How core's runtime should treat this failure.
    pub fn kind(&self) -> PortErrorKind {
        match self {
            EtcdError::Setting { .. }
            | EtcdError::TtlTooShort { .. }
            | EtcdError::UnknownName { .. } => PortErrorKind::Config,
            EtcdError::Unavailable { .. } => PortErrorKind::Unavailable,
            EtcdError::Timeout { .. } => PortErrorKind::Timeout,
            EtcdError::Auth { .. } => PortErrorKind::Auth,
            EtcdError::Refused { .. } => PortErrorKind::Refused,
            EtcdError::Gone { .. } => PortErrorKind::Conflict,
            EtcdError::Malformed { .. } => PortErrorKind::Malformed,
        }
    }

    /// Classifies an `etcd_client` error from `operation`.
    pub(crate) fn from_client(
        endpoints: &str,
        operation: &'static str,
        e: etcd_client::Error,
    ) -> Self {
        use etcd_client::Error as E;
        let endpoints = endpoints.to_owned();
        match e {
            E::GRpcStatus(status) => {
                let reason = format!("{:?}: {}", status.code(), status.message());
                match i32::from(status.code()) {
                    tonic_code::Unauthenticated | tonic_code::PermissionDenied => EtcdError::Auth {
                        endpoints,
                        operation,
                        reason,
                    },
                    tonic_code::NotFound => EtcdError::Gone {
                        endpoints,
                        operation,
                        reason,
                    },
                    tonic_code::DeadlineExceeded => EtcdError::Timeout {
                        endpoints,
                        operation,
                        after: Duration::ZERO,
                    },
                    tonic_code::InvalidArgument | tonic_code::FailedPrecondition => {
                        EtcdError::Refused {
                            operation,
                            reason: format!("etcd at {endpoints} rejected it: {reason}"),
                        }
                    }
                    _ => EtcdError::Unavailable {
                        endpoints,
                        operation,
                        reason,
                    },
                }
            }
            E::InvalidArgs(reason) => EtcdError::Setting {
                setting: "endpoints",
                value: endpoints,
                rule: reason,
            },
            E::InvalidUri(reason) => EtcdError::Setting {
                setting: "endpoints",
                value: endpoints,
                rule: format!("not a URI: {reason}"),
            },
            other => EtcdError::Unavailable {
                endpoints,
                operation,
                reason: other.to_string(),
            },
        }
    }
}

/// gRPC status codes (`tonic::Code` as numbers; etcd-client does not
/// re-export the enum and these numbers are fixed by the gRPC spec).
#[allow(non_upper_case_globals)]
mod tonic_code {
    pub(crate) const InvalidArgument: i32 = 3;
    pub(crate) const DeadlineExceeded: i32 = 4;
    pub(crate) const NotFound: i32 = 5;
    pub(crate) const PermissionDenied: i32 = 7;
    pub(crate) const FailedPrecondition: i32 = 9;
    pub(crate) const Unauthenticated: i32 = 16;
}

impl From<EtcdError> for PortError {
    fn from(e: EtcdError) -> Self {
        PortError::new(e.kind(), e)
    }
}
