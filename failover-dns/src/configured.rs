//! The router a configuration file chooses: `[router] kind = "embedded"`,
//! `"rfc2136"` or `"route53"` (see failover-core's `RouterConfig`).

use std::net::SocketAddr;
use std::sync::Arc;

use failover_core::ports::TrafficRouter;
use failover_core::{Config, RouterConfig, RouterKind};

use crate::{DnsError, EmbeddedConfig, EmbeddedDns, Rfc2136Config, Rfc2136Router};

/// The traffic router built from a configuration's `[router]` table: give
/// [`router`](Self::router) to `RuntimeBuilder::router`. Keep the value: an
/// embedded server stops when it is dropped (or [`shutdown`](Self::shutdown)).
#[non_exhaustive]
pub enum ConfiguredRouter {
    /// The embedded authoritative server, answering on `router.server`
    /// (default `127.0.0.1:53`) for `router.zone` (default: the service's
    /// parent zone).
    Embedded(EmbeddedDns),
    /// RFC 2136 updates to `router.server` for `router.zone`, signed with
    /// the TSIG key `router.key_name` whose secret is in the environment
    /// variable `router.key_secret_env`.
    Rfc2136(Arc<Rfc2136Router>),
    /// Route 53 weighted records in `router.hosted_zone_id` (feature `route53`).
    #[cfg(feature = "route53")]
    Route53(Arc<crate::Route53Router>),
}

impl ConfiguredRouter {
    /// Builds (and for `embedded`, binds) the router `config`'s `[router]`
    /// table chooses. Errors name the field, like `router.key_secret_env`.
    pub async fn from_config(config: &Config) -> Result<Self, DnsError> {
        let r: &RouterConfig = config.router();
        let (topology, policy) = (config.topology(), config.policy());
        match r.kind {
            RouterKind::Embedded => {
                let addr = match &r.server {
                    Some(s) => parse_addr("router.server", s)?,
                    None => SocketAddr::from(([127, 0, 0, 1], 53)),
                };
                let zone = match &r.zone {
                    Some(z) => z.clone(),
                    None => parent_zone(topology.service()),
                };
                let dns =
                    EmbeddedDns::bind(addr, topology, policy, EmbeddedConfig::new(zone)).await?;
                Ok(ConfiguredRouter::Embedded(dns))
            }
            RouterKind::Rfc2136 => {
                let server = parse_addr("router.server", required(&r.server, "router.server")?)?;
                let zone = required(&r.zone, "router.zone")?;
                let key_name = required(&r.key_name, "router.key_name")?;
                let env = required(&r.key_secret_env, "router.key_secret_env")?;
                let secret = std::env::var(env).map_err(|_| {
                    DnsError::config(
                        "router.key_secret_env",
                        format!("the environment variable {env:?} holds no TSIG secret"),
                    )
                })?;
                let cfg = Rfc2136Config::new(server, zone.clone(), key_name.clone(), secret);
                Ok(ConfiguredRouter::Rfc2136(Arc::new(Rfc2136Router::new(
                    cfg, topology, policy,
                )?)))
            }
            RouterKind::Route53 => Self::route53(r, config).await,
        }
    }

    #[cfg(feature = "route53")]
    async fn route53(r: &RouterConfig, config: &Config) -> Result<Self, DnsError> {
        let id = required(&r.hosted_zone_id, "router.hosted_zone_id")?;
        let mut cfg = crate::Route53Config::new(id.clone());
        cfg.set_identifiers = r.set_identifiers.clone();
        cfg.endpoint = r.endpoint.clone();
        let router = crate::Route53Router::connect(cfg, config.topology(), config.policy()).await?;
        Ok(ConfiguredRouter::Route53(Arc::new(router)))
    }

    #[cfg(not(feature = "route53"))]
    async fn route53(_: &RouterConfig, _: &Config) -> Result<Self, DnsError> {
        Err(DnsError::config(
            "router.kind",
            "\"route53\" needs failover-dns's feature `route53` (the facade's `route53`)",
        ))
    }

    /// The router, for `RuntimeBuilder::router` (or `serve`).
    pub fn router(&self) -> Arc<dyn TrafficRouter> {
        match self {
            ConfiguredRouter::Embedded(dns) => Arc::new(dns.router()),
            ConfiguredRouter::Rfc2136(r) => r.clone(),
            #[cfg(feature = "route53")]
            ConfiguredRouter::Route53(r) => r.clone(),
        }
    }

    /// Stops an embedded server (the others hold no task).
    pub async fn shutdown(self) {
        if let ConfiguredRouter::Embedded(dns) = self {
            dns.shutdown().await;
        }
    }
}

impl std::fmt::Debug for ConfiguredRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            ConfiguredRouter::Embedded(_) => "embedded",
            ConfiguredRouter::Rfc2136(_) => "rfc2136",
            #[cfg(feature = "route53")]
            ConfiguredRouter::Route53(_) => "route53",
        };
        f.debug_struct("ConfiguredRouter")
            .field("kind", &kind)
            .finish_non_exhaustive()
    }
}

fn required<'a>(value: &'a Option<String>, field: &'static str) -> Result<&'a String, DnsError> {
    value
        .as_ref()
        .ok_or_else(|| DnsError::config(field, "is required for this router kind"))
}

fn parse_addr(field: &'static str, value: &str) -> Result<SocketAddr, DnsError> {
    value.parse().map_err(|_| {
        DnsError::config(
            field,
            format!("{value:?} is not an address with a port, like \"192.0.2.53:53\""),
        )
    })
}

/// `api.example.com.` → `example.com.`
fn parent_zone(service: &str) -> String {
    match service.split_once('.') {
        Some((_, rest)) if !rest.is_empty() && rest != "." => rest.to_owned(),
        _ => service.to_owned(),
    }
}
