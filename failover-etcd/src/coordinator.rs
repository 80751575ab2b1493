//! [`EtcdCoordinator`]: one controller's lease, leader campaign, watch and
//! conditional writes.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use etcd_client::{Compare, CompareOp, KeyValue, PutOptions, Txn, TxnOp, WatchOptions};
use failover_core::ports::Coordinator;
use failover_core::{
    CoordinationEvent, FencingToken, Intent, NodeId, Policy, PortError, Topology, VantageId,
    Verdict, WeightPlan, WriterRecord,
};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;

use crate::keys::{self, KeyKind, Keys};
use crate::store::{KeepAlive, Store};
use crate::{EtcdConfig, EtcdError};

/// Pause before retrying a failed grant or re-opening a broken watch.
const RETRY: Duration = Duration::from_millis(250);

/// A controller's membership in the etcd cluster; implements
/// [`Coordinator`]. Create it with [`connect`](Self::connect), then call
/// [`join`](Coordinator::join) once and [`next_event`](Coordinator::next_event)
/// in a loop. Dropping it stops its background tasks; its lease then expires
/// after `lease_ttl` ([`resign`](Coordinator::resign) hands over at once).
pub struct EtcdCoordinator {
    inner: Arc<Inner>,
    events: tokio::sync::Mutex<Events>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

struct Events {
    rx: mpsc::UnboundedReceiver<Result<CoordinationEvent, EtcdError>>,
    /// An event received while leadership had to be reported lost first.
    stash: VecDeque<Result<CoordinationEvent, EtcdError>>,
}

struct Inner {
    config: EtcdConfig,
    topology: Topology,
    keys: Keys,
    store: Store,
    vantage: VantageId,
    tx: mpsc::UnboundedSender<Result<CoordinationEvent, EtcdError>>,
    state: Mutex<State>,
    /// Woken when the leader key may be free.
    campaign: Notify,
    /// Held across reading the verdicts to publish and writing them, by a
    /// publication and by the re-publication under a new lease, so the one
    /// that writes last also read last: the newest vote is what stays.
    publishing: tokio::sync::Mutex<()>,
}

/// A key as last seen: value and create revision.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    value: Vec<u8>,
    create_revision: i64,
}

#[derive(Default)]
struct State {
    /// This controller's current lease.
    lease: Option<i64>,
    /// When the lease could first have expired at the store, minus the
    /// margin: measured from the last keep-alive *sent* that was answered.
    deadline: Option<Instant>,
    /// Our token while we lead.
    leading: Option<FencingToken>,
    /// Every key of the service layout as last seen.
    mirror: BTreeMap<String, Seen>,
    /// Our last published verdicts, re-published under a new lease.
    verdicts: Vec<Verdict>,
    /// Keys of our published verdicts.
    published: BTreeSet<String>,
    /// Our admin API's URL, published in the leader key while we lead.
    admin: Option<String>,
}

impl EtcdCoordinator {
    /// Validates `config` against `topology` and `policy` (errors name the
    /// setting) and builds the client. Makes no request: an unreachable
    /// cluster shows at [`join`](Coordinator::join).
    pub async fn connect(
        config: EtcdConfig,
        topology: Topology,
        policy: &Policy,
    ) -> Result<Self, EtcdError> {
        config.validate_against(&topology, policy)?;
        let vantage =
            topology
                .vantage_id(&config.vantage)
                .ok_or_else(|| EtcdError::UnknownName {
                    what: "vantage",
                    name: config.vantage.clone(),
                    hint: "set `vantage` to one of the topology's vantages",
                })?;
        let store = Store::connect(&config).await?;
        let (tx, rx) = mpsc::unbounded_channel();
        let keys = Keys::new(&config.prefix, &config.service);
        Ok(EtcdCoordinator {
            inner: Arc::new(Inner {
                config,
                topology,
                keys,
                store,
                vantage,
                tx,
                state: Mutex::new(State::default()),
                campaign: Notify::new(),
                publishing: tokio::sync::Mutex::new(()),
            }),
            events: tokio::sync::Mutex::new(Events {
                rx,
                stash: VecDeque::new(),
            }),
            tasks: Mutex::new(Vec::new()),
        })
    }

    /// The token while this controller leads, as it believes now.
    pub fn token(&self) -> Option<FencingToken> {
        self.inner.state().leading
    }

    /// When this controller will report its leadership lost if no further
    /// keep-alive is answered (`None` while it does not lead).
    pub fn leadership_deadline(&self) -> Option<Instant> {
        let st = self.inner.state();
        st.leading.and(st.deadline)
    }

    fn stop_tasks(&self) {
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for t in tasks {
            t.abort();
        }
    }
}

impl Drop for EtcdCoordinator {
    fn drop(&mut self) {
        self.stop_tasks();
    }
}

#[async_trait]
impl Coordinator for EtcdCoordinator {
    async fn join(&self) -> Result<Vec<CoordinationEvent>, PortError> {
        self.stop_tasks();
        {
            let mut events = self.events.lock().await;
            events.stash.clear();
            while events.rx.try_recv().is_ok() {}
        }
        let inner = &self.inner;
        // Joining again (after a failed join or a resign) starts afresh: an
        // earlier lease is no longer kept alive, so it must not be used.
        let earlier = {
            let mut st = inner.state();
            st.leading = None;
            st.deadline = None;
            st.lease.take()
        };
        if let Some(lease) = earlier {
            let store = inner.store.clone();
            tokio::spawn(async move {
                let _ = store.revoke(lease).await;
            });
        }
        let lease = inner.start_lease().await?;
        let (kvs, revision) = inner
            .store
            .get_prefix("read the service's keys", inner.keys.root())
            .await?;
        let mut events = inner.initial_events(kvs)?;
        let leadership = match inner.campaign(lease).await {
            Ok(token) => token,
            Err(e) => {
                inner.abandon_lease(lease);
                return Err(e.into());
            }
        };
        events.push(CoordinationEvent::Leadership(leadership));
        let session = tokio::spawn(Arc::clone(inner).session(lease));
        let watch = tokio::spawn(Arc::clone(inner).watch(revision + 1));
        *self.tasks.lock().unwrap_or_else(|p| p.into_inner()) = vec![session, watch];
        Ok(events)
    }

    async fn next_event(&self) -> Result<CoordinationEvent, PortError> {
        let mut events = self.events.lock().await;
        loop {
            let deadline = {
                let mut st = self.inner.state();
                if let Some(lost) = self.inner.expire(&mut st, Instant::now()) {
                    return Ok(lost);
                }
                st.leading.and(st.deadline)
            };
            if let Some(ev) = events.stash.pop_front() {
                if let Some(ev) = self.inner.still_true(ev) {
                    return ev.map_err(Into::into);
                }
                continue;
            }
            let wait = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                () = wait => continue,
                ev = events.rx.recv() => match ev {
                    Some(ev) => {
                        let mut st = self.inner.state();
                        if let Some(lost) = self.inner.expire(&mut st, Instant::now()) {
                            events.stash.push_back(ev);
                            return Ok(lost);
                        }
                        drop(st);
                        if let Some(ev) = self.inner.still_true(ev) {
                            return ev.map_err(Into::into);
                        }
                    }
                    None => {
                        return Err(EtcdError::Unavailable {
                            endpoints: self.inner.store.endpoints().to_owned(),
                            operation: "next_event",
                            reason: "the coordinator's event channel closed".into(),
                        }
                        .into())
                    }
                }
            }
        }
    }

    async fn set_writer(
        &self,
        token: FencingToken,
        expected: Option<WriterRecord>,
        new: WriterRecord,
        guard_absent: Option<NodeId>,
    ) -> Result<(), PortError> {
        let inner = &self.inner;
        let topology = &inner.topology;
        let writer_key = inner.keys.writer();
        // The old writer's guard lease must still be gone, in this very
        // transaction: read earlier, its guard could renew in between and
        // unfence the node as the named writer (found by failover-model).
        let guard_cmp = match guard_absent {
            Some(node) => Some(Compare::create_revision(
                inner.keys.guard(keys::node_name(topology, node)?),
                CompareOp::Equal,
                0,
            )),
            None => None,
        };
        let value = keys::encode_writer(topology, new)?;
        let writer_cmp = match expected {
            None => Compare::create_revision(writer_key.clone(), CompareOp::Equal, 0),
            Some(rec) => Compare::value(
                writer_key.clone(),
                CompareOp::Equal,
                keys::encode_writer(topology, rec)?,
            ),
        };
        let mut compares = vec![inner.token_compare(token)?, writer_cmp];
        compares.extend(guard_cmp);
        let txn = Txn::new().when(compares).and_then([TxnOp::put(
            writer_key.clone(),
            value.clone(),
            None,
        )]);
        let resp = inner.store.txn("set the writer record", txn).await?;
        if resp.succeeded() {
            tracing::info!(%token, node = %new.node, epoch = new.epoch.0, "writer record set to {} at {} under {token}", keys::node_name(topology, new.node).unwrap_or("?"), new.epoch);
            return Ok(());
        }
        let mut reason = inner.explain_token(token).await;
        if reason.is_empty() {
            let found = inner
                .store
                .get("read the writer record", &writer_key)
                .await
                .ok()
                .flatten()
                .map(|kv| String::from_utf8_lossy(kv.value()).into_owned());
            if found.as_deref() == Some(value.as_str()) {
                // Our token still leads and the store holds `new`: only we
                // can have written it (a repeated request whose first
                // attempt was applied).
                return Ok(());
            }
            let wanted = match expected {
                Some(rec) => keys::encode_writer(topology, rec)?,
                None => "no record".into(),
            };
            reason = if found.as_deref() == Some(wanted.as_str()) {
                format!(
                    "the guard lease of {} is held again: it is not proven stopped",
                    guard_absent
                        .and_then(|n| keys::node_name(topology, n).ok())
                        .unwrap_or("?")
                )
            } else {
                format!(
                    "the writer record is {}, not the expected {wanted}",
                    found.unwrap_or_else(|| "absent".into())
                )
            };
        }
        metrics::counter!("failover_etcd_refused_total", "operation" => "set_writer").increment(1);
        tracing::warn!(%token, "set_writer refused: {reason}");
        Err(EtcdError::Refused {
            operation: "set_writer",
            reason,
        }
        .into())
    }

    async fn publish_verdicts(&self, verdicts: &[Verdict]) -> Result<(), PortError> {
        let inner = &self.inner;
        let mut latest: BTreeMap<String, &Verdict> = BTreeMap::new();
        for v in verdicts {
            if v.vantage != inner.vantage {
                return Err(EtcdError::UnknownName {
                    what: "vantage",
                    name: keys::vantage_name(&inner.topology, v.vantage)
                        .unwrap_or("?")
                        .to_owned(),
                    hint: "a controller publishes only its own vantage's verdicts (`vantage` setting)",
                }
                .into());
            }
            let region = keys::region_name(&inner.topology, v.region)?;
            latest.insert(inner.keys.verdict(&inner.config.vantage, region), v);
        }
        let _publishing = inner.publishing.lock().await;
        let (lease, stale) = {
            let mut st = inner.state();
            // The newest verdicts are what a new lease re-publishes, even
            // when this publication fails: re-publishing the last ones that
            // landed would put back a vote this controller has since
            // changed, for as long as its next retry takes.
            st.verdicts = latest.values().map(|v| **v).collect();
            let stale: Vec<String> = st
                .published
                .iter()
                .filter(|k| !latest.contains_key(*k))
                .cloned()
                .collect();
            (st.lease, stale)
        };
        let Some(lease) = lease else {
            return Err(EtcdError::Unavailable {
                endpoints: inner.store.endpoints().to_owned(),
                operation: "publish verdicts",
                reason: "this controller holds no lease right now (being re-granted)".into(),
            }
            .into());
        };
        inner.put_verdicts(lease, &latest, &stale).await?;
        inner.state().published = latest.keys().cloned().collect();
        Ok(())
    }

    async fn set_plan(&self, token: FencingToken, plan: &WeightPlan) -> Result<(), PortError> {
        let inner = &self.inner;
        let value = keys::encode_plan(&inner.topology, plan)?;
        let txn = Txn::new()
            .when([inner.token_compare(token)?])
            .and_then([TxnOp::put(inner.keys.plan(), value, None)]);
        let resp = inner.store.txn("store the weight plan", txn).await?;
        if resp.succeeded() {
            tracing::debug!(%token, generation = plan.generation, "weight plan stored under {token}");
            return Ok(());
        }
        metrics::counter!("failover_etcd_refused_total", "operation" => "set_plan").increment(1);
        let mut reason = inner.explain_token(token).await;
        if reason.is_empty() {
            reason = format!("{token} does not lead");
        }
        tracing::warn!(%token, generation = plan.generation, "set_plan refused: {reason}");
        Err(EtcdError::Refused {
            operation: "set_plan",
            reason,
        }
        .into())
    }

    fn vantage(&self) -> VantageId {
        self.inner.vantage
    }

    async fn set_intent(&self, token: FencingToken, intent: &Intent) -> Result<(), PortError> {
        let inner = &self.inner;
        let value = keys::encode_intent(&inner.topology, intent)?;
        let txn = Txn::new()
            .when([inner.token_compare(token)?])
            .and_then([TxnOp::put(inner.keys.intent(), value, None)]);
        let resp = inner.store.txn("set operator intent", txn).await?;
        if resp.succeeded() {
            tracing::info!(%token, "operator intent stored under {token}: {intent:?}");
            return Ok(());
        }
        metrics::counter!("failover_etcd_refused_total", "operation" => "set_intent").increment(1);
        let mut reason = inner.explain_token(token).await;
        if reason.is_empty() {
            reason = format!("{token} does not lead");
        }
        tracing::warn!(%token, "set_intent refused: {reason}");
        Err(EtcdError::Refused {
            operation: "set_intent",
            reason,
        }
        .into())
    }

    async fn resign(&self) -> Result<(), PortError> {
        self.stop_tasks();
        let inner = &self.inner;
        let (lease, leading) = {
            let mut st = inner.state();
            st.deadline = None;
            st.published.clear();
            (st.lease.take(), st.leading.take())
        };
        if let Some(token) = leading {
            tracing::info!(%token, controller = %inner.config.controller, "resigning leadership ({token})");
            let _ = inner.tx.send(Ok(CoordinationEvent::Leadership(None)));
            let delete = Txn::new()
                .when([inner.token_compare(token)?])
                .and_then([TxnOp::delete(inner.keys.leader(), None)]);
            inner.store.txn("delete the leader key", delete).await?;
        }
        if let Some(id) = lease {
            inner.store.revoke(id).await?;
        }
        Ok(())
    }

    fn advertise_admin(&self, url: &str) {
        self.inner.state().admin = Some(url.to_owned());
    }

    fn leader(&self) -> Option<failover_core::LeaderInfo> {
        let st = self.inner.state();
        st.mirror
            .get(&self.inner.keys.leader())
            .map(|seen| keys::decode_leader(&seen.value))
    }
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ends leadership if its local deadline passed; the event to report.
    fn expire(&self, st: &mut State, now: Instant) -> Option<CoordinationEvent> {
        let expired = st.deadline.is_none_or(|d| now >= d);
        if st.leading.is_some() && expired {
            return self.lose(st, "its lease could have expired at etcd: no keep-alive answered within lease_ttl − lease_margin");
        }
        None
    }

    /// Ends leadership (if held) and says why; the event to report.
    fn lose(&self, st: &mut State, why: &str) -> Option<CoordinationEvent> {
        let token = st.leading.take()?;
        tracing::warn!(%token, controller = %self.config.controller, "{} lost leadership ({token}): {why}", self.config.controller);
        metrics::counter!("failover_etcd_leadership_lost_total").increment(1);
        Some(CoordinationEvent::Leadership(None))
    }

    /// Drops a queued `Leadership(Some)` that no longer holds.
    fn still_true(
        &self,
        ev: Result<CoordinationEvent, EtcdError>,
    ) -> Option<Result<CoordinationEvent, EtcdError>> {
        if let Ok(CoordinationEvent::Leadership(Some(token))) = &ev {
            if self.state().leading != Some(*token) {
                return None;
            }
        }
        Some(ev)
    }

    fn emit(&self, ev: CoordinationEvent) {
        let _ = self.tx.send(Ok(ev));
    }

    fn token_compare(&self, token: FencingToken) -> Result<Compare, EtcdError> {
        let revision = i64::try_from(token.0).map_err(|_| EtcdError::Refused {
            operation: "compare leadership",
            reason: format!("{token} is not an etcd revision"),
        })?;
        Ok(Compare::create_revision(
            self.keys.leader(),
            CompareOp::Equal,
            revision,
        ))
    }

    /// Why `token` does not lead ("" if it seems to).
    async fn explain_token(&self, token: FencingToken) -> String {
        match self
            .store
            .get("read the leader key", &self.keys.leader())
            .await
        {
            Ok(Some(kv)) if kv.create_revision() as u64 == token.0 => String::new(),
            Ok(Some(kv)) => format!(
                "{token} no longer leads: controller {} leads with token {}",
                keys::decode_leader(kv.value()).controller,
                kv.create_revision()
            ),
            Ok(None) => format!("{token} no longer leads: no controller leads"),
            Err(e) => format!("{token} could not be confirmed: {e}"),
        }
    }

    /// Grants a fresh lease and makes it current, with its local deadline.
    async fn start_lease(&self) -> Result<i64, EtcdError> {
        let ttl = self.config.lease_ttl;
        let sent = Instant::now();
        let id = self.store.grant("grant the controller lease", ttl).await?;
        let mut st = self.state();
        st.lease = Some(id);
        st.deadline = Some(sent + ttl - self.config.lease_margin);
        st.published.clear();
        Ok(id)
    }

    /// Forgets `lease` locally and revokes it in the background.
    fn abandon_lease(self: &Arc<Self>, lease: i64) {
        {
            let mut st = self.state();
            if st.lease == Some(lease) {
                st.lease = None;
                st.deadline = None;
            }
        }
        let store = self.store.clone();
        tokio::spawn(async move {
            if let Err(e) = store.revoke(lease).await {
                tracing::debug!("revoking an abandoned lease failed (it expires by itself): {e}");
            }
        });
    }

    /// Tries once to create the leader key under `lease`. `Some(token)` when
    /// this controller now leads.
    async fn campaign(&self, lease: i64) -> Result<Option<FencingToken>, EtcdError> {
        if let Some(token) = self.state().leading {
            return Ok(Some(token));
        }
        let leader = self.keys.leader();
        let value = keys::encode_leader(&self.config.controller, self.state().admin.as_deref());
        let txn = Txn::new()
            .when([Compare::create_revision(
                leader.clone(),
                CompareOp::Equal,
                0,
            )])
            .and_then([TxnOp::put(
                leader,
                value,
                Some(PutOptions::new().with_lease(lease)),
            )]);
        let resp = self.store.txn("campaign for leadership", txn).await?;
        let revision = if resp.succeeded() {
            resp.header().map(|h| h.revision()).unwrap_or(0)
        } else {
            // A repeated request finds the key its first attempt created.
            match self
                .store
                .get("read the leader key", &self.keys.leader())
                .await?
            {
                Some(kv) if kv.lease() == lease => kv.create_revision(),
                _ => {
                    tracing::debug!(controller = %self.config.controller, "another controller leads; waiting for its key to go");
                    return Ok(None);
                }
            }
        };
        let token = FencingToken(u64::try_from(revision).unwrap_or(0));
        let mut st = self.state();
        if st.lease != Some(lease) || st.deadline.is_none_or(|d| Instant::now() >= d) {
            // The lease was lost while the campaign ran: the key goes with it.
            return Ok(None);
        }
        st.leading = Some(token);
        tracing::info!(%token, controller = %self.config.controller, "{} leads with {token}: it created the free leader key", self.config.controller);
        metrics::counter!("failover_etcd_leadership_gained_total").increment(1);
        Ok(Some(token))
    }

    async fn put_verdicts(
        &self,
        lease: i64,
        latest: &BTreeMap<String, &Verdict>,
        stale: &[String],
    ) -> Result<(), EtcdError> {
        let mut ops: Vec<TxnOp> = latest
            .iter()
            .map(|(key, v)| {
                TxnOp::put(
                    key.clone(),
                    keys::encode_health(v.health),
                    Some(PutOptions::new().with_lease(lease)),
                )
            })
            .collect();
        ops.extend(stale.iter().map(|k| TxnOp::delete(k.clone(), None)));
        if ops.is_empty() {
            return Ok(());
        }
        self.store
            .txn("publish verdicts", Txn::new().and_then(ops))
            .await
            .map(|_| ())
    }

    /// The events `join` returns for the keys read at start.
    fn initial_events(&self, kvs: Vec<KeyValue>) -> Result<Vec<CoordinationEvent>, EtcdError> {
        let mut mirror = BTreeMap::new();
        for kv in kvs {
            let Ok(key) = kv.key_str() else {
                tracing::warn!("ignoring a non-UTF-8 key under {}", self.keys.root());
                continue;
            };
            mirror.insert(
                key.to_owned(),
                Seen {
                    value: kv.value().to_vec(),
                    create_revision: kv.create_revision(),
                },
            );
        }
        let topology = &self.topology;
        let writer_key = self.keys.writer();
        let writer = match mirror.get(&writer_key) {
            Some(seen) => Some(keys::decode_writer(topology, &writer_key, &seen.value)?),
            None => None,
        };
        let mut events = vec![CoordinationEvent::Writer(writer)];
        for node in topology.node_ids() {
            let name = keys::node_name(topology, node)?;
            events.push(CoordinationEvent::GuardLease {
                node,
                held: mirror.contains_key(&self.keys.guard(name)),
            });
        }
        for (key, seen) in &mirror {
            if let Some(KeyKind::Verdict(..)) = self.keys.parse(key) {
                match self.decode_verdict(key, Some(&seen.value)) {
                    Ok(Some(ev)) => events.push(ev),
                    Ok(None) => {}
                    Err(e) => tracing::warn!("ignoring verdict key: {e}"),
                }
            }
        }
        let intent_key = self.keys.intent();
        let intent = match mirror.get(&intent_key) {
            Some(seen) => keys::decode_intent(topology, &intent_key, &seen.value)?,
            None => Intent::default(),
        };
        events.push(CoordinationEvent::Intent(intent));
        let plan_key = self.keys.plan();
        if let Some(seen) = mirror.get(&plan_key) {
            events.push(CoordinationEvent::Plan(keys::decode_plan(
                topology,
                &plan_key,
                &seen.value,
            )?));
        }
        self.state().mirror = mirror;
        Ok(events)
    }

    /// A verdict key's event (`None` for our own vantage or unknown names).
    fn decode_verdict(
        &self,
        key: &str,
        value: Option<&[u8]>,
    ) -> Result<Option<CoordinationEvent>, EtcdError> {
        let Some(KeyKind::Verdict(vantage, region)) = self.keys.parse(key) else {
            return Ok(None);
        };
        let (Some(vantage), Some(region)) = (
            self.topology.vantage_id(vantage),
            self.topology.region_id(region),
        ) else {
            tracing::warn!(
                key,
                "ignoring a verdict for a vantage or region not in the topology"
            );
            return Ok(None);
        };
        if vantage == self.vantage {
            return Ok(None);
        }
        let health = match value {
            Some(v) => Some(keys::decode_health(key, v)?),
            None => None,
        };
        Ok(Some(CoordinationEvent::Verdict {
            vantage,
            region,
            health,
        }))
    }

    /// Applies one change seen by the watch (or a resync): `new` is `None`
    /// for a deletion. Emits what the controller must hear.
    fn on_change(&self, key: &str, new: Option<Seen>) {
        let mut st = self.state();
        let old = match &new {
            Some(seen) => st.mirror.insert(key.to_owned(), seen.clone()),
            None => st.mirror.remove(key),
        };
        if old == new {
            return;
        }
        let Some(kind) = self.keys.parse(key) else {
            return;
        };
        let topology = &self.topology;
        match kind {
            KeyKind::Leader => match (&new, st.leading) {
                (Some(seen), Some(token)) if seen.create_revision as u64 != token.0 => {
                    if let Some(ev) = self.lose(&mut st, "another controller's leader key appeared")
                    {
                        self.emit(ev);
                    }
                }
                (None, leading) => {
                    let ours =
                        old.as_ref().map(|o| o.create_revision as u64) == leading.map(|t| t.0);
                    if leading.is_some() && ours {
                        if let Some(ev) = self.lose(&mut st, "its leader key was deleted at etcd") {
                            self.emit(ev);
                        }
                    }
                    self.campaign.notify_one();
                }
                _ => {}
            },
            KeyKind::Writer => match &new {
                Some(seen) => match keys::decode_writer(topology, key, &seen.value) {
                    Ok(rec) => self.emit(CoordinationEvent::Writer(Some(rec))),
                    Err(e) => {
                        tracing::error!("{e}");
                        let _ = self.tx.send(Err(e));
                    }
                },
                None => self.emit(CoordinationEvent::Writer(None)),
            },
            KeyKind::Guard(name) => match topology.node_id(name) {
                Some(node) => {
                    if old.is_none() || new.is_none() {
                        self.emit(CoordinationEvent::GuardLease {
                            node,
                            held: new.is_some(),
                        });
                    }
                }
                None => tracing::warn!(
                    key,
                    "ignoring a guard lease of node {name}, which is not in the topology"
                ),
            },
            KeyKind::Verdict(..) => {
                match self.decode_verdict(key, new.as_ref().map(|s| s.value.as_slice())) {
                    Ok(Some(ev)) => self.emit(ev),
                    Ok(None) => {}
                    Err(e) => tracing::warn!("ignoring verdict key: {e}"),
                }
            }
            KeyKind::Plan => match &new {
                Some(seen) => match keys::decode_plan(topology, key, &seen.value) {
                    Ok(plan) => self.emit(CoordinationEvent::Plan(plan)),
                    Err(e) => {
                        tracing::error!("{e}");
                        let _ = self.tx.send(Err(e));
                    }
                },
                // Nobody deletes the plan; a deleted one leaves the last served.
                None => tracing::warn!(key, "the stored plan was deleted; keeping the last one"),
            },
            KeyKind::Intent => {
                let intent = match &new {
                    Some(seen) => keys::decode_intent(topology, key, &seen.value),
                    None => Ok(Intent::default()),
                };
                match intent {
                    Ok(intent) => self.emit(CoordinationEvent::Intent(intent)),
                    Err(e) => {
                        tracing::error!("{e}");
                        let _ = self.tx.send(Err(e));
                    }
                }
            }
        }
    }

    // ---------------------------------------------------------------- session

    /// Keeps the controller's lease alive, campaigns when the leader key is
    /// free, and replaces the lease when it is lost. Runs until aborted.
    async fn session(self: Arc<Self>, mut lease: i64) {
        loop {
            self.keep(lease).await;
            self.abandon_lease(lease);
            lease = loop {
                match self.start_lease().await {
                    Ok(id) => break id,
                    Err(e) => {
                        tracing::warn!(controller = %self.config.controller, "cannot grant a new controller lease, retrying: {e}");
                        tokio::time::sleep(RETRY).await;
                    }
                }
            };
            tracing::info!(controller = %self.config.controller, lease, "new controller lease granted after the old one was lost");
            self.republish(lease).await;
            self.try_campaign(lease).await;
        }
    }

    /// Renews `lease` every `lease_ttl / 3` until it is lost (local deadline
    /// passed, or etcd says it expired).
    async fn keep(&self, lease: i64) {
        let ttl = self.config.lease_ttl;
        let margin = self.config.lease_margin;
        let interval = ttl / 3;
        let mut stream: KeepAlive = None;
        let mut next = Instant::now() + interval;
        loop {
            let Some(deadline) = self.state().deadline else {
                return;
            };
            tokio::select! {
                () = tokio::time::sleep_until(next.min(deadline).into()) => {}
                () = self.campaign.notified() => {
                    self.try_campaign(lease).await;
                    continue;
                }
            }
            let now = Instant::now();
            if now >= deadline {
                let mut st = self.state();
                if let Some(ev) = self.expire(&mut st, now) {
                    self.emit(ev);
                }
                tracing::warn!(controller = %self.config.controller, lease, "controller lease given up: no keep-alive answered by its local deadline");
                // Tell the controller why it cannot lead, publish or hear its peers.
                let _ = self.tx.send(Err(EtcdError::Unavailable {
                    endpoints: self.store.endpoints().to_owned(),
                    operation: "keep the controller lease alive",
                    reason: format!(
                        "no keep-alive answered within the lease TTL ({:?}); this controller cannot lead until etcd answers",
                        self.config.lease_ttl
                    ),
                }));
                return;
            }
            let sent = Instant::now();
            match self
                .store
                .keep_alive_once(&mut stream, lease, deadline - sent)
                .await
            {
                Ok(left) if left > 0 => {
                    let granted = Duration::from_secs(u64::try_from(left).unwrap_or(0)).min(ttl);
                    let mut st = self.state();
                    if st.lease == Some(lease) {
                        st.deadline = Some(sent + granted.max(margin) - margin);
                    }
                    next = sent + interval;
                }
                Ok(_) => {
                    let mut st = self.state();
                    if let Some(ev) = self.lose(&mut st, "etcd says its lease expired") {
                        self.emit(ev);
                    }
                    return;
                }
                Err(e) => {
                    tracing::warn!(controller = %self.config.controller, lease, "keep-alive failed, retrying: {e}");
                    next = Instant::now() + RETRY.min(interval);
                }
            }
            let free = {
                let st = self.state();
                st.leading.is_none() && !st.mirror.contains_key(&self.keys.leader())
            };
            if free {
                self.try_campaign(lease).await;
            }
        }
    }

    async fn try_campaign(&self, lease: i64) {
        match self.campaign(lease).await {
            Ok(Some(token)) => {
                let st = self.state();
                if st.leading == Some(token) {
                    self.emit(CoordinationEvent::Leadership(Some(token)));
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(controller = %self.config.controller, "campaign failed, will retry: {e}")
            }
        }
    }

    async fn republish(&self, lease: i64) {
        let _publishing = self.publishing.lock().await;
        let latest: BTreeMap<String, Verdict> = {
            let st = self.state();
            st.verdicts
                .iter()
                .filter_map(|v| {
                    let region = keys::region_name(&self.topology, v.region).ok()?;
                    Some((self.keys.verdict(&self.config.vantage, region), *v))
                })
                .collect()
        };
        let refs: BTreeMap<String, &Verdict> = latest.iter().map(|(k, v)| (k.clone(), v)).collect();
        match self.put_verdicts(lease, &refs, &[]).await {
            Ok(()) => self.state().published = refs.into_keys().collect(),
            Err(e) => tracing::warn!("re-publishing verdicts under the new lease failed: {e}"),
        }
    }

    // ------------------------------------------------------------------ watch

    /// One prefix watch from `next` on; re-established from the last seen
    /// revision when broken, with a full resync when that was compacted.
    async fn watch(self: Arc<Self>, mut next: i64) {
        loop {
            let options = WatchOptions::new()
                .with_prefix()
                .with_prev_key()
                .with_start_revision(next);
            let opened = self
                .store
                .call("open the watch", || {
                    let mut client = self.store.client();
                    let root = self.keys.root().to_owned();
                    let options = options.clone();
                    async move { client.watch(root, Some(options)).await }
                })
                .await;
            let mut stream = match opened {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("cannot open the watch, retrying: {e}");
                    tokio::time::sleep(RETRY).await;
                    continue;
                }
            };
            loop {
                match stream.message().await {
                    Ok(Some(resp)) => {
                        if resp.compact_revision() > 0 {
                            tracing::warn!(
                                from = next,
                                compacted = resp.compact_revision(),
                                "watch start revision was compacted; resyncing from a full read"
                            );
                            next = self.resync(next).await;
                            break;
                        }
                        if resp.canceled() {
                            tracing::warn!(
                                reason = resp.cancel_reason(),
                                "watch canceled by etcd; re-opening"
                            );
                            tokio::time::sleep(RETRY).await;
                            break;
                        }
                        for event in resp.events() {
                            let Some(kv) = event.kv() else { continue };
                            let Ok(key) = kv.key_str() else { continue };
                            // A deletion's kv has version 0 (a put's is ≥ 1);
                            // read that instead of the event type, whose
                            // accessor panics on an unknown value.
                            let seen = (kv.version() > 0).then(|| Seen {
                                value: kv.value().to_vec(),
                                create_revision: kv.create_revision(),
                            });
                            self.on_change(key, seen);
                            next = next.max(kv.mod_revision() + 1);
                        }
                    }
                    Ok(None) => {
                        tracing::warn!(from = next, "watch stream ended; re-opening");
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(from = next, "watch broke, re-opening: {e}");
                        tokio::time::sleep(RETRY).await;
                        break;
                    }
                }
            }
        }
    }

    /// Reads every key again, reports the differences to what was seen,
    /// and returns the revision to watch from.
    async fn resync(&self, next: i64) -> i64 {
        loop {
            match self
                .store
                .get_prefix("resync the service's keys", self.keys.root())
                .await
            {
                Ok((kvs, revision)) => {
                    let mut fresh: BTreeMap<String, Seen> = BTreeMap::new();
                    for kv in kvs {
                        if let Ok(key) = kv.key_str() {
                            fresh.insert(
                                key.to_owned(),
                                Seen {
                                    value: kv.value().to_vec(),
                                    create_revision: kv.create_revision(),
                                },
                            );
                        }
                    }
                    let gone: Vec<String> = self
                        .state()
                        .mirror
                        .keys()
                        .filter(|k| !fresh.contains_key(*k))
                        .cloned()
                        .collect();
                    for key in gone {
                        self.on_change(&key, None);
                    }
                    for (key, seen) in fresh {
                        self.on_change(&key, Some(seen));
                    }
                    return revision.max(next - 1) + 1;
                }
                Err(e) => {
                    tracing::warn!("resync failed, retrying: {e}");
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
    }
}
