//! What a health probe observed, in the controller's terms.

use std::time::{Duration, Instant};

use crate::{RegionId, VantageId};

/// One probe of one region from one vantage, ready for
/// [`Controller::handle`](crate::Controller::handle) as [`Input::Probe`](crate::Input::Probe).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeResult {
    /// The region that was probed.
    pub region: RegionId,
    /// Where the probe ran from.
    pub vantage: VantageId,
    /// When the probe finished (the driver's clock).
    pub at: Instant,
    /// What it saw.
    pub outcome: ProbeOutcome,
}

/// The result of a single probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// The target answered as expected; `latency` is from the start of the
    /// connection attempt to the end of the check.
    Ok {
        /// Time the whole check took.
        latency: Duration,
    },
    /// The target failed the check, and why.
    Failed(ProbeFailure),
}

impl ProbeOutcome {
    /// Whether the probe succeeded.
    pub const fn is_ok(&self) -> bool {
        matches!(self, ProbeOutcome::Ok { .. })
    }
}

/// Why a probe failed. Kept `Copy` (no strings) so results move through the
/// controller without allocating; adapters log the detail themselves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProbeFailure {
    /// The host actively refused the connection (RST).
    Refused,
    /// The target's name did not resolve.
    NameResolution,
    /// No connection was established within the connect timeout.
    ConnectTimeout,
    /// Connected, but no complete response arrived within the response timeout.
    ResponseTimeout,
    /// The response status was not in the expected set.
    Status(u16),
    /// The body did not contain the expected text within the inspected prefix.
    BodyMismatch,
    /// The TLS handshake or certificate verification failed.
    Tls,
    /// The peer spoke something that is not valid HTTP (or closed mid-response).
    Protocol,
    /// Any other I/O error (reset, unreachable network, ...).
    Io,
}

impl std::fmt::Display for ProbeFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProbeFailure::Refused => f.write_str("connection refused"),
            ProbeFailure::NameResolution => f.write_str("name resolution failed"),
            ProbeFailure::ConnectTimeout => f.write_str("connect timeout"),
            ProbeFailure::ResponseTimeout => f.write_str("response timeout"),
            ProbeFailure::Status(code) => write!(f, "unexpected status {code}"),
            ProbeFailure::BodyMismatch => f.write_str("body did not match"),
            ProbeFailure::Tls => f.write_str("TLS error"),
            ProbeFailure::Protocol => f.write_str("malformed response"),
            ProbeFailure::Io => f.write_str("I/O error"),
        }
    }
}
