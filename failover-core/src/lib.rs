//! The deterministic, sans-IO heart of `failover`.
//!
//! This crate performs no I/O, spawns nothing and never reads a clock: every
//! call that can change state takes `now`. Given the same inputs it produces the
//! same actions, byte for byte, so the simulator, the property tests and a
//! production driver all run one code path.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod action;
mod config;
mod controller;
pub mod duration_serde;
mod error;
mod event;
mod id;
mod input;
pub mod objectives;
mod policy;
pub mod ports;
mod probe;
mod replication;
pub mod sim;
mod status;
mod topology;

pub use action::{Action, ActionId, PromoteRequest, RegionWeight, RpoGate, WeightPlan};
pub use config::Config;
pub use controller::Controller;
pub use error::ConfigError;
pub use event::{ActionKind, Event, EventDisplay, EventKind};
pub use id::{NodeId, RegionId, VantageId};
pub use input::{ActionFailure, Command, Input};
pub use policy::{AllDownPolicy, InitialHealth, MaxRpo, Policy};
pub use ports::{PortError, PortErrorKind};
pub use probe::{ProbeFailure, ProbeOutcome, ProbeResult};
pub use replication::{Epoch, Lsn, NodeObservation, ParseLsnError, ReplicationStatus};
pub use status::{Health, PromotionPhase, RegionStatus, Status};
pub use topology::{Node, Region, RegionRole, Topology, TopologyBuilder, TopologyConfig};
