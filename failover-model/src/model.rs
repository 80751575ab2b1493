//! The transition relation: which steps each party may take in a state, and
//! what each step changes. See [`design`](crate::design) for why each rule is
//! the way it is.

use stateright::{Model, Property};

use crate::config::{
    Failsafe, FrozenServers, ModelConfig, Network, PromotionRule, ReceiverChecks, SyncCheck,
    SyncOrder, Synchronous,
};
use crate::state::{
    streams, Controller, Dns, Lead, LeaderKey, Link, Node, Receiver, State, Store, Writer,
    CONTROLLERS, NODES,
};

/// How a request and its reply fared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Delivery {
    /// Applied, and the sender got the reply.
    Replied,
    /// Applied, but the reply was lost: the sender does not know.
    ReplyLost,
    /// Never arrived (lost, link cut, or receiver down): the sender sees a
    /// timeout.
    Lost,
}

/// What a store transaction moving the writer relies on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Proof {
    /// The controller holds proof from an earlier step: the old writer's
    /// fence confirmation (or, in the broken variants, a fence that merely
    /// failed, or a guard lease it saw expired in an earlier read).
    Held,
    /// The transaction itself requires the old writer's guard lease to be
    /// gone.
    LeaseExpired,
    /// The record read (and expected by the compare-and-set) names the old
    /// writer with the candidate in its synchronous set: the old writer
    /// cannot acknowledge a commit the candidate lacks
    /// (`StopProof::SynchronousStandby`). No fence, no lease wait.
    SynchronousStandby,
}

/// One step of one party. `c` is a controller index, `n` a node index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// One tick of time passes: leases count down, the store expires what
    /// ran out, running controllers step down and guards fence at their
    /// deadlines. The argument is a bit set of guards whose clocks lag and
    /// do not count this tick (at most `guard_drift` ticks per lease; 0 when
    /// every clock keeps time).
    Tick(u8),
    /// Controller `c` creates the leader key (it had none) and leads with
    /// the new revision as its token.
    Campaign(u8),
    /// Controller `c` renews its leader lease (its keep-alive).
    KeepAlive(u8),
    /// Controller `c` reads the writer record.
    ReadWriter(u8),
    /// Controller `c` fences the node its view names, with the next epoch.
    Fence(u8, Delivery),
    /// Controller `c` reads the guard lease of the node its view names and
    /// finds it expired ([`PromotionRule::LeaseReadBeforeMove`] only).
    SeeLeaseExpired(u8),
    /// Controller `c` moves the writer record to the other node at the next
    /// epoch by compare-and-set.
    MoveWriter(u8, Proof, Delivery),
    /// Controller `c` asks the node its view names to promote at that epoch.
    /// Any leader whose view is the current record may take this step,
    /// whoever claimed the record: it is also how a successor finishes a
    /// promotion that a leader claimed and then did not live (or lead) to
    /// send (`finish_claimed_promotion` in the real controller).
    Promote(u8),
    /// Controller `c` points DNS at the node its view names.
    UpdateDns(u8),
    /// Controller `c` configures the writer its view names to require the
    /// other node (`true`) or nothing (`false`) for every commit it
    /// acknowledges (`Action::SetSynchronous`). A request to require is
    /// reported done only once the standby streams and has flushed
    /// everything; its reply may be lost.
    SetSynchronous(u8, bool, Delivery),
    /// Controller `c` compare-and-sets the writer record its view names to
    /// the same writer and epoch with the other node in its synchronous set
    /// (`true`) or an empty one (`false`).
    RecordSync(u8, bool),
    /// Node `n` acknowledges a commit to its client: it is writable, and
    /// the standby its configuration requires (if any) streams from it and
    /// flushed the commit. Asynchronously, the standby lacks it.
    Ack(u8),
    /// Replica `n`, streaming, flushes every commit it lacked.
    CatchUp(u8),
    /// Controller `c` finds its view's node claimed in an earlier term and
    /// takes it for a replica, and re-points the record at the same epoch to
    /// the other node without a proof
    /// ([`PromotionRule::RetargetUnfinishedClaim`] only: unsafe).
    RetargetClaim(u8),
    /// Controller `c` crashes and starts again, remembering nothing. (A
    /// controller that stays down takes no step, which the checker already
    /// explores by not scheduling it.)
    Crash(u8),
    /// Controller `c` is stopped (SIGSTOP).
    Pause(u8),
    /// Controller `c` continues (SIGCONT), with what it believed before.
    Resume(u8),
    /// Node `n`'s guard renews its lease at the store and reads the writer
    /// record; then its node is unfenced if the record names it at its own
    /// promotion epoch, and fenced otherwise. A frozen node's guard renews
    /// the lease but cannot change the fence.
    Renew(u8),
    /// Failsafe mode: node `n`'s guard extends its own deadline because the
    /// other guard confirms directly that its node is fenced.
    FailsafeRenew(u8),
    /// Node `n` and its guard crash together.
    CrashNode(u8),
    /// Node `n` and its guard start again; the guard starts its node fenced.
    RestartNode(u8),
    /// Node `n`'s PostgreSQL freezes (SIGSTOP); its guard lives on
    /// ([`FrozenServers`] other than `Absent`).
    Freeze(u8),
    /// Node `n`'s PostgreSQL thaws (SIGCONT) and carries on as it was.
    Thaw(u8),
    /// A link is cut ([`Network::Links`] only).
    Cut(Link),
    /// A cut link heals.
    Heal(Link),
}

/// The one-writer protocol under a [`ModelConfig`].
#[derive(Clone, Debug)]
pub struct OneWriter {
    /// Sizes, bounds and variant.
    pub config: ModelConfig,
}

impl OneWriter {
    /// The model for `config`.
    pub fn new(config: ModelConfig) -> Self {
        OneWriter { config }
    }

    /// Replays `actions` from the initial state and returns the state they
    /// reach, checking that the model offers each one in turn, so that the
    /// interleaving is one the checker explores. A step the model does not
    /// offer is an error that names the step, the state and what was
    /// offered.
    pub fn replay(&self, actions: &[Action]) -> Result<State, String> {
        let mut state = self.init_states().remove(0);
        for (i, action) in actions.iter().enumerate() {
            let mut offered = Vec::new();
            self.actions(&state, &mut offered);
            if !offered.contains(action) {
                return Err(format!(
                    "step {}: {} is not offered in {}; offered: {offered:?}",
                    i + 1,
                    crate::describe_action(action),
                    crate::describe_state(&state)
                ));
            }
            state = self
                .next_state(&state, *action)
                .ok_or_else(|| format!("step {}: {action:?} has no next state", i + 1))?;
        }
        Ok(state)
    }

    fn up(&self, state: &State, link: Link) -> bool {
        self.config.network == Network::Lossy || state.cut & link.bit() == 0
    }

    /// The store's answer to "is `token` the current term?". Without
    /// receiver checks every token passes.
    fn token_current(&self, state: &State, token: u8) -> bool {
        self.config.receivers == ReceiverChecks::None
            || state.store.leader.is_some_and(|key| key.token == token)
    }

    fn deliveries(&self, reachable: bool, lost_matters: bool) -> Vec<Delivery> {
        let mut out = Vec::new();
        if reachable {
            out.push(Delivery::Replied);
            out.push(Delivery::ReplyLost);
        }
        // On a lossy network anything may be lost; with explicit links only
        // what meets a cut link or a dead receiver is.
        let may_be_lost = self.config.network == Network::Lossy || !reachable;
        if lost_matters && may_be_lost {
            out.push(Delivery::Lost);
        }
        out
    }

    fn controller_actions(&self, state: &State, c: usize, actions: &mut Vec<Action>) {
        let cu = c as u8;
        let ctl = &state.controllers[c];
        // Crashing or pausing a controller that does not lead changes nothing
        // that not scheduling it would not: only leaders crash or pause.
        if ctl.lead.is_some() {
            actions.push(Action::Crash(cu));
            if ctl.paused {
                actions.push(Action::Resume(cu));
                return;
            }
            actions.push(Action::Pause(cu));
        }
        let to_store = self.up(state, Link::ControllerStore(cu));
        let Some(lead) = ctl.lead else {
            if to_store
                && state.store.leader.is_none()
                && state.store.last_token < self.config.max_terms
            {
                actions.push(Action::Campaign(cu));
            }
            return;
        };
        // A keep-alive either renews a lease that has run down a little, or
        // finds the term gone and steps down.
        let full = self.config.leader_ttl - self.config.margin;
        if to_store
            && state
                .store
                .leader
                .is_none_or(|key| key.token != lead.token || lead.ticks_left < full)
        {
            actions.push(Action::KeepAlive(cu));
        }
        if to_store && ctl.view != Some(state.store.writer) {
            actions.push(Action::ReadWriter(cu));
        }
        let Some(view) = ctl.view else { return };
        let target = view.node as usize;
        // Fencing: only needed before a move, and only while unproven.
        if !ctl.proof {
            let reachable = self.up(state, Link::ControllerNode(cu, view.node))
                && state.nodes[target].answers();
            let lost_matters = self.config.promotion == PromotionRule::PromoteOnUnreachable;
            for d in self.deliveries(reachable, lost_matters) {
                actions.push(Action::Fence(cu, d));
            }
        }
        if self.config.promotion == PromotionRule::LeaseReadBeforeMove
            && !ctl.proof
            && to_store
            && state.store.guard_lease[target] == 0
        {
            actions.push(Action::SeeLeaseExpired(cu));
        }
        if to_store
            && view.epoch < self.config.max_epoch
            && state.store.writer == view
            && self.token_current(state, lead.token)
        {
            let mut proofs = Vec::new();
            if ctl.proof {
                proofs.push(Proof::Held);
            }
            if self.config.promotion != PromotionRule::LeaseReadBeforeMove
                && state.store.guard_lease[target] == 0
            {
                proofs.push(Proof::LeaseExpired);
            }
            if view.sync {
                proofs.push(Proof::SynchronousStandby);
            }
            for p in proofs {
                actions.push(Action::MoveWriter(cu, p, Delivery::Replied));
                actions.push(Action::MoveWriter(cu, p, Delivery::ReplyLost));
            }
        }
        if self.config.promotion == PromotionRule::RetargetUnfinishedClaim
            && to_store
            && view.epoch > 1
            && state.acted[Receiver::WriterRecord.index()] < lead.token
            && state.acted[Receiver::Node(view.node).index()] < lead.token
            && state.store.writer == view
            && self.token_current(state, lead.token)
        {
            actions.push(Action::RetargetClaim(cu));
        }
        if self.config.synchronous != Synchronous::Off {
            self.sync_actions(state, c, lead, view, to_store, actions);
        }
        if self.up(state, Link::ControllerNode(cu, view.node))
            && self.promote_accepted(state, lead.token, view)
        {
            actions.push(Action::Promote(cu));
        }
        let dns_ok = match self.config.receivers {
            ReceiverChecks::Token => lead.token >= state.dns.token,
            ReceiverChecks::None => true,
        };
        if dns_ok
            && state.dns
                != (Dns {
                    node: view.node,
                    token: lead.token,
                })
        {
            actions.push(Action::UpdateDns(cu));
        }
    }

    /// The steps that keep the writer's synchronous set and the record's
    /// `sync` in step (`evaluate_sync` in the real controller).
    fn sync_actions(
        &self,
        state: &State,
        c: usize,
        lead: Lead,
        view: Writer,
        to_store: bool,
        actions: &mut Vec<Action>,
    ) {
        let cu = c as u8;
        let ctl = &state.controllers[c];
        let cfg = &self.config;
        let writer = view.node as usize;
        let standby = 1 - writer;
        let record_current =
            to_store && state.store.writer == view && self.token_current(state, lead.token);
        // Add, step 1: configure the writer to require the standby. Done is
        // reported only once it streams and has flushed everything.
        if !ctl.configured && self.sync_config_accepted(state, c, lead, view) {
            if streams(&state.nodes, standby, writer) && !state.nodes[standby].lacks_acked {
                actions.push(Action::SetSynchronous(cu, true, Delivery::Replied));
            }
            actions.push(Action::SetSynchronous(cu, true, Delivery::ReplyLost));
        }
        // Add, step 2: record it, once the writer reported it required and
        // caught up (the reversed order records it first).
        if record_current
            && !view.sync
            && (ctl.configured || cfg.sync_order == SyncOrder::RecordBeforeWriterRequires)
        {
            actions.push(Action::RecordSync(cu, true));
        }
        if cfg.synchronous == Synchronous::Strict {
            return; // never falls back to asynchronous
        }
        // Drop, step 1: record the empty set.
        if record_current && view.sync {
            actions.push(Action::RecordSync(cu, false));
        }
        // Drop, step 2: the writer stops requiring the standby, once the
        // record no longer names it (the reversed order does it first).
        if (!view.sync || cfg.sync_order == SyncOrder::WriterAsyncBeforeRecordDrop)
            && state.nodes[writer].requires
            && self.sync_config_accepted(state, c, lead, view)
        {
            actions.push(Action::SetSynchronous(cu, false, Delivery::Replied));
        }
    }

    /// Whether node `view.node`'s guard applies a synchronous configuration
    /// from controller `c`: the node is the writer at `view.epoch`, and,
    /// with [`SyncCheck::EpochAndToken`], no newer term configured it.
    fn sync_config_accepted(&self, state: &State, c: usize, lead: Lead, view: Writer) -> bool {
        let node = &state.nodes[view.node as usize];
        self.up(state, Link::ControllerNode(c as u8, view.node))
            && node.answers()
            && (self.config.receivers == ReceiverChecks::None
                || (node.promoted == Some(view.epoch)
                    && (self.config.sync_check == SyncCheck::EpochOnly
                        || lead.token >= node.sync_token)))
    }

    /// Whether node `view.node` (and its guard) accepts "promote at
    /// `view.epoch`" from a controller with `token`.
    fn promote_accepted(&self, state: &State, token: u8, view: Writer) -> bool {
        let n = view.node as usize;
        let node = &state.nodes[n];
        if !node.answers() || node.promoted == Some(view.epoch) {
            return false;
        }
        match self.config.receivers {
            ReceiverChecks::None => true,
            ReceiverChecks::Token => {
                // The guard asks the store; PostgreSQL checks its own epochs.
                self.up(state, Link::GuardStore(view.node))
                    && self.token_current(state, token)
                    && state.store.writer == view
                    && node.promoted.is_none_or(|e| e < view.epoch)
                    && node.fence_epoch <= view.epoch
                    && node.hold == 0
            }
        }
    }

    /// Whether node `n` can acknowledge a commit, and doing so changes
    /// what the properties read. A synchronous acknowledgement (the standby
    /// streams and has the commit) changes nothing, so it is no step.
    fn ack_changes_state(&self, state: &State, n: usize) -> bool {
        let node = &state.nodes[n];
        let other = &state.nodes[1 - n];
        if !node.writable() || node.requires {
            return false;
        }
        match (other.promoted, node.promoted) {
            (Some(theirs), Some(mine)) if theirs > mine => {
                !state.ack_after_successor || (state.sync_claim && !state.lost_ack)
            }
            (Some(_), _) => false,
            (None, _) => !other.lacks_acked,
        }
    }

    fn node_actions(&self, state: &State, n: usize, actions: &mut Vec<Action>) {
        let nu = n as u8;
        let node = &state.nodes[n];
        if !node.up {
            actions.push(Action::RestartNode(nu));
            return;
        }
        actions.push(Action::CrashNode(nu));
        if self.config.frozen != FrozenServers::Absent {
            actions.push(if node.frozen {
                Action::Thaw(nu)
            } else {
                Action::Freeze(nu)
            });
        }
        if self.up(state, Link::GuardStore(nu)) {
            actions.push(Action::Renew(nu));
        }
        if self.config.synchronous != Synchronous::Off {
            if self.ack_changes_state(state, n) {
                actions.push(Action::Ack(nu));
            }
            if node.lacks_acked && streams(&state.nodes, n, 1 - n) {
                actions.push(Action::CatchUp(nu));
            }
        }
        let peer = &state.nodes[1 - n];
        if self.config.failsafe != Failsafe::Off
            && !node.fenced
            && node.promoted.is_some()
            && self.up(state, Link::GuardGuard)
            && peer.up
            && peer.fenced
        {
            actions.push(Action::FailsafeRenew(nu));
        }
    }
}

impl Model for OneWriter {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        let cfg = &self.config;
        let guard_deadline = cfg.guard_ttl - cfg.margin;
        let node = |primary: bool| Node {
            up: true,
            frozen: false,
            promoted: primary.then_some(1),
            fence_epoch: 0,
            fenced: !primary,
            deadline: guard_deadline,
            hold: 0,
            lag: 0,
            requires: false,
            sync_token: 0,
            lacks_acked: false,
        };
        vec![State {
            store: Store {
                leader: None,
                last_token: 0,
                writer: Writer {
                    node: 0,
                    epoch: 1,
                    sync: false,
                },
                guard_lease: [cfg.guard_ttl; NODES],
            },
            controllers: [Controller::FRESH; CONTROLLERS],
            nodes: [node(true), node(false)],
            dns: Dns { node: 0, token: 0 },
            cut: 0,
            acted: [0; 2 + 2 * NODES],
            stale_effect: false,
            sync_claim: false,
            ack_after_successor: false,
            lost_ack: false,
        }]
    }

    fn actions(&self, state: &State, actions: &mut Vec<Action>) {
        let lagging: Vec<u8> = (0..NODES as u8)
            .filter(|&n| {
                let node = &state.nodes[n as usize];
                node.up && node.lag < self.config.guard_drift
            })
            .collect();
        for mask in 0..(1u8 << lagging.len()) {
            let slow = lagging
                .iter()
                .enumerate()
                .filter(|(i, _)| mask & (1 << i) != 0)
                .fold(0u8, |acc, (_, &n)| acc | 1 << n);
            actions.push(Action::Tick(slow));
        }
        for c in 0..CONTROLLERS {
            self.controller_actions(state, c, actions);
        }
        for n in 0..NODES {
            self.node_actions(state, n, actions);
        }
        if self.config.network == Network::Links {
            for link in Link::all() {
                if link == Link::GuardGuard && self.config.failsafe == Failsafe::Off {
                    continue;
                }
                if state.cut & link.bit() == 0 {
                    actions.push(Action::Cut(link));
                } else {
                    actions.push(Action::Heal(link));
                }
            }
        }
    }

    fn next_state(&self, last: &State, action: Action) -> Option<State> {
        let cfg = &self.config;
        let mut s = last.clone();
        match action {
            Action::Tick(slow) => self.tick(&mut s, slow),
            Action::Campaign(c) => {
                let token = s.store.last_token + 1;
                s.store.last_token = token;
                s.store.leader = Some(LeaderKey {
                    controller: c,
                    token,
                    ticks_left: cfg.leader_ttl,
                });
                let ctl = &mut s.controllers[c as usize];
                ctl.lead = Some(Lead {
                    token,
                    ticks_left: cfg.leader_ttl - cfg.margin,
                });
                ctl.view = None;
                ctl.proof = false;
                ctl.configured = false;
            }
            Action::KeepAlive(c) => {
                let ctl = &mut s.controllers[c as usize];
                let lead = ctl.lead?;
                match s.store.leader.as_mut() {
                    Some(key) if key.token == lead.token => {
                        key.ticks_left = cfg.leader_ttl;
                        ctl.lead = Some(Lead {
                            token: lead.token,
                            ticks_left: cfg.leader_ttl - cfg.margin,
                        });
                    }
                    _ => {
                        ctl.lead = None;
                        ctl.view = None;
                        ctl.proof = false;
                        ctl.configured = false;
                    }
                }
            }
            Action::ReadWriter(c) => {
                let ctl = &mut s.controllers[c as usize];
                ctl.view = Some(s.store.writer);
                ctl.proof = false;
                ctl.configured = false;
            }
            Action::Fence(c, delivery) => {
                let ctl = s.controllers[c as usize];
                let view = ctl.view?;
                if delivery != Delivery::Lost {
                    let node = &mut s.nodes[view.node as usize];
                    node.fenced = true;
                    node.fence_epoch = node.fence_epoch.max(view.epoch + 1);
                }
                // The old rule takes a timeout as proof; the safe one only a reply.
                let proven = match delivery {
                    Delivery::Replied => true,
                    Delivery::ReplyLost | Delivery::Lost => {
                        cfg.promotion == PromotionRule::PromoteOnUnreachable
                    }
                };
                s.controllers[c as usize].proof = proven;
            }
            Action::SeeLeaseExpired(c) => s.controllers[c as usize].proof = true,
            Action::MoveWriter(c, proof, delivery) => {
                let ctl = s.controllers[c as usize];
                let (view, lead) = (ctl.view?, ctl.lead?);
                let next = Writer {
                    node: 1 - view.node,
                    epoch: view.epoch + 1,
                    sync: false,
                };
                s.store.writer = next;
                s.sync_claim = proof == Proof::SynchronousStandby;
                s.record_effect(Receiver::WriterRecord, lead.token);
                let ctl = &mut s.controllers[c as usize];
                ctl.proof = false;
                ctl.configured = false;
                ctl.view = (delivery == Delivery::Replied).then_some(next);
            }
            Action::Promote(c) => {
                let ctl = s.controllers[c as usize];
                let (view, lead) = (ctl.view?, ctl.lead?);
                let node = &mut s.nodes[view.node as usize];
                // The synchronous proof promised the candidate every
                // acknowledged commit; from now on it streams no more.
                if s.sync_claim && s.store.writer == view && node.lacks_acked {
                    s.lost_ack = true;
                }
                node.promoted = Some(view.epoch);
                node.lacks_acked = false;
                // On: it starts asynchronous; strict: requiring any one
                // standby (`'*'`), here the other node.
                node.requires = cfg.synchronous == Synchronous::Strict;
                s.record_effect(Receiver::Node(view.node), lead.token);
            }
            Action::SetSynchronous(c, require, delivery) => {
                let ctl = s.controllers[c as usize];
                let (view, lead) = (ctl.view?, ctl.lead?);
                let node = &mut s.nodes[view.node as usize];
                node.requires = require;
                if cfg.sync_check == SyncCheck::EpochAndToken {
                    node.sync_token = node.sync_token.max(lead.token);
                }
                s.record_effect(Receiver::SyncConfig(view.node), lead.token);
                s.controllers[c as usize].configured = require && delivery == Delivery::Replied;
            }
            Action::RecordSync(c, sync) => {
                let ctl = s.controllers[c as usize];
                let (view, lead) = (ctl.view?, ctl.lead?);
                let next = Writer { sync, ..view };
                s.store.writer = next;
                s.record_effect(Receiver::WriterRecord, lead.token);
                s.controllers[c as usize].view = Some(next);
            }
            Action::Ack(n) => {
                let n = n as usize;
                let mine = s.nodes[n].promoted;
                let other = &mut s.nodes[1 - n];
                match other.promoted {
                    Some(theirs) if mine.is_some_and(|m| theirs > m) => {
                        // A successor was promoted: the commit is not on it.
                        s.ack_after_successor = true;
                        s.lost_ack |= s.sync_claim;
                    }
                    Some(_) => {}
                    None => other.lacks_acked = true,
                }
            }
            Action::CatchUp(n) => s.nodes[n as usize].lacks_acked = false,
            Action::UpdateDns(c) => {
                let ctl = s.controllers[c as usize];
                let (view, lead) = (ctl.view?, ctl.lead?);
                s.dns = Dns {
                    node: view.node,
                    token: lead.token,
                };
                s.record_effect(Receiver::Dns, lead.token);
            }
            Action::RetargetClaim(c) => {
                let ctl = s.controllers[c as usize];
                let (view, lead) = (ctl.view?, ctl.lead?);
                let next = Writer {
                    node: 1 - view.node,
                    epoch: view.epoch,
                    sync: false,
                };
                s.store.writer = next;
                s.sync_claim = false;
                s.record_effect(Receiver::WriterRecord, lead.token);
                let ctl = &mut s.controllers[c as usize];
                ctl.proof = false;
                ctl.configured = false;
                ctl.view = Some(next);
            }
            Action::Crash(c) => s.controllers[c as usize] = Controller::FRESH,
            Action::Pause(c) => s.controllers[c as usize].paused = true,
            Action::Resume(c) => s.controllers[c as usize].paused = false,
            Action::Renew(n) => {
                let writer = s.store.writer;
                s.store.guard_lease[n as usize] = cfg.guard_ttl;
                let node = &mut s.nodes[n as usize];
                node.deadline = cfg.guard_ttl - cfg.margin;
                node.lag = 0;
                if cfg.failsafe == Failsafe::HoldUntilStoreBack {
                    node.hold = 0;
                }
                if node.frozen {
                    // The guard holds its lease again, but a fence or an
                    // unfence waits for a server that does not answer.
                    return Some(s);
                }
                let named = writer.node == n
                    && node.promoted == Some(writer.epoch)
                    && node.fence_epoch <= writer.epoch;
                node.fenced = !(named && node.hold == 0);
            }
            Action::FailsafeRenew(n) => {
                s.nodes[n as usize].deadline = cfg.guard_ttl - cfg.margin;
                s.nodes[n as usize].lag = 0;
                s.nodes[1 - n as usize].hold = cfg.guard_ttl;
            }
            Action::CrashNode(n) => {
                let node = &mut s.nodes[n as usize];
                node.up = false;
                node.frozen = false;
                node.deadline = 0;
                // A failsafe hold is a promise about wall-clock time: it
                // outlives a restart of the guard (kept on disk, or the guard
                // waits a guard TTL after starting before it unfences).
                if self.config.failsafe == Failsafe::HoldUntilStoreBack {
                    node.hold = 0;
                }
            }
            Action::RestartNode(n) => {
                let node = &mut s.nodes[n as usize];
                node.up = true;
                node.fenced = true;
            }
            Action::Freeze(n) => s.nodes[n as usize].frozen = true,
            Action::Thaw(n) => s.nodes[n as usize].frozen = false,
            Action::Cut(link) => s.cut |= link.bit(),
            Action::Heal(link) => s.cut &= !link.bit(),
        }
        Some(s)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always("S1 one writer", |_, s: &State| {
                s.writable_nodes().len() <= 1
            }),
            Property::always("S1 one acknowledging writer", |_, s: &State| {
                !s.ack_after_successor
            }),
            Property::always("S2 no acknowledged loss", |_, s: &State| !s.lost_ack),
            Property::always("S3 no stale side effect", |_, s: &State| !s.stale_effect),
            Property::sometimes("a failover happens", |_, s: &State| {
                s.store.writer.node == 1 && s.nodes[1].writable() && s.dns.node == 1
            }),
            Property::sometimes(
                "a successor finishes a claimed promotion",
                |_, s: &State| s.claim_finished_by_successor(),
            ),
            Property::sometimes("a synchronous standby is promoted", |_, s: &State| {
                s.synchronous_promotion()
            }),
        ]
    }
}

impl OneWriter {
    fn tick(&self, s: &mut State, slow: u8) {
        if let Some(key) = s.store.leader.as_mut() {
            key.ticks_left -= 1;
            if key.ticks_left == 0 {
                s.store.leader = None;
            }
        }
        for lease in s.store.guard_lease.iter_mut() {
            *lease = lease.saturating_sub(1);
        }
        for ctl in s.controllers.iter_mut() {
            if let Some(lead) = ctl.lead.as_mut() {
                lead.ticks_left = lead.ticks_left.saturating_sub(1);
                if lead.ticks_left == 0 && !ctl.paused {
                    ctl.lead = None;
                    ctl.view = None;
                    ctl.proof = false;
                    ctl.configured = false;
                }
            }
        }
        for (n, node) in s.nodes.iter_mut().enumerate() {
            if slow & (1 << n) != 0 {
                // This guard's clock lags: it counts neither its deadline
                // nor its hold this tick.
                node.lag += 1;
                continue;
            }
            if self.config.failsafe == Failsafe::HoldForGrantedTtl {
                node.hold = node.hold.saturating_sub(1);
            }
            if !node.up {
                continue;
            }
            node.deadline = node.deadline.saturating_sub(1);
            if node.deadline > 0 {
                continue;
            }
            if !node.frozen {
                node.fenced = true;
            } else if self.config.frozen == FrozenServers::GuardKills {
                // The fence is not confirmed in time: the guard kills the
                // server (SIGSTOP, then SIGKILL to every process) and lets
                // its lease run out; the node comes back only by a restart,
                // fenced.
                node.up = false;
                node.frozen = false;
            }
            // GuardFencesOnly: the fence waits for a server that does not
            // answer, and the lease runs out as if it had landed.
        }
    }
}
