//! DNS adapters for `failover`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod answer;
mod authority;
mod embedded;
mod error;
mod name;
mod rfc2136;
mod transport;

pub use answer::Selection;
pub use embedded::{EmbeddedConfig, EmbeddedDns, EmbeddedRouter};
pub use error::DnsError;
pub use rfc2136::{LiveRecords, Rfc2136Config, Rfc2136Router};
