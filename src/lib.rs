//! `failover`: survive a whole-region outage.
//!
//! This facade re-exports the member crates and holds the tokio [`runtime`]
//! that wires probes, the decision core, DNS and PostgreSQL together.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub use failover_core as core;
pub use failover_dns as dns;
pub use failover_pg as pg;
pub use failover_probe as probe;

pub mod runtime;

pub use runtime::{
    RetryPolicy, Runtime, RuntimeBuilder, RuntimeError, RuntimeHandle, RuntimeStatus,
};
