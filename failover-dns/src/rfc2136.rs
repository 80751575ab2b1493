//! The RFC 2136 dynamic-update router: for BIND, Knot, PowerDNS and managed
//! DNS that accept TSIG-signed (HMAC-SHA256, RFC 8945) updates.
//!
//! Each plan becomes at most one UPDATE message: it deletes the records of
//! drained regions and adds those of serving ones atomically, guarded by
//! prerequisites that pin the exact records read just before, so a concurrent
//! change makes the server refuse the whole update (NXRRSET → `Conflict`).
//! Afterwards the records are read back and compared.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use failover_core::ports::TrafficRouter;
use failover_core::{AllDownPolicy, Policy, PortError, RegionWeight, Topology, WeightPlan};
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::tsig::TsigAlgorithm;
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType, TSigner};

use crate::answer::QueryRng;
use crate::name::parse_fqdn;
use crate::transport::{decode, exchange};
use crate::DnsError;

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
            .finish()
    }
}

impl Rfc2136Config {
    /// A configuration with a 2 s timeout and a 300 s TSIG fudge.
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
}

impl std::fmt::Debug for Rfc2136Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rfc2136Router")
            .field("server", &self.server)
            .field("zone", &self.zone)
            .field("service", &self.service)
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
    /// [`TrafficRouter::apply`] is this after a fresh read.
    pub async fn apply_from(&self, plan: &WeightPlan, seen: &LiveRecords) -> Result<(), DnsError> {
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
            return Ok(());
        }
        desired.v4_ttl = (!desired.v4.is_empty()).then_some(ttl);
        desired.v6_ttl = (!desired.v6.is_empty()).then_some(ttl);
        if *seen == desired {
            tracing::debug!(generation = plan.generation, "RFC 2136: plan already live");
            return Ok(());
        }
        let id = self.next_id();
        let mut update = self.update_message(id, seen, &desired, ttl);
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
        self.updates.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("failover_dns_plans_applied_total", "adapter" => "rfc2136").increment(1);
        tracing::info!(generation = plan.generation, server = %self.server, v4 = ?desired.v4, v6 = ?desired.v6, ttl, "RFC 2136: update accepted");

        let after = self.live_records().await?;
        if after != desired {
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
                expected: show(&desired),
                found: show(&after),
            });
        }
        Ok(())
    }

    fn update_message(
        &self,
        id: u16,
        seen: &LiveRecords,
        desired: &LiveRecords,
        ttl: u32,
    ) -> Message {
        let mut msg = Message::new(id, MessageType::Query, OpCode::Update);
        msg.add_query(Query::query(self.zone.clone(), RecordType::SOA));
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
                tracing::warn!(service = %self.service, %code, "RFC 2136: prerequisite failed, records changed concurrently");
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
        let id = self.next_id();
        let mut msg = Message::new(id, MessageType::Query, OpCode::Query);
        msg.add_query(Query::query(self.service.clone(), rtype));
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
        let mut addrs = BTreeSet::new();
        let mut ttl = None;
        for record in reply
            .answers
            .iter()
            .filter(|r| r.name == self.service && r.record_type() == rtype)
        {
            if let Some(addr) = record.data.ip_addr() {
                addrs.insert(addr);
                ttl = Some(ttl.map_or(record.ttl, |t: u32| t.min(record.ttl)));
            }
        }
        Ok((addrs, ttl))
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
    async fn apply(&self, plan: &WeightPlan) -> Result<(), PortError> {
        let seen = self.live_records().await?;
        Ok(self.apply_from(plan, &seen).await?)
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
