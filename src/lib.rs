//! `failover`: survive a whole-region outage.
//!
//! This facade re-exports the member crates and holds the tokio [`runtime`]
//! that wires probes, the decision core, DNS and PostgreSQL together.
//!
//! | module | crate | what |
//! |---|---|---|
//! | [`core`] | `failover-core` | the sans-IO Controller, policy, RTO/RPO arithmetic, simulator, port traits |
//! | [`probe`] | `failover-probe` | HTTP(S)/TCP probes and their scheduler |
//! | [`dns`] | `failover-dns` | embedded authoritative DNS; RFC 2136 + TSIG |
//! | [`pg`] | `failover-pg` | PostgreSQL status, fencing, promotion, switchover, rejoin, node guard |
//! | [`lease`] | (here) | guard leases of the single-controller default over HTTP |
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
//! // Serve the service's name from the current plan.
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
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub use failover_core as core;
pub use failover_dns as dns;
pub use failover_pg as pg;
pub use failover_probe as probe;

pub mod lease;
pub mod runtime;

pub use runtime::{
    RetryPolicy, Runtime, RuntimeBuilder, RuntimeError, RuntimeHandle, RuntimeStatus,
};
