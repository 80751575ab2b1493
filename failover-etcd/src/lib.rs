//! The coordination port of `failover` on etcd (v3 API, etcd 3.4 and later).
//!
//! - [`EtcdCoordinator`] implements [`Coordinator`](failover_core::ports::Coordinator)
//!   for one controller: its lease, its leader campaign, one prefix watch and
//!   the conditional writes.
//! - [`EtcdGuardLease`] implements [`GuardLease`](failover_core::ports::GuardLease)
//!   for node guards.
//! - [`EtcdConfig`] says where etcd is and what this controller is called;
//!   [`check_ttl_for_policy`] refuses a lease TTL too short for the probe
//!   interval, naming both settings.
//!
//! Give each region's controller its coordinator with the facade's
//! `RuntimeBuilder::coordinator` (and its embedded DNS with
//! `RuntimeBuilder::serve`); give each node's `NodeGuard` an
//! [`EtcdGuardLease`]. A controller whose lease lapses because etcd does not
//! answer reports it through [`next_event`](failover_core::ports::Coordinator::next_event)
//! as an error, after the `Leadership(None)` it owes first.
//!
//! # Key layout
//!
//! Everything of one service lives under `<prefix>/<service>/` (prefix
//! default `/failover`). Values are JSON and use topology *names*, never
//! ids, so `etcdctl get --prefix /failover/` is readable:
//!
//! | key | value | lease | written by |
//! |---|---|---|---|
//! | `leader` | the leading controller's name, or `{"controller":"ctl-a","admin":"https://10.0.0.2:9850"}` when its runtime serves an admin API on a specific address (followers name it to operators) | the leader's controller lease | campaign: create-if-absent |
//! | `writer` | `{"node":"pg-east","epoch":3}` (plus `"sync":[…]`, and `"draining":true` while a switchover drains the writer) | none (durable) | `set_writer`: transaction comparing the leader key's create revision with the token **and** the writer's value with the expected record |
//! | `guard/<node>` | the node's name | the node guard's lease | `GuardLease::renew` |
//! | `verdict/<vantage>/<region>` | `"up"`, `"down"` or `"unknown"` | the publishing controller's lease | `publish_verdicts` |
//! | `intent` | `{"drained":["us-east"],"paused":false}` | none (durable) | `set_intent`: transaction comparing the leader key's create revision with the token |
//! | `plan` | `{"generation":7,"ttl_ms":30000,"token":41,"weights":{"us-east":0,"us-west":1}}` | none (durable) | `set_plan`: transaction comparing the leader key's create revision with the token; every controller's embedded DNS serves it |
//!
//! The [`FencingToken`](failover_core::FencingToken) is the leader key's
//! create revision: etcd's revision grows with every write, so every new
//! term's token is greater than any earlier one. A write carrying a stale
//! token fails its comparison and changes nothing
//! ([`PortErrorKind::Refused`](failover_core::PortErrorKind::Refused)).
//!
//! # Leadership
//!
//! A controller creates the leader key under its own lease if it is absent;
//! otherwise it waits for the watch to report its deletion and tries again.
//! It renews its lease every `lease_ttl / 3`. It reports `Leadership(None)`
//! by a local deadline — the last answered keep-alive's *send* time plus
//! `lease_ttl − lease_margin` — even when etcd cannot be reached, so it
//! stops acting before the lease can expire at etcd (which counts from when
//! it *received* that keep-alive). After such a loss it revokes the old
//! lease (if it can), takes a new one, re-publishes its verdicts and
//! campaigns again, with a new token if it wins.
//!
//! # Watches
//!
//! `join` reads every key once and opens one prefix watch from the next
//! revision. A broken watch is re-opened from the revision after the last
//! event seen; if that revision was compacted, every key is read again and
//! the differences are reported. Nothing is polled.
//!
//! # Guard leases
//!
//! `join` reports `GuardLease { held: false }` for every topology node whose
//! guard key is absent: an absent key is what an expired lease leaves, so a
//! node without a guard looks like a fenced one. Run a guard next to every
//! node.
//!
//! # What etcd may send
//!
//! Nothing read from etcd can panic this crate. A writer record or intent
//! that does not parse (or names a node the topology lacks) makes `join`
//! fail, and is reported by `next_event` as a `Malformed` error that names
//! the key; the coordinator keeps running. Verdicts and guard keys with
//! unknown names are logged and ignored.
//!
//! # Errors
//!
//! [`EtcdError`] maps onto core's
//! [`PortErrorKind`](failover_core::PortErrorKind): no reachable member or no
//! quorum → `Unavailable`; no answer within `request_timeout` → `Timeout`;
//! a failed comparison → `Refused`; a lease that expired meanwhile →
//! `Conflict`; rejected credentials → `Auth`; an
//! unreadable value → `Malformed`; a bad setting → `Config`. Messages name
//! the endpoints, the setting or the key.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod config;
mod coordinator;
mod error;
mod guard;
mod keys;
mod store;

pub use config::{check_lease_ttl, check_ttl_for_policy, EtcdConfig, MIN_LEASE_TTL};
pub use coordinator::EtcdCoordinator;
pub use error::EtcdError;
pub use guard::EtcdGuardLease;
