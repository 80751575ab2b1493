//! The RFC 2136 dynamic-update router: for BIND, Knot, PowerDNS and managed
//! DNS that accept TSIG-signed (HMAC-SHA256, RFC 8945) updates.
//!
//! Each plan becomes at most one UPDATE message: it deletes the records of
//! drained regions and adds those of serving ones atomically, guarded by
//! prerequisites that pin the exact records read just before, so a concurrent
//! change makes the server refuse the whole update (NXRRSET → `Conflict`).
//! Afterwards the records are read back and compared.
//!
//! # The leader's fencing token
//!
//! A plan issued by the leader of a coordinated term carries its
//! [`FencingToken`] (`plan.token == Some(t)`). The token lives in the zone as
//! one TXT record `"token=t"` at its own owner name, by default
//! `_failover.<service name>` (like `_failover.api.example.com.`; set
//! [`Rfc2136Config::token_name`] to move it). It is a separate name, so the
//! service's A/AAAA answers never carry it.
//!
//! - Every UPDATE under token `t` carries the RFC 2136 §2.4.2 prerequisite
//!   "the TXT RRset is exactly `token=t`" in the same message as the weight
//!   changes: the server checks and changes atomically, and refuses the
//!   update (NXRRSET) once another leader has raised the token.
//! - A new term raises the token: the router reads the record; a newer token
//!   there refuses the plan at once ([`DnsError::StaleToken`], kind
//!   `Refused`); an older one (or none) is replaced by `token=t` in the same
//!   UPDATE as the weights, whose prerequisite pins the value read (or
//!   "RRset does not exist", §2.4.3). Another leader raising it in between
//!   fails that prerequisite; the router reads again and decides again, at
//!   most four times.
//! - A router that put `t` in place itself skips the read on its next plans
//!   and relies on the prerequisite alone. A refused prerequisite is then
//!   told apart by reading the record: a newer token is a `StaleToken` that
//!   carries the server's rcode; otherwise the weight records changed, a
//!   `Conflict` as without a token.
//! - `plan.token == None` (a single controller) neither checks nor touches
//!   the record.
//!
//! The TSIG key needs update rights for the token's owner name too (BIND:
//! `update-policy { grant KEY zonesub ANY; };` covers both).

mod token;
mod writer;

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use failover_core::ports::TrafficRouter;
use failover_core::{
    AllDownPolicy, FencingToken, Policy, PortError, RegionWeight, Topology, WeightPlan,
};
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::tsig::TsigAlgorithm;
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType, TSigner};

use crate::answer::QueryRng;
use crate::name::parse_fqdn;
use crate::transport::{decode, exchange};
use crate::DnsError;
use token::{token_text, TokenPin, TokenStep, TOKEN_LABEL};

/// Where and how to send dynamic updates.
#[derive(Clone, PartialEq, Eq)]
pub struct Rfc2136Config {
    /// The primary server that accepts updates (UDP and TCP).
    pub server: SocketAddr,
    /// The zone to update, like `example.test.`; the service name must be in it.
    pub zone: String,
    /// The TSIG key's name as the server knows it, like `failover-key.`.
    pub key_name: String,
    /// The TSIG key's secret, base64 (as in BIND's `secret "…";`). HMAC-SHA256.
    pub key_secret: String,
    /// Longest wait for one reply (query or update). Default 2 s.
    pub timeout: Duration,
    /// Allowed clock difference with the server for TSIG, seconds. Default 300.
    pub fudge_secs: u16,
    /// Owner name of the TXT record that holds the leader's fencing token
    /// (`"token=N"`), used when plans carry a token. `None` (the default):
    /// `_failover.<service name>`, like `_failover.api.example.com.`. Must
    /// be inside `zone` and differ from the service name.
    pub token_name: Option<String>,
}

impl std::fmt::Debug for Rfc2136Config {
    // Never print the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rfc2136Config")
            .field("server", &self.server)
            .field("zone", &self.zone)
            .field("key_name", &self.key_name)
            .field("key_secret", &"<redacted>")
            .field("timeout", &self.timeout)
            .field("fudge_secs", &self.fudge_secs)
            .field("token_name", &self.token_name)
            .finish()
    }
}

impl Rfc2136Config {
    /// A configuration with a 2 s timeout, a 300 s TSIG fudge and the token
    /// record at `_failover.<service name>`.
    pub fn new(
        server: SocketAddr,
        zone: impl Into<String>,
        key_name: impl Into<String>,
        key_secret: impl Into<String>,
    ) -> Self {
        Rfc2136Config {
            server,
            zone: zone.into(),
            key_name: key_name.into(),
            key_secret: key_secret.into(),
            timeout: Duration::from_secs(2),
            fudge_secs: 300,
            token_name: None,
        }
    }
}

/// The service name's address records as the server serves them now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LiveRecords {
    /// A records' addresses.
    pub v4: BTreeSet<IpAddr>,
    /// AAAA records' addresses.
    pub v6: BTreeSet<IpAddr>,
    /// TTL of the A RRset, seconds (`None` when empty).
    pub v4_ttl: Option<u32>,
    /// TTL of the AAAA RRset, seconds (`None` when empty).
    pub v6_ttl: Option<u32>,
}

impl LiveRecords {
    fn of(&self, rtype: RecordType) -> (&BTreeSet<IpAddr>, Option<u32>) {
        if rtype == RecordType::A {
            (&self.v4, self.v4_ttl)
        } else {
            (&self.v6, self.v6_ttl)
        }
    }
    /// Whether no address record is present.
    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }
}

/// Applies weight plans with RFC 2136 updates; implements [`TrafficRouter`].
///
/// DNS cannot express weights: a region serves (all its records present) or
/// not, so [`read_back`](TrafficRouter::read_back) reports weight 1 or 0.
pub struct Rfc2136Router {
    server: SocketAddr,
    zone: Name,
    service: Name,
    signer: TSigner,
    timeout: Duration,
    regions: Vec<Vec<IpAddr>>,
    all_down: AllDownPolicy,
    ids: QueryRng,
    updates: AtomicU64,
    /// Owner name of the token TXT record.
    token_name: Name,
    /// The token this router last saw in place (by its own accepted update
    /// or a read); a plan under it skips the TXT read, since the update's
    /// prerequisite makes the server check it anyway.
    held: Mutex<Option<FencingToken>>,
    /// The writer name, with [`with_writer_name`](Self::with_writer_name).
    writer_name: Option<crate::writer::WriterFacts>,
}

impl std::fmt::Debug for Rfc2136Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rfc2136Router")
            .field("server", &self.server)
            .field("zone", &self.zone)
            .field("service", &self.service)
            .field("token_name", &self.token_name)
            .finish_non_exhaustive()
    }
}

impl Rfc2136Router {
    /// Checks the configuration (errors name the field) and builds the router.
    /// Sends nothing yet.
    pub fn new(
        config: Rfc2136Config,
        topology: &Topology,
        policy: &Policy,
    ) -> Result<Self, DnsError> {
        let zone = parse_fqdn("rfc2136.zone", &config.zone)?;
        let service = parse_fqdn("topology.service", topology.service())?;
        if !zone.zone_of(&service) {
            return Err(DnsError::config(
                "rfc2136.zone",
                format!("service name {service} is not inside zone {zone}"),
            ));
        }
        let token_name = match &config.token_name {
            Some(name) => parse_fqdn("rfc2136.token_name", name)?,
            None => Name::from_ascii(TOKEN_LABEL)
                .and_then(|label| label.append_domain(&service))
                .map_err(|e| {
                    DnsError::config(
                        "rfc2136.token_name",
                        format!("cannot form {TOKEN_LABEL}.{service}: {e}; set a shorter name"),
                    )
                })?,
        };
        if !zone.zone_of(&token_name) {
            return Err(DnsError::config(
                "rfc2136.token_name",
                format!("{token_name} is not inside zone {zone}"),
            ));
        }
        if token_name == service {
            return Err(DnsError::config(
                "rfc2136.token_name",
                format!("must differ from the service name {service}, whose answers it would join"),
            ));
        }
        let key_name = parse_fqdn("rfc2136.key_name", &config.key_name)?;
        let secret = config.key_secret.trim();
        if secret.is_empty() {
            return Err(DnsError::config("rfc2136.key_secret", "must not be empty"));
        }
        let key = data_encoding::BASE64
            .decode(secret.as_bytes())
            .map_err(|e| {
                DnsError::config("rfc2136.key_secret", format!("is not valid base64: {e}"))
            })?;
        if config.timeout.is_zero() {
            return Err(DnsError::config(
                "rfc2136.timeout",
                "must be greater than 0",
            ));
        }
        let signer = TSigner::new(key, TsigAlgorithm::HmacSha256, key_name, config.fudge_secs)
            .map_err(|e| DnsError::config("rfc2136.key_secret", e.to_string()))?;
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id()).rotate_left(32);
        Ok(Rfc2136Router {
            server: config.server,
            zone,
            service,
            signer,
            timeout: config.timeout,
            regions: topology
                .regions()
                .iter()
                .map(|r| r.records.clone())
                .collect(),
            all_down: policy.all_down,
            ids: QueryRng::new(seed),
            updates: AtomicU64::new(0),
            token_name,
            held: Mutex::new(None),
            writer_name: None,
        })
    }

    /// UPDATE messages that the server accepted since start.
    pub fn updates_sent(&self) -> u64 {
        self.updates.load(Ordering::Relaxed)
    }

    /// Reads the service name's A and AAAA records from the server.
    pub async fn live_records(&self) -> Result<LiveRecords, DnsError> {
        let mut live = LiveRecords::default();
        for rtype in [RecordType::A, RecordType::AAAA] {
            let (addrs, ttl) = self.query(rtype).await?;
            if rtype == RecordType::A {
                (live.v4, live.v4_ttl) = (addrs, ttl);
            } else {
                (live.v6, live.v6_ttl) = (addrs, ttl);
            }
        }
        Ok(live)
    }

    /// Makes `plan` live assuming the server serves `seen` now (as read by
    /// [`live_records`](Self::live_records)); if it does not any more, the
    /// server rejects the update and this returns a `Conflict` error.
    /// A plan that is already live sends nothing.
    ///
    /// Under a token (`plan.token == Some(t)`) it also assumes the token
    /// record holds exactly `token=t` and reads nothing first: the update's
    /// prerequisite says so, and the server refuses it otherwise. A newer
    /// token in place then gives [`DnsError::StaleToken`] (with the server's
    /// rcode), any other difference a `Conflict`.
    /// [`TrafficRouter::apply`] is this after fresh reads, raising the token
    /// record when the plan's token is newer.
    pub async fn apply_from(&self, plan: &WeightPlan, seen: &LiveRecords) -> Result<(), DnsError> {
        let (desired, ttl) = self.desired(plan, seen)?;
        let Some(ours) = plan.token else {
            return self
                .update(plan, seen, &desired, ttl, TokenPin::Unchecked)
                .await;
        };
        match self
            .update(plan, seen, &desired, ttl, TokenPin::Holds(ours))
            .await
        {
            Err(DnsError::Conflict { rcode, .. }) => {
                if let TokenStep::Refuse(newer) = self.read_token().await?.step(ours) {
                    return Err(self.stale(ours, newer, Some(rcode)));
                }
                Err(DnsError::Conflict {
                    server: self.server,
                    name: self.service.to_string(),
                    rcode,
                })
            }
            other => other,
        }
    }

    /// The records `plan` wants served, given `seen` (fail-open keeps `seen`
    /// when the plan drains every region), and the plan's TTL in seconds.
    fn desired(
        &self,
        plan: &WeightPlan,
        seen: &LiveRecords,
    ) -> Result<(LiveRecords, u32), DnsError> {
        if let Some(w) = plan
            .weights
            .iter()
            .find(|w| w.region.index() >= self.regions.len())
        {
            return Err(DnsError::UnknownRegion {
                region: w.region,
                regions: self.regions.len(),
            });
        }
        let ttl = u32::try_from(plan.ttl.as_secs())
            .map_err(|_| DnsError::config("policy.ttl", "must fit a DNS TTL (u32 seconds)"))?;
        let mut desired = LiveRecords::default();
        for w in plan.weights.iter().filter(|w| w.weight > 0) {
            for addr in self.regions.get(w.region.index()).into_iter().flatten() {
                if addr.is_ipv4() {
                    desired.v4.insert(*addr);
                } else {
                    desired.v6.insert(*addr);
                }
            }
        }
        if desired.is_empty() && self.all_down == AllDownPolicy::FailOpen {
            tracing::warn!(generation = plan.generation, service = %self.service, "RFC 2136: plan drains every region; fail-open leaves the records in place");
            return Ok((seen.clone(), ttl));
        }
        desired.v4_ttl = (!desired.v4.is_empty()).then_some(ttl);
        desired.v6_ttl = (!desired.v6.is_empty()).then_some(ttl);
        Ok((desired, ttl))
    }

    /// Sends the one UPDATE that turns `seen` into `desired` under `pin`,
    /// then reads the result back. Sends nothing when there is nothing to
    /// change.
    async fn update(
        &self,
        plan: &WeightPlan,
        seen: &LiveRecords,
        desired: &LiveRecords,
        ttl: u32,
        pin: TokenPin<'_>,
    ) -> Result<(), DnsError> {
        let raise = match pin {
            TokenPin::Raise { to, .. } => Some(to),
            _ => None,
        };
        if seen == desired && raise.is_none() {
            tracing::debug!(generation = plan.generation, "RFC 2136: plan already live");
            return Ok(());
        }
        let id = self.next_id();
        let update = self.update_message(id, seen, desired, ttl, pin);
        self.send_signed_update(update, id).await?;
        if let Some(token) = pin.token() {
            self.set_held(Some(token));
        }
        self.updates.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("failover_dns_plans_applied_total", "adapter" => "rfc2136").increment(1);
        tracing::info!(generation = plan.generation, server = %self.server, v4 = ?desired.v4, v6 = ?desired.v6, ttl, token = ?pin.token().map(|t| t.0), raised = raise.is_some(), "RFC 2136: update accepted");

        let verified = self.verify(desired, raise).await;
        if let (Err(DnsError::VerifyMismatch { .. }), Some(ours)) = (&verified, pin.token()) {
            // A newer leader may have overwritten our update right after
            // the server accepted it: then ours does not stand.
            if let TokenStep::Refuse(newer) = self.read_token().await?.step(ours) {
                return Err(self.stale(ours, newer, None));
            }
        }
        verified
    }

    /// Reads back what an accepted update should have made live.
    async fn verify(
        &self,
        desired: &LiveRecords,
        raise: Option<FencingToken>,
    ) -> Result<(), DnsError> {
        let after = self.live_records().await?;
        if after != *desired {
            let show = |l: &LiveRecords| -> Vec<String> {
                l.v4.iter()
                    .chain(&l.v6)
                    .map(|a| a.to_string())
                    .chain(l.v4_ttl.map(|t| format!("A ttl {t}")))
                    .chain(l.v6_ttl.map(|t| format!("AAAA ttl {t}")))
                    .collect()
            };
            return Err(DnsError::VerifyMismatch {
                server: self.server,
                name: self.service.to_string(),
                expected: show(desired),
                found: show(&after),
            });
        }
        if let Some(to) = raise {
            let held = self.read_token().await?;
            if !held.is_exactly(to) {
                return Err(DnsError::VerifyMismatch {
                    server: self.server,
                    name: self.token_name.to_string(),
                    expected: vec![token_text(to)],
                    found: held.token.iter().map(|t| token_text(*t)).collect(),
                });
            }
        }
        Ok(())
    }

    fn update_message(
        &self,
        id: u16,
        seen: &LiveRecords,
        desired: &LiveRecords,
        ttl: u32,
        pin: TokenPin<'_>,
    ) -> Message {
        let mut msg = Message::new(id, MessageType::Query, OpCode::Update);
        msg.add_query(Query::query(self.zone.clone(), RecordType::SOA));
        self.pin_token(&mut msg, pin, ttl);
        let rdata = |addr: &IpAddr| RData::from(*addr);
        for rtype in [RecordType::A, RecordType::AAAA] {
            let (now, now_ttl) = seen.of(rtype);
            let (want, _) = desired.of(rtype);
            // Prerequisites (RFC 2136 §2.4): the RRset is exactly what we
            // read (value-dependent), or does not exist.
            if now.is_empty() {
                let mut none = Record::update0(self.service.clone(), 0, rtype);
                none.dns_class = DNSClass::NONE;
                msg.add_answer(none);
            } else {
                for addr in now {
                    msg.add_answer(Record::from_rdata(self.service.clone(), 0, rdata(addr)));
                }
            }
            if now == want && (want.is_empty() || now_ttl == Some(ttl)) {
                continue;
            }
            // Updates (§2.5): a TTL change rewrites the whole RRset; otherwise
            // delete what is drained and add what serves.
            let rewrite = !now.is_empty() && now_ttl != Some(ttl);
            if rewrite {
                let mut all = Record::update0(self.service.clone(), 0, rtype);
                all.dns_class = DNSClass::ANY;
                msg.add_authority(all);
            }
            for addr in now.difference(want).filter(|_| !rewrite) {
                let mut gone = Record::from_rdata(self.service.clone(), 0, rdata(addr));
                gone.dns_class = DNSClass::NONE;
                msg.add_authority(gone);
            }
            for addr in want.iter().filter(|a| rewrite || !now.contains(a)) {
                msg.add_authority(Record::from_rdata(self.service.clone(), ttl, rdata(addr)));
            }
        }
        msg
    }

    /// Signs `update` (message id `id`) with the TSIG key, sends it, and
    /// checks the server's reply: its code and its TSIG signature.
    pub(crate) async fn send_signed_update(
        &self,
        mut update: Message,
        id: u16,
    ) -> Result<(), DnsError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let verifier = update
            .finalize(&self.signer, now)
            .map_err(|e| DnsError::Encode {
                what: "update",
                reason: e.to_string(),
            })?;
        let bytes = update.to_vec().map_err(|e| DnsError::Encode {
            what: "update",
            reason: e.to_string(),
        })?;
        let reply_bytes = exchange(self.server, &bytes, id, self.timeout, "update").await?;
        let reply = decode(self.server, "update", &reply_bytes)?;
        self.check_update_reply(&reply)?;
        if let Some(mut verifier) = verifier {
            verifier
                .verify(&reply_bytes)
                .map_err(|e| self.auth("update", format!("reply failed TSIG verification: {e}")))?;
        }
        Ok(())
    }

    fn check_update_reply(&self, reply: &Message) -> Result<(), DnsError> {
        let tsig_error = reply.signature().and_then(|s| s.data.error);
        let code = reply.metadata.response_code;
        if tsig_error.is_some() || matches!(code, ResponseCode::NotAuth | ResponseCode::Refused) {
            return Err(self.auth("update", format!("rcode {code}, TSIG error {tsig_error:?}")));
        }
        match code {
            ResponseCode::NoError => Ok(()),
            ResponseCode::NXRRSet
            | ResponseCode::YXRRSet
            | ResponseCode::NXDomain
            | ResponseCode::YXDomain => {
                tracing::warn!(service = %self.service, %code, "RFC 2136: prerequisite failed: the records (or the token record) changed since they were read");
                Err(DnsError::Conflict {
                    server: self.server,
                    name: self.service.to_string(),
                    rcode: code.to_string(),
                })
            }
            ResponseCode::ServFail => Err(DnsError::ServerFailure {
                server: self.server,
                what: "update",
                rcode: code.to_string(),
            }),
            ResponseCode::NotZone => Err(DnsError::config(
                "rfc2136.zone",
                format!(
                    "server {} is not authoritative for {} (NOTZONE)",
                    self.server, self.zone
                ),
            )),
            other => Err(DnsError::Malformed {
                server: self.server,
                what: "update",
                reason: format!("unexpected rcode {other}"),
            }),
        }
    }

    async fn query(&self, rtype: RecordType) -> Result<(BTreeSet<IpAddr>, Option<u32>), DnsError> {
        let mut addrs = BTreeSet::new();
        let mut ttl = None;
        for record in self.lookup(&self.service, rtype).await? {
            if let Some(addr) = record.data.ip_addr() {
                addrs.insert(addr);
                ttl = Some(ttl.map_or(record.ttl, |t: u32| t.min(record.ttl)));
            }
        }
        Ok((addrs, ttl))
    }

    /// The answers of type `rtype` at `name` (none when NXDOMAIN).
    async fn lookup(&self, name: &Name, rtype: RecordType) -> Result<Vec<Record>, DnsError> {
        let id = self.next_id();
        let mut msg = Message::new(id, MessageType::Query, OpCode::Query);
        msg.add_query(Query::query(name.clone(), rtype));
        let bytes = msg.to_vec().map_err(|e| DnsError::Encode {
            what: "query",
            reason: e.to_string(),
        })?;
        let reply = decode(
            self.server,
            "query",
            &exchange(self.server, &bytes, id, self.timeout, "query").await?,
        )?;
        match reply.metadata.response_code {
            ResponseCode::NoError | ResponseCode::NXDomain => {}
            code @ (ResponseCode::Refused | ResponseCode::NotAuth) => {
                return Err(self.auth("query", format!("rcode {code}")))
            }
            code @ ResponseCode::ServFail => {
                return Err(DnsError::ServerFailure {
                    server: self.server,
                    what: "query",
                    rcode: code.to_string(),
                })
            }
            code => {
                return Err(DnsError::Malformed {
                    server: self.server,
                    what: "query",
                    reason: format!("unexpected rcode {code}"),
                })
            }
        }
        Ok(reply
            .answers
            .into_iter()
            .filter(|r| r.name == *name && r.record_type() == rtype)
            .collect())
    }

    fn auth(&self, what: &'static str, reason: String) -> DnsError {
        DnsError::Auth {
            server: self.server,
            what,
            zone: self.zone.to_string(),
            reason,
        }
    }

    fn next_id(&self) -> u16 {
        (self.ids.next() >> 48) as u16
    }
}

#[async_trait]
impl TrafficRouter for Rfc2136Router {
    /// A plan without a token: one UPDATE guarded by the records just
    /// read. Under a token: the same, also guarded by (and raising) the
    /// token record; a newer token in place refuses it (`Refused`).
    async fn apply(&self, plan: &WeightPlan) -> Result<(), PortError> {
        match plan.token {
            None => {
                let seen = self.live_records().await?;
                Ok(self.apply_from(plan, &seen).await?)
            }
            Some(ours) => Ok(self.apply_under(plan, ours).await?),
        }
    }

    async fn read_back(&self) -> Result<Vec<RegionWeight>, PortError> {
        let live = self.live_records().await?;
        Ok(self
            .regions
            .iter()
            .enumerate()
            .map(|(i, addrs)| RegionWeight {
                region: failover_core::RegionId(i as u32),
                weight: u32::from(
                    !addrs.is_empty()
                        && addrs
                            .iter()
                            .all(|a| live.v4.contains(a) || live.v6.contains(a)),
                ),
            })
            .collect())
    }
}
