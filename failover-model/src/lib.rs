//! A model of failover's one-writer protocol, checked with
//! [stateright](https://www.stateright.rs), the explicit-state model checker
//! for Rust.
//!
//! [`OneWriter`] is a stateright [`Model`](stateright::Model) of two
//! controllers, the coordination store, two PostgreSQL nodes each with its
//! guard, and the DNS receiver, on a network that loses messages and
//! partitions, with crashes and SIGSTOP pauses. Its properties:
//!
//! - **S1 one writer** (`always`): never two nodes take client commits
//!   (running, promoted, not fenced) at the same time — kept by the fence
//!   and lease proofs, and broken briefly, by design, by the synchronous
//!   proof;
//! - **S1 one acknowledging writer** (`always`): with synchronous
//!   replication, no node acknowledges a commit after another node was
//!   promoted at a higher epoch (S1 restated for acknowledged commits: the
//!   synchronous proof lets the old writer stay writable until its guard
//!   fences it, but not acknowledge);
//! - **S2 no acknowledged loss** (`always`): a standby promoted on the
//!   synchronous proof has every commit the old writer acknowledged;
//! - **S3 no stale side effect** (`always`): no receiver (writer record, DNS,
//!   a node) applies a side effect carrying a token older than one a
//!   successor already used on it;
//! - **a failover happens** (`sometimes`): node 1 becomes the writable
//!   writer and DNS points at it, so the model is not vacuous;
//! - **a successor finishes a claimed promotion** (`sometimes`): a leader
//!   claimed a node (moved the writer record) and lost its term before
//!   promoting it, and a later leader promoted it at the record's epoch, as
//!   `finish_claimed_promotion` does in the real controller;
//! - **a synchronous standby is promoted** (`sometimes`): a move on the
//!   synchronous-standby proof, with neither fence nor lease wait, happens.
//!
//! [`ModelConfig`] picks sizes and the variant: the safe protocol, the old
//! "promote on unreachable" rule, a lease check split from the writer move,
//! an unfinished claim re-pointed to another node without proof, receivers
//! without token checks, Patroni-style failsafe mode, servers that freeze
//! under their guards ([`FrozenServers`]: the guard only fences, or kills
//! what it cannot fence); and synchronous
//! replication ([`Synchronous`], `policy.synchronous`) with the safe order of
//! changes or one step reversed ([`SyncOrder`]), and with or without a token
//! check at the node ([`SyncCheck`]). The [`design`] module says what is modelled,
//! what is abstracted, and how it maps onto the real code.
//!
//! ```
//! use failover_model::{ModelConfig, OneWriter};
//! use stateright::{Checker, Model};
//!
//! let checker = OneWriter::new(ModelConfig::small())
//!     .checker()
//!     .target_max_depth(6)
//!     .spawn_bfs()
//!     .join();
//! assert!(checker.discovery("S1 one writer").is_none());
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod config;
pub mod design;
mod model;
mod state;
mod trace;

pub use config::{
    Failsafe, FrozenServers, ModelConfig, Network, PromotionRule, ReceiverChecks, SyncCheck,
    SyncOrder, Synchronous,
};
pub use model::{Action, Delivery, OneWriter, Proof};
pub use state::{
    Controller, Dns, Lead, LeaderKey, Link, Node, Receiver, State, Store, Writer, CONTROLLERS,
    NODES,
};
pub use trace::{describe_action, describe_path, describe_state};
