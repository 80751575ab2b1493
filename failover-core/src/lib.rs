//! The deterministic, sans-IO heart of `failover`.
//!
//! This crate performs no I/O, spawns nothing and never reads a clock: every
//! call that can change state takes `now`. Given the same inputs it produces the
//! same actions, byte for byte, so the simulator, the property tests and a
//! production driver all run one code path.
//!
//! What it provides:
//!
//! - [`Topology`], [`Policy`] and [`Config`]: what is deployed and how to
//!   decide, built in code or read from TOML, validated with errors that name
//!   the field in the file's terms and its line and column ([`ConfigError`]).
//! - [`Controller`]: the state machine. Inputs are probe results, replication
//!   observations, action outcomes and operator [`Command`]s; outputs are
//!   [`Action`]s (complete weight plans, fence, promote, notify) and the next
//!   deadline. Every decision is one [`Event`] with its reason.
//! - [`objectives`]: the RTO/RPO arithmetic and a planner for interval/fall.
//! - [`sim`]: a seeded, deterministic simulator driving the real controller.
//! - [`coordination`]: what controllers and node guards share through the
//!   coordination store (leader token, writer record, guard leases).
//! - [`ports`]: the small async traits the adapters implement, with the
//!   [`async_trait`](macro@async_trait) attribute they are written with re-exported, so an
//!   implementation needs nothing but this crate (the types a port takes and
//!   returns, [`ProbeOutcome`], [`WeightPlan`], [`PortError`]…, are at its root).
//!
//! # The driver loop
//!
//! Create the controller, tell it the highest durable epoch, then: after
//! each input or timeout, drain [`Controller::poll_action`] until `None`,
//! execute what it asks and report each outcome with the action's id, and
//! sleep until [`Controller::poll_timeout`] or the next input. A `Notify`
//! needs no report. (A real driver runs actions concurrently and reports
//! them when they finish; this one completes them at once.)
//!
//! ```
//! use std::time::{Duration, Instant};
//! use failover_core::{
//!     Action, Config, Controller, Epoch, Input, ProbeFailure, ProbeOutcome, ProbeResult,
//! };
//!
//! let config = Config::from_toml(r#"
//!     service = "api.example.com."
//!     [[region]]
//!     name = "us-east"
//!     [[region]]
//!     name = "us-west"
//!     role = "standby"
//! "#)?;
//! let start = Instant::now();
//! let mut controller = Controller::new(config, start);
//! controller.set_epoch_floor(Epoch(0)); // from DatabaseAdmin::recorded_epoch()
//! let east = controller.topology().region_id("us-east").unwrap();
//! let vantage = controller.topology().vantage_id("local").unwrap();
//!
//! let mut now = start;
//! for round in 0..6u64 {
//!     // 1. Drain every action; execute it; report it with its id.
//!     while let Some(action) = controller.poll_action() {
//!         match action {
//!             Action::Notify(event) => println!("{}", event.display(controller.topology())),
//!             Action::SetWeights { id, plan } => {
//!                 // apply `plan` at the DNS provider, then:
//!                 let _ = plan;
//!                 controller.handle(now, Input::ActionDone { id });
//!             }
//!             other => {
//!                 let id = other.id().expect("only Notify has no id");
//!                 controller.handle(now, Input::ActionDone { id });
//!             }
//!         }
//!     }
//!     // 2. Wait for the next input or the deadline, whichever is first.
//!     now = start + Duration::from_secs(10 * round);
//!     if controller.poll_timeout().is_some_and(|t| t <= now) {
//!         controller.handle_timeout(now);
//!     }
//!     // 3. Feed the input that arrived (here: us-east's probe fails from round 2).
//!     let outcome = if round < 2 {
//!         ProbeOutcome::Ok { latency: Duration::from_millis(20) }
//!     } else {
//!         ProbeOutcome::Failed(ProbeFailure::ConnectTimeout)
//!     };
//!     controller.handle(now, Input::Probe(ProbeResult { region: east, vantage, at: now, outcome }));
//! }
//! while controller.poll_action().is_some() {}
//! assert_eq!(controller.plan().unwrap().weight(east), 0, "us-east drained after 3 misses");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod action;
mod config;
mod controller;
pub mod coordination;
pub mod duration_serde;
mod error;
mod event;
mod id;
mod input;
pub mod objectives;
mod passive;
mod policy;
pub mod ports;
mod probe;
mod replication;
pub mod sim;
mod status;
mod topology;

/// The attribute the [`ports`] traits are written with: put
/// `#[failover_core::async_trait]` on your `impl Probe for …` (or
/// `#[failover::async_trait]` through the facade) without depending on
/// `async-trait` yourself.
pub use async_trait::async_trait;

pub use action::{Action, ActionId, PromoteRequest, RegionWeight, RpoGate, WeightPlan};
pub use config::{Config, RouterConfig, RouterKind};
pub use controller::{Controller, Restored};
pub use coordination::{
    CoordinationEvent, FencingToken, Intent, LeaderInfo, SyncSet, Verdict, WriterRecord,
};
pub use error::{ConfigError, ConfigLocation};
pub use event::{ActionKind, Event, EventDisplay, EventKind, StopProof};
pub use id::{NodeId, RegionId, VantageId};
pub use input::{ActionFailure, Command, Input};
pub use passive::{LatencyRule, PassivePolicy, TrafficReport, TrafficRule};
pub use policy::{AllDownPolicy, InitialHealth, MaxRpo, MoveWriterOn, Policy, Synchronous};
pub use ports::{PortError, PortErrorKind};
pub use probe::{ProbeFailure, ProbeOutcome, ProbeResult};
pub use replication::{Epoch, Lsn, NodeObservation, ParseLsnError, ReplicationStatus};
pub use status::{Health, PromotionPhase, RegionStatus, Status};
pub use topology::{Node, Region, RegionRole, Topology, TopologyBuilder, TopologyConfig};
