//! PostgreSQL adapter for `failover`: replication status, fencing, promotion
//! with fencing epochs, zero-loss switchover and rejoin of an old primary.
//!
//! [`PgCluster`] maps core's [`NodeId`](failover_core::NodeId)s to superuser
//! DSNs and implements [`DatabaseAdmin`](failover_core::ports::DatabaseAdmin):
//! - [`observe`](failover_core::ports::DatabaseAdmin::observe) /
//!   [`PgCluster::status`]: role (`pg_is_in_recovery()`), timeline, current /
//!   receive / replay LSN, lag in bytes and seconds, and on a primary how
//!   long its commits have waited for a synchronous standby
//!   ([`NodeStatus::sync_wait`]);
//! - [`PgCluster::fence`]: stops writes on an old primary (see [`fence`] for
//!   the mechanism and its limits);
//! - [`PgCluster::promote`]: RPO gate, epoch check, `pg_promote` with a 5 ms
//!   poll for the end of recovery, durable epoch, write check. A retry of the same request after
//!   `pg_promote` took effect but the epoch was not recorded (a client
//!   timeout) finishes the job and returns `Ok`; a node another epoch
//!   promoted is refused. Without a reference position the RPO gate
//!   measures against the best position a reachable node reports, as the
//!   core's controller does;
//! - [`PgCluster::set_synchronous`]: makes the writer require exactly the
//!   given standbys (`synchronous_standby_names = 'FIRST n (…)'`) and returns
//!   once that is in effect and each has flushed all the writer had flushed,
//!   refusing a deposed leader's older token ([`PgError::StaleToken`]); a
//!   standby's `application_name` must be its node name;
//! - [`PgCluster::unfence`]: gives writes back to a fenced primary whose
//!   promotion did not happen (see [`unfence`](mod@unfence) for the rule);
//! - [`PgCluster::switchover`]: fence, wait for the target to replay the old
//!   primary's final flush LSN, promote — no acknowledged write is lost;
//! - [`NodeGuard`] ([`guard`]): the sidecar next to one node that holds its
//!   guard lease and fences the node before the lease can expire; with
//!   [`GuardSettings::http`] it also serves `GET /writer`, `/replica` and
//!   `/health` for load balancers ([`guard::endpoints`]);
//! - [`rejoin()`](fn@rejoin) ([`rejoin` module](mod@rejoin)): agent-side: `pg_rewind` the old primary's data directory
//!   against the new primary and start it as a streaming replica.
//!
//! Wiring it into a runtime: build the cluster once with
//! [`PgCluster::from_topology`] (or [`PgCluster::new`] +
//! [`with_node`](PgCluster::with_node)) and [`PgTimeouts`], share it (it is
//! `Clone`, or put it in an `Arc<dyn DatabaseAdmin>`), call
//! `recorded_epoch()` at start-up to resume after the highest epoch, feed
//! `observe()` results to the controller and execute its `Fence` / `Promote`
//! actions with `fence()` / `promote()` / `unfence()`. [`PgError::kind`]
//! says whether a failure is retryable; only a node that could not be talked
//! to is `Unavailable` (a fence that did not complete is `Conflict`, server
//! errors are classified by SQLSTATE: see [`sqlstate_kind`]).
//!
//! [`conninfo`] quotes libpq connection strings and `postgresql.conf` values
//! (both layers of a `primary_conninfo`).
//!
//! Every call opens fresh connections (no pool to hide a failure) and has a
//! timeout ([`PgTimeouts`]). Connections use TLS as the node's DSN says
//! (`sslmode`, `sslrootcert`: see [`tls`]). Errors are [`PgError`]; as a port they become
//! [`PortError`](failover_core::PortError)s of the matching kind.
//!
//! ```no_run
//! use failover_core::{Epoch, MaxRpo, NodeId, PromoteRequest, RpoGate};
//! use failover_core::ports::DatabaseAdmin;
//! use failover_pg::PgCluster;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let cluster = PgCluster::new()
//!     .with_node(NodeId(0), "pg-east", "host=10.0.0.5 user=postgres dbname=postgres")?
//!     .with_node(NodeId(1), "pg-west", "host=10.1.0.5 user=postgres dbname=postgres")?;
//! println!("{:?}", cluster.observe(NodeId(1)).await?);
//! let next = cluster.recorded_epoch().await?.unwrap_or_default().next();
//! let lsn = cluster
//!     .promote(&PromoteRequest {
//!         node: NodeId(1),
//!         epoch: next,
//!         gate: RpoGate::Within { max: MaxRpo::bytes(1 << 20), reference: None },
//!         synchronous: failover_core::Synchronous::Off,
//!     })
//!     .await?;
//! println!("promoted at {lsn}");
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod admin;
mod cluster;
pub mod conninfo;
mod epoch;
mod error;
pub mod fence;
pub mod guard;
mod promote;
pub mod rejoin;
mod status;
mod switchover;
mod sync;
pub mod tls;
pub mod unfence;

pub use cluster::{PgCluster, PgTimeouts};
pub use error::{sqlstate_kind, PgError, RpoReference};
pub use fence::FenceReport;
pub use guard::{GuardDecision, GuardSettings, GuardStatus, KillOutcome, NodeGuard, NodeKill};
pub use rejoin::{rejoin, standby_auto_conf, RejoinPlan, RejoinReport};
pub use status::{NodeRole, NodeStatus, ReplicaLag, WalReceiver};
pub use switchover::SwitchoverReport;
pub use sync::synchronous_standby_names;
pub use tls::SslMode;
pub use unfence::UnfenceReport;
