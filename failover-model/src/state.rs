//! One global state of the model: the store, the controllers' volatile
//! memory, the database nodes with their guards, the DNS receiver, the links,
//! and two ghost fields the properties read.
//!
//! Every time is "ticks left", relative to now, so that two states that
//! differ only in the absolute time are the same state.

/// Controllers in the model.
pub const CONTROLLERS: usize = 2;
/// Database nodes (each with its guard) in the model.
pub const NODES: usize = 2;

/// The writer record `{node, epoch, sync}` as the store holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Writer {
    /// Index of the node that takes writes.
    pub node: u8,
    /// The epoch it was promoted at; the initial writer has epoch 1.
    pub epoch: u8,
    /// The record's synchronous set names the other node: the writer
    /// requires it for every commit it acknowledges (with two nodes the set
    /// is empty or the other node). Always false with synchronous off.
    pub sync: bool,
}

/// The leader key at the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeaderKey {
    /// Index of the controller holding it.
    pub controller: u8,
    /// Its create revision: the fencing token of this term.
    pub token: u8,
    /// Ticks until the store expires it (at least 1 while it exists).
    pub ticks_left: u8,
}

/// The consensus store (etcd), abstracted as one linearizable object: every
/// request is applied atomically, in some order, or not at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Store {
    /// The controllers' leader key, if a term is running.
    pub leader: Option<LeaderKey>,
    /// The last fencing token granted (the store's revision counter).
    pub last_token: u8,
    /// The writer record.
    pub writer: Writer,
    /// Ticks until each node's guard lease expires; 0 means it has expired.
    pub guard_lease: [u8; NODES],
}

/// What a controller believes about its own leadership.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Lead {
    /// The fencing token of its term.
    pub token: u8,
    /// Ticks until it must step down by its own clock (lease TTL − margin,
    /// counted from when it asked the store). A paused controller counts
    /// down too but cannot act on it.
    pub ticks_left: u8,
}

/// A controller's volatile memory; lost when it crashes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Controller {
    /// Stopped like SIGSTOP: takes no step until resumed, then acts on what
    /// it believed before the pause.
    pub paused: bool,
    /// Its belief that it leads, and with which token.
    pub lead: Option<Lead>,
    /// The writer record as it last read it.
    pub view: Option<Writer>,
    /// It holds proof that `view`'s node stopped writing: the node confirmed
    /// the fence (or, under the old rule, the fence merely failed).
    pub proof: bool,
    /// Its request that `view`'s node require the other node was reported
    /// done: the setting is in effect and the standby streamed
    /// synchronously and had flushed everything (the real controller's
    /// `sync_configured`). What allows recording the standby in the
    /// writer record.
    pub configured: bool,
}

/// A database node and the guard next to it. They share fate: one crash
/// takes both (the deployment requirement the design note explains).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Node {
    /// Running.
    pub up: bool,
    /// PostgreSQL is frozen (SIGSTOP, a cgroup freeze) while its guard
    /// lives on: it takes no commit, and confirms and applies no fence,
    /// until it thaws ([`FrozenServers`](crate::FrozenServers); always
    /// false when servers never freeze).
    pub frozen: bool,
    /// The epoch at which PostgreSQL was promoted (durable; `None` while it
    /// is a replica).
    pub promoted: Option<u8>,
    /// The highest epoch a controller's fence carried (durable, 0 = none).
    pub fence_epoch: u8,
    /// Read-only, sessions terminated (the fence).
    pub fenced: bool,
    /// Ticks until the guard must fence by its own clock; 0 once passed or
    /// with no lease.
    pub deadline: u8,
    /// Failsafe mode: ticks (or, holding until the store is back, just
    /// "non-zero") during which this guard refuses promotion and unfencing,
    /// because it confirmed to the writer's guard that it is fenced.
    pub hold: u8,
    /// Ticks the guard's clock has fallen behind since it last renewed
    /// (clock drift, or the guard paused), at most `guard_drift`.
    pub lag: u8,
    /// Its `synchronous_standby_names` requires the other node (durable
    /// configuration): a commit is acknowledged only once the other node,
    /// streaming from this one, flushed it.
    pub requires: bool,
    /// The newest fencing token that configured its synchronous standbys
    /// (durable; 0 = none, and always 0 unless
    /// [`SyncCheck::EpochAndToken`](crate::SyncCheck::EpochAndToken)).
    pub sync_token: u8,
    /// As a replica: it lacks a commit that the node it streams from
    /// acknowledged (it catches up while it streams). Once promoted it no
    /// longer streams, and what it lacks then is lost to it.
    pub lacks_acked: bool,
}

impl Controller {
    /// A controller that just started: no lead, no view.
    pub const FRESH: Controller = Controller {
        paused: false,
        lead: None,
        view: None,
        proof: false,
        configured: false,
    };
}

impl Node {
    /// Takes client commits: a running, unfrozen primary that is not
    /// fenced.
    pub fn writable(&self) -> bool {
        self.answers() && self.promoted.is_some() && !self.fenced
    }

    /// Running and not frozen: it answers requests.
    pub fn answers(&self) -> bool {
        self.up && !self.frozen
    }
}

/// Whether node `standby` streams from node `from`: both run unfrozen,
/// `from` is a primary and `standby` a replica (a promoted node never streams again;
/// an old primary is not rejoined). Only a streaming standby flushes, and
/// so acknowledges receipt of, the commits of `from`.
pub(crate) fn streams(nodes: &[Node; NODES], standby: usize, from: usize) -> bool {
    let (s, f) = (&nodes[standby], &nodes[from]);
    standby != from && s.answers() && s.promoted.is_none() && f.answers() && f.promoted.is_some()
}

/// The DNS (or router) that receives the leader's updates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Dns {
    /// The node the service name points at.
    pub node: u8,
    /// The token in the `_failover` TXT record.
    pub token: u8,
}

/// A link that can be cut in [`Network::Links`](crate::Network::Links) mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Link {
    /// Controller `c` to the store.
    ControllerStore(u8),
    /// Controller `c` to node `n` (and its guard).
    ControllerNode(u8, u8),
    /// Node `n`'s guard to the store.
    GuardStore(u8),
    /// The two guards, directly (failsafe mode).
    GuardGuard,
}

impl Link {
    /// All links, in a fixed order.
    pub fn all() -> Vec<Link> {
        let mut links = Vec::new();
        for c in 0..CONTROLLERS as u8 {
            links.push(Link::ControllerStore(c));
            for n in 0..NODES as u8 {
                links.push(Link::ControllerNode(c, n));
            }
        }
        for n in 0..NODES as u8 {
            links.push(Link::GuardStore(n));
        }
        links.push(Link::GuardGuard);
        links
    }

    /// This link's bit in [`State::cut`].
    pub fn bit(self) -> u16 {
        let index = match self {
            Link::ControllerStore(c) => c as usize * (1 + NODES),
            Link::ControllerNode(c, n) => c as usize * (1 + NODES) + 1 + n as usize,
            Link::GuardStore(n) => CONTROLLERS * (1 + NODES) + n as usize,
            Link::GuardGuard => CONTROLLERS * (1 + NODES) + NODES,
        };
        1 << index
    }
}

/// Which side effects S3 watches; each keeps the highest token applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Receiver {
    /// The writer record at the store.
    WriterRecord,
    /// The DNS records.
    Dns,
    /// Node `n` (a promote).
    Node(u8),
    /// Node `n`'s synchronous configuration.
    SyncConfig(u8),
}

impl Receiver {
    pub(crate) fn index(self) -> usize {
        match self {
            Receiver::WriterRecord => 0,
            Receiver::Dns => 1,
            Receiver::Node(n) => 2 + n as usize,
            Receiver::SyncConfig(n) => 2 + NODES + n as usize,
        }
    }
}

/// One global state.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct State {
    /// The store.
    pub store: Store,
    /// The controllers.
    pub controllers: [Controller; CONTROLLERS],
    /// The nodes and their guards.
    pub nodes: [Node; NODES],
    /// The DNS receiver.
    pub dns: Dns,
    /// Cut links, one bit per [`Link`].
    pub cut: u16,
    /// Ghost: per [`Receiver`], the highest token whose side effect it
    /// applied.
    pub acted: [u8; 2 + 2 * NODES],
    /// Ghost: a side effect was applied with a token older than one a
    /// successor had already used on the same receiver (S3 broken).
    pub stale_effect: bool,
    /// Ghost: the current writer record was written by a move on the
    /// synchronous-standby proof (no fence, no lease wait).
    pub sync_claim: bool,
    /// Ghost: a node acknowledged a commit after another node was promoted
    /// at a higher epoch (S1 for acknowledged commits broken).
    pub ack_after_successor: bool,
    /// Ghost: an acknowledged commit is missing on a node promoted on the
    /// synchronous-standby proof (S2 broken).
    pub lost_ack: bool,
}

impl State {
    /// Nodes that take client commits now.
    pub fn writable_nodes(&self) -> Vec<usize> {
        (0..NODES).filter(|&n| self.nodes[n].writable()).collect()
    }

    /// A leader other than the one that claimed the current writer finished
    /// its promotion: the writer record names a node at an epoch above the
    /// initial one (a claim), that node was promoted at that epoch with a
    /// later term's token than the one that wrote the record, and it takes
    /// writes. (Tokens and epochs only grow, and a node is promoted at most
    /// once per epoch, so the highest token a node was promoted with is the
    /// one of its promotion at the record's epoch.)
    pub fn claim_finished_by_successor(&self) -> bool {
        let writer = self.store.writer;
        let node = &self.nodes[writer.node as usize];
        let claimed_with = self.acted[Receiver::WriterRecord.index()];
        let promoted_with = self.acted[Receiver::Node(writer.node).index()];
        writer.epoch > 1
            && node.promoted == Some(writer.epoch)
            && node.writable()
            && claimed_with > 0
            && promoted_with > claimed_with
    }

    /// The record's node takes writes, promoted at the record's epoch, and
    /// the record was written on the synchronous-standby proof: a promotion
    /// that waited for neither a fence nor the old writer's guard lease.
    pub fn synchronous_promotion(&self) -> bool {
        let writer = self.store.writer;
        let node = &self.nodes[writer.node as usize];
        self.sync_claim && node.promoted == Some(writer.epoch) && node.writable()
    }

    /// Records a side effect on `receiver` with `token` for S3.
    pub(crate) fn record_effect(&mut self, receiver: Receiver, token: u8) {
        let acted = &mut self.acted[receiver.index()];
        if token < *acted {
            self.stale_effect = true;
        }
        *acted = (*acted).max(token);
    }
}

impl stateright::Representative for State {
    /// The two controllers are interchangeable: the representative lists the
    /// smaller one first, renaming the leader key's holder and the links.
    fn representative(&self) -> Self {
        if self.controllers[0] <= self.controllers[1] {
            return self.clone();
        }
        let mut swapped = self.clone();
        swapped.controllers.swap(0, 1);
        if let Some(key) = swapped.store.leader.as_mut() {
            key.controller = 1 - key.controller;
        }
        let mut cut = self.cut;
        for c in 0..CONTROLLERS as u8 {
            let other = 1 - c;
            let mut pairs = vec![(Link::ControllerStore(c), Link::ControllerStore(other))];
            for n in 0..NODES as u8 {
                pairs.push((Link::ControllerNode(c, n), Link::ControllerNode(other, n)));
            }
            for (from, to) in pairs {
                cut &= !to.bit();
                if self.cut & from.bit() != 0 {
                    cut |= to.bit();
                }
            }
        }
        swapped.cut = cut;
        swapped
    }
}
