//! The writer name through RFC 2136: one UPDATE that replaces its A and
//! AAAA RRsets with the new writer's addresses, guarded by (and raising)
//! the leader's token record exactly as weight plans are, then read back.

use std::collections::BTreeSet;
use std::net::IpAddr;

use async_trait::async_trait;
use failover_core::ports::WriterName;
use failover_core::{Epoch, FencingToken, NodeId, PortError, Topology};
use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{DNSClass, RData, Record, RecordType};

use super::token::{TokenPin, TokenStep, TOKEN_ATTEMPTS};
use super::Rfc2136Router;
use crate::writer::{WriterFacts, WriterNameConfig};
use crate::DnsError;

impl Rfc2136Router {
    /// Also updates the writer name (see [`crate::writer`]) when
    /// [`WriterName::point`] is called. Checks `config` against the zone
    /// and `topology`; errors name the field. Sends nothing yet.
    pub fn with_writer_name(
        mut self,
        topology: &Topology,
        config: &WriterNameConfig,
    ) -> Result<Self, DnsError> {
        let facts = WriterFacts::new(&self.zone, &self.service, topology, config)?;
        if facts.name == self.token_name {
            return Err(DnsError::config(
                "writer_name.name",
                format!(
                    "must differ from the token record's name {}",
                    self.token_name
                ),
            ));
        }
        self.writer_name = Some(facts);
        Ok(self)
    }

    /// The addresses the server serves for the writer name now (A and AAAA).
    pub async fn live_writer(&self) -> Result<BTreeSet<IpAddr>, DnsError> {
        let facts = self.writer_facts()?;
        let mut addrs = BTreeSet::new();
        for rtype in [RecordType::A, RecordType::AAAA] {
            for record in self.lookup(&facts.name, rtype).await? {
                if let Some(addr) = record.data.ip_addr() {
                    addrs.insert(addr);
                }
            }
        }
        Ok(addrs)
    }

    fn writer_facts(&self) -> Result<&WriterFacts, DnsError> {
        self.writer_name.as_ref().ok_or_else(|| {
            DnsError::config(
                "writer_name",
                "not configured: build the router with Rfc2136Router::with_writer_name",
            )
        })
    }

    /// [`WriterName::point`], with this crate's error: under a token, reads
    /// the token record, refuses when a newer one is in place
    /// ([`DnsError::StaleToken`]), and sends one UPDATE whose prerequisite
    /// pins the record (raising it when older or absent) and which replaces
    /// the writer name's records. A token record changed by another leader
    /// between the read and the update fails the prerequisite: read again,
    /// decide again.
    pub async fn point_writer(
        &self,
        node: NodeId,
        epoch: Epoch,
        token: Option<FencingToken>,
    ) -> Result<(), DnsError> {
        let facts = self.writer_facts()?;
        let want = facts.addrs(node)?;
        let mut last_rcode = String::new();
        for _ in 0..TOKEN_ATTEMPTS {
            let held = match token {
                Some(_) => Some(self.read_token().await?),
                None => None,
            };
            let pin = match (token, &held) {
                (Some(ours), Some(held)) => match held.step(ours) {
                    TokenStep::Refuse(newer) => return Err(self.stale(ours, newer, None)),
                    TokenStep::Hold => TokenPin::Holds(ours),
                    TokenStep::Raise => TokenPin::Raise {
                        from: held,
                        to: ours,
                    },
                },
                _ => TokenPin::Unchecked,
            };
            let seen = self.live_writer().await?;
            if seen == *want && !matches!(pin, TokenPin::Raise { .. }) {
                tracing::debug!(name = %facts.name, node = facts.node_name(node), "RFC 2136: the writer name already points there");
                return Ok(());
            }
            match self.send_writer_update(facts, want, pin).await {
                Ok(()) => {}
                Err(DnsError::Conflict { rcode, .. }) if token.is_some() => {
                    // The token record changed since it was read.
                    last_rcode = rcode;
                    continue;
                }
                Err(e) => return Err(e),
            }
            if let Some(t) = pin.token() {
                self.set_held(Some(t));
            }
            let after = self.live_writer().await?;
            if after != *want {
                if let Some(ours) = token {
                    if let TokenStep::Refuse(newer) = self.read_token().await?.step(ours) {
                        return Err(self.stale(ours, newer, None));
                    }
                }
                return Err(DnsError::VerifyMismatch {
                    server: self.server,
                    name: facts.name.to_string(),
                    expected: want.iter().map(IpAddr::to_string).collect(),
                    found: after.iter().map(IpAddr::to_string).collect(),
                });
            }
            metrics::counter!("failover_dns_writer_moves_total", "adapter" => "rfc2136")
                .increment(1);
            tracing::warn!(name = %facts.name, node = facts.node_name(node), epoch = epoch.0, token = ?token.map(|t| t.0), server = %self.server, "RFC 2136: the writer name {} now points at {} (promoted at {epoch})", facts.name, facts.node_name(node));
            return Ok(());
        }
        Err(DnsError::Conflict {
            server: self.server,
            name: self.token_name.to_string(),
            rcode: last_rcode,
        })
    }

    async fn send_writer_update(
        &self,
        facts: &WriterFacts,
        want: &BTreeSet<IpAddr>,
        pin: TokenPin<'_>,
    ) -> Result<(), DnsError> {
        let id = self.next_id();
        let mut msg = Message::new(id, MessageType::Query, OpCode::Update);
        msg.add_query(Query::query(self.zone.clone(), RecordType::SOA));
        self.pin_token(&mut msg, pin, facts.ttl);
        // RFC 2136 §2.5.2: delete both RRsets, then (§2.5.1) add the new
        // writer's records; the server applies the message atomically.
        for rtype in [RecordType::A, RecordType::AAAA] {
            let mut all = Record::update0(facts.name.clone(), 0, rtype);
            all.dns_class = DNSClass::ANY;
            msg.add_authority(all);
        }
        for addr in want {
            msg.add_authority(Record::from_rdata(
                facts.name.clone(),
                facts.ttl,
                RData::from(*addr),
            ));
        }
        self.send_signed_update(msg, id).await?;
        self.updates
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
}

#[async_trait]
impl WriterName for Rfc2136Router {
    async fn point(
        &self,
        node: NodeId,
        epoch: Epoch,
        token: Option<FencingToken>,
    ) -> Result<(), PortError> {
        Ok(self.point_writer(node, epoch, token).await?)
    }
}
