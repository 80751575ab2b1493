//! The guard's loop: deadline first, renew, reconcile the node.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use failover_core::ports::{DatabaseAdmin, GuardLease};
use failover_core::{Epoch, NodeId, NodeObservation, PortError, WriterRecord};
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use super::{GuardDecision, GuardSettings, GuardStatus, KillOutcome, NodeKill};
use crate::PgError;

/// How an outside call raced against the guard's deadline ended.
enum Step<T> {
    Done(T),
    /// Fencing must start now.
    Deadline,
    /// The guard was told to stop.
    Stop,
}

/// Nothing from outside stops the loop except the stop signal.
struct Stopped;

/// What follows a fence that cannot be confirmed.
#[derive(Clone, Copy, Debug)]
enum Unconfirmed {
    /// The lease is held: retry soon (the deadline rule follows).
    Retry,
    /// The lease is gone (or its deadline is here): with a kill switch, kill
    /// the server if the fence is not confirmed by `by` (or fails sooner).
    Kill { by: Option<Instant> },
}

pub(super) struct Guard {
    node: NodeId,
    name: String,
    s: GuardSettings,
    lease: Arc<dyn GuardLease>,
    admin: Arc<dyn DatabaseAdmin>,
    tx: watch::Sender<GuardStatus>,
    /// `sent + ttl − margin` of the last renewal that counted.
    valid_until: Option<Instant>,
    last_sent: Option<Instant>,
    record: Option<WriterRecord>,
    own_fence: Option<Epoch>,
    /// The record's epoch while the guard saw its node be the writer (named,
    /// an unfenced primary, lease held): the node's promotion epoch.
    writer_epoch: Option<Epoch>,
    fenced: Option<bool>,
    replica: bool,
    reachable: bool,
    observed_epoch: Option<Epoch>,
    failed_renewals: u32,
    last_decision: Option<(GuardDecision, Instant)>,
    /// A fence was wanted and failed: try again soon, not a whole interval later.
    retry_soon: bool,
    /// The last resort for a node that cannot be fenced.
    kill: Option<NodeKill>,
    /// The guard killed its node's server, or found none running, and has
    /// not seen the node since as a replica or fenced: it does not renew, so
    /// the lease lapses and the controllers get their proof that the node
    /// stopped.
    letting_go: bool,
    /// The node answered an observation at least once in this guard's life.
    /// Until then a server that does not run is one not started yet (the
    /// guard starts first), not one that crashed.
    seen_running: bool,
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

impl Guard {
    pub(super) fn new(
        node: NodeId,
        name: String,
        s: GuardSettings,
        lease: Arc<dyn GuardLease>,
        admin: Arc<dyn DatabaseAdmin>,
        tx: watch::Sender<GuardStatus>,
        kill: Option<NodeKill>,
    ) -> Self {
        Guard {
            node,
            name,
            s,
            lease,
            admin,
            tx,
            valid_until: None,
            last_sent: None,
            record: None,
            own_fence: None,
            writer_epoch: None,
            fenced: None,
            replica: false,
            reachable: false,
            observed_epoch: None,
            failed_renewals: 0,
            last_decision: None,
            retry_soon: false,
            kill,
            letting_go: false,
            seen_running: false,
        }
    }

    fn fence_at(&self) -> Option<Instant> {
        self.valid_until
            .map(|d| d.checked_sub(self.s.fence_budget).unwrap_or(d))
    }

    fn lease_valid(&self, now: Instant) -> bool {
        self.fence_at().is_some_and(|at| now < at)
    }

    fn publish(&self) {
        let status = GuardStatus {
            node: self.node,
            lease_held: self.lease_valid(Instant::now()),
            fenced: if self.replica { None } else { self.fenced },
            replica: self.replica,
            reachable: self.reachable,
            last_renewal: self.last_sent,
            writer: self.record,
            own_fence: self.own_fence,
            writer_epoch: self.writer_epoch,
            last_decision: self.last_decision,
            failed_renewals: self.failed_renewals,
        };
        let node = self.name.clone();
        metrics::gauge!("failover_guard_lease_held", "node" => node.clone())
            .set(if status.lease_held { 1.0 } else { 0.0 });
        metrics::gauge!("failover_guard_fenced", "node" => node).set(
            if status.fenced == Some(true) {
                1.0
            } else {
                0.0
            },
        );
        self.tx.send_if_modified(|old| {
            let changed = *old != status;
            *old = status;
            changed
        });
    }

    fn decided(&mut self, decision: GuardDecision) {
        self.last_decision = Some((decision, Instant::now()));
        metrics::counter!(
            "failover_guard_decisions_total",
            "node" => self.name.clone(),
            "decision" => decision.label()
        )
        .increment(1);
    }

    /// Races `fut` against the moment fencing must start and the stop signal.
    async fn bounded<T>(
        &self,
        fut: impl Future<Output = T>,
        stop: &mut oneshot::Receiver<()>,
    ) -> Step<T> {
        let fence_at = self.fence_at();
        tokio::select! {
            biased;
            _ = stop => Step::Stop,
            () = sleep_until_opt(fence_at) => Step::Deadline,
            v = fut => Step::Done(v),
        }
    }

    pub(super) async fn run(mut self, mut stop: oneshot::Receiver<()>) {
        tracing::info!(
            node = %self.name,
            ttl = ?self.s.ttl,
            margin = ?self.s.margin,
            renew_interval = ?self.s.renew_interval,
            fence_budget = ?self.s.fence_budget,
            "guard {}: started; {} writes only while its {:?} lease is held",
            self.name, self.name, self.s.ttl
        );
        self.publish();
        let mut next_renew = Instant::now();
        loop {
            if self.iteration(&mut stop, &mut next_renew).await.is_err() {
                self.shutdown().await;
                return;
            }
            let now = Instant::now();
            let mut wake = next_renew;
            if let Some(at) = self.fence_at() {
                wake = wake.min(at);
            }
            if self.retry_soon {
                wake = wake.min(now + (self.s.renew_interval / 4).max(Duration::from_millis(20)));
            }
            tokio::select! {
                biased;
                _ = &mut stop => {
                    self.shutdown().await;
                    return;
                }
                () = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    async fn iteration(
        &mut self,
        stop: &mut oneshot::Receiver<()>,
        next_renew: &mut Instant,
    ) -> Result<(), Stopped> {
        // 1. Deadline first: after a pause, nothing else runs before this.
        self.check_deadline(stop).await?;
        // 2. Renew when due.
        if Instant::now() >= *next_renew {
            *next_renew = Instant::now() + self.s.renew_interval;
            // After a kill the lease is let go: an expired lease is the
            // controllers' proof that the node stopped, and a guard that
            // kept renewing for a dead node would deny it to them forever.
            if !self.letting_go {
                self.renew(stop).await?;
            }
        }
        // 3. Reconcile the node with the lease and the writer record.
        self.reconcile(stop).await
    }

    /// One renewal: the lease and a fresh copy of the writer record.
    async fn renew(&mut self, stop: &mut oneshot::Receiver<()>) -> Result<(), Stopped> {
        let sent = Instant::now();
        let renewal = tokio::time::timeout(
            self.s.renew_interval,
            self.lease.renew(self.node, self.s.ttl),
        );
        match self.bounded(renewal, stop).await {
            Step::Stop => return Err(Stopped),
            Step::Deadline => return self.check_deadline(stop).await,
            Step::Done(Ok(Ok(record))) => self.renewed(sent, record),
            Step::Done(Ok(Err(e))) => self.renewal_failed(&e.to_string()),
            Step::Done(Err(_)) => self.renewal_failed(&format!(
                "no answer within the renew interval {:?}",
                self.s.renew_interval
            )),
        }
        self.publish();
        // A reply after a pause may have come too late: check again.
        self.check_deadline(stop).await
    }

    fn renewed(&mut self, sent: Instant, record: Option<WriterRecord>) {
        let now = Instant::now();
        let until = sent + self.s.valid_for();
        let took = now - sent;
        metrics::histogram!("failover_guard_renew_seconds", "node" => self.name.clone())
            .record(took.as_secs_f64());
        if now + self.s.fence_budget >= until {
            self.failed_renewals += 1;
            tracing::warn!(
                node = %self.name,
                took = ?took,
                "guard {}: a renewal came back {} after it was sent, too late to count (was the guard paused?)",
                self.name, secs(took)
            );
            return;
        }
        if !self.lease_valid(now) {
            tracing::info!(
                node = %self.name,
                took = ?took,
                writer = ?record,
                "guard {}: lease held (renewed in {took:?})",
                self.name
            );
        }
        if record != self.record {
            tracing::info!(node = %self.name, writer = ?record, "guard {}: the writer record is now {record:?}", self.name);
        }
        self.valid_until = Some(until);
        self.last_sent = Some(sent);
        self.record = record;
        self.failed_renewals = 0;
    }

    fn renewal_failed(&mut self, why: &str) {
        self.failed_renewals += 1;
        metrics::counter!("failover_guard_renew_failures_total", "node" => self.name.clone())
            .increment(1);
        let left = self
            .fence_at()
            .map(|at| at.saturating_duration_since(Instant::now()));
        match left {
            Some(left) => tracing::warn!(
                node = %self.name,
                failed = self.failed_renewals,
                "guard {}: lease renewal failed ({why}); {} left before it must fence",
                self.name,
                secs(left)
            ),
            None => tracing::warn!(
                node = %self.name,
                failed = self.failed_renewals,
                "guard {}: lease renewal failed ({why}); no lease held, so {} stays fenced",
                self.name,
                self.name
            ),
        }
    }

    /// Fences when the deadline is less than the fence budget away.
    async fn check_deadline(&mut self, stop: &mut oneshot::Receiver<()>) -> Result<(), Stopped> {
        let Some(until) = self.valid_until else {
            return Ok(());
        };
        let now = Instant::now();
        if now + self.s.fence_budget < until {
            return Ok(());
        }
        self.valid_until = None;
        let since = self.last_sent.map_or(Duration::ZERO, |s| now - s);
        tracing::warn!(
            node = %self.name,
            since_renewal = ?since,
            ttl = ?self.s.ttl,
            "guard {}: no lease renewal for {}, fencing before the {} lease can expire",
            self.name,
            secs(since),
            secs(self.s.ttl)
        );
        self.publish();
        // The fence has three quarters of the budget; a kill (tens of
        // milliseconds) then has the last quarter and the margin before the
        // store can let the lease expire.
        let kill_by = until.checked_sub(self.s.fence_budget / 4).unwrap_or(until);
        self.fence(
            GuardDecision::FencedLeaseDeadline,
            Unconfirmed::Kill { by: Some(kill_by) },
            stop,
        )
        .await
    }

    async fn reconcile(&mut self, stop: &mut oneshot::Receiver<()>) -> Result<(), Stopped> {
        let observed = match self.bounded(self.admin.observe(self.node), stop).await {
            Step::Stop => return Err(Stopped),
            Step::Deadline => return self.check_deadline(stop).await,
            Step::Done(o) => o,
        };
        let (epoch, fenced) = match observed {
            Err(e) => {
                self.reachable = false;
                tracing::warn!(node = %self.name, error = %e, "guard {}: cannot observe {}: {e}", self.name, self.name);
                self.release_if_down().await;
                self.publish();
                return Ok(());
            }
            Ok(NodeObservation::Unreachable) => {
                if self.reachable {
                    tracing::warn!(
                        node = %self.name,
                        "guard {}: {} is unreachable (down or restarting); its fence state is re-applied when it is back",
                        self.name, self.name
                    );
                }
                self.reachable = false;
                self.release_if_down().await;
                self.publish();
                return Ok(());
            }
            Ok(NodeObservation::Replica { .. }) => {
                self.seen_running = true;
                self.back_after_letting_go("a replica");
                if !self.reachable || !self.replica {
                    tracing::info!(node = %self.name, "guard {}: {} is a replica (read-only), nothing to fence", self.name, self.name);
                }
                self.reachable = true;
                self.replica = true;
                // A replica has no promotion epoch of its own until promoted,
                // and carries no fence of the guard's.
                self.writer_epoch = None;
                self.own_fence = None;
                self.retry_soon = false;
                self.publish();
                return Ok(());
            }
            Ok(NodeObservation::Primary { epoch, fenced, .. }) => (epoch, fenced),
        };
        if !self.reachable {
            tracing::info!(node = %self.name, fenced, "guard {}: {} is reachable, a primary, fenced: {fenced}", self.name, self.name);
        }
        self.seen_running = true;
        if fenced {
            self.back_after_letting_go("a fenced primary");
        }
        self.reachable = true;
        self.replica = false;
        self.fenced = Some(fenced);
        self.observed_epoch = epoch;
        if fenced {
            self.retry_soon = false;
        } else if let Some(f) = self.own_fence.take() {
            // Someone else lifted the guard's fence: a later fence is not
            // the guard's to lift.
            tracing::info!(node = %self.name, "guard {}: its fence ({f}) was lifted by someone else", self.name);
        }
        self.publish();

        if !self.lease_valid(Instant::now()) {
            if !fenced {
                return self.reapply_fence(stop).await;
            }
            return Ok(());
        }
        let Some(mut record) = self.record else {
            return Ok(());
        };
        let mut mine = record.node == self.node;
        if !fenced && !mine {
            // The record was read before this observation, up to a renew
            // interval ago. A controller names the new writer in the store
            // *before* it promotes it, so a replica promoted since is named
            // in a fresher record: read it again before fencing, or the
            // guard would undo the very failover its node is part of.
            tracing::info!(
                node = %self.name,
                writer = %record.node,
                "guard {}: {} is an unfenced primary that the writer record read {} ago does not name: reading the record again before deciding",
                self.name, self.name,
                secs(self.last_sent.map_or(Duration::ZERO, |s| s.elapsed()))
            );
            self.renew(stop).await?;
            if !self.lease_valid(Instant::now()) {
                return self.reapply_fence(stop).await;
            }
            let Some(fresh) = self.record else {
                return Ok(());
            };
            record = fresh;
            mine = record.node == self.node;
        }
        if !fenced && !mine {
            tracing::warn!(
                node = %self.name,
                writer = %record.node,
                epoch = %record.epoch,
                "guard {}: the writer record names {} at {}, but {} is an unfenced primary: fencing it as a stale primary",
                self.name, record.node, record.epoch, self.name
            );
            return self
                .fence(GuardDecision::FencedStalePrimary, Unconfirmed::Retry, stop)
                .await;
        }
        if !fenced && mine {
            match self.writer_epoch {
                Some(took_writes) if took_writes != record.epoch => {
                    tracing::warn!(
                        node = %self.name,
                        record_epoch = %record.epoch,
                        node_epoch = %took_writes,
                        "guard {}: the writer record names {} at {}, but {} took writes at {}: fencing it as a stale primary",
                        self.name, self.name, record.epoch, self.name, took_writes
                    );
                    return self
                        .fence(GuardDecision::FencedStalePrimary, Unconfirmed::Retry, stop)
                        .await;
                }
                Some(_) => {}
                None => {
                    self.writer_epoch = Some(record.epoch);
                    self.publish();
                }
            }
        }
        if fenced && mine {
            // Where the node took writes as the named writer: seen by this
            // guard, or — when it never saw that, as for a node promoted
            // while this guard held no lease and so fenced it at once — the
            // node's own promotion epoch (a fence's epoch never counts in
            // it). A record naming the node at that epoch again, read
            // under a held lease, is what lets it write: no other node can
            // have been claimed since, or the record would say so.
            let took_writes = self
                .writer_epoch
                .or_else(|| Some(self.observed_epoch.unwrap_or_default()));
            match self.own_fence {
                Some(f) if took_writes == Some(record.epoch) => {
                    return self.unfence(record, f, stop).await
                }
                Some(_) => tracing::debug!(
                    node = %self.name,
                    "guard {}: the writer record names {} at {}, not at {:?} where it last took writes: it stays fenced",
                    self.name, self.name, record.epoch, self.writer_epoch
                ),
                None => tracing::debug!(
                    node = %self.name,
                    "guard {}: fenced by someone else (the controller); left for it to lift",
                    self.name
                ),
            }
        }
        Ok(())
    }

    async fn unfence(
        &mut self,
        record: WriterRecord,
        fence_epoch: Epoch,
        stop: &mut oneshot::Receiver<()>,
    ) -> Result<(), Stopped> {
        match self
            .bounded(self.admin.unfence(self.node, fence_epoch), stop)
            .await
        {
            Step::Stop => Err(Stopped),
            // The unfence may have been cut half-way: fence again.
            Step::Deadline => self.check_deadline(stop).await,
            Step::Done(Ok(())) => {
                self.own_fence = None;
                self.fenced = Some(false);
                self.decided(GuardDecision::Unfenced);
                tracing::warn!(
                    node = %self.name,
                    epoch = %record.epoch,
                    fence_epoch = %fence_epoch,
                    "guard {}: the writer record names {} at {} again and the lease is held: its fence ({}) was lifted",
                    self.name, self.name, record.epoch, fence_epoch
                );
                self.publish();
                // It may have taken long: the deadline decides again.
                self.check_deadline(stop).await
            }
            Step::Done(Err(e)) => {
                tracing::warn!(
                    node = %self.name,
                    error = %e,
                    "guard {}: the writer record names {} at {}, but lifting the fence was refused or failed: {e}; it stays fenced",
                    self.name, self.name, record.epoch
                );
                Ok(())
            }
        }
    }

    /// The fence epoch: the promotion that would follow the writer record,
    /// so the fence never blocks it.
    fn fence_epoch(&self) -> Epoch {
        match self.record {
            Some(r) => r.epoch.next(),
            None => self.observed_epoch.unwrap_or_default().next(),
        }
    }

    /// Fences the node; retries a refused epoch with the one the node
    /// recorded. Failure leaves `retry_soon` set.
    async fn fence(
        &mut self,
        decision: GuardDecision,
        unconfirmed: Unconfirmed,
        stop: &mut oneshot::Receiver<()>,
    ) -> Result<(), Stopped> {
        let already_fenced_by_other = self.fenced == Some(true) && self.own_fence.is_none();
        let started = Instant::now();
        let kill_by = match unconfirmed {
            Unconfirmed::Kill { by } if self.kill.is_some() => by,
            _ => None,
        };
        let (result, epoch) = tokio::select! {
            biased;
            _ = &mut *stop => return Err(Stopped),
            r = self.try_fence() => r,
            () = sleep_until_opt(kill_by) => (
                Err("not confirmed by the lease deadline".to_owned()),
                self.fence_epoch(),
            ),
        };
        let took = started.elapsed();
        match result {
            Ok(None) => {
                self.replica = true;
                self.retry_soon = false;
                tracing::info!(node = %self.name, "guard {}: {} is a replica, already read-only", self.name, self.name);
            }
            Ok(Some(lsn)) => {
                self.replica = false;
                self.fenced = Some(true);
                self.retry_soon = false;
                if !already_fenced_by_other {
                    self.own_fence = Some(epoch);
                }
                self.decided(decision);
                tracing::warn!(
                    node = %self.name,
                    %epoch,
                    flush_lsn = %lsn,
                    took = ?took,
                    decision = decision.label(),
                    "guard {}: {} fenced at {epoch} in {took:?}; it stays read-only until the writer record names it with a held lease",
                    self.name, self.name
                );
            }
            Err(why) => {
                self.retry_soon = true;
                metrics::counter!("failover_guard_fence_failures_total", "node" => self.name.clone())
                    .increment(1);
                if let Unconfirmed::Kill { .. } = unconfirmed {
                    tracing::error!(
                        node = %self.name,
                        %epoch,
                        took = ?took,
                        "guard {}: fencing {} failed ({why}) and the guard holds no lease to retry under",
                        self.name, self.name
                    );
                    self.last_resort(&why).await;
                } else {
                    tracing::error!(
                        node = %self.name,
                        %epoch,
                        took = ?took,
                        "guard {}: fencing {} failed ({why}); retrying (a node that cannot be reached is not writing either)",
                        self.name, self.name
                    );
                }
            }
        }
        self.publish();
        Ok(())
    }

    /// Rule 4: an unfenced primary while the guard holds no lease.
    async fn reapply_fence(&mut self, stop: &mut oneshot::Receiver<()>) -> Result<(), Stopped> {
        tracing::warn!(
            node = %self.name,
            "guard {}: {} is an unfenced primary but the guard holds no lease: fencing it",
            self.name, self.name
        );
        self.fence(
            GuardDecision::FenceReapplied,
            Unconfirmed::Kill { by: None },
            stop,
        )
        .await
    }

    /// With a kill switch, an unreachable node whose server does not run
    /// (crashed, stopped) gets what a killed one gets: the lease lapses, so
    /// the controllers may promote another node, until it is back as a
    /// replica or fenced. A server that runs but does not answer (starting
    /// up, overloaded, frozen) keeps the lease; the deadline rules apply.
    async fn release_if_down(&mut self) {
        // A node never seen running is one not started yet: the guard
        // starts before PostgreSQL and holds the lease for its boot, as a
        // node named writer must boot unfenced.
        if self.letting_go || !self.seen_running {
            return;
        }
        let Some(kill) = self.kill.clone() else {
            return;
        };
        match kill.running().await {
            Ok(None) => {
                self.let_lease_go(GuardDecision::NodeDown);
                tracing::warn!(
                    node = %self.name,
                    data_dir = %kill.data_dir().display(),
                    "guard {}: no PostgreSQL server runs in {}: not renewing, so the lease lapses and the controllers may promote another node; renewing again once {} is back as a replica or fenced",
                    self.name, kill.data_dir().display(), self.name
                );
            }
            Ok(Some(_)) => {}
            Err(e) => {
                tracing::debug!(node = %self.name, error = %e, "guard {}: cannot tell whether {}'s server runs: {e}", self.name, self.name)
            }
        }
    }

    /// Stops renewing after `decision` (a kill, or no server running): the
    /// node is down, not fenced, and its lease lapses.
    fn let_lease_go(&mut self, decision: GuardDecision) {
        self.letting_go = true;
        self.valid_until = None;
        self.reachable = false;
        self.fenced = None;
        self.retry_soon = false;
        self.decided(decision);
    }

    /// The node let go is back in a state that takes no writes: renew again.
    fn back_after_letting_go(&mut self, state: &str) {
        if self.letting_go {
            self.letting_go = false;
            tracing::warn!(
                node = %self.name,
                "guard {}: {} is back as {state}; renewing the lease again",
                self.name, self.name
            );
        }
    }

    /// The fence could not be confirmed and the lease is gone (or about to
    /// be): kill the server if the guard may, else say what that leaves.
    async fn last_resort(&mut self, why: &str) {
        let Some(kill) = self.kill.clone() else {
            tracing::error!(
                node = %self.name,
                "guard {}: {} is not confirmed fenced ({why}) and the guard has no kill switch: if its server is frozen rather than down, it may take writes again after its lease expires (start the guard with NodeGuard::start_with_kill)",
                self.name, self.name
            );
            return;
        };
        let started = Instant::now();
        match kill.kill().await {
            Ok(KillOutcome::Killed {
                postmaster,
                children,
            }) => {
                self.let_lease_go(GuardDecision::KilledNode);
                tracing::error!(
                    node = %self.name,
                    postmaster,
                    children,
                    took = ?started.elapsed(),
                    data_dir = %kill.data_dir().display(),
                    "guard {}: {} could not be fenced ({why}): its server was killed (postmaster {postmaster} and {children} children) before its lease can expire; the lease is not renewed until {} is back as a replica or fenced; bring it back as a replica of the new writer, not as it was",
                    self.name, self.name, self.name
                );
            }
            Ok(KillOutcome::NotRunning { why: none }) => tracing::warn!(
                node = %self.name,
                "guard {}: {} could not be fenced ({why}), and no server is running to kill ({none})",
                self.name, self.name
            ),
            Err(e) => {
                metrics::counter!("failover_guard_kill_failures_total", "node" => self.name.clone())
                    .increment(1);
                tracing::error!(
                    node = %self.name,
                    error = %e,
                    "guard {}: {} could not be fenced ({why}) and killing its server failed: {e}",
                    self.name, self.name
                );
            }
        }
    }

    /// Fences at [`fence_epoch`](Self::fence_epoch); a refused epoch is
    /// retried with the one the node recorded (a fence epoch can be reused,
    /// a promotion epoch needs the next). Returns the result and the epoch
    /// of the last attempt.
    async fn try_fence(&self) -> (Result<Option<failover_core::Lsn>, String>, Epoch) {
        let mut epoch = self.fence_epoch();
        let limit = self.s.fence_budget.max(Duration::from_secs(1)) * 2;
        for attempt in 1..=3 {
            match tokio::time::timeout(limit, self.admin.fence(self.node, epoch)).await {
                Err(_) => {
                    return (
                        Err(format!("the fence did not finish within {limit:?}")),
                        epoch,
                    )
                }
                Ok(Ok(lsn)) => return (Ok(lsn), epoch),
                Ok(Err(e)) => match stale_recorded(&e) {
                    Some(recorded) if attempt < 3 => {
                        epoch = if attempt == 1 && recorded > epoch {
                            recorded
                        } else {
                            recorded.next()
                        };
                    }
                    _ => return (Err(e.to_string()), epoch),
                },
            }
        }
        (Err("the node refused every fence epoch".into()), epoch)
    }

    /// Stop: fence, and release the lease only when the fence was confirmed.
    async fn shutdown(&mut self) {
        let limit = self.s.fence_budget.max(Duration::from_secs(1)) * 6;
        let fenced = match tokio::time::timeout(limit, self.try_fence()).await {
            Ok((Ok(_), _)) => true,
            Ok((Err(e), _)) => {
                tracing::warn!(node = %self.name, error = %e, "guard {}: stopping; fencing failed ({e}), so the lease is not released and expires after {}", self.name, secs(self.s.ttl));
                self.last_resort(&e).await;
                false
            }
            Err(_) => {
                tracing::warn!(node = %self.name, "guard {}: stopping; the fence did not finish within {limit:?}, so the lease is not released", self.name);
                self.last_resort(&format!("the fence did not finish within {limit:?}"))
                    .await;
                false
            }
        };
        if fenced {
            self.fenced = Some(true);
            match tokio::time::timeout(self.s.renew_interval, self.lease.release(self.node)).await {
                Ok(Ok(())) => {
                    self.decided(GuardDecision::Released);
                    tracing::warn!(node = %self.name, "guard {}: stopping; {} is fenced and the lease released", self.name, self.name);
                }
                Ok(Err(e)) => {
                    tracing::warn!(node = %self.name, error = %e, "guard {}: stopping; {} is fenced, but releasing the lease failed ({e}): it expires after {}", self.name, self.name, secs(self.s.ttl))
                }
                Err(_) => {
                    tracing::warn!(node = %self.name, "guard {}: stopping; {} is fenced, but the release got no answer: the lease expires after {}", self.name, self.name, secs(self.s.ttl))
                }
            }
        }
        self.valid_until = None;
        self.publish();
    }
}

/// The epoch a stale-epoch refusal names.
fn stale_recorded(e: &PortError) -> Option<Epoch> {
    match e.inner().downcast_ref::<PgError>() {
        Some(PgError::StaleEpoch { recorded, .. }) => Some(*recorded),
        _ => None,
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
