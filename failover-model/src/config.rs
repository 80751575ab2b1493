//! What a run of the model checks: the sizes, the bounds that keep the state
//! space finite, and the protocol variant (the safe one, or one rule taken
//! out to show that the checker finds what it guards against).

/// The protocol variant and the bounds of one model.
///
/// Times are in ticks of the model's discrete clock. Lease times are kept
/// relative to now (ticks left), so time itself is unbounded; only the
/// number of leadership terms and of epochs is bounded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ModelConfig {
    /// The controllers' leader lease TTL at the store, in ticks.
    pub leader_ttl: u8,
    /// A guard lease's TTL at the store, in ticks.
    pub guard_ttl: u8,
    /// How many ticks before the store would expire a lease its holder gives
    /// it up, by the holder's own clock: a leader steps down, a guard fences
    /// its node. The real margin covers clock drift and scheduling pauses;
    /// here it must cover `guard_drift`. Between two renewals a holder
    /// counts from the request, so `ttl - margin` must be at least 2 for a
    /// holder that renews every tick to keep its lease.
    pub margin: u8,
    /// How many ticks a guard's clock may fall behind the store's between
    /// two renewals (drift, or the guard paused). Safety needs
    /// `margin >= guard_drift`.
    pub guard_drift: u8,
    /// Leadership terms the store may grant (fencing tokens 1..=this).
    pub max_terms: u8,
    /// Highest writer epoch (the initial writer has epoch 1), so
    /// `max_epoch - 1` failovers can happen.
    pub max_epoch: u8,
    /// How messages fail.
    pub network: Network,
    /// What a controller accepts as proof that the old writer stopped.
    pub promotion: PromotionRule,
    /// Whether receivers check the fencing token.
    pub receivers: ReceiverChecks,
    /// Patroni-style failsafe mode for a store outage.
    pub failsafe: Failsafe,
    /// Synchronous replication (`policy.synchronous`): off, on or strict.
    pub synchronous: Synchronous,
    /// The order in which the writer's configuration and the writer
    /// record's `sync` set change (the safe one, or one step reversed).
    pub sync_order: SyncOrder,
    /// What a node checks before it applies a synchronous configuration.
    pub sync_check: SyncCheck,
    /// Whether a PostgreSQL server may freeze under its live guard, and
    /// what the guard then does at its deadline.
    pub frozen: FrozenServers,
}

impl ModelConfig {
    /// The safe protocol, small enough to check exhaustively in seconds:
    /// leader TTL 3, guard TTL 3, margin 1 (a holder that renews between
    /// every two ticks keeps its lease; one that stops gives it up after two
    /// ticks, one tick before the store expires it), two terms, one
    /// failover, a lossy network, receivers that check tokens, failsafe off.
    pub const fn small() -> Self {
        ModelConfig {
            leader_ttl: 3,
            guard_ttl: 3,
            margin: 1,
            guard_drift: 0,
            max_terms: 2,
            max_epoch: 2,
            network: Network::Lossy,
            promotion: PromotionRule::ProofOfStop,
            receivers: ReceiverChecks::Token,
            failsafe: Failsafe::Off,
            synchronous: Synchronous::Off,
            sync_order: SyncOrder::Safe,
            sync_check: SyncCheck::EpochAndToken,
            frozen: FrozenServers::Absent,
        }
    }

    /// The synchronous-replication model: [`small`](Self::small) with
    /// `policy.synchronous = on`, the safe order of changes and a node that
    /// refuses a configuration from a term older than the last one that
    /// configured it.
    pub const fn synchronous() -> Self {
        Self::small().with_synchronous(Synchronous::On)
    }

    /// The same model with another synchronous replication mode.
    pub const fn with_synchronous(mut self, synchronous: Synchronous) -> Self {
        self.synchronous = synchronous;
        self
    }

    /// The same model with another order of synchronous changes.
    pub const fn with_sync_order(mut self, sync_order: SyncOrder) -> Self {
        self.sync_order = sync_order;
        self
    }

    /// The same model with another check at the node for a synchronous
    /// configuration.
    pub const fn with_sync_check(mut self, sync_check: SyncCheck) -> Self {
        self.sync_check = sync_check;
        self
    }

    /// The same model with servers that may freeze under their guards.
    pub const fn with_frozen_servers(mut self, frozen: FrozenServers) -> Self {
        self.frozen = frozen;
        self
    }

    /// The same model with another network.
    pub const fn with_network(mut self, network: Network) -> Self {
        self.network = network;
        self
    }

    /// The same model with another promotion rule.
    pub const fn with_promotion(mut self, promotion: PromotionRule) -> Self {
        self.promotion = promotion;
        self
    }

    /// The same model with or without token checks at the receivers.
    pub const fn with_receivers(mut self, receivers: ReceiverChecks) -> Self {
        self.receivers = receivers;
        self
    }

    /// The same model with a failsafe mode.
    pub const fn with_failsafe(mut self, failsafe: Failsafe) -> Self {
        self.failsafe = failsafe;
        self
    }

    /// The same model with another margin (leaders and guards) and guard
    /// clock drift, in ticks.
    pub const fn with_guard_clock(mut self, margin: u8, guard_drift: u8) -> Self {
        self.margin = margin;
        self.guard_drift = guard_drift;
        self
    }

    /// The same model with other term and epoch bounds.
    pub const fn with_bounds(mut self, max_terms: u8, max_epoch: u8) -> Self {
        self.max_terms = max_terms;
        self.max_epoch = max_epoch;
        self
    }
}

/// How the network between controllers, the store and the guards fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Network {
    /// Any message may be lost, at any time, on any path. Partitions are a
    /// special case (every message on a path lost for a while), so this
    /// over-approximates them with a much smaller state.
    Lossy,
    /// Every link (controller–store, controller–node, guard–store,
    /// guard–guard) is an explicit state that the checker cuts and heals.
    /// Nothing crosses a cut link; a request crosses an intact one, though
    /// its reply may still be lost (the link was cut in between). Every
    /// behaviour here is also one of [`Network::Lossy`] (the properties do
    /// not read the links), so this mode adds readable traces, not
    /// coverage.
    Links,
}

/// When a controller may move the writer away from the old one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PromotionRule {
    /// The design's rule: only after the old writer's node confirmed the
    /// fence, or inside the same store transaction that finds the old
    /// writer's guard lease expired.
    ProofOfStop,
    /// The rule issue 9 removes: a failed fence (timeout, unreachable) also
    /// counts. The checker must find a split brain.
    PromoteOnUnreachable,
    /// The proof rule with the lease check split off: the controller reads
    /// that the old writer's guard lease expired, and moves the writer in a
    /// later request without the guard-key condition. The guard can renew
    /// and unfence in between, so the checker must find a split brain.
    LeaseReadBeforeMove,
    /// The proof rule, plus a wrong way to finish a claimed promotion: a
    /// leader whose view names a node claimed in an earlier term (epoch
    /// above 1; the record carries the claimer's token) and not promoted by
    /// itself takes that node for
    /// a replica and re-points the claim, by compare-and-set at the same
    /// epoch, to the node it prefers (here the other one), without a proof
    /// that the claimed node stopped. "It is a replica" is an observation
    /// that can be stale (every claimed node was a replica once, and
    /// controllers probe before they lead), so the model lets it be believed
    /// at any time: the claimed node may have been promoted and unfenced
    /// since, and the checker must find a split brain. The safe rule
    /// promotes the record's node at the record's epoch and never rewrites
    /// the record without a proof.
    RetargetUnfinishedClaim,
}

/// Whether the receiving side of a side effect checks the fencing token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReceiverChecks {
    /// The store's compare-and-set requires the current leader token, the
    /// DNS update has a prerequisite on the `_failover` TXT token, and a
    /// node's guard accepts a promote only for the current leader token and
    /// the writer record that names its node at that epoch.
    Token,
    /// Receivers apply whatever arrives: the checker must find a deposed
    /// leader's late side effect (S3).
    None,
}

/// Patroni's `failsafe_mode`: the writer may keep writing while the store is
/// unreachable if every other node's guard confirms directly that its node is
/// a fenced replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Failsafe {
    /// The safe default: a guard that cannot renew at the store fences.
    Off,
    /// The design text taken literally: a confirming guard refuses
    /// promotion (and unfencing) until it reaches the store again.
    HoldUntilStoreBack,
    /// A confirming guard refuses promotion and unfencing until the
    /// extension it granted has run out (a guard TTL), store or not.
    HoldForGrantedTtl,
}

/// Synchronous replication, as `policy.synchronous` sets it.
///
/// With two nodes the writer's synchronous set is either empty or the other
/// node, so the writer record's `sync` is one flag and so is the writer's
/// configuration (`synchronous_standby_names` requiring the other node).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Synchronous {
    /// Asynchronous replication: no synchronous set, no synchronous proof.
    Off,
    /// The leader adds the replica to the writer's synchronous set and may
    /// drop it again (the writer then acknowledges asynchronously). A
    /// promoted node starts asynchronous.
    On,
    /// As `On`, but the writer is never reconfigured to require nothing and
    /// the record's set is never emptied; a promoted node starts requiring
    /// any one standby (`'*'`).
    Strict,
}

/// The order of the two changes that add or drop a synchronous standby: the
/// writer's configuration and the writer record's `sync` set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SyncOrder {
    /// Add: configure the writer to require the standby, wait until it
    /// streams synchronously and has flushed everything, then record it.
    /// Drop: record the set without it, then reconfigure the writer.
    Safe,
    /// The drop reversed: the writer may be reconfigured to require nothing
    /// while the record still names the standby. The checker must find an
    /// acknowledged commit lost by a synchronous promotion.
    WriterAsyncBeforeRecordDrop,
    /// The add reversed: the record may name the standby before the writer
    /// was configured to require it (and before it caught up). The checker
    /// must find an acknowledged commit lost by a synchronous promotion.
    RecordBeforeWriterRequires,
}

/// What a node's guard checks before it applies a synchronous configuration
/// (`Action::SetSynchronous`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SyncCheck {
    /// Only that the node is the writer at the request's epoch (the request
    /// carries node and epoch, no token). A deposed leader's late request
    /// is applied: the checker must find an acknowledged commit lost.
    EpochOnly,
    /// Also that the request's fencing token is not older than the newest
    /// one that configured this node (kept durably on the node, as the DNS
    /// keeps its `_failover` TXT token): a deposed leader's late request is
    /// refused once a successor configured the node.
    EpochAndToken,
}

/// A PostgreSQL server too frozen to answer (SIGSTOP, a cgroup freeze, a
/// hung disk) while its guard lives on: it takes no commit, confirms no
/// fence and applies none, and when it thaws it carries on as it was, an
/// unfenced primary included.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FrozenServers {
    /// Servers never freeze: every fence that reaches a running node lands
    /// (the other checks; the state space stays as small as it was).
    Absent,
    /// Servers freeze and thaw; at its deadline the guard only fences, which
    /// a frozen server does not apply, and its lease then runs out as if the
    /// fence had landed. The checker must find the thawed old writer
    /// beside its successor (the split brain the chaos drills found).
    GuardFencesOnly,
    /// Servers freeze and thaw; a guard that reaches its deadline with its
    /// server frozen kills it instead (`failover_pg::NodeKill`, armed with
    /// `NodeGuard::start_with_kill`), before the store can expire its lease.
    /// The node is down until it restarts, fenced, as after a crash.
    GuardKills,
}
