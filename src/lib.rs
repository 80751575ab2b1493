//! `failover`: survive a whole-region outage.
//!
//! This facade re-exports the member crates. See README.md for the crate table.
#![forbid(unsafe_code)]

pub use failover_core as core;
pub use failover_dns as dns;
pub use failover_pg as pg;
pub use failover_probe as probe;
