//! The crate's one error type and its mapping onto [`PortError`].

use std::net::SocketAddr;
use std::time::Duration;

use failover_core::{FencingToken, PortError, PortErrorKind};

/// Everything that can go wrong in the DNS adapters.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DnsError {
    /// A configuration field is invalid; the message says how to fix it.
    #[error("invalid DNS adapter configuration: {field}: {reason}")]
    Config {
        /// The field, like `rfc2136.key_secret`.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The embedded server could not bind its UDP or TCP socket.
    #[error("embedded DNS server cannot bind {addr}: {source}; pick a free address or port")]
    Bind {
        /// The address it tried.
        addr: SocketAddr,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A weight plan names a region the topology does not have.
    #[error("weight plan names {region}, which is not in the topology ({regions} regions)")]
    UnknownRegion {
        /// The region id in the plan.
        region: failover_core::RegionId,
        /// How many regions the topology has.
        regions: usize,
    },
    /// The DNS server did not answer in time. Retryable.
    #[error(
        "DNS server {server} did not answer {what} within {after:?}; is it running and reachable?"
    )]
    Timeout {
        /// The server.
        server: SocketAddr,
        /// What was sent (`query`, `update`).
        what: &'static str,
        /// How long we waited.
        after: Duration,
    },
    /// Sending to or receiving from the DNS server failed at the socket level.
    #[error("cannot exchange {what} with DNS server {server}: {source}")]
    Io {
        /// The server.
        server: SocketAddr,
        /// What was sent.
        what: &'static str,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The server rejected our credentials (NOTAUTH, REFUSED, BADSIG, BADKEY,
    /// BADTIME) or its reply failed TSIG verification. Check the key name,
    /// secret and the zone's `update-policy`.
    #[error("DNS server {server} rejected the {what} for zone {zone}: {reason}; check the TSIG key name/secret and the zone's update-policy")]
    Auth {
        /// The server.
        server: SocketAddr,
        /// What was sent.
        what: &'static str,
        /// The zone.
        zone: String,
        /// Response code and TSIG error as the server sent them.
        reason: String,
    },
    /// An update prerequisite failed: the records changed since we read them.
    /// Retryable after re-reading.
    #[error(
        "DNS server {server}: records of {name} changed concurrently ({rcode}); re-read and retry"
    )]
    Conflict {
        /// The server.
        server: SocketAddr,
        /// The owner name.
        name: String,
        /// The response code (NXRRSET, YXRRSET…).
        rcode: String,
    },
    /// A newer leader's fencing token is in place: the plan comes from a
    /// deposed leader and does not stand. Either it was refused (by the
    /// router, or by the DNS server's prerequisite: then `rcode` is set) and
    /// changed nothing, or the newer leader overwrote it right after it was
    /// accepted (the read-back found the newer token). Not retryable: only
    /// the current leader may route traffic.
    #[error("{holder} holds {newer}, newer than this plan's {ours}: a newer leader's token is in place, so this plan of a deposed leader was refused{}", refused_by(.rcode))]
    StaleToken {
        /// Where the newer token lives, like
        /// `TXT _failover.api.example.test. on DNS server 127.0.0.1:53`.
        holder: String,
        /// The token the plan was issued under.
        ours: FencingToken,
        /// The newer token in place.
        newer: FencingToken,
        /// The server's response code when the DNS server itself refused
        /// the update (its prerequisite on the token failed); `None` when
        /// the router refused before sending anything.
        rcode: Option<String>,
    },
    /// The record meant to hold the fencing token holds something else,
    /// so the token in place cannot be compared. Not retryable: delete the
    /// record or choose another owner name.
    #[error("DNS server {server}: the TXT record {name} holds {found:?}, not one \"token=N\" string; delete it or set rfc2136.token_name to a name nothing else uses")]
    TokenRecord {
        /// The server.
        server: SocketAddr,
        /// The owner name of the token record.
        name: String,
        /// The TXT strings found.
        found: Vec<String>,
    },
    /// After a successful update, reading the records back did not give what
    /// was written.
    #[error(
        "DNS server {server}: after the update {name} serves {found:?}, expected {expected:?}"
    )]
    VerifyMismatch {
        /// The server.
        server: SocketAddr,
        /// The owner name.
        name: String,
        /// What we expected, sorted.
        expected: Vec<String>,
        /// What the server returned, sorted.
        found: Vec<String>,
    },
    /// The server answered with something that makes no sense.
    #[error("DNS server {server} sent a malformed reply to the {what}: {reason}")]
    Malformed {
        /// The server.
        server: SocketAddr,
        /// What was sent.
        what: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// The server answered with an error code that says it cannot serve now
    /// (SERVFAIL). Retryable.
    #[error("DNS server {server} failed the {what}: {rcode}")]
    ServerFailure {
        /// The server.
        server: SocketAddr,
        /// What was sent.
        what: &'static str,
        /// The response code.
        rcode: String,
    },
    /// The embedded server this router belongs to was shut down or dropped:
    /// a plan applied now would be served by nobody. Keep the
    /// [`EmbeddedDns`](crate::EmbeddedDns) alive as long as its router is in
    /// use. Retryable only in the sense that a new server may be started.
    #[error("embedded DNS server {addr} stopped: it no longer answers, so plans cannot be served; keep the EmbeddedDns alive while its router is in use")]
    Stopped {
        /// The address the server answered on.
        addr: SocketAddr,
    },
    /// A Route 53 API call was answered with an error; `code` and `message`
    /// are Route 53's own (like `InvalidChangeBatch` and why), and `kind`
    /// says whether to retry: `Malformed` for a refused change batch,
    /// `Auth` for rejected credentials, `Config` for a hosted zone that does
    /// not exist, `Unavailable` for throttling that outlasted the retries or
    /// a server error.
    #[error("Route 53 {operation} on hosted zone {zone} failed: {code}: {message}")]
    Route53 {
        /// The API operation, like `ChangeResourceRecordSets`.
        operation: &'static str,
        /// The hosted zone id.
        zone: String,
        /// Route 53's error code.
        code: String,
        /// Route 53's message.
        message: String,
        /// What the runtime should make of it.
        kind: PortErrorKind,
    },
    /// The Route 53 endpoint could not be reached, or did not answer in
    /// time, or no credentials could be found for it (`kind` is
    /// `Unavailable`, `Timeout` or `Auth`).
    #[error("cannot call Route 53 {operation} at {endpoint}: {reason}")]
    Route53Transport {
        /// The endpoint (`https://route53.amazonaws.com` unless overridden).
        endpoint: String,
        /// The API operation.
        operation: &'static str,
        /// What failed, with the SDK's whole error chain.
        reason: String,
        /// `Unavailable`, `Timeout` or `Auth`.
        kind: PortErrorKind,
    },
    /// Route 53 accepted a change but did not report it `INSYNC` (served by
    /// every Route 53 name server) before the deadline. Retryable: the
    /// change may still complete.
    #[error("Route 53 change {change_id} on hosted zone {zone} was still {status} after {after:?}; raise route53.insync_timeout or check the Route 53 service health")]
    Route53NotInSync {
        /// The hosted zone id.
        zone: String,
        /// The change id returned by `ChangeResourceRecordSets`.
        change_id: String,
        /// The last status seen (`PENDING`).
        status: String,
        /// How long we polled.
        after: Duration,
    },
    /// After an accepted change, `ListResourceRecordSets` did not give what
    /// was written: something else changed the records concurrently.
    /// Retryable after re-reading.
    #[error("Route 53 hosted zone {zone}: after the change {name} holds {found:?}, expected {expected:?}")]
    Route53Mismatch {
        /// The hosted zone id.
        zone: String,
        /// The record name and type, like `api.example.com. A`.
        name: String,
        /// What we wrote, one entry per record set, sorted.
        expected: Vec<String>,
        /// What Route 53 returned, sorted.
        found: Vec<String>,
    },
    /// The TXT record meant to hold the fencing token in a Route 53 zone
    /// holds something else. Not retryable: delete the record or set
    /// `route53.token_name` to a name nothing else uses.
    #[error("Route 53 hosted zone {zone}: the TXT record {name} holds {found:?}, not one \"token=N …\" string; delete it or set route53.token_name to a name nothing else uses")]
    Route53TokenRecord {
        /// The hosted zone id.
        zone: String,
        /// The owner name of the token record.
        name: String,
        /// The TXT values found.
        found: Vec<String>,
    },
    /// Encoding or signing a message failed (a bug or an unusable key).
    #[error("cannot encode the {what}: {reason}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// The encoder's error.
        reason: String,
    },
}

impl DnsError {
    /// The port-level kind, which tells the runtime whether to retry.
    pub fn kind(&self) -> PortErrorKind {
        match self {
            DnsError::Config { .. } | DnsError::Bind { .. } | DnsError::UnknownRegion { .. } => {
                PortErrorKind::Config
            }
            DnsError::Timeout { .. } => PortErrorKind::Timeout,
            DnsError::Io { .. } | DnsError::ServerFailure { .. } | DnsError::Stopped { .. } => {
                PortErrorKind::Unavailable
            }
            DnsError::Auth { .. } => PortErrorKind::Auth,
            DnsError::StaleToken { .. } => PortErrorKind::Refused,
            DnsError::TokenRecord { .. } => PortErrorKind::Malformed,
            DnsError::Conflict { .. } | DnsError::VerifyMismatch { .. } => PortErrorKind::Conflict,
            DnsError::Malformed { .. } | DnsError::Encode { .. } => PortErrorKind::Malformed,
            DnsError::Route53 { kind, .. } | DnsError::Route53Transport { kind, .. } => *kind,
            DnsError::Route53NotInSync { .. } => PortErrorKind::Timeout,
            DnsError::Route53Mismatch { .. } => PortErrorKind::Conflict,
            DnsError::Route53TokenRecord { .. } => PortErrorKind::Malformed,
        }
    }

    pub(crate) fn config(field: &'static str, reason: impl Into<String>) -> Self {
        DnsError::Config {
            field,
            reason: reason.into(),
        }
    }
}

/// The tail of a [`DnsError::StaleToken`] message: who refused.
fn refused_by(rcode: &Option<String>) -> String {
    match rcode {
        Some(code) => format!(" (refused by the DNS server: the update's prerequisite on the token failed with {code})"),
        None => String::new(),
    }
}

impl From<DnsError> for PortError {
    fn from(e: DnsError) -> Self {
        PortError::new(e.kind(), e)
    }
}
