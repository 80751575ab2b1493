//! Starts real servers on loopback for `failover`'s tests and examples:
//! PostgreSQL primaries and replicas, BIND, regional HTTP APIs, an etcd cluster,
//! and (feature `moto`) a Route 53 API server; and (`net`, Linux, as root)
//! regions as network namespaces with links to cut, for chaos drills; a
//! [`placement::Placement`] puts a PostgreSQL node or an etcd member in one.
//! Every server lives in a temp dir and is stopped when its handle drops.
// `net` enters network namespaces and signals process groups through libc;
// that one module allows `unsafe`, nowhere else does.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod bind;
pub mod etcd;
pub mod http;
#[cfg(feature = "moto")]
pub mod moto;
#[cfg(target_os = "linux")]
pub mod net;
pub mod placement;
pub mod postgres;
pub mod proxy;
