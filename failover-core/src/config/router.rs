//! The `[router]` table: which traffic router applies the plans, and its
//! settings. The core only checks it; the runtime's caller builds the router
//! it names (`failover::dns::EmbeddedDns`, `Rfc2136Router`, `Route53Router`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{ConfigError, Topology};

/// Which traffic router applies the plans.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RouterKind {
    /// The embedded authoritative DNS server (the default: needs no provider).
    #[default]
    Embedded,
    /// RFC 2136 dynamic updates signed with TSIG (BIND, Knot, PowerDNS).
    Rfc2136,
    /// Route 53 weighted records (feature `route53`).
    Route53,
}

impl RouterKind {
    /// The spelling in the file: `embedded`, `rfc2136`, `route53`.
    pub fn as_str(self) -> &'static str {
        match self {
            RouterKind::Embedded => "embedded",
            RouterKind::Rfc2136 => "rfc2136",
            RouterKind::Route53 => "route53",
        }
    }
}

/// The `[router]` table. `kind` picks the router; each other key belongs to
/// one or two kinds, and a key of another kind is an error naming it.
///
/// ```toml
/// [router]
/// kind = "route53"
/// hosted_zone_id = "Z0123456789ABCDEFGHIJ"
/// set_identifiers = { us-east = "use1" }   # default: the region's name
/// endpoint = "http://127.0.0.1:5000"       # optional: moto, other partitions
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouterConfig {
    /// Which router.
    #[serde(default)]
    pub kind: RouterKind,
    /// `embedded`, `rfc2136`: the DNS zone, like `example.com.`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// `embedded`: the address to answer on, like `0.0.0.0:53`;
    /// `rfc2136`: the primary that accepts updates, like `192.0.2.53:53`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// `rfc2136`: the TSIG key's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_name: Option<String>,
    /// `rfc2136`: the environment variable that holds the TSIG secret
    /// (base64): a secret never sits in the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_secret_env: Option<String>,
    /// `route53`: the hosted zone id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosted_zone_id: Option<String>,
    /// `route53`: `SetIdentifier` per region name (default: the name).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub set_identifiers: BTreeMap<String, String>,
    /// `route53`: the API endpoint, for moto or another AWS partition
    /// (default: the SDK's Route 53 endpoint). Credentials come from the
    /// standard AWS chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

impl RouterConfig {
    /// Checks that the keys set belong to `kind`, that the kind's required
    /// keys are there, and that `set_identifiers` names regions of
    /// `topology`. Errors name the field, like `router.hosted_zone_id`.
    pub fn validate(&self, topology: &Topology) -> Result<(), ConfigError> {
        use RouterKind::*;
        let kind = self.kind;
        let keys: [(&str, bool, &[RouterKind]); 7] = [
            ("zone", self.zone.is_some(), &[Embedded, Rfc2136]),
            ("server", self.server.is_some(), &[Embedded, Rfc2136]),
            ("key_name", self.key_name.is_some(), &[Rfc2136]),
            ("key_secret_env", self.key_secret_env.is_some(), &[Rfc2136]),
            ("hosted_zone_id", self.hosted_zone_id.is_some(), &[Route53]),
            (
                "set_identifiers",
                !self.set_identifiers.is_empty(),
                &[Route53],
            ),
            ("endpoint", self.endpoint.is_some(), &[Route53]),
        ];
        for (key, set, kinds) in keys {
            if set && !kinds.contains(&kind) {
                let owners: Vec<String> =
                    kinds.iter().map(|k| format!("{:?}", k.as_str())).collect();
                return Err(ConfigError::invalid(
                    format!("router.{key}"),
                    format!(
                        "belongs to kind = {}, not kind = {:?}",
                        owners.join(" or "),
                        kind.as_str()
                    ),
                ));
            }
        }
        let required: &[(&str, bool)] = match kind {
            Embedded => &[],
            Rfc2136 => &[
                ("server", self.server.is_some()),
                ("zone", self.zone.is_some()),
                ("key_name", self.key_name.is_some()),
                ("key_secret_env", self.key_secret_env.is_some()),
            ],
            Route53 => &[("hosted_zone_id", self.hosted_zone_id.is_some())],
        };
        if let Some((key, _)) = required.iter().find(|(_, set)| !set) {
            return Err(ConfigError::invalid(
                format!("router.{key}"),
                format!("is required with kind = {:?}", kind.as_str()),
            ));
        }
        if let Some(id) = &self.hosted_zone_id {
            let bare = id.strip_prefix("/hostedzone/").unwrap_or(id);
            if bare.is_empty()
                || bare.len() > 32
                || !bare.bytes().all(|b| b.is_ascii_alphanumeric())
            {
                return Err(ConfigError::invalid(
                    "router.hosted_zone_id",
                    format!("{id:?} is not a Route 53 hosted zone id (1 to 32 letters and digits, like \"Z0123456789ABCDEFGHIJ\")"),
                ));
            }
        }
        for (region, set_id) in &self.set_identifiers {
            if !topology.regions().iter().any(|r| &r.name == region) {
                return Err(ConfigError::invalid(
                    format!("router.set_identifiers.{region}"),
                    format!("names region {region:?}, which is not in the topology"),
                ));
            }
            if set_id.is_empty() || set_id.len() > 128 {
                return Err(ConfigError::invalid(
                    format!("router.set_identifiers.{region}"),
                    format!("a SetIdentifier has 1 to 128 characters, got {set_id:?}"),
                ));
            }
        }
        if let Some(endpoint) = &self.endpoint {
            if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                return Err(ConfigError::invalid(
                    "router.endpoint",
                    format!("{endpoint:?} is not an http:// or https:// URL"),
                ));
            }
        }
        Ok(())
    }
}
