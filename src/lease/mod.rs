//! Guard leases of the single-controller default, over HTTP.
//!
//! In the embedded default there is no etcd: the running controller is the
//! coordination store. Each PostgreSQL node's guard
//! (`failover_pg::NodeGuard`) leases from it through a small HTTP/1.1 JSON
//! protocol: [`LeaseServer`] runs next to the controller, [`LeaseClient`]
//! implements [`GuardLease`](failover_core::ports::GuardLease) for the guard.
//!
//! # Protocol
//!
//! Every request carries the shared secret as `Authorization: Bearer
//! <secret>`; the server compares it in constant time. `<node>` is the node's
//! name in the topology (`pg-east`). Bodies are JSON, at most
//! [`MAX_BODY`] bytes; a request must arrive whole within the server's
//! request timeout.
//!
//! | request | body | success |
//! |---|---|---|
//! | `POST /v1/guard/<node>/renew` | `{"ttl_ms": 2000}` | `200 {"writer": {"node": "pg-east", "epoch": 3}}` (or `{"writer": null}`) |
//! | `POST /v1/guard/<node>/release` | empty | `200 {"released": true}` (`false`: was not held) |
//!
//! Errors are `{"error": "<sentence>"}` with status `400` (bad body or
//! `ttl_ms` outside [`MIN_TTL`]..=[`MAX_TTL`]), `401` (missing or wrong
//! secret), `404` (unknown node or path), `405` (not `POST`), `408` (request
//! not received in time), `413` (body too large).
//!
//! # Lease rules (server side)
//!
//! - A renewal grants the lease if it was not held and extends it to
//!   `received + ttl` (never shortens it), on tokio's monotonic clock.
//! - A lease not renewed for `ttl` after the last renewal the server
//!   *received* expires; a release ends it at once.
//! - Each transition is a [`CoordinationEvent::GuardLease`]
//!   (`held: true` on a grant, `false` on expiry or release) on the channel
//!   returned by [`LeaseServer::start`]; renewals of a held lease emit
//!   nothing.
//! - The reply carries the writer record the owner last set with
//!   [`LeaseServer::set_writer`].
//!
//! The guard measures its own deadline from when it *sent* the renewal, which
//! is never later than when the server received it, so the guard's deadline
//! (`sent + ttl − margin`) always falls before the server's expiry
//! (`received + ttl`): an expired lease proves the guard fenced its node.
//!
//! # Wiring
//!
//! ```no_run
//! use std::sync::Arc;
//! use failover::decision::{Epoch, NodeId};
//! use failover::lease::{LeaseClient, LeaseServer, LeaseServerConfig};
//! use failover::pg::{GuardSettings, NodeGuard, PgCluster};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let secret = std::env::var("FAILOVER_GUARD_SECRET")?;
//! // Next to the controller: serve leases, feed transitions to it.
//! let config = LeaseServerConfig::new("0.0.0.0:7070".parse()?, secret.clone())
//!     .node(NodeId(0), "pg-east")
//!     .node(NodeId(1), "pg-west");
//! let (server, mut events) = LeaseServer::start(config).await?;
//! server.set_writer_at(NodeId(0), Epoch(0));
//! tokio::spawn(async move {
//!     while let Some(event) = events.recv().await {
//!         println!("to the controller: {event:?}");
//!     }
//! });
//!
//! // Next to pg-east: its guard.
//! let lease = LeaseClient::new("http://10.0.0.1:7070", secret)?
//!     .with_node(NodeId(0), "pg-east")?
//!     .with_node(NodeId(1), "pg-west")?;
//! let pg = PgCluster::new().with_node(NodeId(0), "pg-east", "host=127.0.0.1 user=postgres")?;
//! let guard = NodeGuard::start(
//!     NodeId(0),
//!     "pg-east",
//!     GuardSettings::default(),
//!     Arc::new(lease),
//!     Arc::new(pg),
//! )?;
//! println!("{:?}", guard.status());
//! # Ok(()) }
//! ```
//!
//! [`CoordinationEvent::GuardLease`]: failover_core::CoordinationEvent::GuardLease

use std::time::Duration;

mod client;
mod server;
mod wire;

pub use client::LeaseClient;
pub use server::{LeaseServer, LeaseServerConfig, LeaseState};

/// Largest request body the server reads, bytes.
pub const MAX_BODY: usize = 4096;
/// Shortest lease a guard may ask for.
pub const MIN_TTL: Duration = Duration::from_millis(100);
/// Longest lease a guard may ask for.
pub const MAX_TTL: Duration = Duration::from_secs(600);

/// Why the lease transport failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LeaseError {
    /// A setting is invalid; names the field and the rule.
    #[error("lease transport setting `{field}`: {reason}")]
    Config {
        /// The setting.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// Binding the listener failed.
    #[error("lease server: cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The lease server could not be reached.
    #[error("lease server {url}: unreachable: {reason}")]
    Unreachable {
        /// The server.
        url: String,
        /// Why.
        reason: String,
    },
    /// The lease server did not answer within the client's timeout.
    #[error("lease server {url}: no answer within {after:?}")]
    Timeout {
        /// The server.
        url: String,
        /// The limit.
        after: Duration,
    },
    /// The server rejected the secret (401).
    #[error("lease server {url}: secret rejected (401): {message}")]
    Auth {
        /// The server.
        url: String,
        /// The server's sentence.
        message: String,
    },
    /// The server refused the request as invalid (400, 404, 405, 413).
    #[error("lease server {url}: request refused ({status}): {message}")]
    Refused {
        /// The server.
        url: String,
        /// HTTP status.
        status: u16,
        /// The server's sentence.
        message: String,
    },
    /// The server failed or answered something that makes no sense.
    #[error("lease server {url}: malformed reply: {reason}")]
    Malformed {
        /// The server.
        url: String,
        /// What was wrong.
        reason: String,
    },
}

impl LeaseError {
    /// The port error kind this failure maps to.
    pub fn kind(&self) -> failover_core::PortErrorKind {
        use failover_core::PortErrorKind as K;
        match self {
            LeaseError::Config { .. } | LeaseError::Bind { .. } => K::Config,
            LeaseError::Unreachable { .. } => K::Unavailable,
            LeaseError::Timeout { .. } => K::Timeout,
            LeaseError::Auth { .. } => K::Auth,
            LeaseError::Refused { .. } => K::Refused,
            LeaseError::Malformed { .. } => K::Malformed,
        }
    }
}

impl From<LeaseError> for failover_core::PortError {
    fn from(e: LeaseError) -> Self {
        failover_core::PortError::new(e.kind(), e)
    }
}

/// Constant-time equality of two secrets: the time taken depends only on the
/// lengths, never on where they first differ.
pub(crate) fn secrets_equal(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    diff == 0
}

/// Checks that a node name is usable in the URL path.
pub(crate) fn check_node_name(name: &str) -> Result<(), LeaseError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(LeaseError::Config {
            field: "node name",
            reason: format!(
                "{name:?} must be 1-128 characters of letters, digits, '-', '_' or '.'"
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_by_content_and_length() {
        assert!(secrets_equal(b"s3cret", b"s3cret"));
        assert!(!secrets_equal(b"s3cret", b"s3cre"));
        assert!(!secrets_equal(b"s3cret", b"s3cres"));
        assert!(!secrets_equal(b"", b"x"));
        assert!(secrets_equal(b"", b""));
    }

    #[test]
    fn node_names_must_fit_a_path_segment() {
        assert!(check_node_name("pg-east").is_ok());
        assert!(check_node_name("").is_err());
        assert!(check_node_name("a/b").is_err());
        assert!(check_node_name("a b").is_err());
    }
}
