//! DNS adapters for `failover`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod answer;
mod authority;
mod embedded;
mod error;
mod name;

pub use answer::Selection;
pub use embedded::{EmbeddedConfig, EmbeddedDns, EmbeddedRouter};
pub use error::DnsError;
