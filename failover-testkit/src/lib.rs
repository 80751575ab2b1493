//! Starts real servers on loopback for `failover`'s tests and examples:
//! PostgreSQL primaries and replicas, BIND, regional HTTP APIs, an etcd cluster,
//! and (feature `moto`) a Route 53 API server.
//! Every server lives in a temp dir and is stopped when its handle drops.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod bind;
pub mod etcd;
pub mod http;
#[cfg(feature = "moto")]
pub mod moto;
pub mod postgres;
pub mod proxy;
