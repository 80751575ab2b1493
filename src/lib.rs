//! `failover`: survive a whole-region outage.
//!
//! This facade re-exports the member crates and holds the tokio [`runtime`]
//! that wires probes, the decision core, DNS and PostgreSQL together.
//!
//! | module | crate | feature | what |
//! |---|---|---|---|
//! | [`decision`] | `failover-core` | always | the sans-IO Controller, policy, RTO/RPO arithmetic, simulator, port traits |
//! | `probe` | `failover-probe` | `probe` | HTTP(S)/TCP probes and their scheduler |
//! | `dns` | `failover-dns` | `dns` | embedded authoritative DNS; RFC 2136 + TSIG |
//! | `pg` | `failover-pg` | `pg` | PostgreSQL status, fencing, promotion, switchover, rejoin, node guard |
//! | `etcd` | `failover-etcd` | `etcd` | controllers in every region, coordinated through etcd |
//! | [`lease`] | (here) | always | guard leases of the single-controller default over HTTP |
//! | `runtime::admin` | (here) | `admin` | the operator's HTTP API: status, Prometheus metrics, commands, history |
//!
//! (The decision core is re-exported as `decision`, not `core`: a module
//! named `core` would shadow Rust's own `core` crate for anyone who writes
//! `use failover::decision`.)
//!
//! A controller service of your own, in a few lines:
//!
//! ```no_run
//! use std::sync::Arc;
//! use failover::dns::{EmbeddedConfig, EmbeddedDns};
//! use failover::pg::PgCluster;
//! use failover::probe::{HttpProbe, HttpProbeConfig};
//! use failover::RuntimeBuilder;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let builder = RuntimeBuilder::from_config_file("failover.toml")?;
//! let config = builder.config().clone();
//! let topology = config.topology();
//!
//! // Serve the service's name from the current plan. Keep `dns` alive as
//! // long as the runtime runs: once it is dropped, its router refuses plans.
//! let dns = EmbeddedDns::bind("0.0.0.0:53".parse()?, topology, config.policy(),
//!     EmbeddedConfig::new("example.com.")).await?;
//! // One HTTP probe per region, from this vantage.
//! let vantage = topology.vantage_id("local").ok_or("no vantage 'local'")?;
//! let mut builder = builder.router(Arc::new(dns.router()));
//! for (region, url) in [("us-east", "http://10.0.0.10/healthz"), ("us-west", "http://10.1.0.10/healthz")] {
//!     let id = topology.region_id(region).ok_or("unknown region")?;
//!     builder = builder.probe(id, vantage, Arc::new(HttpProbe::new(HttpProbeConfig::from_url(url)?)?));
//! }
//! // The database nodes named in the topology.
//! let pg = PgCluster::new()
//!     .with_node(topology.node_id("pg-east").ok_or("no pg-east")?, "pg-east", "host=10.0.0.5 user=postgres")?
//!     .with_node(topology.node_id("pg-west").ok_or("no pg-west")?, "pg-west", "host=10.1.0.5 user=postgres")?;
//!
//! let runtime = builder.database(Arc::new(pg)).audit_log("failover-audit.jsonl").start().await?;
//! let handle = runtime.handle();
//! println!("{:?}", handle.status().controller.regions);
//! tokio::signal::ctrl_c().await?;
//! runtime.shutdown().await;
//! dns.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! # Your own probe and traffic router
//!
//! The adapters are plain traits in [`decision::ports`]; implement them with
//! [`macro@async_trait`] (re-exported here, so you need no dependency on
//! `async-trait`) and hand them to the [`RuntimeBuilder`]. Below, a probe
//! that checks a health flag file your deploy tooling maintains, and a router
//! standing in for your load balancer's API; the runtime drains the region
//! whose flag disappears.
//!
//! ```
//! use std::path::PathBuf;
//! use std::sync::Arc;
//! use std::time::{Duration, Instant};
//!
//! use failover::async_trait;
//! use failover::decision::ports::{Probe, TrafficRouter};
//! use failover::decision::{
//!     Config, PortError, ProbeFailure, ProbeOutcome, RegionWeight, WeightPlan,
//! };
//! use failover::RuntimeBuilder;
//! use tokio::sync::watch;
//!
//! /// Healthy while the region's flag file exists.
//! struct FlagFile(PathBuf);
//!
//! #[async_trait]
//! impl Probe for FlagFile {
//!     async fn check(&self) -> ProbeOutcome {
//!         let start = Instant::now();
//!         match tokio::fs::try_exists(&self.0).await {
//!             Ok(true) => ProbeOutcome::Ok { latency: start.elapsed() },
//!             Ok(false) | Err(_) => ProbeOutcome::Failed(ProbeFailure::Io),
//!         }
//!     }
//! }
//!
//! /// Your load balancer. A real one calls its provider's API in `apply`
//! /// (idempotently: the live plan applied again changes nothing) and maps
//! /// failures to a `PortErrorKind`, which decides whether the runtime retries.
//! struct LoadBalancer {
//!     live: watch::Sender<Vec<RegionWeight>>,
//! }
//!
//! #[async_trait]
//! impl TrafficRouter for LoadBalancer {
//!     async fn apply(&self, plan: &WeightPlan) -> Result<(), PortError> {
//!         self.live.send_replace(plan.weights.clone());
//!         Ok(())
//!     }
//!     async fn read_back(&self) -> Result<Vec<RegionWeight>, PortError> {
//!         Ok(self.live.borrow().clone())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = Config::from_toml(r#"
//!     service = "api.example.com."
//!     [[region]]
//!     name = "us-east"
//!     [[region]]
//!     name = "us-west"
//!     [policy]
//!     interval = "50ms"
//!     timeout = "20ms"
//!     jitter = "0ms"
//!     fall = 2
//!     rise = 1
//! "#)?;
//! let topology = config.topology().clone();
//! let local = topology.vantage_id("local").ok_or("no vantage")?;
//! let flags = tempfile::tempdir()?; // your deploy tooling's directory
//! let (live, mut seen) = watch::channel(Vec::new());
//! let mut builder = RuntimeBuilder::new(config).router(Arc::new(LoadBalancer { live }));
//! for region in topology.region_ids() {
//!     let flag = flags.path().join(&topology.region(region).name);
//!     std::fs::write(&flag, "ok")?;
//!     builder = builder.probe(region, local, Arc::new(FlagFile(flag)));
//! }
//! let runtime = builder.start().await?;
//!
//! let east = topology.region_id("us-east").ok_or("no us-east")?;
//! let weight = |w: &Vec<RegionWeight>| w.iter().find(|w| w.region == east).map(|w| w.weight);
//! // Both flags up: us-east serves. Then its flag goes, and after `fall`
//! // failed probes the load balancer gets a plan that drains it.
//! tokio::time::timeout(Duration::from_secs(10), seen.wait_for(|w| weight(w) > Some(0))).await??;
//! std::fs::remove_file(flags.path().join("us-east"))?;
//! tokio::time::timeout(Duration::from_secs(10), seen.wait_for(|w| weight(w) == Some(0))).await??;
//!
//! runtime.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! # Features
//!
//! Each adapter is a feature, so you compile only what you use:
//!
//! | feature | enables | pulls in |
//! |---|---|---|
//! | `probe` (default) | `failover::probe`: HTTP(S)/TCP probes; [`RuntimeBuilder::probe`] and its scheduler | failover-probe, hyper client, rustls |
//! | `dns` (default) | `failover::dns`: the embedded authoritative server, RFC 2136 + TSIG | failover-dns, hickory |
//! | `pg` | `failover::pg`: PostgreSQL observation, fencing, promotion, `NodeGuard` | failover-pg, tokio-postgres |
//! | `etcd` | `failover::etcd`: controllers in every region coordinated through etcd | failover-etcd, etcd-client (tonic) |
//! | `admin` | `failover::runtime::admin`: the operator's HTTP API, `RuntimeBuilder::admin` | axum, metrics-exporter-prometheus, rustls |
//! | `tower` | `failover::tower`: layers for the service itself (write gate, shedding, idempotency keys, passive health) and the failover state from this runtime, with `passive_health` reporting what users see to it | failover-tower |
//! | `full` | all of the above | |
//! | `ctl` | the `failoverctl` binary, the admin API's command-line client | clap |
//!
//! The decision core ([`decision`]), the runtime ([`RuntimeBuilder`]) and the
//! single-controller guard lease server ([`lease`]) are always there. Without
//! `probe`, feed probe results of your own with [`RuntimeHandle::report_probe`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub use failover_core as decision;
#[cfg(feature = "dns")]
#[cfg_attr(docsrs, doc(cfg(feature = "dns")))]
pub use failover_dns as dns;
#[cfg(feature = "etcd")]
#[cfg_attr(docsrs, doc(cfg(feature = "etcd")))]
pub use failover_etcd as etcd;
#[cfg(feature = "pg")]
#[cfg_attr(docsrs, doc(cfg(feature = "pg")))]
pub use failover_pg as pg;
#[cfg(feature = "probe")]
#[cfg_attr(docsrs, doc(cfg(feature = "probe")))]
pub use failover_probe as probe;

/// The attribute the port traits ([`decision::ports`]) are written with, for
/// your own `impl Probe for …` / `impl TrafficRouter for …`.
pub use failover_core::async_trait;

pub mod lease;
pub mod runtime;
#[cfg(feature = "tower")]
#[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
pub mod tower;

pub use runtime::{
    NodeRole, NodeView, RetryPolicy, RouterStatus, Runtime, RuntimeBuilder, RuntimeError,
    RuntimeHandle, RuntimeStatus,
};
