//! HTTP(S) and TCP health probes for `failover`, and the scheduler that runs
//! them.
//!
//! - [`HttpProbe`] ([`HttpProbeConfig`]): one request per probe over a fresh
//!   connection by default, separate connect and response timeouts, an
//!   expected status set, an optional body match within the first N bytes,
//!   HTTPS through rustls with a custom CA and SNI ([`TlsSettings`]).
//! - [`TcpProbe`] ([`TcpProbeConfig`]): connect, optionally a TLS handshake.
//! - [`ProbeScheduler`]: runs every [`ProbeTarget`] on its own interval with
//!   phases spread over the interval (plus optional seeded per-probe start
//!   jitter, as in `Policy::jitter`), bounded concurrency, no catch-up bursts
//!   (skipped slots are counted), targets added and removed while running, and
//!   a clean shutdown. It sends each result as a
//!   [`ProbeResult`](failover_core::ProbeResult) on a bounded channel, ready
//!   for the controller.
//!
//! Both probes implement [`failover_core::ports::Probe`] and never fail
//! with an error: every way a check can go wrong is a
//! [`ProbeFailure`](failover_core::ProbeFailure) that says why.
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Duration;
//! use failover_core::{RegionId, VantageId};
//! use failover_probe::{HttpProbe, HttpProbeConfig, ProbeScheduler, ProbeTarget, SchedulerConfig};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let mut config = HttpProbeConfig::from_url("http://127.0.0.1:8080/healthz")?;
//! config.body_contains = Some("healthy".into());
//! let probe = Arc::new(HttpProbe::new(config)?);
//!
//! let (scheduler, mut results) = ProbeScheduler::start(SchedulerConfig::default());
//! scheduler.add(ProbeTarget::new(RegionId(0), VantageId(0), Duration::from_secs(10), probe));
//! while let Some(result) = results.recv().await {
//!     println!("{} from {}: {:?}", result.region, result.vantage, result.outcome);
//! #   break;
//! }
//! scheduler.shutdown().await;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod connect;
mod error;
mod http;
mod scheduler;
mod tcp;
mod tls;

pub use error::ProbeError;
pub use http::{HttpProbe, HttpProbeConfig};
pub use scheduler::{
    PhaseSpread, ProbeScheduler, ProbeTarget, SchedulerConfig, SchedulerStats, TargetId,
    TargetStats, MIN_INTERVAL,
};
pub use tcp::{TcpProbe, TcpProbeConfig};
pub use tls::TlsSettings;
