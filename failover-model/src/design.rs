//! Design note: what the model is, what it leaves out, and how it maps onto
//! the real code. (Documentation only; this module has no items.)
//!
//! The protocol is DESIGN.md's "One writer, always". The model checks it
//! for two controllers `c0`, `c1`, the coordination store, two PostgreSQL
//! nodes `n0`, `n1` each with its guard, and one DNS receiver.
//!
//! # Parties and what they hold
//!
//! | model | real code |
//! |---|---|
//! | [`Store`](crate::Store): one linearizable object; each request is applied atomically or not at all | etcd (3 members); the in-process store of the single-controller default |
//! | [`LeaderKey`](crate::LeaderKey) `{controller, token, ticks_left}` | the leader key under the controllers' lease; `token` is its create revision (`failover_core::coordination::FencingToken`) |
//! | `Store::writer` [`Writer`](crate::Writer) `{node, epoch, sync}` | the writer record (`failover_core::coordination::WriterRecord`); `sync` is `WriterRecord.sync` (with two nodes: empty, or the other node) |
//! | `Store::guard_lease[n]` | node `n`'s guard lease (`failover_core::ports::GuardLease`) |
//! | [`Controller`](crate::Controller) `{paused, lead, view, proof, configured}` | a controller process: its belief that it leads, the writer record it last read, whether it holds a fence confirmation, whether its `Action::SetSynchronous` requiring the standby was reported done (`sync_configured`) |
//! | [`Node`](crate::Node) `{up, promoted, fence_epoch, fenced, deadline}` | PostgreSQL plus its `NodeGuard`: `promoted` and `fence_epoch` are the durable rows of `failover.epoch` / `failover.fence`, `fenced` is the fence (read-only, sessions terminated), `deadline` the guard's own countdown |
//! | `Node::{requires, sync_token, lacks_acked}` | `synchronous_standby_names` requiring the other node (set by `Action::SetSynchronous`); the newest token that configured it (a proposal, see below); as a replica, whether it lacks a commit the writer acknowledged |
//! | [`Synchronous`](crate::Synchronous) `Off`/`On`/`Strict` | `policy.synchronous` = off / on / strict |
//! | [`Proof::SynchronousStandby`](crate::Proof::SynchronousStandby) | `StopProof::SynchronousStandby` (`sync_proof` in `failover-core`) |
//! | [`Dns`](crate::Dns) `{node, token}` | the zone, and the token in its `_failover` TXT record |
//!
//! # The rules, as modelled
//!
//! - **Leadership.** A controller with no lead creates the leader key if
//!   none exists; the store's revision counter gives the token (1, 2, … —
//!   strictly growing). A keep-alive renews the key, or finds it gone and
//!   steps down. The controller believes it leads for `leader_ttl − margin`
//!   ticks from the request, so a running controller steps down one tick
//!   before the store can expire its key.
//! - **Moving the writer.** A leader reads the writer record, then needs a
//!   proof that the named node stopped: its fence **confirmed** by the node
//!   (the fence carries the next epoch, recorded durably on the node), or
//!   the node's guard lease **expired** — checked inside the same store
//!   transaction that moves the record (etcd: `If(leader key create
//!   revision == token, writer == {old, e}, guard key of old absent)
//!   Then(put writer {new, e+1})`). Checking the lease and then writing in a
//!   second request would let the guard renew, see itself named, and
//!   unfence in between: [`PromotionRule::LeaseReadBeforeMove`] does that,
//!   and the checker finds the split brain in 10 steps. The fence-confirmed move is the same transaction
//!   without the guard-key condition.
//! - **Promote.** The leader asks the node its view names to promote at that
//!   epoch. The node's guard accepts only if the store says the token is the
//!   current term's and the writer record names this node at this epoch;
//!   PostgreSQL accepts only an epoch above its promotion epoch and not below
//!   its fence epoch (`failover-pg`'s epoch rule). A promoted node stays
//!   fenced until its guard unfences it.
//! - **Finishing a claimed promotion.** The record move is the claim; the
//!   promote is a separate request, so a leader can claim a node and then
//!   crash, pause or lose its term before it promotes. Any leader whose
//!   view is the current record may send the promote — the
//!   [`Action::Promote`](crate::Action::Promote) step does not ask who
//!   claimed the node — so a successor that reads the record finishes the
//!   promotion at the record's epoch without a fence or proof of its own
//!   (`finish_claimed_promotion` in `failover-core`). That is safe because
//!   the claim already deposed the old writer: it was made only with a
//!   proof that the old writer stopped, and the old writer's guard unfences
//!   only for a record naming its own node at its own epoch. The
//!   `sometimes` property "a successor finishes a claimed promotion" shows
//!   the exhaustive check reaches it; the shortest trace is a leader whose
//!   keep-alives are lost after its claim, and a successor that promotes.
//!   Two wrong finishes are harmless here, because the guard checks the
//!   record: promoting the record's node at a new epoch without re-claiming,
//!   or a node the record does not name, is refused, and a node so promoted
//!   would stay fenced (they would cost availability, not S1 or S3). The
//!   harmful one rewrites the record:
//!   [`PromotionRule::RetargetUnfinishedClaim`](crate::PromotionRule::RetargetUnfinishedClaim)
//!   re-points an unfinished claim to another node at the same epoch
//!   without a proof, believing the claimed node a replica; the claimed node
//!   may have been promoted and unfenced since, and the checker finds the
//!   split brain in 14 steps.
//! - **Guards.** A guard renews its lease (`guard_ttl`) and reads the writer
//!   record in one request. Its node is then unfenced if and only if the
//!   record names it at the epoch it was promoted at and no fence carried a
//!   higher epoch; otherwise it is fenced. If a guard cannot renew, it
//!   fences its node when its own countdown (`guard_ttl − margin`, counted
//!   from the request) reaches zero, one tick before the store expires the
//!   lease. A replica is kept fenced: it cannot take writes anyway. By
//!   default the model takes that fence as always landing. With
//!   [`FrozenServers`](crate::FrozenServers) a server may freeze under its
//!   live guard (SIGSTOP, a cgroup freeze): it confirms and applies no
//!   fence, and its guard may still renew the lease but cannot change the
//!   fence. A guard that then only fences at its deadline lets the lease
//!   run out as if the fence had landed, and the checker finds the thawed
//!   old writer beside its successor in 10 steps (the split brain the
//!   asynchronous chaos drills found). The implementation's guard kills the
//!   server it cannot fence instead (`failover_pg::NodeKill`, armed with
//!   `NodeGuard::start_with_kill`) before its deadline, and lets the lease
//!   lapse: modelled as [`GuardKills`](crate::FrozenServers::GuardKills),
//!   the node goes down at the deadline, one tick before the store expires
//!   the lease, and comes back only by a restart, fenced; S1 and S3 then
//!   hold exhaustively, and S1 for acknowledged commits and S2 hold with
//!   synchronous replication (one term).
//! - **DNS.** An update carries the token and is applied only if the token
//!   is not below the TXT record's (an RFC 2136 prerequisite on the TXT
//!   record, after the new leader has raised it to its own token).
//! - **Unfence** is never a controller's side effect: only the guard lifts
//!   the fence, from the store's writer record, so a stale controller
//!   cannot cause one. S1 covers its effect.
//!
//! # Synchronous replication: the third proof
//!
//! With [`Synchronous::On`](crate::Synchronous::On) or
//! [`Strict`](crate::Synchronous::Strict) (issue 17):
//!
//! - **Commits and acknowledgements.** A writable node (running, promoted,
//!   unfenced) takes commits. One is *acknowledged* to its client only when
//!   every standby its configuration requires flushed it; a standby flushes
//!   only while it streams from the node (both running, the standby not
//!   promoted: a crashed, partitioned or promoted standby acknowledges
//!   nothing, and the commit waits). An asynchronous writer acknowledges at
//!   once and its replica lacks the commit until it catches up
//!   ([`Action::CatchUp`](crate::Action::CatchUp)). A client that cancels
//!   its wait leaves a local, unacknowledged commit: the known hole, which no
//!   property counts, and which the guard closes by fencing the old writer
//!   within its TTL. The model keeps only what the properties read: per
//!   replica, whether it lacks an acknowledged commit
//!   (`Node::lacks_acked`); an acknowledgement that changes nothing (a
//!   synchronous one, whose standby has the commit) is no step.
//! - **Adding the standby** (`evaluate_sync`): the leader configures the
//!   writer its view names to require the other node
//!   ([`Action::SetSynchronous`](crate::Action::SetSynchronous), the real
//!   `Action::SetSynchronous`), which is reported done only once the standby
//!   streams and has flushed everything (its reply may be lost); then, with
//!   that report in memory (`sync_configured`), it compare-and-sets the
//!   record to name the standby ([`Action::RecordSync`](crate::Action::RecordSync),
//!   the real `Action::SetWriter` with the same node and epoch).
//! - **Dropping it** (mode on only): compare-and-set the record to the empty
//!   set first, then configure the writer to require nothing. Strict never
//!   does either. A promoted node starts asynchronous (on) or requiring any
//!   standby, `'*'` (strict; with two nodes and no rejoin, that means its
//!   commits wait).
//! - **The proof.** A leader whose view (the record it read, and the value
//!   its compare-and-set expects) names the old writer with the candidate in
//!   `sync` moves the record to `{candidate, epoch + 1, {}}` with no fence and
//!   no lease condition ([`Proof::SynchronousStandby`](crate::Proof::SynchronousStandby)),
//!   then promotes as before. The promotion stops the candidate's
//!   replication, so from then on an old writer that requires it
//!   acknowledges nothing; its guard fences it within its TTL as before.
//! - **What a node checks** before it applies `SetSynchronous`: that it is
//!   the writer at the request's epoch (the real request carries node and
//!   epoch), and, with [`SyncCheck::EpochAndToken`](crate::SyncCheck::EpochAndToken),
//!   that no newer term configured it. The epoch alone is not enough: a
//!   leader paused after it read a record with no standby resumes after its
//!   successor added one, and its late "require nothing" (the second step
//!   of a drop, in the safe order) is applied to the writer, which is still
//!   at the same epoch; the record names the standby, so a synchronous
//!   promotion loses the writer's next acknowledged commit. The
//!   counterexample test replays this 18-step trace. The fix modelled: the
//!   request carries the leader's fencing token and the node keeps the
//!   newest one that configured it (durably, like `failover.epoch`), refusing
//!   older ones, as the DNS does with its `_failover` TXT token.
//! - **What is atomic.** The "done" report of `SetSynchronous` is taken at a
//!   moment when the standby streams and lacks no acknowledged commit;
//!   applying it earlier without a report is the lost-reply case. A flush
//!   and its acknowledgement are one step: the standby's flush report cannot
//!   arrive after its promotion. In the real world it can, and the old
//!   writer may then acknowledge, after the new writer's first commit, a
//!   commit the new writer *has*: not a loss, but a wall-clock count of
//!   "commits acknowledged on the old writer after the new one's first" may
//!   see one. The property the real system keeps is that no such commit is
//!   missing on the new writer.
//!
//! # Faults
//!
//! - **Controller crash:** its memory is wiped (crash and restart are one
//!   step; a controller that stays down is one the checker does not
//!   schedule). Its key stays until the store expires it.
//! - **Pause (SIGSTOP):** a paused leader takes no step and does not step
//!   down while its countdown runs out; after it resumes it acts on what it
//!   believed until the next tick, when it notices. This is the worst case
//!   of "checked the lease, then was paused before acting", and it also
//!   stands for a request delayed in the network.
//! - **Freeze** ([`FrozenServers`](crate::FrozenServers), off by default):
//!   PostgreSQL stops answering while its guard runs; it takes no commit,
//!   confirms and applies no fence, streams nothing; on thaw it carries on
//!   as it was. Not modelled: PostgreSQL crashing while its guard lives on
//!   (the guard then lets its lease lapse, a liveness rule the drills check,
//!   which S1 and S3 do not depend on), and the single controller's restore
//!   rule (`WriterRestored`), which concerns a controller that lost its
//!   record and has no second controller to race with.
//! - **Node crash:** PostgreSQL and its guard go down together and come
//!   back together, the node fenced until its guard renews. *Deployment
//!   requirement:* the guard must share its node's fate — same host or pod,
//!   started before PostgreSQL accepts writes, and PostgreSQL stopped (or
//!   fenced) if the guard dies. A guard that dies while its node keeps
//!   accepting writes breaks S1, and no protocol can repair that.
//! - **Message loss:** [`Network::Lossy`](crate::Network::Lossy) lets any
//!   request be lost, or applied with its reply lost, at any time. A lost
//!   request that changes no state is simply a step not taken; it is listed
//!   as an action only where the sender reacts to the timeout (the fence
//!   under the old rule). Lost replies are modelled for fences and writer
//!   moves. For renewals and keep-alives a lost reply only makes the holder
//!   give up earlier, and a lost campaign reply only blocks other
//!   controllers until the key expires: neither can break S1 or S3, so they
//!   are left out to keep the state space small.
//! - **Partitions:** [`Network::Links`](crate::Network::Links) makes each
//!   link (controller–store, controller–node, guard–store, guard–guard) a
//!   state the checker cuts and heals in any combination. Every behaviour
//!   with links is a behaviour of the lossy network with the same effect on
//!   everything the properties read, so the exhaustive lossy check covers
//!   partitions; the links mode is checked to a bounded depth and gives
//!   counterexamples that read like the partition tests.
//!
//! # Properties
//!
//! - **S1 one writer**: at most one node is up, promoted and not fenced.
//!   This holds for the fence and lease proofs. The synchronous proof breaks
//!   it on purpose: the old writer stays writable, taking commits it cannot
//!   acknowledge, until its guard fences it (the synchronous tests assert
//!   that the checker finds such a state, and only after a synchronous move).
//!   That is why S1 is restated for acknowledged commits:
//! - **S1 one acknowledging writer**: no node acknowledges a commit after a
//!   node was promoted at a higher epoch (checked as events:
//!   `State::ack_after_successor`), so there is no time at which two nodes
//!   each acknowledge commits; issue 17's "0 commits acknowledged on the old
//!   writer after the new one's first" follows. With synchronous off no
//!   acknowledgement is modelled: a node acknowledges only while writable,
//!   and S1 already says one node is.
//! - **S2 no acknowledged loss** (synchronous): a node promoted on the
//!   synchronous proof has every commit the old writer acknowledged, when it
//!   is promoted and after (`State::lost_ack`). Asynchronous promotions (fence
//!   or lease proof) may lose acknowledged commits up to `max_rpo`; that is
//!   not checked here.
//! - **S3 no stale side effect**: for each receiver — the writer record, the
//!   DNS, each node's promotion — no side effect is applied with a token
//!   older than one a successor already used on that receiver. Per
//!   receiver is what a token check at the receiver can give: a receiver
//!   cannot know of a newer term until someone tells it. Across receivers
//!   it does not hold: a resumed leader's DNS update is accepted after its
//!   successor moved the writer but before the successor touched DNS
//!   (pointing DNS at the fenced old writer until the successor's own
//!   update). Closing that needs the new leader to raise the `_failover`
//!   TXT token before its first other side effect, or DNS served from the
//!   store.
//! - **a failover happens** (sometimes): `n1` becomes the writable writer and
//!   DNS points at it.
//! - **a synchronous standby is promoted** (sometimes): the record's node
//!   takes writes after a move on the synchronous proof, so S1 for
//!   acknowledged commits and S2 are not checked vacuously.
//! - **a successor finishes a claimed promotion** (sometimes): the record's
//!   node takes writes, promoted at the record's epoch with a later term's
//!   token than the one that wrote the record
//!   ([`State::claim_finished_by_successor`](crate::State::claim_finished_by_successor)),
//!   so S1 and S3 are not checked vacuously for that rule.
//!
//! # Abstracted away
//!
//! - **Consensus inside the store**: etcd is one linearizable object. An
//!   etcd minority down is invisible; a majority down is "every request to
//!   the store is lost", which the lossy network already includes.
//! - **Clock drift**: the store's and controllers' clocks are perfect and
//!   time is discrete. A guard's clock may lag: with `guard_drift` set, a
//!   tick may pass uncounted by a guard, up to `guard_drift` ticks between
//!   two renewals (drift, or the guard paused). The checks show that a
//!   margin equal to the drift keeps one writer and a margin below it does
//!   not (`tests/guard_clock.rs`). The real margin must therefore cover the
//!   drift between a guard's clock and the store's over one TTL plus the
//!   guard's longest pause. A leader's lag is the pause fault above.
//! - **Health probes and verdicts**: a leader may decide at any moment that
//!   the writer is lost (the worst case for safety). Quorum of vantages,
//!   RPO gates and replication lag do not affect S1 or S3 and are left out.
//! - **Replication and data**: only what S2 needs for the synchronous
//!   proof (which replica lacks an acknowledged commit); no WAL positions,
//!   no RPO gate, no asynchronous loss bound. Two nodes make the
//!   synchronous set one flag; `FIRST n of n` with more standbys, and the
//!   choice among them, are not modelled.
//! - **Synchronous sizes**: the on and strict models are checked
//!   exhaustively with one leadership term, and with two terms to depth 14,
//!   in `cargo test`. The exhaustive two-term check of mode on is an ignored
//!   test (`cargo test -p failover-model --test sync -- --ignored`): it
//!   passed with 29,444,479 states in 974 s on a loaded 2-core machine.
//! - **Rejoin / rewind** of an old primary is not modelled; with the epoch
//!   bound of one failover it cannot matter.
//! - **Sizes and bounds**: two controllers, two nodes, [`ModelConfig`]
//!   bounds the number of terms and epochs. Times are kept as "ticks left"
//!   relative to now, so the check covers unbounded time.
//!
//! # Failsafe mode
//!
//! [`Failsafe`](crate::Failsafe) adds Patroni's opt-in `failsafe_mode` for a
//! store outage: the writer's guard extends its own countdown when the other
//! guard confirms directly that its node is fenced, and the confirming guard
//! then refuses promotion and unfencing for a while. How long that "while"
//! must be is what the model answers; see the failsafe tests.
//!
//! [`ModelConfig`]: crate::ModelConfig
//! [`PromotionRule::LeaseReadBeforeMove`]: crate::PromotionRule::LeaseReadBeforeMove
