//! What happened and why: every decision the controller takes is one [`Event`].

use std::time::Instant;

use crate::{NodeId, RegionId};

/// One decision or observation worth telling an operator, with its reason.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// When (the `now` of the call that produced it).
    pub at: Instant,
    /// What.
    pub kind: EventKind,
}

/// The kinds of [`Event`]. The controller's docs list when each is emitted.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum EventKind {
    /// Placeholder until the controller defines its events.
    RegionDown {
        /// The region.
        region: RegionId,
    },
    /// Placeholder until the controller defines its events.
    Promoted {
        /// The node.
        node: NodeId,
    },
}
