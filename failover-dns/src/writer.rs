//! The writer's DNS name: one name (like `writer.db.example.com.`) whose
//! A/AAAA records are the addresses of the database node that is the writer,
//! for applications that connect by name.
//!
//! Both routers serve it through [`WriterName`](failover_core::ports::WriterName):
//! [`EmbeddedRouter::serve_writer_name`](crate::EmbeddedRouter::serve_writer_name)
//! answers it from the embedded server (no records until the writer is
//! first pointed at); [`Rfc2136Router::with_writer_name`](crate::Rfc2136Router::with_writer_name)
//! replaces its records by one TSIG-signed UPDATE that carries the leader's
//! fencing token as a prerequisite, exactly as weight plans do. The runtime
//! points it only after a promotion has completed, so it never names a node
//! before the old writer was fenced, nor one that was not promoted.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use failover_core::{NodeId, Topology};
use hickory_proto::rr::Name;

use crate::name::parse_fqdn;
use crate::DnsError;

/// The writer name and each database node's addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriterNameConfig {
    /// The name, like `writer.db.example.com.`: inside the zone, and not the
    /// service name.
    pub name: String,
    /// TTL of its records (default 5 s): how long a client may keep
    /// connecting to the old writer after the name moved. Whole seconds.
    pub ttl: Duration,
    /// Each database node's addresses, by its name in the topology. Every
    /// node of the topology needs at least one, since any may be promoted.
    pub nodes: Vec<(String, Vec<IpAddr>)>,
}

impl WriterNameConfig {
    /// `name` with a 5 s TTL and no node addresses yet.
    pub fn new(name: impl Into<String>) -> Self {
        WriterNameConfig {
            name: name.into(),
            ttl: Duration::from_secs(5),
            nodes: Vec::new(),
        }
    }

    /// Adds the addresses the writer name gets when `node` is the writer.
    pub fn node(
        mut self,
        node: impl Into<String>,
        addrs: impl IntoIterator<Item = IpAddr>,
    ) -> Self {
        self.nodes.push((node.into(), addrs.into_iter().collect()));
        self
    }
}

/// The validated config: the name and the addresses by [`NodeId`].
#[derive(Clone, Debug)]
pub(crate) struct WriterFacts {
    pub(crate) name: Name,
    /// Seconds.
    pub(crate) ttl: u32,
    /// Indexed by `NodeId`.
    addrs: Vec<BTreeSet<IpAddr>>,
    names: Vec<String>,
}

impl WriterFacts {
    /// Checks `config` against the zone, the service name and the topology;
    /// errors name the field (`writer_name.name`, `.ttl`, `.nodes`).
    pub(crate) fn new(
        zone: &Name,
        service: &Name,
        topology: &Topology,
        config: &WriterNameConfig,
    ) -> Result<Self, DnsError> {
        let name = parse_fqdn("writer_name.name", &config.name)?;
        if !zone.zone_of(&name) {
            return Err(DnsError::config(
                "writer_name.name",
                format!("{name} is not inside zone {zone}"),
            ));
        }
        if name == *service {
            return Err(DnsError::config(
                "writer_name.name",
                format!("must differ from the service name {service}, whose answers follow the weight plan"),
            ));
        }
        let ttl = u32::try_from(config.ttl.as_secs())
            .ok()
            .filter(|t| *t > 0)
            .ok_or_else(|| {
                DnsError::config(
                    "writer_name.ttl",
                    format!("{:?} must be at least 1 s and fit a DNS TTL", config.ttl),
                )
            })?;
        let mut addrs = vec![BTreeSet::new(); topology.nodes().len()];
        for (node, given) in &config.nodes {
            let Some(id) = topology.node_id(node) else {
                return Err(DnsError::config(
                    "writer_name.nodes",
                    format!("{node:?} is not a database node of the topology"),
                ));
            };
            addrs[id.0 as usize].extend(given.iter().copied());
        }
        let names: Vec<String> = topology.nodes().iter().map(|n| n.name.clone()).collect();
        if let Some(i) = addrs.iter().position(BTreeSet::is_empty) {
            return Err(DnsError::config(
                "writer_name.nodes",
                format!(
                    "node {} has no address; give one, since any node may be promoted",
                    names[i]
                ),
            ));
        }
        Ok(WriterFacts {
            name,
            ttl,
            addrs,
            names,
        })
    }

    /// The addresses the name gets when `node` is the writer.
    pub(crate) fn addrs(&self, node: NodeId) -> Result<&BTreeSet<IpAddr>, DnsError> {
        self.addrs.get(node.0 as usize).ok_or_else(|| {
            DnsError::config(
                "writer_name.nodes",
                format!(
                    "node id {} is not in the topology ({} nodes)",
                    node.0,
                    self.addrs.len()
                ),
            )
        })
    }

    /// The node's name, for logs.
    pub(crate) fn node_name(&self, node: NodeId) -> &str {
        self.names.get(node.0 as usize).map_or("?", String::as_str)
    }
}
