//! The protocol's JSON bodies.

use serde::{Deserialize, Serialize};

/// `POST /v1/guard/<node>/renew` body.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RenewRequest {
    /// Lease length, milliseconds.
    pub(crate) ttl_ms: u64,
}

/// The writer record on the wire.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct WireWriter {
    /// The writer's node name.
    pub(crate) node: String,
    /// Its epoch.
    pub(crate) epoch: u64,
    /// A switchover drains it (its `/writer` turns 503); omitted when
    /// false, so servers and guards from before the field interoperate.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) draining: bool,
}

/// `renew` reply.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct RenewReply {
    /// The writer record the server holds (`null`: never set).
    pub(crate) writer: Option<WireWriter>,
}

/// `release` reply.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ReleaseReply {
    /// Whether a held lease was released.
    pub(crate) released: bool,
}

/// Error reply.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ErrorReply {
    /// A sentence saying what was wrong.
    pub(crate) error: String,
}
