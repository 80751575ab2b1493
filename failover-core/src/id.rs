//! Compact identifiers for regions, vantages and database nodes.
//!
//! Names live in the [`Topology`](crate::Topology); the controller works with
//! these `Copy` indices so that handling a probe result never allocates or
//! hashes a string. Get them from the topology (`Topology::region_id("us-east")`).

use std::fmt;

macro_rules! index_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub u32);

        impl $name {
            /// The position of this item in its topology list.
            pub const fn index(self) -> usize {
                self.0 as usize
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "#{}"), self.0)
            }
        }
    };
}

index_id!(
    /// A region: one deployment of the service (for example `us-east`), an index
    /// into [`Topology::regions`](crate::Topology::regions).
    RegionId,
    "region"
);
index_id!(
    /// A vantage: one place probes run from, an index into
    /// [`Topology::vantages`](crate::Topology::vantages).
    VantageId,
    "vantage"
);
index_id!(
    /// A database node (PostgreSQL server), an index into
    /// [`Topology::nodes`](crate::Topology::nodes).
    NodeId,
    "node"
);
