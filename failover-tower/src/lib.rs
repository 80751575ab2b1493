//! Tower layers for the services that `failover` moves between regions, so
//! that the API itself degrades, sheds and deduplicates through a failover.
//!
//! - [`FailoverState`] follows the controllers' state: this instance's
//!   region, the writer and its epoch, a promotion in progress with the
//!   planner's bound on how long it can last, and the load on the serving
//!   regions against their capacity. It comes from the runtime in the same
//!   process (`failover::tower::from_runtime`, feature `tower` of the facade)
//!   or from a controller's admin API ([`RemoteStatus`]). When it loses
//!   contact it keeps the last state and says so ([`Snapshot::stale`]).
//! - [`WriteGateLayer`]: while the writer moves (or is fenced, or is unknown
//!   and the state stale) mutating requests get `503` with `Retry-After`
//!   taken from the planner's bound; reads pass.
//! - [`ShedLayer`]: while the serving regions carry more than their
//!   capacity, requests below a priority get `503`; critical ones pass.
//! - [`IdempotencyLayer`]: the `Idempotency-Key` header; a retried mutation
//!   takes effect once. Each keyed mutation runs in one transaction on the
//!   writer, which the handler writes through ([`IdempotentTx`]): its rows
//!   and the key's record commit together or not at all, so it holds across
//!   a failover. Only writes made through the [`IdempotentTx`] are
//!   exactly-once.
//! - [`PassiveHealthLayer`]: counts what users get per region (5xx, slow
//!   responses) and reports it to the controllers as passive health, so a
//!   region whose probes pass but whose users fail is drained: to the
//!   runtime in the same process (`failover::tower::passive_health`), or to
//!   every controller's admin API ([`AdminTrafficSink`]).
//!
//! Every decision is counted through the `metrics` facade
//! ([`WRITE_GATE_METRIC`], [`SHED_METRIC`], [`IDEMPOTENCY_METRIC`],
//! [`PASSIVE_METRIC`]) and logged
//! with `tracing`.
//!
//! The layers work on `http::Request`/`http::Response` with any body, so
//! they stack on axum routers, hyper services and tonic servers:
//!
//! ```
//! use std::time::{Duration, Instant};
//! use axum::{routing::get, Router};
//! use failover_tower::{
//!     FailoverState, PromotionView, RegionView, ShedLayer, Snapshot, WriteGateLayer,
//!     WriteVerdict,
//! };
//!
//! // A source publishes what it learns (here by hand; in production
//! // `failover::tower::from_runtime` or `RemoteStatus`).
//! let (publisher, state) = FailoverState::channel(Snapshot::unknown());
//! let mut snapshot = Snapshot::fresh();
//! let mut east = RegionView::new("us-east");
//! east.weight = 100;
//! east.capacity = 0.6;
//! snapshot.regions = vec![east];
//! snapshot.promotion = Some(PromotionView::new(
//!     "fencing",
//!     Some(Instant::now() + Duration::from_secs(12)),
//! ));
//! publisher.publish(snapshot);
//!
//! // 167 % of capacity, and mutations wait for the new writer.
//! let now = state.snapshot();
//! assert!(now.load().over_capacity());
//! assert!(matches!(
//!     WriteVerdict::of(&now, Instant::now(), Duration::from_secs(5)),
//!     WriteVerdict::Closed { .. }
//! ));
//!
//! let app: Router = Router::new()
//!     .route("/orders", get(|| async { "[]" }).post(|| async { "created" }))
//!     .layer(WriteGateLayer::new(state.clone()))
//!     .layer(ShedLayer::new(state));
//! # drop(app);
//! ```
//!
//! The idempotency layer needs a database; see [`IdempotencyLayer`] and
//! [`IdempotentTx`] (how an axum handler takes the transaction), the
//! crate's tests, and the workspace's `examples/service.rs` and
//! `tests/e2e_idempotency.rs` (a retried POST across a killed primary and a
//! promotion) for running examples.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

/// The PostgreSQL client the [`IdempotentTx`] speaks: its `ToSql`
/// parameters, `Row`s and `SqlState` codes.
pub use tokio_postgres;

mod classify;
mod client;
mod error;
mod idempotency;
mod passive;
mod remote;
mod report;
mod response;
mod shed;
mod state;
mod write_gate;

pub use classify::{is_mutating, MutationClassifier, Priority, RequestHead, UnknownPriority};
pub use error::Error;
pub use idempotency::{
    BoxError, Idempotency, IdempotencyBody, IdempotencyFuture, IdempotencyLayer,
    IdempotencyLayerBuilder, IdempotentTx, IDEMPOTENCY_KEY, IDEMPOTENCY_METRIC, MAX_KEY_LEN,
    REPLAYED_HEADER,
};
pub use passive::{
    PassiveHealth, PassiveHealthFuture, PassiveHealthLayer, PassiveHealthLayerBuilder,
    RegionTraffic, TrafficSink, PASSIVE_METRIC, PASSIVE_REPORT_METRIC,
};
pub use remote::{RemoteStatus, REMOTE_POLL_METRIC};
pub use report::{AdminTrafficSink, AdminTrafficSinkBuilder};
pub use shed::{Shed, ShedFuture, ShedLayer, PRIORITY_HEADER, SHED_METRIC};
pub use state::{
    FailoverState, Load, PromotionView, RegionHealth, RegionView, Snapshot, Staleness,
    StatePublisher, WriterView,
};
pub use write_gate::{
    Closed, WriteGate, WriteGateFuture, WriteGateLayer, WriteVerdict, WRITE_GATE_METRIC,
};
