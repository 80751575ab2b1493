//! DNS adapters for `failover`: implementations of
//! [`TrafficRouter`](failover_core::ports::TrafficRouter) that turn a
//! [`WeightPlan`](failover_core::WeightPlan) into DNS answers.
//!
//! - [`EmbeddedDns`] — an authoritative server (UDP and TCP, hickory-server)
//!   for the zone that holds the service name. It needs no DNS provider:
//!   delegate the zone (or just the service name) to it. It answers A/AAAA for
//!   the service name from the current plan — one serving region per query
//!   chosen by weight ([`Selection::Weighted`], seedable) or every serving
//!   region ([`Selection::AllServing`]) — with the plan's TTL, SOA and NS at
//!   the apex, NXDOMAIN for unknown names in the zone and REFUSED outside it.
//!   [`EmbeddedRouter`] swaps plans atomically; the next query sees the new one.
//! - [`Rfc2136Router`] — RFC 2136 dynamic updates signed with TSIG
//!   (HMAC-SHA256) for BIND, Knot, PowerDNS or managed DNS. One UPDATE per
//!   plan, guarded by prerequisites (a concurrent change is a retryable
//!   `Conflict`), read back afterwards, never deleting the last record unless
//!   the policy is fail-closed.
//! - `Route53Router` (feature `route53`, off by default: it brings the AWS
//!   SDK) — Route 53 weighted records, one set per region, each plan one
//!   `ChangeResourceRecordSets` batch waited to `INSYNC` and read back; its
//!   module docs give the weight scaling and how each all-down policy maps
//!   (fail-closed deletes the sets: Route 53 serves every record of an
//!   all-zero weighted name).
//!
//! **The writer name.** Both routers can also serve one name (like
//! `writer.db.example.com.`) whose A/AAAA records are the database writer's
//! addresses ([`writer`], [`WriterNameConfig`]), through the
//! [`WriterName`](failover_core::ports::WriterName) port: the embedded
//! server answers it from memory ([`EmbeddedRouter::serve_writer_name`]),
//! RFC 2136 replaces its records with one UPDATE under the same token
//! prerequisite as plans ([`Rfc2136Router::with_writer_name`]). The runtime
//! moves it only after a promotion completed.
//!
//! **Fencing tokens.** With several controllers coordinated by a store, only
//! the leader routes traffic, and its plans carry its
//! [`FencingToken`](failover_core::FencingToken) (`WeightPlan::token`). Every
//! router refuses a plan whose token is older than one already in place, as
//! [`DnsError::StaleToken`] (kind `Refused`, not retryable), so a deposed
//! leader (paused past its lease, then resumed) changes nothing. The
//! RFC 2136 router keeps the token in a TXT record `"token=N"` at
//! `_failover.<service name>` (configurable: [`Rfc2136Config::token_name`])
//! and makes every update under a token carry a prerequisite on that record,
//! so the DNS server itself refuses a stale leader's update. The embedded
//! server remembers the highest token it applied. The Route 53 router keeps
//! the token in a `_failover` TXT record too, replaced by an exact DELETE and
//! a CREATE in the same batch as the weights. Plans without a token (a
//! single controller) are applied as before and never touch the record.
//!
//! Errors are one [`DnsError`] enum; each maps to a
//! [`PortErrorKind`](failover_core::PortErrorKind) (`Timeout`, `Auth`,
//! `Conflict`, `Refused`, `Malformed`, `Unavailable`, `Config`) that tells the
//! runtime whether to retry. Queries are counted in the
//! `failover_dns_queries_total` counter, applied plans in
//! `failover_dns_plans_applied_total`, moves of the writer name in
//! `failover_dns_writer_moves_total`, and plans (or writer-name updates)
//! refused for an older token in `failover_dns_stale_plans_refused_total`
//! (label `adapter`), through the `metrics` facade.
//!
//! ```no_run
//! use std::time::Duration;
//! use failover_core::ports::TrafficRouter;
//! use failover_core::{Policy, Region, RegionId, RegionRole, RegionWeight, Topology, WeightPlan};
//! use failover_dns::{EmbeddedConfig, EmbeddedDns, Rfc2136Config, Rfc2136Router};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let mut east = Region::new("east", RegionRole::Active);
//! east.records = vec!["192.0.2.10".parse()?];
//! let mut west = Region::new("west", RegionRole::Standby);
//! west.records = vec!["198.51.100.20".parse()?];
//! let topology = Topology::builder("api.example.com.").region(east).region(west).build()?;
//! let policy = Policy::default();
//!
//! // The embedded server: answers on port 5353 until dropped.
//! let server = EmbeddedDns::bind(
//!     "0.0.0.0:5353".parse()?,
//!     &topology,
//!     &policy,
//!     EmbeddedConfig::new("example.com."),
//! )
//! .await?;
//! let plan = WeightPlan {
//!     generation: 1,
//!     ttl: Duration::from_secs(60),
//!     weights: vec![
//!         RegionWeight { region: RegionId(0), weight: 0 },
//!         RegionWeight { region: RegionId(1), weight: 100 },
//!     ],
//!     // A single controller; with a coordinator, the leader's token.
//!     token: None,
//! };
//! server.router().apply(&plan).await?;
//!
//! // Or a primary that accepts TSIG-signed updates.
//! let config = Rfc2136Config::new(
//!     "192.0.2.53:53".parse()?,
//!     "example.com.",
//!     "failover-key.",
//!     "base64-secret-from-tsig-keygen=",
//! );
//! let router = Rfc2136Router::new(config, &topology, &policy)?;
//! router.apply(&plan).await?;
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod answer;
mod authority;
mod configured;
mod embedded;
mod error;
mod name;
mod rfc2136;
#[cfg(feature = "route53")]
mod route53;
mod transport;
pub mod writer;

pub use answer::Selection;
pub use configured::ConfiguredRouter;
pub use embedded::{EmbeddedConfig, EmbeddedDns, EmbeddedRouter};
pub use error::DnsError;
pub use rfc2136::{LiveRecords, Rfc2136Config, Rfc2136Router};
#[cfg(feature = "route53")]
pub use route53::{
    Route53Config, Route53RecordType, Route53Router, StaticCredentials, WeightedSet,
};
pub use writer::WriterNameConfig;
