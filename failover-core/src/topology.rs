//! What is deployed where: regions, their DNS records, vantages and database nodes.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::{ConfigError, NodeId, RegionId, VantageId};

/// Whether a region takes traffic in normal operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RegionRole {
    /// Serves traffic whenever it is healthy (its base weight).
    Active,
    /// Serves traffic only when no active region can (active-passive).
    Standby,
}

/// One deployment of the service.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Region {
    /// Unique name, like `us-east`.
    pub name: String,
    /// Active or standby.
    #[serde(default = "Region::default_role")]
    pub role: RegionRole,
    /// Share of traffic when healthy, relative to the other regions (unitless, ≥ 0).
    #[serde(default = "Region::default_weight")]
    pub base_weight: u32,
    /// Load the region can carry, as a fraction of the whole service's peak
    /// (1.0 = can take all of peak traffic alone; 0.6 = 60 % of peak). At most
    /// [`Region::MAX_CAPACITY`], so that a percentage written by mistake
    /// (`capacity = 60`) is refused rather than read as 60 times peak.
    #[serde(default = "Region::default_capacity")]
    pub capacity: f64,
    /// The addresses the service name resolves to when this region serves.
    #[serde(default)]
    pub records: Vec<IpAddr>,
    /// The residency group (`eu`, `us`): a region fails over only to
    /// regions of its own group — its traffic share goes only to them, and
    /// an automatic promotion only picks a replica in them. Regions without
    /// one form a group together, so a topology without residency behaves
    /// as one group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub residency: Option<String>,
}

impl Region {
    /// The largest capacity accepted (10 times peak): anything above is far
    /// more likely a percentage than a fraction.
    pub const MAX_CAPACITY: f64 = 10.0;

    /// A region with base weight 100, capacity 1.0 and no records.
    pub fn new(name: impl Into<String>, role: RegionRole) -> Self {
        Region {
            name: name.into(),
            role,
            base_weight: Self::default_weight(),
            capacity: Self::default_capacity(),
            records: Vec::new(),
            residency: None,
        }
    }

    fn default_role() -> RegionRole {
        RegionRole::Active
    }
    fn default_weight() -> u32 {
        100
    }
    fn default_capacity() -> f64 {
        1.0
    }
}

/// A PostgreSQL server in a region.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    /// Unique name, like `pg-east-1`.
    pub name: String,
    /// The name of the region it runs in.
    pub region: String,
    /// Tie-breaker between replicas with equal WAL: higher wins.
    #[serde(default)]
    pub priority: u32,
    /// Whether this node is the primary (writer) when the controller starts.
    #[serde(default)]
    pub primary: bool,
}

/// The validated deployment: regions, vantages and database nodes, each
/// addressable by a compact id. Serializes in the shape of [`TopologyConfig`].
#[derive(Clone, Debug, PartialEq)]
pub struct Topology {
    service: String,
    regions: Vec<Region>,
    vantages: Vec<String>,
    nodes: Vec<Node>,
    node_regions: Vec<RegionId>,
}

/// The unvalidated shape of a topology, as written in TOML.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopologyConfig {
    /// The DNS name clients resolve, like `api.example.com.`.
    pub service: String,
    /// Regions (at least one).
    #[serde(default, rename = "region")]
    pub regions: Vec<Region>,
    /// Names of the places probes run from. Empty means one vantage, `local`.
    #[serde(default)]
    pub vantages: Vec<String>,
    /// Database nodes (may be empty: traffic-only failover).
    #[serde(default, rename = "node")]
    pub nodes: Vec<Node>,
}

impl TopologyConfig {
    /// Checks every rule and builds the [`Topology`].
    pub fn validate(self) -> Result<Topology, ConfigError> {
        if self.service.trim().is_empty() {
            return Err(ConfigError::invalid(
                "service",
                "must be a DNS name, got an empty string",
            ));
        }
        if self.regions.is_empty() {
            return Err(ConfigError::invalid(
                "region",
                "at least one region is required",
            ));
        }
        for (i, region) in self.regions.iter().enumerate() {
            if region.name.trim().is_empty() {
                return Err(ConfigError::invalid(
                    format!("region[{i}].name"),
                    "must not be empty",
                ));
            }
            if let Some(j) = self.regions[..i].iter().position(|r| r.name == region.name) {
                return Err(ConfigError::invalid(
                    format!("region[{i}].name"),
                    format!("duplicate region id {:?} (also region[{j}])", region.name),
                ));
            }
            if region
                .residency
                .as_ref()
                .is_some_and(|g| g.trim().is_empty())
            {
                return Err(ConfigError::invalid(
                    format!("region[{i}].residency"),
                    "must name a group (leave it out for none), got an empty string",
                ));
            }
            if !(region.capacity.is_finite() && region.capacity >= 0.0) {
                return Err(ConfigError::invalid(
                    format!("region[{i}].capacity"),
                    format!(
                        "must be a finite fraction of peak ≥ 0, got {}",
                        region.capacity
                    ),
                ));
            }
            if region.capacity > Region::MAX_CAPACITY {
                let c = region.capacity;
                return Err(ConfigError::invalid(
                    format!("region[{i}].capacity"),
                    format!(
                        "{c} would be {c} times peak, more than the limit of {}: capacity is a \
                         fraction of peak: 0.6 means 60 %; write {} if you meant {c} %",
                        Region::MAX_CAPACITY,
                        c / 100.0
                    ),
                ));
            }
        }
        if self.regions.iter().all(|r| r.base_weight == 0) {
            return Err(ConfigError::invalid(
                "region[].base_weight",
                "all base weights are zero: at least one region must carry traffic",
            ));
        }
        if !self.regions.iter().any(|r| r.role == RegionRole::Active) {
            return Err(ConfigError::invalid(
                "region[].role",
                "standby regions need at least one active region",
            ));
        }
        if !self
            .regions
            .iter()
            .any(|r| r.role == RegionRole::Active && r.base_weight > 0)
        {
            return Err(ConfigError::invalid(
                "region[].base_weight",
                "every active region has base weight 0: nothing would serve in normal operation",
            ));
        }
        let mut vantages = self.vantages;
        if vantages.is_empty() {
            vantages.push("local".to_owned());
        }
        for (i, v) in vantages.iter().enumerate() {
            if v.trim().is_empty() {
                return Err(ConfigError::invalid(
                    format!("vantages[{i}]"),
                    "must not be empty",
                ));
            }
            if vantages[..i].contains(v) {
                return Err(ConfigError::invalid(
                    format!("vantages[{i}]"),
                    format!("duplicate vantage {v:?}"),
                ));
            }
        }
        let mut node_regions = Vec::with_capacity(self.nodes.len());
        for (i, node) in self.nodes.iter().enumerate() {
            if node.name.trim().is_empty() {
                return Err(ConfigError::invalid(
                    format!("node[{i}].name"),
                    "must not be empty",
                ));
            }
            if let Some(j) = self.nodes[..i].iter().position(|n| n.name == node.name) {
                return Err(ConfigError::invalid(
                    format!("node[{i}].name"),
                    format!("duplicate node {:?} (also node[{j}])", node.name),
                ));
            }
            let Some(r) = self.regions.iter().position(|r| r.name == node.region) else {
                return Err(ConfigError::invalid(
                    format!("node[{i}].region"),
                    format!("names unknown region {:?}", node.region),
                ));
            };
            node_regions.push(RegionId(r as u32));
        }
        let primaries = self.nodes.iter().filter(|n| n.primary).count();
        if !self.nodes.is_empty() && primaries != 1 {
            return Err(ConfigError::invalid(
                "node[].primary",
                format!("exactly one node must be the initial primary, found {primaries}"),
            ));
        }
        Ok(Topology {
            service: self.service,
            regions: self.regions,
            vantages,
            nodes: self.nodes,
            node_regions,
        })
    }
}

impl Serialize for Topology {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        TopologyConfig {
            service: self.service.clone(),
            regions: self.regions.clone(),
            vantages: self.vantages.clone(),
            nodes: self.nodes.clone(),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Topology {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        TopologyConfig::deserialize(d)?
            .validate()
            .map_err(serde::de::Error::custom)
    }
}

impl Topology {
    /// Starts a builder for the service name clients resolve.
    pub fn builder(service: impl Into<String>) -> TopologyBuilder {
        TopologyBuilder {
            config: TopologyConfig {
                service: service.into(),
                ..TopologyConfig::default()
            },
        }
    }

    /// The DNS name clients resolve.
    pub fn service(&self) -> &str {
        &self.service
    }
    /// All regions; a [`RegionId`] indexes this slice.
    pub fn regions(&self) -> &[Region] {
        &self.regions
    }
    /// All vantages; a [`VantageId`] indexes this slice.
    pub fn vantages(&self) -> &[String] {
        &self.vantages
    }
    /// All database nodes; a [`NodeId`] indexes this slice.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }
    /// The region with this id. Panics on an id from another topology.
    pub fn region(&self, id: RegionId) -> &Region {
        &self.regions[id.index()]
    }
    /// The node with this id. Panics on an id from another topology.
    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id.index()]
    }
    /// The region a node runs in.
    pub fn node_region(&self, id: NodeId) -> RegionId {
        self.node_regions[id.index()]
    }
    /// The residency group of a region (`None`: the group of the regions
    /// without one).
    pub fn residency(&self, id: RegionId) -> Option<&str> {
        self.regions[id.index()].residency.as_deref()
    }
    /// Whether `a` may fail over to `b`: both are in the same residency group.
    pub fn same_residency(&self, a: RegionId, b: RegionId) -> bool {
        self.regions[a.index()].residency == self.regions[b.index()].residency
    }
    /// Whether any region names a residency group different from another's.
    pub fn has_residency(&self) -> bool {
        self.regions
            .iter()
            .any(|r| r.residency != self.regions[0].residency)
    }
    /// Looks up a region by name.
    pub fn region_id(&self, name: &str) -> Option<RegionId> {
        self.regions
            .iter()
            .position(|r| r.name == name)
            .map(|i| RegionId(i as u32))
    }
    /// Looks up a vantage by name.
    pub fn vantage_id(&self, name: &str) -> Option<VantageId> {
        self.vantages
            .iter()
            .position(|v| v == name)
            .map(|i| VantageId(i as u32))
    }
    /// Looks up a node by name.
    pub fn node_id(&self, name: &str) -> Option<NodeId> {
        self.nodes
            .iter()
            .position(|n| n.name == name)
            .map(|i| NodeId(i as u32))
    }
    /// Every region id, in order.
    pub fn region_ids(&self) -> impl Iterator<Item = RegionId> + '_ {
        (0..self.regions.len() as u32).map(RegionId)
    }
    /// Every node id, in order.
    pub fn node_ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        (0..self.nodes.len() as u32).map(NodeId)
    }
    /// The node that is primary when the controller starts, if there are nodes.
    pub fn initial_primary(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .position(|n| n.primary)
            .map(|i| NodeId(i as u32))
    }
    /// The database nodes in a region.
    pub fn nodes_in(&self, region: RegionId) -> impl Iterator<Item = NodeId> + '_ {
        self.node_regions
            .iter()
            .enumerate()
            .filter(move |(_, r)| **r == region)
            .map(|(i, _)| NodeId(i as u32))
    }
}

/// Builds a [`Topology`] in code; [`build`](TopologyBuilder::build) validates.
#[derive(Clone, Debug)]
pub struct TopologyBuilder {
    config: TopologyConfig,
}

impl TopologyBuilder {
    /// Adds a region.
    pub fn region(mut self, region: Region) -> Self {
        self.config.regions.push(region);
        self
    }
    /// Adds a vantage (a place probes run from).
    pub fn vantage(mut self, name: impl Into<String>) -> Self {
        self.config.vantages.push(name.into());
        self
    }
    /// Adds a database node.
    pub fn node(mut self, node: Node) -> Self {
        self.config.nodes.push(node);
        self
    }
    /// Validates and builds.
    pub fn build(self) -> Result<Topology, ConfigError> {
        self.config.validate()
    }
}
