//! A complete configuration file: topology plus policy.

use serde::{Deserialize, Serialize};

use crate::{ConfigError, Policy, Topology, TopologyConfig};

/// Topology and policy, validated together. The fields are private so that a
/// `Config` is always one that passed [`Config::new`]: the
/// [`Controller`](crate::Controller) relies on it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Config {
    #[serde(flatten)]
    topology: Topology,
    policy: Policy,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(flatten)]
    topology: TopologyConfig,
    #[serde(default)]
    policy: Policy,
}

impl Config {
    /// Validates a topology and policy together.
    pub fn new(topology: Topology, policy: Policy) -> Result<Self, ConfigError> {
        policy.validate(&topology)?;
        Ok(Config { topology, policy })
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
    /// ```
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        let topology = raw.topology.validate()?;
        Config::new(topology, raw.policy)
    }

    /// Writes the configuration as TOML that [`from_toml`](Self::from_toml) reads back.
    pub fn to_toml(&self) -> Result<String, ConfigError> {
        toml::to_string(self).map_err(|e| ConfigError::Parse(e.to_string()))
    }
}
