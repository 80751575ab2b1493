//! A complete configuration file: topology plus policy.

mod place;
mod router;

pub use router::{RouterConfig, RouterKind};

use serde::{Deserialize, Serialize};

use crate::{ConfigError, Node, Policy, Region, Topology, TopologyConfig};

/// Topology and policy, validated together. The fields are private so that a
/// `Config` is always one that passed [`Config::new`]: the
/// [`Controller`](crate::Controller) relies on it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Config {
    #[serde(flatten)]
    topology: Topology,
    policy: Policy,
    router: RouterConfig,
}

/// The file's shape. The topology's fields are spelled out rather than
/// `#[serde(flatten)]`ed: flattening buffers the document and loses every
/// key's span, so errors could not say where they are.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    service: String,
    #[serde(default)]
    region: Vec<Region>,
    #[serde(default)]
    vantages: Vec<String>,
    #[serde(default)]
    node: Vec<Node>,
    #[serde(default)]
    policy: Policy,
    #[serde(default)]
    router: RouterConfig,
}

impl Config {
    /// Validates a topology and policy together.
    /// The router is the default (`embedded`); see [`Config::with_router`].
    pub fn new(topology: Topology, policy: Policy) -> Result<Self, ConfigError> {
        policy.validate(&topology)?;
        Ok(Config {
            topology,
            policy,
            router: RouterConfig::default(),
        })
    }

    /// The same configuration with `router`, validated against the topology.
    pub fn with_router(self, router: RouterConfig) -> Result<Self, ConfigError> {
        router.validate(&self.topology)?;
        Ok(Config { router, ..self })
    }

    /// Which traffic router applies the plans (the `[router]` table).
    pub fn router(&self) -> &RouterConfig {
        &self.router
    }

    /// What is deployed where.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// How to decide.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Both parts, to change one and validate again with [`Config::new`].
    pub fn into_parts(self) -> (Topology, Policy) {
        (self.topology, self.policy)
    }

    /// Parses and validates TOML like:
    ///
    /// ```toml
    /// service = "api.example.com."
    /// vantages = ["local"]
    ///
    /// [[region]]
    /// name = "us-east"
    /// records = ["192.0.2.10"]
    ///
    /// [[region]]
    /// name = "us-west"
    /// role = "standby"
    /// capacity = 0.6
    /// records = ["198.51.100.10"]
    ///
    /// [policy]
    /// interval = "10s"
    /// fall = 3
    /// ttl = "60s"
    ///
    /// [router]
    /// kind = "route53"                 # or "rfc2136", "embedded" (the default)
    /// hosted_zone_id = "Z0123456789ABCDEFGHIJ"
    /// ```
    ///
    /// Every error names the field in the file's own terms (`service`,
    /// `region[1].capacity`, `node[0].region`, `policy.fall`) and, through
    /// [`ConfigError::location`], the line and column where it is written
    /// (for a key left out: where the table that lacks it starts).
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let raw: RawConfig = match toml::from_str(text) {
            Ok(raw) => raw,
            Err(error) => return Err(place::Document::new(text).place_toml_error(&error)),
        };
        let topology = TopologyConfig {
            service: raw.service,
            regions: raw.region,
            vantages: raw.vantages,
            nodes: raw.node,
        };
        topology
            .validate()
            .and_then(|topology| Config::new(topology, raw.policy))
            .and_then(|config| config.with_router(raw.router))
            .map_err(|error| place::Document::new(text).place_invalid(error))
    }

    /// Writes the configuration as TOML that [`from_toml`](Self::from_toml) reads back.
    pub fn to_toml(&self) -> Result<String, ConfigError> {
        toml::to_string(self).map_err(|e| ConfigError::Parse {
            field: None,
            message: e.to_string(),
            at: None,
        })
    }
}
